"""The round core: one node's round, step by step, for every driver.

A synchronous round `k` of one node is, whatever carries the messages:

    begin_round(k)                       local_step (k >= 1), timed as compute
    for phase in range(phases(k)):
        send_phase(k, phase)  -> frames  outgoing, encoded through the node's PeerLinks
        ... the driver delivers them and collects one message from each expected peer,
            calling admit() on each as it arrives (the algorithm's check) ...
        receive_phase(k, phase, msgs)    exactly the expected peers; incoming, timed as compute
    end_round(k)          -> RoundRecord  the round's bill, timings, the algorithm's stats, and
                                          the accuracy on evaluation rounds

`node/runtime.py` (ZeroMQ: handshake, pumping sockets, buffering early messages, timeouts,
rejoin) and `node/inprocess.py` (every node in one process, messages in memory) make exactly
these calls, so "the same numbers in both drivers" is one piece of code, not two that agree.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from mcepl.node.algorithms import Algorithm
from mcepl.node.batching import activation_bytes_per_sample
from mcepl.node.evaluation import accuracy, eval_batch_size, is_eval_round
from mcepl.node.links import Delivered, PeerLinks
from mcepl.node.record import RoundRecord
from mcepl.node.snapshots import MaskSnapshots
from mcepl.protocol import DEFAULT_LIMITS, PEER_KINDS, format_peer_bytes


class RoundError(RuntimeError):
    """The driver broke the round's contract (wrong peers, wrong phase count)."""


@dataclass
class Evaluator:
    """The node's own test set and when to evaluate on it (round 0, every `every`, the last);
    `val_x`/`val_y`: its validation split (training images set aside), evaluated on the same
    rounds when given."""

    x: Any  # the shard's Images (uint8, normalised per batch) or a float tensor
    y: torch.Tensor
    every: int
    rounds: int
    batch_size: int | str = "auto"  # see mcepl.node.evaluation.eval_batch_size
    device: torch.device | str = "cpu"
    val_x: Any = None  # Images or a float tensor, like x
    val_y: torch.Tensor | None = None

    def due(self, rnd: int) -> bool:
        return is_eval_round(rnd, self.every, self.rounds)

    def __call__(self, algo: Algorithm) -> float:
        if self.batch_size in (None, "auto"):  # sized to the model's activations, once
            module = algo.ctx.model.module
            per_sample = activation_bytes_per_sample(module, tuple(self.x.shape[1:]), self.device)
            self.batch_size = eval_batch_size("auto", self.device, per_sample)
        return accuracy(algo.predict, self.x, self.y, self.batch_size, self.device)

    def validation(self, algo: Algorithm) -> float | None:
        """Accuracy on the validation split; None without one."""
        if self.val_x is None or self.val_y is None or len(self.val_y) == 0:
            return None
        return accuracy(algo.predict, self.val_x, self.val_y, self.batch_size, self.device)


@dataclass
class _Totals:
    """Cumulative counters at a point in time; a round's record is the difference of two."""

    bytes_sent: int
    bytes_received: int
    msgs_sent: int
    msgs_received: int
    bytes_sent_control: int
    bytes_received_control: int
    bytes_arrived_data: int
    mask_entries: int
    mask_bytes: int
    encode_s: float
    decode_s: float
    peers: dict[tuple[int, str], tuple[int, int, int]]


class RoundCore:
    """One node's side of every round: its algorithm, its links, its evaluator, its bill."""

    def __init__(self, node_id: int, algo: Algorithm, links: PeerLinks,
                 evaluator: Evaluator | None = None,
                 snapshots: MaskSnapshots | None = None) -> None:
        self.id, self.algo, self.links, self.evaluator = node_id, algo, links, evaluator
        self.snapshots = snapshots  # the algorithm's masks to local files (evaluation rounds)
        self.used_bytes = self.used_msgs = 0  # data delivered to the algorithm (cumulative)
        self._before = self._totals()  # bytes before the first round (the handshake) count in it
        self._compute = self._comm = 0.0
        self._checks = 0.0  # time in `admit` since the last send_phase

    # ------------------------------------------------------------------ the round
    def phases(self, rnd: int) -> int:
        return self.algo.phases(rnd)

    def expected(self, rnd: int, phase: int) -> set[int]:
        return set(self.algo.expected(rnd, phase))

    def begin_round(self, rnd: int) -> None:
        """Start round `rnd`: its local computation (rounds >= 1)."""
        self._compute = self._comm = 0.0
        if rnd >= 1:
            t0 = time.perf_counter()
            self.algo.local_step(rnd)
            self._compute += time.perf_counter() - t0

    def send_phase(self, rnd: int, phase: int) -> list[tuple[int, list[bytes]]]:
        """What this node sends in this phase, encoded: (peer, frames), sorted by peer. The
        driver hands each to its transport."""
        t0 = time.perf_counter()
        out = self.algo.outgoing(rnd, phase)
        t1 = time.perf_counter()
        frames = self.links.encode(out, rnd, phase)
        t2 = time.perf_counter()
        self._compute += t1 - t0
        self._comm += t2 - t1
        self._checks = 0.0
        return frames

    def admit(self, rnd: int, phase: int, sender: int, payload: Any) -> None:
        """The algorithm's check of one arrived payload; ValueError if it cannot merge it (the
        networked driver drops and counts it, the in-process driver fails)."""
        t0 = time.perf_counter()
        try:
            self.algo.check(rnd, phase, sender, payload)
        finally:
            spent = time.perf_counter() - t0
            self._compute += spent
            self._checks += spent

    def receive_phase(self, rnd: int, phase: int, msgs: Mapping[int, Delivered],
                      waited_s: float = 0.0) -> None:
        """Merge this phase's messages, exactly one from each expected peer (already admitted).

        `waited_s`: how long the driver took, after sending, to have them all (waiting for the
        peers, decoding); the checks run meanwhile are compute, the rest is communication."""
        want = self.expected(rnd, phase)
        if set(msgs) != want:
            raise RoundError(f"round {rnd} phase {phase}: node {self.id} expected messages from "
                             f"{sorted(want)}, got {sorted(msgs)}")
        self._comm += max(0.0, waited_s - self._checks)
        self._checks = 0.0
        t0 = time.perf_counter()
        self.used_bytes += sum(m.size for m in msgs.values())
        self.used_msgs += len(msgs)
        self.algo.incoming(rnd, phase, {j: msgs[j].payload for j in sorted(msgs)})
        self._compute += time.perf_counter() - t0

    def end_round(self, rnd: int, *, dropped: int = 0,
                  rejected: int | None = None) -> RoundRecord:
        """The round's record: the bill since the previous record, timings, the algorithm's
        stats, and the accuracy on evaluation rounds. `dropped` (cumulative bad messages) and
        `rejected` (what the transport refused, CURVE only) come from the driver."""
        now = self._totals()
        b = self._before
        rec = RoundRecord(
            round=rnd, node=self.id,
            bytes_sent=now.bytes_sent - b.bytes_sent,
            bytes_received=now.bytes_received - b.bytes_received,
            msgs_sent=now.msgs_sent - b.msgs_sent,
            msgs_received=now.msgs_received - b.msgs_received,
            bytes_sent_control=now.bytes_sent_control - b.bytes_sent_control,
            bytes_received_control=now.bytes_received_control - b.bytes_received_control,
            bytes_arrived_data=now.bytes_arrived_data - b.bytes_arrived_data,
            mask_entries=now.mask_entries - b.mask_entries,
            mask_bytes=now.mask_bytes - b.mask_bytes,
        )
        rec.control_bytes = rec.bytes_sent_control + rec.bytes_received_control
        if rec.mask_entries:
            rec.bits_per_entry = 8 * rec.mask_bytes / rec.mask_entries
        peers = format_peer_bytes(
            {key: tuple(a - c for a, c in zip(val, b.peers.get(key, (0, 0, 0)), strict=True))
             for key, val in now.peers.items()})
        if peers and len(peers) <= DEFAULT_LIMITS.max_str_len:  # else too many peers
            rec.peer_bytes = peers
        rec.encode_s = round(now.encode_s - b.encode_s, 6)
        rec.decode_s = round(now.decode_s - b.decode_s, 6)
        rec.compute_s = round(self._compute, 6)
        rec.comm_s = round(self._comm, 6)
        rec.stats = dict(self.algo.stats())
        rec.dropped = dropped
        rec.rejected = rejected
        if self.evaluator is not None and self.evaluator.due(rnd):
            t0 = time.perf_counter()
            rec.test_acc = self.evaluator(self.algo)
            rec.val_acc = self.evaluator.validation(self.algo)
            rec.eval_s = round(time.perf_counter() - t0, 6)  # test and validation
        if self.snapshots is not None and self.snapshots.due(rnd):
            self.snapshots.save(rnd, self.algo.masks())
        self.links.forget_before(rnd)
        rec.t_end = time.time()  # wall clock, for time per round across the network
        self._before = self._totals()
        return rec

    # ------------------------------------------------------------------ counters
    def _totals(self) -> _Totals:
        lk = self.links
        c = lk.counter
        # received = what the rounds' merges used (deterministic); the raw arrivals, dropped
        # messages included, are bytes_arrived_data
        return _Totals(
            bytes_sent=c.total(c.sent, "data"), bytes_received=self.used_bytes,
            msgs_sent=c.total(c.msgs_sent, "data"), msgs_received=self.used_msgs,
            bytes_sent_control=c.total(c.sent, "control") + c.total(c.sent, "ack"),
            bytes_received_control=c.total(c.received, "control") + c.total(c.received, "ack"),
            bytes_arrived_data=c.total(c.received, "data"),
            mask_entries=lk.mask_entries, mask_bytes=lk.mask_bytes,
            encode_s=lk.encode_s, decode_s=lk.decode_s,
            peers={(j, kind): (c.sent.get((j, kind), 0), c.received.get((j, kind), 0),
                               c.framing_sent.get((j, kind), 0))
                   for j in lk.neighbors for kind in PEER_KINDS})
