"""Accuracy of a node's own model on its own full test set (the paper's metric, per node)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def accuracy(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 1000, device: torch.device | str = "cpu") -> float:
    """Fraction of `x` classified as `y`, evaluated in batches to bound memory."""
    if len(y) == 0:
        return float("nan")
    correct = 0
    with torch.no_grad():
        for start in range(0, len(y), batch_size):
            xb = x[start:start + batch_size].to(device)
            pred = predict(xb).argmax(dim=1).cpu()
            correct += int((pred == y[start:start + batch_size]).sum())
    return correct / len(y)


def is_eval_round(rnd: int, eval_every: int, rounds: int) -> bool:
    """Evaluate at round 0 (the starting point), every `eval_every` rounds, and at the last."""
    return rnd == 0 or rnd % eval_every == 0 or rnd == rounds
