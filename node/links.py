"""`PeerLinks`: one node's links to its neighbours, whatever carries the bytes.

Per neighbour and direction it holds the mask codec's state (`CodecState`: `delta` is stateful),
encodes what the algorithm sends and decodes what arrives, and counts every message and byte per
peer and kind ("data": training payload; "control": handshake hellos, which travel on our DEALER
to the peer; "ack": handshake replies, on our ROUTER; "metrics": records to the collector, peer
COLLECTOR). It also keeps what was sent in the last rounds (the resend log), so a neighbour that
crashed and rejoins gets it again.

The bytes counted are exactly the frames handed to, or taken from, the transport (ZeroMQ
sockets in `NodeRuntime`, an in-memory postbox in the in-process driver), so both drivers report
the same bill.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from mcepl.protocol import (
    CodecState,
    DataMessage,
    Message,
    StatefulCodec,
    decode_message,
    encode_payload,
    get_codec,
    mask_codec_wire_name,
    mask_wire_stats,
    message_size,
    zmtp_framing,
)
from mcepl.protocol.payload import Payload

COLLECTOR = -1  # the peer id the metrics PUSH is counted under
KEEP_ROUNDS = 2  # the resend log keeps what was sent in the last two rounds


class Delivered(NamedTuple):
    """A payload that arrived, with the size of the message that carried it."""

    payload: Payload
    size: int


@dataclass
class ByteCounter:
    """Bytes and messages per (peer, kind), in both directions, and the ZMTP framing ZeroMQ
    adds around what was sent (flags + length per frame; protocol.zmtp_framing)."""

    sent: dict[tuple[int, str], int] = field(default_factory=lambda: defaultdict(int))
    received: dict[tuple[int, str], int] = field(default_factory=lambda: defaultdict(int))
    msgs_sent: dict[tuple[int, str], int] = field(default_factory=lambda: defaultdict(int))
    msgs_received: dict[tuple[int, str], int] = field(default_factory=lambda: defaultdict(int))
    framing_sent: dict[tuple[int, str], int] = field(default_factory=lambda: defaultdict(int))

    def total(self, table: Mapping[tuple[int, str], int], kind: str | None = None) -> int:
        return sum(v for (_, k), v in table.items() if kind is None or k == kind)


class PeerLinks:
    """Encode/decode per neighbour with its codec state; count; remember what was sent."""

    def __init__(self, node_id: int, neighbors: Iterable[int], run_id: str,
                 codec: str = "raw") -> None:
        self.id, self.run_id, self.codec = node_id, run_id, codec
        self.neighbors = sorted(neighbors)
        self.stateful = isinstance(get_codec(mask_codec_wire_name(codec)), StatefulCodec)
        self.tx = {j: CodecState() for j in self.neighbors}
        self.rx = {j: CodecState() for j in self.neighbors}
        self.counter = ByteCounter()
        self.mask_entries = self.mask_bytes = 0  # masks handed to the transport (cumulative)
        self.encode_s = self.decode_s = 0.0
        # what this node sent per (round, phase) and peer, for the last KEEP_ROUNDS rounds
        self.sent_log: dict[tuple[int, int], dict[int, Payload]] = {}

    # ------------------------------------------------------------------ sending
    def encode(self, out: Mapping[int, Payload], rnd: int,
               phase: int) -> list[tuple[int, list[bytes]]]:
        """Frames for each peer (sorted), counted as sent and logged for resending. A payload
        broadcast to several peers is encoded once unless the codec keeps per-link state."""
        self.sent_log[(rnd, phase)] = dict(out)
        cache: dict[int, tuple[list[bytes], tuple[int, int]]] = {}
        return [(j, self._encode_one(j, payload, rnd, phase, cache))
                for j, payload in sorted(out.items())]

    def _encode_one(self, j: int, payload: Payload, rnd: int, phase: int,
                    cache: dict[int, tuple[list[bytes], tuple[int, int]]]) -> list[bytes]:
        t0 = time.perf_counter()
        if self.stateful or id(payload) not in cache:
            frames = encode_payload(payload, run_id=self.run_id, round=rnd, phase=phase,
                                    sender=self.id, mask_codec=self.codec, state=self.tx[j])
            cache[id(payload)] = (frames, mask_wire_stats(payload, frames))
        frames, (entries, nbytes) = cache[id(payload)]
        self.encode_s += time.perf_counter() - t0
        self.mask_entries += entries
        self.mask_bytes += nbytes
        self.count_sent(j, "data", frames)
        return frames

    def count_sent(self, peer: int, kind: str, frames: list[bytes]) -> None:
        """Count a message handed to the transport (handshake, metrics; data goes through
        `encode`)."""
        self.counter.sent[(peer, kind)] += message_size(frames)
        self.counter.msgs_sent[(peer, kind)] += 1
        self.counter.framing_sent[(peer, kind)] += zmtp_framing(frames)

    def resend(self, peer: int) -> list[list[bytes]]:
        """Everything in the resend log for `peer`, encoded again (oldest first): after it
        rejoined, on fresh codec state (see `reset_sending`)."""
        out = []
        for (rnd, phase), sent in sorted(self.sent_log.items()):
            if peer in sent:
                out.append(self._encode_one(peer, sent[peer], rnd, phase, {}))
        return out

    def resend_all(self) -> list[tuple[int, list[bytes]]]:
        """The whole resend log encoded again, for every peer (a node resuming after a crash:
        its neighbours may have lost what it sent in its last round)."""
        return [(j, self._encode_one(j, payload, rnd, phase, {}))
                for (rnd, phase), sent in sorted(self.sent_log.items())
                for j, payload in sorted(sent.items())]

    def forget_before(self, rnd: int) -> None:
        """Drop the resend log of rounds before `rnd` - KEEP_ROUNDS + 1 (called as round `rnd`
        ends: the log then holds that round and the one before)."""
        for key in [k for k in self.sent_log if k[0] < rnd - KEEP_ROUNDS + 1]:
            del self.sent_log[key]

    def reset(self, peer: int) -> None:
        """Start both directions of the link afresh."""
        self.tx[peer].reset()
        self.rx[peer].reset()

    def reset_sending(self, peer: int) -> None:
        """Start our sending side of the link afresh (the peer restarted from a checkpoint and
        holds no reference: our next mask to it is a key frame)."""
        self.tx[peer].reset()

    # ------------------------------------------------------------------ receiving
    def decode(self, peer: int, frames: list[bytes]) -> Message:
        """Decode a message from neighbour `peer` with that link's codec state; its bytes are
        counted as data when undecodable (ProtocolError raised) or a data message."""
        size = message_size(frames)
        t0 = time.perf_counter()
        try:
            msg = decode_message(frames, run_id=self.run_id, state=self.rx[peer])
        except Exception:
            self.counter.received[(peer, "data")] += size
            raise
        finally:
            self.decode_s += time.perf_counter() - t0
        kind = "data" if isinstance(msg, DataMessage) else "control"
        self.count_received(peer, kind, size)
        return msg

    def count_received(self, peer: int, kind: str, size: int, msgs: int = 1) -> None:
        self.counter.received[(peer, kind)] += size
        self.counter.msgs_received[(peer, kind)] += msgs
