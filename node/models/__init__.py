"""Models: the paper's AlexNet, a small CNN, and the mask wrapper for any module."""

from __future__ import annotations

import math

import torch
from torch import nn

from mcepl.registry import MODELS, WEIGHT_INITS

from .alexnet import AlexNet
from .masking import MASKABLE, MaskedModel
from .small_cnn import SmallCNN

MODELS.add("alexnet", AlexNet)
MODELS.add("small-cnn", SmallCNN)
# what a weight init does to each masked layer's weight (inside build_model's seeded RNG)
WEIGHT_INITS.add("default", lambda w: None)  # PyTorch's own init, as built
WEIGHT_INITS.add("uniform", lambda w: nn.init.uniform_(w, -1.0, 1.0))
WEIGHT_INITS.add("kaiming-normal", lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"))


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
        raise ValueError(f"unknown weight_init {weight_init!r}; choose one of "
                         f"{', '.join(WEIGHT_INITS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MODELS[name](input_shape=tuple(input_shape), num_classes=num_classes,
                             logit_elu=logit_elu)
        init = WEIGHT_INITS[weight_init]
        for sub in model.modules():
            if isinstance(sub, MASKABLE):
                init(sub.weight)
    return model


def kaiming_uniform_like(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """PyTorch's default layer init (kaiming-uniform, a = sqrt 5), drawn from `generator`."""
    out = torch.empty_like(t, device="cpu")
    nn.init.kaiming_uniform_(out, a=math.sqrt(5), generator=generator)
    return out.to(t.device)


__all__ = ["AlexNet", "SmallCNN", "MaskedModel", "MODELS", "build_model", "kaiming_uniform_like"]
