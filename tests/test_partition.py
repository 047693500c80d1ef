"""Partitions (label skew as in the paper, Dirichlet, iid) and per-node shards."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mcepl.node.data import (
    NodeIndices,
    assign_labels,
    load_all_shards,
    load_shard,
    partition_by_labels,
    partition_dirichlet,
    partition_iid,
    read_label_assignment,
)
from mcepl.node.data import datasets as dsmod

REFERENCE_LABELS = Path("/work/shared/reference/paper-labels-c4.txt")


def labels_y(per_class: int, num_classes: int = 10, seed: int = 0) -> np.ndarray:
    """A shuffled label vector with per_class images of each class."""
    y = np.repeat(np.arange(num_classes), per_class)
    return np.random.default_rng(seed).permutation(y).astype(np.int64)


TRAIN_Y = labels_y(103)  # 103 is odd so the even split is uneven
TEST_Y = labels_y(7, seed=1)


def assert_disjoint(parts: list[np.ndarray]) -> None:
    allidx = np.concatenate(parts)
    assert len(np.unique(allidx)) == len(allidx)


def assert_sorted_int64(parts: list[NodeIndices]) -> None:
    for p in parts:
        for a in (p.train, p.test):
            assert a.dtype == np.int64
            assert np.all(np.diff(a) > 0)


# --------------------------------------------------------------------------- label assignment


def test_assign_labels_distinct_and_deterministic() -> None:
    a = assign_labels(20, 4, 10, seed=7)
    assert len(a) == 20
    for labels in a:
        assert len(labels) == 4 and len(set(labels)) == 4
        assert all(0 <= v < 10 for v in labels) and labels == sorted(labels)
    assert a == assign_labels(20, 4, 10, seed=7)
    assert a != assign_labels(20, 4, 10, seed=8)
    mixed = assign_labels(3, [1, 5, 10], 10, seed=0)
    assert [len(v) for v in mixed] == [1, 5, 10] and mixed[2] == list(range(10))


@pytest.mark.parametrize("per_node", [0, 11, [3, 3], [3, 0, 3]])
def test_assign_labels_rejects_bad_counts(per_node: int | list[int]) -> None:
    with pytest.raises(ValueError):
        assign_labels(3, per_node, 10, seed=0)


def test_read_reference_assignment() -> None:
    if not REFERENCE_LABELS.is_file():
        pytest.skip(f"{REFERENCE_LABELS} absent")
    a = read_label_assignment(REFERENCE_LABELS, num_nodes=20)
    assert len(a) == 20 and all(len(v) == 4 and len(set(v)) == 4 for v in a)
    assert a[0] == [6, 9, 4, 1] and a[19] == [2, 9, 3, 0]  # file order kept
    parts = partition_by_labels(TRAIN_Y, TEST_Y, a, seed=0)
    for labels, p in zip(a, parts, strict=True):
        assert set(TRAIN_Y[p.train]) <= set(labels)
        assert len(p.test) == 7 * 4  # every test image of its 4 labels
    with pytest.raises(ValueError, match="expected 19"):
        read_label_assignment(REFERENCE_LABELS, num_nodes=19)


def test_read_assignment_format(tmp_path: Path) -> None:
    p = tmp_path / "a.txt"
    p.write_text("# node labels\n0 1 2\n\n 3\t4  # trailing comment\n")
    assert read_label_assignment(p) == [[0, 1, 2], [3, 4]]
    assert read_label_assignment(p, num_nodes=2) == [[0, 1, 2], [3, 4]]
    for text, what in [("0 1\n2 x\n", "line 2"), ("0 1 1\n", "duplicate"),
                       ("0 10\n", "outside"), ("-1\n", "outside"), ("# nothing\n", "no label")]:
        p.write_text(text)
        with pytest.raises(ValueError, match=what) as err:
            read_label_assignment(p)
        assert str(p) in str(err.value)
    p.write_text("0 1\n2 3\n")
    with pytest.raises(ValueError, match="2 node lines, expected 3"):
        read_label_assignment(p, num_nodes=3)
    with pytest.raises(ValueError, match="outside 0..1"):
        read_label_assignment(p, num_classes=2)


# --------------------------------------------------------------------------- label skew


def check_label_partition(assignment: list[list[int]], parts: list[NodeIndices],
                          train_y: np.ndarray, test_y: np.ndarray) -> None:
    assert len(parts) == len(assignment)
    assert_sorted_int64(parts)
    assert_disjoint([p.train for p in parts])
    for label in range(10):
        holders = [i for i, ls in enumerate(assignment) if label in ls]
        shares = [np.intersect1d(parts[i].train, np.flatnonzero(train_y == label))
                  for i in holders]
        covered = np.concatenate(shares) if shares else np.zeros(0, np.int64)
        if holders:
            np.testing.assert_array_equal(np.sort(covered), np.flatnonzero(train_y == label))
            sizes = [len(s) for s in shares]
            assert max(sizes) - min(sizes) <= 1
            # np.array_split: earlier node ids get the extra images
            assert sizes == sorted(sizes, reverse=True)
    for ls, p in zip(assignment, parts, strict=True):
        assert set(train_y[p.train].tolist()) <= set(ls)
        np.testing.assert_array_equal(p.test, np.flatnonzero(np.isin(test_y, ls)))


def test_label_partition_even_disjoint_covering() -> None:
    a = assign_labels(20, 3, 10, seed=1)
    parts = partition_by_labels(TRAIN_Y, TEST_Y, a, seed=1)
    check_label_partition(a, parts, TRAIN_Y, TEST_Y)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), nodes=st.integers(1, 12), c=st.integers(1, 10))
def test_label_partition_property(seed: int, nodes: int, c: int) -> None:
    a = assign_labels(nodes, c, 10, seed)
    check_label_partition(a, partition_by_labels(TRAIN_Y, TEST_Y, a, seed), TRAIN_Y, TEST_Y)


def test_label_partition_deterministic() -> None:
    a = assign_labels(5, 4, 10, seed=3)
    p1 = partition_by_labels(TRAIN_Y, TEST_Y, a, seed=3)
    p2 = partition_by_labels(TRAIN_Y, TEST_Y, a, seed=3)
    p3 = partition_by_labels(TRAIN_Y, TEST_Y, a, seed=4)
    assert all(np.array_equal(x.train, y.train) for x, y in zip(p1, p2, strict=True))
    assert any(not np.array_equal(x.train, y.train) for x, y in zip(p1, p3, strict=True))
    # the test sets do not depend on the seed
    assert all(np.array_equal(x.test, y.test) for x, y in zip(p1, p3, strict=True))


@pytest.mark.parametrize("f", [0.2, 0.5, 0.001])
def test_train_fraction(f: float) -> None:
    a = [[0, 1], [1, 2], [1]]  # label 1: 103 images over 3 nodes -> 35, 34, 34
    full = partition_by_labels(TRAIN_Y, TEST_Y, a, seed=0)
    part = partition_by_labels(TRAIN_Y, TEST_Y, a, seed=0, train_fraction=f)
    for node, labels in enumerate(a):
        for label in labels:
            share = np.intersect1d(full[node].train, np.flatnonzero(TRAIN_Y == label))
            kept = np.intersect1d(part[node].train, np.flatnonzero(TRAIN_Y == label))
            assert len(kept) == max(1, int(round(f * len(share))))
            assert set(kept) <= set(share)
        np.testing.assert_array_equal(full[node].test, part[node].test)


@pytest.mark.parametrize("f", [0.0, -0.1, 1.5, float("nan")])
def test_bad_train_fraction(f: float) -> None:
    with pytest.raises(ValueError, match="train_fraction"):
        partition_by_labels(TRAIN_Y, TEST_Y, [[0]], seed=0, train_fraction=f)


def test_label_partition_errors() -> None:
    with pytest.raises(ValueError, match="no labels"):
        partition_by_labels(TRAIN_Y, TEST_Y, [[0], []], seed=0)
    with pytest.raises(ValueError, match="distinct"):
        partition_by_labels(TRAIN_Y, TEST_Y, [[0, 0]], seed=0)
    with pytest.raises(ValueError, match="seed"):
        partition_by_labels(TRAIN_Y, TEST_Y, [[0]], seed=-1)
    with pytest.raises(ValueError, match="no training images"):
        partition_by_labels(TRAIN_Y, TEST_Y, [[0], [11]], seed=0)


# --------------------------------------------------------------------------- Dirichlet, iid


def check_cover(parts: list[NodeIndices], n_train: int, n_test: int) -> None:
    assert_sorted_int64(parts)
    assert_disjoint([p.train for p in parts])
    assert_disjoint([p.test for p in parts])
    np.testing.assert_array_equal(np.sort(np.concatenate([p.train for p in parts])),
                                  np.arange(n_train))
    np.testing.assert_array_equal(np.sort(np.concatenate([p.test for p in parts])),
                                  np.arange(n_test))
    assert all(len(p.train) > 0 for p in parts)


def test_dirichlet_disjoint_covering_matched() -> None:
    train_y, test_y = labels_y(600), labels_y(100, seed=1)
    parts = partition_dirichlet(train_y, test_y, 8, alpha=0.5, seed=2)
    check_cover(parts, len(train_y), len(test_y))
    assert all(len(p.test) > 0 for p in parts)
    for p in parts:  # test proportions follow train proportions (same Dirichlet draw)
        tr = np.bincount(train_y[p.train], minlength=10) / 600
        te = np.bincount(test_y[p.test], minlength=10) / 100
        assert np.abs(tr - te).max() <= 0.011
    again = partition_dirichlet(train_y, test_y, 8, alpha=0.5, seed=2)
    assert all(np.array_equal(x.train, y.train) for x, y in zip(parts, again, strict=True))
    other = partition_dirichlet(train_y, test_y, 8, alpha=0.5, seed=3)
    assert any(not np.array_equal(x.train, y.train) for x, y in zip(parts, other, strict=True))


def test_dirichlet_small_alpha_is_skewed_and_fraction() -> None:
    train_y, test_y = labels_y(600), labels_y(100, seed=1)
    skewed = partition_dirichlet(train_y, test_y, 5, alpha=0.05, seed=0)
    dominant = [np.bincount(train_y[p.train], minlength=10).max() / len(p.train) for p in skewed]
    assert np.mean(dominant) > 0.4
    small = partition_dirichlet(train_y, test_y, 5, alpha=0.5, seed=0, train_fraction=0.1)
    full = partition_dirichlet(train_y, test_y, 5, alpha=0.5, seed=0)
    for s, f in zip(small, full, strict=True):
        assert set(s.train) <= set(f.train) and 0 < len(s.train) < len(f.train)
        np.testing.assert_array_equal(s.test, f.test)


def test_dirichlet_impossible_raises() -> None:
    with pytest.raises(ValueError, match="no draw"):
        partition_dirichlet(labels_y(1), labels_y(1), 30, alpha=0.5, seed=0)
    with pytest.raises(ValueError, match="alpha"):
        partition_dirichlet(TRAIN_Y, TEST_Y, 3, alpha=0.0, seed=0)


def test_iid_even_disjoint_covering() -> None:
    parts = partition_iid(TRAIN_Y, TEST_Y, 7, seed=0)
    check_cover(parts, len(TRAIN_Y), len(TEST_Y))
    for sizes in ([len(p.train) for p in parts], [len(p.test) for p in parts]):
        assert max(sizes) - min(sizes) <= 1
    again = partition_iid(TRAIN_Y, TEST_Y, 7, seed=0)
    assert all(np.array_equal(x.train, y.train) for x, y in zip(parts, again, strict=True))
    half = partition_iid(TRAIN_Y, TEST_Y, 7, seed=0, train_fraction=0.5)
    assert [len(p.train) for p in half] == [max(1, round(0.5 * len(p.train))) for p in parts]


# --------------------------------------------------------------------------- shards


def write_tiny_fmnist(d: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "train_x": rng.integers(0, 256, (200, 28, 28), dtype=np.uint8),
        "train_y": np.arange(200, dtype=np.uint8) % 10,
        "test_x": rng.integers(0, 256, (50, 28, 28), dtype=np.uint8),
        "test_y": np.arange(50, dtype=np.uint8) % 10,
    }
    d.mkdir(parents=True)
    for key, stem in dsmod.FASHION_MNIST_FILES.items():
        a = arrays[key]
        raw = struct.pack(">HBB", 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
        (d / f"{stem}.gz").write_bytes(gzip.compress(raw + a.tobytes()))


@pytest.mark.parametrize("partition,extra", [
    ("labels", {"labels_per_node": 3}),
    ("labels", {"assignment": [[0, 1], [1, 2, 3], [4, 5, 6, 7, 8, 9], [9]]}),
    ("dirichlet", {"alpha": 1.0}),
    ("iid", {"train_fraction": 0.5}),
])
def test_load_shard_matches_load_all(tmp_path: Path, partition: str,
                                     extra: dict[str, object]) -> None:
    write_tiny_fmnist(tmp_path / "fm")
    kw = dict(num_nodes=4, seed=5, partition=partition, root=tmp_path / "fm", download=False,
              **extra)
    every = load_all_shards("fashion-mnist", **kw)  # type: ignore[arg-type]
    assert len(every) == 4
    for node in range(4):
        one = load_shard("fashion-mnist", node, **kw)  # type: ignore[arg-type]
        other = every[node]
        for name in ("train_x", "test_x"):  # kept as stored: uint8
            assert getattr(one, name).stored.dtype == torch.uint8
            assert torch.equal(getattr(one, name).stored, getattr(other, name).stored)
        for name in ("train_y", "test_y"):
            assert torch.equal(getattr(one, name), getattr(other, name))
        assert one.labels == other.labels == sorted(other.labels)
        assert one.num_classes == 10 and one.input_shape == (1, 28, 28)
        assert one.train_x.dtype == torch.float32 and one.train_x.shape[1:] == (1, 28, 28)
        assert one.train_y.dtype == torch.int64 and one.test_y.dtype == torch.int64
        batch = one.train_x[:]  # normalised on access
        assert batch.dtype == torch.float32 and batch.min() >= -1 and batch.max() <= 1
        assert set(one.train_y.tolist()) <= set(one.labels)
        if partition == "labels":
            assert set(one.test_y.tolist()) == set(one.labels)
            assert len(one.test_y) == 5 * len(one.labels)


def test_shard_errors(tmp_path: Path) -> None:
    write_tiny_fmnist(tmp_path / "fm")
    kw = dict(root=tmp_path / "fm", download=False)
    with pytest.raises(ValueError, match=r"'random'.*labels.*dirichlet.*iid"):
        load_shard("fashion-mnist", 0, 4, 0, partition="random", **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="node_id"):
        load_shard("fashion-mnist", 4, 4, 0, **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected 4"):
        load_all_shards("fashion-mnist", 4, 0, assignment=[[0]], **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="outside"):
        load_all_shards("fashion-mnist", 1, 0, assignment=[[10]], **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only applies"):
        load_all_shards("fashion-mnist", 1, 0, partition="iid", assignment=[[1]],
                        **kw)  # type: ignore[arg-type]
