#!/usr/bin/env bash
# Start the Docker engine if it is not answering, and build the mcepl image once so its layers
# are cached (the stand-in base with debootstrap the first time, torch and the dependencies).
# The test suite runs this in the background while its other tests run (tests/conftest.py), so
# tests/test_docker_e2e.py, which runs last, finds the layers ready. Mostly network and disk.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
t0=$(date +%s)
if ! docker info >/dev/null 2>&1; then
  (setsid dockerd >>/tmp/mcepl-dockerd.log 2>&1 &)
  for _ in $(seq 90); do docker info >/dev/null 2>&1 && break; sleep 1; done
fi
tag="mcepl-warm:$$"
bash "$repo/docker/build-image.sh" "$tag"
docker rmi --no-prune "$tag" >/dev/null
echo "docker preparation: $(( $(date +%s) - t0 )) s"
