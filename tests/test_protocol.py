"""Wire format: round trips, exact byte counts, and refusal of every kind of malformed input.

The decoder reads bytes from the network, so besides hand-written bad inputs a bounded hypothesis
fuzz checks that garbage and mutated valid messages only ever raise ProtocolError.
"""

from __future__ import annotations

import math
import time
from typing import Any

import msgpack
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcepl.protocol import (
    FORMAT_VERSION,
    REASONS,
    Codec,
    ControlMessage,
    DataMessage,
    Limits,
    Payload,
    ProtocolError,
    codec_for,
    decode_message,
    decode_payload,
    encode_control,
    encode_payload,
    get_codec,
    message_size,
    pack_mask,
    register_codec,
    unpack_mask,
)
from mcepl.protocol.bitpack import pack_mask_bitarray, unpack_mask_bitarray

RUN = "run-1"


def enc(payload: Payload, **kw: Any) -> list[bytes]:
    args: dict[str, Any] = {"run_id": RUN, "round": 3, "phase": 1, "sender": 7, **kw}
    return encode_payload(payload, **args)


def dec(frames: list[Any], **kw: Any) -> Any:
    return decode_message(frames, run_id=kw.pop("run_id", RUN), **kw)


def refused(frames: list[Any], reason: str | None = None, **kw: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        dec(frames, **kw)
    assert info.value.reason in REASONS
    if reason is not None:
        assert info.value.reason == reason, str(info.value)
    return info.value


def header_of(frames: list[bytes]) -> dict[str, Any]:
    return msgpack.unpackb(frames[0])


def with_header(frames: list[bytes], header: Any) -> list[bytes]:
    return [msgpack.packb(header), *frames[1:]]


def sample_payload() -> Payload:
    g = torch.Generator().manual_seed(0)
    return Payload("mask", {
        "m": torch.rand(13, generator=g) < 0.5,
        "w": torch.randn(3, 4, generator=g),
        "i": torch.arange(-5, 5, dtype=torch.int64),
    })


# --------------------------------------------------------------------------- bit packing

@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 13, 64, 1000, 12345])
def test_pack_mask_layout_and_reference(n: int) -> None:
    t = torch.rand(n) < 0.5
    data = pack_mask(t)
    assert len(data) == math.ceil(n / 8)
    assert data == pack_mask_bitarray(t)  # numpy fast path == bitarray reference, byte for byte
    assert torch.equal(unpack_mask(data, (n,)), t)
    assert torch.equal(unpack_mask_bitarray(data, (n,)), t)


def test_pack_mask_big_endian_row_major() -> None:
    t = torch.tensor([[True, False, False, False, False], [False, False, True, True, False]])
    assert pack_mask(t) == bytes([0b10000001, 0b10000000])  # 10000|001 10|000000
    assert torch.equal(unpack_mask(pack_mask(t), (2, 5)), t)


def test_pack_mask_noncontiguous() -> None:
    t = torch.rand(6, 5) < 0.5
    assert torch.equal(unpack_mask(pack_mask(t.T), (5, 6)), t.T.contiguous())


def test_unpack_mask_refuses_bad_length_and_padding() -> None:
    with pytest.raises(ProtocolError) as e:
        unpack_mask(b"\x00", (13,))
    assert e.value.reason == "truncated"
    with pytest.raises(ProtocolError) as e:
        unpack_mask(b"\x00\x00\x00", (13,))
    assert e.value.reason == "length"
    for bad in (b"\x00\x01", b"\x00\x04", b"\xff\xff"):  # 13 entries: low 3 bits of byte 2 pad
        with pytest.raises(ProtocolError) as e:
            unpack_mask(bad, (13,))
        assert e.value.reason == "padding"
        with pytest.raises(ProtocolError):
            unpack_mask_bitarray(bad, (13,))
    assert unpack_mask(b"\xff\xf8", (13,)).all()


def test_pack_mask_rejects_non_bool() -> None:
    with pytest.raises(TypeError):
        pack_mask(torch.zeros(3))


def test_mask_speed_1m() -> None:
    t = torch.rand(1_300_000) < 0.3
    start = time.perf_counter()
    for _ in range(10):
        assert torch.equal(unpack_mask(pack_mask(t), (1_300_000,)), t)
    assert time.perf_counter() - start < 1.0  # ~1 ms each in practice


# --------------------------------------------------------------------------- round trips

def test_round_trip_multi_tensor() -> None:
    p = sample_payload()
    msg = dec(enc(p))
    assert isinstance(msg, DataMessage)
    assert (msg.round, msg.phase, msg.sender) == (3, 1, 7)
    assert msg.payload.equal(p)
    assert list(msg.payload.tensors) == ["m", "w", "i"]


@pytest.mark.parametrize("tensor", [
    torch.rand(13) < 0.5,
    torch.rand(4, 5, 6) < 0.1,
    torch.randn(17),
    torch.tensor(2.5),
    torch.tensor([0, -1, 2**62, -(2**63)], dtype=torch.int64),
    torch.zeros(0, dtype=torch.bool),
    torch.zeros(3, 0, 2),
    torch.zeros(0, dtype=torch.int64),
    torch.tensor(True),
])
def test_round_trip_single(tensor: torch.Tensor) -> None:
    p = Payload("x", {"t": tensor})
    frames = enc(p)
    assert len(frames) == 2
    out = decode_payload(frames, run_id=RUN)
    assert out.payload.equal(p)
    assert out.payload.tensors["t"].shape == tensor.shape


def test_round_trip_empty_payload() -> None:
    frames = enc(Payload("nothing"))
    assert len(frames) == 1
    msg = dec(frames)
    assert msg.payload.equal(Payload("nothing")) and msg.payload.tensors == {}


def test_decoded_tensors_are_writable_and_owned() -> None:
    frames = [bytearray(f) for f in enc(sample_payload())]
    msg = dec(frames)
    for f in frames[1:]:
        f[:] = b"\x00" * len(f)  # receive buffers get reused: decoded tensors must not alias them
    assert msg.payload.equal(sample_payload())
    msg.payload.tensors["w"] += 1  # no read-only buffer underneath


def test_accepts_memoryview_and_zmq_frames() -> None:
    zmq = pytest.importorskip("zmq")
    frames = enc(sample_payload())
    assert dec([memoryview(f) for f in frames]).payload.equal(sample_payload())
    assert dec([zmq.Frame(f) for f in frames]).payload.equal(sample_payload())


def test_mask_message_bytes() -> None:
    n = 1_000_003
    frames = enc(Payload("mask", {"m": torch.rand(n) < 0.5}))
    assert len(frames[1]) == math.ceil(n / 8)
    assert message_size(frames) == len(frames[0]) + math.ceil(n / 8)
    assert len(frames[0]) < 100  # the envelope is small next to any real mask


def test_header_layout() -> None:
    frames = enc(sample_payload())
    assert header_of(frames) == {
        "v": FORMAT_VERSION, "t": "data", "run": RUN, "rnd": 3, "ph": 1, "src": 7, "kind": "mask",
        "tensors": [["m", "bool", [13], "bits", 2], ["w", "float32", [3, 4], "f32", 48],
                    ["i", "int64", [10], "i64", 80]],
    }
    assert frames[2] == np.asarray(sample_payload().tensors["w"]).astype("<f4").tobytes()
    assert frames[3] == np.arange(-5, 5).astype("<i8").tobytes()


def test_codec_for_defaults() -> None:
    assert codec_for(torch.bool).name == "bits"
    assert codec_for(torch.float32).name == "f32"
    assert codec_for(torch.int64).name == "i64"
    with pytest.raises(TypeError):
        codec_for(torch.float16)


def test_codec_override_and_registration() -> None:
    """A new codec is one class + register_codec, and a sender picks it per tensor per message."""

    class NotCodec(Codec):  # bytes inverted: trivially different from "bits" on the wire
        name = "test-inverted-bits"
        dtypes = frozenset({torch.bool})

        def encode(self, t: torch.Tensor) -> bytes:
            return pack_mask(~t)

        def decode(self, data: Any, shape: Any, dtype: torch.dtype) -> torch.Tensor:
            return ~unpack_mask(data, shape)

    try:
        get_codec("test-inverted-bits")
    except KeyError:
        register_codec(NotCodec())
    p = Payload("mask", {"a": torch.rand(20) < 0.5, "b": torch.rand(20) < 0.5})
    frames = enc(p, codec_overrides={"a": "test-inverted-bits"})
    assert header_of(frames)["tensors"][0][3] == "test-inverted-bits"
    assert header_of(frames)["tensors"][1][3] == "bits"
    assert frames[1] == pack_mask(~p.tensors["a"])
    assert dec(frames).payload.equal(p)
    with pytest.raises(ValueError):
        register_codec(NotCodec())


def test_encode_refuses_caller_mistakes() -> None:
    p = sample_payload()
    with pytest.raises(ValueError):
        enc(p, codec_overrides={"nope": "bits"})
    with pytest.raises(ValueError):
        enc(p, codec_overrides={"m": "nope"})
    with pytest.raises(ValueError):
        enc(p, codec_overrides={"w": "bits"})
    with pytest.raises(ValueError):
        enc(p, round=-1)
    with pytest.raises(ValueError):
        enc(p, sender=True)
    with pytest.raises(ValueError):
        enc(Payload("x" * 1000, {}))
    with pytest.raises(ValueError):
        enc(p, limits=Limits(max_tensors=2))


# --------------------------------------------------------------------------- control messages

CONTROL_CASES = [
    ("hello", {"config_hash": "abc123"}),
    ("hello_ack", {"accept": True, "reason": ""}),
    ("hello_ack", {"accept": False, "reason": "config hash differs"}),
    ("metrics", {"record": {"round": 4, "node": 2, "test_acc": 0.5, "note": "x", "ok": True,
                            "loss": None}}),
    ("metrics", {"record": {}}),
    ("bye", {"status": "ok", "reason": ""}),
    ("status", {"round": 3, "phase": 0, "waiting_for": [1, 5], "waited_s": 1.25}),
    ("status", {"round": 0, "phase": 1, "waiting_for": [], "waited_s": 0.0}),
]


@pytest.mark.parametrize(("t", "body"), CONTROL_CASES)
def test_control_round_trip(t: str, body: dict[str, Any]) -> None:
    frames = encode_control(t, body, run_id=RUN, sender=4)
    assert len(frames) == 1
    msg = dec(frames)
    assert msg == ControlMessage(type=t, sender=4, body=body)
    assert header_of(frames) == {"v": FORMAT_VERSION, "t": t, "run": RUN, "src": 4, **body}
    with pytest.raises(ProtocolError) as e:
        decode_payload(frames, run_id=RUN)
    assert e.value.reason == "schema"


@pytest.mark.parametrize(("t", "body"), [
    ("hello", {}),
    ("hello", {"config_hash": 5}),
    ("hello", {"config_hash": "a", "extra": 1}),
    ("hello_ack", {"accept": 1, "reason": ""}),
    ("hello_ack", {"accept": True}),
    ("metrics", {"record": {"a": [1, 2]}}),
    ("metrics", {"record": {"a": {"b": 1}}}),
    ("metrics", {"record": {"": 1}}),
    ("metrics", {"record": [1]}),
    ("metrics", {"record": {f"k{i}": i for i in range(65)}}),
    ("bye", {"x": 1}),
    ("status", {"round": 3, "phase": 0, "waiting_for": [1], "waited_s": 1}),
    ("status", {"round": 3, "phase": 0, "waiting_for": [True], "waited_s": 1.0}),
    ("status", {"round": 3, "phase": 0, "waiting_for": [-1], "waited_s": 1.0}),
    ("status", {"round": 3, "phase": 0, "waiting_for": "1", "waited_s": 1.0}),
    ("status", {"round": 3, "phase": 0, "waiting_for": list(range(1025)), "waited_s": 1.0}),
    ("status", {"round": 3, "phase": 0, "waiting_for": [1], "waited_s": float("nan")}),
    ("status", {"round": 3, "phase": 0, "waiting_for": [1], "waited_s": -1.0}),
    ("status", {"round": 3, "waiting_for": [1], "waited_s": 1.0}),
    ("data", {}),
    ("nope", {}),
])
def test_control_bad_bodies(t: str, body: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        encode_control(t, body, run_id=RUN, sender=1)
    header = {"v": FORMAT_VERSION, "t": t, "run": RUN, "src": 1, **body}
    refused([msgpack.packb(header)])


def test_control_body_cannot_override_envelope() -> None:
    with pytest.raises(ValueError):
        encode_control("bye", {"src": 3}, run_id=RUN, sender=1)
    with pytest.raises(ValueError):
        encode_control("bye", {"run": "other"}, run_id=RUN, sender=1)


def test_control_extra_frame() -> None:
    frames = encode_control("bye", {"status": "ok", "reason": ""}, run_id=RUN, sender=1)
    refused([*frames, b""], "frames")


# --------------------------------------------------------------------------- malformed input

def test_wrong_run_and_version() -> None:
    frames = enc(sample_payload())
    refused(frames, "run_id", run_id="other-run")
    refused(encode_control("hello", {"config_hash": "h"}, run_id="x", sender=1), "run_id")
    for v in (0, 2):
        refused(with_header(frames, {**header_of(frames), "v": v}), "version")


def test_frame_count_mismatch() -> None:
    frames = enc(sample_payload())
    refused(frames[:-1], "frames")  # missing frame
    refused([*frames, b"\x00"], "frames")  # extra frame
    refused(frames[:1], "frames")
    refused([], "truncated")
    refused([frames[0], frames[2], frames[1], frames[3]])  # swapped frames: lengths disagree


def test_truncated_and_long_frames() -> None:
    frames = enc(sample_payload())
    refused([frames[0], frames[1][:-1], *frames[2:]], "truncated")
    refused([frames[0], frames[1], frames[2] + b"\x00", frames[3]], "length")
    refused([frames[0][:-1], *frames[1:]], "truncated")
    refused([frames[0][:5], *frames[1:]], "truncated")
    refused([frames[0] + b"\x00", *frames[1:]], "garbage")  # trailing bytes after the header


def _mutate_tensor_entry(frames: list[bytes], i: int, j: int, value: Any) -> list[bytes]:
    header = header_of(frames)
    header["tensors"][i][j] = value
    return with_header(frames, header)


def test_wrong_shapes_and_nbytes() -> None:
    frames = enc(sample_payload())
    refused(_mutate_tensor_entry(frames, 1, 2, [4, 4]), "shape")  # nbytes no longer matches
    refused(_mutate_tensor_entry(frames, 1, 4, 52), "shape")
    refused(_mutate_tensor_entry(frames, 0, 4, 3), "shape")
    refused(_mutate_tensor_entry(frames, 0, 2, [17]), "shape")
    # same byte count for another shape: the padding bits become data, which is a valid message
    assert dec(_mutate_tensor_entry(frames, 0, 2, [2, 8])).payload.tensors["m"].shape == (2, 8)
    refused(_mutate_tensor_entry(frames, 1, 2, [3, -4]), "schema")
    refused(_mutate_tensor_entry(frames, 1, 2, [3, 4.0]), "schema")
    refused(_mutate_tensor_entry(frames, 1, 2, 12), "schema")
    refused(_mutate_tensor_entry(frames, 1, 2, [1] * 9), "oversize")


def test_huge_declared_shapes_refused_before_allocating() -> None:
    frames = enc(sample_payload())
    for shape in ([2**40], [2**20, 2**20], [2**14, 2**14, 2**14], [2**64 - 1]):
        refused(_mutate_tensor_entry(frames, 1, 2, shape), "oversize")
    # a plausible but larger-than-allowed size with a matching nbytes, and a tiny frame
    header = header_of(frames)
    header["tensors"] = [["w", "float32", [2**29], "f32", 2**31]]
    refused([msgpack.packb(header), b"\x00" * 8], "oversize")
    # within limits, but the frame is missing most bytes: refused without decoding
    header["tensors"] = [["m", "bool", [2**27], "bits", 2**24]]
    refused([msgpack.packb(header), b"\x00" * 8], "truncated")
    header["tensors"] = [["w", "float32", [0, 2**40], "f32", 0]]
    refused([msgpack.packb(header), b""], "oversize")
    small = Limits(max_entries=100)
    refused(enc(Payload("x", {"w": torch.zeros(101)})), "oversize", limits=small)


def test_size_limits() -> None:
    frames = enc(sample_payload())
    refused(frames, "oversize", limits=Limits(max_message_bytes=100))
    refused(frames, "oversize", limits=Limits(max_header_bytes=50))
    refused(frames, "oversize", limits=Limits(max_tensors=2))
    refused(frames, "oversize", limits=Limits(max_name_len=3, max_str_len=3))
    refused([b"\x00"] * 1000, "oversize")
    header = header_of(frames)
    header["kind"] = "k" * 5000
    refused(with_header(frames, header), "oversize")


def test_nonzero_padding_bits_refused() -> None:
    frames = enc(Payload("mask", {"m": torch.zeros(13, dtype=torch.bool)}))
    refused([frames[0], b"\x00\x01"], "padding")
    assert not dec([frames[0], b"\x00\x00"]).payload.tensors["m"].any()


def test_unknown_codec_dtype_and_incompatible_codec() -> None:
    frames = enc(sample_payload())
    refused(_mutate_tensor_entry(frames, 0, 3, "zstd"), "schema")
    refused(_mutate_tensor_entry(frames, 0, 1, "float16"), "schema")
    refused(_mutate_tensor_entry(frames, 1, 3, "bits"), "schema")  # bits declared for float32
    refused(_mutate_tensor_entry(frames, 0, 3, "f32"), "schema")
    refused(_mutate_tensor_entry(frames, 2, 3, "f32"), "schema")
    refused(_mutate_tensor_entry(frames, 0, 3, 1), "schema")


def test_duplicate_and_bad_names() -> None:
    frames = enc(sample_payload())
    refused(_mutate_tensor_entry(frames, 1, 0, "m"), "schema")
    refused(_mutate_tensor_entry(frames, 1, 0, ""), "schema")
    refused(_mutate_tensor_entry(frames, 1, 0, 5), "schema")
    refused(_mutate_tensor_entry(frames, 1, 0, b"w"), "schema")
    refused(_mutate_tensor_entry(frames, 1, 0, "x" * 200), "oversize")


def test_header_not_a_map() -> None:
    frames = enc(sample_payload())
    for obj in ([1, 2, 3], 5, "data", None, 1.5, b"bin", True):
        refused(with_header(frames, obj), "garbage")


@pytest.mark.parametrize("junk", [
    b"", b"\x00", b"\xc1", b"\xff" * 10, b"\x91" * 5000, b"\xde\xff\xff", b"\xdd\xff\xff\xff\xff",
    b"\x81\x01\x02", b"\x81\xa1v\xd7\xff\x00\x00\x00\x00\x00\x00\x00\x00",  # int key; timestamp
    b"\x81\xa1v\xc7\x03\x05abc", b"\xa3\xff\xfe\xfd", b"\xdb\xff\xff\xff\xff",
])
def test_garbage_header_bytes(junk: bytes) -> None:
    frames = enc(sample_payload())
    refused([junk, *frames[1:]])
    refused([junk])


_BAD_FIELD_VALUES: dict[str, list[Any]] = {
    "v": [None, "1", 1.0, True, [1]],
    "t": [None, 1, "DATA", "", ["data"]],
    "run": [None, 1, b"run-1", ["run-1"]],
    "rnd": [None, -1, 1.0, "3", True, 2**64 - 1, [3]],
    "ph": [None, -1, 1.5, "1", False],
    "src": [None, -7, 7.0, "7", True],
    "kind": [None, 1, "", b"mask", ["mask"]],
    "tensors": [None, {}, "m", 1, [[]], [["m", "bool", [13], "bits"]], [("m",)]],
}


@pytest.mark.parametrize(("key", "value"), [
    (k, v) for k, vs in _BAD_FIELD_VALUES.items() for v in vs
])
def test_wrong_types_for_each_field(key: str, value: Any) -> None:
    frames = enc(sample_payload())
    header = header_of(frames)
    header[key] = value
    err = refused(with_header(frames, header))
    assert err.reason in {"schema", "version", "run_id", "frames", "oversize"}


def test_missing_and_extra_keys() -> None:
    frames = enc(sample_payload())
    for key in header_of(frames):
        header = header_of(frames)
        del header[key]
        refused(with_header(frames, header))
    header = header_of(frames)
    header["extra"] = 1
    refused(with_header(frames, header), "schema")
    header = header_of(frames)
    header[b"v2"] = 1
    refused(with_header(frames, header), "schema")


def test_non_buffer_frames() -> None:
    frames = enc(sample_payload())
    refused([frames[0].decode("latin-1"), *frames[1:]], "frames")
    refused([*frames[:-1], None], "frames")
    refused("not a list", "frames")  # type: ignore[arg-type]
    refused(None, "frames")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- fuzzing

_WIRE_DTYPES = [torch.bool, torch.float32, torch.int64]


@st.composite
def payloads(draw: st.DrawFn) -> Payload:
    names = draw(st.lists(st.text(min_size=1, max_size=8), max_size=5, unique=True))
    tensors: dict[str, torch.Tensor] = {}
    for name in names:
        dtype = draw(st.sampled_from(_WIRE_DTYPES))
        shape = draw(st.lists(st.integers(0, 6), max_size=3))
        g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
        if dtype == torch.bool:
            tensors[name] = torch.rand(shape, generator=g) < 0.5
        elif dtype == torch.float32:
            tensors[name] = torch.randn(shape, generator=g)
        else:
            tensors[name] = torch.randint(-(2**62), 2**62, shape, generator=g)
    return Payload(draw(st.text(min_size=1, max_size=10)), tensors)


@st.composite
def valid_messages(draw: st.DrawFn) -> tuple[list[bytes], DataMessage | ControlMessage]:
    if draw(st.booleans()):
        p = draw(payloads())
        rnd, ph, src = draw(st.integers(0, 2**63 - 1)), draw(st.integers(0, 5)), draw(
            st.integers(0, 2**20))
        frames = encode_payload(p, run_id=RUN, round=rnd, phase=ph, sender=src)
        return frames, DataMessage(round=rnd, phase=ph, sender=src, payload=p)
    t, body = draw(st.sampled_from(CONTROL_CASES))
    src = draw(st.integers(0, 100))
    return encode_control(t, body, run_id=RUN, sender=src), ControlMessage(t, src, body)


def _same(a: DataMessage | ControlMessage, b: DataMessage | ControlMessage) -> bool:
    if isinstance(a, DataMessage) and isinstance(b, DataMessage):
        return (a.round, a.phase, a.sender) == (b.round, b.phase, b.sender) and \
            a.payload.equal(b.payload)
    return a == b


def _only_protocol_error(frames: Any) -> None:
    try:
        dec(frames)
    except ProtocolError as e:
        assert e.reason in REASONS


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(valid_messages())
def test_fuzz_valid_messages_round_trip(case: tuple[list[bytes], Any]) -> None:
    frames, expected = case
    assert _same(dec(frames), expected)


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_header_bytes(data: bytes) -> None:
    _only_protocol_error([data])


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=6))
def test_fuzz_random_frame_lists(frames: list[bytes]) -> None:
    _only_protocol_error(frames)


_msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=10) | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=5),
    max_leaves=20,
)


@FUZZ
@given(valid_messages(), st.data())
def test_fuzz_header_field_replaced(case: tuple[list[bytes], Any], data: st.DataObject) -> None:
    """Structurally valid msgpack with one field (or tensor entry part) set to anything."""
    frames, _ = case
    header = header_of(frames)
    key = data.draw(st.sampled_from([*header, "extra"]))
    if key == "tensors" and header["tensors"] and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(header["tensors"]) - 1))
        j = data.draw(st.integers(0, 4))
        header["tensors"][i][j] = data.draw(_msgpack_values)
    else:
        header[key] = data.draw(_msgpack_values)
    _only_protocol_error(with_header(frames, header))


@FUZZ
@given(valid_messages(), st.data())
def test_fuzz_mutated_messages(case: tuple[list[bytes], Any], data: st.DataObject) -> None:
    frames, _ = case
    frames = [bytearray(f) for f in frames]
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "truncate", "extend", "drop", "dup", "swap"]))
        if not frames:
            break
        i = data.draw(st.integers(0, len(frames) - 1))
        f = frames[i]
        if op == "flip" and f:
            pos = data.draw(st.integers(0, len(f) - 1))
            f[pos] ^= data.draw(st.integers(1, 255))
        elif op == "truncate":
            del f[data.draw(st.integers(0, len(f))):]
        elif op == "extend":
            f.extend(data.draw(st.binary(min_size=1, max_size=8)))
        elif op == "drop":
            del frames[i]
        elif op == "dup":
            frames.insert(i, bytearray(f))
        elif op == "swap":
            j = data.draw(st.integers(0, len(frames) - 1))
            frames[i], frames[j] = frames[j], frames[i]
    _only_protocol_error([bytes(f) for f in frames])


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 200), st.integers(0, 2**31))
def test_fuzz_bitarray_reference_agrees(n: int, seed: int) -> None:
    t = torch.rand(n, generator=torch.Generator().manual_seed(seed)) < 0.5
    assert pack_mask(t) == pack_mask_bitarray(t)
