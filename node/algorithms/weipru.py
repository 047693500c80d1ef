"""The weight-pruning baselines of Table II: ind-weipru, avr-weipru, par-weipru.

Every node trains all weights by SGD and keeps, per masked layer, only the K = keep_count(n, r_i)
largest |w| (Thres_{r_i}); the pruning runs after every SGD step (the dense gradient lets a pruned
entry come back if it grows past the threshold) and once on the initial model, so the evaluated
model always has density r_i. The three differ in the exchange:

- ind-weipru: nothing is sent;
- avr-weipru: the pruned model is sent (sparse: mask + kept values); x_i ← plain mean over Ñ_i of
  the models, pruned zeros included, then re-pruned to r_i;
- par-weipru: the same message; each entry is averaged only over the nodes of Ñ_i whose mask
  keeps it (0 where none does), then re-pruned to r_i.
Biases are never pruned and are averaged plainly over Ñ_i by both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mcepl.node.algorithms.base import NodeContext, register_algorithm
from mcepl.node.algorithms.weights import (
    SparseWeightAlgorithm,
    WeightParams,
    Weights,
    apply_masks,
    prune,
    weighted_sum,
)
from mcepl.protocol.payload import Payload


@dataclass
class WeiPruParams(WeightParams):
    """lr: the rate the validation search chose on Fashion-MNIST for all three (results/table2:
    0.1 of 0.1, 0.01, 0.001); the paper's CIFAR-10 choice is 0.001 (Table II)."""

    lr: float = 0.1


@register_algorithm
class IndWeiPru(SparseWeightAlgorithm):
    """ind-weipru: local SGD with magnitude pruning to r_i after every step; no exchange."""

    name = "ind-weipru"
    Params: ClassVar[type] = WeiPruParams

    def __init__(self, ctx: NodeContext, params: WeiPruParams) -> None:
        super().__init__(ctx, params)
        self.project()

    def project(self) -> None:
        """Re-prune: the mask follows the weights' magnitudes."""
        self.m = prune(self.x, self.layers, self.ctx.retention)
        self.x = apply_masks(self.x, self.m)

    def phases(self, rnd: int) -> int:
        return 0


@register_algorithm
class AvrWeiPru(IndWeiPru):
    """avr-weipru: plain average of the pruned models over Ñ_i, then re-prune."""

    name = "avr-weipru"

    def phases(self, rnd: int) -> int:
        return 1 if rnd >= 1 else 0

    def merge(self, msgs: dict[int, Payload]) -> Weights:
        models = [w for w, _ in self.received(msgs)]
        return weighted_sum(models, [1.0 / len(models)] * len(models))

    def incoming(self, rnd: int, phase: int, msgs: dict[int, Payload]) -> None:
        self.x = self.merge(msgs)
        self.project()


@register_algorithm
class ParWeiPru(AvrWeiPru):
    """par-weipru: each entry averaged over the nodes that keep it, then re-prune."""

    name = "par-weipru"

    def merge(self, msgs: dict[int, Payload]) -> Weights:
        return self.partial_average(self.received(msgs))
