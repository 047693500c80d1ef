"""What an algorithm hands to the transport: a kind tag and named tensors.

Kept free of sockets and of any algorithm so both sides can share it. Boolean tensors are
masks (bit-packed on the wire); float32 tensors travel as raw little-endian bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

WIRE_DTYPES = (torch.bool, torch.float32, torch.int64)


@dataclass
class Payload:
    """One message body: `kind` names what it is (e.g. "mask", "model"); tensors are ordered."""

    kind: str
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, t in self.tensors.items():
            if t.dtype not in WIRE_DTYPES:
                raise TypeError(f"payload tensor {name!r} has dtype {t.dtype}; "
                                f"allowed: {', '.join(str(d) for d in WIRE_DTYPES)}")

    def entries(self) -> dict[str, int]:
        """Raw information content: mask entries and real values (for the communication bill)."""
        masks = sum(t.numel() for t in self.tensors.values() if t.dtype == torch.bool)
        reals = sum(t.numel() for t in self.tensors.values() if t.dtype != torch.bool)
        return {"mask_entries": masks, "values": reals}

    def equal(self, other: Payload) -> bool:
        """Exact equality (used by tests and by duplicate detection)."""
        return (
            self.kind == other.kind
            and list(self.tensors) == list(other.tensors)
            and all(
                a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
                for a, b in zip(self.tensors.values(), other.tensors.values(), strict=True)
            )
        )
