"""dispfl: Dis-PFL (Dai et al., "DisPFL: Towards Communication-Efficient Personalized Federated
Learning via Decentralized Sparse Training", ICML 2022), personalised sparse masks with
drop-and-regrow, in the update order of the official code (github.com/rong-dai/DisPFL,
`fedml_api/standalone/DisPFL`: `dispfl_api.train`, `_aggregate_func`, `client.train`,
`fire_mask`, `regrow_mask`).

Each node holds a mask m_i of density r_i per masked layer (exactly K = keep_count(n, r_i) ones;
the initial mask is uniform at random per layer from the node's own generator, the code's
`--uniform` option rather than ERK) and a sparse model x_i = x_i ⊙ m_i. Round t of this loop
(t = 1..T; the code's round index is t - 1):

1. local training: `local_steps` SGD minibatches on x_i, the mask m_i re-applied after each step;
   call the trained model x̂_i and its mask m̂_i = m_i (the "old" mask);
2. mask update, once per round after the local steps (the code's `fire_mask` + `regrow_mask`):
   drop the ceil(α_t · active) active entries with the smallest |x̂_i|, α_t = α0/2 · (1 +
   cos(π (t-1) / T)), and regrow as many inactive entries (the just-dropped ones included) with
   the largest |∇f_i(x̂_i)|, the dense gradient at the trained model on a fresh minibatch (the
   code's `screen_gradients`), or uniformly at random (`regrow = "random"`); that is the new mask
   m_i. x̂_i itself is not changed: it keeps its trained values on the old mask;
3. send x̂_i with the OLD mask m̂_i (its kept values, biases dense) to every neighbour;
4. aggregate on the new mask: every entry averaged over the nodes of Ñ_i whose old mask keeps it
   (the code's `count_mask` over `mask_pers_shared`), biases plainly over Ñ_i, then x_i =
   average ⊙ m_i. A kept entry is averaged with the trained values of everyone who had it; a
   regrown entry takes the average of the neighbours that had it (0 if none did); a dropped entry
   is 0. This aggregated personal model is what the next round trains and what is evaluated (the
   code's `local_test(w_local_mdl)` before training).
T = ctx.total_rounds; α0 = `anneal` = 0.5 gives the spec's 0.25 (1 + cos(π t / T)).
Not reproduced from the official code (every method here follows the MCE-PL paper's protocol of
plain SGD, one minibatch per iteration): its 5 local epochs (`local_steps`), momentum, weight
decay (`weight_decay`), learning-rate decay and gradient-norm clipping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from mcepl.node.algorithms.base import MinibatchSampler, NodeContext, register_algorithm
from mcepl.node.algorithms.weights import (
    Masks,
    SparseWeightAlgorithm,
    WeightParams,
    Weights,
    apply_masks,
    cosine_anneal,
    keep_count,
    keep_top,
    loss_and_grads,
)
from mcepl.protocol.payload import Payload

REGROW = ("gradient", "random")
MASK_PURPOSE = 3
REGROW_PURPOSE = 4
SCREEN_PURPOSE = 5  # the minibatch stream of the regrowth gradient (not the training one)


@dataclass
class DisPFLParams(WeightParams):
    """lr: the rate the validation search chose on Fashion-MNIST (results/table2: 0.1 of 0.1,
    0.01, 0.001; the paper's CIFAR-10 choice is 0.001, Table II); Dis-PFL's anneal factor 0.5
    and gradient regrowth."""

    lr: float = 0.1
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


def fire_and_regrow(x: Weights, m: Masks, scores: Weights, frac: float) -> Masks:
    """Dis-PFL's mask update, per layer: drop the ceil(frac · active) active entries with the
    smallest |x|, then regrow as many entries that are inactive after the drop (the dropped
    ones included) with the largest `scores` (>= 0). Density is unchanged; `x` is not touched.
    Ties go to the lower flat index."""
    new_m: Masks = {}
    for n, mask in m.items():
        active = int(mask.sum())
        k = min(active, math.ceil(frac * active))
        kept = keep_top(x[n].abs().masked_fill(~mask, -1.0), active - k)
        grow = keep_top(scores[n].masked_fill(kept, -1.0), k)
        new_m[n] = kept | grow
    return new_m


@register_algorithm
class DisPFL(SparseWeightAlgorithm):
    """Sparse personalised models: partial averaging on the own mask, drop-and-regrow."""

    name = "dispfl"
    Params: ClassVar[type] = DisPFLParams
    state_attrs: ClassVar[tuple[str, ...]] = ("m", "m_sent")

    def __init__(self, ctx: NodeContext, params: DisPFLParams) -> None:
        super().__init__(ctx, params)
        gen = ctx.generator(purpose=MASK_PURPOSE)
        self.m = {n: random_mask(self.x[n].shape, ctx.retention, gen, ctx.device)
                  for n in self.layers}
        s = ctx.model.scale(ctx.retention)  # a random mask keeps a fraction r of each layer
        self.x = apply_masks({n: t * s if n in self.m else t for n, t in self.x.items()},
                             self.m)
        self.m_sent: Masks = dict(self.m)  # the mask the trained model lives on
        self.regrow_gen = ctx.generator(purpose=REGROW_PURPOSE)
        self.screen = MinibatchSampler(len(ctx.shard.train_y), params.batch_size,
                                       ctx.generator(purpose=SCREEN_PURPOSE))

    def regrow_scores(self) -> Weights:
        """|dense gradient| at the trained model on a fresh minibatch, or uniform noise."""
        ctx = self.ctx
        if self.params.regrow == "random":
            return {n: torch.rand(self.m[n].shape, generator=self.regrow_gen).to(ctx.device)
                    for n in self.layers}
        idx = self.screen.next()
        xb, yb = ctx.shard.train_x[idx].to(ctx.device), ctx.shard.train_y[idx].to(ctx.device)
        grads = loss_and_grads(ctx.model, self.x, xb, yb)[2]
        return {n: grads[n].abs() for n in self.layers}

    def local_step(self, rnd: int) -> None:
        self.train()  # step 1: masked SGD on the aggregated model
        self.m_sent = self.m
        frac = cosine_anneal(self.params.anneal, rnd - 1, self.ctx.total_rounds)
        self.m = fire_and_regrow(self.x, self.m, self.regrow_scores(), frac)  # step 2

    def sent_masks(self) -> Masks:
        return self.m_sent

    def incoming(self, rnd: int, phase: int, msgs: dict[int, Payload]) -> None:
        self.x = apply_masks(self.partial_average(self.received(msgs)), self.m)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "regrow_gen": self.regrow_gen.get_state(),
                "screen": self.screen.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.regrow_gen.set_state(state["regrow_gen"])
        self.screen.load_state_dict(state["screen"])
