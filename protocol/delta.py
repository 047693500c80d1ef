"""The `delta` mask codec and the per-link state it needs.

Once training settles a node's mask changes little from round to round, so the XOR of this
round's mask with the one last sent *on the same link* is mostly zeros and entropy-codes to far
fewer bits than the mask itself. That makes the codec stateful: each direction of each link
(sender i -> receiver j) keeps one `CodecState`, the sender's holding the masks it last sent to j,
the receiver's the masks it last accepted from i; both sides see the same sequence of messages,
so both hold the same references.

Frame of one tensor (integers little-endian):

    byte 0     0 = key frame, 1 = delta frame
    key        an entropy frame (entropy.py) of the mask itself
    delta      uint32 CRC32 of the reference (its bit-packed bytes), then an entropy frame of
               mask XOR reference

Rules that keep both ends in step without any feedback channel:

- The sender sends a key frame when it has no reference for that tensor (first message, after
  `reset()`, after a shape change), every `key_interval` messages (so a receiver that lost a
  message, e.g. one dropped as malformed, or restarted, recovers within that many rounds), and
  whenever the key frame is estimated smaller than the delta (early rounds, when masks churn).
- The receiver decodes a delta frame only against a reference of the same shape whose CRC32 is
  the one in the frame; otherwise the message is refused with ProtocolError("reference"), never
  silently decoded against the wrong mask.
- State changes only once a whole message has been encoded (sender) or accepted by the decoder
  (receiver): a refused message leaves the receiver's references untouched. A message the
  decoder accepted but the round loop then drops (stale, duplicate, too far ahead, refused by
  the algorithm) still advances the reference, because the sender's reference advanced too.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .codecs import Buffer, StatefulCodec, numel, register_codec
from .entropy import decode_bits, encode_bits
from .errors import ProtocolError

KEY = 0
DELTA = 1
DEFAULT_KEY_INTERVAL = 20  # a key frame at least every this many messages per tensor and link


@dataclass
class Reference:
    """The last mask of one tensor on one link: bit-packed (wire layout, 1/8 byte per entry so
    a node keeps little per link), its shape and the CRC32 of the packed bytes."""

    packed: np.ndarray  # uint8
    shape: tuple[int, ...]
    crc: int
    since_key: int = 0  # delta frames sent/accepted since the last key frame


def _pack(bits: np.ndarray) -> np.ndarray:
    return np.packbits(bits, bitorder="big")


def _unpack(packed: np.ndarray, n: int) -> np.ndarray:
    return np.unpackbits(packed, count=n, bitorder="big").view(np.bool_)


def crc_of(packed: np.ndarray) -> int:
    """CRC32 of a bit-packed mask (the same bytes the raw codec would send)."""
    return zlib.crc32(packed.tobytes())


@dataclass
class CodecState:
    """One direction of one link: the reference mask per tensor name.

    The round loop holds one per neighbour for what it sends and one per neighbour for what it
    receives; the in-process driver one per ordered pair of nodes."""

    key_interval: int = DEFAULT_KEY_INTERVAL
    refs: dict[str, Reference] = field(default_factory=dict)
    key_frames: int = 0  # frames of each kind this state has produced/accepted (for reports)
    delta_frames: int = 0

    def __post_init__(self) -> None:
        if self.key_interval < 1:
            raise ValueError(f"key_interval must be >= 1, got {self.key_interval}")

    def reset(self) -> None:
        """Forget every reference: the next frame of each tensor is a key frame."""
        self.refs.clear()

    def commit(self, updates: dict[str, tuple[Reference, bool]]) -> None:
        """Apply the updates of one whole message (tensor name -> (new reference, is key))."""
        for name, (ref, is_key) in updates.items():
            self.refs[name] = ref
            if is_key:
                self.key_frames += 1
            else:
                self.delta_frames += 1


def _h2(ones: int, n: int) -> float:
    """n * H(ones/n): what an ideal entropy coder spends, in bits."""
    if ones <= 0 or ones >= n:
        return 0.0
    p = ones / n
    return -n * (p * math.log2(p) + (1 - p) * math.log2(1 - p))


class DeltaCodec(StatefulCodec):
    """Bool masks as the entropy-coded change from the mask last sent on the link."""

    name = "delta"
    dtypes = frozenset({torch.bool})

    def encode_with(self, name: str, t: torch.Tensor,
                    state: CodecState) -> tuple[bytes, tuple[Reference, bool]]:
        self._check_dtype(t)
        shape = tuple(int(d) for d in t.shape)
        bits = t.detach().cpu().contiguous().reshape(-1).numpy()
        n = bits.size
        packed = _pack(bits)
        crc = crc_of(packed)
        ref = state.refs.get(name)
        diff = None
        if ref is not None and ref.shape == shape and ref.since_key + 1 < state.key_interval:
            diff = _unpack(np.bitwise_xor(packed, ref.packed), n)
            if _h2(int(np.count_nonzero(diff)), n) >= _h2(int(np.count_nonzero(bits)), n):
                diff = None  # the mask itself is cheaper (masks still churning)
        if diff is None:
            return bytes([KEY]) + encode_bits(bits), (Reference(packed, shape, crc, 0), True)
        frame = bytes([DELTA]) + struct.pack("<I", ref.crc) + encode_bits(diff)
        return frame, (Reference(packed, shape, crc, ref.since_key + 1), False)

    def decode_with(self, name: str, data: Buffer, shape: Sequence[int], dtype: torch.dtype,
                    state: CodecState | None) -> tuple[torch.Tensor, tuple[Reference, bool]]:
        shape = tuple(int(d) for d in shape)
        n = numel(shape)
        buf = memoryview(data).cast("B")
        if buf.nbytes < 1:
            raise ProtocolError("truncated", "empty delta frame")
        kind = buf[0]
        if kind == KEY:
            bits = decode_bits(buf[1:], n)
            packed = _pack(bits)
            update = (Reference(packed, shape, crc_of(packed), 0), True)
        elif kind == DELTA:
            if buf.nbytes < 5:
                raise ProtocolError("truncated", "delta frame without its reference CRC")
            (want,) = struct.unpack_from("<I", buf, 1)
            ref = state.refs.get(name) if state is not None else None
            if ref is None:
                raise ProtocolError("reference", f"delta frame for {name!r} but no reference "
                                                 "(a key frame was missed)")
            if ref.shape != shape or ref.crc != want:
                raise ProtocolError("reference", f"delta frame for {name!r} references mask "
                                                 f"crc {want:08x}{list(shape)}, receiver holds "
                                                 f"{ref.crc:08x}{list(ref.shape)}")
            packed = np.bitwise_xor(_pack(decode_bits(buf[5:], n)), ref.packed)
            bits = _unpack(packed, n)
            update = (Reference(packed, shape, crc_of(packed), ref.since_key + 1), False)
        else:
            raise ProtocolError("schema", f"delta frame type {kind} (known: 0 key, 1 delta)")
        tensor = torch.from_numpy(bits.copy()).reshape(shape)
        return tensor, update


register_codec(DeltaCodec())
