#!/usr/bin/env bash
# Build the mcepl image on a machine without Docker Hub, with this machine's pip extras (its CA
# bundle and local torch wheel: docker/host-extras.sh), from a temporary copy of the checkout so
# its own docker/extra/ is left alone. Needs a running Docker engine (and root plus debootstrap
# the first time, for the stand-in base image).
#   bash docker/build-image.sh [TAG]              # default mcepl:latest
# MCEPL_DOCKER_BASE: the base image (default mcepl-base:bookworm, made by stand-in-base.sh when
# missing). Layers are cached by Docker: a second build after a code change takes seconds.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
tag="${1:-mcepl:latest}"
base="${MCEPL_DOCKER_BASE:-mcepl-base:bookworm}"
if ! docker image inspect "$base" >/dev/null 2>&1; then
  if [ "$base" = "mcepl-base:bookworm" ]; then
    MCEPL_BASE_IMAGE="$base" bash "$repo/docker/stand-in-base.sh"
  else
    echo "error: base image $base is not present" >&2
    exit 2
  fi
fi
ctx="$(mktemp -d /tmp/mcepl-context.XXXXXX)"
trap 'rm -rf "$ctx"' EXIT
tar -C "$repo" --exclude=./.git --exclude=./runs --exclude=./results --exclude=./.venv \
    --exclude=./venv --exclude=./checkpoints --exclude=__pycache__ --exclude=.pytest_cache \
    --exclude=.ruff_cache --exclude=.hypothesis --exclude='*.egg-info' \
    --exclude=./docker/extra/certs --exclude=./docker/extra/wheels \
    --exclude=./docker/extra/pip.conf -cf - . | tar -C "$ctx" -xf -
bash "$ctx/docker/host-extras.sh" "$ctx/docker/extra"
docker build --build-arg "BASE=$base" -t "$tag" "$ctx"
