"""Turn any `nn.Module` into a fixed-weight, maskable network.

The *masked layers* are the parameters chosen by name: by default every conv and linear weight
(`default_masked_names`), or the parameters matching the ``[model] masked`` patterns
(`select_masked`, fnmatch on names like ``layer1.0.conv1.weight``). Their values `w` are frozen
(shared by all nodes, rebuilt from the shared seed, never sent) and the forward pass runs with
whatever effective weights the algorithm supplies (`w * m` for mask methods, trained weights for
the weight-based baselines). Every other parameter stays fixed. Nothing is replaced inside the
user's module: `torch.func.functional_call` swaps the tensors for one call, so user models work
unchanged.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from mcepl.userload import UserCodeError

MASKABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class MaskSelectionError(UserCodeError):
    """No parameter to mask, or a ``masked`` pattern that selects nothing usable (one line)."""


def default_masked_names(module: nn.Module) -> list[str]:
    """The weight of every conv and linear layer, in module order (a weight tied to an earlier
    layer's counts once, under its first name)."""
    params = {n for n, _ in module.named_parameters()}
    names = [f"{name}.weight" if name else "weight" for name, sub in module.named_modules()
             if isinstance(sub, MASKABLE)]
    return [n for n in names if n in params]


def _short_list(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def select_masked(module: nn.Module, patterns: Sequence[str] | None = None,
                  name: str | None = None) -> list[str]:
    """Names of the parameters to mask, in the module's parameter order.

    `patterns` None: `default_masked_names`. Otherwise every parameter whose name matches one of
    the fnmatch patterns (``*`` matches dots too: ``features.*`` is every parameter under
    ``features``). Each pattern must match at least one parameter (a typo would silently leave
    a layer unmasked), and a matched parameter must have at least one dimension. `name` (the
    model's config name) goes into the error messages."""
    what = f"{name!r} ({type(module).__name__})" if name else type(module).__name__
    if patterns is None:
        names = default_masked_names(module)
        if not names:
            params = [n for n, _ in module.named_parameters()]
            raise MaskSelectionError(
                f"model {what} has no conv or linear layer to mask (parameters: "
                f"{_short_list(params) or 'none'}); name the ones to mask with "
                f"[model] masked = [\"pattern\", ...]")
        return names
    params = dict(module.named_parameters())
    chosen: set[str] = set()
    for pat in patterns:
        hits = [n for n in params if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            raise MaskSelectionError(f"model.masked: pattern {pat!r} matches no parameter of "
                                     f"{what} (parameters: {_short_list(list(params)) or 'none'})")
        chosen.update(hits)
    scalars = [n for n in chosen if params[n].dim() == 0]
    if scalars:
        raise MaskSelectionError(f"model.masked: {_short_list(sorted(scalars))} of {what} "
                                 f"is a scalar; a mask needs at least one dimension")
    return [n for n in params if n in chosen]


def weights_digest(module: nn.Module) -> str:
    """SHA-256 (hex) of every parameter and buffer: names, dtypes, shapes and bytes. Equal
    digests on two nodes mean bit-identical shared weights."""
    h = hashlib.sha256()
    for kind, items in (("param", module.named_parameters()), ("buffer", module.named_buffers())):
        for name, t in items:
            t = t.detach().to("cpu").contiguous()
            h.update(f"{kind}:{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class MaskedModel:
    """A frozen module plus the names and shared values of its masked weights.

    `retention_scaled` (the "-scaled" weight inits): a node keeping a random or learned fraction
    r of a layer uses w / sqrt(r) there (`fixed_weights`), so the kept fan-in keeps the variance
    of the full layer and an untrained sparse network is as input-dependent as the dense one.
    """

    def __init__(self, module: nn.Module, masked: Sequence[str] | None = None,
                 retention_scaled: bool = False) -> None:
        self.module = module
        self.retention_scaled = retention_scaled
        for p in module.parameters():
            p.requires_grad_(False)
        self.names: list[str] = select_masked(module, masked)
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

    def buffers_state(self) -> dict[str, torch.Tensor]:
        """The module's buffers (e.g. BatchNorm running statistics, which training updates):
        a node's checkpoint keeps them so a resumed node evaluates as it would have."""
        return {n: b.detach().clone() for n, b in self.module.named_buffers()}

    def load_buffers(self, state: Mapping[str, torch.Tensor]) -> None:
        buffers = dict(self.module.named_buffers())
        for n, t in state.items():
            if n in buffers:
                buffers[n].copy_(t)
