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

DEFAULT_WEIGHT_INIT = "kaiming-normal-scaled"
"""How the shared fixed weights `w` of the masked layers are drawn (biases always PyTorch's):

- "kaiming-normal": N(0, 2 / fan_in) (He et al. 2015);
- "signed-constant": +-sqrt(2 / fan_in), the signs of the kaiming-normal draw (Zhou et al. 2019,
  Ramanujan et al. 2020 "edge-popup");
- "...-scaled": the same `w`, and a node that keeps a random or learned fraction r_l of layer l
  sees w_l / sqrt(r_l), so the kept fan-in has the kaiming variance whatever r (edge-popup's
  scaled fan-in); see `MaskedModel.scale`;
- "default": PyTorch's own layer init (kaiming-uniform, a = sqrt 5), the authors' code;
- "uniform": U[-1, 1], the paper's Fig. 4 check.
"""


def _kaiming_normal(w: torch.Tensor) -> None:
    nn.init.kaiming_normal_(w, nonlinearity="relu")  # std = sqrt(2 / fan_in)


def _signed_constant(w: torch.Tensor) -> None:
    _kaiming_normal(w)
    with torch.no_grad():
        w.copy_(torch.sign(w) * math.sqrt(2.0 / w[0].numel()))


# what a weight init does to each masked layer's weight (inside build_model's seeded RNG); a
# "-scaled" name builds the same weights as its base (the 1/sqrt(r) is applied per node)
WEIGHT_INITS.add("kaiming-normal-scaled", _kaiming_normal)
WEIGHT_INITS.add("signed-constant-scaled", _signed_constant)
WEIGHT_INITS.add("kaiming-normal", _kaiming_normal)
WEIGHT_INITS.add("signed-constant", _signed_constant)
WEIGHT_INITS.add("default", lambda w: None)  # PyTorch's own init, as built
WEIGHT_INITS.add("uniform", lambda w: nn.init.uniform_(w, -1.0, 1.0))


def is_retention_scaled(weight_init: str) -> bool:
    """Whether a node keeping a fraction r of a layer uses w / sqrt(r) there."""
    return weight_init.endswith("-scaled")


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int, seed: int,
                weight_init: str = DEFAULT_WEIGHT_INIT, logit_elu: bool = False) -> nn.Module:
    """Build the shared network. Same name, shape and seed give bit-identical weights anywhere.

    The global RNG is forked, so building a model never disturbs anything else's randomness.
    `weight_init` is a registered WEIGHT_INITS name; the "-scaled" inits build the same module as
    their unscaled names (the 1/sqrt(r) factor is applied per node, see
    `MaskedModel.fixed_weights`).
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


__all__ = ["AlexNet", "SmallCNN", "MaskedModel", "MODELS", "DEFAULT_WEIGHT_INIT", "build_model",
           "is_retention_scaled", "kaiming_uniform_like"]
