"""dispfl: Dis-PFL (Dai et al., ICML 2022), personalised sparse masks with drop-and-regrow.

Each node holds a mask of density r_i per masked layer (exactly K = keep_count(n, r_i) ones; the
initial mask is uniform at random per layer from the node's own generator, not ERK) and a sparse
model x_i = x_i ⊙ m_i. Round t, in this loop's order (aggregate is at the end of the previous
round, which is the start of this one in Dis-PFL's own order):

1. local SGD (`local_steps` minibatches), the mask re-applied after each step;
2. drop a fraction α_t = α0/2 · (1 + cos(π t / T)) (ceil, as Dis-PFL's code) of each layer's
   active weights with the smallest |w|, and regrow as many inactive ones (the just-dropped
   included) with the largest |gradient| (the dense gradient of the last local step, no extra
   minibatch) or at random (`regrow = "random"`); every regrown weight starts at 0, so the
   density stays exactly K per layer;
3. send the sparse model (mask + kept values, biases dense) to every neighbour;
4. aggregate on the own mask: each kept entry averaged over the nodes of Ñ_i whose mask keeps it
   (biases plainly over Ñ_i). This aggregated personal model is what is evaluated.
T = ctx.total_rounds; α0 = 0.5 gives the spec's 0.25 (1 + cos(π t / T)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from mcepl.node.algorithms.base import NodeContext, register_algorithm
from mcepl.node.algorithms.weights import (
    Masks,
    SparseWeightAlgorithm,
    WeightParams,
    Weights,
    apply_masks,
    cosine_anneal,
    keep_count,
    keep_top,
)
from mcepl.protocol.payload import Payload

REGROW = ("gradient", "random")
MASK_PURPOSE = 3
REGROW_PURPOSE = 4


@dataclass
class DisPFLParams(WeightParams):
    """Paper lr 0.001 (Table II); Dis-PFL's anneal factor 0.5 and gradient regrowth."""

    lr: float = 0.001
    anneal: float = 0.5  # α0 of the cosine-annealed drop fraction
    regrow: str = "gradient"

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.anneal <= 1.0:
            raise ValueError(f"anneal: must be in [0, 1], got {self.anneal}")
        if self.regrow not in REGROW:
            raise ValueError(f"regrow: {self.regrow!r} is not one of {', '.join(REGROW)}")


def random_mask(shape: torch.Size, r: float, generator: torch.Generator,
                device: torch.device) -> torch.Tensor:
    """Exactly keep_count(n, r) ones at uniformly random places."""
    n = math.prod(shape)
    idx = torch.randperm(n, generator=generator)[:keep_count(n, r)]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[idx] = True
    return mask.reshape(shape).to(device)


def drop_and_regrow(x: Weights, m: Masks, scores: Weights, frac: float) -> tuple[Weights, Masks]:
    """Per layer: drop ceil(frac · active) smallest-|x| active entries, regrow as many inactive
    ones with the largest `scores` (>= 0), set regrown entries to 0. Density is unchanged."""
    new_m: Masks = {}
    x = dict(x)
    for n, mask in m.items():
        active = int(mask.sum())
        k = min(active, math.ceil(frac * active))
        kept = keep_top(x[n].abs().masked_fill(~mask, -1.0), active - k)
        grow = keep_top(scores[n].masked_fill(kept, -1.0), k)
        new_m[n] = kept | grow
        x[n] = x[n].masked_fill(grow, 0.0)
    return apply_masks(x, new_m), new_m


@register_algorithm
class DisPFL(SparseWeightAlgorithm):
    """Sparse personalised models: partial averaging on the own mask, drop-and-regrow."""

    name = "dispfl"
    Params: ClassVar[type] = DisPFLParams

    def __init__(self, ctx: NodeContext, params: DisPFLParams) -> None:
        super().__init__(ctx, params)
        gen = ctx.generator(purpose=MASK_PURPOSE)
        self.m = {n: random_mask(self.x[n].shape, ctx.retention, gen, ctx.device)
                  for n in self.layers}
        self.x = apply_masks(self.x, self.m)
        self.regrow_gen = ctx.generator(purpose=REGROW_PURPOSE)

    def local_step(self, rnd: int) -> None:
        grads = self.train()
        frac = cosine_anneal(self.params.anneal, rnd, self.ctx.total_rounds)
        if self.params.regrow == "gradient":
            scores = {n: grads[n].abs() for n in self.layers}
        else:
            scores = {n: torch.rand(self.m[n].shape, generator=self.regrow_gen)
                      .to(self.ctx.device) for n in self.layers}
        self.x, self.m = drop_and_regrow(self.x, self.m, scores, frac)

    def incoming(self, rnd: int, phase: int, msgs: dict[int, Payload]) -> None:
        self.x = apply_masks(self.partial_average(self.received(msgs)), self.m)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "regrow_gen": self.regrow_gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.regrow_gen.set_state(state["regrow_gen"])
