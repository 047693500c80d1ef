"""The message envelope: a msgpack header frame followed by one raw frame per tensor.

Layout of one ZeroMQ multipart message (all integers in the header are non-negative):

    frame 0   msgpack map, exactly these keys
              data:     {"v": 1, "t": "data", "run": str, "rnd": int, "ph": int, "src": int,
                         "kind": str, "tensors": [[name, dtype, shape, codec, nbytes], ...]}
              control:  {"v": 1, "t": "hello" | "hello_ack" | "metrics" | "bye", "run": str,
                         "src": int, **body}   (body keys per type, see CONTROL_SCHEMAS)
    frame 1+i raw bytes of tensor i, exactly `nbytes` long (data messages only)

A tensor's codec is named in its header entry (codecs.py): bool masks go as `bits` (raw),
`entropy` or `delta`; the stateful `delta` needs the link's `CodecState` on both ends
(`encode_payload(..., state=)`, `decode_message(..., state=)`), which moves only when a whole
message is encoded or accepted.

Tensor bytes stay out of msgpack so large tensors are neither copied into nor parsed out of the
header, and the header stays small enough to be checked in full before anything is allocated.

Decoding trusts nothing: sizes are bounded before parsing, msgpack runs with explicit limits, the
schema is exact (every key, every type, no extras), shapes are bounded before any tensor is built,
and every frame length must match both the header and the codec. The only exception that ever
leaves `decode_message`/`decode_payload` is ProtocolError (anything unexpected is wrapped), so a
node can drop and count a bad message without a catch-all of its own. Encoders run the same checks
on what they are about to send, raising ValueError/TypeError for a caller's mistake.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import torch

from .codecs import (
    DTYPE_NAMES,
    DTYPES_BY_NAME,
    StatefulCodec,
    codec_for,
    get_codec,
    mask_codec_wire_name,
)
from .delta import CodecState
from .errors import ProtocolError
from .payload import Payload

FORMAT_VERSION = 1
DATA = "data"
MAX_INT = 2**63 - 1  # ints in headers fit a signed 64-bit integer

Frame = bytes | bytearray | memoryview


@dataclass(frozen=True)
class Limits:
    """Bounds applied to every incoming message before anything large is built."""

    max_message_bytes: int = 256 * 2**20  # sum of all frame lengths
    max_header_bytes: int = 64 * 2**10  # the msgpack frame (the unpacker's buffer)
    max_tensors: int = 64
    max_entries: int = 2**28  # entries per tensor (product of the shape)
    max_ndim: int = 8
    max_name_len: int = 128  # tensor names, payload kind, config hash, metric keys
    max_str_len: int = 4096  # any string in the header (run id, reasons, metric values)
    max_metrics_keys: int = 64


DEFAULT_LIMITS = Limits()


@dataclass
class DataMessage:
    """A decoded payload and where it belongs (round, phase) and who sent it."""

    round: int
    phase: int
    sender: int
    payload: Payload


@dataclass
class ControlMessage:
    """A decoded control message: `type` is the "t" field, `body` its type-specific keys."""

    type: str
    sender: int
    body: dict[str, Any] = field(default_factory=dict)


Message = DataMessage | ControlMessage


# --------------------------------------------------------------------------- field checks

def _fail(reason: str, msg: str) -> ProtocolError:
    return ProtocolError(reason, msg)


def _int(v: Any, what: str, hi: int = MAX_INT) -> int:
    # type() not isinstance(): bool is an int subclass and must not pass as a round number
    if type(v) is not int:
        raise _fail("schema", f"{what} must be int, got {type(v).__name__}")
    if not 0 <= v <= hi:
        raise _fail("schema", f"{what} = {v} out of range [0, {hi}]")
    return v


def _str(v: Any, what: str, max_len: int, *, nonempty: bool = True) -> str:
    if type(v) is not str:
        raise _fail("schema", f"{what} must be str, got {type(v).__name__}")
    if len(v) > max_len:
        raise _fail("oversize", f"{what} longer than {max_len} characters")
    if nonempty and not v:
        raise _fail("schema", f"{what} must not be empty")
    return v


def _bool(v: Any, what: str) -> bool:
    if type(v) is not bool:
        raise _fail("schema", f"{what} must be bool, got {type(v).__name__}")
    return v


def _exact_keys(header: dict[str, Any], keys: Sequence[str], what: str) -> None:
    got, want = set(header), set(keys)
    if got != want:
        missing, extra = sorted(want - got), sorted(map(str, got - want))
        raise _fail("schema", f"{what} header keys: missing {missing}, unexpected {extra}")


# --------------------------------------------------------------------------- control schemas

def _metrics_record(v: Any, limits: Limits) -> dict[str, Any]:
    """A flat map str -> int | float | str | bool | None, bounded in keys and string sizes."""
    if type(v) is not dict:
        raise _fail("schema", f"metrics record must be a map, got {type(v).__name__}")
    if len(v) > limits.max_metrics_keys:
        raise _fail("oversize", f"metrics record has {len(v)} keys > {limits.max_metrics_keys}")
    for key, val in v.items():
        _str(key, "metrics key", limits.max_name_len)
        if val is None or isinstance(val, (bool, int, float)):
            continue
        if isinstance(val, str):
            _str(val, f"metrics value {key!r}", limits.max_str_len, nonempty=False)
            continue
        raise _fail("schema", f"metrics value {key!r} has type {type(val).__name__}; "
                              "allowed: int, float, str, bool, None")
    return v


MAX_WAITING_PEERS = 1024  # node ids listed in one status message


def _int_list(v: Any, what: str) -> list[int]:
    if type(v) is not list:
        raise _fail("schema", f"{what} must be a list, got {type(v).__name__}")
    if len(v) > MAX_WAITING_PEERS:
        raise _fail("oversize", f"{what} has {len(v)} entries > {MAX_WAITING_PEERS}")
    return [_int(x, f"{what} entry") for x in v]


def _seconds(v: Any, what: str) -> float:
    if type(v) is not float or not 0.0 <= v < 1e9:  # NaN fails the comparison too
        raise _fail("schema", f"{what} must be a float in [0, 1e9), got {v!r}")
    return v


_Check = Callable[[Any, Limits], Any]

# Body keys and their checks for each control message type.
CONTROL_SCHEMAS: dict[str, dict[str, _Check]] = {
    # handshake: run id, sender and format version are in the envelope; the config hash is here
    "hello": {"config_hash": lambda v, lim: _str(v, "config_hash", lim.max_name_len)},
    "hello_ack": {
        "accept": lambda v, lim: _bool(v, "accept"),
        "reason": lambda v, lim: _str(v, "reason", lim.max_str_len, nonempty=False),
    },
    "metrics": {"record": _metrics_record},
    # a node that has waited in a phase: for which neighbours, for how long (dashboard)
    "status": {
        "round": lambda v, lim: _int(v, "round"),
        "phase": lambda v, lim: _int(v, "phase"),
        "waiting_for": lambda v, lim: _int_list(v, "waiting_for"),
        "waited_s": lambda v, lim: _seconds(v, "waited_s"),
    },
    "bye": {
        "status": lambda v, lim: _str(v, "status", lim.max_name_len),
        "reason": lambda v, lim: _str(v, "reason", lim.max_str_len, nonempty=False),
    },
}
_ENVELOPE_KEYS = ("v", "t", "run", "src")
_DATA_KEYS = ("v", "t", "run", "rnd", "ph", "src", "kind", "tensors")


# --------------------------------------------------------------------------- header checks

def _check_envelope(header: Any, run_id: str, limits: Limits) -> str:
    """Version, type and run first, so a peer of another version or run gets a precise reason."""
    if type(header) is not dict:
        raise _fail("garbage", f"header must be a msgpack map, got {type(header).__name__}")
    if "v" not in header:
        raise _fail("schema", "header has no format version 'v'")
    v = header["v"]
    if type(v) is not int:
        raise _fail("schema", f"format version must be int, got {type(v).__name__}")
    if v != FORMAT_VERSION:
        raise _fail("version", f"wire format version {v}, this node speaks {FORMAT_VERSION}")
    t = header.get("t")
    if type(t) is not str or (t != DATA and t not in CONTROL_SCHEMAS):
        raise _fail("schema", f"unknown message type {t!r}")
    run = _str(header.get("run"), "run id", limits.max_str_len, nonempty=False)
    if run != run_id:
        raise _fail("run_id", f"message for run {run!r}, this node is in run {run_id!r}")
    return t


def _check_shape(shape: Any, what: str, limits: Limits) -> tuple[int, ...]:
    if type(shape) is not list:
        raise _fail("schema", f"{what} shape must be a list, got {type(shape).__name__}")
    if len(shape) > limits.max_ndim:
        raise _fail("oversize", f"{what} has {len(shape)} dims > {limits.max_ndim}")
    n = 1
    for d in shape:
        if type(d) is not int or d < 0:
            raise _fail("schema", f"{what} shape {shape!r} must hold non-negative ints")
        if d > limits.max_entries:
            raise _fail("oversize", f"{what} dim {d} > {limits.max_entries} entries")
        n *= d  # each factor <= max_entries, so n stays a small int until compared
        if n > limits.max_entries:
            raise _fail("oversize", f"{what} shape {shape} exceeds {limits.max_entries} entries")
    return tuple(shape)


@dataclass
class _TensorSpec:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    codec: str
    nbytes: int


def _check_data_header(header: dict[str, Any], limits: Limits) -> list[_TensorSpec]:
    _exact_keys(header, _DATA_KEYS, "data")
    for key in ("rnd", "ph", "src"):
        _int(header[key], key)
    _str(header["kind"], "payload kind", limits.max_name_len)
    tensors = header["tensors"]
    if type(tensors) is not list:
        raise _fail("schema", f"tensors must be a list, got {type(tensors).__name__}")
    if len(tensors) > limits.max_tensors:
        raise _fail("oversize", f"{len(tensors)} tensors > {limits.max_tensors}")
    specs: list[_TensorSpec] = []
    seen: set[str] = set()
    for i, entry in enumerate(tensors):
        if type(entry) is not list or len(entry) != 5:
            raise _fail("schema", f"tensor entry {i} must be [name, dtype, shape, codec, nbytes]")
        name, dname, shape, cname, nbytes = entry
        name = _str(name, f"tensor {i} name", limits.max_name_len)
        if name in seen:
            raise _fail("schema", f"duplicate tensor name {name!r}")
        seen.add(name)
        if type(dname) is not str or dname not in DTYPES_BY_NAME:
            raise _fail("schema", f"tensor {name!r}: unknown dtype {dname!r}")
        dtype = DTYPES_BY_NAME[dname]
        dims = _check_shape(shape, f"tensor {name!r}", limits)
        if type(cname) is not str:
            raise _fail("schema", f"tensor {name!r}: codec must be str")
        try:
            codec = get_codec(cname)
        except KeyError:
            raise _fail("schema", f"tensor {name!r}: unknown codec {cname!r}") from None
        if dtype not in codec.dtypes:
            raise _fail("schema", f"tensor {name!r}: codec {cname!r} cannot carry {dname}")
        nbytes = _int(nbytes, f"tensor {name!r} nbytes", limits.max_message_bytes)
        expected = codec.expected_nbytes(dims, dtype)
        if expected is not None and nbytes != expected:
            raise _fail("shape", f"tensor {name!r}: {cname} {dname}{list(dims)} needs "
                                 f"{expected} bytes, header says {nbytes}")
        specs.append(_TensorSpec(name, dtype, dims, cname, nbytes))
    return specs


def _check_control_header(t: str, header: dict[str, Any], limits: Limits) -> dict[str, Any]:
    schema = CONTROL_SCHEMAS[t]
    _exact_keys(header, (*_ENVELOPE_KEYS, *schema), t)
    _int(header["src"], "src")
    return {key: check(header[key], limits) for key, check in schema.items()}


# --------------------------------------------------------------------------- frames

def _as_buffer(frame: Any, i: int) -> memoryview:
    """Any bytes-like frame (bytes, memoryview, zmq.Frame) as a flat byte view."""
    try:
        return memoryview(frame).cast("B")
    except (TypeError, ValueError):
        raise _fail("frames", f"frame {i} is not a contiguous byte buffer "
                              f"({type(frame).__name__})") from None


def _as_buffers(frames: Any, limits: Limits) -> list[memoryview]:
    if not isinstance(frames, (list, tuple)):
        raise _fail("frames", f"frames must be a list, got {type(frames).__name__}")
    if not frames:
        raise _fail("truncated", "empty message")
    if len(frames) > limits.max_tensors + 1:
        raise _fail("oversize", f"{len(frames)} frames > {limits.max_tensors + 1}")
    bufs = [_as_buffer(f, i) for i, f in enumerate(frames)]
    total = sum(b.nbytes for b in bufs)
    if total > limits.max_message_bytes:
        raise _fail("oversize", f"message of {total} bytes > {limits.max_message_bytes}")
    return bufs


def message_size(frames: Sequence[Frame]) -> int:
    """Bytes handed to ZeroMQ for this message: the sum of its frame lengths."""
    return sum(memoryview(f).nbytes for f in frames)


def _unpack_header(buf: memoryview, limits: Limits) -> Any:
    if buf.nbytes > limits.max_header_bytes:
        raise _fail("oversize", f"header of {buf.nbytes} bytes > {limits.max_header_bytes}")
    try:
        return msgpack.unpackb(
            buf,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=limits.max_str_len,
            max_bin_len=limits.max_str_len,
            max_array_len=max(limits.max_tensors, limits.max_ndim, 5),
            max_map_len=max(len(_DATA_KEYS), limits.max_metrics_keys) + len(_ENVELOPE_KEYS),
            max_ext_len=0,  # no extension types (timestamps included) anywhere in a header
        )
    except msgpack.ExtraData:
        raise _fail("garbage", "trailing bytes after the header map") from None
    except ValueError as e:  # FormatError, StackError, UnicodeDecodeError and limits
        text = str(e)
        if "incomplete input" in text:
            raise _fail("truncated", "header frame ends mid-object") from None
        if "max_ext_len" in text:
            raise _fail("schema", "msgpack extension types are not allowed") from None
        if "exceeds max_" in text:
            raise _fail("oversize", f"header: {text}") from None
        raise _fail("garbage", f"header is not msgpack ({type(e).__name__}: {text})") from None


# --------------------------------------------------------------------------- decode

def _decode(frames: Any, run_id: str, limits: Limits, state: CodecState | None) -> Message:
    bufs = _as_buffers(frames, limits)
    header = _unpack_header(bufs[0], limits)
    t = _check_envelope(header, run_id, limits)
    if t != DATA:
        body = _check_control_header(t, header, limits)
        if len(bufs) != 1:
            raise _fail("frames", f"{t} message has {len(bufs) - 1} extra frames")
        return ControlMessage(type=t, sender=header["src"], body=body)

    specs = _check_data_header(header, limits)
    if len(bufs) != 1 + len(specs):
        raise _fail("frames", f"header declares {len(specs)} tensors, got {len(bufs) - 1} frames")
    tensors: dict[str, torch.Tensor] = {}
    updates: dict[str, Any] = {}
    for spec, buf in zip(specs, bufs[1:], strict=True):
        if buf.nbytes != spec.nbytes:
            reason = "truncated" if buf.nbytes < spec.nbytes else "length"
            raise _fail(reason, f"tensor {spec.name!r}: frame has {buf.nbytes} bytes, "
                                f"header says {spec.nbytes}")
        codec = get_codec(spec.codec)
        if isinstance(codec, StatefulCodec):
            tensor, updates[spec.name] = codec.decode_with(spec.name, buf, spec.shape, spec.dtype,
                                                           state)
        else:
            tensor = codec.decode(buf, spec.shape, spec.dtype)
        if tensor.dtype != spec.dtype or tuple(tensor.shape) != spec.shape:  # codec bug guard
            raise _fail("shape", f"tensor {spec.name!r}: codec {spec.codec} returned "
                                 f"{tensor.dtype}{list(tensor.shape)}")
        tensors[spec.name] = tensor
    payload = Payload(kind=header["kind"], tensors=tensors)
    if updates and state is not None:  # only a fully accepted message moves the references
        state.commit(updates)
    return DataMessage(round=header["rnd"], phase=header["ph"], sender=header["src"],
                       payload=payload)


def decode_message(frames: Sequence[Frame], *, run_id: str, limits: Limits = DEFAULT_LIMITS,
                   state: CodecState | None = None) -> Message:
    """Decode one multipart message from the network; ProtocolError is the only exception.

    `state` is the receiving side's CodecState of the link the message came in on; it is needed
    for delta-coded tensors and updated only when the whole message is accepted."""
    try:
        return _decode(frames, run_id, limits, state)
    except ProtocolError:
        raise
    except Exception as e:  # a decoder bug or an input we did not foresee: still just a bad message
        raise ProtocolError("garbage", f"undecodable message ({type(e).__name__}: {e})") from e


def decode_payload(frames: Sequence[Frame], *, run_id: str, limits: Limits = DEFAULT_LIMITS,
                   state: CodecState | None = None) -> DataMessage:
    """Like decode_message, but only a data message is acceptable."""
    msg = decode_message(frames, run_id=run_id, limits=limits, state=state)
    if not isinstance(msg, DataMessage):
        raise ProtocolError("schema", f"expected a data message, got {msg.type!r}")
    return msg


# --------------------------------------------------------------------------- encode

def _pack_header(header: dict[str, Any], limits: Limits) -> bytes:
    try:
        packed = msgpack.packb(header, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"header cannot be encoded: {e}") from e
    if len(packed) > limits.max_header_bytes:
        raise ValueError(f"header of {len(packed)} bytes > {limits.max_header_bytes}")
    return packed


def encode_payload(payload: Payload, *, run_id: str, round: int, phase: int, sender: int,
                   codec_overrides: dict[str, str] | None = None,
                   mask_codec: str | None = None, state: CodecState | None = None,
                   limits: Limits = DEFAULT_LIMITS) -> list[bytes]:
    """Header frame + one frame per tensor.

    `mask_codec` picks the codec of every bool tensor (config name "raw"/"entropy"/"delta" or a
    wire name; default raw bits); `codec_overrides` maps tensor name -> codec name and wins over
    it. A stateful codec (delta) needs `state`, the sending side's CodecState of the link the
    frames will travel on; it is updated once the whole message is encoded.

    Raises ValueError/TypeError when the message would be refused by a receiver using `limits`.
    """
    overrides = dict(codec_overrides or {})
    unknown = set(overrides) - set(payload.tensors)
    if unknown:
        raise ValueError(f"codec_overrides name tensors not in the payload: {sorted(unknown)}")
    mask_wire = mask_codec_wire_name(mask_codec) if mask_codec is not None else None
    entries: list[list[Any]] = []
    frames: list[bytes] = []
    updates: dict[str, Any] = {}
    for name, t in payload.tensors.items():
        if t.dtype not in DTYPE_NAMES:
            raise TypeError(f"tensor {name!r} has dtype {t.dtype}, not a wire dtype")
        cname = overrides.get(name) or (mask_wire if t.dtype == torch.bool else None)
        if cname is not None:
            try:
                codec = get_codec(cname)
            except KeyError:
                raise ValueError(f"unknown codec {cname!r} for {name!r}") from None
        else:
            codec = codec_for(t.dtype)
        if t.dtype not in codec.dtypes:
            raise ValueError(f"codec {codec.name!r} cannot carry {t.dtype} tensor {name!r}")
        if isinstance(codec, StatefulCodec):
            if state is None:
                raise ValueError(f"codec {codec.name!r} is stateful: pass the link's CodecState")
            data, updates[name] = codec.encode_with(name, t, state)
        else:
            data = codec.encode(t)
        entries.append([name, DTYPE_NAMES[t.dtype], list(t.shape), codec.name, len(data)])
        frames.append(data)
    header = {"v": FORMAT_VERSION, "t": DATA, "run": run_id, "rnd": round, "ph": phase,
              "src": sender, "kind": payload.kind, "tensors": entries}
    try:
        _check_envelope(header, run_id, limits)
        _check_data_header(header, limits)
    except ProtocolError as e:
        raise ValueError(f"refusing to send: {e}") from None
    if sum(map(len, frames)) > limits.max_message_bytes:
        raise ValueError(f"message larger than {limits.max_message_bytes} bytes")
    out = [_pack_header(header, limits), *frames]
    if updates and state is not None:
        state.commit(updates)
    return out


def encode_metrics(record: dict[str, Any], *, run_id: str, sender: int,
                   size_key: str = "bytes_sent_metrics",
                   limits: Limits = DEFAULT_LIMITS) -> list[bytes]:
    """A metrics message whose record states its own size: `record[size_key]` is set to the
    exact byte count of the message carrying it (the record is updated in place)."""
    size = 0
    for _ in range(8):  # msgpack int width grows at 128/256/65536...: converges in <= 3 steps
        record[size_key] = size
        frames = encode_control("metrics", {"record": record}, run_id=run_id, sender=sender,
                                limits=limits)
        new = message_size(frames)
        if new == size:
            return frames
        size = new
    raise RuntimeError("metrics record size did not converge")  # pragma: no cover


def encode_control(t: str, body: dict[str, Any], *, run_id: str, sender: int,
                   limits: Limits = DEFAULT_LIMITS) -> list[bytes]:
    """One-frame control message of type `t` (see CONTROL_SCHEMAS for each body)."""
    if t not in CONTROL_SCHEMAS:
        raise ValueError(f"unknown control message type {t!r}; known: {sorted(CONTROL_SCHEMAS)}")
    header = {"v": FORMAT_VERSION, "t": t, "run": run_id, "src": sender, **body}
    if len(header) != len(_ENVELOPE_KEYS) + len(body):
        raise ValueError(f"{t} body may not use envelope keys {_ENVELOPE_KEYS}")
    try:
        _check_envelope(header, run_id, limits)
        _check_control_header(t, header, limits)
    except ProtocolError as e:
        raise ValueError(f"refusing to send: {e}") from None
    return [_pack_header(header, limits)]
