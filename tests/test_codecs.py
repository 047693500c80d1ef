"""Mask codecs (raw, entropy, delta): lossless on random and adversarial masks, sizes near H(r),
strict decoding, and the delta codec's per-link state (references, key frames, refusals)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcepl.protocol import (
    MASK_CODECS,
    CodecState,
    Payload,
    ProtocolError,
    binary_entropy,
    decode_message,
    encode_payload,
    get_codec,
    mask_codec_wire_name,
)
from mcepl.protocol.entropy import decode_bits, encode_bits

RUN = "run-test"
STATELESS = ("bits", "entropy")


def mask_from(bits: list[bool] | np.ndarray, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    t = torch.tensor(np.asarray(bits, dtype=np.bool_), dtype=torch.bool)
    return t.reshape(shape) if shape is not None else t


def bernoulli(n: int, p: float, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random(n) < p)


def adversarial(n: int) -> list[torch.Tensor]:
    """Masks that stress a coder: constant, one odd entry at either end, periodic, runs."""
    i = np.arange(n)
    out = [np.zeros(n, bool), np.ones(n, bool), i % 2 == 0, i % 3 == 0, i % 8 == 7,
           (i // 8) % 2 == 0, i < n // 2]
    if n:
        one = np.zeros(n, bool)
        one[-1] = True
        first = np.zeros(n, bool)
        first[0] = True
        out += [one, ~one, first, ~first]
    return [torch.from_numpy(m) for m in out]


def roundtrip(codec: str, t: torch.Tensor, state_tx: CodecState | None = None,
              state_rx: CodecState | None = None) -> tuple[torch.Tensor, int]:
    frames = encode_payload(Payload("mask", {"m": t}), run_id=RUN, round=1, phase=0, sender=0,
                            mask_codec=codec, state=state_tx)
    msg = decode_message(frames, run_id=RUN, state=state_rx)
    return msg.payload.tensors["m"], len(frames[1])


# ------------------------------------------------------------------ every codec is lossless

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(0, 3000), p=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1))
def test_stateless_codecs_roundtrip_random(n: int, p: float, seed: int) -> None:
    t = bernoulli(n, p, seed)
    for codec in STATELESS:
        out, _ = roundtrip(codec, t)
        assert out.dtype == torch.bool and torch.equal(out, t), codec


@settings(max_examples=40, deadline=None)
@given(bits=st.lists(st.booleans(), max_size=200), rows=st.integers(1, 4))
def test_stateless_codecs_roundtrip_any_bits_and_shape(bits: list[bool], rows: int) -> None:
    n = len(bits) - len(bits) % rows
    t = mask_from(bits[:n], (rows, n // rows))
    for codec in STATELESS:
        out, _ = roundtrip(codec, t)
        assert out.shape == t.shape and torch.equal(out, t), codec


@pytest.mark.parametrize("n", [0, 1, 2, 7, 8, 9, 31, 32, 33, 255, 256, 1000, 4097])
@pytest.mark.parametrize("codec", ["raw", "entropy", "delta"])
def test_adversarial_masks_roundtrip(codec: str, n: int) -> None:
    tx, rx = CodecState(), CodecState()
    for t in adversarial(n):  # one after the other: delta codes each against the previous one
        out, _ = roundtrip(codec, t, tx, rx)
        assert torch.equal(out, t)
    for t in adversarial(n):  # and fresh, as key frames
        out, _ = roundtrip(codec, t, CodecState(), CodecState())
        assert torch.equal(out, t)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 2000), p=st.floats(0.01, 0.99), flip=st.floats(0.0, 0.5),
       steps=st.integers(1, 12), key_interval=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_delta_roundtrip_over_a_sequence(n: int, p: float, flip: float, steps: int,
                                         key_interval: int, seed: int) -> None:
    """Masks drifting from round to round, with key frames every key_interval messages."""
    rng = np.random.default_rng(seed)
    tx, rx = CodecState(key_interval=key_interval), CodecState()
    m = rng.random(n) < p
    for _ in range(steps):
        m = m ^ (rng.random(n) < flip)
        out, _ = roundtrip("delta", torch.from_numpy(m.copy()), tx, rx)
        assert torch.equal(out, torch.from_numpy(m))
    assert tx.key_frames + tx.delta_frames == steps == rx.key_frames + rx.delta_frames
    assert tx.key_frames >= math.ceil(steps / key_interval)


def test_config_and_wire_names() -> None:
    assert MASK_CODECS == {"raw": "bits", "entropy": "entropy", "delta": "delta"}
    assert mask_codec_wire_name("raw") == mask_codec_wire_name("bits") == "bits"
    with pytest.raises(ValueError, match="unknown mask codec"):
        mask_codec_wire_name("zip")
    t = bernoulli(100, 0.3)
    frames = encode_payload(Payload("mask", {"m": t, "w": torch.ones(3)}), run_id=RUN, round=1,
                            phase=0, sender=0, mask_codec="entropy")
    import msgpack

    header = msgpack.unpackb(frames[0])
    assert [e[3] for e in header["tensors"]] == ["entropy", "f32"]  # floats stay raw float32


# ------------------------------------------------------------------ sizes

@pytest.mark.parametrize("r", [0.1, 0.2, 0.3, 0.4, 0.5])
def test_entropy_codec_approaches_binary_entropy(r: float) -> None:
    n = 50_000
    t = torch.zeros(n, dtype=torch.bool)
    t[torch.randperm(n, generator=torch.Generator().manual_seed(1))[: int(r * n)]] = True
    _, nbytes = roundtrip("entropy", t)
    bits = 8 * nbytes / n
    assert bits <= binary_entropy(r) + 0.005, (r, bits)
    assert bits <= 1.0 + 8 / n  # never more than raw + the mode byte
    assert bits >= binary_entropy(r) - 0.005  # sanity: nothing beats the entropy by much


def test_entropy_codec_constant_masks_cost_a_few_bytes() -> None:
    for t in (torch.zeros(10_000, dtype=torch.bool), torch.ones(10_000, dtype=torch.bool)):
        _, nbytes = roundtrip("entropy", t)
        assert nbytes == 5  # mode + count


def test_delta_is_small_when_the_mask_barely_changes() -> None:
    n = 50_000
    tx, rx = CodecState(), CodecState()
    m = bernoulli(n, 0.3, 1)
    _, key_bytes = roundtrip("delta", m, tx, rx)
    m2 = m.clone()
    m2[:50] = ~m2[:50]  # 0.1% of entries change
    out, delta_bytes = roundtrip("delta", m2, tx, rx)
    assert torch.equal(out, m2)
    assert delta_bytes < key_bytes / 10
    assert (tx.key_frames, tx.delta_frames) == (1, 1)


def test_delta_sends_a_key_frame_when_cheaper() -> None:
    tx, rx = CodecState(), CodecState()
    roundtrip("delta", bernoulli(10_000, 0.05, 1), tx, rx)
    roundtrip("delta", bernoulli(10_000, 0.05, 2), tx, rx)  # unrelated mask: XOR is denser
    assert (tx.key_frames, tx.delta_frames) == (2, 0)


# ------------------------------------------------------------------ delta state and refusals

def test_delta_needs_state() -> None:
    with pytest.raises(ValueError, match="stateful"):
        encode_payload(Payload("mask", {"m": bernoulli(10, 0.5)}), run_id=RUN, round=1, phase=0,
                       sender=0, mask_codec="delta")
    # a key frame decodes without a receiver state; a delta frame is refused
    tx = CodecState()
    t = bernoulli(1000, 0.3)
    out, _ = roundtrip("delta", t, tx, None)
    assert torch.equal(out, t)
    frames = encode_payload(Payload("mask", {"m": t}), run_id=RUN, round=2, phase=0, sender=0,
                            mask_codec="delta", state=tx)
    with pytest.raises(ProtocolError) as e:
        decode_message(frames, run_id=RUN)
    assert e.value.reason == "reference"


def test_missed_message_is_refused_then_recovered_by_the_next_key_frame() -> None:
    tx, rx = CodecState(key_interval=4), CodecState()
    rng = np.random.default_rng(0)
    m = rng.random(5000) < 0.3
    masks = []
    for _ in range(10):
        m = m ^ (rng.random(5000) < 0.01)
        masks.append(torch.from_numpy(m.copy()))
    frames = [encode_payload(Payload("mask", {"m": t}), run_id=RUN, round=k, phase=0, sender=0,
                             mask_codec="delta", state=tx) for k, t in enumerate(masks)]
    kinds = [f[1][0] for f in frames]
    assert kinds == [0, 1, 1, 1, 0, 1, 1, 1, 0, 1]  # key frame every 4 messages
    assert torch.equal(decode_message(frames[0], run_id=RUN, state=rx).payload.tensors["m"],
                       masks[0])
    # message 1 is lost: 2 and 3 reference what the receiver never got -> refused, state kept
    for k in (2, 3):
        with pytest.raises(ProtocolError) as e:
            decode_message(frames[k], run_id=RUN, state=rx)
        assert e.value.reason == "reference" and "crc" in e.value.detail
    assert rx.key_frames == 1 and rx.delta_frames == 0
    for k in range(4, 10):  # the key frame of message 4 resynchronises the link
        out = decode_message(frames[k], run_id=RUN, state=rx).payload.tensors["m"]
        assert torch.equal(out, masks[k])
    # a duplicate (replayed) delta no longer matches the reference
    with pytest.raises(ProtocolError, match="reference"):
        decode_message(frames[9], run_id=RUN, state=rx)


def test_refused_message_leaves_every_reference_untouched() -> None:
    """Two tensors; the second one's reference is wrong: the first must not advance either."""
    tx, rx = CodecState(), CodecState()
    a0, b0 = bernoulli(2000, 0.3, 1), bernoulli(2000, 0.3, 2)
    f0 = encode_payload(Payload("mask", {"a": a0, "b": b0}), run_id=RUN, round=0, phase=0,
                        sender=0, mask_codec="delta", state=tx)
    decode_message(f0, run_id=RUN, state=rx)
    before = {k: (v.crc, v.since_key) for k, v in rx.refs.items()}
    a1, b1 = a0.clone(), b0.clone()
    a1[:3] = ~a1[:3]
    b1[:3] = ~b1[:3]
    f1 = encode_payload(Payload("mask", {"a": a1, "b": b1}), run_id=RUN, round=1, phase=0,
                        sender=0, mask_codec="delta", state=tx)
    rx.refs["b"].crc ^= 1  # the receiver holds another "b"
    with pytest.raises(ProtocolError, match="reference"):
        decode_message(f1, run_id=RUN, state=rx)
    assert rx.refs["a"].crc == before["a"][0]
    rx.refs["b"].crc ^= 1
    msg = decode_message(f1, run_id=RUN, state=rx)
    assert torch.equal(msg.payload.tensors["a"], a1) and torch.equal(msg.payload.tensors["b"], b1)


def test_shape_change_gives_a_key_frame_and_a_mismatched_shape_is_refused() -> None:
    tx, rx = CodecState(), CodecState()
    roundtrip("delta", bernoulli(100, 0.3).reshape(10, 10), tx, rx)
    t = bernoulli(100, 0.3, 5).reshape(20, 5)
    out, _ = roundtrip("delta", t, tx, rx)
    assert torch.equal(out, t) and tx.key_frames == 2
    # a delta frame whose header claims another shape than the reference's
    tx2, rx2 = CodecState(), CodecState()
    m = bernoulli(100, 0.3).reshape(10, 10)
    roundtrip("delta", m, tx2, rx2)
    m2 = m.clone()
    m2[0, 0] = ~m2[0, 0]
    frames = encode_payload(Payload("mask", {"m": m2}), run_id=RUN, round=1, phase=0, sender=0,
                            mask_codec="delta", state=tx2)
    rx2.refs["m"].shape = (20, 5)
    with pytest.raises(ProtocolError, match="reference"):
        decode_message(frames, run_id=RUN, state=rx2)


# ------------------------------------------------------------------ strict decoding

def test_entropy_frame_checks() -> None:
    def refused(data: bytes, n: int, *reasons: str) -> None:
        with pytest.raises(ProtocolError) as e:
            decode_bits(data, n)
        assert e.value.reason in reasons, e.value

    good = encode_bits(np.random.default_rng(0).random(1000) < 0.2)
    assert good[0] == 1
    refused(b"", 10, "truncated")
    refused(b"\x07", 10, "schema")  # unknown mode
    refused(b"\x01\x00", 10, "truncated")  # no count
    refused(b"\x01" + (11).to_bytes(4, "little"), 10, "shape")  # more ones than entries
    refused(b"\x01" + (0).to_bytes(4, "little") + b"\x01\x00\x00\x00", 10, "length")
    refused(b"\x01" + (3).to_bytes(4, "little"), 10, "truncated")  # ones but no stream
    refused(good + b"\x00", 1000, "length")  # not whole words
    refused(good[:-4], 1000, "length", "garbage")  # a word short
    refused(good[:5] + b"\x00\x00\x00\x00", 1000, "garbage")  # stream ends in a zero word
    refused(b"\x00\xff", 10, "truncated")  # raw fallback too short
    refused(b"\x00\xff\xc0\x00", 10, "length")  # raw fallback too long
    refused(b"\x00\xff\xff", 10, "padding")  # raw fallback with padding bits set
    with pytest.raises(ProtocolError):
        decode_bits(good[:5] + (12345).to_bytes(4, "little") + good[9:], 1000)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_corrupted_frames_raise_protocol_error_only(data: st.DataObject) -> None:
    """Flip, cut or extend bytes of real frames: the decoder refuses or returns some mask of the
    declared shape, never anything else."""
    codec = data.draw(st.sampled_from(["entropy", "delta"]))
    n = data.draw(st.integers(1, 600))
    t = bernoulli(n, data.draw(st.floats(0.0, 1.0)), data.draw(st.integers(0, 1000)))
    tx, rx = CodecState(), CodecState()
    if codec == "delta":  # corrupt a delta frame, not only a key frame
        roundtrip(codec, t, tx, rx)
    frames = encode_payload(Payload("mask", {"m": ~t}), run_id=RUN, round=1, phase=0, sender=0,
                            mask_codec=codec, state=tx)
    frame = bytearray(frames[1])
    op = data.draw(st.sampled_from(["flip", "cut", "extend"]))
    if op == "flip" and frame:
        i = data.draw(st.integers(0, len(frame) - 1))
        frame[i] ^= data.draw(st.integers(1, 255))
    elif op == "cut":
        frame = frame[: data.draw(st.integers(0, len(frame)))]
    else:
        frame += data.draw(st.binary(min_size=1, max_size=8))
    import msgpack

    header = msgpack.unpackb(frames[0])
    header["tensors"][0][4] = len(frame)
    try:
        msg = decode_message([msgpack.packb(header), bytes(frame)], run_id=RUN, state=rx)
    except ProtocolError:
        return
    out = msg.payload.tensors["m"]
    assert out.dtype == torch.bool and out.shape == t.shape


def test_registered_codecs_are_bool_only_and_variable_length() -> None:
    for name in ("entropy", "delta"):
        c = get_codec(name)
        assert c.dtypes == frozenset({torch.bool})
        assert c.expected_nbytes((10,), torch.bool) is None
