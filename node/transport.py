"""ZeroMQ sockets of one node: they move frames; counting them is `PeerLinks`' job (node/links.py).

Each node binds one ROUTER (everything addressed to it arrives there, tagged by the sender's
routing id) and connects one DEALER per neighbour (everything it sends leaves through those, and
handshake acknowledgements come back on them). The routing id is the node id as ASCII.
Metrics go out on a PUSH socket to the collector's PULL.

With CURVE keys (``CurveConfig``) the links between nodes are encrypted and authenticated: the
ROUTER is a CURVE server holding the node's secret key, each DEALER a CURVE client that knows its
neighbour's public key (so it talks to that neighbour only). A ZAP handler in this process
(``PeerAuthenticator``) lets in only the neighbours' public keys and names each connection by
the node id its key belongs to (the ZMTP User-Id); ``poll`` drops, and counts in ``rejected``,
every message whose claimed routing id is not that authenticated id. Connections with unknown
keys never get a pipe (refusals counted as ``unknown_key``), and failed handshakes (a plaintext
or malformed client) as ``handshake_failed``. The metrics PUSH stays plaintext (see README,
Security).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from mcepl.topology import Topology
from mcepl.topology.keys import check_node_key, load_secret_key

ZAP_DOMAIN = "mcepl"
_CONNECTED = zmq.EVENT_CONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_AUTH)

log = logging.getLogger("mcepl.node")


@dataclass(frozen=True)
class CurveConfig:
    """CURVE keys of one node (Z85 text, 40 characters each): its own pair, and the public key
    of each neighbour (the only clients it accepts, and the servers its DEALERs talk to)."""

    public: str
    secret: str
    peers: dict[int, str]

    @classmethod
    def for_node(cls, topo: Topology, node_id: int, key_path: str | None) -> CurveConfig | None:
        """Node ``node_id``'s keys from its secret key file and the topology's public keys;
        None when neither has keys. Raises KeyFileError (one line naming the file) on a missing,
        unreadable or wrong key file, or when only one of the two has keys."""
        keys = load_secret_key(key_path) if key_path is not None else None
        check_node_key(topo, node_id, keys, key_path)
        if keys is None:
            return None
        peers = {j: topo.node(j).public_key for j in topo.neighbors(node_id)}
        return cls(keys.public, keys.secret, peers)  # type: ignore[arg-type]


def _milestone(n: int) -> bool:
    """Log the 1st, 10th, 100th, ... occurrence: a hostile client retrying must not flood logs."""
    while n % 10 == 0:
        n //= 10
    return n == 1


class PeerAuthenticator(ThreadAuthenticator):
    """ZAP handler (a thread of the node process): accepts exactly the neighbours' CURVE keys and
    returns the neighbour's node id as the connection's User-Id; refusals are counted."""

    def __init__(self, context: zmq.Context, node_id: int, peers: dict[int, str],
                 rejected: Counter[str], lock: threading.Lock) -> None:
        super().__init__(context, log=logging.getLogger("mcepl.node.zap"))
        self.node_id = node_id
        self.allowed = {key.encode("ascii"): j for j, key in peers.items()}
        self.rejected, self.lock = rejected, lock
        self.refused_keys: Counter[bytes] = Counter()
        self._address = ""

    def handle_zap_message(self, msg: list[bytes]):  # noqa: ANN201 - sync or coroutine
        self._address = msg[3].decode("utf-8", "replace") if len(msg) > 3 else ""
        return super().handle_zap_message(msg)

    def callback(self, domain: str, key: bytes) -> bool:
        """The credentials provider of ``configure_curve_callback`` (key in Z85)."""
        if key in self.allowed:
            return True
        with self.lock:
            self.rejected["unknown_key"] += 1
            self.refused_keys[key] += 1
            n = self.refused_keys[key]
        if _milestone(n):
            log.warning("node %d: refused a connection with unknown CURVE key %s from %s "
                        "(%d time(s) for this key)", self.node_id, key.decode("ascii", "replace"),
                        self._address or "?", n)
        return False

    def curve_user_id(self, client_public_key: bytes) -> str:
        return str(self.allowed[z85.encode(client_public_key)])


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
                 collector: str | None = None, linger_ms: int = 10_000,
                 curve: CurveConfig | None = None) -> None:
        self.node_id = node_id
        self.zctx = zmq.Context()
        # messages and connections refused by the transport itself (CURVE only), by reason:
        # unknown_key (ZAP refused the key), handshake_failed (any other failed handshake),
        # auth_mismatch (routing id is not the node id the key belongs to)
        self.rejected: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.curve = curve
        self.auth: PeerAuthenticator | None = None
        self.monitor: zmq.Socket | None = None
        self._mismatch: Counter[tuple[str, bytes]] = Counter()
        if curve is not None:
            missing = sorted(set(peers) - set(curve.peers))
            if missing:
                self.zctx.destroy(linger=0)
                raise RuntimeError(f"node {node_id}: no public key for neighbour(s) {missing}")
            # the ZAP handler must run before the ROUTER accepts anything: without one,
            # libzmq lets every CURVE client in
            self.auth = PeerAuthenticator(self.zctx, node_id, curve.peers, self.rejected,
                                          self._lock)
            self.auth.start()
            self.auth.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=self.auth)
        self.router = self.zctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, linger_ms)
        self.router.setsockopt(zmq.RCVHWM, 0)
        if curve is not None:
            self.router.setsockopt(zmq.CURVE_SERVER, 1)
            self.router.setsockopt(zmq.CURVE_PUBLICKEY, curve.public.encode("ascii"))
            self.router.setsockopt(zmq.CURVE_SECRETKEY, curve.secret.encode("ascii"))
            self.router.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode("ascii"))
            self.monitor = self.router.get_monitor_socket(_HANDSHAKE_FAILED)
        # a neighbour that crashed and restarted reconnects under the same routing id before
        # the old connection is noticed dead: let the new connection take the id over
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        try:
            self.router.bind(bind)
        except zmq.ZMQError as exc:
            self._stop_auth()
            self.zctx.destroy(linger=0)
            raise RuntimeError(f"node {node_id}: cannot bind {bind}: {exc}") from None
        self.dealers: dict[int, zmq.Socket] = {}
        for j, addr in sorted(peers.items()):
            s = self.zctx.socket(zmq.DEALER)
            s.setsockopt(zmq.ROUTING_ID, routing_id(node_id))
            s.setsockopt(zmq.LINGER, linger_ms)
            s.setsockopt(zmq.SNDHWM, 0)
            if curve is not None:
                s.setsockopt(zmq.CURVE_SERVERKEY, curve.peers[j].encode("ascii"))
                s.setsockopt(zmq.CURVE_PUBLICKEY, curve.public.encode("ascii"))
                s.setsockopt(zmq.CURVE_SECRETKEY, curve.secret.encode("ascii"))
            s.connect(addr)
            self.dealers[j] = s
        self.metrics: zmq.Socket | None = None
        self.collector = collector
        self._metrics_monitor: zmq.Socket | None = None
        if collector:
            self.metrics = self.zctx.socket(zmq.PUSH)
            self.metrics.setsockopt(zmq.LINGER, linger_ms)
            self.metrics.setsockopt(zmq.SNDHWM, 0)
            # watched from before the connect, so wait_collector cannot miss the connection
            self._metrics_monitor = self.metrics.get_monitor_socket(_CONNECTED)
            self.metrics.connect(collector)
        self.poller = zmq.Poller()
        self.poller.register(self.router, zmq.POLLIN)
        self._by_socket = {s: j for j, s in self.dealers.items()}
        for s in self.dealers.values():
            self.poller.register(s, zmq.POLLIN)
        if self.monitor is not None:
            self.poller.register(self.monitor, zmq.POLLIN)

    @property
    def secure(self) -> bool:
        """Whether the links between nodes are CURVE-encrypted (then `rejected_counts` counts)."""
        return self.curve is not None

    def send(self, peer: int, frames: Sequence[bytes]) -> None:
        """Hand one multipart message to ZeroMQ for `peer` (on our DEALER to it)."""
        self.dealers[peer].send_multipart(list(frames), copy=False)

    def reply(self, raw_id: bytes, frames: Sequence[bytes]) -> None:
        """Answer on the ROUTER (handshake acknowledgements); the routing id is ZeroMQ's."""
        self.router.send_multipart([raw_id, *frames])

    def push_metrics(self, frames: Sequence[bytes]) -> bool:
        """Send to the collector; False when there is none (metrics are then only logged)."""
        if self.metrics is None:
            return False
        self.metrics.send_multipart(list(frames))
        return True

    def poll(self, timeout_ms: int) -> list[tuple[str, bytes | int, list[bytes]]]:
        """Everything readable within `timeout_ms`: ("router", raw routing id, frames) for
        messages to us, ("dealer", peer id, frames) for replies on our outgoing links."""
        out: list[tuple[str, bytes | int, list[bytes]]] = []
        for sock, _ in self.poller.poll(timeout_ms):
            if sock is self.monitor:
                self._drain_monitor()
                continue
            secure = self.curve is not None and sock is self.router
            while True:
                try:
                    msg = sock.recv_multipart(zmq.NOBLOCK, copy=not secure)
                except zmq.Again:
                    break
                if secure:
                    msg = self._authenticated(msg)  # type: ignore[arg-type]
                    if msg is None:
                        continue
                if sock is self.router:
                    out.append(("router", msg[0], msg[1:]))
                else:
                    out.append(("dealer", self._by_socket[sock], msg))
        return out

    def _authenticated(self, frames: list[zmq.Frame]) -> list[bytes] | None:
        """The message as bytes if its routing id is the node id its CURVE key belongs to (the
        User-Id our ZAP handler gave the connection); else None, counted as auth_mismatch."""
        raw_id = frames[0].bytes
        try:
            user = frames[0].get("User-Id")
        except zmq.ZMQError:
            user = None
        if user is None or user.encode("ascii", "replace") != raw_id:
            with self._lock:
                self.rejected["auth_mismatch"] += 1
            self._mismatch[(str(user), raw_id[:16])] += 1
            n = self._mismatch[(str(user), raw_id[:16])]
            if _milestone(n):
                log.warning("node %d: dropped a message claiming routing id %r from the "
                            "connection authenticated as node %s (%d time(s))", self.node_id,
                            raw_id[:16], user, n)
            return None
        return [f.bytes for f in frames]

    def _drain_monitor(self) -> None:
        assert self.monitor is not None
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] & (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                                 | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
                with self._lock:
                    self.rejected["handshake_failed"] += 1
                    n = self.rejected["handshake_failed"]
                if _milestone(n):
                    log.warning("node %d: a connection failed the CURVE handshake (not encrypted "
                                "with our key, or malformed) (%d time(s))", self.node_id, n)
            # EVENT_HANDSHAKE_FAILED_AUTH: ZAP refused it, already counted as unknown_key

    def rejected_counts(self) -> dict[str, int]:
        """Connections and messages the transport refused, by reason (empty without CURVE)."""
        with self._lock:
            return dict(self.rejected)

    def _stop_auth(self) -> None:
        if self.auth is not None:
            self.auth.stop()
            self.auth = None

    def wait_collector(self, timeout_s: float) -> bool:
        """True once the metrics PUSH is connected to the collector, False if that did not
        happen within ``timeout_s`` (nothing listens there: not started yet, or it refused to
        start). Without a collector: True at once."""
        mon = self._metrics_monitor
        if self.metrics is None or mon is None:
            return True
        deadline = time.monotonic() + timeout_s
        connected = False
        while not connected and time.monotonic() < deadline:
            wait_ms = max(1, min(1000, int((deadline - time.monotonic()) * 1000)))
            if mon.poll(wait_ms):
                connected = bool(recv_monitor_message(mon)["event"] & _CONNECTED)
        self._close_metrics_monitor()
        return connected

    def _close_metrics_monitor(self) -> None:
        if self._metrics_monitor is not None and self.metrics is not None:
            self.metrics.disable_monitor()
            self._metrics_monitor.close()
            self._metrics_monitor = None

    def close(self) -> None:
        self._close_metrics_monitor()
        if self.monitor is not None:
            self.router.disable_monitor()
            self.monitor.close()
        for s in [self.router, *self.dealers.values()] + ([self.metrics] if self.metrics else []):
            s.close()
        self._stop_auth()  # after the ROUTER: it must never accept without the ZAP handler
        self.zctx.term()
