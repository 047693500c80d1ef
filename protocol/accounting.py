"""Measuring communication: what the wire carries beyond our frames, and the per-peer bill format.

Every byte mcepl counts is a byte of a frame handed to ZeroMQ (`message.message_size`). On a
stream connection (tcp, ipc) ZeroMQ's ZMTP 3 adds, exactly:

- per connection and direction, a 64-byte greeting (signature, version, mechanism "NULL",
  as-server flag, filler), then a READY command listing the socket's properties;
- per frame, a flags byte and the frame length in 1 byte (frames up to 255 bytes) or 8 bytes.

Heartbeats are off (ZMQ_HEARTBEAT_IVL = 0, the default), so nothing else travels. The functions
below compute that overhead from the frames, so a packet capture can be checked to the byte
(benchmarks/tcpdump_bytes.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .payload import Payload

Frame = bytes | bytearray | memoryview

ZMTP_GREETING = 64  # bytes, each direction of each connection


def zmtp_frame_header(nbytes: int) -> int:
    """Bytes of ZMTP's header in front of one frame (or command) body of `nbytes`."""
    return 2 if nbytes <= 255 else 9


def zmtp_framing(frames: Sequence[Frame]) -> int:
    """Bytes ZeroMQ adds around these frames on a stream connection (per-frame headers only).

    A DEALER or PUSH sends exactly the frames it is given; a ROUTER strips the routing-id frame
    first, so pass the frames without it."""
    return sum(zmtp_frame_header(memoryview(f).nbytes) for f in frames)


def zmtp_ready(socket_type: str, routing_id: bytes | None = None) -> int:
    """Bytes of the READY command (NULL mechanism) a socket of this type sends once per
    connection: the command name and the Socket-Type property, plus the Identity property
    (possibly empty) for REQ, DEALER and ROUTER sockets, as libzmq does."""
    body = 1 + len("READY") + _prop("Socket-Type", socket_type.encode())
    if socket_type in ("REQ", "DEALER", "ROUTER"):
        body += _prop("Identity", routing_id or b"")
    return zmtp_frame_header(body) + body


def _prop(name: str, value: bytes) -> int:
    return 1 + len(name) + 4 + len(value)


def zmtp_connection_overhead(socket_type: str, routing_id: bytes | None = None) -> int:
    """Greeting + READY that a socket of `socket_type` sends on each new connection."""
    return ZMTP_GREETING + zmtp_ready(socket_type, routing_id)


def mask_wire_stats(payload: Payload, frames: Sequence[Frame]) -> tuple[int, int]:
    """(mask entries, bytes of their frames) of an encoded payload, for bits per mask entry."""
    entries = nbytes = 0
    for t, f in zip(payload.tensors.values(), frames[1:], strict=True):
        if t.dtype == torch.bool:
            entries += t.numel()
            nbytes += memoryview(f).nbytes
    return entries, nbytes


def binary_entropy(p: float) -> float:
    """H(p) in bits: the least a coder can spend per entry of a mask with ones-fraction p."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


# ----------------------------------------------------------------------------- peer_bytes

PEER_KINDS = ("data", "control", "ack")


def format_peer_bytes(table: dict[tuple[int, str], Sequence[int]]) -> str:
    """The per-round, per-peer, per-kind bill as one compact metrics string.

    Space-separated `PEER:KIND:SENT:RECEIVED:FRAMING` entries, sorted, all-zero ones left out:
    bytes handed to ZeroMQ for that neighbour, bytes that arrived from it, and the ZMTP framing
    ZeroMQ added to what was sent (`zmtp_framing`). KIND is `data` (training payload), `control`
    (handshake hello) or `ack` (handshake reply). Each (PEER, KIND) travels on one connection:
    data and control on the sender's DEALER to PEER, ack on the sender's ROUTER, so one TCP
    connection i -> j carries i's data + control to j one way and j's ack to i the other."""
    return " ".join(f"{j}:{kind}:{s}:{r}:{f}" for (j, kind), (s, r, f) in sorted(table.items())
                    if s or r or f)


def parse_peer_bytes(text: str) -> dict[tuple[int, str], tuple[int, int, int]]:
    """Inverse of format_peer_bytes; ValueError on a malformed string."""
    out: dict[tuple[int, str], tuple[int, int, int]] = {}
    for item in text.split():
        parts = item.split(":")
        if len(parts) != 5:
            raise ValueError(f"bad peer_bytes entry {item!r}")
        j, kind, s, r, f = parts
        out[int(j), kind] = (int(s), int(r), int(f))
    return out
