"""Accuracy of a node's own model on its own full test set (the paper's metric, per node)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

AUTO = "auto"
CPU_EVAL_BATCH = 64
"""Evaluation batch on a CPU when the model's activation size is unknown."""
CPU_EVAL_MIN, CPU_EVAL_MAX = 16, 1024
EVAL_BUDGET = 20 << 20
"""Bytes of layer outputs one evaluation batch may produce on a CPU ("auto")."""
GPU_EVAL_BATCH = 2048
"""Evaluation batch on a GPU, where bigger batches keep the device busy and memory is ample."""


def eval_batch_size(setting: int | str | None, device: torch.device | str = "cpu",
                    bytes_per_sample: int | None = None) -> int:
    """The evaluation batch size: `setting` itself, or for "auto" (and None) one that suits
    the device: on a GPU GPU_EVAL_BATCH; on a CPU as many samples as produce EVAL_BUDGET bytes
    of layer outputs (`bytes_per_sample`, see :mod:`mcepl.node.batching`), within 16..1024, or
    CPU_EVAL_BATCH when that is not given.

    On a CPU small batches are as fast or faster and far lighter. AlexNet on 3x32x32 (20
    images), one thread, CPU time per image and peak memory added by evaluation: batch 16-64
    1.6-1.9 ms, +25 to +85 MB; 1000 (the old default): 2.6 ms, +690 MB. In a node the
    evaluation should not be what sets the process's peak memory; training is (see
    :mod:`mcepl.node.batching`).
    """
    if isinstance(setting, int) and not isinstance(setting, bool):
        if setting <= 0:
            raise ValueError(f"evaluation batch size must be > 0, got {setting}")
        return setting
    if setting not in (None, AUTO):
        raise ValueError(f"evaluation batch size must be a positive int or {AUTO!r}, "
                         f"got {setting!r}")
    if torch.device(device).type != "cpu":
        return GPU_EVAL_BATCH
    if not bytes_per_sample:
        return CPU_EVAL_BATCH
    return max(CPU_EVAL_MIN, min(CPU_EVAL_MAX, EVAL_BUDGET // bytes_per_sample))


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
