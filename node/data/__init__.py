"""Data layer: data set readers (numpy only), label-skew partitions and per-node shards."""

from .datasets import (
    KNOWN_DATASETS,
    Dataset,
    DatasetError,
    DatasetFormatError,
    DatasetNotFoundError,
    candidate_dirs,
    load_cifar10,
    load_dataset,
    load_fashion_mnist,
    read_cifar_batch,
    read_idx,
    to_tensor,
)
from .partition import (
    NodeIndices,
    assign_labels,
    partition_by_labels,
    partition_dirichlet,
    partition_iid,
    read_label_assignment,
)
from .shard import PARTITIONS, Shard, build_shards, compute_partition, load_all_shards, load_shard
from .userdata import arrays_digest, load_user_dataset

__all__ = [
    "KNOWN_DATASETS",
    "PARTITIONS",
    "Dataset",
    "DatasetError",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "NodeIndices",
    "Shard",
    "arrays_digest",
    "assign_labels",
    "build_shards",
    "candidate_dirs",
    "compute_partition",
    "load_all_shards",
    "load_cifar10",
    "load_dataset",
    "load_fashion_mnist",
    "load_shard",
    "load_user_dataset",
    "partition_by_labels",
    "partition_dirichlet",
    "partition_iid",
    "read_cifar_batch",
    "read_idx",
    "read_label_assignment",
    "to_tensor",
]
