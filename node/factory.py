"""Build one node's pieces from (config, topology, node id): shard, shared model, algorithm.

Both the in-process driver and the networked node call these, which is what makes them agree
number for number.
"""

from __future__ import annotations

import copy
import hashlib

import torch

from mcepl.config import Config
from mcepl.node.algorithms import ALGORITHMS, Algorithm, NodeContext
from mcepl.node.data import (
    Dataset,
    Shard,
    build_shards,
    load_all_shards,
    load_shard,
    open_dataset,
    read_label_assignment,
)
from mcepl.node.data.datasets import dataset_classes
from mcepl.node.models import MaskedModel, build_model, is_retention_scaled
from mcepl.node.rounds import Evaluator
from mcepl.topology import Topology, check_label_range, dumps_topology


def default_run_id(cfg: Config, topo: Topology) -> str:
    """Nodes started independently with the same two files agree on this id."""
    digest = hashlib.sha256((cfg.hash() + dumps_topology(topo)).encode()).hexdigest()
    return f"run-{digest[:12]}"


def check_labels(cfg: Config, topo: Topology, source: object) -> None:
    """The topology's labels lie within the configured data set's classes; TopologyError naming
    `source` (the topology file) otherwise."""
    n = dataset_classes(cfg.data.dataset)
    if n is not None:
        check_label_range(topo, n, str(source), cfg.data.dataset)


def label_assignment(cfg: Config, topo: Topology) -> list[list[int]] | None:
    """Labels from the topology file if every node has them, else from data.labels_file."""
    labels = [n.labels for n in topo.nodes]
    if all(lab is not None for lab in labels):
        return [list(lab) for lab in labels]  # type: ignore[arg-type]
    if cfg.data.labels_file:
        return read_label_assignment(cfg.data.labels_file, num_nodes=len(topo.nodes))
    return None


def _partition_kwargs(cfg: Config, topo: Topology) -> dict:
    d = cfg.data
    return dict(num_nodes=len(topo.nodes), seed=cfg.run.seed, partition=d.partition,
                labels_per_node=d.labels_per_node, assignment=label_assignment(cfg, topo),
                alpha=d.alpha, train_fraction=d.train_fraction, val_fraction=d.val_fraction)


def _shard_kwargs(cfg: Config, topo: Topology, data_digest: str | None = None) -> dict:
    d = cfg.data
    return dict(dataset=d.dataset, root=d.root, download=d.download,
                python_path=cfg.run.python_path, expected_digest=data_digest,
                **_partition_kwargs(cfg, topo))


def load_data(cfg: Config, data_digest: str | None = None) -> Dataset:
    """The whole data set, through this machine's decode cache (a user's loader is imported
    with run.python_path; its `digest` is set, and checked against `data_digest` when given)."""
    d = cfg.data
    return open_dataset(d.dataset, root=d.root, download=d.download,
                        python_path=cfg.run.python_path, expected_digest=data_digest)


def shard_of(ds: Dataset, cfg: Config, topo: Topology, node_id: int) -> Shard:
    """One node's shard of an already loaded data set."""
    return build_shards(ds, node_ids=[node_id], **_partition_kwargs(cfg, topo))[0]


def node_shard(cfg: Config, topo: Topology, node_id: int, data_digest: str | None = None) -> Shard:
    """Only this node's shard (what a node process keeps in memory). `data_digest`: the user
    data set's digest the launcher saw (refused if this node's loader returns other data)."""
    return load_shard(node_id=node_id, **_shard_kwargs(cfg, topo, data_digest))


def all_shards(cfg: Config, topo: Topology) -> list[Shard]:
    """Every node's shard, reading the data set once (in-process driver)."""
    return load_all_shards(**_shard_kwargs(cfg, topo))


def build_shared_model(cfg: Config, shard: Shard) -> MaskedModel:
    """The shared fixed-weight network for this data (built on the CPU from the run seed),
    with its masked layers chosen by model.masked. UserCodeError for a user model that does
    not fit (factory, masked layers, output size)."""
    m = cfg.model
    module = build_model(m.name, shard.input_shape, shard.num_classes, seed=cfg.run.seed,
                         weight_init=m.weight_init, logit_elu=m.logit_elu, masked=m.masked,
                         python_path=cfg.run.python_path)
    return MaskedModel(module, m.masked, retention_scaled=is_retention_scaled(m.weight_init))


def resolve_device(name: str) -> torch.device:
    """The configured device, with a clear error when it is not there."""
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"run.device is {name!r} but CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise RuntimeError(f"run.device is {name!r} but only {torch.cuda.device_count()} GPU(s)")
    return dev


def build_evaluator(cfg: Config, shard: Shard) -> Evaluator:
    """The node's own full test set (and its validation split, when it has one), evaluated on
    the configured rounds and device."""
    device = resolve_device(cfg.run.device)
    return Evaluator(shard.test_x.to(device), shard.test_y.to(device), every=cfg.run.eval_every,
                     rounds=cfg.run.rounds, batch_size=cfg.run.eval_batch_size, device=device,
                     val_x=None if shard.val_x is None else shard.val_x.to(device),
                     val_y=None if shard.val_y is None else shard.val_y.to(device))


def build_algorithm(cfg: Config, topo: Topology, node_id: int, shard: Shard) -> Algorithm:
    """The node's algorithm object over the shared model built from the shared seed."""
    device = resolve_device(cfg.run.device)
    if device.type == "cuda":  # no autotuned or nondeterministic kernels: both drivers agree
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    model = build_shared_model(cfg, shard).to(device)
    ctx = NodeContext(node_id=node_id, topology=topo, shard=shard.to(device), model=model,
                      total_rounds=cfg.run.rounds, seed=cfg.run.seed, device=device)
    cls = ALGORITHMS[cfg.algorithm.name]
    # each node its own copy: an algorithm may keep state in its params, nodes never share it
    params = copy.deepcopy(cfg.algorithm.params) if cfg.algorithm.params is not None \
        else cls.Params()
    return cls(ctx, params)

