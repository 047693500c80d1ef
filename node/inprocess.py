"""Run every node of a network in this one process, round by round, messages passed in memory.

It is the reference the networked runtime must match number for number, and the fastest way to
test an algorithm. Messages still go through the wire encoder and decoder, so the byte counts are
those the sockets would carry (minus ZeroMQ's own framing).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from mcepl.config import Config
from mcepl.node.algorithms import Algorithm
from mcepl.node.evaluation import accuracy, is_eval_round
from mcepl.node.factory import all_shards, build_algorithm, default_run_id
from mcepl.protocol import (
    CodecState,
    decode_message,
    encode_payload,
    format_peer_bytes,
    mask_wire_stats,
    message_size,
    zmtp_framing,
)
from mcepl.topology import Topology

RoundCallback = Callable[[int, list[dict[str, Any]]], None]


@dataclass
class InProcessResult:
    records: list[dict[str, Any]] = field(default_factory=list)
    algorithms: list[Algorithm] = field(default_factory=list)
    wall_s: float = 0.0

    def mean_acc(self, rnd: int) -> float:
        accs = [r["test_acc"] for r in self.records if r["round"] == rnd and "test_acc" in r]
        return sum(accs) / len(accs) if accs else float("nan")


def run_inprocess(cfg: Config, topo: Topology, *, run_id: str | None = None,
                  on_round: RoundCallback | None = None) -> InProcessResult:
    """Train every node of `topo` for `cfg.run.rounds` rounds; one record per node per round."""
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.run.threads_per_node)  # as each node process does
    try:
        return _run(cfg, topo, run_id or default_run_id(cfg, topo), on_round)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: Config, topo: Topology, run_id: str,
         on_round: RoundCallback | None) -> InProcessResult:
    t_start = time.perf_counter()
    shards = all_shards(cfg, topo)
    algos = [build_algorithm(cfg, topo, n.id, shards[n.id]) for n in topo.nodes]
    result = InProcessResult(algorithms=algos)
    rounds = cfg.run.rounds
    # the mask codec's per-link state, one per ordered pair and direction, as the nodes hold it
    tx: dict[tuple[int, int], CodecState] = defaultdict(CodecState)
    rx: dict[tuple[int, int], CodecState] = defaultdict(CodecState)
    for rnd in range(rounds + 1):
        stats = [{"bytes_sent": 0, "bytes_received": 0, "msgs_sent": 0, "msgs_received": 0,
                  "mask_entries": 0, "mask_bytes": 0, "compute_s": 0.0, "encode_s": 0.0,
                  "decode_s": 0.0} for _ in algos]
        peers: list[dict[tuple[int, str], list[int]]] = [defaultdict(lambda: [0, 0, 0])
                                                         for _ in algos]
        if rnd >= 1:
            for i, algo in enumerate(algos):
                t0 = time.perf_counter()
                algo.local_step(rnd)
                stats[i]["compute_s"] += time.perf_counter() - t0
        n_phases = {algo.phases(rnd) for algo in algos}
        if len(n_phases) != 1:
            raise RuntimeError(f"round {rnd}: nodes disagree on the number of phases {n_phases}")
        for phase in range(n_phases.pop()):
            inbox: list[dict[int, Any]] = [{} for _ in algos]
            for i, algo in enumerate(algos):
                t0 = time.perf_counter()
                out = algo.outgoing(rnd, phase)
                stats[i]["compute_s"] += time.perf_counter() - t0
                for j, payload in sorted(out.items()):
                    t0 = time.perf_counter()
                    frames = encode_payload(payload, run_id=run_id, round=rnd, phase=phase,
                                            sender=i, mask_codec=cfg.run.codec, state=tx[i, j])
                    t1 = time.perf_counter()
                    msg = decode_message(frames, run_id=run_id, state=rx[i, j])
                    stats[j]["decode_s"] += time.perf_counter() - t1
                    stats[i]["encode_s"] += t1 - t0
                    size = message_size(frames)
                    entries, nbytes = mask_wire_stats(payload, frames)
                    stats[i]["mask_entries"] += entries
                    stats[i]["mask_bytes"] += nbytes
                    stats[i]["bytes_sent"] += size
                    stats[i]["msgs_sent"] += 1
                    stats[j]["bytes_received"] += size
                    stats[j]["msgs_received"] += 1
                    sent, got = peers[i][j, "data"], peers[j][i, "data"]
                    sent[0] += size
                    sent[2] += zmtp_framing(frames)
                    got[1] += size
                    inbox[j][i] = msg.payload
            for i, algo in enumerate(algos):
                want = set(algo.expected(rnd, phase))
                if set(inbox[i]) != want:
                    raise RuntimeError(f"round {rnd} phase {phase}: node {i} expected messages "
                                       f"from {sorted(want)}, got {sorted(inbox[i])}")
                t0 = time.perf_counter()
                for j, payload in inbox[i].items():
                    algo.check(rnd, phase, j, payload)
                algo.incoming(rnd, phase, inbox[i])
                stats[i]["compute_s"] += time.perf_counter() - t0
        records = []
        for i, algo in enumerate(algos):
            rec: dict[str, Any] = {"round": rnd, "node": i, **stats[i], **algo.stats()}
            for key in ("encode_s", "decode_s"):
                rec[key] = round(rec[key], 6)
            if rec["mask_entries"]:
                rec["bits_per_entry"] = 8 * rec["mask_bytes"] / rec["mask_entries"]
            if peers[i]:
                rec["peer_bytes"] = format_peer_bytes({k: tuple(v) for k, v in peers[i].items()})
            if is_eval_round(rnd, cfg.run.eval_every, rounds):
                sh = shards[i]
                rec["test_acc"] = accuracy(algo.predict, sh.test_x, sh.test_y,
                                           cfg.run.eval_batch_size, algo.ctx.device)
            records.append(rec)
        now = time.time()
        for rec in records:
            rec["t_end"] = now
        result.records.extend(records)
        if on_round is not None:
            on_round(rnd, records)
    result.wall_s = time.perf_counter() - t_start
    return result
