"""RoundRecord: the typed record both drivers write, the collector receives and the report
reads; what it does with records it does not fully know."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import zmq

from mcepl.launcher.collector import Collector
from mcepl.launcher.report import read_records, write_report
from mcepl.node.record import SCHEMA_VERSION, RecordError, RoundRecord
from mcepl.protocol import encode_control, encode_metrics


def full_record() -> RoundRecord:
    return RoundRecord(round=3, node=1, bytes_sent=100, bytes_received=90, msgs_sent=2,
                       msgs_received=2, bytes_arrived_data=95, mask_entries=800, mask_bytes=100,
                       bits_per_entry=1.0, peer_bytes="0:data:50:45:4 2:data:50:45:4",
                       encode_s=0.001, decode_s=0.002, compute_s=0.5, comm_s=0.1, dropped=1,
                       test_acc=0.75, eval_s=0.01, t_end=1.7e9,
                       stats={"train_loss": 0.5, "density": 0.3})


def test_json_round_trip() -> None:
    rec = full_record()
    d = rec.to_json()
    assert d["schema_version"] == SCHEMA_VERSION and d["train_loss"] == 0.5
    assert "stats" not in d and "rejected" not in d and "bytes_sent_metrics" not in d
    assert RoundRecord.from_json(json.loads(json.dumps(d))) == rec
    assert RoundRecord.from_json(d).to_json() == d


def test_nan_is_null_and_back() -> None:
    rec = RoundRecord(round=0, node=0, test_acc=math.nan, stats={"train_loss": None})
    d = rec.to_json()
    assert d["test_acc"] is None and d["train_loss"] is None
    json.dumps(d, allow_nan=False)  # strict JSON
    back = RoundRecord.from_json(d)
    assert math.isnan(back.test_acc) and back.stats == {"train_loss": None}


def test_missing_counters_read_as_zero_and_unknown_numbers_are_stats() -> None:
    old = {"round": 2, "node": 0, "bytes_sent": 5, "test_acc": 0.5, "prune_events": 1.0}
    rec = RoundRecord.from_json(old)  # an older record: no schema_version, comm_s, dropped
    assert rec.comm_s == 0.0 and rec.dropped == 0 and rec.schema_version == 1
    assert rec.stats == {"prune_events": 1.0} and rec.peer_bytes is None


@pytest.mark.parametrize(("bad", "names"), [
    ([1, 2], "JSON object"),
    ({"node": 0}, "round"),
    ({"round": 1}, "node"),
    ({"round": -1, "node": 0}, "round"),
    ({"round": "1", "node": 0}, "round"),
    ({"round": 1, "node": True}, "node"),
    ({"round": 1, "node": 0, "bytes_sent": 1.5}, "bytes_sent"),
    ({"round": 1, "node": 0, "peer_bytes": 7}, "peer_bytes"),
    ({"round": 1, "node": 0, "comm_s": "slow"}, "comm_s"),
    ({"round": 1, "node": 0, "extra": {"nested": 1}}, "extra"),
    ({"round": 1, "node": 0, "extra": "text"}, "extra"),
    ({"round": 1, "node": 0, "schema_version": SCHEMA_VERSION + 1}, "newer"),
])
def test_bad_records_are_refused_with_the_key(bad: object, names: str) -> None:
    with pytest.raises(RecordError, match=names):
        RoundRecord.from_json(bad)


def test_stats_may_not_shadow_a_field() -> None:
    with pytest.raises(RecordError, match="bytes_sent"):
        RoundRecord(round=1, node=0, stats={"bytes_sent": 1.0}).to_json()


def test_collector_drops_bad_records_and_keeps_going(tmp_path: Path) -> None:
    col = Collector(tmp_path, "run-r", 2, bind="tcp://127.0.0.1:*")
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(col.address)
    try:
        good = full_record()
        good.node = 0
        bad = [{"round": 1, "node": 0, "bytes_sent": "many"},
               {"round": 1, "node": 1},  # claims another node than its sender
               {"round": 1, "node": 0, "schema_version": 99},
               {"round": 1, "node": 0, "note": "a string the record does not know"}]
        for rec in bad:
            push.send_multipart(encode_metrics(rec, run_id="run-r", sender=0))
        push.send_multipart(encode_metrics(good.to_json(), run_id="run-r", sender=0))
        push.send_multipart(encode_control("bye", {"status": "ok", "reason": ""},
                                           run_id="run-r", sender=0))
        deadline = time.monotonic() + 10
        while not col.state.nodes[0].done and time.monotonic() < deadline:
            col.poll(100)
    finally:
        col.close()
        push.close(0)
        ctx.term()
    assert col.state.dropped == len(bad) and col.state.bad_records["0"] == len(bad)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    written = RoundRecord.from_json(json.loads(lines[0]))
    assert written.bytes_sent == good.bytes_sent and written.bytes_sent_metrics is not None


def test_report_skips_unreadable_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = [RoundRecord(round=k, node=0, bytes_sent=10, test_acc=0.5).to_json() for k in (0, 1)]
    lines = [json.dumps(good[0]), '{"round": 1, "node": 0, "bytes_sent": "x"}',
             json.dumps(good[1]), '{"round": 2, "no']  # a bad record and a torn last line
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert [r.round for r in read_records(tmp_path)] == [0, 1]
    out = capsys.readouterr().out
    assert "metrics.jsonl:2: record skipped: bytes_sent" in out and "metrics.jsonl:4" in out
    summary = write_report(tmp_path)
    assert summary["rounds"] == 1 and summary["bytes_sent_total"] == 20


def test_integers_beyond_64_bits_are_refused_not_a_crash() -> None:
    """Found by benchmarks/fuzz.py: a float field holding a JSON integer too large for a float
    raised OverflowError (a traceback in `mcepl report`, or in a node resuming from its metrics
    file) instead of RecordError."""
    from mcepl import jsonio

    base = {"round": 1, "node": 0, "bytes_sent": 1}
    for key in ("comm_s", "test_acc", "bytes_sent", "density"):
        with pytest.raises(RecordError, match=f"{key}: integer out of the 64-bit range"):
            RoundRecord.from_json({**base, key: 10**400})
    line = '{"round": 1, "node": 0, "comm_s": 1' + "0" * 5000 + "}"
    with pytest.raises(jsonio.JSONLimitError, match="4300 digits"):
        jsonio.loads(line)
