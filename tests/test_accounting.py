"""The communication bill: per kind, per peer, per round; identical in both drivers; the metrics
record states its own size; the collector receives exactly what the records say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcepl.config import ConfigError
from mcepl.launcher.cli import build_parser, resolve_run
from mcepl.launcher.launch import launch
from mcepl.node.inprocess import run_inprocess
from mcepl.protocol import (
    encode_control,
    encode_metrics,
    format_peer_bytes,
    message_size,
    parse_peer_bytes,
    zmtp_connection_overhead,
    zmtp_framing,
)
from mcepl.protocol.accounting import zmtp_ready
from mcepl.topology import generate

DETERMINISTIC = ("bytes_sent", "bytes_received", "msgs_sent", "msgs_received", "mask_entries",
                 "mask_bytes", "bits_per_entry", "test_acc", "train_loss")


def test_zmtp_overhead_formulas() -> None:
    assert zmtp_framing([b"x" * 255]) == 2 and zmtp_framing([b"x" * 256]) == 9
    assert zmtp_framing([b"", b"y" * 1000, b"z" * 10]) == 2 + 9 + 2
    # READY = 1 + "READY" + Socket-Type property (+ Identity for DEALER/ROUTER), 2-byte header
    assert zmtp_ready("PUSH") == 2 + 6 + (1 + 11 + 4 + 4)
    assert zmtp_ready("DEALER", b"3") == 2 + 6 + (1 + 11 + 4 + 6) + (1 + 8 + 4 + 1)
    assert zmtp_ready("ROUTER") == 2 + 6 + (1 + 11 + 4 + 6) + (1 + 8 + 4)
    assert zmtp_connection_overhead("PULL") == 64 + zmtp_ready("PULL")


@pytest.mark.parametrize("filler", [0, 100, 200, 70_000])
def test_metrics_record_states_its_own_size(filler: int) -> None:
    rec = {"round": 1, "node": 0, "note": "x" * min(filler, 4000), "n": filler}
    frames = encode_metrics(rec, run_id="r", sender=0)
    assert rec["bytes_sent_metrics"] == message_size(frames)
    again = encode_control("metrics", {"record": rec}, run_id="r", sender=0)
    assert again == frames


def test_peer_bytes_format_roundtrip() -> None:
    table = {(2, "data"): (100, 90, 6), (1, "control"): (40, 41, 2), (3, "data"): (0, 0, 0)}
    text = format_peer_bytes(table)
    assert text == "1:control:40:41:2 2:data:100:90:6"
    assert parse_peer_bytes(text) == {k: v for k, v in table.items() if any(v)}
    with pytest.raises(ValueError):
        parse_peer_bytes("1:data:3")


def test_codec_config_and_flag(tiny_cfg) -> None:
    assert tiny_cfg().run.codec == "raw"
    assert tiny_cfg(run={"codec": "entropy"}).run.codec == "entropy"
    with pytest.raises(ConfigError, match="run.codec"):
        tiny_cfg(run={"codec": "zip"})
    args = build_parser().parse_args(["launch", "--codec", "delta", "--nodes", "2"])
    cfg, _ = resolve_run(args)
    assert cfg.run.codec == "delta"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["launch", "--codec", "zip"])


def test_inprocess_codecs_cost_what_they_should(tiny_cfg) -> None:
    """Same training whatever the codec (lossless); low retention makes entropy beat raw; masks
    that settle make delta beat entropy."""
    topo = generate("ring", 3, retention=[0.1, 0.2, 0.1], base_port=24000)
    runs = {c: run_inprocess(tiny_cfg(run={"rounds": 4, "codec": c}), topo).records
            for c in ("raw", "entropy", "delta")}
    for c in ("entropy", "delta"):
        for a, b in zip(runs["raw"], runs[c], strict=True):
            assert (a["round"], a["node"]) == (b["round"], b["node"])
            for key in ("test_acc", "train_loss", "density", "mask_entries", "msgs_sent"):
                assert a.get(key) == b.get(key), (c, key)
    bpe = {c: [r["bits_per_entry"] for r in recs] for c, recs in runs.items()}
    assert all(abs(b - 1.0) < 0.01 for b in bpe["raw"])
    assert all(e < 0.8 for e in bpe["entropy"])  # H(0.1) = 0.47, H(0.2) = 0.72
    last = [r for r in runs["delta"] if r["round"] == 4]
    assert all(r["bits_per_entry"] < 0.47 for r in last)
    for recs in runs.values():
        for r in recs:
            sent = sum(s for (_, kind), (s, _, _) in parse_peer_bytes(r["peer_bytes"]).items()
                       if kind == "data")
            assert sent == r["bytes_sent"]


@pytest.mark.slow
def test_networked_bill_matches_inprocess_and_collector(tmp_path: Path, tiny_cfg) -> None:
    """Real node processes with the stateful delta codec: the deterministic numbers equal the
    in-process driver's; the handshake is in round 0; the collector got exactly what the records
    and the bye messages say; every link's data bytes arrived at the other end."""
    cfg = tiny_cfg(run={"rounds": 3, "eval_every": 3, "codec": "delta"})
    topo = generate("er", 3, p=0.7, seed=1, retention=[0.5, 0.3, 0.2], transport="ipc",
                    ipc_dir=tmp_path)
    net = launch(cfg, topo, tmp_path / "run", quiet=True)
    assert net.summary["status"] == "ok" and net.summary["codec"] == "delta"
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    networked = {(r["round"], r["node"]): r for r in recs}
    reference = {(r["round"], r["node"]): r for r in run_inprocess(cfg, topo).records}
    assert set(networked) == set(reference)
    for k, ref in reference.items():
        for key in DETERMINISTIC:
            assert networked[k].get(key) == ref.get(key), (k, key)
        sent = {p: v[0] for p, v in parse_peer_bytes(networked[k]["peer_bytes"]).items()
                if p[1] == "data"}
        assert sent == {p: v[0] for p, v in parse_peer_bytes(ref["peer_bytes"]).items()}, k
    # the handshake: a hello to and an ack from... every neighbour, all in round 0
    hello = message_size(encode_control("hello", {"config_hash": cfg.hash()},
                                        run_id=net.summary["run_id"], sender=0))
    ack = message_size(encode_control("hello_ack", {"accept": True, "reason": ""},
                                      run_id=net.summary["run_id"], sender=0))
    for (rnd, i), r in networked.items():
        deg = len(topo.neighbors(i))
        want = deg * (hello + ack) if rnd == 0 else 0
        assert r["bytes_sent_control"] == r["bytes_received_control"] == want, (rnd, i)
    # metrics: each record's own size; the collector received those plus the bye
    col = json.loads((tmp_path / "run" / "collector.json").read_text())["received"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    for i in range(3):
        mine = [r["bytes_sent_metrics"] for r in recs if r["node"] == i]
        assert col[str(i)]["metrics"] == sum(mine) and col[str(i)]["metrics_msgs"] == 4
        assert col[str(i)]["bye"] > 0
        assert summary["bytes_per_node"][str(i)]["metrics_sent"] == sum(mine)
    # every data byte sent on a link arrived at its other end (run totals, no drops)
    arrived: dict[tuple[int, int], int] = {}
    for r in recs:
        for (j, kind), (_, got, _) in parse_peer_bytes(r["peer_bytes"]).items():
            if kind == "data":
                arrived[j, r["node"]] = arrived.get((j, r["node"]), 0) + got
    links = summary["bytes_per_link"]
    for (i, j), got in arrived.items():
        assert links[f"{i}->{j}"]["data"] == got
    assert sum(v["data"] for v in links.values()) == summary["bytes_sent_total"]
    assert summary["bytes_by_kind"]["data"]["sent"] == summary["bytes_sent_total"]
    assert all(r["dropped"] == 0 for r in recs)
