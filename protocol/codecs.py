"""Tensor codecs: how one tensor becomes one raw frame, chosen by name per tensor per message.

A codec is one small class registered under a short name; the header names the codec of every
tensor, so a sender may pick a different codec per message (e.g. a compressing mask codec when it
pays off) and the receiver needs no negotiation. Adding a codec = one subclass + `register_codec`.

Mask codecs (what `run.codec` / `mcepl launch --codec` picks; all lossless):

    config name   wire name   frame
    raw           bits        1 bit per entry (bitpack.py)
    entropy       entropy     arithmetic (ANS) coded with a Bernoulli(ones/n) model (entropy.py)
    delta         delta       XOR with the mask last sent on this link, entropy coded (delta.py)

`delta` is a *stateful* codec: it needs the per-link `CodecState` that `encode_payload` and
`decode_message` take as `state=`; stateless codecs never see it.

Contract for `decode`: the caller (message.py) has already checked the shape against the size
limits and that the frame has the declared length; the codec must check that the bytes are exactly
what it needs for that shape and raise ProtocolError otherwise, never allocating more than the
shape implies. Fixed-size codecs say their size up front (`expected_nbytes`) so the envelope can
refuse a bad length before calling them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from mcepl.registry import MASK_CODECS as _MASK_CODECS

from .bitpack import pack_mask, packed_nbytes, unpack_mask
from .errors import ProtocolError

Buffer = bytes | bytearray | memoryview

# Wire names of the dtypes a payload may carry (see payload.WIRE_DTYPES).
DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.bool: "bool",
    torch.float32: "float32",
    torch.int64: "int64",
}
DTYPES_BY_NAME: dict[str, torch.dtype] = {v: k for k, v in DTYPE_NAMES.items()}


def numel(shape: Sequence[int]) -> int:
    """Number of entries of a shape (1 for a scalar)."""
    n = 1
    for d in shape:
        n *= int(d)
    return n


class Codec(ABC):
    """Turns a tensor of one of `dtypes` into bytes and back, given the shape from the header."""

    name: ClassVar[str]
    dtypes: ClassVar[frozenset[torch.dtype]]

    @abstractmethod
    def encode(self, t: torch.Tensor) -> bytes:
        """Tensor -> frame bytes (row-major)."""

    @abstractmethod
    def decode(self, data: Buffer, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        """Frame bytes -> tensor of `shape` and `dtype`; ProtocolError on any inconsistency."""

    def expected_nbytes(self, shape: Sequence[int], dtype: torch.dtype) -> int | None:
        """Exact frame length for this shape, or None for variable-length (compressing) codecs."""
        return None

    def _check_dtype(self, t: torch.Tensor) -> None:
        if t.dtype not in self.dtypes:
            raise TypeError(f"codec {self.name!r} cannot encode {t.dtype}")


class StatefulCodec(Codec):
    """A codec whose frames depend on what was sent before on the same link (see delta.py).

    `encode_with`/`decode_with` get the link's `CodecState` and return, besides the frame or
    tensor, the state update to apply once the whole message has been encoded or accepted, so a
    refused message never moves the state."""

    def encode(self, t: torch.Tensor) -> bytes:
        raise ValueError(f"codec {self.name!r} is stateful: pass the link's CodecState "
                         "(encode_payload(..., state=...))")

    def decode(self, data: Buffer, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        raise ProtocolError("reference", f"{self.name}-coded tensor but the receiver keeps no "
                                         "codec state for this link")

    @abstractmethod
    def encode_with(self, name: str, t: torch.Tensor, state: Any) -> tuple[bytes, Any]:
        """(frame, update) for tensor `name`; `state.commit({name: update})` after sending."""

    @abstractmethod
    def decode_with(self, name: str, data: Buffer, shape: Sequence[int], dtype: torch.dtype,
                    state: Any) -> tuple[torch.Tensor, Any]:
        """(tensor, update); ProtocolError("reference") when the state does not match."""


class BitsCodec(Codec):
    """Bool masks, 1 bit per entry (see bitpack.py)."""

    name = "bits"
    dtypes = frozenset({torch.bool})

    def encode(self, t: torch.Tensor) -> bytes:
        self._check_dtype(t)
        return pack_mask(t)

    def decode(self, data: Buffer, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        return unpack_mask(data, shape)

    def expected_nbytes(self, shape: Sequence[int], dtype: torch.dtype) -> int:
        return packed_nbytes(numel(shape))


class RawCodec(Codec):
    """Fixed-width little-endian numbers, no compression."""

    np_dtype: ClassVar[np.dtype]

    def encode(self, t: torch.Tensor) -> bytes:
        self._check_dtype(t)
        arr = t.detach().cpu().contiguous().reshape(-1).numpy()
        return arr.astype(self.np_dtype, copy=False).tobytes()

    def decode(self, data: Buffer, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        shape = tuple(int(d) for d in shape)
        buf = memoryview(data).cast("B")
        need = self.expected_nbytes(shape, dtype)
        if buf.nbytes != need:
            reason = "truncated" if buf.nbytes < need else "length"
            raise ProtocolError(reason, f"{self.name} tensor {shape} needs {need} bytes, "
                                        f"got {buf.nbytes}")
        # astype copies into a native, writable array that the tensor then owns
        arr = np.frombuffer(buf, dtype=self.np_dtype).astype(self.np_dtype.newbyteorder("="))
        return torch.from_numpy(arr).reshape(shape)

    def expected_nbytes(self, shape: Sequence[int], dtype: torch.dtype) -> int:
        return numel(shape) * self.np_dtype.itemsize


class F32Codec(RawCodec):
    name = "f32"
    dtypes = frozenset({torch.float32})
    np_dtype = np.dtype("<f4")


class I64Codec(RawCodec):
    name = "i64"
    dtypes = frozenset({torch.int64})
    np_dtype = np.dtype("<i8")


_REGISTRY: dict[str, Codec] = {}
_DEFAULTS: dict[torch.dtype, str] = {torch.bool: "bits", torch.float32: "f32", torch.int64: "i64"}


def register_codec(codec: Codec) -> Codec:
    """Make `codec` available under `codec.name` (names are unique: no silent replacement)."""
    if codec.name in _REGISTRY:
        raise ValueError(f"codec {codec.name!r} is already registered")
    unknown = set(codec.dtypes) - set(DTYPE_NAMES)
    if unknown:
        raise ValueError(f"codec {codec.name!r} declares non-wire dtypes {unknown}")
    _REGISTRY[codec.name] = codec
    return codec


def get_codec(name: str) -> Codec:
    """The codec registered as `name`; KeyError when unknown."""
    return _REGISTRY[name]


def codec_names() -> list[str]:
    """Registered codec names (for CLI help and error messages)."""
    return sorted(_REGISTRY)


# Mask codec names a user picks (config `run.codec`, `--codec`) -> wire name in the header; the
# registry lives at the bottom (mcepl.registry) so the config validates run.codec against it.
MASK_CODECS = _MASK_CODECS
MASK_CODECS.add("raw", "bits")
MASK_CODECS.add("entropy", "entropy")
MASK_CODECS.add("delta", "delta")


def mask_codec_wire_name(name: str) -> str:
    """Wire name of a mask codec given by its config name ("raw") or wire name ("bits")."""
    if name in MASK_CODECS:
        return MASK_CODECS[name]
    if name in MASK_CODECS.values():
        return name
    raise ValueError(f"unknown mask codec {name!r}; known: {', '.join(MASK_CODECS)}")


def codec_for(dtype: torch.dtype) -> Codec:
    """Default codec for a dtype: bits for masks, raw little-endian for numbers."""
    try:
        return _REGISTRY[_DEFAULTS[dtype]]
    except KeyError:
        raise TypeError(f"no codec for dtype {dtype}") from None


for _codec in (BitsCodec(), F32Codec(), I64Codec()):
    register_codec(_codec)
