"""Bounding the memory of a training step: micro-batches.

A node's peak memory is set by its forward/backward pass: AlexNet on 3x32x32 images produces
about 1 MB of layer outputs per image, so a minibatch of 128 took ~450 MB at its peak, in each
of the 20 node processes. The gradient of a minibatch is the sum of its parts' gradients, so a
CPU node whose minibatch would produce more than ``SPLIT_ABOVE`` bytes of layer outputs computes
it in pieces of at most ``PIECE_BUDGET`` and adds them up. AlexNet on 3x32x32: 16 pieces of 8
images, +61 MB at the step's peak instead of +454 MB, and the same CPU time (measured, one
thread: 0.58 s per 128 images in pieces of 8, 12, 16 or 32; 0.55 s at once). The result is the
same gradient up to float rounding (the sums are taken in another order). The small CNN (13 MB
of layer outputs for 128 images of 1x28x28, 19 MB of 3x32x32) runs its minibatch whole, bit for
bit as before. On a GPU the default is one piece (memory is ample, big batches are fast).

The split depends only on the setting, the model, the input shape, the batch size and the
device type, so every driver and every machine of the same kind makes the same one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["AUTO", "PIECE_BUDGET", "SPLIT_ABOVE",
           "activation_bytes_per_sample", "micro_batch_size", "split"]

AUTO = "auto"
SPLIT_ABOVE = 64 << 20
"""A CPU minibatch whose layer outputs exceed this many bytes is split ("auto")..."""
PIECE_BUDGET = 8 << 20
"""...into pieces of at most this many bytes of layer outputs."""

def activation_bytes_per_sample(module: nn.Module, input_shape: tuple[int, ...],
                                device: torch.device | str = "cpu") -> int:
    """Bytes of all leaf-layer outputs of one forward pass, per input sample."""
    total = 0

    def hook(_mod: nn.Module, _inp: object, out: object) -> None:
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel() * out.element_size()

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if not list(m.children())]
    # in eval mode: a probe must not move BatchNorm statistics (a user model's), and a
    # BatchNorm1d cannot train on one sample; the layer outputs have the same sizes
    modes = {m: m.training for m in module.modules()}
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return total


def micro_batch_size(setting: int | str, batch: int, bytes_per_sample: int,
                     device: torch.device | str = "cpu") -> int:
    """Samples per micro-batch: `setting` (capped at the batch), or for "auto" on a CPU the
    whole batch unless its layer outputs exceed SPLIT_ABOVE, then pieces of PIECE_BUDGET (the
    whole batch on other devices)."""
    if isinstance(setting, int) and not isinstance(setting, bool):
        if setting <= 0:
            raise ValueError(f"micro_batch must be > 0, got {setting}")
        return min(setting, batch)
    if setting != AUTO:
        raise ValueError(f"micro_batch must be a positive int or {AUTO!r}, got {setting!r}")
    per = max(1, bytes_per_sample)
    if torch.device(device).type != "cpu" or batch * per <= SPLIT_ABOVE:
        return batch
    return max(1, min(batch, PIECE_BUDGET // per))


def split(n: int, size: int) -> list[slice]:
    """`n` samples in ceil(n / size) consecutive slices of near-equal length."""
    parts = max(1, math.ceil(n / max(1, size)))
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + base + (1 if i < extra else 0)
        out.append(slice(start, stop))
        start = stop
    return out
