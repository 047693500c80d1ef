"""One node's share of a data set, as tensors ready for training.

Every node process recomputes the same partition from the shared seed and converts only its own
slice to tensors, so a node holds just its own shard in memory. ``load_all_shards`` builds every
node's shard from one load of the data set (in-process driver) and gives exactly the same shards.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mcepl.registry import PARTITIONS as _PARTITIONS

from .datasets import Dataset, load_dataset, to_tensor
from .partition import (
    NodeIndices,
    assign_labels,
    partition_by_labels,
    partition_dirichlet,
    partition_iid,
)

__all__ = ["PARTITIONS", "Shard", "build_shards", "compute_partition", "load_all_shards",
           "load_shard"]

PARTITIONS = _PARTITIONS  # the registry the config validates data.partition against
PARTITIONS.add("labels", partition_by_labels)
PARTITIONS.add("dirichlet", partition_dirichlet)
PARTITIONS.add("iid", partition_iid)


@dataclass
class Shard:
    """One node's data: inputs float32 (N, C, H, W), images in [-1, 1], labels int64."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    labels: list[int]
    num_classes: int
    input_shape: tuple[int, ...]
    digest: str | None = None  # the user data set's digest (None for the built-ins)


def compute_partition(
    ds: Dataset,
    num_nodes: int,
    seed: int,
    partition: str = "labels",
    labels_per_node: int | Sequence[int] = 4,
    assignment: Sequence[Sequence[int]] | None = None,
    alpha: float = 0.5,
    train_fraction: float = 1.0,
) -> tuple[list[NodeIndices], list[list[int]]]:
    """Every node's indices and sorted label list; identical on every node for the same seed.

    For "labels" the labels are the assigned ones (``assignment`` if given, else drawn with
    ``labels_per_node``); for "dirichlet" and "iid" they are the labels present in the node's
    training images. ``labels_per_node``/``assignment`` only apply to "labels".
    """
    if partition not in PARTITIONS:
        raise ValueError(f"unknown partition {partition!r}; choices: {list(PARTITIONS)}")
    if partition == "labels":
        if assignment is None:
            assignment = assign_labels(num_nodes, labels_per_node, ds.num_classes, seed)
        elif len(assignment) != num_nodes:
            raise ValueError(f"assignment has {len(assignment)} nodes, expected {num_nodes}")
        bad = sorted({v for ls in assignment for v in ls if not 0 <= v < ds.num_classes})
        if bad:
            raise ValueError(f"assignment labels {bad} outside 0..{ds.num_classes - 1}")
        parts = partition_by_labels(ds.train_y, ds.test_y, assignment, seed, train_fraction)
        return parts, [sorted(int(v) for v in ls) for ls in assignment]
    if assignment is not None:
        raise ValueError(f"assignment only applies to partition='labels', not {partition!r}")
    if partition == "dirichlet":
        parts = partition_dirichlet(ds.train_y, ds.test_y, num_nodes, alpha, seed,
                                    train_fraction)
    else:
        parts = partition_iid(ds.train_y, ds.test_y, num_nodes, seed, train_fraction)
    return parts, [sorted(int(v) for v in np.unique(ds.train_y[p.train])) for p in parts]


def _inputs(x: np.ndarray) -> torch.Tensor:
    """uint8 images normalised as the built-ins (`to_tensor`); floats (a user's data set) as
    given, in float32."""
    if x.dtype == np.uint8:
        return to_tensor(x)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _make_shard(ds: Dataset, part: NodeIndices, labels: list[int]) -> Shard:
    return Shard(
        train_x=_inputs(ds.train_x[part.train]),
        train_y=torch.from_numpy(ds.train_y[part.train].astype(np.int64)),
        test_x=_inputs(ds.test_x[part.test]),
        test_y=torch.from_numpy(ds.test_y[part.test].astype(np.int64)),
        labels=list(labels),
        num_classes=ds.num_classes,
        input_shape=ds.input_shape,
        digest=ds.digest,
    )


def _check_node(node_id: int, num_nodes: int) -> None:
    if not 0 <= node_id < num_nodes:
        raise ValueError(f"node_id {node_id} outside 0..{num_nodes - 1}")


def build_shards(ds: Dataset, num_nodes: int, seed: int, partition: str = "labels",
                 labels_per_node: int | Sequence[int] = 4,
                 assignment: Sequence[Sequence[int]] | None = None, alpha: float = 0.5,
                 train_fraction: float = 1.0,
                 node_ids: Sequence[int] | None = None) -> list[Shard]:
    """Shards of an already loaded data set (all nodes, or the listed ``node_ids``)."""
    parts, labels = compute_partition(ds, num_nodes, seed, partition, labels_per_node,
                                      assignment, alpha, train_fraction)
    ids = range(num_nodes) if node_ids is None else node_ids
    for i in ids:
        _check_node(i, num_nodes)
    return [_make_shard(ds, parts[i], labels[i]) for i in ids]


def load_shard(
    dataset: str,
    node_id: int,
    num_nodes: int,
    seed: int,
    partition: str = "labels",
    labels_per_node: int | Sequence[int] = 4,
    assignment: Sequence[Sequence[int]] | None = None,
    alpha: float = 0.5,
    train_fraction: float = 1.0,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    python_path: Sequence[str] = (),
    expected_digest: str | None = None,
) -> Shard:
    """This node's shard: load the data set, partition it from the seed, keep only our slice."""
    _check_node(node_id, num_nodes)
    if partition not in PARTITIONS:  # fail before the (slow) data set load
        raise ValueError(f"unknown partition {partition!r}; choices: {list(PARTITIONS)}")
    ds = load_dataset(dataset, root=root, download=download, python_path=python_path,
                      expected_digest=expected_digest)
    return build_shards(ds, num_nodes, seed, partition, labels_per_node, assignment, alpha,
                        train_fraction, node_ids=[node_id])[0]


def load_all_shards(
    dataset: str,
    num_nodes: int,
    seed: int,
    partition: str = "labels",
    labels_per_node: int | Sequence[int] = 4,
    assignment: Sequence[Sequence[int]] | None = None,
    alpha: float = 0.5,
    train_fraction: float = 1.0,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    python_path: Sequence[str] = (),
    expected_digest: str | None = None,
) -> list[Shard]:
    """Every node's shard from one load of the data set (same result as load_shard per node)."""
    if partition not in PARTITIONS:
        raise ValueError(f"unknown partition {partition!r}; choices: {list(PARTITIONS)}")
    ds = load_dataset(dataset, root=root, download=download, python_path=python_path,
                      expected_digest=expected_digest)
    return build_shards(ds, num_nodes, seed, partition, labels_per_node, assignment, alpha,
                        train_fraction)
