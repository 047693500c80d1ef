"""Splitting a data set among nodes, deterministically from a seed (pure numpy).

Every node computes the whole partition itself from the shared seed and keeps only its own
part, so the partition must depend on nothing but (labels, seed, parameters). Each purpose
(label draw, label split, Dirichlet split, iid split) gets its own random stream derived from
the seed, so changing one does not shift the others.

``train_fraction`` f in (0, 1] keeps, of each per-label share of n training images (for iid: of
each node's share), the first ``min(n, max(1, int(round(f * n))))`` (Python's round, halves to
even). f = 1 keeps everything. The published code used f = 1/5.

``carve_validation`` then sets aside a validation split of every node's (kept) training images,
per label, for choosing hyper-parameters without looking at the test set.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "NodeIndices",
    "assign_labels",
    "carve_validation",
    "partition_by_labels",
    "partition_dirichlet",
    "partition_iid",
    "read_label_assignment",
]

MAX_DIRICHLET_TRIES = 100
"""Dirichlet draws tried before giving up on giving every node some data."""


@dataclass(frozen=True)
class NodeIndices:
    """Indices (int64, ascending) of one node's training, test and validation images (the
    validation images are training images set aside by `carve_validation`; none by default)."""

    train: np.ndarray
    test: np.ndarray
    val: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _rng(seed: int, purpose: str, *extra: int) -> np.random.Generator:
    """A random stream for one purpose, derived from the shared seed."""
    entropy = [_check_seed(seed), zlib.crc32(purpose.encode()), *(int(e) for e in extra)]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def _check_fraction(train_fraction: float) -> float:
    f = float(train_fraction)
    if not (0.0 < f <= 1.0) or math.isnan(f):
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction!r}")
    return f


def _check_num_nodes(num_nodes: int) -> int:
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int | np.integer) \
            or num_nodes < 1:
        raise ValueError(f"num_nodes must be a positive int, got {num_nodes!r}")
    return int(num_nodes)


def _keep(share: np.ndarray, f: float) -> np.ndarray:
    """The first max(1, round(f*n)) of a share (all of it when f == 1, none of an empty one)."""
    n = len(share)
    if f >= 1.0 or n == 0:
        return share
    return share[: min(n, max(1, int(round(f * n))))]


def _labels_array(y: np.ndarray, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or (y.size and y.dtype.kind not in "iu"):
        raise ValueError(f"{what} must be a 1-D integer array, got {y.dtype} {y.shape}")
    if y.size and int(y.min()) < 0:
        raise ValueError(f"{what} holds negative labels")
    return y.astype(np.int64, copy=False)


def _finish(train: list[list[np.ndarray]], test: list[list[np.ndarray]]) -> list[NodeIndices]:
    def cat(parts: list[np.ndarray]) -> np.ndarray:
        return np.sort(np.concatenate(parts)).astype(np.int64) if parts \
            else np.zeros(0, np.int64)

    return [NodeIndices(train=cat(tr), test=cat(te)) for tr, te in zip(train, test, strict=True)]


def assign_labels(num_nodes: int, labels_per_node: int | Sequence[int], num_classes: int,
                  seed: int) -> list[list[int]]:
    """Draw c_i distinct labels for every node i (label skew); each list is sorted.

    ``labels_per_node`` is one c for all nodes or a list of c_i, each in 1..num_classes.
    """
    num_nodes = _check_num_nodes(num_nodes)
    if isinstance(labels_per_node, int | np.integer) and not isinstance(labels_per_node, bool):
        counts = [int(labels_per_node)] * num_nodes
    else:
        counts = [int(c) for c in labels_per_node]
        if len(counts) != num_nodes:
            raise ValueError(f"labels_per_node has {len(counts)} entries for {num_nodes} nodes")
    for i, c in enumerate(counts):
        if not 1 <= c <= num_classes:
            raise ValueError(f"node {i}: labels_per_node={c} must be in 1..{num_classes}")
    rng = _rng(seed, "assign-labels")
    return [sorted(int(v) for v in rng.choice(num_classes, size=c, replace=False))
            for c in counts]


def read_label_assignment(path: str | os.PathLike[str], num_nodes: int | None = None,
                          num_classes: int = 10) -> list[list[int]]:
    """Read a fixed label assignment: one line per node (in node order) of distinct label ids.

    Blank lines and ``#`` comments are ignored. Labels are returned in file order.
    """
    path = Path(path)
    nodes: list[list[int]] = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        where = f"{path}, line {lineno}"
        try:
            labels = [int(tok) for tok in text.split()]
        except ValueError:
            raise ValueError(f"{where}: not whitespace-separated integers: {text!r}") from None
        bad = [v for v in labels if not 0 <= v < num_classes]
        if bad:
            raise ValueError(f"{where}: labels {bad} outside 0..{num_classes - 1}")
        if len(set(labels)) != len(labels):
            raise ValueError(f"{where}: duplicate labels in {labels}")
        nodes.append(labels)
    if not nodes:
        raise ValueError(f"{path}: no label lines")
    if num_nodes is not None and len(nodes) != num_nodes:
        raise ValueError(f"{path}: {len(nodes)} node lines, expected {num_nodes}")
    return nodes


def _check_assignment(assignment: Sequence[Sequence[int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for i, labels in enumerate(assignment):
        ls = [int(v) for v in labels]
        if not ls:
            raise ValueError(f"node {i} holds no labels")
        if min(ls) < 0 or len(set(ls)) != len(ls):
            raise ValueError(f"node {i}: labels must be distinct non-negative ints, got {ls}")
        out.append(ls)
    if not out:
        raise ValueError("assignment has no nodes")
    return out


def _require_data(parts: list[NodeIndices], what: str) -> list[NodeIndices]:
    empty = [i for i, p in enumerate(parts) if len(p.train) == 0]
    if empty:
        raise ValueError(f"{what}: nodes {empty} get no training images")
    return parts


def partition_by_labels(train_y: np.ndarray, test_y: np.ndarray,
                        assignment: Sequence[Sequence[int]], seed: int,
                        train_fraction: float = 1.0) -> list[NodeIndices]:
    """Label-skew split as in the paper.

    A label's training images, shuffled, are split evenly (np.array_split) among the nodes
    holding it in ascending node order; every node's test set is all the test images of its
    labels.
    """
    train_y = _labels_array(train_y, "train_y")
    test_y = _labels_array(test_y, "test_y")
    nodes = _check_assignment(assignment)
    f = _check_fraction(train_fraction)
    _check_seed(seed)
    train: list[list[np.ndarray]] = [[] for _ in nodes]
    for label in sorted({v for ls in nodes for v in ls}):
        holders = [i for i, ls in enumerate(nodes) if label in ls]
        idx = _rng(seed, "labels-train", label).permutation(np.flatnonzero(train_y == label))
        for node, share in zip(holders, np.array_split(idx, len(holders)), strict=True):
            train[node].append(_keep(share, f))
    test = [[np.flatnonzero(np.isin(test_y, ls))] for ls in nodes]
    return _require_data(_finish(train, test), "partition_by_labels")


def _split_by(idx: np.ndarray, p: np.ndarray) -> list[np.ndarray]:
    cuts = np.round(np.cumsum(p)[:-1] * len(idx)).astype(np.int64)
    return np.split(idx, np.clip(cuts, 0, len(idx)))


def partition_dirichlet(train_y: np.ndarray, test_y: np.ndarray, num_nodes: int, alpha: float,
                        seed: int, train_fraction: float = 1.0) -> list[NodeIndices]:
    """Dirichlet label skew: per label, proportions ~ Dir(alpha) over the nodes split its
    training images and, with the same proportions, its test images (so a node's test
    distribution follows its training one). Redrawn until every node has at least one training
    and one test image (at most MAX_DIRICHLET_TRIES draws)."""
    train_y = _labels_array(train_y, "train_y")
    test_y = _labels_array(test_y, "test_y")
    num_nodes = _check_num_nodes(num_nodes)
    f = _check_fraction(train_fraction)
    if not (float(alpha) > 0 and math.isfinite(float(alpha))):
        raise ValueError(f"alpha must be a positive number, got {alpha!r}")
    rng = _rng(seed, "dirichlet")
    labels = np.union1d(train_y, test_y)
    for _ in range(MAX_DIRICHLET_TRIES):
        train: list[list[np.ndarray]] = [[] for _ in range(num_nodes)]
        test: list[list[np.ndarray]] = [[] for _ in range(num_nodes)]
        for label in labels:
            p = rng.dirichlet(np.full(num_nodes, float(alpha)))
            tr = rng.permutation(np.flatnonzero(train_y == label))
            te = rng.permutation(np.flatnonzero(test_y == label))
            for node, (a, b) in enumerate(zip(_split_by(tr, p), _split_by(te, p), strict=True)):
                train[node].append(_keep(a, f))
                test[node].append(b)
        parts = _finish(train, test)
        if all(len(q.train) and len(q.test) for q in parts):
            return parts
    raise ValueError(f"partition_dirichlet: no draw in {MAX_DIRICHLET_TRIES} gave every one of "
                     f"{num_nodes} nodes training and test images (alpha={alpha}); raise alpha "
                     f"or use fewer nodes")


def partition_iid(train_y: np.ndarray, test_y: np.ndarray, num_nodes: int, seed: int,
                  train_fraction: float = 1.0) -> list[NodeIndices]:
    """Homogeneous baseline: random even split of the training and of the test images."""
    train_y = _labels_array(train_y, "train_y")
    test_y = _labels_array(test_y, "test_y")
    num_nodes = _check_num_nodes(num_nodes)
    f = _check_fraction(train_fraction)
    tr = np.array_split(_rng(seed, "iid-train").permutation(len(train_y)), num_nodes)
    te = np.array_split(_rng(seed, "iid-test").permutation(len(test_y)), num_nodes)
    parts = _finish([[_keep(a, f)] for a in tr], [[b] for b in te])
    return _require_data(parts, "partition_iid")


def carve_validation(parts: Sequence[NodeIndices], train_y: np.ndarray, fraction: float,
                     seed: int) -> list[NodeIndices]:
    """Set aside a validation split of every node's training images, per label.

    For each node and each label among its n training images of that label, a random
    ``k = round(fraction * n)`` of them (from the node's own stream ``(seed, "validation",
    node, label)``, so the split depends on nothing else) move from ``train`` to ``val``; k is
    clipped to 1..n-1 when n >= 2, so every label keeps a training image and is validated, and
    is 0 for a label with a single image. ``fraction = 0`` returns the parts unchanged: the
    training shards, and hence every number of a run, stay exactly as without a split.
    """
    f = float(fraction)
    if not 0.0 <= f < 1.0 or math.isnan(f):
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction!r}")
    _check_seed(seed)
    if f == 0.0:
        return list(parts)
    train_y = _labels_array(train_y, "train_y")
    out: list[NodeIndices] = []
    for node, part in enumerate(parts):
        train, val = [], []
        labels = train_y[part.train]
        for label in np.unique(labels):
            idx = part.train[labels == label]
            n = len(idx)
            k = min(max(int(round(f * n)), 1), n - 1) if n >= 2 else 0
            perm = _rng(seed, "validation", node, int(label)).permutation(n)
            val.append(idx[perm[:k]])
            train.append(idx[perm[k:]])
        cat = _finish([train], [val])[0]  # sorted concatenations
        out.append(NodeIndices(train=cat.train, test=part.test, val=cat.test))
    return out
