"""ZeroMQ sockets of one node, with every byte handed to ZeroMQ counted per peer.

Each node binds one ROUTER (everything addressed to it arrives there, tagged by the sender's
routing id) and connects one DEALER per neighbour (everything it sends leaves through those, and
handshake acknowledgements come back on them). The routing id is the node id as ASCII.
Metrics go out on a PUSH socket to the collector's PULL.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import zmq

from mcepl.protocol import message_size, zmtp_framing

COLLECTOR = -1  # the peer id the metrics PUSH is counted under


@dataclass
class ByteCounter:
    """Bytes and messages per peer and per kind ("data", "control", "metrics")."""

    sent: dict[tuple[int, str], int] = field(default_factory=lambda: defaultdict(int))
    received: dict[tuple[int, str], int] = field(default_factory=lambda: defaultdict(int))
    msgs_sent: dict[tuple[int, str], int] = field(default_factory=lambda: defaultdict(int))
    msgs_received: dict[tuple[int, str], int] = field(default_factory=lambda: defaultdict(int))
    # ZMTP framing ZeroMQ adds around what we sent (flags + length per frame; protocol.zmtp_framing)
    framing_sent: dict[tuple[int, str], int] = field(default_factory=lambda: defaultdict(int))

    def total(self, table: dict[tuple[int, str], int], kind: str | None = None) -> int:
        return sum(v for (_, k), v in table.items() if kind is None or k == kind)


def routing_id(node_id: int) -> bytes:
    return str(node_id).encode()


def parse_routing_id(raw: bytes) -> int | None:
    """The node id a peer claims, or None if it is not a plain non-negative integer."""
    if not raw or len(raw) > 10 or not raw.isdigit():
        return None
    return int(raw)


class NodeSockets:
    """The ROUTER, the per-neighbour DEALERs and the metrics PUSH of one node."""

    def __init__(self, node_id: int, bind: str, peers: dict[int, str],
                 collector: str | None = None, linger_ms: int = 10_000) -> None:
        self.node_id = node_id
        self.zctx = zmq.Context()
        self.counter = ByteCounter()
        self.router = self.zctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, linger_ms)
        self.router.setsockopt(zmq.RCVHWM, 0)
        try:
            self.router.bind(bind)
        except zmq.ZMQError as exc:
            self.zctx.destroy(linger=0)
            raise RuntimeError(f"node {node_id}: cannot bind {bind}: {exc}") from None
        self.dealers: dict[int, zmq.Socket] = {}
        for j, addr in sorted(peers.items()):
            s = self.zctx.socket(zmq.DEALER)
            s.setsockopt(zmq.ROUTING_ID, routing_id(node_id))
            s.setsockopt(zmq.LINGER, linger_ms)
            s.setsockopt(zmq.SNDHWM, 0)
            s.connect(addr)
            self.dealers[j] = s
        self.metrics: zmq.Socket | None = None
        if collector:
            self.metrics = self.zctx.socket(zmq.PUSH)
            self.metrics.setsockopt(zmq.LINGER, linger_ms)
            self.metrics.setsockopt(zmq.SNDHWM, 0)
            self.metrics.connect(collector)
        self.poller = zmq.Poller()
        self.poller.register(self.router, zmq.POLLIN)
        self._by_socket = {s: j for j, s in self.dealers.items()}
        for s in self.dealers.values():
            self.poller.register(s, zmq.POLLIN)

    def send(self, peer: int, frames: Sequence[bytes], kind: str = "data") -> int:
        """Hand one multipart message to ZeroMQ for `peer`; returns the bytes counted."""
        size = message_size(frames)
        self.dealers[peer].send_multipart(list(frames), copy=False)
        self.counter.sent[(peer, kind)] += size
        self.counter.msgs_sent[(peer, kind)] += 1
        self.counter.framing_sent[(peer, kind)] += zmtp_framing(frames)
        return size

    def reply(self, raw_id: bytes, frames: Sequence[bytes], peer: int,
              kind: str = "control") -> None:
        """Answer on the ROUTER (handshake acknowledgements)."""
        self.router.send_multipart([raw_id, *frames])
        self.counter.sent[(peer, kind)] += message_size(frames)
        self.counter.msgs_sent[(peer, kind)] += 1
        self.counter.framing_sent[(peer, kind)] += zmtp_framing(frames)  # routing id stays here

    def push_metrics(self, frames: Sequence[bytes]) -> None:
        if self.metrics is not None:
            self.metrics.send_multipart(list(frames))
            self.counter.sent[(COLLECTOR, "metrics")] += message_size(frames)
            self.counter.msgs_sent[(COLLECTOR, "metrics")] += 1
            self.counter.framing_sent[(COLLECTOR, "metrics")] += zmtp_framing(frames)

    def poll(self, timeout_ms: int) -> list[tuple[str, bytes | int, list[bytes]]]:
        """Everything readable within `timeout_ms`: ("router", raw routing id, frames) for
        messages to us, ("dealer", peer id, frames) for replies on our outgoing links."""
        out: list[tuple[str, bytes | int, list[bytes]]] = []
        for sock, _ in self.poller.poll(timeout_ms):
            while True:
                try:
                    msg = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if sock is self.router:
                    out.append(("router", msg[0], msg[1:]))
                else:
                    out.append(("dealer", self._by_socket[sock], msg))
        return out

    def close(self) -> None:
        for s in [self.router, *self.dealers.values()] + ([self.metrics] if self.metrics else []):
            s.close()
        self.zctx.term()
