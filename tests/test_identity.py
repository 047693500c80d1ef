"""Who a message is from: a connection speaks for neighbour j only after a valid hello from j.

The attack of issue 11: any process that can reach a plaintext node's port connects once with a
neighbour's routing id (the ASCII digit "1") and sends 10 bytes. With ROUTER_HANDOVER the
newcomer took the id over and the real neighbour was cut off until the round timed out."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import zmq

from mcepl.launcher.launch import launch
from mcepl.launcher.resolve import free_base_port
from mcepl.node.inprocess import run_inprocess
from mcepl.topology import generate

COMPARED = ("test_acc", "train_loss", "density", "bytes_sent", "bytes_received")


def _records(path: Path) -> list[dict]:
    try:
        text = path.read_text()
    except OSError:
        return []
    return [json.loads(ln) for ln in text.splitlines() if ln.strip()]


def test_ten_bytes_under_a_neighbours_routing_id_do_not_cut_it_off(tmp_path: Path,
                                                                   tiny_cfg) -> None:
    rounds = 30
    cfg = tiny_cfg({"run": {"rounds": rounds, "eval_every": 10, "round_timeout_s": 8.0,
                            "connect_timeout_s": 60.0}})
    topo = generate("complete", 3, retention=[0.5, 0.3, 0.2],
                    base_port=free_base_port(3, start=24000))
    run_dir = tmp_path / "run"
    out: dict = {}

    def target() -> None:
        try:
            out["result"] = launch(cfg, topo, run_dir, quiet=True, secure=False)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    deadline = time.monotonic() + 240
    # every node has finished round 1: all connections are up, node 1 talks to node 0
    while not sum(1 for r in _records(run_dir / "metrics.jsonl") if r["round"] >= 1) >= 3:
        assert time.monotonic() < deadline and thread.is_alive(), out
        time.sleep(0.05)
    ctx = zmq.Context()
    try:
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 1000)
        s.setsockopt(zmq.ROUTING_ID, b"1")
        s.connect(topo.node(0).address)
        s.send(b"0123456789")
        attacked_at = max(r["round"] for r in _records(run_dir / "metrics.jsonl"))
        thread.join(240)
    finally:
        ctx.destroy(linger=0)
    assert not thread.is_alive()
    assert attacked_at < rounds - 3, "the run ended before the attack could matter"
    assert "error" not in out, out.get("error")
    assert out["result"].summary["status"] == "ok"
    got = {(r["round"], r["node"]): r for r in _records(run_dir / "metrics.jsonl")}
    want = {(r["round"], r["node"]): r for r in run_inprocess(cfg, topo).records}
    assert set(got) == set(want)
    for k, ref in want.items():
        for field in COMPARED:
            if field in ref:
                assert got[k][field] == ref[field], (k, field)
