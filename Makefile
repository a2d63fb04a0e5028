# The Makefile is the source of truth: CI and the README call these targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CEREADER := tests/harness/cereader
CEREADER_STAMP := $(CEREADER)/node_modules/.installed-stamp
IMAGE_NAMESPACE ?= gateways
IMAGE_TAG ?= latest
KINDS := $(patsubst docker/%.Dockerfile,%,$(wildcard docker/*.Dockerfile))

.PHONY: help install js-reader brokers engine images run test lint check types proto proto-check bench bench-smoke build-all clean

help:
	@echo "make run        install, then run the calendar and webhook gateways standalone (CloudEvents on stdout)"
	@echo "make test       install, then lint + types + every test + a smoke run of every benchmark"
	@echo "make install    create $(VENV) with an editable install and the dev tools, and the JS reader's packages"
	@echo "make brokers    as root with apt: install the Debian brokers the tests start (mosquitto, RabbitMQ) if missing"
	@echo "make lint       ruff format --check, ruff check, import contracts"
	@echo "make types      mypy --strict"
	@echo "make proto      regenerate the gRPC stubs from proto/eventing.proto"
	@echo "make bench      run every benchmark in full (minutes)"
	@echo "make engine     as root with apt and no Docker daemon: install podman (and runc, mmdebstrap) if missing"
	@echo "make images     build one image per gateway and one for the client, with docker (if its daemon answers) or podman"
	@echo "make build-all  the same as make images"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The JavaScript CloudEvents reader tests judge deliveries with: its packages exactly as locked.
$(CEREADER_STAMP): $(CEREADER)/package-lock.json
	cd $(CEREADER) && npm ci --no-audit --no-fund
	touch $(CEREADER_STAMP)

js-reader: $(CEREADER_STAMP)

# The Debian brokers the tests start as child processes (NATS and Tansu come from wheels in .venv).
# Installed only when missing, and only as root with apt-get; elsewhere their tests skip (fail under CI=true).
BROKER_PACKAGES := mosquitto rabbitmq-server
brokers:
	@missing=$$(for p in $(BROKER_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "brokers: not root with apt-get, not installing:" $$missing; exit 0; fi; \
	echo "brokers: apt-get install" $$missing; \
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends $$missing >/dev/null; } \
	  || echo "brokers: apt-get failed; the tests that need" $$missing "will skip (fail under CI=true)"

install: $(STAMP)

run: install
	@echo "Standalone calendar and webhook gateways; CloudEvents appear below as JSON lines."
	@echo "Send a webhook event:  curl -X POST localhost:12000/example -H 'Content-Type: application/json' -d '{\"hello\":\"world\"}'"
	@$(VENV)/bin/gateway run webhook > >(trap '' INT TERM; exec sed -u 's/^/[webhook]  /') 2>&1 & webhook=$$!; \
	  trap 'kill $$webhook 2>/dev/null; wait $$webhook' EXIT INT TERM; \
	  $(VENV)/bin/gateway run calendar > >(trap '' INT TERM; exec sed -u 's/^/[calendar] /') 2>&1

lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

types: install
	$(VENV)/bin/mypy

check: lint types

test: check js-reader brokers engine
	$(VENV)/bin/pytest
	$(MAKE) bench-smoke

bench-smoke: install
	$(PY) -m bench --smoke

bench: install
	$(PY) -m bench

proto: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -Icommon/rpc=proto \
	  --python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. common/rpc/eventing.proto

# The container engine the image tests (tests/test_images.py) build with: `docker` when its daemon answers,
# else podman, installed (with runc and mmdebstrap, for a local base image) only when missing and only as
# root with apt-get; elsewhere those tests skip (fail under CI=true). docker/engine.sh does the work.
engine:
	@docker/engine.sh install

# BASE_IMAGE=... picks the base; by default python:3.11-slim, or where no registry has it (podman) a
# local Debian one made once with mmdebstrap and cached.
images: engine
	@docker/engine.sh images $(IMAGE_NAMESPACE) $(IMAGE_TAG)

build-all: images

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
