"""The mask maths of MCE-PL (ALGORITHMS.md), pure: tensors in, tensors out, no sockets.

Equation numbers are the paper's. Every function works on one layer's tensor; callers loop over
layers. Masks are `torch.bool`; scores `z` and aggregation tensors are floating point.

They run every step over every masked weight, so each is a few whole-tensor operations (no
Python loop over entries), Thres is a linear-time selection rather than a sort, and the float
ones take optional `out`/`scratch` buffers: a caller that keeps one buffer per layer allocates
nothing that size per step. With or without buffers the results are bit-identical.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch


def keep_count(n: int, r: float) -> int:
    """K = n - floor((1 - r) n): how many entries Thres_r keeps in a layer of n entries (eq. 3).

    Computed exactly on the decimal value of r (in binary floating point 1 - 0.9 is just under
    0.1, which would keep one entry too many).
    """
    if not 0.0 < r <= 1.0:
        raise ValueError(f"retention ratio must be in (0, 1], got {r}")
    return n - math.floor((1 - Fraction(repr(float(r)))) * n)


def thres(a: torch.Tensor, r: float) -> torch.Tensor:
    """Thres_r(a): exactly K ones at the K largest entries of `a` (eq. 3).

    Ties are broken towards the lower flat index, so the result never depends on the platform
    or on thread count.
    """
    return top_k_mask(a, keep_count(a.numel(), r))


def top_k_mask(a: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the `k` largest entries of `a`, ties to the lower flat index.

    The same mask as a stable descending sort cut after `k`, in linear time: the k-th largest
    value t (a selection, not a sort), everything above t, then the first entries equal to t in
    index order. It runs every step on every masked layer, where the sort took ~7x longer.
    """
    flat = a.detach().reshape(-1)
    n = flat.numel()
    if not 0 <= k <= n:
        raise ValueError(f"cannot keep {k} of {n} entries")
    if k == n or k == 0:
        return torch.full(a.shape, k == n, dtype=torch.bool, device=a.device)
    if flat.is_floating_point() and bool(torch.isnan(flat).any()):
        return _top_k_mask_sorted(flat, k).reshape(a.shape)  # NaN ranks highest, as in a sort
    t = torch.kthvalue(flat, n - k + 1).values  # the k-th largest
    mask = flat > t
    ties = flat == t
    need = k - int(mask.sum())
    if need < int(ties.sum()):
        ties &= ties.cumsum(0) <= need
    return mask.logical_or_(ties).reshape(a.shape)


def _top_k_mask_sorted(flat: torch.Tensor, k: int) -> torch.Tensor:
    order = torch.sort(flat, descending=True, stable=True).indices
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    mask[order[:k]] = True
    return mask


def fil(m: torch.Tensor, tau: int) -> torch.Tensor:
    """Fil_tau(m): zero each output filter/row holding at most `tau` ones (eq. 10); 0 = off."""
    if tau <= 0:
        return m
    counts = m.reshape(m.shape[0], -1).sum(dim=1)
    keep = counts > tau
    return m & keep.reshape((-1,) + (1,) * (m.dim() - 1))


def straight_through_grad(dl_dv: torch.Tensor, w: torch.Tensor, z: torch.Tensor,
                          out: torch.Tensor | None = None,
                          scratch: torch.Tensor | None = None) -> torch.Tensor:
    """G(z) = (dL/dv ⊙ w) ⊙ sign(z) (eq. 4/15): the threshold is treated as identity."""
    if out is None:
        return dl_dv * w * torch.sign(z)
    torch.mul(dl_dv, w, out=out)
    return out.mul_(torch.sign(z) if scratch is None else torch.sign(z, out=scratch))


def group_lasso(z: torch.Tensor) -> torch.Tensor:
    """Σ_o ||z[o, ...]||_2: one group per output filter (conv) or row (linear) (eq. 5-7)."""
    return z.reshape(z.shape[0], -1).norm(dim=1).sum()


def group_lasso_grad(z: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """∂/∂z Σ_o ||z[o]||_2 = z[o] / ||z[o]||, and 0 for an all-zero group."""
    flat = z.reshape(z.shape[0], -1)
    norms = flat.norm(dim=1, keepdim=True)
    if out is None:
        grad = torch.where(norms > 0, flat / norms.clamp_min(1e-30), torch.zeros_like(flat))
        return grad.reshape(z.shape)
    o = out.view(flat.shape)
    torch.div(flat, norms.clamp_min(1e-30), out=o)
    o.masked_fill_(~(norms > 0), 0.0)
    return out


def neighbor_mean(masks: list[torch.Tensor], like: torch.Tensor,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """A = (1/d_i) Σ_j m_j, the element-wise mean of the neighbours' masks; zeros if none."""
    if out is None:
        out = torch.zeros(like.shape, dtype=torch.float32, device=like.device)
    else:
        out.zero_()
    if not masks:
        return out
    for m in masks:
        out.add_(m.to(device=out.device))  # bool -> 0/1 added exactly
    return out.div_(len(masks))


def aggregation_tensor(z: torch.Tensor, a: torch.Tensor,
                       out: torch.Tensor | None = None) -> torch.Tensor:
    """y = z + mean(|z|) · sign(z) ⊙ A (eq. 11); mean(|z|) and sign(z) carry no gradient."""
    z = z.detach()
    if out is None:
        return z + z.abs().mean() * torch.sign(z) * a
    mean = torch.abs(z, out=out).mean()
    torch.sign(z, out=out)
    return out.mul_(mean).mul_(a).add_(z)


def mask_from_scores(z: torch.Tensor, r: float, tau: int = 0, a: torch.Tensor | None = None,
                     out: torch.Tensor | None = None) -> torch.Tensor:
    """m = Fil_tau(Thres_r(|y|)), y the aggregation tensor, or y = z if `a` is None (eq. 12).

    `out`: a float buffer shaped like z for the intermediate |y| (then nothing that size is
    allocated but the mask itself)."""
    if out is None:
        y = z.detach() if a is None else aggregation_tensor(z, a)
        return fil(thres(y.abs(), r), tau)
    if a is None:
        torch.abs(z.detach(), out=out)
    else:
        aggregation_tensor(z, a, out=out).abs_()
    return fil(thres(out, r), tau)


def fine_tune(z_half: torch.Tensor, g: torch.Tensor, a: torch.Tensor, lr_ft: float,
              out: torch.Tensor | None = None,
              scratch: torch.Tensor | None = None) -> torch.Tensor:
    """z^(k) = z^(k-1/2) - η_ft · G ⊙ A (eq. 17): only entries some neighbour keeps move.

    `out` may be `z_half` itself (updated in place); `scratch` is a buffer shaped like it."""
    if out is None:
        return z_half - lr_ft * g * a
    step = torch.mul(g, lr_ft) if scratch is None else torch.mul(g, lr_ft, out=scratch)
    return torch.sub(z_half, step.mul_(a), out=out)
