#!/usr/bin/env bash
# Builds and runs the images with whichever container engine answers: `docker` with a reachable daemon,
# else `podman`. The Makefile (make images, make engine) and the image tests (tests/harness/images.py)
# both go through this script, so they build the same way.
#
#   docker/engine.sh which                 the engine's name (docker or podman), or exit 1 saying why none
#   docker/engine.sh install               as root with apt-get and no Docker daemon: install podman, runc
#                                          and mmdebstrap if missing (elsewhere: say so, exit 0)
#   docker/engine.sh base                  the base image to build on (see below), made if need be
#   docker/engine.sh build KIND TAG        build docker/KIND.Dockerfile as TAG
#   docker/engine.sh images NAMESPACE TAG  build every docker/*.Dockerfile as NAMESPACE/KIND:TAG
#   docker/engine.sh exec ARGS...          run the engine with ARGS (podman: with the settings below)
#
# The base image: $BASE_IMAGE if set; else python:3.11-slim if the engine has it or can pull it; else
# (podman, no registry) a local Debian one made once with mmdebstrap and cached as $LOCAL_BASE.
# Podman runs with a containers.conf of its own ($CONTAINERS_CONF, unless already set): default
# ulimits a sandbox's hard limits allow, and the runc runtime when installed (crun refuses hybrid
# cgroups). When the host's pip has a CA bundle configured (a TLS-intercepting proxy), podman builds
# mount it with a pip.conf naming it; neither ends up in the image.
set -euo pipefail
cd "$(dirname "$0")/.."

OFFICIAL_BASE=docker.io/library/python:3.11-slim
LOCAL_BASE=${LOCAL_BASE:-localhost/gateways-base:bookworm}
ENGINE_PACKAGES="podman runc mmdebstrap"

say() { echo "engine: $*" >&2; }

docker_answers() { command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; }

ENGINE=${CONTAINER_ENGINE:-}  # CONTAINER_ENGINE=docker|podman forces one
which_engine() {
  if [ -n "$ENGINE" ]; then echo "$ENGINE"; return; fi
  if docker_answers; then echo docker; return; fi
  if command -v podman >/dev/null; then echo podman; return; fi
  if command -v docker >/dev/null; then
    say "no Docker daemon answers ('docker info' fails) and podman is not installed"
  else
    say "neither docker nor podman is installed"
  fi
  return 1
}

podman_conf() {
  if [ -n "${CONTAINERS_CONF:-}" ]; then return; fi
  local conf="${TMPDIR:-/tmp}/gateways-containers.$(id -u).conf"
  {
    echo '[containers]'
    echo 'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]'
    if command -v runc >/dev/null; then printf '[engine]\nruntime = "runc"\n'; fi
  } >"$conf.new"
  mv "$conf.new" "$conf"
  export CONTAINERS_CONF="$conf"
}

engine() {
  ENGINE=$(which_engine)
  if [ "$ENGINE" = podman ]; then podman_conf; fi
  "$ENGINE" "$@"
}

install_engine() {
  if docker_answers; then exit 0; fi
  local missing p
  missing=$(for p in $ENGINE_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"; done)
  if [ -z "$missing" ]; then exit 0; fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    say "no Docker daemon answers and not root with apt-get, not installing:" $missing; exit 0
  fi
  say "no Docker daemon answers; apt-get install" $missing
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends $missing >/dev/null; } \
    || say "apt-get failed; the image tests will skip (fail under CI=true)"
}

has_image() { engine image inspect "$1" >/dev/null 2>&1; }

base_image() {
  if [ -n "${BASE_IMAGE:-}" ]; then echo "$BASE_IMAGE"; return; fi
  if has_image "$OFFICIAL_BASE"; then echo "$OFFICIAL_BASE"; return; fi
  if has_image "$LOCAL_BASE"; then echo "$LOCAL_BASE"; return; fi
  if timeout 120 engine pull -q "$OFFICIAL_BASE" >/dev/null 2>&1; then echo "$OFFICIAL_BASE"; return; fi
  if [ "$(which_engine)" != podman ] || ! command -v mmdebstrap >/dev/null; then
    say "cannot pull $OFFICIAL_BASE and cannot make a local base (needs podman and mmdebstrap)"
    return 1
  fi
  say "cannot pull $OFFICIAL_BASE; making $LOCAL_BASE with mmdebstrap (once; cached)"
  local dir
  dir=$(mktemp -d "${TMPDIR:-/var/tmp}/gateways-base.XXXXXX")
  # Debian's python3 is "externally managed": the images' `pip install` needs the ENV below.
  mmdebstrap --quiet --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates,tzdata bookworm "$dir/base.tar" >&2
  engine import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
    --change 'CMD ["python3"]' "$dir/base.tar" "$LOCAL_BASE" >/dev/null
  rm -rf "$dir"
  echo "$LOCAL_BASE"
}

# The host pip's CA bundle, if it names one (PIP_CERT, or `cert` in its config).
host_pip_cert() {
  local cert=${PIP_CERT:-}
  if [ -z "$cert" ] && command -v python3 >/dev/null; then
    cert=$(python3 -m pip config get global.cert 2>/dev/null || true)
  fi
  if [ -n "$cert" ] && [ -f "$cert" ]; then echo "$cert"; fi
}

build() {
  local kind=$1 tag=$2 name base cert
  name=$(which_engine)
  base=$(base_image)
  local args=(build --network host --build-arg "BASE_IMAGE=$base" -f "docker/$kind.Dockerfile" -t "$tag")
  cert=$(host_pip_cert)
  if [ -n "$cert" ] && [ "$name" = podman ]; then
    local conf="${TMPDIR:-/tmp}/gateways-pip.$(id -u).conf"
    printf '[global]\ncert = /etc/gateways-build-ca.crt\n' >"$conf"
    args+=(-v "$(realpath "$cert"):/etc/gateways-build-ca.crt:ro" -v "$conf:/etc/pip.conf:ro")
  elif [ -n "$cert" ]; then
    say "the host's pip trusts $cert; docker builds cannot mount it (pip in the build uses its own CAs)"
  fi
  say "$name build -f docker/$kind.Dockerfile -t $tag (base $base)"
  engine "${args[@]}" .
}

if [ "${1:-}" != install ] && [ "${1:-}" != which ]; then ENGINE=$(which_engine); fi
case "${1:-}" in
  which) which_engine ;;
  install) install_engine ;;
  base) base_image ;;
  build) [ $# = 3 ] || { say "usage: $0 build KIND TAG"; exit 2; }; build "$2" "$3" ;;
  images)
    [ $# = 3 ] || { say "usage: $0 images NAMESPACE TAG"; exit 2; }
    name=$(which_engine)
    if [ "$name" = docker ]; then say "using docker (its daemon answers)"; else say "using podman (no Docker daemon answers)"; fi
    for file in docker/*.Dockerfile; do
      kind=$(basename "$file" .Dockerfile)
      build "$kind" "$2/$kind:$3"
    done ;;
  exec) shift; if [ "$ENGINE" = podman ]; then podman_conf; fi; exec "$ENGINE" "$@" ;;
  *) say "usage: $0 which|install|base|build KIND TAG|images NAMESPACE TAG|exec ARGS..."; exit 2 ;;
esac
