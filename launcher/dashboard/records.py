"""The part of a metrics record the page draws: plain dict in, small dict out.

Keeping only these fields makes a 20-node, 300-round run about 1 MB of events, so a page opened
late still gets the whole history quickly."""

from __future__ import annotations

import math
from typing import Any

from mcepl.protocol import parse_peer_bytes

_FLOATS = ("test_acc", "density", "train_loss", "compute_s", "comm_s", "eval_s", "t_end")
_INTS = {"data_sent": "bytes_sent", "data_received": "bytes_received",
         "control_sent": "bytes_sent_control", "control_received": "bytes_received_control",
         "metrics_sent": "bytes_sent_metrics", "status_sent": "bytes_sent_status",
         "dropped": "dropped"}


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def slim(rec: Any) -> dict[str, Any] | None:
    """The page's view of one record; None when it is not a record (no int round and node)."""
    if not isinstance(rec, dict):
        return None
    rnd, node = rec.get("round"), rec.get("node")
    if type(rnd) is not int or type(node) is not int or rnd < 0 or node < 0:
        return None
    out: dict[str, Any] = {"round": rnd, "node": node}
    for k in _FLOATS:
        v = _num(rec.get(k))
        if v is not None:
            out[k] = v
    for short, k in _INTS.items():
        v = _num(rec.get(k))
        if v is not None:
            out[short] = int(v)
    by = rec.get("dropped_by")
    if isinstance(by, str) and by:
        out["dropped_by"] = by
    peers = rec.get("peer_bytes")
    if isinstance(peers, str) and peers:
        try:
            table = parse_peer_bytes(peers)
        except ValueError:
            table = {}
        links: dict[str, int] = {}
        for (j, _kind), (sent, _recv, _framing) in table.items():
            links[str(j)] = links.get(str(j), 0) + sent
        out["links"] = links  # bytes this node handed to ZeroMQ for each peer (all kinds)
    return out
