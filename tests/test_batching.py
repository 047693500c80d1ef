"""Micro-batches (node/batching.py): same gradient to float rounding, less memory, and the
choice "auto" makes (AlexNet split on a CPU, the small CNN never)."""

from __future__ import annotations

import pytest
import torch

from mcepl.config import ConfigError
from mcepl.node import batching as B
from mcepl.node.algorithms.mcepl import masked_loss_grads
from mcepl.node.factory import all_shards, build_algorithm
from mcepl.node.models import build_model
from mcepl.topology import generate


def test_split() -> None:
    assert B.split(128, 33) == [slice(0, 32), slice(32, 64), slice(64, 96), slice(96, 128)]
    assert B.split(128, 45) == [slice(0, 43), slice(43, 86), slice(86, 128)]
    assert B.split(10, 100) == [slice(0, 10)]
    assert B.split(5, 1) == [slice(i, i + 1) for i in range(5)]


def test_auto_sizes() -> None:
    alex = B.activation_bytes_per_sample(build_model("alexnet", (3, 32, 32), 10, 0), (3, 32, 32))
    small = B.activation_bytes_per_sample(build_model("small-cnn", (1, 28, 28), 10, 0),
                                          (1, 28, 28))
    assert 0.9e6 < alex < 1.1e6 and 0.05e6 < small < 0.2e6
    assert B.micro_batch_size("auto", 128, alex, "cpu") == 8  # -> 16 pieces of 8
    assert B.micro_batch_size("auto", 128, small, "cpu") == 128  # one piece: as before
    small32 = B.activation_bytes_per_sample(build_model("small-cnn", (3, 32, 32), 10, 0),
                                            (3, 32, 32))
    assert B.micro_batch_size("auto", 128, small32, "cpu") == 128
    assert B.micro_batch_size("auto", 16, alex, "cpu") == 16  # small batches stay whole
    assert B.micro_batch_size("auto", 128, alex, "cuda") == 128
    assert B.micro_batch_size(16, 128, alex, "cuda") == 16
    assert B.micro_batch_size(500, 128, alex, "cpu") == 128
    for bad in (0, "many"):
        with pytest.raises(ValueError, match="micro_batch"):
            B.micro_batch_size(bad, 128, alex)


def test_config_key(tiny_cfg) -> None:
    assert tiny_cfg().algorithm.params.micro_batch == "auto"
    assert tiny_cfg(algorithm={"micro_batch": 4}).algorithm.params.micro_batch == 4
    for bad in ("big", 0):
        with pytest.raises(ConfigError, match="micro_batch"):
            tiny_cfg(algorithm={"micro_batch": bad})


def test_micro_batches_give_the_same_loss_and_gradient(tiny_cfg) -> None:
    cfg = tiny_cfg(model={"name": "alexnet"})
    topo = generate("ring", 3, retention=[0.5, 0.3, 0.2])
    algo = build_algorithm(cfg, topo, 0, all_shards(cfg, topo)[0])
    ctx = algo.ctx
    x, y = ctx.shard.train_x[:24], ctx.shard.train_y[:24]
    loss, grads = masked_loss_grads(ctx, algo.m, x, y)
    for size in (1, 5, 8, 23):
        l2, g2 = masked_loss_grads(ctx, algo.m, x, y, size)
        assert l2 == pytest.approx(loss, rel=1e-6)
        for n in grads:
            torch.testing.assert_close(g2[n], grads[n], rtol=1e-4, atol=1e-7)
    l3, g3 = masked_loss_grads(ctx, algo.m, x, y, 24)  # one piece: the very same computation
    assert l3 == loss and all(torch.equal(g3[n], grads[n]) for n in grads)


def test_algorithm_picks_its_micro_batch(tiny_cfg) -> None:
    topo = generate("ring", 3, retention=[0.5, 0.3, 0.2])
    for model, params, expect in (("small-cnn", {}, 16), ("alexnet", {}, 16),
                                  ("alexnet", {"micro_batch": 5}, 5)):
        cfg = tiny_cfg(model={"name": model}, algorithm=params)
        algo = build_algorithm(cfg, topo, 0, all_shards(cfg, topo)[0])
        assert algo.micro_batch == expect  # tiny batches (16) fit the budget whole
    cfg = tiny_cfg(model={"name": "alexnet"}, algorithm={"batch_size": 120})
    algo = build_algorithm(cfg, topo, 0, all_shards(cfg, topo)[0])
    assert algo.sampler.batch * 733_736 > B.SPLIT_ABOVE  # AlexNet on 1x28x28: 0.73 MB per image
    assert algo.micro_batch == 11  # pieces of at most 8 MiB


def test_alexnet_network_equals_inprocess_with_micro_batches(tmp_path, tiny_cfg) -> None:
    """The AlexNet paths this issue changed (fast LRN and pool, micro-batches, thread choice)
    give every per-node number identically in real node processes and in process."""
    import json

    from mcepl.launcher.launch import launch
    from mcepl.node.inprocess import run_inprocess

    cfg = tiny_cfg(model={"name": "alexnet"}, algorithm={"micro_batch": 6},
                   run={"rounds": 2, "eval_every": 1})
    topo = generate("ring", 3, retention=[0.5, 0.3, 0.2], transport="ipc", ipc_dir=tmp_path)
    launch(cfg, topo, tmp_path / "run", quiet=True)
    net = {(r["round"], r["node"]): r for r in map(
        json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())}
    ref = {(r["round"], r["node"]): r for r in run_inprocess(cfg, topo).records}
    assert net.keys() == ref.keys() == {(k, i) for k in range(3) for i in range(3)}
    for k, r in ref.items():
        for field in ("train_loss", "test_acc", "density", "bytes_sent", "bytes_received"):
            if field in r:
                assert net[k][field] == r[field], (k, field)
