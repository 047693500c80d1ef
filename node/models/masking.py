"""Turn any `nn.Module` into a fixed-weight, maskable network.

Every conv and linear weight becomes a *masked layer*: its values `w` are frozen (shared by all
nodes, rebuilt from the shared seed, never sent) and the forward pass runs with whatever
effective weights the algorithm supplies (`w * m` for mask methods, trained weights for the
weight-based baselines). Biases and any other parameters stay fixed. Nothing is replaced inside
the user's module: `torch.func.functional_call` swaps the tensors for one call, so user models
work unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call

MASKABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class MaskedModel:
    """A frozen module plus the names and shared values of its masked weights.

    `retention_scaled` (the "-scaled" weight inits): a node keeping a random or learned fraction
    r of a layer uses w / sqrt(r) there (`fixed_weights`), so the kept fan-in keeps the variance
    of the full layer and an untrained sparse network is as input-dependent as the dense one.
    """

    def __init__(self, module: nn.Module, retention_scaled: bool = False) -> None:
        self.module = module
        self.retention_scaled = retention_scaled
        for p in module.parameters():
            p.requires_grad_(False)
        self.names: list[str] = [
            f"{name}.weight" for name, sub in module.named_modules() if isinstance(sub, MASKABLE)
        ]
        if not self.names:
            raise ValueError(f"{type(module).__name__} has no conv or linear layer to mask")
        params = dict(module.named_parameters())
        self.w: dict[str, torch.Tensor] = {n: params[n] for n in self.names}

    @property
    def num_masked(self) -> int:
        return sum(t.numel() for t in self.w.values())

    def is_linear(self, name: str) -> bool:
        return self.w[name].dim() == 2

    def to(self, device: torch.device | str) -> MaskedModel:
        self.module.to(device)
        params = dict(self.module.named_parameters())
        self.w = {n: params[n] for n in self.names}
        return self

    def forward(self, x: torch.Tensor, weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Run the module with `weights` standing in for the masked layers' weights."""
        return functional_call(self.module, dict(weights), (x,), strict=False)

    def scale(self, r: float) -> float:
        """The factor on `w` of a layer a node keeps a fraction `r` of (1 unless scaled)."""
        if not 0.0 < r <= 1.0:
            raise ValueError(f"retention must be in (0, 1], got {r}")
        return 1.0 / math.sqrt(r) if self.retention_scaled else 1.0

    def fixed_weights(self, retention: Mapping[str, float]) -> dict[str, torch.Tensor]:
        """The node's fixed weights: w scaled per layer for its retention (w itself if 1)."""
        out = {}
        for n in self.names:
            s = self.scale(retention[n])
            out[n] = self.w[n] if s == 1.0 else self.w[n] * s
        return out

    def masked_weights(self, masks: Mapping[str, torch.Tensor],
                       w: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """v = w ⊙ m for every masked layer (`w`: the node's `fixed_weights`, default the
        shared w)."""
        w = self.w if w is None else w
        return {n: w[n] * masks[n].to(w[n].dtype) for n in self.names}

    def full_weights(self) -> dict[str, torch.Tensor]:
        """All trainable tensors of the module (masked weights and biases), for weight methods."""
        return {n: p.detach().clone() for n, p in self.module.named_parameters()}
