"""One node's share of a data set: its images as stored (uint8), normalised batch by batch.

Every node process recomputes the same partition from the shared seed and copies only its own
rows out of the machine's decode cache (:mod:`mcepl.node.data.cache`), so a node holds just its
own shard, at one byte per pixel. Indexing a shard's images gives float32 in [-1, 1] on the
shard's device, computed exactly as :func:`to_tensor` does, so no number changes.
``load_all_shards`` builds every node's shard from one opening of the data set (in-process
driver) and gives exactly the same shards.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mcepl.registry import PARTITIONS as _PARTITIONS

from .cache import open_dataset, take_rows
from .datasets import Dataset
from .partition import (
    NodeIndices,
    assign_labels,
    carve_validation,
    partition_by_labels,
    partition_dirichlet,
    partition_iid,
)

__all__ = ["PARTITIONS", "Images", "Shard", "build_shards", "compute_partition",
           "load_all_shards", "load_shard", "normalize"]

PARTITIONS = _PARTITIONS  # the registry the config validates data.partition against
PARTITIONS.add("labels", partition_by_labels)
PARTITIONS.add("dirichlet", partition_dirichlet)
PARTITIONS.add("iid", partition_iid)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [-1, 1] (x/127.5 - 1), on x's device; the same operations,
    hence the same bits, as :func:`mcepl.node.data.to_tensor`."""
    return x.to(torch.float32).div_(127.5).sub_(1.0)


class Images:
    """A node's images, kept as stored; ``images[idx]`` is the normalised float32 batch.

    ``stored`` is a uint8 tensor (N, C, H, W) (or, from tests and user code, a float tensor
    that is already normalised and is returned as it is). Batches are normalised where
    ``stored`` lives: move the images to the node's device once (``to``) and every batch is
    made there.
    """

    __slots__ = ("stored",)

    def __init__(self, stored: torch.Tensor | Images) -> None:
        if isinstance(stored, Images):
            stored = stored.stored
        if not isinstance(stored, torch.Tensor):
            raise TypeError(f"Images expects a tensor, got {type(stored).__name__}")
        if stored.dtype != torch.uint8 and not stored.is_floating_point():
            raise TypeError(f"Images expects uint8 or float images, got {stored.dtype}")
        self.stored = stored

    def __getitem__(self, idx: object) -> torch.Tensor:
        batch = self.stored[idx]  # type: ignore[index]
        return normalize(batch) if batch.dtype == torch.uint8 else batch

    def __len__(self) -> int:
        return len(self.stored)

    @property
    def shape(self) -> torch.Size:
        return self.stored.shape

    @property
    def dtype(self) -> torch.dtype:
        """What indexing yields (float32 for stored uint8 images)."""
        return torch.float32 if self.stored.dtype == torch.uint8 else self.stored.dtype

    @property
    def device(self) -> torch.device:
        return self.stored.device

    @property
    def nbytes(self) -> int:
        return self.stored.numel() * self.stored.element_size()

    def to(self, device: torch.device | str) -> Images:
        return Images(self.stored.to(device))

    def float(self) -> torch.Tensor:
        """All images, normalised (tests and small data only: 4x the stored memory)."""
        return self[:]

    def __repr__(self) -> str:
        return f"Images({tuple(self.shape)}, stored as {self.stored.dtype} on {self.device})"


@dataclass
class Shard:
    """One node's data: inputs as stored (see :class:`Images`: uint8 images, normalised per
    batch, or a user data set's float32 inputs, used as given) and int64 labels. ``val_x``/
    ``val_y``: training images set aside for choosing hyper-parameters (``data.val_fraction``;
    None without a split), never trained on."""

    train_x: Images
    train_y: torch.Tensor
    test_x: Images
    test_y: torch.Tensor
    labels: list[int]
    num_classes: int
    input_shape: tuple[int, ...]
    digest: str | None = None  # the user data set's digest (None for the built-ins)
    val_x: Images | None = None
    val_y: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.train_x = Images(self.train_x)
        self.test_x = Images(self.test_x)
        if self.val_x is not None:
            self.val_x = Images(self.val_x)

    def to(self, device: torch.device | str) -> Shard:
        """The same shard with images and labels on `device` (no copy if already there)."""
        return Shard(self.train_x.to(device), self.train_y.to(device), self.test_x.to(device),
                     self.test_y.to(device), list(self.labels), self.num_classes,
                     self.input_shape, self.digest,
                     None if self.val_x is None else self.val_x.to(device),
                     None if self.val_y is None else self.val_y.to(device))

    @property
    def nbytes(self) -> int:
        """Memory held by the shard's tensors."""
        vals = [] if self.val_x is None or self.val_y is None else [self.val_x.nbytes,
                                                                    self.val_y.numel() * 8]
        return (self.train_x.nbytes + self.test_x.nbytes + sum(vals)
                + sum(t.numel() * t.element_size() for t in (self.train_y, self.test_y)))


def compute_partition(
    ds: Dataset,
    num_nodes: int,
    seed: int,
    partition: str = "labels",
    labels_per_node: int | Sequence[int] = 4,
    assignment: Sequence[Sequence[int]] | None = None,
    alpha: float = 0.5,
    train_fraction: float = 1.0,
    val_fraction: float = 0.0,
) -> tuple[list[NodeIndices], list[list[int]]]:
    """Every node's indices and sorted label list; identical on every node for the same seed.

    For "labels" the labels are the assigned ones (``assignment`` if given, else drawn with
    ``labels_per_node``); for "dirichlet" and "iid" they are the labels present in the node's
    training images. ``labels_per_node``/``assignment`` only apply to "labels".
    ``val_fraction`` > 0 sets aside that fraction of each node's training images (per label,
    see `carve_validation`) as its validation split.
    """
    parts, labels = _partition(ds, num_nodes, seed, partition, labels_per_node, assignment,
                               alpha, train_fraction)
    return carve_validation(parts, ds.train_y, val_fraction, seed), labels


def _partition(ds: Dataset, num_nodes: int, seed: int, partition: str,
               labels_per_node: int | Sequence[int], assignment: Sequence[Sequence[int]] | None,
               alpha: float, train_fraction: float) -> tuple[list[NodeIndices], list[list[int]]]:
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


def _make_shard(ds: Dataset, part: NodeIndices, labels: list[int]) -> Shard:
    return Shard(
        train_x=Images(torch.from_numpy(_stored_rows(ds.train_x, part.train))),
        train_y=torch.from_numpy(np.asarray(ds.train_y[part.train], dtype=np.int64)),
        test_x=Images(torch.from_numpy(_stored_rows(ds.test_x, part.test))),
        test_y=torch.from_numpy(np.asarray(ds.test_y[part.test], dtype=np.int64)),
        labels=list(labels),
        num_classes=ds.num_classes,
        input_shape=ds.input_shape,
        digest=ds.digest,
        val_x=(Images(torch.from_numpy(_stored_rows(ds.train_x, part.val)))
               if len(part.val) else None),
        val_y=(torch.from_numpy(np.asarray(ds.train_y[part.val], dtype=np.int64))
               if len(part.val) else None),
    )


def _stored_rows(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The rows of the inputs as stored: uint8 images, or a user data set's float32 inputs."""
    if x.dtype not in (np.uint8, np.float32):
        raise TypeError(f"inputs must be uint8 or float32, got {x.dtype}")
    return take_rows(x, idx)


def _check_node(node_id: int, num_nodes: int) -> None:
    if not 0 <= node_id < num_nodes:
        raise ValueError(f"node_id {node_id} outside 0..{num_nodes - 1}")


def build_shards(ds: Dataset, num_nodes: int, seed: int, partition: str = "labels",
                 labels_per_node: int | Sequence[int] = 4,
                 assignment: Sequence[Sequence[int]] | None = None, alpha: float = 0.5,
                 train_fraction: float = 1.0,
                 node_ids: Sequence[int] | None = None,
                 val_fraction: float = 0.0) -> list[Shard]:
    """Shards of an already loaded data set (all nodes, or the listed ``node_ids``)."""
    parts, labels = compute_partition(ds, num_nodes, seed, partition, labels_per_node,
                                      assignment, alpha, train_fraction, val_fraction)
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
    val_fraction: float = 0.0,
) -> Shard:
    """This node's shard: open the data set (decode cache), partition it from the seed, copy
    out only our rows."""
    _check_node(node_id, num_nodes)
    if partition not in PARTITIONS:  # fail before the (slow) data set load
        raise ValueError(f"unknown partition {partition!r}; choices: {list(PARTITIONS)}")
    ds = open_dataset(dataset, root=root, download=download, python_path=python_path,
                      expected_digest=expected_digest)
    return build_shards(ds, num_nodes, seed, partition, labels_per_node, assignment, alpha,
                        train_fraction, node_ids=[node_id], val_fraction=val_fraction)[0]


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
    val_fraction: float = 0.0,
) -> list[Shard]:
    """Every node's shard from one opening of the data set (same result as load_shard per
    node)."""
    if partition not in PARTITIONS:
        raise ValueError(f"unknown partition {partition!r}; choices: {list(PARTITIONS)}")
    ds = open_dataset(dataset, root=root, download=download, python_path=python_path,
                      expected_digest=expected_digest)
    return build_shards(ds, num_nodes, seed, partition, labels_per_node, assignment, alpha,
                        train_fraction, val_fraction=val_fraction)
