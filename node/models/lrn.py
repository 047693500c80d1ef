"""Local response normalisation across channels, fast on CPUs and GPUs.

PyTorch's ``local_response_norm`` squares the input, pads it, runs ``avg_pool3d`` with a
(size, 1, 1) window over a 5-D view and lets autograd record six ops. On a CPU that pooling
kernel is slow for this shape: it took about half of an AlexNet evaluation. Here the window sum
over channels is ``size`` shifted adds of contiguous channel slices, and the backward pass is
written out, so the whole layer is a handful of passes over memory.

The forward pass does the same floating-point operations in the same order as PyTorch's
(square, sum over the window from the lowest channel up, divide by ``size``, times ``alpha``,
plus ``k``, to the power ``beta``, input divided by that), so its output is bit-identical to
``torch.nn.functional.local_response_norm`` on the CPU (tests/test_models.py checks it). The
backward pass is the analytic gradient

    dx_j = g_j / d_j^beta - (2 alpha beta / size) x_j sum_{c: j in W(c)} g_c y_c / d_c

with ``d_c = k + alpha/size * sum_{c' in W(c)} x_c'^2``; it agrees with autograd through
PyTorch's version to float rounding (the sums are taken in another order).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FastLocalResponseNorm", "local_response_norm"]


def _window_sum(t: torch.Tensor, size: int, transpose: bool = False) -> torch.Tensor:
    """s_c = sum of t over channels c - size//2 .. c + (size-1)//2 (zeros beyond the edges),
    lowest channel first; ``transpose`` sums over the channels whose window holds c instead."""
    channels = t.shape[1]
    lo, hi = -(size // 2), (size - 1) // 2
    offsets = range(lo, hi + 1)
    if transpose:
        offsets = range(-hi, -lo + 1)
    out = torch.zeros_like(t, memory_format=torch.contiguous_format)
    for o in offsets:
        a, b = max(0, -o), min(channels, channels - o)
        if a < b:
            out[:, a:b] += t[:, a + o:b + o]
    return out


class _LRN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, size: int, alpha: float, beta: float,  # type: ignore[override]
                k: float) -> torch.Tensor:
        d = _window_sum(x * x, size)
        d.div_(size).mul_(alpha).add_(k)  # = avg_pool's mean of the window, as PyTorch does it
        dpow = d.pow(beta)
        y = x / dpow
        ctx.save_for_backward(x, y, d, dpow)
        ctx.params = (size, alpha, beta)
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        x, y, d, dpow = ctx.saved_tensors
        size, alpha, beta = ctx.params
        t = g * y
        t.div_(d)
        u = _window_sum(t, size, transpose=True)
        dx = g / dpow
        dx.addcmul_(x, u, value=-2.0 * alpha * beta / size)
        return dx, None, None, None, None


def local_response_norm(x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> torch.Tensor:
    """Drop-in for ``torch.nn.functional.local_response_norm`` (inputs of 3 or more dims)."""
    if x.dim() < 3:
        raise ValueError(f"local_response_norm expects 3 or more dimensions, got {x.dim()}")
    if x.numel() == 0:
        return x
    if not (torch.is_grad_enabled() and x.requires_grad):  # no graph: skip the saved tensors
        d = _window_sum(x * x, size)
        d.div_(size).mul_(alpha).add_(k)
        return x / d.pow_(beta)
    return _LRN.apply(x.contiguous(), size, alpha, beta, k)


class FastLocalResponseNorm(nn.LocalResponseNorm):
    """``nn.LocalResponseNorm`` (same arguments and attributes, no parameters) computed fast."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k)
