"""A small, fast CNN for tests and laptops: same ingredients as AlexNet, ~25x fewer operations."""

from __future__ import annotations

import torch
from torch import nn

from .pool import FastMaxPool2d


class SmallCNN(nn.Module):
    """conv 5x5 (16) -> pool -> conv 5x5 (32) -> pool -> linear 64 -> linear classes.

    The pools are `FastMaxPool2d`: PyTorch's in training, argmax-free (same values) in evaluation.
    """

    def __init__(self, input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10,
                 logit_elu: bool = False, width: int = 16) -> None:
        super().__init__()
        c = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 5, bias=False), nn.ELU(), FastMaxPool2d(2),
            nn.Conv2d(width, 2 * width, 5, bias=False), nn.ELU(), FastMaxPool2d(2),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *input_shape)).shape[1]
        self.classifier = nn.Sequential(nn.Linear(flat, 64), nn.ELU(), nn.Linear(64, num_classes))
        self.logit_elu = logit_elu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.classifier(self.features(x))
        return nn.functional.elu(out) if self.logit_elu else out
