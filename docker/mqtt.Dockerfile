# The MQTT gateway server. Build from the repository root:
#   docker build -f docker/mqtt.Dockerfile -t gateways/mqtt .
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
# tzdata: every image carries it, so event times and logs read zones the same way everywhere.
RUN apt-get update && apt-get install -y --no-install-recommends tzdata && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY common ./common
COPY gateways ./gateways
RUN pip install --no-cache-dir . && rm -rf /src
WORKDIR /
USER 65532:65532
# 9330: gRPC to the gateway client. The server only connects out (to the broker); it listens on nothing else.
EXPOSE 9330
ENTRYPOINT ["gateway", "serve", "mqtt"]
