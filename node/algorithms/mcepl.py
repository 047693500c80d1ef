"""MCE-PL (Algorithm 1 of the paper) and its no-communication ablation ind-mask.

Each node keeps real scores `z` over the shared fixed weights `w` and learns a binary mask
m = Fil(Thres_r(|y|)). Only masks travel. The maths lives in `mcepl.node.masks`; this module
only sequences the five steps and keeps the state between iterations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mcepl.node import masks as M
from mcepl.node.algorithms.base import Algorithm, MinibatchSampler, NodeContext, expect_tensors
from mcepl.node.models import kaiming_uniform_like
from mcepl.protocol.payload import Payload

INIT_NEIGHBOR_MASKS = ("thres", "shared-random")


@dataclass
class MaskParams:
    """Hyper-parameters of the mask methods (paper defaults; the authors' code in comments)."""

    lr: float = 1.0  # η (paper 1.0; code 10)
    lr_ft: float | None = None  # η_ft, None = η (code: 10)
    batch_size: int = 128
    weight_decay: float = 0.0  # on z (code: 5e-4)
    group_lasso: float = 0.001  # λ (code: left out of the loss, i.e. 0)
    fil_threshold: int = 0  # τ of Fil; 0 = off (authors' compiled code: 20)
    linear_retention: float | None = None  # None = r_i on every layer (code: 0.9 on linear)
    init_neighbor_masks: str = "thres"  # "thres": exchange Thres(|z0|) first; "shared-random"

    def validate(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if self.lr_ft is not None and self.lr_ft < 0:
            raise ValueError(f"lr_ft: must be >= 0, got {self.lr_ft}")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size: must be > 0, got {self.batch_size}")
        if self.weight_decay < 0 or self.group_lasso < 0:
            raise ValueError("weight_decay/group_lasso: must be >= 0")
        if self.fil_threshold < 0:
            raise ValueError(f"fil_threshold: must be >= 0, got {self.fil_threshold}")
        if self.linear_retention is not None and not 0 < self.linear_retention <= 1:
            raise ValueError(f"linear_retention: must be in (0, 1], got {self.linear_retention}")
        if self.init_neighbor_masks not in INIT_NEIGHBOR_MASKS:
            raise ValueError(f"init_neighbor_masks: {self.init_neighbor_masks!r} is not one of "
                             f"{', '.join(INIT_NEIGHBOR_MASKS)}")


def masked_loss_grads(ctx: NodeContext, w: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                      x: torch.Tensor, y: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
    """Cross-entropy of the model v = w ⊙ m on (x, y), and dL/dv for every masked layer."""
    model = ctx.model
    v = {n: t.detach().requires_grad_(True) for n, t in model.masked_weights(masks, w).items()}
    model.module.train()
    loss = F.cross_entropy(model.forward(x, v), y)
    grads = torch.autograd.grad(loss, list(v.values()))
    return float(loss.detach()), dict(zip(v, grads, strict=True))


class IndMask(Algorithm):
    """ind-mask: MCE-PL's step 1 and m = Fil(Thres(|z|)); no neighbour, nothing sent."""

    name = "ind-mask"
    Params = MaskParams
    uses_neighbors = False

    def __init__(self, ctx: NodeContext, params: MaskParams) -> None:
        super().__init__(ctx, params)
        model, dev = ctx.model, ctx.device
        gen = ctx.generator(purpose=1)
        self.layers = list(model.names)
        self.z = {n: kaiming_uniform_like(model.w[n], gen).to(dev) for n in self.layers}
        self.r = {n: self._retention(n) for n in self.layers}
        # the node's fixed weights: the shared w, scaled by 1/sqrt(r) under a "-scaled" init
        self.w = model.fixed_weights(self.r)
        self.a_prev = {n: torch.zeros_like(self.z[n]) for n in self.layers}
        self.m = {n: self._mask(n, self.z[n], None) for n in self.layers}
        self.g: dict[str, torch.Tensor] = {}
        self.sampler = MinibatchSampler(len(ctx.shard.train_y), params.batch_size,
                                        ctx.generator(purpose=2))
        self.last_loss: float | None = None

    def _retention(self, name: str) -> float:
        p = self.params
        if p.linear_retention is not None and self.ctx.model.is_linear(name):
            return p.linear_retention
        return self.ctx.retention

    def _mask(self, name: str, z: torch.Tensor, a: torch.Tensor | None) -> torch.Tensor:
        return M.mask_from_scores(z, self.r[name], self.params.fil_threshold, a)

    def phases(self, rnd: int) -> int:
        return 0

    def local_step(self, rnd: int) -> None:
        """Step 1: one minibatch, G = STE gradient (+ group lasso, weight decay), z -= η G."""
        p, ctx = self.params, self.ctx
        idx = self.sampler.next()
        x = ctx.shard.train_x[idx].to(ctx.device)
        y = ctx.shard.train_y[idx].to(ctx.device)
        loss, dl_dv = masked_loss_grads(ctx, self.w, self.m, x, y)
        self.last_loss = loss
        for n in self.layers:
            z = self.z[n]
            g = M.straight_through_grad(dl_dv[n], self.w[n], z)
            if p.group_lasso:
                g = g + p.group_lasso * M.group_lasso_grad(z)
            if p.weight_decay:
                g = g + p.weight_decay * z
            self.g[n] = g
            self.z[n] = z - p.lr * g
        self.after_backprop()

    def after_backprop(self) -> None:
        self.m = {n: self._mask(n, self.z[n], None) for n in self.layers}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.ctx.model.module.eval()
        with torch.no_grad():
            return self.ctx.model.forward(x, self.ctx.model.masked_weights(self.m, self.w))

    def stats(self) -> dict[str, float]:
        kept = sum(int(m.sum()) for m in self.m.values())
        total = sum(m.numel() for m in self.m.values())
        out = {"density": kept / total}
        if self.last_loss is not None:
            out["train_loss"] = self.last_loss
        return out

    def state_dict(self) -> dict[str, Any]:
        # shallow copies: the tensors are replaced, never modified, as training goes on
        return {"z": dict(self.z), "m": dict(self.m), "a_prev": dict(self.a_prev),
                "sampler": self.sampler.state_dict(),
                "last_loss": self.last_loss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        dev = self.ctx.device
        self.z = {n: t.to(dev) for n, t in state["z"].items()}
        self.m = {n: t.to(dev) for n, t in state["m"].items()}
        self.a_prev = {n: t.to(dev) for n, t in state["a_prev"].items()}
        self.sampler.load_state_dict(state["sampler"])
        self.last_loss = state["last_loss"]


class MCEPL(IndMask):
    """MCE-PL: masks aggregated through the aggregation tensor, plus personalised fine-tuning."""

    name = "mcepl"
    Params = MaskParams

    def __init__(self, ctx: NodeContext, params: MaskParams) -> None:
        super().__init__(ctx, params)
        self.m_half: dict[str, torch.Tensor] = {}
        if params.init_neighbor_masks == "shared-random":
            self.a_prev = self._shared_random_masks()

    def _shared_random_masks(self) -> dict[str, torch.Tensor]:
        """The authors' code: one random mask for everyone (Bernoulli 0.3 conv, 0.9 linear)."""
        gen = torch.Generator()
        gen.manual_seed(self.ctx.seed + 7)
        out = {}
        for n in self.layers:
            prob = 0.9 if self.ctx.model.is_linear(n) else 0.3
            draw = torch.rand(self.z[n].shape, generator=gen) < prob
            out[n] = draw.to(torch.float32).to(self.ctx.device)
        return out

    def phases(self, rnd: int) -> int:
        if rnd == 0:
            return 1 if self.params.init_neighbor_masks == "thres" else 0
        return 1

    def after_backprop(self) -> None:
        """Step 2: the intermediate mask from z^(k-1/2) and the previous neighbour masks."""
        self.m_half = {n: self._mask(n, self.z[n], self.a_prev[n]) for n in self.layers}

    def _mask_payload(self, masks: dict[str, torch.Tensor]) -> Payload:
        return Payload("mask", {n: masks[n].cpu() for n in self.layers})

    def outgoing(self, rnd: int, phase: int) -> dict[int, Payload]:
        """Step 3 (send): m^(k-1/2), or the initial mask m^(0) in set-up round 0."""
        return self.broadcast(self._mask_payload(self.m if rnd == 0 else self.m_half))

    def check(self, rnd: int, phase: int, sender: int, payload: Payload) -> None:
        expect_tensors(payload, "mask",
                       {n: (tuple(self.z[n].shape), torch.bool) for n in self.layers})

    def incoming(self, rnd: int, phase: int, msgs: dict[int, Payload]) -> None:
        """Steps 3 (receive), 4 and 5."""
        order = sorted(msgs)
        a = {n: M.neighbor_mean([msgs[j].tensors[n] for j in order], self.z[n])
             for n in self.layers}
        if rnd >= 1:
            lr_ft = self.params.lr if self.params.lr_ft is None else self.params.lr_ft
            for n in self.layers:
                self.z[n] = M.fine_tune(self.z[n], self.g[n], a[n], lr_ft)
            self.m = {n: self._mask(n, self.z[n], a[n]) for n in self.layers}
        self.a_prev = a

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "m_half": dict(self.m_half), "g": dict(self.g)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        dev = self.ctx.device
        self.m_half = {n: t.to(dev) for n, t in state["m_half"].items()}
        self.g = {n: t.to(dev) for n, t in state["g"].items()}
