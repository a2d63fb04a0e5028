# The calendar gateway server. Build from the repository root:
#   docker build -f docker/calendar.Dockerfile -t gateways/calendar .
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
# tzdata: the calendar reads IANA zones; images without it broke timezones (argo-events#799).
RUN apt-get update && apt-get install -y --no-install-recommends tzdata && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY common ./common
COPY gateways ./gateways
RUN pip install --no-cache-dir . && rm -rf /src
WORKDIR /
USER 65532:65532
EXPOSE 9330
ENTRYPOINT ["gateway", "serve", "calendar"]
