"""The Dockerfile and its helpers without a Docker engine (test_docker_e2e.py builds it for real):
it copies every source directory the package is installed from, checks the console script from
outside any source tree, takes its base as ARG BASE, and docker/pip-env.sh hands pip the extra CA
certificates, the wheelhouse and pip.conf of docker/extra/.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = (REPO / "Dockerfile").read_text()


def _copied_sources() -> set[str]:
    """What the final stage copies from the build context (COPY without --from)."""
    out = set()
    for line in DOCKERFILE.splitlines():
        m = re.match(r"COPY\s+(?!--from)(.+)\s+(\S+)$", line.strip())
        if m:
            out.update(m.group(1).split())
    return out


def test_every_package_directory_is_copied_and_nothing_ignores_it() -> None:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    dirs = set(cfg["tool"]["setuptools"]["package-dir"].values())
    copied = _copied_sources()
    missing = {d for d in dirs | {"pyproject.toml", "README.md"} if d not in copied}
    assert not missing, f"the Dockerfile does not copy {missing}: the image would lack them"
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for path in [*dirs, "pyproject.toml", "README.md", "docker/extra", "docker/pip-env.sh"]:
        assert path not in ignored and path.split("/")[0] not in ignored, path


def test_base_is_an_argument_and_the_check_runs_outside_the_sources() -> None:
    assert "ARG BASE=python:3.11-slim" in DOCKERFILE
    froms = re.findall(r"^FROM\s+(\S+)", DOCKERFILE, flags=re.M)
    assert froms and all(f == "${BASE}" for f in froms)
    check = DOCKERFILE[DOCKERFILE.index("rm -rf /tmp/src"):]
    assert "cd / && mcepl --help" in check and "mcepl node --help" in check
    assert "import mcepl" not in DOCKERFILE  # the console script is checked, not module paths


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_pip_env_hands_the_extras_to_pip(tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    (extra / "certs").mkdir(parents=True)
    (extra / "wheels").mkdir()
    (extra / "certs" / "corp.crt").write_text("-----BEGIN CERTIFICATE-----\nCORP\n"
                                             "-----END CERTIFICATE-----\n")
    (extra / "wheels" / "torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl").write_bytes(b"")
    (extra / "pip.conf").write_text("[global]\nno-index = true\n")
    show = [sys.executable, "-c", "import os; print(os.environ['PIP_CERT']); "
            "print(os.environ['PIP_FIND_LINKS']); print(os.environ['PIP_CONFIG_FILE'])"]
    proc = subprocess.run(["sh", str(REPO / "docker" / "pip-env.sh"), *show],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "MCEPL_EXTRA": str(extra),
                               "PIP_PYTHON": sys.executable, "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    bundle, links, conf = proc.stdout.splitlines()[-3:]
    text = Path(bundle).read_text()
    assert text.endswith("CORP\n-----END CERTIFICATE-----\n")  # appended to the usual CAs
    assert text.count("BEGIN CERTIFICATE") > 1
    assert links == str(extra / "wheels") and conf == str(extra / "pip.conf")
    # nothing in extra/: pip is left alone
    empty = tmp_path / "none"
    empty.mkdir()
    proc = subprocess.run(["sh", str(REPO / "docker" / "pip-env.sh"), "env"], capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin",
                                                      "MCEPL_EXTRA": str(empty)})
    assert proc.returncode == 0 and "PIP_" not in proc.stdout
