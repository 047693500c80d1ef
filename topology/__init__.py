"""Topology files: schema and validation, generators (ER, ring, ...), mixing matrices, CLI hooks."""

from .generators import (
    KINDS,
    MAX_ER_ATTEMPTS,
    PAPER_RETENTION,
    TRANSPORTS,
    default_ipc_dir,
    dumps_topology,
    generate,
    load_topology,
    mixing_weights,
    read_adjacency,
    read_labels_file,
    save_topology,
    with_transport,
)
from .schema import FORMAT_VERSION, NodeSpec, Topology, TopologyError, check_label_range

__all__ = [
    "FORMAT_VERSION",
    "KINDS",
    "MAX_ER_ATTEMPTS",
    "PAPER_RETENTION",
    "TRANSPORTS",
    "NodeSpec",
    "Topology",
    "TopologyError",
    "check_label_range",
    "default_ipc_dir",
    "dumps_topology",
    "generate",
    "load_topology",
    "mixing_weights",
    "read_adjacency",
    "read_labels_file",
    "save_topology",
    "with_transport",
]
