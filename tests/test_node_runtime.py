"""The networked round loop against a scripted peer: bad messages are dropped and counted,
the node keeps running; a silent neighbour or a config mismatch ends it with a clear error."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
import zmq

from mcepl.config import config_from_dict
from mcepl.node.data import Shard
from mcepl.node.factory import build_algorithm
from mcepl.node.runtime import NodeError, NodeRuntime
from mcepl.node.transport import NodeSockets
from mcepl.protocol import encode_control, encode_payload
from mcepl.protocol.payload import Payload
from mcepl.topology import generate

RUN = "run-test"


def synthetic_shard(n: int = 64) -> Shard:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 28, 28, generator=g) * 2 - 1
    y = torch.randint(0, 10, (n,), generator=g)
    return Shard(train_x=x, train_y=y, test_x=x[:32], test_y=y[:32], labels=list(range(10)),
                 num_classes=10, input_shape=(1, 28, 28))


class FakePeer:
    """Node 1 of a two-node network, scripted by the test with raw ZeroMQ sockets."""

    def __init__(self, topo, cfg_hash: str) -> None:
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.bind(topo.node(1).address)
        self.dealer = self.ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.ROUTING_ID, b"1")
        self.dealer.connect(topo.node(0).address)
        self.cfg_hash = cfg_hash

    def handshake(self, config_hash: str | None = None, timeout: float = 20.0) -> None:
        self.dealer.send_multipart(encode_control(
            "hello", {"config_hash": config_hash or self.cfg_hash}, run_id=RUN, sender=1))
        deadline = time.monotonic() + timeout
        got_hello = got_ack = False
        while not (got_hello and got_ack) and time.monotonic() < deadline:
            if self.router.poll(100):
                rid, *_ = self.router.recv_multipart()
                self.router.send_multipart([rid, *encode_control(
                    "hello_ack", {"accept": True, "reason": ""}, run_id=RUN, sender=1)])
                got_hello = True
            if self.dealer.poll(100):
                self.dealer.recv_multipart()
                got_ack = True

    def send(self, frames: list[bytes]) -> None:
        self.dealer.send_multipart(frames)

    def wait_data(self, timeout: float = 30.0) -> None:
        """Block until the node's next data message arrives (a real peer is paced this way)."""
        if not self.router.poll(int(timeout * 1000)):
            raise TimeoutError("node sent nothing")
        self.router.recv_multipart()

    def close(self) -> None:
        self.ctx.destroy(linger=0)


def mask_payload(names_shapes: dict[str, tuple[int, ...]]) -> Payload:
    return Payload("mask", {n: torch.zeros(s, dtype=torch.bool) for n, s in names_shapes.items()})


@pytest.fixture
def two_nodes(tmp_path: Path):
    topo = generate("complete", 2, retention=[0.5, 0.3], transport="ipc", ipc_dir=tmp_path)
    cfg = config_from_dict({"run": {"rounds": 3, "eval_every": 1, "round_timeout_s": 20,
                                    "connect_timeout_s": 20},
                            "algorithm": {"name": "mcepl", "batch_size": 16}})
    algo = build_algorithm(cfg, topo, 0, synthetic_shard())
    socks = NodeSockets(0, topo.node(0).address, {1: topo.node(1).address}, linger_ms=0)
    runtime = NodeRuntime(cfg, topo, 0, RUN, algo, socks)
    peer = FakePeer(topo, cfg.hash())
    yield cfg, topo, algo, runtime, peer
    peer.close()
    socks.close()


def run_in_thread(runtime: NodeRuntime) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            runtime.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, errors


def test_bad_messages_are_dropped_and_counted(two_nodes) -> None:
    cfg, topo, algo, runtime, peer = two_nodes
    shapes = {n: tuple(t.shape) for n, t in algo.z.items()}
    good = mask_payload(shapes)
    published = []
    publish = runtime._publish
    runtime._publish = lambda rec: (published.append(rec), publish(rec))[1]  # type: ignore
    thread, errors = run_in_thread(runtime)
    peer.handshake()

    def data(rnd: int, payload: Payload = good, sender: int = 1) -> list[bytes]:
        return encode_payload(payload, run_id=RUN, round=rnd, phase=0, sender=sender)

    # garbage bytes, a truncated message, a wrong shape, a wrong run id, a lying sender header
    peer.send([b"\x00garbage\xff"])
    peer.send(data(0)[:-1])
    wrong = dict(shapes)
    first = next(iter(wrong))
    wrong[first] = (1, 2)
    peer.send(data(0, mask_payload(wrong)))
    peer.send(encode_payload(good, run_id="other-run", round=0, phase=0, sender=1))
    peer.send(data(0, sender=5))
    # a stranger on a connection of its own: data before any hello, a hello claiming to be
    # node 1 with another config (in plaintext anyone may send one: refused, not fatal), a
    # hello from a node that is no neighbour
    intruder = peer.ctx.socket(zmq.DEALER)
    intruder.setsockopt(zmq.ROUTING_ID, b"7")
    intruder.connect(topo.node(0).address)
    intruder.send_multipart(data(0, sender=7))
    intruder.send_multipart(data(0, sender=1))
    intruder.send_multipart(encode_control("hello", {"config_hash": "0123456789abcdef"},
                                           run_id=RUN, sender=1))
    intruder.send_multipart(encode_control("hello", {"config_hash": cfg.hash()}, run_id=RUN,
                                           sender=7))
    # the real round 0, then a duplicate, then rounds 1..3, each followed by a replay of the
    # previous round (a duplicate or a stale message, depending on timing: both are dropped)
    peer.send(data(0))
    peer.send(data(0))
    peer.send(data(50))  # far ahead of the node: dropped, never buffered without bound
    for rnd in range(1, cfg.run.rounds + 1):
        peer.wait_data()
        peer.send(data(rnd))
        peer.send(data(rnd - 1))

    thread.join(60)
    assert not thread.is_alive(), "node did not finish its rounds"
    assert errors == []
    d = runtime.dropped_counts()
    assert d.get("malformed_garbage", 0) >= 1
    assert d.get("malformed_truncated", 0) + d.get("malformed_frames", 0) >= 1
    assert d.get("invalid_payload") == 1
    assert d.get("malformed_run_id") == 1
    assert d.get("wrong_sender") == 1
    assert d.get("unbound") == 2
    assert d.get("config_mismatch") == 1
    assert d.get("unknown_sender") == 1
    # the replay after the last round may arrive once the node has finished (then uncounted)
    assert cfg.run.rounds <= d.get("duplicate", 0) + d.get("stale", 0) <= 1 + cfg.run.rounds
    assert d.get("too_far_ahead") == 1
    # the records say it too, by reason (the dashboard's table)
    last = published[-1]
    assert last.dropped == sum(d.values())
    assert last.dropped_by == " ".join(f"{k}:{v}" for k, v in sorted(d.items()))
    intruder.close(0)


def test_silent_neighbour_times_out_naming_it(two_nodes) -> None:
    cfg, topo, algo, runtime, peer = two_nodes
    runtime.cfg = cfg.with_overrides(run={"round_timeout_s": 1.0})
    runtime.config_hash = cfg.hash()  # the peer handshakes with the original hash
    thread, errors = run_in_thread(runtime)
    peer.handshake()
    thread.join(30)
    assert len(errors) == 1 and isinstance(errors[0], NodeError)
    msg = str(errors[0])
    assert "round 0" in msg and "neighbour(s) 1" in msg and topo.node(1).address in msg


def test_config_mismatch_is_refused(two_nodes) -> None:
    """The neighbour is told why (its hello_ack says so, it stops at once); in plaintext this
    node cannot know the hello came from the neighbour, so it waits out the handshake and then
    names the refusal."""
    cfg, topo, algo, runtime, peer = two_nodes
    runtime.cfg = cfg.with_overrides(run={"connect_timeout_s": 3.0})
    runtime.config_hash = cfg.hash()
    thread, errors = run_in_thread(runtime)
    peer.dealer.send_multipart(encode_control(
        "hello", {"config_hash": "0123456789abcdef"}, run_id=RUN, sender=1))
    assert peer.dealer.poll(20_000), "no hello_ack"
    from mcepl.protocol import decode_message
    ack = decode_message(peer.dealer.recv_multipart(), run_id=RUN)
    assert ack.body["accept"] is False and "config hash mismatch" in ack.body["reason"]
    thread.join(30)
    assert len(errors) == 1
    msg = str(errors[0])
    assert "no handshake from neighbour(s) 1" in msg
    assert "config hash mismatch" in msg and "node 1" in msg
