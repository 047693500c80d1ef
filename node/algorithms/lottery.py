"""lottery-dsgd: LotteryFL (Li et al., "LotteryFL: Personalized and Communication-Efficient
Federated Learning with Lottery Ticket Hypothesis on Non-IID Datasets", arXiv:2008.03371, 2020)
made decentralised.

Each node trains w_i ⊙ m_i by SGD (mask starts all ones, pruned entries stay 0) and prunes its
way towards its own retention r_i, lottery-ticket style. A round follows LotteryFL's client
update (its Algorithm 1: evaluate the received model, maybe prune and reset, THEN train, then
upload), with the neighbourhood average in place of the server's:

1. Accuracy test: the accuracy of the model the node starts the round with (the one aggregated
   last round) on the round's first training minibatch, which is then also the first SGD step's
   minibatch: LotteryFL's "accuracy of the received model on local data", with a 128-sample
   estimate instead of a held-out split.
2. Trigger: that accuracy > `acc_threshold` and some layer still keeps more than its target
   K = keep_count(n, r_i). At most one pruning event per round.
3. Pruning of the received model: per layer still above K, remove `prune_rate` (20%) of the kept
   entries (at least one) with the smallest |w|, never going below K.
4. Lottery reset: every tensor (masked weights and biases) goes back to the shared initial model,
   masked by the new mask.
5. Local training: `local_steps` SGD minibatches on the (possibly reset) ticket, pruned entries
   kept at 0. The TRAINED ticket is what is sent this round (masked weights as a sparse payload,
   mask + kept values, biases dense).
6. Aggregation: each kept entry averaged over the nodes of Ñ_i whose mask keeps it (own included,
   so an entry only this node keeps stays its own); biases plainly over Ñ_i; then re-masked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from mcepl.node.algorithms.base import NodeContext, register_algorithm
from mcepl.node.algorithms.weights import (
    Masks,
    SparseWeightAlgorithm,
    WeightParams,
    Weights,
    apply_masks,
    keep_count,
    keep_top,
)
from mcepl.protocol.payload import Payload


@dataclass
class LotteryParams(WeightParams):
    """lr: the rate the validation search chose on Fashion-MNIST (table1 at c = 3, r = 0.3: 0.1
    of 0.1, 0.01, 0.001), the paper's CIFAR-10 choice too; LotteryFL's 20% prune rate; the
    accuracy threshold is ours (0.5)."""

    lr: float = 0.1
    acc_threshold: float = 0.5
    prune_rate: float = 0.2

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.acc_threshold <= 1.0:
            raise ValueError(f"acc_threshold: must be in [0, 1], got {self.acc_threshold}")
        if not 0.0 < self.prune_rate < 1.0:
            raise ValueError(f"prune_rate: must be in (0, 1), got {self.prune_rate}")


def lottery_prune(x: Weights, m: Masks, r: float, rate: float) -> tuple[Masks, bool]:
    """Remove `rate` of each layer's kept entries by |x| (>= 1, never below keep_count(n, r)).

    Returns the new masks and whether anything was pruned.
    """
    out, changed = {}, False
    for n, mask in m.items():
        count, target = int(mask.sum()), keep_count(mask.numel(), r)
        if count <= target:
            out[n] = mask
            continue
        keep = max(target, count - max(1, math.floor(rate * count)))
        scores = x[n].abs().masked_fill(~mask, -1.0)
        out[n], changed = keep_top(scores, keep), True
    return out, changed


@register_algorithm
class LotteryDSGD(SparseWeightAlgorithm):
    """Masked weight SGD, magnitude pruning with lottery resets, partial averaging."""

    name = "lottery-dsgd"
    Params: ClassVar[type] = LotteryParams
    state_attrs: ClassVar[tuple[str, ...]] = ("m", "prune_events")

    def __init__(self, ctx: NodeContext, params: LotteryParams) -> None:
        super().__init__(ctx, params)
        self.init = {n: t.clone() for n, t in self.x.items()}  # the shared initial model
        self.prune_events = 0

    def above_target(self) -> bool:
        r = self.ctx.retention
        return any(int(m.sum()) > keep_count(m.numel(), r) for m in self.m.values())

    def local_accuracy(self, idx: torch.Tensor) -> float:
        """Accuracy of the current (received) model on the minibatch `idx`."""
        ctx = self.ctx
        xb, yb = ctx.shard.train_x[idx].to(ctx.device), ctx.shard.train_y[idx].to(ctx.device)
        return float((self.predict(xb).argmax(dim=1) == yb).float().mean())

    def local_step(self, rnd: int) -> None:
        """Test the received model, maybe prune it and reset to the initial ticket, then train."""
        idx = self.sampler.next()
        if self.local_accuracy(idx) > self.params.acc_threshold and self.above_target():
            self.m, changed = lottery_prune(self.x, self.m, self.ctx.retention,
                                            self.params.prune_rate)
            if changed:
                self.x = apply_masks({n: t.clone() for n, t in self.init.items()}, self.m)
                self.prune_events += 1
        self.train(first=idx)

    def incoming(self, rnd: int, phase: int, msgs: dict[int, Payload]) -> None:
        self.x = apply_masks(self.partial_average(self.received(msgs)), self.m)

    def stats(self) -> dict[str, float]:
        return {**super().stats(), "prune_events": float(self.prune_events)}
