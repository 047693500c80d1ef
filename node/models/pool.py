"""Max-pooling for evaluation, fast on CPUs.

PyTorch's CPU ``max_pool2d`` also computes the argmax of every window, which evaluation never
needs; for AlexNet's 3x3/stride-2 pools it was a fifth of an evaluation. Without a graph to
record, the pool here is the element-wise maximum of the k*k strided views of the input, the
same values bit for bit (the maximum of the same numbers; NaN propagates as in PyTorch). With
autograd recording (training) it is PyTorch's own layer, so training is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FastMaxPool2d", "max_pool2d_no_indices"]


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def max_pool2d_no_indices(x: torch.Tensor, kernel_size: int | tuple[int, int],
                          stride: int | tuple[int, int]) -> torch.Tensor:
    """``F.max_pool2d(x, kernel_size, stride)`` (no padding, floor mode) as k*k maxima."""
    (kh, kw), (sh, sw) = _pair(kernel_size), _pair(stride)
    h, w = x.shape[-2:]
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    if ho <= 0 or wo <= 0:
        raise ValueError(f"max_pool2d: kernel {kh}x{kw} larger than the input {h}x{w}")
    out = None
    for i in range(kh):
        for j in range(kw):
            view = x[..., i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
            if out is None:
                out = view.clone(memory_format=torch.contiguous_format)
            else:
                torch.maximum(out, view, out=out)
    assert out is not None
    return out


class FastMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` whose forward without autograd (evaluation) skips the argmax."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        simple = (_pair(self.padding) == (0, 0) and _pair(self.dilation) == (1, 1)
                  and not self.ceil_mode and not self.return_indices and x.dim() in (3, 4))
        if simple and not (torch.is_grad_enabled() and x.requires_grad):
            return max_pool2d_no_indices(x, self.kernel_size,
                                         self.stride if self.stride else self.kernel_size)
        return super().forward(x)
