#!/usr/bin/env bash
# Install mcepl (and, with "test", what the test suite needs) into the current Python.
#   bash scripts/install.sh          # runtime only
#   bash scripts/install.sh test     # + pytest, hypothesis, ruff, selenium; and on Debian/Ubuntu
#                                    #   as root: chromium + chromium-driver (the browser test)
# The CPU build of PyTorch is pinned so pip does not pull gigabytes of CUDA packages; set
# MCEPL_TORCH to another requirement (e.g. "torch" for a CUDA build) to override.
# Fashion-MNIST: when the official files are nowhere mcepl looks and this is a Debian/Ubuntu
# machine where we may use apt, the `dataset-fashion-mnist` package is installed; otherwise
# mcepl downloads the files (with checksums) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
[ "${1:-}" = "test" ] && extra="[test]"
python3 -m pip install --quiet --disable-pip-version-check "${MCEPL_TORCH:-torch==2.13.0}"
python3 -m pip install --quiet --disable-pip-version-check -e ".${extra}"

have_data() {
  for d in "${MCEPL_DATA:-/nonexistent}" "${MCEPL_DATA:-/nonexistent}/fashion-mnist" \
           "$HOME/.cache/mcepl/fashion-mnist" /usr/share/datasets/fashion-mnist; do
    [ -f "$d/t10k-labels-idx1-ubyte.gz" ] || [ -f "$d/t10k-labels-idx1-ubyte" ] && return 0
  done
  return 1
}
if ! have_data && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo -n"
  if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
    echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
    ($SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 ||
      { $SUDO apt-get update -qq >/dev/null 2>&1 &&
        $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; }) ||
      echo "note: could not install dataset-fashion-mnist; mcepl will try to download the files"
  fi
fi
# The dashboard's browser test drives headless Chromium (Debian's chromium + chromium-driver);
# without them it skips, saying so.
if [ "${1:-}" = "test" ] && ! command -v chromedriver >/dev/null 2>&1 &&
   command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo -n"
  if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
    echo "installing chromium and chromium-driver (Debian packages) for the browser test"
    ($SUDO apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 ||
      { $SUDO apt-get update -qq >/dev/null 2>&1 &&
        $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; }) ||
      echo "note: could not install chromium; the dashboard's browser test will skip"
  fi
fi
echo "mcepl installed: $(command -v mcepl || echo "python3 -m mcepl.launcher.cli")"
