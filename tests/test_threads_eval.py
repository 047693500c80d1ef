"""Threads per node ("auto"), the evaluation batch ("auto") and accuracy() on uint8 images."""

from __future__ import annotations

import pytest
import torch

from mcepl.config import ConfigError, config_from_dict
from mcepl.node import threads as T
from mcepl.node.data import Images
from mcepl.node.evaluation import CPU_EVAL_BATCH, GPU_EVAL_BATCH, accuracy, eval_batch_size


def test_auto_threads_share_the_cores(monkeypatch) -> None:
    monkeypatch.setattr(T, "usable_cores", lambda: 8)
    monkeypatch.delenv(T.LOCAL_NODES_ENV, raising=False)
    assert T.resolve_threads("auto") == 8  # one node on the machine: every core
    assert T.resolve_threads("auto", 3) == 2  # 3 nodes on 8 cores: 2 each, 2 idle
    assert T.resolve_threads("auto", 8) == 1
    assert T.resolve_threads("auto", 20) == 1  # more nodes than cores: never 0
    monkeypatch.setenv(T.LOCAL_NODES_ENV, "4")  # what `mcepl launch` tells its nodes
    assert T.resolve_threads("auto") == 2
    monkeypatch.setenv(T.LOCAL_NODES_ENV, "junk")
    assert T.resolve_threads("auto") == 8
    assert T.resolve_threads(3, 20) == 3  # an explicit count wins
    for bad in (0, -1, "many"):
        with pytest.raises(ValueError, match="threads_per_node"):
            T.resolve_threads(bad)


def test_usable_cores_is_within_the_affinity_mask() -> None:
    import os

    assert 1 <= T.usable_cores() <= len(os.sched_getaffinity(0))


def test_config_accepts_auto_and_positive_ints() -> None:
    cfg = config_from_dict({})
    assert cfg.run.threads_per_node == "auto" and cfg.run.eval_batch_size == "auto"
    cfg = config_from_dict({"run": {"threads_per_node": 2, "eval_batch_size": 64}})
    assert cfg.run.threads_per_node == 2 and cfg.run.eval_batch_size == 64
    for key in ("threads_per_node", "eval_batch_size"):
        for bad in ("many", 0, -3):
            with pytest.raises(ConfigError, match=f'run.{key}: must be a positive int or "auto"'):
                config_from_dict({"run": {key: bad}})
        with pytest.raises(ConfigError, match=f"run.{key}"):
            config_from_dict({"run": {key: 1.5}})


def test_eval_batch_size() -> None:
    assert eval_batch_size("auto", "cpu") == CPU_EVAL_BATCH
    assert eval_batch_size(None, torch.device("cpu")) == CPU_EVAL_BATCH
    assert eval_batch_size("auto", "cuda") == GPU_EVAL_BATCH
    # sized to the model's activations on a CPU (EVAL_BUDGET of layer outputs), 16..1024
    assert eval_batch_size("auto", "cpu", 1_000_000) == 20  # AlexNet on 3x32x32
    assert eval_batch_size("auto", "cpu", 100_000) == 209  # the small CNN
    assert eval_batch_size("auto", "cpu", 10) == 1024
    assert eval_batch_size("auto", "cpu", 10**9) == 16
    assert eval_batch_size("auto", "cuda", 1_000_000) == GPU_EVAL_BATCH
    assert eval_batch_size(7, "cuda") == 7
    with pytest.raises(ValueError):
        eval_batch_size("big", "cpu")
    with pytest.raises(ValueError):
        eval_batch_size(0, "cpu")


def test_accuracy_on_uint8_images_equals_float_and_batch_size_is_free() -> None:
    gen = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (50, 1, 4, 4), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 3, (50,), generator=gen)
    w = torch.randn(16, 3, generator=gen)
    seen: list[bool] = []

    def predict(x: torch.Tensor) -> torch.Tensor:
        seen.append(torch.is_inference_mode_enabled())
        assert x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
        return x.reshape(len(x), -1) @ w

    floats = Images(u8)[:]
    ref = int(((floats.reshape(50, -1) @ w).argmax(1) == y).sum()) / 50
    for bs in (1, 7, 50, 1000, "auto"):
        assert accuracy(predict, Images(u8), y, bs) == ref
        assert accuracy(predict, floats, y, bs) == ref
    assert all(seen)  # evaluation runs under inference_mode
    assert accuracy(predict, Images(u8[:0]), y[:0]) != accuracy(predict, Images(u8[:0]), y[:0])
