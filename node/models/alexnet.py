"""The paper's "AlexNet", exactly as the authors' code builds it (EXPERIMENTS.md)."""

from __future__ import annotations

import torch
from torch import nn

from .lrn import FastLocalResponseNorm
from .pool import FastMaxPool2d


class AlexNet(nn.Module):
    """Three 5x5 conv blocks (no conv bias) with ELU, LRN and max-pooling, then two linear layers.

    LRN is `FastLocalResponseNorm`: the same layer as `nn.LocalResponseNorm` (bit-identical
    forward pass), several times faster on a CPU; max-pooling is `FastMaxPool2d`, PyTorch's
    own in training and an argmax-free one (same values) in evaluation. `fast_layers=False`
    builds PyTorch's layers (the throughput benchmark compares both).

    The flatten size is measured from `input_shape`, so the same stack serves 3x32x32 (1024
    features) and 1x28x28 (256 features). `logit_elu` reproduces the authors' ELU on the logits.
    """

    def __init__(self, input_shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10,
                 logit_elu: bool = False, fast_layers: bool = True) -> None:
        super().__init__()
        c = input_shape[0]
        lrn = FastLocalResponseNorm if fast_layers else nn.LocalResponseNorm
        pool = FastMaxPool2d if fast_layers else nn.MaxPool2d
        self.features = nn.Sequential(
            nn.Conv2d(c, 64, 5, padding=1, bias=False), nn.ELU(),
            lrn(4, alpha=2e-5, beta=0.75), pool(3, 2),
            nn.Conv2d(64, 128, 5, padding=1, bias=False), nn.ELU(),
            lrn(4, alpha=1e-4, beta=0.75), pool(3, 2),
            nn.Conv2d(128, 256, 5, padding=1, bias=False), nn.ELU(),
            lrn(4, alpha=1e-4, beta=0.75), pool(3, 2, padding=1),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *input_shape)).shape[1]
        self.classifier = nn.Sequential(nn.Linear(flat, 192), nn.ELU(), nn.Linear(192, num_classes))
        self.logit_elu = logit_elu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.classifier(self.features(x))
        return nn.functional.elu(out) if self.logit_elu else out
