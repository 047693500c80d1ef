"""Accuracy of a node's own model on its own full test set (the paper's metric, per node)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

AUTO = "auto"
CPU_EVAL_BATCH = 64
"""Evaluation batch on a CPU. Measured for AlexNet on 3x32x32, one thread, per 1000 images: batch
32: 2.26 s CPU, +45 MB peak; 64: 2.36 s, +85 MB; 128: 2.33 s, +154 MB; 256: 2.84 s, +200 MB; 1000
(the old default): 2.87 s, +690 MB, in each of the 20 node processes. Small batches stay in the
caches; past 64 only the memory grows."""
GPU_EVAL_BATCH = 2048
"""Evaluation batch on a GPU, where bigger batches keep the device busy and memory is ample."""


def eval_batch_size(setting: int | str | None, device: torch.device | str = "cpu") -> int:
    """The evaluation batch size: `setting` itself, or for "auto" (and None) one that suits
    the device (CPU_EVAL_BATCH, GPU_EVAL_BATCH)."""
    if isinstance(setting, int) and not isinstance(setting, bool):
        if setting <= 0:
            raise ValueError(f"evaluation batch size must be > 0, got {setting}")
        return setting
    if setting not in (None, AUTO):
        raise ValueError(f"evaluation batch size must be a positive int or {AUTO!r}, "
                         f"got {setting!r}")
    return CPU_EVAL_BATCH if torch.device(device).type == "cpu" else GPU_EVAL_BATCH


def accuracy(predict: Callable[[torch.Tensor], torch.Tensor], x: Any, y: torch.Tensor,
             batch_size: int | str | None = AUTO, device: torch.device | str = "cpu") -> float:
    """Fraction of `x` classified as `y`, evaluated in batches to bound memory.

    `x` is a shard's :class:`~mcepl.node.data.Images` (uint8, normalised batch by batch on the
    device where they are kept) or a float tensor. Runs under ``torch.inference_mode`` (no
    autograd bookkeeping); the count stays on the device until the end (one synchronisation).
    """
    n = len(y)
    if n == 0:
        return float("nan")
    bs = eval_batch_size(batch_size, device)
    with torch.inference_mode():
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for start in range(0, n, bs):
            xb = x[start:start + bs].to(device)
            yb = y[start:start + bs].to(device)
            correct += (predict(xb).argmax(dim=1) == yb).sum()
        return int(correct) / n


def is_eval_round(rnd: int, eval_every: int, rounds: int) -> bool:
    """Evaluate at round 0 (the starting point), every `eval_every` rounds, and at the last."""
    return rnd == 0 or rnd % eval_every == 0 or rnd == rounds
