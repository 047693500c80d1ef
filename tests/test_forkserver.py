"""Nodes forked from the launcher's fork server: same numbers as spawned ones, real exit codes,
their own log files, and a way back to spawning."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from mcepl.launcher import forkserver
from mcepl.launcher.launch import LaunchError, launch
from mcepl.launcher.resolve import default_topology
from mcepl.topology import generate, save_topology

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def _records(run_dir: Path) -> dict[tuple[int, int], dict]:
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        out[(r["round"], r["node"])] = r
    return out


def test_forked_nodes_give_the_numbers_of_spawned_ones(tmp_path: Path, tiny_cfg,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_cfg({"run": {"rounds": 2, "eval_every": 1}})
    topo = default_topology(cfg, 3)
    runs = {}
    for how in ("spawn", "fork"):
        monkeypatch.setenv(forkserver.START_ENV, how)
        launch(cfg, topo, tmp_path / how, quiet=True, auto_ports=True, secure=how == "fork")
        runs[how] = _records(tmp_path / how)
        assert "finished 2 rounds" in (tmp_path / how / "logs" / "node-1.log").read_text()
    assert runs["fork"].keys() == runs["spawn"].keys() and len(runs["fork"]) == 9
    for key, rec in runs["spawn"].items():
        for field in ("train_loss", "test_acc", "density", "bytes_sent", "bytes_received"):
            assert runs["fork"][key].get(field) == rec.get(field), (key, field)


def test_server_forks_children_of_ours_with_their_exit_codes(tmp_path: Path) -> None:
    server = forkserver.ForkServer(label=str(tmp_path))
    try:
        logs = [open(tmp_path / f"n{i}.log", "w") for i in range(2)]  # noqa: SIM115
        bad = server.start(["--topology", str(tmp_path / "missing.json"), "--id", "0",
                            "--insecure"], dict(os.environ), logs[0].fileno(), None,
                           "mcepl-node 0")
        # a node that waits for a collector nobody runs: stopped by a signal
        topo = tmp_path / "t.json"
        save_topology(generate("ring", 2), topo)
        slow = server.start(["--topology", str(topo), "--id", "0", "--insecure", "--collector",
                             "tcp://127.0.0.1:9", "--checkpoint-dir", str(tmp_path / "ck")],
                            dict(os.environ), logs[1].fileno(), None, "mcepl-node 1")
    finally:
        server.close()  # the nodes are ours, not the server's: they live on
    assert bad.wait(60) == 2
    assert "error:" in (tmp_path / "n0.log").read_text()
    assert Path(f"/proc/{slow.pid}/comm").read_text().strip() == "mcepl-node 1"
    stat = Path(f"/proc/{slow.pid}/stat").read_text()
    assert int(stat[stat.rindex(")") + 2:].split()[1]) == os.getpid()  # re-parented to us
    slow.send_signal(signal.SIGKILL)
    assert slow.wait(30) == -signal.SIGKILL
    for log in logs:
        log.close()


def test_bad_start_setting_is_one_line(tmp_path: Path, tiny_cfg,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(forkserver.START_ENV, "vfork")
    cfg = tiny_cfg()
    with pytest.raises(LaunchError, match="MCEPL_NODE_START='vfork': must be 'fork' or 'spawn'"):
        launch(cfg, default_topology(cfg, 2), tmp_path / "r", quiet=True, auto_ports=True,
               secure=False)


def test_gpu_devices_are_spawned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(forkserver.START_ENV, raising=False)
    assert forkserver.wanted("cpu") and not forkserver.wanted("cuda")
    monkeypatch.setenv(forkserver.START_ENV, "spawn")
    assert not forkserver.wanted("cpu")
