"""Bounding the memory of a training step: micro-batches.

A node's peak memory is set by its forward/backward pass: AlexNet on 3x32x32 images holds about
1 MB of layer outputs per image, so a minibatch of 128 took ~400 MB at its peak, in each of the
20 node processes. The gradient of a minibatch is the sum of its parts' gradients, so a CPU node
computes it in micro-batches of at most ``ACTIVATION_BUDGET`` bytes of layer outputs (AlexNet:
7 pieces of 18-19 images, ~95 MB at the peak) and adds them up. The result is the same
gradient up to float rounding (the sums are taken in another order); a model whose whole
minibatch fits the budget (the small CNN: 0.1 MB per image) runs it in one piece, bit for bit
as before. On a GPU the default is one piece (memory is ample, big batches are fast).

The split depends only on the setting, the model, the input shape, the batch size and the
device type, so every driver and every machine of the same kind makes the same one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ACTIVATION_BUDGET", "AUTO", "activation_bytes_per_sample", "micro_batch_size",
           "split"]

AUTO = "auto"
ACTIVATION_BUDGET = 20 << 20
"""Bytes of layer outputs one micro-batch may produce on a CPU ("auto"). AlexNet on 3x32x32
(1.01 MB per image): 7 pieces of 18-19 images, ~+95 MB at the step's peak instead of +450 MB
for 128 at once, CPU time within 5% (measured, one thread: pieces of 16 and 32 both 0.58 s per
128 images, 128 at once 0.55 s). The small CNN (0.10 MB per image on 1x28x28, 0.15 MB on
3x32x32) always runs a minibatch of 128 whole."""


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
    try:
        with torch.no_grad():
            module(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
    return total


def micro_batch_size(setting: int | str, batch: int, bytes_per_sample: int,
                     device: torch.device | str = "cpu") -> int:
    """Samples per micro-batch: `setting` (capped at the batch), or for "auto" the most that
    fit ACTIVATION_BUDGET on a CPU (the whole batch on other devices)."""
    if isinstance(setting, int) and not isinstance(setting, bool):
        if setting <= 0:
            raise ValueError(f"micro_batch must be > 0, got {setting}")
        return min(setting, batch)
    if setting != AUTO:
        raise ValueError(f"micro_batch must be a positive int or {AUTO!r}, got {setting!r}")
    if torch.device(device).type != "cpu":
        return batch
    return max(1, min(batch, ACTIVATION_BUDGET // max(1, bytes_per_sample)))


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
