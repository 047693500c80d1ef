"""Fuzzing at scale: every decoder and a node's real handlers, each fed --messages inputs.

Not a test (tests/test_fuzz.py fuzzes on a small wall-clock budget in CI): a benchmark that runs
long, reports throughput and peak memory per target, and lists what it found. Inputs are valid
messages mutated frame-wise or in one header field (flip, truncate, extend, drop, duplicate,
swap frames, set a header field to anything), random frames, and valid ones; a fixed seed makes a
run repeatable.

Targets (each gets --messages inputs):

  envelope        protocol.decode_message: data (raw bits, float32, int64), control and metrics
  entropy         decode_message of entropy-coded masks (and protocol.entropy.decode_bits)
  delta           decode_message of delta-coded masks on a link with history (CodecState)
  bitpack         protocol.bitpack.unpack_mask on random bytes and shapes
  records         node.record.RoundRecord.from_json on mutated records, as objects (what the
                  collector gets) and as metrics.jsonl lines through mcepl.jsonio (what
                  `mcepl report` and a resuming node read)
  config          mcepl.config.loads_config on mutated TOML (structure and text)
  peer_bytes      protocol.accounting.parse_peer_bytes on mutated bill strings
  json            mcepl.jsonio.loads + Topology.from_json_dict on mutated topology files
  collector       launcher.collector.Collector._handle (metrics and bye messages, plaintext)
  node            node.runtime.NodeRuntime._on_router/_on_dealer: a real node 0 of a triangle
                  (plaintext: connections bound by hello), fed from random connections

The contract checked: a decoder raises only its documented error (ProtocolError, RecordError,
ValueError from parse_peer_bytes, TopologyError/JSONDecodeError/JSONDepthError for files); the
node's handlers raise nothing but NodeError for a refused hello_ack on its own link, count every
bad input in `dropped`, and keep their buffers bounded. Anything else is a finding, printed with
the first input that caused it (saved under --out).

    python benchmarks/fuzz.py --messages 100000
    python benchmarks/fuzz.py --messages 20000 --targets node,delta --seed 7
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import random
import resource
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import torch

import mcepl.node.plugins  # noqa: F401 - fills the registries the config validates against
from mcepl import jsonio
from mcepl.config import ConfigError, config_from_dict, dump_toml, loads_config
from mcepl.launcher.collector import Collector
from mcepl.node.data import Shard
from mcepl.node.factory import build_algorithm
from mcepl.node.record import RecordError, RoundRecord
from mcepl.node.runtime import MAX_ROUNDS_AHEAD, NodeError, NodeRuntime
from mcepl.node.transport import NodeSockets
from mcepl.protocol import (
    CodecState,
    Payload,
    ProtocolError,
    decode_message,
    encode_control,
    encode_metrics,
    encode_payload,
    format_peer_bytes,
    parse_peer_bytes,
)
from mcepl.protocol.bitpack import unpack_mask
from mcepl.protocol.entropy import decode_bits
from mcepl.topology import Topology, generate

RUN = "run-fuzz0123456"
MUTATIONS = ("flip", "truncate", "extend", "drop", "dup", "swap", "header")
ANY_VALUES: list[Any] = [None, True, False, 0, 1, -1, 2**31, 2**63 - 1, 2**64 - 1, -(2**63),
                         1.5, float("nan"), float("inf"), "", "x" * 5000, "bits", "entropy",
                         "delta", "float32", "bool", "mask", "hello", "data", RUN, b"\x00\xff",
                         [], [1, 2], [2**31, 2**31], {"a": 1}, [[1]], "\u00e9\u4e2d",
                         10**400, -(10**400), 2**64]


# ------------------------------------------------------------------------------ mutation
def mutate(rng: random.Random, frames: list[bytes]) -> list[bytes]:
    """One to four random mutations of a multipart message."""
    out = [bytearray(f) for f in frames]
    for _ in range(rng.randint(1, 4)):
        if not out:
            break
        op = rng.choice(MUTATIONS)
        i = rng.randrange(len(out))
        f = out[i]
        if op == "flip" and f:
            for _ in range(rng.randint(1, 3)):
                f[rng.randrange(len(f))] ^= rng.randint(1, 255)
        elif op == "truncate":
            del f[rng.randint(0, len(f)):]
        elif op == "extend":
            f.extend(rng.randbytes(rng.randint(1, 16)))
        elif op == "drop":
            del out[i]
        elif op == "dup":
            out.insert(i, bytearray(f))
        elif op == "swap":
            j = rng.randrange(len(out))
            out[i], out[j] = out[j], out[i]
        elif op == "header":
            try:
                header = msgpack.unpackb(bytes(out[0]))
            except Exception:  # noqa: BLE001 - already broken
                continue
            if not isinstance(header, dict) or not header:
                continue
            key = rng.choice(sorted(header, key=str))
            tensors = header.get("tensors")
            if key == "tensors" and isinstance(tensors, list) and tensors and rng.random() < 0.7:
                entry = rng.choice(tensors)
                if isinstance(entry, list) and entry:
                    entry[rng.randrange(len(entry))] = rng.choice(ANY_VALUES)
            else:
                header[key] = rng.choice(ANY_VALUES)
            try:
                out[0] = bytearray(msgpack.packb(header))
            except OverflowError:  # msgpack has no integers beyond 64 bits: nothing to send
                continue
    return [bytes(f) for f in out]


def masks(rng: random.Random, shapes: dict[str, tuple[int, ...]], p: float) -> dict:
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    return {n: torch.rand(s, generator=g) < p for n, s in shapes.items()}


SMALL = {"conv.w": (8, 1, 3, 3), "fc.w": (10, 40)}


# ------------------------------------------------------------------------------ targets
class Target:
    """One fuzz target: `make(rng, k)` builds input k, `feed(input)` runs it; `allowed` are the
    exceptions the contract allows (counted as refusals, not findings)."""

    name = ""
    allowed: tuple[type[BaseException], ...] = ()

    def setup(self, rng: random.Random) -> None:  # noqa: B027 - optional hook
        pass

    def make(self, rng: random.Random, k: int) -> Any:
        raise NotImplementedError

    def feed(self, x: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class Envelope(Target):
    name, allowed = "envelope", (ProtocolError,)

    def setup(self, rng: random.Random) -> None:
        self.valid = [
            encode_payload(Payload("mask", masks(rng, SMALL, 0.3)), run_id=RUN, round=3,
                           phase=0, sender=1),
            encode_payload(Payload("weights", {"a": torch.randn(7, 3), "b": torch.randn(4)}),
                           run_id=RUN, round=1, phase=1, sender=2),
            encode_payload(Payload("counts", {"n": torch.arange(6)}), run_id=RUN, round=0,
                           phase=0, sender=0),
            encode_control("hello", {"config_hash": "0123456789abcdef"}, run_id=RUN, sender=1),
            encode_control("hello_ack", {"accept": False, "reason": "no"}, run_id=RUN,
                           sender=2),
            encode_control("bye", {"status": "ok", "reason": ""}, run_id=RUN, sender=2),
            encode_metrics({"round": 1, "node": 1, "test_acc": 0.5, "peer_bytes": "1:data:3:4:2"},
                           run_id=RUN, sender=1),
        ]

    def make(self, rng: random.Random, k: int) -> Any:
        if k % 10 == 9:
            return [rng.randbytes(rng.randint(0, 64)) for _ in range(rng.randint(0, 4))]
        return mutate(rng, rng.choice(self.valid))

    def feed(self, x: Any) -> None:
        decode_message(x, run_id=RUN)


class Entropy(Target):
    name, allowed = "entropy", (ProtocolError,)

    def setup(self, rng: random.Random) -> None:
        self.valid = [encode_payload(Payload("mask", masks(rng, SMALL, p)), run_id=RUN, round=1,
                                     phase=0, sender=1, mask_codec="entropy")
                      for p in (0.0, 0.05, 0.3, 0.5, 1.0)]

    def make(self, rng: random.Random, k: int) -> Any:
        if k % 4 == 3:  # the frame decoder alone, on random bytes
            return ("bits", rng.randbytes(rng.randint(0, 40)), rng.randint(0, 300))
        return ("msg", mutate(rng, rng.choice(self.valid)), 0)

    def feed(self, x: Any) -> None:
        kind, data, n = x
        if kind == "bits":
            decode_bits(data, n)
        else:
            decode_message(data, run_id=RUN)


class Delta(Target):
    name, allowed = "delta", (ProtocolError,)

    def setup(self, rng: random.Random) -> None:
        self.rng = rng
        self._new_link()

    def _new_link(self) -> None:
        self.tx, self.rx = CodecState(key_interval=5), CodecState()
        self.m = masks(self.rng, SMALL, 0.3)
        self.rnd = 0

    def make(self, rng: random.Random, k: int) -> Any:
        if k % 500 == 0:
            self._new_link()
        flips = masks(rng, SMALL, rng.choice([0.0, 0.01, 0.1]))
        self.m = {n: t ^ flips[n] for n, t in self.m.items()}
        self.rnd += 1
        good = encode_payload(Payload("mask", self.m), run_id=RUN, round=self.rnd, phase=0,
                              sender=1, mask_codec="delta", state=self.tx)
        return good, mutate(rng, good)

    def feed(self, x: Any) -> None:
        good, bad = x
        before = {n: r.crc for n, r in self.rx.refs.items()}
        try:
            decode_message(bad, run_id=RUN, state=self.rx)
        except ProtocolError as exc:
            refusal = exc
        else:
            # a mutation the decoder accepted moved the references: resynchronise both ends
            self.tx.reset()
            self.rx.reset()
            return
        if {n: r.crc for n, r in self.rx.refs.items()} != before:
            raise AssertionError("a refused message moved the link's references")
        got = decode_message(good, run_id=RUN, state=self.rx)  # the link still works
        for n, t in self.m.items():
            if not torch.equal(got.payload.tensors[n], t):
                raise AssertionError(f"{n}: the real message decoded wrong after a refusal")
        raise refusal


class Bitpack(Target):
    name, allowed = "bitpack", (ProtocolError,)

    def make(self, rng: random.Random, k: int) -> Any:
        shape = tuple(rng.randint(0, 9) for _ in range(rng.randint(0, 4)))
        n = 1
        for d in shape:
            n *= d
        size = max(0, (n + 7) // 8 + rng.choice([-1, 0, 0, 0, 1]))
        return rng.randbytes(size), shape

    def feed(self, x: Any) -> None:
        data, shape = x
        unpack_mask(data, shape)


class Records(Target):
    name, allowed = "records", (RecordError, json.JSONDecodeError, jsonio.JSONLimitError)

    def setup(self, rng: random.Random) -> None:
        self.base = {"schema_version": 1, "round": 3, "node": 1, "bytes_sent": 100,
                     "bytes_received": 90, "test_acc": 0.5, "train_loss": 1.25, "dropped": 0,
                     "peer_bytes": "0:data:10:20:2", "t_end": 1.7e9, "comm_s": 0.01}

    def make(self, rng: random.Random, k: int) -> Any:
        d: dict[Any, Any] = dict(self.base)
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            if op < 0.4:
                d[rng.choice(sorted(d))] = rng.choice(ANY_VALUES)
            elif op < 0.6 and d:
                d.pop(rng.choice(sorted(d)))
            elif op < 0.8:
                d[rng.choice(["x", "density", "rejected", "bits_per_entry", "", "node "])] = \
                    rng.choice(ANY_VALUES)
            else:
                d = rng.choice([[], "x", 3, None, {}])  # type: ignore[assignment]
                break
        if k % 2:  # a metrics.jsonl line, maybe damaged
            try:
                line = json.dumps(d)
            except (TypeError, ValueError):
                return d
            if rng.random() < 0.3:
                pos = rng.randint(0, len(line))
                line = line[:pos] + rng.choice(["[" * 100, "1" + "0" * 5000, "}", '"', "-"]) \
                    + line[pos:]
            return line
        return d

    def feed(self, x: Any) -> None:
        RoundRecord.from_json(jsonio.loads(x) if isinstance(x, str) else x)


class ConfigText(Target):
    name, allowed = "config", (ConfigError,)

    def setup(self, rng: random.Random) -> None:
        self.valid = dump_toml(config_from_dict({}))

    def make(self, rng: random.Random, k: int) -> Any:
        lines = self.valid.splitlines()
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(lines))
            if "=" in lines[i] and rng.random() < 0.7:
                key = lines[i].split("=", 1)[0]
                lines[i] = key + "= " + rng.choice(
                    ["nan", "inf", "-inf", "1" + "0" * rng.choice([20, 400, 5000]), "-1", "0",
                     "1e400", '"x"', "true", "[1, [2]]", "{a = 1}", "[" * 200 + "]" * 200,
                     "9223372036854775808", "0.0", "1_000"])
            else:
                lines.insert(i, rng.choice(["[run]", "[x]", "a = 1", "=", "[[run]]", "\x00"]))
        return "\n".join(lines)

    def feed(self, x: Any) -> None:
        loads_config(x, source="<fuzz>")


class PeerBytes(Target):
    name, allowed = "peer_bytes", (ValueError,)

    def setup(self, rng: random.Random) -> None:
        self.valid = format_peer_bytes({(1, "data"): (10, 20, 2), (2, "control"): (3, 4, 1),
                                        (-1, "metrics"): (5, 0, 2)})

    def make(self, rng: random.Random, k: int) -> Any:
        s = bytearray(self.valid.encode())
        for _ in range(rng.randint(1, 4)):
            if s and rng.random() < 0.5:
                s[rng.randrange(len(s))] = rng.choice(b"0123456789:- abcx\x00\xff")
            else:
                s.insert(rng.randint(0, len(s)), rng.choice(b"0123456789:- "))
        return s.decode("utf-8", "replace")

    def feed(self, x: Any) -> None:
        parse_peer_bytes(x)


class JsonFiles(Target):
    name, allowed = "json", (ValueError,)  # JSONDecodeError, JSONDepthError, TopologyError

    def setup(self, rng: random.Random) -> None:
        self.valid = json.dumps(generate("er", 6, p=0.5, seed=1).to_json_dict())

    def make(self, rng: random.Random, k: int) -> Any:
        if k % 2:  # structural: one value anywhere in the document set to anything
            doc = json.loads(self.valid)
            for _ in range(rng.randint(1, 3)):
                obj: Any = doc
                while True:
                    keys = list(obj) if isinstance(obj, dict) else list(range(len(obj)))
                    if not keys:
                        break
                    key = rng.choice(keys)
                    child = obj[key]
                    if isinstance(child, (dict, list)) and child and rng.random() < 0.7:
                        obj = child
                        continue
                    value = copy.deepcopy(rng.choice(ANY_VALUES))
                    obj[key] = value if not isinstance(value, bytes) else value.hex()
                    break
            try:
                return json.dumps(doc)
            except ValueError:  # NaN and friends: JSON's writer refuses some floats
                return json.dumps(doc, allow_nan=True)
        s = bytearray(self.valid.encode())
        for _ in range(rng.randint(1, 4)):
            r = rng.random()
            if r < 0.4 and s:
                s[rng.randrange(len(s))] = rng.choice(b'[]{}",:0123456789.-eE truefalsn')
            elif r < 0.7:
                pos = rng.randint(0, len(s))
                s[pos:pos] = rng.choice([b"[" * rng.randint(1, 200), b"{}", b'"x":', b"-1e999",
                                         b"1e400", b"NaN", b"\\u0000", b"1" + b"0" * 400])
            elif s:
                del s[rng.randrange(len(s)):]
        return s.decode("utf-8", "replace")

    def feed(self, x: Any) -> None:
        Topology.from_json_dict(jsonio.loads(x), source="<fuzz>")


class CollectorTarget(Target):
    name, allowed = "collector", ()

    def setup(self, rng: random.Random) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mcepl-fuzz-col-"))
        self.col = Collector(self.dir, RUN, 3, bind=f"ipc://{self.dir}/c.sock")
        self.valid = [encode_metrics({"round": r, "node": 1, "test_acc": 0.5, "bytes_sent": 9},
                                     run_id=RUN, sender=1) for r in range(3)]
        self.valid.append(encode_control("bye", {"status": "ok", "reason": ""}, run_id=RUN,
                                         sender=2))

    def make(self, rng: random.Random, k: int) -> Any:
        return mutate(rng, rng.choice(self.valid)) if k % 5 else rng.choice(self.valid)

    def feed(self, x: Any) -> None:
        self.col._handle(x)

    def close(self) -> None:
        self.col.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class NodeTarget(Target):
    """A real node 0 of a triangle, plaintext, fed through its handlers."""

    name, allowed = "node", (NodeError,)

    def setup(self, rng: random.Random) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mcepl-fuzz-node-"))
        self.topo = generate("complete", 3, retention=[0.5, 0.3, 0.2], transport="ipc",
                             ipc_dir=self.dir)
        self.cfg = config_from_dict({"run": {"rounds": 5, "codec": "delta"},
                                     "algorithm": {"name": "mcepl", "batch_size": 16}})
        g = torch.Generator().manual_seed(0)
        x = torch.rand(32, 1, 28, 28, generator=g)
        y = torch.randint(0, 10, (32,), generator=g)
        shard = Shard(train_x=x, train_y=y, test_x=x, test_y=y, labels=list(range(10)),
                      num_classes=10, input_shape=(1, 28, 28))
        self.algo = build_algorithm(self.cfg, self.topo, 0, shard)
        self.shapes = {n: tuple(self.algo.z[n].shape) for n in self.algo.layers}
        self.count = 0
        self._fresh()
        hello = {j: encode_control("hello", {"config_hash": self.rt.config_hash}, run_id=RUN,
                                   sender=j) for j in (1, 2)}
        self.hello = hello
        self.tx = {j: CodecState() for j in (0, 1, 2, 7)}

    def _fresh(self) -> None:
        if getattr(self, "socks", None) is not None:
            self.socks.close(0)
        self.count += 1
        peers = {j: self.topo.node(j).address for j in (1, 2)}
        self.socks = NodeSockets(0, f"ipc://{self.dir}/n0-{self.count}.sock", peers, linger_ms=0)
        self.rt = NodeRuntime(self.cfg, self.topo, 0, RUN, self.algo, self.socks)

    def make(self, rng: random.Random, k: int) -> Any:
        if k % 2000 == 1999:
            return ("reset", None, None)
        conn = rng.choice([b"1-a", b"2-b", b"1-a", b"7", b"", b"1", rng.randbytes(6)])
        where = "dealer" if rng.random() < 0.15 else "router"
        sender = rng.choice([1, 2, 1, 2, 0, 7, 2**31])
        kind = rng.random()
        if kind < 0.25:
            frames = self.hello.get(sender) or self.hello[1]
        elif kind < 0.35:
            frames = encode_control("hello_ack", {"accept": rng.random() < 0.95,
                                                  "reason": ""}, run_id=RUN,
                                    sender=sender if where == "router" else rng.choice([1, 2]))
        else:
            rnd = rng.choice([self.rt.pos[0], self.rt.pos[0] + 1, self.rt.pos[0] + 2,
                              self.rt.pos[0] + MAX_ROUNDS_AHEAD + 1, 0, 2**40])
            codec = rng.choice(["raw", "entropy", "delta"])
            state = self.tx.setdefault(sender, CodecState()) if codec == "delta" else None
            frames = encode_payload(Payload("mask", masks(rng, self.shapes, 0.3)), run_id=RUN,
                                    round=rnd, phase=rng.choice([0, 0, 1]), sender=sender,
                                    mask_codec=codec, state=state)
        if rng.random() < 0.5:
            frames = mutate(rng, frames)
        who = conn if where == "router" else rng.choice([1, 2])
        return (where, who, frames)

    def feed(self, x: Any) -> None:
        where, who, frames = x
        if where == "reset":
            self._fresh()
            return
        rt = self.rt
        before = sum(rt.dropped.values()) + sum(len(s) for s in rt.buffer.values())
        greeted, acked = set(rt.greeted), set(rt.acked)
        if where == "router":
            rt._on_router(who, frames)
        else:
            rt._on_dealer(who, frames)
        after = sum(rt.dropped.values()) + sum(len(s) for s in rt.buffer.values())
        if after == before and rt.greeted == greeted and rt.acked == acked:
            # neither dropped nor buffered nor a handshake step: only a valid (repeated) hello
            # or hello_ack may do that
            try:
                msg = decode_message(frames, run_id=RUN)
            except ProtocolError:
                raise AssertionError("an undecodable input was neither dropped nor used") \
                    from None
            if getattr(msg, "type", None) not in ("hello", "hello_ack"):
                raise AssertionError(f"a {type(msg).__name__} was neither dropped nor used")
        slots = sum(len(s) for s in rt.buffer.values())
        if slots > (MAX_ROUNDS_AHEAD + 1) * 2 * 2:
            raise AssertionError(f"{slots} payloads buffered")

    def close(self) -> None:
        self.socks.close(0)
        shutil.rmtree(self.dir, ignore_errors=True)


TARGETS: dict[str, Callable[[], Target]] = {
    t.name: t for t in (Envelope, Entropy, Delta, Bitpack, Records, ConfigText, PeerBytes,
                        JsonFiles, CollectorTarget, NodeTarget)}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_target(name: str, n: int, seed: int, out: Path) -> dict[str, Any]:
    rng = random.Random(f"{seed}:{name}")
    t = TARGETS[name]()
    t.setup(rng)
    refused, accepted = 0, 0
    findings: Counter[str] = Counter()
    first: dict[str, str] = {}
    rss0 = peak_rss_mb()
    build = feed = 0.0
    try:
        for k in range(n):
            t0 = time.perf_counter()
            x = t.make(rng, k)
            t1 = time.perf_counter()
            try:
                t.feed(x)
                accepted += 1
            except t.allowed:
                refused += 1
            except Exception as exc:  # noqa: BLE001 - a finding, recorded
                key = f"{type(exc).__name__}: {str(exc)[:120]}"
                findings[key] += 1
                if key not in first:
                    first[key] = f"input {k}: {x!r}"[:4000] + "\n" + traceback.format_exc()
            feed += time.perf_counter() - t1
            build += t1 - t0
    finally:
        t.close()
    if first:
        (out / f"findings-{name}.txt").write_text("\n\n".join(first.values()))
    return {"target": name, "inputs": n, "refused": refused, "accepted": accepted,
            "findings": dict(findings), "feed_s": feed, "build_s": build,
            "inputs_per_s": n / feed if feed else 0.0, "peak_rss_mb": peak_rss_mb(),
            "peak_rss_growth_mb": peak_rss_mb() - rss0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=100_000, help="inputs per target")
    ap.add_argument("--targets", default=",".join(TARGETS),
                    help=f"comma-separated, of: {', '.join(TARGETS)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/fuzz")
    args = ap.parse_args()
    names = [x for x in args.targets.split(",") if x]
    bad = [x for x in names if x not in TARGETS]
    if bad:
        print(f"error: unknown target(s) {bad}; choose from {', '.join(TARGETS)}",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.disable(logging.WARNING)  # millions of drop warnings: the counts tell the story
    load = os.getloadavg()
    print(f"{args.messages:,} inputs per target, seed {args.seed}; load average {load[0]:.1f} "
          f"on {os.cpu_count()} cores\n")
    print("| target | inputs | refused | accepted | findings | inputs/s (handler time) | "
          "peak RSS (MB) | RSS growth (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for name in names:
        r = run_target(name, args.messages, args.seed, out)
        rows.append(r)
        print(f"| {name} | {r['inputs']:,} | {r['refused']:,} | {r['accepted']:,} | "
              f"{sum(r['findings'].values())} | {r['inputs_per_s']:,.0f} | "
              f"{r['peak_rss_mb']:.0f} | {r['peak_rss_growth_mb']:.1f} |", flush=True)
    found = {r["target"]: r["findings"] for r in rows if r["findings"]}
    (out / "fuzz.json").write_text(json.dumps({"seed": args.seed, "messages": args.messages,
                                               "load": load, "targets": rows}, indent=2))
    if found:
        print("\nFINDINGS (first input of each in", out, "):")
        for name, f in found.items():
            for key, count in f.items():
                print(f"  {name}: {count} x {key}")
        return 1
    print(f"\nno findings; details: {out / 'fuzz.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
