"""Fuzzing on a wall-clock budget: the mask codecs' decoder and a node's message handlers.

Hypothesis has no wall-clock budget of its own, so each fuzz test runs its hypothesis test in
chunks of CHUNK examples (fresh random draws each time) until MCEPL_FUZZ_SECONDS (default 3) have
passed: at least one chunk always runs, and the suite stays fast. CI (or a long local session)
raises the budget: ``MCEPL_FUZZ_SECONDS=600 python -m pytest tests/test_fuzz.py``.

- Decoder (extends tests/test_protocol.py, which fuzzes the envelope with the raw codec, and
  tests/test_codecs.py, which corrupts single entropy/delta frames): whole multi-tensor messages
  coded with ``entropy`` and ``delta`` on a link with history, mutated frame-wise or in a header
  field; only ProtocolError may come out, a refused message must leave the link's references
  untouched, and the unmutated message must then still decode to the original masks.
- Round handler: a real NodeRuntime (node 0 of a triangle) fed directly, through ``_on_router``
  and ``_on_dealer``, with random connections (routing ids) and frames, handshake and data
  messages (hello, hello_ack, data in three codecs, metrics, bye) that are wrongly addressed,
  replayed, stale, far ahead, from the wrong sender, on a connection that never said hello, with
  other shapes, mutated or oversized. Nothing but a NodeError for a refused handshake_ack may be
  raised (a refused hello is dropped: in plaintext anyone may send one); every input is either
  counted in ``runtime.dropped`` or visibly accepted; a connection speaks for a neighbour only
  after a valid hello from it on that connection; and a valid hello, hello_ack and data message
  still get through afterwards.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcepl.config import config_from_dict
from mcepl.node.data import Shard
from mcepl.node.factory import build_algorithm
from mcepl.node.runtime import MAX_ROUNDS_AHEAD, NodeError, NodeRuntime
from mcepl.node.transport import NodeSockets, parse_routing_id
from mcepl.protocol import (
    REASONS,
    CodecState,
    ControlMessage,
    Payload,
    ProtocolError,
    decode_message,
    encode_control,
    encode_metrics,
    encode_payload,
)
from mcepl.topology import generate

FUZZ_SECONDS = float(os.environ.get("MCEPL_FUZZ_SECONDS", "3"))
CHUNK = 25
RUN = "run-fuzz"
NEIGHBOURS = (1, 2)
MUTATIONS = ("flip", "truncate", "extend", "drop", "dup", "swap", "header")


def fuzz_for_budget(test: Callable[[], None], seconds: float = FUZZ_SECONDS) -> int:
    """Run a @given test repeatedly until `seconds` have passed; returns the chunks run."""
    deadline = time.monotonic() + seconds
    for chunks in itertools.count(1):
        test()
        if time.monotonic() >= deadline:
            return chunks
    raise AssertionError("unreachable")


def chunk_settings() -> settings:
    return settings(max_examples=CHUNK, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def mutate(frames: list[bytes], ops: list[tuple[str, int, int, bytes, Any]]) -> list[bytes]:
    """Apply (op, index, position, extra bytes, header value) mutations to a message."""
    out = [bytearray(f) for f in frames]
    for op, i, pos, extra, value in ops:
        if not out:
            break
        i %= len(out)
        f = out[i]
        if op == "flip" and f:
            f[pos % len(f)] ^= (pos % 255) + 1
        elif op == "truncate":
            del f[pos % (len(f) + 1):]
        elif op == "extend":
            f.extend(extra or b"\x00")
        elif op == "drop":
            del out[i]
        elif op == "dup":
            out.insert(i, bytearray(f))
        elif op == "swap":
            j = pos % len(out)
            out[i], out[j] = out[j], out[i]
        elif op == "header":  # one header field (or part of a tensor entry) set to anything
            try:
                header = msgpack.unpackb(bytes(out[0]))
            except Exception:  # noqa: BLE001 - already broken by an earlier mutation
                continue
            if not isinstance(header, dict) or not header:
                continue
            keys = sorted(header, key=str)
            key = keys[pos % len(keys)]
            tensors = header.get("tensors")
            if key == "tensors" and isinstance(tensors, list) and tensors and \
                    isinstance(tensors[0], list) and tensors[0]:
                entry = tensors[pos % len(tensors)]
                if isinstance(entry, list) and entry:
                    entry[i % len(entry)] = value
            else:
                header[key] = value
            out[0] = bytearray(msgpack.packb(header))
    return [bytes(f) for f in out]


_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(),
    st.sampled_from(["bits", "entropy", "delta", "raw", "bool", "float32", "mask", "hello",
                     "hello_ack", "data", RUN, ""]),
    st.text(max_size=8), st.binary(max_size=8),
    st.lists(st.integers(-3, 2**40), max_size=4),
)
mutation_lists = st.lists(
    st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 2**16), st.integers(0, 2**20),
              st.binary(max_size=8), _values),
    min_size=1, max_size=4)


def bernoulli_mask(shape: tuple[int, ...], p: float, seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < p


# ================================================================== (a) the decoder, entropy/delta
def _refs(state: CodecState) -> dict[str, tuple[Any, ...]]:
    return {k: (r.crc, tuple(r.shape), r.since_key, r.packed.tobytes())
            for k, r in state.refs.items()}


@st.composite
def coded_links(draw: st.DrawFn) -> tuple[str, list[Payload]]:
    """A codec and a short history of payloads on one link (the last one gets mutated)."""
    codec = draw(st.sampled_from(["entropy", "delta"]))
    names = draw(st.lists(st.sampled_from(["a", "b", "conv.w", "fc"]), min_size=1, max_size=3,
                          unique=True))
    shapes = {n: tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=3)))
              for n in names}
    seed = draw(st.integers(0, 2**20))
    p = draw(st.floats(0.0, 1.0))
    change = draw(st.sampled_from([0.0, 0.01, 0.1, 0.5]))
    history = []
    masks = {n: bernoulli_mask(s, p, seed + k) for k, (n, s) in enumerate(shapes.items())}
    for step in range(draw(st.integers(1, 4))):
        masks = {n: m ^ bernoulli_mask(m.shape, change, seed + 100 * step + k)
                 for k, (n, m) in enumerate(masks.items())}
        tensors: dict[str, torch.Tensor] = dict(masks)
        if draw(st.booleans()):
            tensors["bias"] = torch.randn(3, generator=torch.Generator().manual_seed(step))
        history.append(Payload("mask", tensors))
    return codec, history


@chunk_settings()
@given(link=coded_links(), ops=mutation_lists)
def _fuzz_codec_messages(link: tuple[str, list[Payload]], ops: list) -> None:
    codec, history = link
    tx, rx = CodecState(key_interval=3), CodecState()
    for k, p in enumerate(history[:-1]):
        decode_message(encode_payload(p, run_id=RUN, round=k, phase=0, sender=1,
                                      mask_codec=codec, state=tx), run_id=RUN, state=rx)
    last = history[-1]
    frames = encode_payload(last, run_id=RUN, round=len(history), phase=0, sender=1,
                            mask_codec=codec, state=tx)
    before = _refs(rx)
    bad = mutate(frames, ops)
    try:
        msg = decode_message(bad, run_id=RUN, state=rx)
    except ProtocolError as exc:
        assert exc.reason in REASONS
        assert _refs(rx) == before, "a refused message moved the link's references"
        # the link is intact: the real message decodes to exactly what was sent
        good = decode_message(frames, run_id=RUN, state=rx)
        assert good.payload.equal(last)
        return
    # accepted (a mutation that left a valid message): masks of the declared shapes
    for name, t in msg.payload.tensors.items():
        assert isinstance(t, torch.Tensor), name


def test_fuzz_codec_messages_with_history() -> None:
    chunks = fuzz_for_budget(_fuzz_codec_messages)
    print(f"codec message fuzz: {chunks * CHUNK} examples in ~{FUZZ_SECONDS:g} s")


@chunk_settings()
@given(frames=st.lists(st.binary(max_size=80), max_size=5), codec=st.sampled_from(
    ["entropy", "delta"]), seed=st.integers(0, 2**16))
def _fuzz_random_frames_on_a_link(frames: list[bytes], codec: str, seed: int) -> None:
    """Garbage tensor frames behind a valid header of an entropy/delta message."""
    tx, rx = CodecState(), CodecState()
    m = {"m": bernoulli_mask((5, 7), 0.3, seed)}
    decode_message(encode_payload(Payload("mask", m), run_id=RUN, round=0, phase=0, sender=1,
                                  mask_codec=codec, state=tx), run_id=RUN, state=rx)
    real = encode_payload(Payload("mask", {"m": ~m["m"]}), run_id=RUN, round=1, phase=0,
                          sender=1, mask_codec=codec, state=tx)
    before = _refs(rx)
    try:
        decode_message([real[0], *frames], run_id=RUN, state=rx)
    except ProtocolError as exc:
        assert exc.reason in REASONS and _refs(rx) == before
        assert torch.equal(decode_message(real, run_id=RUN, state=rx).payload.tensors["m"],
                           ~m["m"])


def test_fuzz_random_tensor_frames_with_history() -> None:
    chunks = fuzz_for_budget(_fuzz_random_frames_on_a_link)
    print(f"tensor frame fuzz: {chunks * CHUNK} examples in ~{FUZZ_SECONDS:g} s")


# ================================================================== (b) the round handler
class _StrictLog(logging.Handler):
    """Formats every record, so a broken log call in a drop path is an error, not a stderr
    line (logging swallows formatting errors in its normal handlers)."""

    def emit(self, record: logging.LogRecord) -> None:
        record.getMessage()


@pytest.fixture(scope="module")
def node_env(tmp_path_factory: pytest.TempPathFactory):
    """Node 0 of a triangle: config, topology and algorithm (shared: the handlers only read
    it), and a maker of fresh runtimes on sockets of their own."""
    d = tmp_path_factory.mktemp("fuzz")
    topo = generate("complete", 3, retention=[0.5, 0.3, 0.2], transport="ipc", ipc_dir=d)
    cfg = config_from_dict({"run": {"rounds": 5, "codec": "delta"},
                            "algorithm": {"name": "mcepl", "batch_size": 16}})
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (32,), generator=g)
    shard = Shard(train_x=x, train_y=y, test_x=x, test_y=y, labels=list(range(10)),
                  num_classes=10, input_shape=(1, 28, 28))
    algo = build_algorithm(cfg, topo, 0, shard)
    shapes = {n: tuple(algo.z[n].shape) for n in algo.layers}
    counter = itertools.count()
    peers = {j: topo.node(j).address for j in NEIGHBOURS}

    def make() -> tuple[NodeRuntime, NodeSockets]:
        socks = NodeSockets(0, f"ipc://{d}/n0-{next(counter)}.sock", peers, linger_ms=0)
        return NodeRuntime(cfg, topo, 0, RUN, algo, socks), socks

    logger = logging.getLogger("mcepl.node")
    handler, propagate = _StrictLog(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False  # thousands of drop warnings: not into pytest's capture
    yield cfg, shapes, make
    logger.removeHandler(handler)
    logger.propagate = propagate


ROUTING_IDS = st.one_of(
    st.sampled_from([b"1", b"2", b"1", b"2", b"0", b"7", b"01", b"", b"1 ", b"-1", b"9" * 11,
                     b"\x00\x80\x00\x00\x01"]),
    st.binary(max_size=12))
KINDS = ("random", "hello", "hello", "hello_ack", "data", "data", "data", "data", "data_shape",
         "metrics", "bye", "oversized", "replay")


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    e: dict[str, Any] = {"kind": draw(st.sampled_from(KINDS))}
    e["where"] = draw(st.sampled_from(["router", "router", "router", "dealer"]))
    e["rid"] = draw(ROUTING_IDS)
    e["peer"] = draw(st.sampled_from(NEIGHBOURS))
    e["sender"] = draw(st.one_of(st.none(), st.none(), st.sampled_from([0, 1, 2, 7]),
                                 st.integers(0, 2**31)))  # None: the claimed routing id's node
    e["round"] = draw(st.one_of(st.integers(0, MAX_ROUNDS_AHEAD + 1),
                                st.integers(0, 2**63 - 1)))
    e["phase"] = draw(st.one_of(st.just(0), st.just(0), st.integers(0, 2**16)))
    e["codec"] = draw(st.sampled_from(["raw", "entropy", "delta"]))
    e["density"] = draw(st.sampled_from([0.0, 0.2, 0.5, 1.0]))
    e["seed"] = draw(st.integers(0, 2**16))
    e["run_ok"] = draw(st.sampled_from([True, True, True, False]))
    e["hash_ok"] = draw(st.sampled_from([True, True, True, False]))
    e["accept"] = draw(st.sampled_from([True, True, True, False]))
    e["random"] = draw(st.lists(st.binary(max_size=64), max_size=5))
    e["ops"] = draw(st.one_of(st.just([]), st.just([]), mutation_lists))
    return e


def _named(raw_id: bytes) -> int | None:
    """The neighbour a routing id names (it proves nothing; the fuzzer claims it)."""
    j = parse_routing_id(raw_id)
    return j if j in NEIGHBOURS else None


def _decodes(frames: list[bytes]) -> ControlMessage | None:
    try:
        msg = decode_message(frames, run_id=RUN)
    except ProtocolError:
        return None
    return msg if isinstance(msg, ControlMessage) else None


class Fuzzer:
    """Builds the frames of each event and checks what the runtime did with them."""

    def __init__(self, cfg, shapes, runtime: NodeRuntime) -> None:
        self.cfg, self.shapes, self.rt = cfg, shapes, runtime
        self.tx = {j: CodecState() for j in range(3)}  # per claimed sender (delta links)
        self.last: tuple[str, Any, list[bytes]] | None = None

    def frames(self, e: dict[str, Any]) -> tuple[str, Any, list[bytes]]:
        if e["kind"] == "replay" and self.last is not None:
            return self.last
        where = e["where"]
        who = e["rid"] if where == "router" else e["peer"]
        if where == "router":
            claimed = self.rt.sock.peer_of(who) or _named(who) or 0
        else:
            claimed = who
        sender = claimed if e["sender"] is None else e["sender"]
        run_id = RUN if e["run_ok"] else "run-other"
        kind = e["kind"]
        if kind in ("random", "replay"):
            frames = list(e["random"])
        elif kind == "hello":
            cfg_hash = self.rt.config_hash if e["hash_ok"] else "0123456789abcdef"
            frames = encode_control("hello", {"config_hash": cfg_hash}, run_id=run_id,
                                    sender=sender)
        elif kind == "hello_ack":
            frames = encode_control("hello_ack", {"accept": e["accept"],
                                                  "reason": "" if e["accept"] else "no"},
                                    run_id=run_id, sender=sender)
        elif kind == "metrics":
            frames = encode_metrics({"round": 1, "node": sender, "x": 1.5}, run_id=run_id,
                                    sender=sender)
        elif kind == "bye":
            frames = encode_control("bye", {"status": "ok", "reason": ""}, run_id=run_id,
                                    sender=sender)
        elif kind == "oversized":  # a header over the 64 KiB limit, or absurd declared shapes
            if e["seed"] % 2:
                frames = [msgpack.packb({"v": 1, "pad": b"x" * (65 * 2**10)})]
            else:
                header = msgpack.unpackb(self._data(e, sender, run_id)[0])
                for entry in header.get("tensors", []):
                    entry[2] = [2**31, 2**31, 2**31]
                frames = [msgpack.packb(header), b"\x00" * 16]
        else:
            frames = self._data(e, sender, run_id)
        frames = mutate(frames, e["ops"]) if e["ops"] else frames
        return where, who, frames

    def _data(self, e: dict[str, Any], sender: int, run_id: str) -> list[bytes]:
        shapes = dict(self.shapes)
        if e["kind"] == "data_shape":  # another model's masks: one layer reshaped or missing
            name = sorted(shapes)[e["seed"] % len(shapes)]
            if e["seed"] % 3:
                shapes[name] = (1, *shapes[name])
            else:
                del shapes[name]
        tensors = {n: bernoulli_mask(s, e["density"], e["seed"] + k)
                   for k, (n, s) in enumerate(sorted(shapes.items()))}
        state = self.tx.setdefault(sender, CodecState()) if e["codec"] == "delta" else None
        return encode_payload(Payload("mask", tensors), run_id=run_id, round=e["round"],
                              phase=e["phase"], sender=sender, mask_codec=e["codec"],
                              state=state)

    def snapshot(self) -> tuple[int, int, frozenset[int], frozenset[int]]:
        rt = self.rt
        return (sum(rt.dropped.values()), sum(len(s) for s in rt.buffer.values()),
                frozenset(rt.greeted), frozenset(rt.acked))

    def legit_refusal(self, where: str, who: Any, frames: list[bytes]) -> bool:
        """The one NodeError allowed: a neighbour refused our handshake (its hello_ack on our
        own link to it says so). A refused hello is never fatal in plaintext."""
        msg = _decodes(frames)
        if msg is None or where == "router":
            return False
        return msg.type == "hello_ack" and msg.sender == who and not msg.body.get("accept")

    def valid_hello(self, who: bytes, frames: list[bytes]) -> int | None:
        """The neighbour a message on connection `who` validly greets as (binds it), or None."""
        msg = _decodes(frames)
        if msg is None or msg.type != "hello" or msg.sender not in NEIGHBOURS:
            return None
        if msg.body.get("config_hash") != self.rt.config_hash:
            return None
        bound = self.rt.sock.peer_of(who)
        if bound is not None and bound != msg.sender:
            return None  # a bound connection's messages must come from its neighbour
        return msg.sender

    def harmless_repeat(self, where: str, who: Any, frames: list[bytes]) -> bool:
        """Valid handshake messages are accepted (again) without a drop: a hello re-greets
        (a neighbour rejoining after a crash, on a new connection), a hello_ack re-acks."""
        if where == "router":
            return self.valid_hello(who, frames) is not None
        msg = _decodes(frames)
        if msg is None:
            return False
        return msg.type == "hello_ack" and msg.sender == who and bool(msg.body.get("accept"))

    def feed(self, where: str, who: Any, frames: list[bytes]) -> bool:
        """Hand one message to the runtime and check the outcome; False once the node ended."""
        rt = self.rt
        before = self.snapshot()
        legit_error = self.legit_refusal(where, who, frames)
        greets = self.valid_hello(who, frames) if where == "router" else None
        bound_before = rt.sock.peer_of(who) if where == "router" else None
        try:
            if where == "router":
                rt._on_router(who, frames)
            else:
                rt._on_dealer(who, frames)
        except NodeError as exc:
            assert legit_error, f"NodeError for an input that is no refused handshake: {exc}"
            return False
        assert not legit_error, "a mismatched handshake was not refused"
        if where == "router":  # only a valid hello binds a connection, and to whom it greets
            bound = rt.sock.peer_of(who)
            assert bound == (greets if greets is not None else bound_before), \
                (bound_before, greets, bound)
        after = self.snapshot()
        dropped, buffered = after[0] - before[0], after[1] - before[1]
        assert dropped in (0, 1) and buffered in (0, 1) and dropped + buffered <= 1
        if dropped == 0 and buffered == 0:
            assert self.harmless_repeat(where, who, frames) or after[2:] != before[2:], \
                "an input was neither counted as dropped nor accepted"
        # the buffer only holds neighbours' messages for the rounds and phases to come
        for (rnd, phase), slot in rt.buffer.items():
            if slot:
                assert rt.pos[0] <= rnd <= rt.pos[0] + MAX_ROUNDS_AHEAD
                assert phase < rt.algo.phases(rnd)  # bounded memory (see the test below)
                assert set(slot) <= set(NEIGHBOURS)
        return True

    def still_works(self) -> None:
        """After the fuzzing, valid messages still get through."""
        rt = self.rt
        for j in NEIGHBOURS:  # on connections of their own (one the fuzzing bound to another
            # neighbour keeps speaking for that one: a hello cannot re-bind it)
            hello = encode_control("hello", {"config_hash": rt.config_hash}, run_id=RUN,
                                   sender=j)
            assert self.feed("router", f"{j}-fresh".encode(), hello)
            assert j in rt.greeted and rt.sock.peer_of(f"{j}-fresh".encode()) == j
        ack = encode_control("hello_ack", {"accept": True, "reason": ""}, run_id=RUN, sender=2)
        assert self.feed("dealer", 2, ack)
        assert 2 in rt.acked
        free = [(r, j) for r in range(rt.pos[0], rt.pos[0] + MAX_ROUNDS_AHEAD + 1)
                for j in NEIGHBOURS if j not in rt.buffer.get((r, 0), {})]
        if free:
            r, j = free[0]
            tensors = {n: bernoulli_mask(s, 0.3, 0) for n, s in self.shapes.items()}
            before = self.snapshot()
            frames = encode_payload(Payload("mask", tensors), run_id=RUN, round=r, phase=0,
                                    sender=j)  # raw codec: no link state involved
            assert self.feed("router", f"{j}-fresh".encode(), frames)
            assert self.snapshot()[1] == before[1] + 1 and j in rt.buffer[(r, 0)]


def test_fuzz_handshake_and_round_handler(node_env) -> None:
    cfg, shapes, make = node_env
    stats = {"examples": 0, "inputs": 0}

    @chunk_settings()
    @given(st.lists(events(), min_size=1, max_size=12))
    def fuzz(evs: list[dict[str, Any]]) -> None:
        runtime, socks = make()
        try:
            f = Fuzzer(cfg, shapes, runtime)
            alive = True
            for e in evs:
                where, who, frames = f.frames(e)
                f.last = (where, who, frames)
                stats["inputs"] += 1
                if not f.feed(where, who, frames):
                    alive = False  # the node stopped on a refused handshake, as it should
                    break
            if alive:
                f.still_works()
            stats["examples"] += 1
        finally:
            socks.close()

    chunks = fuzz_for_budget(fuzz)
    assert stats["examples"] >= CHUNK and chunks >= 1
    print(f"handler fuzz: {stats['examples']} sequences, {stats['inputs']} inputs, "
          f"{chunks} chunks in ~{FUZZ_SECONDS:g} s")


# ================================================================== what the fuzzing found
def test_runtime_buffer_is_bounded_by_phases(node_env) -> None:
    """Found by the handler fuzz: _on_data bounded the round of a buffered message but not its
    phase, so data for round 1 with phases 0..199 was all buffered (mcepl has one phase per
    round) and memory grew with what a neighbour sent. Now refused as bad_phase."""
    cfg, shapes, make = node_env
    runtime, socks = make()
    try:
        runtime._on_router(b"1", encode_control("hello", {"config_hash": runtime.config_hash},
                                                run_id=RUN, sender=1))
        tensors = {n: torch.zeros(s, dtype=torch.bool) for n, s in shapes.items()}
        for phase in range(200):
            runtime._on_router(b"1", encode_payload(Payload("mask", tensors), run_id=RUN,
                                                    round=1, phase=phase, sender=1))
        slots = sum(len(s) for s in runtime.buffer.values())
        assert slots <= (MAX_ROUNDS_AHEAD + 1) * len(NEIGHBOURS), \
            f"{slots} payloads buffered from one neighbour"
        assert sum(runtime.dropped.values()) == 200 - slots
    finally:
        socks.close()

