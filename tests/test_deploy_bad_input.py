"""Bad input of a containerised deployment, checked with plain processes (no Docker needed; the
same cases on a real engine are in test_docker_e2e.py):

- the data set is not in the mount: each node ends at once with one line that names the mount
  and the variable to set (``MCEPL_DATA_HINT``, as compose and kube manifests set it), and the
  collector, told by every node, ends too; nothing waits for a network timeout;
- no collector listens (it refused to start): each node ends after ``run.connect_timeout_s``
  with one line, instead of training for nobody.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcepl.config import dump_toml
from mcepl.topology import generate, save_topology

HINT = ("the mount of the host directory /srv/nothing-here: set MCEPL_DATA to the host directory "
        "that holds the data set files and run `docker compose up` again")


def _mcepl() -> list[str]:
    exe = Path(sys.executable).parent / "mcepl"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mcepl.launcher.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _files(tmp_path: Path, cfg, n: int) -> tuple[Path, Path]:
    topo = generate("ring", n, host="127.0.0.1", base_port=_free_port())
    save_topology(topo, tmp_path / "topology.json")
    (tmp_path / "config.toml").write_text(dump_toml(cfg))
    return tmp_path / "topology.json", tmp_path / "config.toml"


def test_missing_data_set_is_one_line_per_node_and_the_collector_ends(
        tmp_path: Path, tiny_cfg) -> None:
    # CIFAR-10 with downloads off, MCEPL_DATA an empty directory, HOME a fresh one: no place a
    # node looks in has it (unless this machine installed it system-wide).
    if Path("/usr/share/datasets/cifar10").exists():
        pytest.skip("CIFAR-10 is installed in /usr/share/datasets: cannot make it missing")
    cfg = tiny_cfg(data={"dataset": "cifar10", "root": None, "download": False},
                   run={"connect_timeout_s": 300.0, "round_timeout_s": 300.0})
    topo, cfg_file = _files(tmp_path, cfg, 3)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "MCEPL_DATA": str(empty), "MCEPL_DATA_HINT": HINT,
           "HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    col_addr = f"tcp://127.0.0.1:{_free_port()}"
    common = ["--topology", str(topo), "--config", str(cfg_file)]
    t0 = time.monotonic()
    collector = subprocess.Popen(
        [*_mcepl(), "collect", *common, "--bind", col_addr, "--out", str(tmp_path / "run"),
         "--insecure"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    nodes = [subprocess.Popen([*_mcepl(), "node", *common, "--id", str(i), "--collector",
                               col_addr, "--checkpoint-dir", str(tmp_path / "ckpt"),
                               "--insecure"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(3)]
    try:
        outs = [p.communicate(timeout=120) for p in nodes]
        col_out, col_err = collector.communicate(timeout=60)
    finally:
        for p in [*nodes, collector]:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert time.monotonic() - t0 < 100, "something waited for a timeout"
    for i, (p, (out, err)) in enumerate(zip(nodes, outs, strict=True)):
        assert p.returncode == 1
        assert out == ""
        assert err.splitlines() == [f"node {i}: error: data set 'cifar10' not found in {empty}, "
                                    f"{HINT}"], err
    assert collector.returncode == 1, col_err
    for i in range(3):
        assert f"node {i} failed: data set 'cifar10' not found in {empty}, {HINT}" in col_err


def test_data_errors_without_a_hint_are_one_line_too(tmp_path: Path, tiny_cfg) -> None:
    """Outside a container (no MCEPL_DATA_HINT) the loader's several lines become one."""
    if Path("/usr/share/datasets/cifar10").exists():
        pytest.skip("CIFAR-10 is installed in /usr/share/datasets: cannot make it missing")
    cfg = tiny_cfg(data={"dataset": "cifar10", "root": None, "download": False})
    topo, cfg_file = _files(tmp_path, cfg, 2)
    env = {k: v for k, v in os.environ.items() if k not in ("MCEPL_DATA", "MCEPL_DATA_HINT")}
    proc = subprocess.run([*_mcepl(), "node", "--topology", str(topo), "--config",
                           str(cfg_file), "--id", "0", "--checkpoint-dir", str(tmp_path / "c"),
                           "--insecure"],
                          capture_output=True, text=True, timeout=120,
                          env={**env, "HOME": str(tmp_path)})
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("node 0: error: data set 'cifar10' not found")


def test_node_without_a_collector_ends_after_the_connect_timeout(tmp_path: Path,
                                                                 tiny_cfg) -> None:
    cfg = tiny_cfg(run={"connect_timeout_s": 3.0})
    topo, cfg_file = _files(tmp_path, cfg, 2)
    nobody = f"tcp://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    proc = subprocess.run([*_mcepl(), "node", "--topology", str(topo), "--config", str(cfg_file),
                           "--id", "0", "--collector", nobody, "--checkpoint-dir",
                           str(tmp_path / "c"), "--insecure"], capture_output=True, text=True,
                          timeout=120)
    took = time.monotonic() - t0
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"node 0: error: collector {nobody} not reachable within 3 s (run.connect_timeout_s): is "
        "`mcepl collect` running there? It refuses to start when its --out directory already "
        "holds a run"], proc.stderr
    assert 3.0 <= took < 60
