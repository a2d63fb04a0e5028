# The gateway client (the framework side of a gateway pod). Build from the repository root:
#   docker build -f docker/client.Dockerfile -t gateways/client .
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends tzdata && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY common ./common
COPY gateways ./gateways
RUN pip install --no-cache-dir . && rm -rf /src
WORKDIR /
USER 65532:65532
ENTRYPOINT ["gateway", "client"]
