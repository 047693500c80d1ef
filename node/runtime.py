"""The networked round loop of one node: handshake, synchronous rounds, metrics.

This is the only place where learning meets the transport, and it knows nothing of the
algorithm beyond the `Algorithm` interface: it sends what `outgoing` returns, waits for one
message from each peer in `expected`, and hands them to `incoming`. Bad messages (undecodable,
wrong sender, stale, duplicate, too far ahead, or refused by the algorithm's `check`) are dropped
and counted; they never stop the node.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from mcepl.config import Config
from mcepl.node.algorithms import Algorithm
from mcepl.node.checkpoint import (
    checkpoint_path,
    payload_from_dict,
    payload_to_dict,
    save_checkpoint,
)
from mcepl.node.evaluation import accuracy, is_eval_round
from mcepl.node.transport import NodeSockets, parse_routing_id
from mcepl.protocol import (
    DEFAULT_LIMITS,
    PEER_KINDS,
    CodecState,
    ControlMessage,
    DataMessage,
    ProtocolError,
    StatefulCodec,
    decode_message,
    encode_control,
    encode_metrics,
    encode_payload,
    format_peer_bytes,
    get_codec,
    mask_codec_wire_name,
    mask_wire_stats,
)
from mcepl.protocol.payload import Payload
from mcepl.topology import Topology

log = logging.getLogger("mcepl.node")

MAX_ROUNDS_AHEAD = 2  # a peer may run at most this many rounds ahead; further is dropped


class NodeError(RuntimeError):
    """A failure that ends this node's run, with a message naming what and who."""


class NodeRuntime:
    """Drives one node's algorithm over its sockets for the configured number of rounds."""

    def __init__(self, cfg: Config, topo: Topology, node_id: int, run_id: str,
                 algo: Algorithm, sockets: NodeSockets,
                 checkpoint_dir: str | Path | None = None) -> None:
        self.cfg, self.topo, self.id, self.run_id = cfg, topo, node_id, run_id
        self.checkpoint = checkpoint_path(checkpoint_dir, node_id) if checkpoint_dir else None
        # every record also goes to a local file next to the checkpoint: after a crash, records
        # the collector never got (still queued in the dead process) are pushed again
        self.metrics_log = (self.checkpoint.with_name(f"node-{node_id}.metrics.jsonl")
                            if self.checkpoint else None)
        if self.checkpoint is not None:
            self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        # what this node sent in its last two rounds, per (round, phase) and peer: a neighbour
        # that crashed and rejoins gets it again (it may have died before receiving it)
        self.sent_log: dict[tuple[int, int], dict[int, Payload]] = {}
        self.rejoins: Counter[int] = Counter()
        self.algo, self.sock = algo, sockets
        self.neighbors = set(topo.neighbors(node_id))
        self.config_hash = cfg.hash()
        self.buffer: dict[tuple[int, int], dict[int, tuple[Payload, int]]] = {}
        self.used_bytes = self.used_msgs = 0  # data delivered to the algorithm (per round)
        self.dropped: Counter[str] = Counter()
        self.acked: set[int] = set()
        self.greeted: set[int] = set()
        self.pos = (0, 0)  # (round, phase) being collected
        # mask codec and its per-link state: one CodecState per neighbour and direction
        self.codec = cfg.run.codec
        self.codec_stateful = isinstance(get_codec(mask_codec_wire_name(self.codec)),
                                         StatefulCodec)
        self.tx_codec = {j: CodecState() for j in self.neighbors}
        self.rx_codec = {j: CodecState() for j in self.neighbors}
        self.mask_entries = self.mask_bytes = 0  # masks handed to the transport (cumulative)
        self.encode_s = self.decode_s = 0.0

    # ------------------------------------------------------------------ handshake
    def handshake(self, resume: bool = False) -> None:
        """Say hello to every neighbour and wait for all acks and all of their hellos (when
        resuming, acks only: the neighbours are mid-run and will not say hello again)."""
        hello = encode_control("hello", {"config_hash": self.config_hash}, run_id=self.run_id,
                               sender=self.id)
        for j in sorted(self.neighbors):
            self.sock.send(j, hello, kind="control")
        deadline = time.monotonic() + self.cfg.run.connect_timeout_s
        greeted = (lambda: self.neighbors) if resume else (lambda: self.greeted)
        while self.acked != self.neighbors or greeted() != self.neighbors:
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sorted((self.neighbors - self.acked) | (self.neighbors - greeted()))
                addrs = ", ".join(f"{j} ({self.topo.node(j).address})" for j in missing)
                raise NodeError(f"node {self.id}: no handshake from neighbour(s) {addrs} within "
                                f"{self.cfg.run.connect_timeout_s:g} s")
            self._pump(int(min(left, 0.5) * 1000))

    # ------------------------------------------------------------------ receiving
    def _pump(self, timeout_ms: int) -> None:
        for where, who, frames in self.sock.poll(timeout_ms):
            if where == "dealer":
                self._on_dealer(int(who), frames)  # type: ignore[arg-type]
            else:
                self._on_router(who, frames)  # type: ignore[arg-type]

    def _on_dealer(self, peer: int, frames: list[bytes]) -> None:
        self.sock.counter.received[(peer, "ack")] += sum(map(len, frames))
        try:
            msg = decode_message(frames, run_id=self.run_id)
        except ProtocolError as exc:
            self._drop(f"malformed_{exc.reason}", peer, exc)
            return
        if not isinstance(msg, ControlMessage) or msg.type != "hello_ack" or msg.sender != peer:
            self._drop("unexpected", peer, "not a hello_ack from that peer")
            return
        if not msg.body.get("accept"):
            raise NodeError(f"node {self.id}: neighbour {peer} refused the handshake: "
                            f"{msg.body.get('reason', '')}")
        self.acked.add(peer)

    def _on_router(self, raw_id: bytes, frames: list[bytes]) -> None:
        peer = parse_routing_id(raw_id)
        size = sum(map(len, frames))
        if peer is None or peer not in self.neighbors:
            self.dropped["unknown_sender"] += 1
            log.warning("node %d: dropped a message from unknown sender %r", self.id, raw_id[:16])
            return
        t0 = time.perf_counter()
        try:
            msg = decode_message(frames, run_id=self.run_id, state=self.rx_codec[peer])
        except ProtocolError as exc:
            self.sock.counter.received[(peer, "data")] += size
            self._drop(f"malformed_{exc.reason}", peer, exc)
            return
        finally:
            self.decode_s += time.perf_counter() - t0
        kind = "data" if isinstance(msg, DataMessage) else "control"
        self.sock.counter.received[(peer, kind)] += size
        self.sock.counter.msgs_received[(peer, kind)] += 1
        if msg.sender != peer:
            self._drop("wrong_sender", peer, f"header says sender {msg.sender}")
            return
        if isinstance(msg, ControlMessage):
            self._on_control(raw_id, peer, msg)
        else:
            self._on_data(peer, msg, size)

    def _on_control(self, raw_id: bytes, peer: int, msg: ControlMessage) -> None:
        if msg.type != "hello":
            self._drop("unexpected", peer, f"control message {msg.type!r}")
            return
        theirs = msg.body.get("config_hash")
        ok = theirs == self.config_hash
        reason = "" if ok else (f"config hash mismatch: node {self.id} has {self.config_hash}, "
                                f"node {peer} has {theirs}")
        ack = encode_control("hello_ack", {"accept": ok, "reason": reason}, run_id=self.run_id,
                             sender=self.id)
        self.sock.reply(raw_id, ack, peer, kind="ack")
        if not ok:
            raise NodeError(f"node {self.id}: refused neighbour {peer}: {reason}")
        if peer in self.greeted:
            self._rejoined(peer)
        self.greeted.add(peer)

    def _rejoined(self, peer: int) -> None:
        """A neighbour said hello again: it restarted from a checkpoint. Start both codec links
        afresh and send it again what we sent in the last two rounds (it dedups)."""
        self.rejoins[peer] += 1
        log.warning("node %d: neighbour %d rejoined; resending rounds %s", self.id, peer,
                    sorted({k[0] for k in self.sent_log}))
        self.tx_codec[peer].reset()
        self.rx_codec[peer].reset()
        for (rnd, phase), out in sorted(self.sent_log.items()):
            if peer in out:
                self._send_data(peer, out[peer], rnd, phase)

    def _on_data(self, peer: int, msg: DataMessage, size: int) -> None:
        key = (msg.round, msg.phase)
        if key < self.pos:
            self._drop("stale", peer, f"round {msg.round} phase {msg.phase} < {self.pos}")
            return
        if msg.round > self.pos[0] + MAX_ROUNDS_AHEAD:
            self._drop("too_far_ahead", peer, f"round {msg.round} while at {self.pos[0]}")
            return
        if msg.phase >= self.algo.phases(msg.round):
            self._drop("bad_phase", peer, f"round {msg.round} has no phase {msg.phase}")
            return
        slot = self.buffer.setdefault(key, {})
        if peer in slot:
            self._drop("duplicate", peer, f"second message for round {msg.round}")
            return
        try:
            self.algo.check(msg.round, msg.phase, peer, msg.payload)
        except ValueError as exc:
            self._drop("invalid_payload", peer, exc)
            return
        slot[peer] = (msg.payload, size)

    def _drop(self, why: str, peer: int, detail: object) -> None:
        self.dropped[why] += 1
        log.warning("node %d: dropped message from %d (%s): %s", self.id, peer, why, detail)

    # ------------------------------------------------------------------ rounds
    def exchange(self, rnd: int, phase: int) -> dict[int, Payload]:
        """Send this phase's messages, then collect exactly one from each expected peer."""
        self.pos = (rnd, phase)
        out = self.algo.outgoing(rnd, phase)
        self.sent_log[(rnd, phase)] = dict(out)
        cache: dict[int, tuple[list[bytes], tuple[int, int]]] = {}  # one encoding per broadcast
        for j, payload in sorted(out.items()):
            self._send_data(j, payload, rnd, phase, cache)
        want = set(self.algo.expected(rnd, phase))
        deadline = time.monotonic() + self.cfg.run.round_timeout_s
        while True:
            have = self.buffer.get((rnd, phase), {})
            if want <= set(have):
                break
            left = deadline - time.monotonic()
            if left <= 0:
                silent = sorted(want - set(have))
                addrs = ", ".join(f"{j} ({self.topo.node(j).address})" for j in silent)
                raise NodeError(f"node {self.id}: round {rnd} phase {phase}: no message from "
                                f"neighbour(s) {addrs} within {self.cfg.run.round_timeout_s:g} s")
            self._pump(int(min(left, 0.5) * 1000) + 1)
        got = self.buffer.pop((rnd, phase), {})
        extra = set(got) - want
        if extra:
            self.dropped["unexpected"] += len(extra)
        self.used_bytes += sum(got[j][1] for j in want)
        self.used_msgs += len(want)
        return {j: got[j][0] for j in sorted(want)}

    def _send_data(self, j: int, payload: Payload, rnd: int, phase: int,
                   cache: dict[int, tuple[list[bytes], tuple[int, int]]] | None = None) -> None:
        t0 = time.perf_counter()
        cache = {} if cache is None else cache
        if self.codec_stateful or id(payload) not in cache:
            frames = encode_payload(payload, run_id=self.run_id, round=rnd, phase=phase,
                                    sender=self.id, mask_codec=self.codec,
                                    state=self.tx_codec[j])
            cache[id(payload)] = (frames, mask_wire_stats(payload, frames))
        frames, (entries, nbytes) = cache[id(payload)]
        self.encode_s += time.perf_counter() - t0
        self.mask_entries += entries
        self.mask_bytes += nbytes
        self.sock.send(j, frames, kind="data")

    def _save_checkpoint(self, rnd: int) -> None:
        """State after round `rnd`, with what was sent in it (for neighbours that missed it)."""
        if self.checkpoint is None:
            return
        sent = [(r, ph, j, payload_to_dict(p)) for (r, ph), out in sorted(self.sent_log.items())
                if r == rnd for j, p in sorted(out.items())]
        save_checkpoint(self.checkpoint, {
            "run_id": self.run_id, "config_hash": self.config_hash, "node": self.id,
            "round": rnd, "algo": self.algo.state_dict(), "sent": sent,
            "dropped": dict(self.dropped)})

    def resume(self, state: dict[str, Any]) -> None:
        """Rejoin the run after a crash: restore the algorithm from `state` (a checkpoint),
        tell the neighbours (a new hello), send again what the last finished round sent, and
        carry on with the next round. The neighbours kept their last messages to us."""
        self.algo.load_state_dict(state["algo"])
        self.dropped.update(state.get("dropped", {}))
        done = int(state["round"])
        for rnd, phase, j, p in state["sent"]:
            self.sent_log.setdefault((rnd, phase), {})[j] = payload_from_dict(p)
        log.warning("node %d: resuming after round %d from %s", self.id, done, self.checkpoint)
        if self.metrics_log is not None and self.metrics_log.exists():
            for line in self.metrics_log.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by the crash; that round is redone anyway
                if isinstance(rec, dict) and isinstance(rec.get("round"), int) \
                        and rec["round"] <= done:
                    self.sock.push_metrics(encode_metrics(rec, run_id=self.run_id,
                                                          sender=self.id))
        self.pos = (done + 1, 0)
        self.run(start_round=done + 1, resumed=True)

    def run(self, start_round: int = 0, resumed: bool = False) -> None:
        """Handshake, then rounds `start_round`..R; metrics go to the collector each round.

        The first round's record also carries the handshake's bytes (kinds "control": the
        hellos, on our DEALERs; "ack": the acknowledgements, on our ROUTER)."""
        before = self._snapshot()
        self.handshake(resume=resumed)
        if resumed:
            for (rnd, phase), out in sorted(self.sent_log.items()):
                for j, payload in sorted(out.items()):
                    self._send_data(j, payload, rnd, phase)
        rounds = self.cfg.run.rounds
        for rnd in range(start_round, rounds + 1):
            if rnd > start_round:
                before = self._snapshot()
            compute = comm = 0.0
            t0 = time.perf_counter()
            if rnd >= 1:
                self.algo.local_step(rnd)
            compute += time.perf_counter() - t0
            for phase in range(self.algo.phases(rnd)):
                t0 = time.perf_counter()
                msgs = self.exchange(rnd, phase)
                t1 = time.perf_counter()
                self.algo.incoming(rnd, phase, msgs)
                t2 = time.perf_counter()
                comm += t1 - t0
                compute += t2 - t1
            self.pos = (rnd + 1, 0)
            # drop anything left for finished rounds (it can only be stale now)
            for key in [k for k in self.buffer if k < self.pos]:
                self.dropped["stale"] += len(self.buffer.pop(key))
            for key in [k for k in self.sent_log if k[0] < rnd - 1]:
                del self.sent_log[key]
            record = self._record(rnd, before, compute, comm)
            # the record states the size of the metrics message carrying it
            frames = encode_metrics(record, run_id=self.run_id, sender=self.id)
            if self.metrics_log is not None:
                with open(self.metrics_log, "a") as f:
                    f.write(json.dumps(record) + "\n")
            self.sock.push_metrics(frames)
            self._save_checkpoint(rnd)

    def _snapshot(self) -> dict[str, Any]:
        c = self.sock.counter
        # received = what this round's merge used (deterministic); the transport's raw arrival
        # counts, dropped messages included, are in the counter for the full bill
        snap: dict[str, Any] = {
            "bytes_sent": c.total(c.sent, "data"), "bytes_received": self.used_bytes,
            "msgs_sent": c.total(c.msgs_sent, "data"), "msgs_received": self.used_msgs,
            "bytes_sent_control": c.total(c.sent, "control") + c.total(c.sent, "ack"),
            "bytes_received_control": c.total(c.received, "control") + c.total(c.received, "ack"),
            "bytes_arrived_data": c.total(c.received, "data"),
            "mask_entries": self.mask_entries, "mask_bytes": self.mask_bytes,
        }
        snap["_peers"] = {(j, kind): (c.sent.get((j, kind), 0), c.received.get((j, kind), 0),
                                      c.framing_sent.get((j, kind), 0))
                          for j in sorted(self.neighbors) for kind in PEER_KINDS}
        snap["_codec_s"] = (self.encode_s, self.decode_s)
        return snap

    def _record(self, rnd: int, before: dict[str, Any], compute: float,
                comm: float) -> dict[str, Any]:
        now = self._snapshot()
        rec: dict[str, Any] = {"round": rnd, "node": self.id}
        rec.update({k: now[k] - before[k] for k in now if not k.startswith("_")})
        rec["control_bytes"] = rec["bytes_sent_control"] + rec["bytes_received_control"]
        if rec["mask_entries"]:
            rec["bits_per_entry"] = 8 * rec["mask_bytes"] / rec["mask_entries"]
        peers = format_peer_bytes(
            {key: tuple(a - b for a, b in zip(val, before["_peers"][key], strict=True))
             for key, val in now["_peers"].items()})
        if len(peers) <= DEFAULT_LIMITS.max_str_len:  # else too many peers for one string
            rec["peer_bytes"] = peers
        rec["encode_s"] = round(now["_codec_s"][0] - before["_codec_s"][0], 6)
        rec["decode_s"] = round(now["_codec_s"][1] - before["_codec_s"][1], 6)
        rec["compute_s"] = round(compute, 6)
        rec["comm_s"] = round(comm, 6)
        rec.update(self.algo.stats())
        rec["dropped"] = sum(self.dropped.values())
        if getattr(self.sock, "curve", None) is not None:  # connections/messages CURVE refused
            rec["rejected"] = sum(self.sock.rejected_counts().values())
        if is_eval_round(rnd, self.cfg.run.eval_every, self.cfg.run.rounds):
            t0 = time.perf_counter()
            sh = self.algo.ctx.shard
            rec["test_acc"] = accuracy(self.algo.predict, sh.test_x, sh.test_y,
                                       self.cfg.run.eval_batch_size, self.algo.ctx.device)
            rec["eval_s"] = round(time.perf_counter() - t0, 6)
        rec["t_end"] = time.time()  # wall clock, for time per round across the network
        return rec

    def dropped_counts(self) -> dict[str, int]:
        return dict(self.dropped)
