"""End to end: real node processes over loopback sockets, checked against the in-process driver."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mcepl.launcher.launch import LaunchError, launch
from mcepl.node.inprocess import run_inprocess
from mcepl.topology import generate, load_topology, save_topology

COMPARED = ("test_acc", "train_loss", "density", "bytes_sent", "bytes_received", "msgs_sent",
            "msgs_received")


def topology(tmp_path: Path, transport: str, n: int = 3):
    """tcp: placeholder ports, which `launch(..., auto_ports=True)` replaces with ports it
    reserved; ipc: sockets in tmp_path, reserved as they are."""
    if transport == "tcp":
        return generate("er", n, p=0.7, seed=1, retention=[0.5, 0.3, 0.2, 0.4][:n])
    return generate("er", n, p=0.7, seed=1, retention=[0.5, 0.3, 0.2, 0.4][:n],
                    transport="ipc", ipc_dir=tmp_path)


def read_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def key(rec: dict) -> tuple[int, int]:
    return rec["round"], rec["node"]


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
@pytest.mark.parametrize("algorithm", ["mcepl", "ind-mask"])
def test_network_equals_inprocess(tmp_path: Path, tiny_cfg, transport: str, algorithm: str) -> None:
    cfg = tiny_cfg({"algorithm": {"name": algorithm}, "run": {"rounds": 3, "eval_every": 1}})
    topo = topology(tmp_path, transport)
    net = launch(cfg, topo, tmp_path / "run", quiet=True, auto_ports=transport == "tcp")
    assert net.summary["status"] == "ok" and net.summary["secure"] is True
    networked = {key(r): r for r in read_records(tmp_path / "run")}
    reference = {key(r): r for r in run_inprocess(cfg, topo).records}
    assert set(networked) == set(reference) == {(k, i) for k in range(4) for i in range(3)}
    for k, ref in reference.items():
        for field in COMPARED:
            if field in ref:
                assert networked[k][field] == ref[field], (k, field)
    if algorithm == "mcepl":  # masks really travelled: ceil(entries/8) + header per neighbour
        assert all(r["bytes_sent"] > 0 for r in networked.values())
    else:
        assert all(r["bytes_sent"] == 0 for r in networked.values())


def test_cli_launch_writes_run_directory(tmp_path: Path, tiny_cfg) -> None:
    cfg = tiny_cfg({"run": {"rounds": 4, "eval_every": 2}})
    from mcepl.config import dump_toml

    (tmp_path / "cfg.toml").write_text(dump_toml(cfg))
    topo = topology(tmp_path, "tcp")
    save_topology(topo, tmp_path / "topo.json")
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "mcepl.launcher.cli", "launch",
         "--config", str(tmp_path / "cfg.toml"), "--transport", "tcp",
         "--topology", str(tmp_path / "topo.json"), "--out", str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    used = load_topology(out / "topology.json")  # the ports the launcher reserved, and keys
    assert used.secure and used.collector_key is not None
    assert [n.address for n in used.nodes] != [n.address for n in topo.nodes]
    assert "mean test accuracy" in proc.stdout
    for name in ("metrics.jsonl", "summary.json", "config.toml", "topology.json",
                 "accuracy.png", "accuracy_vs_bytes.png"):
        assert (out / name).stat().st_size > 0, name
    recs = read_records(out)
    assert sorted(key(r) for r in recs) == [(k, i) for k in range(5) for i in range(3)]
    for r in recs:
        assert {"round", "node", "bytes_sent", "bytes_received"} <= set(r)
        assert ("test_acc" in r) == (r["round"] in (0, 2, 4))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nodes"] == 3 and summary["rounds"] == 4 and summary["status"] == "ok"
    accs = [r["test_acc"] for r in recs if r["round"] == 4]
    assert summary["final_mean_acc"] == pytest.approx(sum(accs) / 3)


def test_failing_node_stops_the_run_with_its_error(tmp_path: Path, tiny_cfg) -> None:
    cfg = tiny_cfg({"run": {"rounds": 2, "device": "cuda:7"}})
    with pytest.raises(LaunchError, match=r"node \d+ failed.*cuda:7"):
        launch(cfg, topology(tmp_path, "ipc"), tmp_path / "run", quiet=True)
