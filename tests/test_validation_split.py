"""The validation split (`data.val_fraction`): carved per label from each node's training shard,
deterministic, disjoint from what the node trains on, and absent (no number changes) at 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mcepl.config import ConfigError
from mcepl.node.data import (
    carve_validation,
    load_all_shards,
    load_shard,
    partition_by_labels,
)
from mcepl.node.inprocess import run_inprocess
from mcepl.topology import generate


def _parts(seed: int = 0, f: float = 1.0):
    rng = np.random.default_rng(1)
    train_y = rng.integers(0, 10, size=3000)
    test_y = rng.integers(0, 10, size=500)
    assignment = [[0, 1, 2], [2, 3, 4, 5], [5, 6, 7, 8, 9], [0, 9]]
    return train_y, partition_by_labels(train_y, test_y, assignment, seed, f)


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5])
def test_split_is_per_label_disjoint_and_covering(fraction: float) -> None:
    train_y, parts = _parts()
    carved = carve_validation(parts, train_y, fraction, seed=0)
    for before, after in zip(parts, carved, strict=True):
        assert np.array_equal(after.test, before.test)
        assert not set(after.train) & set(after.val)
        assert np.array_equal(np.sort(np.concatenate([after.train, after.val])), before.train)
        for label in np.unique(train_y[before.train]):
            n = int((train_y[before.train] == label).sum())
            k = int((train_y[after.val] == label).sum())
            assert k == min(max(round(fraction * n), 1), n - 1)
            assert (train_y[after.train] == label).sum() == n - k >= 1


def test_split_deterministic_and_seeded() -> None:
    train_y, parts = _parts()
    a = carve_validation(parts, train_y, 0.2, seed=3)
    b = carve_validation(parts, train_y, 0.2, seed=3)
    c = carve_validation(parts, train_y, 0.2, seed=4)
    assert all(np.array_equal(x.val, y.val) for x, y in zip(a, b, strict=True))
    assert any(not np.array_equal(x.val, y.val) for x, y in zip(a, c, strict=True))
    # a node's split depends on its own images only: dropping another node changes nothing
    d = carve_validation(parts[:2], train_y, 0.2, seed=3)
    assert all(np.array_equal(x.val, y.val) for x, y in zip(a[:2], d, strict=True))


def test_zero_fraction_changes_nothing_and_bad_fractions() -> None:
    train_y, parts = _parts()
    assert carve_validation(parts, train_y, 0.0, seed=0) == parts
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="validation fraction"):
            carve_validation(parts, train_y, bad, seed=0)


def test_single_image_label_stays_in_training() -> None:
    train_y = np.array([0, 1, 1, 1])
    parts = partition_by_labels(train_y, np.array([0, 1]), [[0, 1]], seed=0)
    carved = carve_validation(parts, train_y, 0.5, seed=0)[0]
    assert 0 in train_y[carved.train] and 0 not in train_y[carved.val]
    assert (train_y[carved.val] == 1).sum() == 2  # round(1.5) = 2, at most n - 1


def test_shards_and_config(tiny_data_dir: Path, tiny_cfg) -> None:
    kw = dict(dataset="fashion-mnist", num_nodes=3, seed=0, labels_per_node=3,
              root=tiny_data_dir, download=False)
    plain = load_all_shards(**kw)
    split = load_all_shards(**kw, val_fraction=0.25)
    for a, b in zip(plain, split, strict=True):
        assert a.val_x is None and a.val_y is None
        assert len(b.train_y) + len(b.val_y) == len(a.train_y)
        assert len(b.val_x) == len(b.val_y) > 0
        assert np.array_equal(a.test_y.numpy(), b.test_y.numpy())
        assert set(b.val_y.tolist()) <= set(b.labels)
    one = load_shard(node_id=1, **kw, val_fraction=0.25)
    assert np.array_equal(one.val_y.numpy(), split[1].val_y.numpy())
    with pytest.raises(ConfigError, match="val_fraction"):
        tiny_cfg(data={"val_fraction": 1.0})


def test_records_get_val_acc_and_training_uses_the_rest(tiny_cfg) -> None:
    topo = generate("ring", 3, seed=0, retention=0.5)
    res = run_inprocess(tiny_cfg(data={"val_fraction": 0.2}, run={"rounds": 2}), topo)
    evaluated = [r for r in res.records if "test_acc" in r]
    assert evaluated and all(0.0 <= r["val_acc"] <= 1.0 for r in evaluated)
    assert all("val_acc" not in r for r in res.records if "test_acc" not in r)
    base = run_inprocess(tiny_cfg(run={"rounds": 2}), topo)
    assert all("val_acc" not in r for r in base.records)
    # the split shrinks what the nodes train on, so the training differs
    losses = lambda rr: [r.get("train_loss") for r in rr.records if r["round"] >= 1]  # noqa: E731
    assert losses(res) != losses(base)
