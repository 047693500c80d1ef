"""dsgd (Lian et al. 2017) and dsgd-prox (FedProx made decentralised): full float32 models.

Round k at node i: `local_step` takes the SGD step(s) from x_i and keeps the local displacement
δ_i = x_i' - x_i (δ_i = -η ∇f_i(x_i) with one step), while x_i itself (the pre-step model) is what
is sent; `incoming` then mixes the models received this round with W (Metropolis-Hastings by
default, `mixing = "uniform"` for 1/(d_i+1)):

- dsgd:      x_i ← Σ_{j∈Ñ_i} W_ij x_j + δ_i
             (= Σ W_ij x_j - η ∇f_i(x_i): the gradient is taken before mixing)
- dsgd-prox: x_i ← x_i + δ_i - η μ (x_i - Σ_{j∈Ñ_i} W_ij x_j)
             (= x_i - η [∇f_i(x_i) + μ (x_i - Σ W_ij x_j)]); the neighbours' models in the
             proximal term are the ones received in this same round, i.e. their x_j at the
             start of round k, the same point the gradient is taken at. x_i stays personal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mcepl.node.algorithms.base import NodeContext, register_algorithm
from mcepl.node.algorithms.weights import (
    WeightAlgorithm,
    WeightParams,
    Weights,
    check_dense,
    decode_dense,
    dense_payload,
    weighted_sum,
)
from mcepl.protocol.payload import Payload
from mcepl.topology import mixing_weights

MIXINGS = ("metropolis", "uniform")


@dataclass
class DSGDParams(WeightParams):
    """lr: the rate the validation search chose on Fashion-MNIST (table1 at c = 3: 0.1 of 0.1,
    0.01, 0.001; the paper's CIFAR-10 choice is 0.01, Table I); W Metropolis-Hastings unless
    `mixing = "uniform"`."""

    lr: float = 0.1
    mixing: str = "metropolis"

    def validate(self) -> None:
        super().validate()
        if self.mixing not in MIXINGS:
            raise ValueError(f"mixing: {self.mixing!r} is not one of {', '.join(MIXINGS)}")


@dataclass
class DSGDProxParams(DSGDParams):
    """dsgd's parameters plus the proximal weight μ. The paper gives none; 0.001 won a sweep
    over {0.001, 0.01, 0.1, 1} (README, "dsgd-prox's μ"), by 0.0001 over 0.01. lr: the rate
    the validation search chose on Fashion-MNIST (table1 at c = 3: 0.01 of 0.1, 0.01, 0.001;
    0.1 diverged), the paper's CIFAR-10 choice too."""

    lr: float = 0.01
    mu: float = 0.001

    def validate(self) -> None:
        super().validate()
        if self.mu < 0:
            raise ValueError(f"mu: must be >= 0, got {self.mu}")


@register_algorithm
class DSGD(WeightAlgorithm):
    """Decentralised SGD: gossip-average full models with W, plus the local gradient step."""

    name = "dsgd"
    Params: ClassVar[type] = DSGDParams
    state_attrs: ClassVar[tuple[str, ...]] = ("delta",)

    def __init__(self, ctx: NodeContext, params: DSGDParams) -> None:
        super().__init__(ctx, params)
        w = mixing_weights(ctx.topology, params.mixing)
        self.coeffs = [float(w[ctx.node_id, j]) for j in self.neighborhood()]
        self.delta: Weights = {n: t.new_zeros(t.shape) for n, t in self.x.items()}

    def local_step(self, rnd: int) -> None:
        start = self.x
        self.train()
        self.delta = {n: self.x[n] - start[n] for n in start}
        self.x = start  # the pre-step model is what is sent and mixed

    def outgoing(self, rnd: int, phase: int) -> dict[int, Payload]:
        return self.broadcast(dense_payload(self.x))

    def check(self, rnd: int, phase: int, sender: int, payload: Payload) -> None:
        self.check_schedule(rnd, phase, sender)
        check_dense(payload, self.x)

    def mixed(self, msgs: dict[int, Payload]) -> Weights:
        """Σ_{j∈Ñ_i} W_ij x_j over the models received this round (own x_i included)."""
        me = self.ctx.node_id
        models = [self.x if j == me else decode_dense(msgs[j], self.x, self.ctx.device)
                  for j in self.neighborhood()]
        return weighted_sum(models, self.coeffs)

    def incoming(self, rnd: int, phase: int, msgs: dict[int, Payload]) -> None:
        mix = self.mixed(msgs)
        self.x = {n: mix[n] + self.delta[n] for n in mix}


@register_algorithm
class DSGDProx(DSGD):
    """dsgd-prox: a personal model pulled towards the neighbourhood mix by μ, never replaced."""

    name = "dsgd-prox"
    Params: ClassVar[type] = DSGDProxParams

    def incoming(self, rnd: int, phase: int, msgs: dict[int, Payload]) -> None:
        mix = self.mixed(msgs)
        step = self.params.lr * self.params.mu
        self.x = {n: self.x[n] + self.delta[n] - step * (self.x[n] - mix[n]) for n in mix}
