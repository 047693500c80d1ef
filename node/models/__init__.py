"""Models: the paper's AlexNet, a small CNN, the user's own (``package.module:factory``), and
the mask wrapper for any module."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from mcepl.registry import MODELS, WEIGHT_INITS
from mcepl.userload import UserCodeError, describe_exception

from .alexnet import AlexNet
from .masking import (
    MASKABLE,
    MaskedModel,
    MaskSelectionError,
    default_masked_names,
    select_masked,
    weights_digest,
)
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
                weight_init: str = DEFAULT_WEIGHT_INIT, logit_elu: bool = False,
                masked: Sequence[str] | None = None, python_path: Sequence[str] = ()) -> nn.Module:
    """Build the shared network. Same name, shape and seed give bit-identical weights anywhere.

    `name` is a built-in model or the user's ``package.module:factory`` (imported with
    `python_path` and the current directory in front of sys.path), called as
    ``factory(input_shape, num_classes)`` and returning an `nn.Module`. It runs with torch's,
    numpy's and Python's global RNGs seeded from `seed` and then restored, so a factory drawing
    its initial weights from any of them builds the same weights in every node process and
    building a model never disturbs anything else's randomness.

    `weight_init` (a registered WEIGHT_INITS name) applies to the masked parameters (`masked`
    patterns, default every conv and linear weight); the "-scaled" inits build the same module
    as their unscaled names (the 1/sqrt(r) factor is applied per node, see
    `MaskedModel.fixed_weights`). The model is then run once on a batch of two zero inputs,
    which must give ``(2, num_classes)`` logits.

    Problems with a user model (import, factory, masked layers, output size) raise
    `UserCodeError` with one line naming the model.
    """
    builtin = MODELS.is_builtin(name)
    try:
        factory = MODELS.lookup(name, python_path)
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)} or give "
                         f"'package.module:factory'") from None
    if weight_init not in WEIGHT_INITS:
        raise ValueError(f"unknown weight_init {weight_init!r}; choose one of "
                         f"{', '.join(WEIGHT_INITS)}")
    shape = tuple(int(v) for v in input_shape)
    with _seeded(seed):
        if builtin:
            model = factory(shape, num_classes, **({"logit_elu": True} if logit_elu else {}))
        else:
            try:
                model = factory(shape, num_classes)
            except Exception as exc:  # noqa: BLE001 - the user's code: one line, exit 2
                raise UserCodeError(f"model factory {name!r} raised {describe_exception(exc)} "
                                    f"when called as factory({shape}, {num_classes})") from None
        if not isinstance(model, nn.Module):
            raise UserCodeError(f"model factory {name!r} returned a {type(model).__name__}, not "
                                f"a torch.nn.Module")
        init = WEIGHT_INITS[weight_init]
        params = dict(model.named_parameters())
        for pname in select_masked(model, masked, name):
            try:
                init(params[pname].data)
            except Exception as exc:  # noqa: BLE001 - e.g. kaiming on a 1-D parameter
                raise UserCodeError(f"model.weight_init {weight_init!r} cannot initialise "
                                    f"{pname} {tuple(params[pname].shape)} of {name!r}: "
                                    f"{describe_exception(exc)}") from None
        check_output(model, name, shape, num_classes)
    return model


class _seeded:
    """torch's RNG forked, numpy's and Python's global RNGs saved; all seeded from `seed`; all
    restored on exit."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        self._fork = torch.random.fork_rng(devices=[])
        self._fork.__enter__()
        self._np, self._py = np.random.get_state(), random.getstate()
        torch.manual_seed(self.seed)
        np.random.seed(self.seed % 2**32)
        random.seed(self.seed)

    def __exit__(self, *exc: object) -> None:
        np.random.set_state(self._np)
        random.setstate(self._py)
        self._fork.__exit__(*exc)


def check_output(model: nn.Module, name: str, input_shape: tuple[int, ...],
                 num_classes: int) -> None:
    """Run `model` (in eval mode, no gradients) on two zero inputs: UserCodeError unless it
    gives a (2, num_classes) tensor of logits. The training flags are restored after."""
    modes = {m: m.training for m in model.modules()}
    x = torch.zeros(2, *input_shape)
    try:
        model.eval()
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # noqa: BLE001 - the user's forward: one line, exit 2
        raise UserCodeError(f"model {name!r}: forward of a batch of 2 zero inputs of shape "
                            f"{tuple(input_shape)} failed: {describe_exception(exc)}") from None
    finally:
        for m, mode in modes.items():
            m.training = mode
    if not isinstance(out, torch.Tensor):
        raise UserCodeError(f"model {name!r}: forward returned a {type(out).__name__}, not a "
                            f"tensor of logits")
    if tuple(out.shape) != (2, num_classes):
        raise UserCodeError(f"model {name!r}: output shape {tuple(out.shape)} for a batch of 2 "
                            f"inputs of shape {tuple(input_shape)}; expected (2, {num_classes}), "
                            f"one logit per class of the data set ({num_classes} classes)")


def kaiming_uniform_like(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """PyTorch's default layer init (kaiming-uniform, a = sqrt 5), drawn from `generator`."""
    out = torch.empty_like(t, device="cpu")
    nn.init.kaiming_uniform_(out, a=math.sqrt(5), generator=generator)
    return out.to(t.device)


__all__ = ["DEFAULT_WEIGHT_INIT", "MASKABLE", "MODELS", "AlexNet", "MaskSelectionError",
           "MaskedModel", "SmallCNN", "build_model", "check_output", "default_masked_names",
           "is_retention_scaled", "kaiming_uniform_like", "select_masked", "weights_digest"]
