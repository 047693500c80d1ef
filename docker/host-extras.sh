#!/usr/bin/env bash
# Fill docker/extra/ (or DIR) for an image build from what this machine's pip is set up with:
#   certs/host-ca-bundle.pem   the CA bundle pip uses here (PIP_CERT / `pip config` cert), else
#                              the locally added CAs in /usr/local/share/ca-certificates/
#   wheels/torch-*.whl         a local torch wheel for the image's Python (cp311) matching the pin
#                              (MCEPL_TORCH_VERSION, default 2.13.0), from pip's find-links
# Usage: bash docker/host-extras.sh [DIR]      (hard links when possible, else copies)
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - "${1:-docker/extra}" "${MCEPL_TORCH_VERSION:-2.13.0}" <<'PY'
import glob, os, shutil, subprocess, sys
from pathlib import Path

dest, version = Path(sys.argv[1]), sys.argv[2]


def pip_setting(env: str, key: str) -> str:
    if os.environ.get(env):
        return os.environ[env]
    proc = subprocess.run([sys.executable, "-m", "pip", "config", "get", key],
                          capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def place(src: str, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    print(f"host-extras: {dst} <- {src}")


cert = pip_setting("PIP_CERT", "global.cert")
if cert and os.path.isfile(cert):
    place(cert, dest / "certs" / "host-ca-bundle.pem")
else:
    for crt in sorted(glob.glob("/usr/local/share/ca-certificates/**/*.crt", recursive=True)):
        place(crt, dest / "certs" / os.path.basename(crt))
found = False
for d in pip_setting("PIP_FIND_LINKS", "global.find-links").split():
    d = d.removeprefix("file://")
    for whl in sorted(glob.glob(os.path.join(d, f"torch-{version}*-cp311-cp311-*.whl"))):
        place(whl, dest / "wheels" / os.path.basename(whl))
        found = True
if not found:
    print(f"host-extras: no local torch {version} wheel for cp311 in pip's find-links; "
          "the image build uses the PyTorch index")
PY
