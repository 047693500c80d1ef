"""What every weight-based baseline shares: the SGD trainer, payload codecs, averaging, pruning.

The baselines (dsgd, fedavg, dsgd-prox, lottery-dsgd, the weipru family, dispfl) train ALL the
module's tensors (masked-layer weights and biases) from the shared initial model, one minibatch
per SGD step. They differ only in what they send and how they merge, so everything else lives
here once: `WeightAlgorithm` (state, trainer, predict, stats, checkpoint), the pure update maths
(`sgd_step`, `weighted_sum`, `partial_average`, `keep_top`, `prune`), and the two payload forms:

- dense ("model"): one float32 tensor per parameter, named after it;
- sparse ("sparse-model"): per masked layer `<name>.mask` (bool, bit-packed on the wire) and
  `<name>.values` (1-D float32, the kept entries in row-major order); other tensors dense.
  That is what a careful implementation of a pruned model puts on the wire: 1 bit per entry of
  index cost plus 32 bits per kept value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from mcepl.node import masks as M
from mcepl.node.algorithms.base import Algorithm, MinibatchSampler, NodeContext, expect_tensors
from mcepl.node.models import MaskedModel
from mcepl.protocol.payload import Payload

Weights = dict[str, torch.Tensor]
Masks = dict[str, torch.Tensor]

DENSE_KIND = "model"
SPARSE_KIND = "sparse-model"
SAMPLER_PURPOSE = 2  # same minibatch stream as the mask methods (mcepl uses purpose 2 too)


# ---- hyper-parameters ----------------------------------------------------------------------------
@dataclass
class WeightParams:
    """Hyper-parameters every weight method has; subclasses override the `lr` default."""

    lr: float = 0.01  # η of plain SGD
    batch_size: int = 128
    weight_decay: float = 0.0  # L2 on every trained tensor, added to the gradient
    local_steps: int = 1  # SGD steps (one minibatch each) per round

    def validate(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size: must be > 0, got {self.batch_size}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: must be >= 0, got {self.weight_decay}")
        if self.local_steps <= 0:
            raise ValueError(f"local_steps: must be > 0, got {self.local_steps}")


# ---- pure update maths ---------------------------------------------------------------------------
def loss_and_grads(model: MaskedModel, weights: Mapping[str, torch.Tensor], x: torch.Tensor,
                   y: torch.Tensor) -> tuple[float, float, Weights]:
    """Cross-entropy and minibatch accuracy of the module run with `weights`, and dL/dweights.

    The gradient is dense: a pruned (zero) entry still gets its gradient, which is what magnitude
    re-pruning and Dis-PFL's regrowth need.
    """
    w = {n: t.detach().requires_grad_(True) for n, t in weights.items()}
    model.module.train()
    logits = model.forward(x, w)
    loss = F.cross_entropy(logits, y)
    grads = torch.autograd.grad(loss, list(w.values()))
    acc = float((logits.detach().argmax(dim=1) == y).float().mean())
    return float(loss.detach()), acc, dict(zip(w, grads, strict=True))


def sgd_step(weights: Mapping[str, torch.Tensor], grads: Mapping[str, torch.Tensor], lr: float,
             weight_decay: float = 0.0) -> Weights:
    """x - η (g + λ x) for every tensor (λ = 0 leaves plain SGD bit for bit)."""
    out = {}
    for n, t in weights.items():
        g = grads[n] if not weight_decay else grads[n] + weight_decay * t
        out[n] = t - lr * g
    return out


def weighted_sum(models: list[Mapping[str, torch.Tensor]], coeffs: list[float]) -> Weights:
    """Σ_j c_j x_j per tensor, summed in the given order (fixed order = reproducible floats)."""
    if not models or len(models) != len(coeffs):
        raise ValueError("weighted_sum needs as many coefficients as models (at least one)")
    out = {}
    for n in models[0]:
        acc = coeffs[0] * models[0][n]
        for c, m in zip(coeffs[1:], models[1:], strict=True):
            acc = acc + c * m[n]
        out[n] = acc
    return out


def partial_average(items: list[tuple[torch.Tensor, torch.Tensor | None]]) -> torch.Tensor:
    """Entry-wise mean over only the items whose mask keeps the entry (mask None keeps all);
    0 where nobody keeps it. This is LotteryFL's / Dis-PFL's / par-weipru's aggregation."""
    total = torch.zeros_like(items[0][0])
    count = torch.zeros_like(items[0][0])
    for w, m in items:
        if m is None:
            total = total + w
            count = count + 1.0
        else:
            total = total + torch.where(m, w, torch.zeros_like(w))
            count = count + m.to(w.dtype)
    return torch.where(count > 0, total / count.clamp_min(1.0), torch.zeros_like(total))


def keep_top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the `k` largest scores; ties to the lower flat index (as `masks.thres`)."""
    flat = scores.detach().reshape(-1)
    if not 0 <= k <= flat.numel():
        raise ValueError(f"cannot keep {k} of {flat.numel()} entries")
    order = torch.sort(flat, descending=True, stable=True).indices
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=scores.device)
    mask[order[:k]] = True
    return mask.reshape(scores.shape)


def apply_masks(weights: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> Weights:
    """Zero the pruned entries of the masked layers; other tensors pass through."""
    return {n: torch.where(masks[n], t, torch.zeros_like(t)) if n in masks else t
            for n, t in weights.items()}


def prune(weights: Mapping[str, torch.Tensor], layers: Iterable[str], r: float) -> Masks:
    """Magnitude pruning: per masked layer keep the K = keep_count(n, r) largest |w| (Thres_r)."""
    return {n: M.thres(weights[n].abs(), r) for n in layers}


def density(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of masked-layer entries kept."""
    kept = sum(int(m.sum()) for m in masks.values())
    return kept / max(1, sum(m.numel() for m in masks.values()))


# ---- payloads ------------------------------------------------------------------------------------
def dense_payload(weights: Mapping[str, torch.Tensor],
                  extra: Mapping[str, torch.Tensor] | None = None,
                  kind: str = DENSE_KIND) -> Payload:
    """The full model, one float32 tensor per parameter (plus `extra` tensors at the end)."""
    tensors = {n: t.detach().to(torch.float32).cpu() for n, t in weights.items()}
    tensors.update({n: t.cpu() for n, t in (extra or {}).items()})
    return Payload(kind, tensors)


def dense_spec(like: Mapping[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {n: (tuple(t.shape), torch.float32) for n, t in like.items()}


def check_dense(payload: Payload, like: Mapping[str, torch.Tensor], kind: str = DENSE_KIND,
                extra: Mapping[str, tuple[tuple[int, ...], torch.dtype]] | None = None) -> None:
    """ValueError unless `payload` is a dense model shaped like `like` (plus `extra`)."""
    expect_tensors(payload, kind, {**dense_spec(like), **(extra or {})})


def decode_dense(payload: Payload, like: Mapping[str, torch.Tensor],
                 device: torch.device) -> Weights:
    return {n: payload.tensors[n].to(device) for n in like}


def sparse_payload(weights: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor],
                   kind: str = SPARSE_KIND) -> Payload:
    """A pruned model: per masked layer its mask and its kept values (row-major); rest dense."""
    tensors: dict[str, torch.Tensor] = {}
    for n, t in weights.items():
        t = t.detach().to(torch.float32)
        if n in masks:
            m = masks[n]
            tensors[f"{n}.mask"] = m.cpu()
            tensors[f"{n}.values"] = t[m].cpu()
        else:
            tensors[n] = t.cpu()
    return Payload(kind, tensors)


def check_sparse(payload: Payload, like: Mapping[str, torch.Tensor], layers: Iterable[str],
                 kind: str = SPARSE_KIND) -> None:
    """ValueError unless `payload` is a sparse model of `like`: names, dtypes, shapes, and every
    values tensor as long as its mask has ones."""
    layers = set(layers)
    if payload.kind != kind:
        raise ValueError(f"payload kind {payload.kind!r}, expected {kind!r}")
    names: list[str] = []
    for n in like:
        names += [f"{n}.mask", f"{n}.values"] if n in layers else [n]
    if list(payload.tensors) != names:
        raise ValueError(f"payload tensors {list(payload.tensors)}, expected {names}")
    for n, t in like.items():
        if n not in layers:
            _expect(payload, n, tuple(t.shape), torch.float32)
            continue
        _expect(payload, f"{n}.mask", tuple(t.shape), torch.bool)
        kept = int(payload.tensors[f"{n}.mask"].sum())
        _expect(payload, f"{n}.values", (kept,), torch.float32)


def _expect(payload: Payload, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    t = payload.tensors[name]
    if tuple(t.shape) != shape or t.dtype != dtype:
        raise ValueError(f"tensor {name!r} is {t.dtype} {tuple(t.shape)}, expected {dtype} {shape}")


def decode_sparse(payload: Payload, like: Mapping[str, torch.Tensor], layers: Iterable[str],
                  device: torch.device) -> tuple[Weights, Masks]:
    """Dense weights (zeros where pruned) and the masks of a checked sparse payload."""
    layers = set(layers)
    weights: Weights = {}
    masks: Masks = {}
    for n, t in like.items():
        if n not in layers:
            weights[n] = payload.tensors[n].to(device)
            continue
        m = payload.tensors[f"{n}.mask"].to(device)
        dense = torch.zeros(t.shape, dtype=torch.float32, device=device)
        dense[m] = payload.tensors[f"{n}.values"].to(device)
        weights[n], masks[n] = dense, m
    return weights, masks


# ---- the common algorithm skeleton ---------------------------------------------------------------
def _to_device(obj: Any, device: torch.device | None) -> Any:
    """Deep copy of nested dicts/lists of tensors (moved to `device` when given)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        return t.to(device).clone() if device is not None else t.clone()
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_device(v, device) for v in obj]
    return obj


class WeightAlgorithm(Algorithm):
    """State and trainer of a weight method: `x` = every trainable tensor, trained by plain SGD.

    Subclasses say what is sent and merged, and may constrain `x` after every SGD step
    (`project`, e.g. re-apply a mask or re-prune). `state_attrs` lists the extra attributes a
    checkpoint must hold; tensors in them live on `ctx.device`.
    """

    Params: ClassVar[type] = WeightParams
    state_attrs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, ctx: NodeContext, params: WeightParams) -> None:
        super().__init__(ctx, params)
        self.layers: list[str] = list(ctx.model.names)
        self.x: Weights = {n: t.to(ctx.device) for n, t in ctx.model.full_weights().items()}
        self.sampler = MinibatchSampler(len(ctx.shard.train_y), params.batch_size,
                                        ctx.generator(purpose=SAMPLER_PURPOSE))
        self.last_loss = float("nan")
        self.first_acc = float("nan")  # minibatch accuracy before this round's first step

    # -- training --
    def project(self) -> None:
        """Constraint re-applied after every SGD step (none by default)."""

    def train(self, first: torch.Tensor | None = None) -> Weights:
        """`local_steps` SGD steps on fresh minibatches (the first one `first` when given, an
        index tensor already drawn from `self.sampler`); returns the last step's gradients."""
        p, ctx = self.params, self.ctx
        grads: Weights = {}
        for step in range(p.local_steps):
            idx = first if step == 0 and first is not None else self.sampler.next()
            xb = ctx.shard.train_x[idx].to(ctx.device)
            yb = ctx.shard.train_y[idx].to(ctx.device)
            loss, acc, grads = loss_and_grads(ctx.model, self.x, xb, yb)
            if step == 0:
                self.first_acc = acc
            self.last_loss = loss
            self.x = sgd_step(self.x, grads, p.lr, p.weight_decay)
            self.project()
        return grads

    def local_step(self, rnd: int) -> None:
        self.train()

    def check_schedule(self, rnd: int, phase: int, sender: int) -> None:
        """ValueError for a message this node never waits for (wrong round, phase or sender)."""
        if not (0 <= phase < self.phases(rnd) and sender in self.expected(rnd, phase)):
            raise ValueError(f"{self.name}: node {self.ctx.node_id} expects no message from node "
                             f"{sender} in round {rnd} phase {phase}")

    # -- evaluation, reporting, checkpoints --
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.ctx.model.module.eval()
        with torch.no_grad():
            return self.ctx.model.forward(x, self.x)

    def stats(self) -> dict[str, float]:
        return {"train_loss": self.last_loss}

    def neighborhood(self) -> list[int]:
        """Ñ_i = N_i ∪ {i}, sorted (the order every sum is taken in)."""
        return sorted([self.ctx.node_id, *self.ctx.neighbors])

    def state_dict(self) -> dict[str, Any]:
        state = {a: _to_device(getattr(self, a), None) for a in ("x", *self.state_attrs)}
        state.update(sampler=self.sampler.state_dict(), last_loss=self.last_loss,
                     first_acc=self.first_acc)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for a in ("x", *self.state_attrs):
            setattr(self, a, _to_device(state[a], self.ctx.device))
        self.sampler.load_state_dict(state["sampler"])
        self.last_loss, self.first_acc = state["last_loss"], state["first_acc"]


class SparseWeightAlgorithm(WeightAlgorithm):
    """A weight method whose model is pruned: masks `m` over the masked layers, x kept at 0 off
    them, sent as a sparse payload."""

    state_attrs: ClassVar[tuple[str, ...]] = ("m",)

    def __init__(self, ctx: NodeContext, params: WeightParams) -> None:
        super().__init__(ctx, params)
        self.m: Masks = {n: torch.ones_like(self.x[n], dtype=torch.bool) for n in self.layers}

    def project(self) -> None:
        """Fixed-mask training: pruned entries stay 0."""
        self.x = apply_masks(self.x, self.m)

    def sent_masks(self) -> Masks:
        """The masks the sent model lives on (the current ones, unless a method changes its
        mask between training and sending, as Dis-PFL does)."""
        return self.m

    def outgoing(self, rnd: int, phase: int) -> dict[int, Payload]:
        return self.broadcast(sparse_payload(self.x, self.sent_masks()))

    def check(self, rnd: int, phase: int, sender: int, payload: Payload) -> None:
        self.check_schedule(rnd, phase, sender)
        check_sparse(payload, self.x, self.layers)

    def received(self, msgs: dict[int, Payload]) -> list[tuple[Weights, Masks]]:
        """(weights, masks) of every node of Ñ_i in id order, own model (as sent) included."""
        out = []
        for j in self.neighborhood():
            if j == self.ctx.node_id:
                out.append((self.x, self.sent_masks()))
            else:
                out.append(decode_sparse(msgs[j], self.x, self.layers, self.ctx.device))
        return out

    def partial_average(self, models: list[tuple[Weights, Masks]]) -> Weights:
        """Each entry averaged over the models whose mask keeps it; dense tensors plainly."""
        return {n: partial_average([(w[n], m.get(n)) for w, m in models]) for n in self.x}

    def stats(self) -> dict[str, float]:
        return {**super().stats(), "density": density(self.m)}

    def masks(self) -> dict[str, torch.Tensor]:
        return dict(self.m)


def keep_count(n: int, r: float) -> int:
    """Re-exported K = n - floor((1 - r) n) so the baselines import one module."""
    return M.keep_count(n, r)


def cosine_anneal(alpha0: float, t: int, total: int) -> float:
    """α_t = α0 / 2 · (1 + cos(π t / T)): Dis-PFL's drop fraction (0 at t = T)."""
    return alpha0 / 2.0 * (1.0 + math.cos(math.pi * t / max(1, total)))
