"""Run every node of a network in this one process, round by round, messages passed in memory.

It drives the same round core (`node/rounds.py`) as the networked runtime, each node with its own
`PeerLinks`, so messages go through the same encoder, codec state and decoder and the records
have the same fields and numbers; only the transport differs: an in-memory postbox instead of
ZeroMQ (no handshake, so no control bytes, and no ZeroMQ framing on the wire, though the framing
ZeroMQ would add is counted in `peer_bytes`). It is the reference the networked runtime must
match, and the fastest way to test an algorithm.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mcepl.config import Config
from mcepl.node.algorithms import Algorithm
from mcepl.node.factory import all_shards, build_algorithm, build_evaluator, default_run_id
from mcepl.node.links import Delivered, PeerLinks
from mcepl.node.record import RoundRecord
from mcepl.node.rounds import RoundCore, RoundError
from mcepl.node.snapshots import MaskSnapshots
from mcepl.node.threads import resolve_threads
from mcepl.protocol import DataMessage, message_size
from mcepl.topology import Topology

RoundCallback = Callable[[int, list[dict[str, Any]]], None]


@dataclass
class InProcessResult:
    """`round_records`: every node's RoundRecord per round; `records`: their JSON form (what a
    run's metrics.jsonl holds)."""

    round_records: list[RoundRecord] = field(default_factory=list)
    algorithms: list[Algorithm] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def records(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.round_records]

    def mean_acc(self, rnd: int) -> float:
        accs = [r.test_acc for r in self.round_records
                if r.round == rnd and r.test_acc is not None]
        return sum(accs) / len(accs) if accs else float("nan")


def run_inprocess(cfg: Config, topo: Topology, *, run_id: str | None = None,
                  on_round: RoundCallback | None = None,
                  on_ready: Callable[[], None] | None = None,
                  masks_dir: str | Path | None = None,
                  mask_snapshots: str = "eval") -> InProcessResult:
    """Train every node of `topo` for `cfg.run.rounds` rounds; one record per node per round.

    `on_ready()` is called once every node is built (data loaded, models and algorithms made:
    a user model or data set that does not fit has raised by then), before round 0;
    `on_round(rnd, records)` gets each round's records in JSON form as the round ends.
    `masks_dir`: every node's mask snapshots go there (on evaluation rounds, or with
    `mask_snapshots = "final"` after the last round), as a node process writes them."""
    threads = torch.get_num_threads()
    # as each node process of a local launch does (same count, same numbers)
    torch.set_num_threads(resolve_threads(cfg.run.threads_per_node, topo.num_nodes))
    try:
        return _run(cfg, topo, run_id or default_run_id(cfg, topo), on_round, on_ready,
                    masks_dir, mask_snapshots)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: Config, topo: Topology, run_id: str, on_round: RoundCallback | None,
         on_ready: Callable[[], None] | None, masks_dir: str | Path | None,
         mask_snapshots: str) -> InProcessResult:
    t_start = time.perf_counter()
    shards = all_shards(cfg, topo)
    cores: list[RoundCore] = []
    for n in topo.nodes:
        algo = build_algorithm(cfg, topo, n.id, shards[n.id])
        links = PeerLinks(n.id, topo.neighbors(n.id), run_id, cfg.run.codec)
        snapshots = (MaskSnapshots(masks_dir, n.id, cfg.run.eval_every, cfg.run.rounds,
                                   mask_snapshots) if masks_dir is not None else None)
        cores.append(RoundCore(n.id, algo, links, build_evaluator(cfg, shards[n.id]), snapshots))
    if on_ready is not None:
        on_ready()
    result = InProcessResult(algorithms=[c.algo for c in cores])
    for rnd in range(cfg.run.rounds + 1):
        for core in cores:
            core.begin_round(rnd)
        n_phases = {core.phases(rnd) for core in cores}
        if len(n_phases) != 1:
            raise RoundError(f"round {rnd}: nodes disagree on the number of phases {n_phases}")
        for phase in range(n_phases.pop()):
            postbox: list[list[tuple[int, list[bytes]]]] = [[] for _ in cores]
            for i, core in enumerate(cores):
                for j, frames in core.send_phase(rnd, phase):
                    postbox[j].append((i, frames))
            for j, core in enumerate(cores):
                t0 = time.perf_counter()
                inbox: dict[int, Delivered] = {}
                for i, frames in postbox[j]:
                    msg = core.links.decode(i, frames)
                    if not isinstance(msg, DataMessage) or (msg.round, msg.phase) != (rnd, phase):
                        raise RoundError(f"round {rnd} phase {phase}: node {i} sent node {j} "
                                         f"something else: {msg!r:.80}")
                    core.admit(rnd, phase, i, msg.payload)  # ValueError: a bug, not a drop
                    inbox[i] = Delivered(msg.payload, message_size(frames))
                core.receive_phase(rnd, phase, inbox, waited_s=time.perf_counter() - t0)
        records = [core.end_round(rnd) for core in cores]
        now = time.time()
        for rec in records:
            rec.t_end = now
        result.round_records.extend(records)
        if on_round is not None:
            on_round(rnd, [rec.to_json() for rec in records])
    result.wall_s = time.perf_counter() - t_start
    return result
