"""The mask maths of MCE-PL (ALGORITHMS.md), pure: tensors in, tensors out, no sockets.

Equation numbers are the paper's. Every function works on one layer's tensor; callers loop over
layers. Masks are `torch.bool`; scores `z` and aggregation tensors are floating point.
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

    Ties are broken towards the lower flat index (stable sort), so the result never depends on
    the platform or on thread count.
    """
    flat = a.detach().reshape(-1)
    k = keep_count(flat.numel(), r)
    order = torch.sort(flat, descending=True, stable=True).indices
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=a.device)
    mask[order[:k]] = True
    return mask.reshape(a.shape)


def fil(m: torch.Tensor, tau: int) -> torch.Tensor:
    """Fil_tau(m): zero each output filter/row holding at most `tau` ones (eq. 10); 0 = off."""
    if tau <= 0:
        return m
    counts = m.reshape(m.shape[0], -1).sum(dim=1)
    keep = counts > tau
    return m & keep.reshape((-1,) + (1,) * (m.dim() - 1))


def straight_through_grad(dl_dv: torch.Tensor, w: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """G(z) = (dL/dv ⊙ w) ⊙ sign(z) (eq. 4/15): the threshold is treated as identity."""
    return dl_dv * w * torch.sign(z)


def group_lasso(z: torch.Tensor) -> torch.Tensor:
    """Σ_o ||z[o, ...]||_2: one group per output filter (conv) or row (linear) (eq. 5-7)."""
    return z.reshape(z.shape[0], -1).norm(dim=1).sum()


def group_lasso_grad(z: torch.Tensor) -> torch.Tensor:
    """∂/∂z Σ_o ||z[o]||_2 = z[o] / ||z[o]||, and 0 for an all-zero group."""
    flat = z.reshape(z.shape[0], -1)
    norms = flat.norm(dim=1, keepdim=True)
    grad = torch.where(norms > 0, flat / norms.clamp_min(1e-30), torch.zeros_like(flat))
    return grad.reshape(z.shape)


def neighbor_mean(masks: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """A = (1/d_i) Σ_j m_j, the element-wise mean of the neighbours' masks; zeros if none."""
    if not masks:
        return torch.zeros_like(like, dtype=torch.float32)
    total = torch.zeros(like.shape, dtype=torch.float32, device=like.device)
    for m in masks:
        total += m.to(device=like.device, dtype=torch.float32)
    return total / len(masks)


def aggregation_tensor(z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """y = z + mean(|z|) · sign(z) ⊙ A (eq. 11); mean(|z|) and sign(z) carry no gradient."""
    z = z.detach()
    return z + z.abs().mean() * torch.sign(z) * a


def mask_from_scores(z: torch.Tensor, r: float, tau: int = 0,
                     a: torch.Tensor | None = None) -> torch.Tensor:
    """m = Fil_tau(Thres_r(|y|)), y the aggregation tensor, or y = z if `a` is None (eq. 12)."""
    y = z.detach() if a is None else aggregation_tensor(z, a)
    return fil(thres(y.abs(), r), tau)


def fine_tune(z_half: torch.Tensor, g: torch.Tensor, a: torch.Tensor, lr_ft: float) -> torch.Tensor:
    """z^(k) = z^(k-1/2) - η_ft · G ⊙ A (eq. 17): only entries some neighbour keeps move."""
    return z_half - lr_ft * g * a
