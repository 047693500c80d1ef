"""Models: the paper's AlexNet, a small CNN, and the mask wrapper for any module."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .alexnet import AlexNet
from .masking import MASKABLE, MaskedModel
from .small_cnn import SmallCNN

MODELS: dict[str, Callable[..., nn.Module]] = {"alexnet": AlexNet, "small-cnn": SmallCNN}
WEIGHT_INITS = ("default", "uniform", "kaiming-normal")


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int, seed: int,
                weight_init: str = "default", logit_elu: bool = False) -> nn.Module:
    """Build the shared network. Same name, shape and seed give bit-identical weights anywhere.

    The global RNG is forked, so building a model never disturbs anything else's randomness.
    `weight_init`: "default" (PyTorch's own init, as the authors' code), "uniform" (U[-1, 1] on
    masked weights, as the paper's Fig. 4 check) or "kaiming-normal" (masked weights).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if weight_init not in WEIGHT_INITS:
        raise ValueError(f"unknown weight_init {weight_init!r}; choose one of {WEIGHT_INITS}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MODELS[name](input_shape=tuple(input_shape), num_classes=num_classes,
                             logit_elu=logit_elu)
        for sub in model.modules():
            if isinstance(sub, MASKABLE):
                if weight_init == "uniform":
                    nn.init.uniform_(sub.weight, -1.0, 1.0)
                elif weight_init == "kaiming-normal":
                    nn.init.kaiming_normal_(sub.weight, nonlinearity="relu")
    return model


def kaiming_uniform_like(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """PyTorch's default layer init (kaiming-uniform, a = sqrt 5), drawn from `generator`."""
    out = torch.empty_like(t, device="cpu")
    nn.init.kaiming_uniform_(out, a=math.sqrt(5), generator=generator)
    return out.to(t.device)


__all__ = ["AlexNet", "SmallCNN", "MaskedModel", "MODELS", "build_model", "kaiming_uniform_like"]
