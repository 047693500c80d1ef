#!/usr/bin/env bash
# A stand-in for python:3.11-slim when Docker Hub cannot be reached (air-gapped hosts, CI):
# Debian bookworm (minbase) with python3, python3-venv, python3-pip and ca-certificates, made
# with debootstrap from a Debian mirror and loaded with `docker import`. Needs root, debootstrap
# and a running Docker engine. Idempotent: does nothing when the image already exists.
#   bash docker/stand-in-base.sh                 # -> mcepl-base:bookworm
#   docker build --build-arg BASE=mcepl-base:bookworm -t mcepl:latest .
# Environment: MCEPL_BASE_IMAGE (image name, default mcepl-base:bookworm), MCEPL_DEBIAN_MIRROR
# (default http://deb.debian.org/debian), MCEPL_BASE_FORCE=1 (rebuild even if it exists).
set -euo pipefail
image="${MCEPL_BASE_IMAGE:-mcepl-base:bookworm}"
mirror="${MCEPL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite=bookworm  # Python 3.11, as python:3.11-slim (the CPU torch wheel is cp311)

have_image() { docker image inspect "$image" >/dev/null 2>&1; }
if [ "${MCEPL_BASE_FORCE:-0}" != 1 ] && have_image; then
  echo "$image: already present"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "error: debootstrap needs root" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "error: debootstrap not installed (apt-get install debootstrap)" >&2; exit 2; }

# Two builds at once (two test runs) would race: the second waits, then finds the image.
exec 9>"/tmp/mcepl-stand-in-base.lock"
flock 9
if [ "${MCEPL_BASE_FORCE:-0}" != 1 ] && have_image; then
  echo "$image: already present"
  exit 0
fi
root="$(mktemp -d /tmp/mcepl-base.XXXXXX)"
trap 'rm -rf "$root"' EXIT
echo "debootstrap $suite from $mirror into $root (about a minute)"
if ! debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
     "$suite" "$root" "$mirror" >"$root.log" 2>&1; then
  tail -20 "$root.log" >&2
  echo "error: debootstrap failed (log above)" >&2
  rm -f "$root.log"
  exit 1
fi
rm -f "$root.log"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/tmp/*
tar -C "$root" --numeric-owner -c . |
  docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    --message "mcepl stand-in base: debootstrap $suite + python3" - "$image" >/dev/null
echo "$image: built ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
