"""The `entropy` mask codec: a mask with a ones-fraction p costs about H(p) bits per entry.

Two passes: count the ones k of the n entries, send k, then code every entry with the fixed
model Bernoulli(k/n) using an asymmetric numeral system (constriction's `AnsCoder`, a well-kept
Rust entropy-coding library). At p = 0.1 that is ~0.47 bit per entry instead of raw's 1 bit;
a whole layer kept or dropped (k = 0 or n) costs the count alone.

Frame (all integers little-endian):

    byte 0    mode: 0 = raw fallback, 1 = ANS
    mode 0    the raw bit-packed mask (bitpack.py layout, exactly ceil(n/8) bytes): used when it is
              not larger than the ANS frame, so this codec never costs more than raw + 1 byte
    mode 1    uint32 k (ones), then the ANS words (uint32 each); no words when k is 0 or n

Decoding is strict: k <= n, whole words, the ANS stream must be consumed exactly, and the decoded
mask must hold exactly k ones; anything else is a ProtocolError. The decoder works in chunks so
its memory stays at the size of the output mask (n is bounded by `Limits.max_entries` upstream).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import torch

from .bitpack import _check_bytes, packed_nbytes
from .codecs import Buffer, Codec, numel, register_codec
from .errors import ProtocolError

MODE_RAW = 0
MODE_ANS = 1
_DECODE_CHUNK = 1 << 20  # entries decoded per call (bounds the int32 scratch buffer)


def _constriction():  # imported lazily: only the entropy and delta codecs need it
    try:
        import constriction
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise RuntimeError("the entropy and delta mask codecs need the 'constriction' package "
                           "(pip install constriction)") from exc
    return constriction


def _model(k: int, n: int):
    # perfect=False: constriction's recommended, faster quantisation (at most a hair above H(p))
    return _constriction().stream.model.Bernoulli(k / n, perfect=False)


def encode_bits(flat: np.ndarray) -> bytes:
    """Flat numpy bool array -> entropy frame (smaller of ANS and raw, plus the mode byte)."""
    n = int(flat.size)
    k = int(np.count_nonzero(flat))
    raw_len = packed_nbytes(n)
    body = struct.pack("<I", k)
    if 0 < k < n:
        coder = _constriction().stream.stack.AnsCoder()
        coder.encode_reverse(flat.astype(np.int32), _model(k, n))
        body += coder.get_compressed().astype("<u4", copy=False).tobytes()
    if len(body) >= raw_len:
        return bytes([MODE_RAW]) + np.packbits(flat, bitorder="big").tobytes()
    return bytes([MODE_ANS]) + body


def decode_bits(data: Buffer, n: int) -> np.ndarray:
    """Entropy frame -> flat numpy bool array of n entries; ProtocolError on any inconsistency."""
    buf = memoryview(data).cast("B")
    if buf.nbytes < 1:
        raise ProtocolError("truncated", "empty entropy frame")
    mode = buf[0]
    if mode == MODE_RAW:
        body = _check_bytes(buf[1:], n)
        return np.unpackbits(np.frombuffer(body, dtype=np.uint8), count=n,
                             bitorder="big").view(np.bool_)
    if mode != MODE_ANS:
        raise ProtocolError("schema", f"entropy frame mode {mode} (known: 0 raw, 1 ANS)")
    if buf.nbytes < 5:
        raise ProtocolError("truncated", f"entropy frame of {buf.nbytes} bytes has no count")
    (k,) = struct.unpack_from("<I", buf, 1)
    if k > n:
        raise ProtocolError("shape", f"entropy frame says {k} ones in {n} entries")
    rest = buf[5:]
    if rest.nbytes % 4:
        raise ProtocolError("length", f"ANS stream of {rest.nbytes} bytes is not whole words")
    if k == 0 or k == n:
        if rest.nbytes:
            raise ProtocolError("length", f"constant mask ({k} ones of {n}) with a coded stream")
        return np.full(n, k == n, dtype=np.bool_)
    if not rest.nbytes:
        raise ProtocolError("truncated", f"{k} ones of {n} entries but no coded stream")
    words = np.frombuffer(rest, dtype="<u4").astype(np.uint32)
    cs = _constriction()
    try:
        coder = cs.stream.stack.AnsCoder(words)
    except ValueError as exc:  # e.g. a stream ending in a zero word
        raise ProtocolError("garbage", f"ANS stream: {exc}") from None
    model = _model(k, n)
    out = np.empty(n, dtype=np.bool_)
    for lo in range(0, n, _DECODE_CHUNK):
        hi = min(n, lo + _DECODE_CHUNK)
        out[lo:hi] = coder.decode(model, hi - lo)
    if not coder.is_empty():
        raise ProtocolError("length", "ANS stream has data left after the last entry")
    ones = int(np.count_nonzero(out))
    if ones != k:
        raise ProtocolError("garbage", f"ANS stream decodes to {ones} ones, header says {k}")
    return out


def _flat(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().contiguous().reshape(-1).numpy()


class EntropyCodec(Codec):
    """Bool masks at about H(ones fraction) bits per entry (see the module docstring)."""

    name = "entropy"
    dtypes = frozenset({torch.bool})

    def encode(self, t: torch.Tensor) -> bytes:
        self._check_dtype(t)
        return encode_bits(_flat(t))

    def decode(self, data: Buffer, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        shape = tuple(int(d) for d in shape)
        flat = decode_bits(data, numel(shape))
        return torch.from_numpy(np.ascontiguousarray(flat)).reshape(shape)


register_codec(EntropyCodec())
