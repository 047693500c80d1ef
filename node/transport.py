"""ZeroMQ sockets of one node: they move frames; counting them is `PeerLinks`' job (node/links.py).

Each node binds one ROUTER (everything addressed to it arrives there, tagged by the connection it
came on) and connects one DEALER per neighbour (everything it sends leaves through those, and
handshake acknowledgements come back on them). Metrics go out on a PUSH socket to the
collector's PULL.

**Who a message is from.** A DEALER's routing id is ``<node id>-<16 random hex digits>``, fresh
in every process, so it names one connection, and its text proves nothing. The ROUTER takes no
routing id over (no ROUTER_HANDOVER: a second connection presenting an id in use is ignored by
ZeroMQ), and a connection speaks for neighbour j only once it is *bound* to j, which the round
driver does after a valid hello from j on it (the run id and the config hash; with CURVE, also
the node id its key belongs to). Messages from connections that are not bound are dropped and
counted. A node that restarts after a crash connects again under a fresh id and says hello
again, which binds the new connection too; several connections may be bound to one neighbour
(at most ``MAX_BINDINGS_PER_PEER``, the oldest forgotten first), so a later hello never cuts off
a connection that is still in use.

With CURVE keys (``CurveConfig``) the links are encrypted and authenticated: the ROUTER is a
CURVE server holding the node's secret key, each DEALER a CURVE client that knows its
neighbour's public key (so it talks to that neighbour only). A ZAP handler in this process
(``PeerAuthenticator``) lets in only the neighbours' public keys and names each connection by the
node id its key belongs to (the ZMTP User-Id); a hello that claims another node id is refused
(``auth_mismatch``). Connections with unknown keys never get a pipe (``unknown_key``), and failed
handshakes (a plaintext or malformed client) are counted as ``handshake_failed``. The metrics PUSH
is a CURVE client of the collector, whose public key is in the topology (see README, Security).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections import Counter, OrderedDict
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
MAX_BINDINGS_PER_PEER = 8  # connections remembered per neighbour (restarts, reconnects)
MAX_USER_IDS = 4096  # CURVE User-Ids remembered per connection (only neighbours get a pipe)

log = logging.getLogger("mcepl.node")


@dataclass(frozen=True)
class CurveConfig:
    """CURVE keys of one node (Z85 text, 40 characters each): its own pair, the public key of
    each neighbour (the only clients it accepts, and the servers its DEALERs talk to), and the
    collector's public key (the server its metrics PUSH talks to; None: no collector key)."""

    public: str
    secret: str
    peers: dict[int, str]
    collector: str | None = None

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
        return cls(keys.public, keys.secret, peers,  # type: ignore[arg-type]
                   collector=topo.collector_key)


def milestone(n: int) -> bool:
    """Log the 1st, 10th, 100th, ... occurrence: a hostile client retrying must not flood logs."""
    while n % 10 == 0:
        n //= 10
    return n == 1


_milestone = milestone  # the old private name


class PeerAuthenticator(ThreadAuthenticator):
    """ZAP handler (a thread of the node or collector process): accepts exactly the given
    CURVE keys and returns the node id each belongs to as the connection's User-Id; refusals
    are counted. `owner` names the process in log lines ("node 3", "collector")."""

    def __init__(self, context: zmq.Context, owner: int | str, peers: dict[int, str],
                 rejected: Counter[str], lock: threading.Lock,
                 logger: logging.Logger | None = None) -> None:
        super().__init__(context, log=logging.getLogger("mcepl.node.zap"))
        self.owner = f"node {owner}" if isinstance(owner, int) else owner
        self.allowed = {key.encode("ascii"): j for j, key in peers.items()}
        self.rejected, self.lock = rejected, lock
        self.refused_keys: Counter[bytes] = Counter()
        self._address = ""
        self._log = logger or log

    def handle_zap_message(self, msg: list[bytes]):  # noqa: ANN201 - sync or coroutine
        self._address = msg[3].decode("utf-8", "replace") if len(msg) > 3 else ""
        return super().handle_zap_message(msg)

    def callback(self, domain: str, key: bytes) -> bool:
        """The credentials provider of ``configure_curve_callback`` (key in Z85)."""
        if key in self.allowed:
            return True
        with self.lock:
            self.rejected["unknown_key"] += 1
            if len(self.refused_keys) < MAX_USER_IDS or key in self.refused_keys:
                self.refused_keys[key] += 1
            n = self.refused_keys.get(key, 0)
        if n and milestone(n):
            self._log.warning("%s: refused a connection with unknown CURVE key %s from %s "
                              "(%d time(s) for this key)", self.owner,
                              key.decode("ascii", "replace"), self._address or "?", n)
        return False

    def curve_user_id(self, client_public_key: bytes) -> str:
        return str(self.allowed[z85.encode(client_public_key)])


def start_authenticator(context: zmq.Context, owner: int | str, peers: dict[int, str],
                        rejected: Counter[str], lock: threading.Lock,
                        logger: logging.Logger | None = None) -> PeerAuthenticator:
    """A running ZAP handler for `context` that lets in exactly `peers` (node id -> key). It
    must run before a CURVE server socket accepts anything: without one, libzmq lets every
    CURVE client in."""
    auth = PeerAuthenticator(context, owner, peers, rejected, lock, logger)
    auth.start()
    auth.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=auth)
    return auth


def make_curve_server(sock: zmq.Socket, public: str, secret: str) -> None:
    """Make `sock` a CURVE server with this key pair, authenticated by our ZAP handler."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public.encode("ascii"))
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret.encode("ascii"))
    sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode("ascii"))


def make_curve_client(sock: zmq.Socket, server_key: str, public: str, secret: str) -> None:
    """Make `sock` a CURVE client that only talks to the holder of `server_key`'s secret."""
    sock.setsockopt(zmq.CURVE_SERVERKEY, server_key.encode("ascii"))
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public.encode("ascii"))
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret.encode("ascii"))


def user_id(frame: zmq.Frame) -> str | None:
    """The ZMTP User-Id our ZAP handler gave the frame's connection (None without CURVE)."""
    try:
        return frame.get("User-Id")
    except zmq.ZMQError:
        return None


def connection_id(node_id: int) -> bytes:
    """The routing id of this process's DEALERs: the node id (for logs) and 64 random bits, so
    every process, and so every connection a neighbour sees, has its own."""
    return f"{node_id}-{secrets.token_hex(8)}".encode()


def routing_id(node_id: int) -> bytes:
    """The node id as ASCII (the routing id before connections were bound by hello)."""
    return str(node_id).encode()


def parse_routing_id(raw: bytes) -> int | None:
    """The node id a routing id names, or None if it is not a plain non-negative integer or
    ``<id>-<hex>``. For logs only: a routing id proves nothing (see the module docstring)."""
    head = raw.split(b"-", 1)[0]
    if not head or len(head) > 10 or not head.isdigit():
        return None
    return int(head)


def bind_listen_fd(sock: zmq.Socket, address: str, fd: int | None) -> None:
    """Bind `sock` at `address`; with `fd`, adopt that already bound and listening OS socket
    (ZMQ_USE_FD) instead, so the port or path the launcher reserved is never free in between.
    An ipc address gets its directory made (0700) when missing."""
    if fd is not None:
        sock.setsockopt(zmq.USE_FD, fd)
    elif address.startswith("ipc://"):
        parent = os.path.dirname(address[len("ipc://"):])
        if parent and not os.path.isdir(parent):
            try:
                os.makedirs(parent, mode=0o700, exist_ok=True)
            except OSError:
                pass  # the bind below says what is wrong
    sock.bind(address)


class NodeSockets:
    """The ROUTER, the per-neighbour DEALERs and the metrics PUSH of one node, and which of the
    ROUTER's connections speak for which neighbour."""

    def __init__(self, node_id: int, bind: str, peers: dict[int, str],
                 collector: str | None = None, linger_ms: int = 10_000,
                 curve: CurveConfig | None = None, listen_fd: int | None = None) -> None:
        self.node_id = node_id
        self.zctx = zmq.Context()
        # messages and connections refused by the transport itself (CURVE only), by reason:
        # unknown_key (ZAP refused the key), handshake_failed (any other failed handshake),
        # auth_mismatch (a hello claiming another node id than its key's)
        self.rejected: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.curve = curve
        self.auth: PeerAuthenticator | None = None
        self.monitor: zmq.Socket | None = None
        self.linger_ms = linger_ms
        # connection (routing id) -> the neighbour it speaks for, oldest first per neighbour
        self._bound: dict[bytes, int] = {}
        self._by_peer: dict[int, OrderedDict[bytes, None]] = {}
        self._users: OrderedDict[bytes, str | None] = OrderedDict()
        if curve is not None:
            missing = sorted(set(peers) - set(curve.peers))
            if missing:
                self.zctx.destroy(linger=0)
                raise RuntimeError(f"node {node_id}: no public key for neighbour(s) {missing}")
            if collector and curve.collector is None:
                self.zctx.destroy(linger=0)
                raise RuntimeError(f"node {node_id}: the topology has no collector public key")
            self.auth = start_authenticator(self.zctx, node_id, curve.peers, self.rejected,
                                            self._lock)
        self.router = self.zctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, linger_ms)
        self.router.setsockopt(zmq.RCVHWM, 0)
        if curve is not None:
            make_curve_server(self.router, curve.public, curve.secret)
            self.monitor = self.router.get_monitor_socket(_HANDSHAKE_FAILED)
        try:
            bind_listen_fd(self.router, bind, listen_fd)
        except zmq.ZMQError as exc:
            self._stop_auth()
            self.zctx.destroy(linger=0)
            raise RuntimeError(f"node {node_id}: cannot bind {bind}: {exc}") from None
        self.connection_id = connection_id(node_id)
        self.dealers: dict[int, zmq.Socket] = {}
        for j, addr in sorted(peers.items()):
            s = self.zctx.socket(zmq.DEALER)
            s.setsockopt(zmq.ROUTING_ID, self.connection_id)
            s.setsockopt(zmq.LINGER, linger_ms)
            s.setsockopt(zmq.SNDHWM, 0)
            if curve is not None:
                make_curve_client(s, curve.peers[j], curve.public, curve.secret)
            s.connect(addr)
            self.dealers[j] = s
        self.metrics: zmq.Socket | None = None
        self.collector = collector
        self._metrics_monitor: zmq.Socket | None = None
        if collector:
            self.metrics = self.zctx.socket(zmq.PUSH)
            self.metrics.setsockopt(zmq.LINGER, linger_ms)
            self.metrics.setsockopt(zmq.SNDHWM, 0)
            if curve is not None and curve.collector is not None:
                make_curve_client(self.metrics, curve.collector, curve.public, curve.secret)
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

    # ------------------------------------------------------------------ who is who
    def peer_of(self, conn: bytes) -> int | None:
        """The neighbour connection `conn` speaks for, or None while it is not bound."""
        return self._bound.get(conn)

    def user_of(self, conn: bytes) -> str | None:
        """The node id (as text) CURVE authenticated connection `conn` as; None in plaintext."""
        return self._users.get(conn)

    def bind_connection(self, conn: bytes, peer: int) -> None:
        """From now on `conn` speaks for neighbour `peer` (after a valid hello from it)."""
        old = self._bound.get(conn)
        if old is not None and old != peer:
            self._by_peer[old].pop(conn, None)
        self._bound[conn] = peer
        conns = self._by_peer.setdefault(peer, OrderedDict())
        conns.pop(conn, None)
        conns[conn] = None
        while len(conns) > MAX_BINDINGS_PER_PEER:
            stale, _ = conns.popitem(last=False)
            self._bound.pop(stale, None)

    def bindings(self) -> dict[int, int]:
        """Connections bound per neighbour (for logs and tests)."""
        return {j: len(c) for j, c in sorted(self._by_peer.items()) if c}

    # ------------------------------------------------------------------ moving frames
    def send(self, peer: int, frames: Sequence[bytes]) -> None:
        """Hand one multipart message to ZeroMQ for `peer` (on our DEALER to it)."""
        self.dealers[peer].send_multipart(list(frames), copy=False)

    def reply(self, conn: bytes, frames: Sequence[bytes]) -> None:
        """Answer on the ROUTER (handshake acknowledgements), on connection `conn`."""
        self.router.send_multipart([conn, *frames])

    def push_metrics(self, frames: Sequence[bytes]) -> bool:
        """Send to the collector; False when there is none (metrics are then only logged)."""
        if self.metrics is None:
            return False
        self.metrics.send_multipart(list(frames))
        return True

    def poll(self, timeout_ms: int) -> list[tuple[str, bytes | int, list[bytes]]]:
        """Everything readable within `timeout_ms`: ("router", connection, frames) for
        messages to us (ask `peer_of` who it speaks for), ("dealer", peer id, frames) for
        replies on our outgoing links."""
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
        """The message as bytes, noting the node id CURVE authenticated its connection as; None
        (counted as auth_mismatch) if the connection is bound to another neighbour than that."""
        conn = frames[0].bytes
        user = user_id(frames[0])
        bound = self._bound.get(conn)
        if bound is not None and user != str(bound):
            self.count_mismatch(conn, user)
            return None
        self._users[conn] = user
        self._users.move_to_end(conn)
        while len(self._users) > MAX_USER_IDS:
            self._users.popitem(last=False)
        return [f.bytes for f in frames]

    def count_mismatch(self, conn: bytes, user: str | None) -> int:
        """Count (and log at milestones) a message whose claim contradicts its key."""
        with self._lock:
            self.rejected["auth_mismatch"] += 1
            n = self.rejected["auth_mismatch"]
        if milestone(n):
            log.warning("node %d: dropped a message on connection %r claiming another node than "
                        "the one its CURVE key belongs to (node %s) (%d time(s))", self.node_id,
                        conn[:24], user, n)
        return n

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
                if milestone(n):
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

    def close(self, linger_ms: int | None = None) -> None:
        """Close every socket; `linger_ms` caps how long unsent messages may hold us (a node
        told to stop uses a short one: its peers may be gone)."""
        self._close_metrics_monitor()
        if self.monitor is not None:
            self.router.disable_monitor()
            self.monitor.close()
        for s in [self.router, *self.dealers.values()] + ([self.metrics] if self.metrics else []):
            s.close(linger=linger_ms)
        self._stop_auth()  # after the ROUTER: it must never accept without the ZAP handler
        self.zctx.term()
