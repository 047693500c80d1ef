"""MCE-PL (Algorithm 1 of the paper) and its no-communication ablation ind-mask.

Each node keeps real scores `z` over the shared fixed weights `w` and learns a binary mask
m = Fil(Thres_r(|y|)). Only masks travel. The maths lives in `mcepl.node.masks`; this module
only sequences the five steps and keeps the state between iterations.

The float state (scores z, the step's gradient g, the neighbours' mean A) is updated in place,
with one scratch buffer per layer, so a step allocates nothing of a layer's size but the new
masks (which are sent, so never modified once made). `state_dict` copies what is updated in
place, so a checkpoint held in memory stays a snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mcepl.node import masks as M
from mcepl.node.algorithms.base import (
    Algorithm,
    MinibatchSampler,
    NodeContext,
    expect_tensors,
    register_algorithm,
)
from mcepl.node.batching import activation_bytes_per_sample, micro_batch_size, split
from mcepl.node.models import kaiming_uniform_like
from mcepl.protocol.payload import Payload

INIT_NEIGHBOR_MASKS = ("thres", "shared-random")


@dataclass
class MaskParams:
    """Hyper-parameters of the mask methods (paper defaults; the authors' code in comments)."""

    lr: float = 1.0  # η: chosen on Fashion-MNIST (results/table2); paper 1.0 (CIFAR-10); code 10
    lr_ft: float | None = None  # η_ft, None = η (code: 10)
    batch_size: int = 128
    weight_decay: float = 0.0  # on z (code: 5e-4)
    group_lasso: float = 0.001  # λ (code: left out of the loss, i.e. 0)
    fil_threshold: int = 0  # τ of Fil; 0 = off (authors' compiled code: 20)
    linear_retention: float | None = None  # None = r_i on every layer (code: 0.9 on linear)
    init_neighbor_masks: str = "thres"  # "thres": exchange Thres(|z0|) first; "shared-random"
    micro_batch: int | str = "auto"  # samples per forward/backward piece (mcepl.node.batching)

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
        if isinstance(self.micro_batch, str) and self.micro_batch != "auto" or \
                isinstance(self.micro_batch, int) and self.micro_batch <= 0:
            raise ValueError(f'micro_batch: must be a positive int or "auto", '
                             f"got {self.micro_batch!r}")
        if self.init_neighbor_masks not in INIT_NEIGHBOR_MASKS:
            raise ValueError(f"init_neighbor_masks: {self.init_neighbor_masks!r} is not one of "
                             f"{', '.join(INIT_NEIGHBOR_MASKS)}")


def masked_loss_grads(ctx: NodeContext, masks: dict[str, torch.Tensor], x: torch.Tensor,
                      y: torch.Tensor, micro_batch: int | None = None, *,
                      w: dict[str, torch.Tensor] | None = None
                      ) -> tuple[float, dict[str, torch.Tensor]]:
    """Cross-entropy of the model v = w ⊙ m on (x, y), and dL/dv for every masked layer.

    `w` is the node's fixed weights (`MaskedModel.fixed_weights`; default the shared w). With
    `micro_batch` < len(y) the batch goes through in pieces (bounded memory) whose summed losses
    and gradients make the same mean, up to float rounding.
    """
    model = ctx.model
    v = {n: t.detach().requires_grad_(True) for n, t in model.masked_weights(masks, w).items()}
    model.module.train()
    n = len(y)
    if micro_batch is None or micro_batch >= n:
        loss = F.cross_entropy(model.forward(x, v), y)
        grads = torch.autograd.grad(loss, list(v.values()))
        return float(loss.detach()), dict(zip(v, grads, strict=True))
    total = torch.zeros((), device=y.device)
    acc: list[torch.Tensor] = []
    for part in split(n, micro_batch):
        loss = F.cross_entropy(model.forward(x[part], v), y[part], reduction="sum") / n
        grads = torch.autograd.grad(loss, list(v.values()))
        if acc:
            for a, g in zip(acc, grads, strict=True):
                a.add_(g)
        else:
            acc = list(grads)
        total += loss.detach()
    return float(total), dict(zip(v, acc, strict=True))


@dataclass
class IndMaskParams(MaskParams):
    """ind-mask's: the rate the validation search chose on Fashion-MNIST (results/table2:
    0.1 over 1; the paper's CIFAR-10 choice is 1.0, MCE-PL's); the rest as MCE-PL's."""

    lr: float = 0.1


@register_algorithm
class IndMask(Algorithm):
    """ind-mask: MCE-PL's step 1 and m = Fil(Thres(|z|)); no neighbour, nothing sent."""

    name = "ind-mask"
    Params = IndMaskParams
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
        self.scratch = {n: torch.empty_like(self.z[n]) for n in self.layers}
        self.m = {n: self._mask(n, self.z[n], None) for n in self.layers}
        self.g: dict[str, torch.Tensor] = {}
        self.sampler = MinibatchSampler(len(ctx.shard.train_y), params.batch_size,
                                        ctx.generator(purpose=2))
        self.micro_batch = micro_batch_size(
            params.micro_batch, self.sampler.batch,
            activation_bytes_per_sample(model.module, ctx.shard.input_shape, dev), dev)
        self.last_loss: float | None = None

    def _retention(self, name: str) -> float:
        p = self.params
        if p.linear_retention is not None and self.ctx.model.is_linear(name):
            return p.linear_retention
        return self.ctx.retention

    def _mask(self, name: str, z: torch.Tensor, a: torch.Tensor | None) -> torch.Tensor:
        return M.mask_from_scores(z, self.r[name], self.params.fil_threshold, a,
                                  out=self.scratch[name])

    def phases(self, rnd: int) -> int:
        return 0

    def local_step(self, rnd: int) -> None:
        """Step 1: one minibatch, G = STE gradient (+ group lasso, weight decay), z -= η G."""
        p, ctx = self.params, self.ctx
        idx = self.sampler.next()
        x = ctx.shard.train_x[idx].to(ctx.device)
        y = ctx.shard.train_y[idx].to(ctx.device)
        loss, dl_dv = masked_loss_grads(ctx, self.m, x, y, self.micro_batch, w=self.w)
        self.last_loss = loss
        for n in self.layers:
            z, tmp = self.z[n], self.scratch[n]
            g = self.g.get(n)
            if g is None:
                g = self.g[n] = torch.empty_like(z)
            M.straight_through_grad(dl_dv[n], self.w[n], z, out=g, scratch=tmp)
            if p.group_lasso:
                g.add_(M.group_lasso_grad(z, out=tmp).mul_(p.group_lasso))
            if p.weight_decay:
                g.add_(torch.mul(z, p.weight_decay, out=tmp))
            z.sub_(torch.mul(g, p.lr, out=tmp))  # z - lr * g
        self.after_backprop()

    def after_backprop(self) -> None:
        self.m = {n: self._mask(n, self.z[n], None) for n in self.layers}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.ctx.model.module.eval()
        with torch.no_grad():
            return self.ctx.model.forward(x, self.ctx.model.masked_weights(self.m, self.w))

    def masks(self) -> dict[str, torch.Tensor]:
        return dict(self.m)

    def stats(self) -> dict[str, float]:
        kept = sum(int(m.sum()) for m in self.m.values())
        total = sum(m.numel() for m in self.m.values())
        out = {"density": kept / total}
        if self.last_loss is not None:
            out["train_loss"] = self.last_loss
        return out

    def state_dict(self) -> dict[str, Any]:
        # z and a_prev are updated in place: copies; masks are replaced, never modified
        return {"z": _copies(self.z), "m": dict(self.m), "a_prev": _copies(self.a_prev),
                "sampler": self.sampler.state_dict(),
                "last_loss": self.last_loss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        dev = self.ctx.device
        self.z = _copies(state["z"], dev)
        self.m = {n: t.to(dev) for n, t in state["m"].items()}
        self.a_prev = _copies(state["a_prev"], dev)
        self.sampler.load_state_dict(state["sampler"])
        self.last_loss = state["last_loss"]


@register_algorithm
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
        # A^(k) replaces A^(k-1) (step 2 of this round was its last use): same buffers
        a = {n: M.neighbor_mean([msgs[j].tensors[n] for j in order], self.z[n],
                                out=self.a_prev[n]) for n in self.layers}
        if rnd >= 1:
            lr_ft = self.params.lr if self.params.lr_ft is None else self.params.lr_ft
            for n in self.layers:
                M.fine_tune(self.z[n], self.g[n], a[n], lr_ft, out=self.z[n],
                            scratch=self.scratch[n])
            self.m = {n: self._mask(n, self.z[n], a[n]) for n in self.layers}
        self.a_prev = a

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "m_half": dict(self.m_half), "g": _copies(self.g)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        dev = self.ctx.device
        self.m_half = {n: t.to(dev) for n, t in state["m_half"].items()}
        self.g = _copies(state["g"], dev)


def _copies(tensors: dict[str, torch.Tensor],
            device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """Private copies (on `device` if given) of tensors that are then updated in place."""
    return {n: (t.to(device) if device is not None else t).clone() for n, t in tensors.items()}
