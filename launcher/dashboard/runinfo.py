"""What the page shows before the first record: the graph, each node's retention and labels, and
the run's settings. Built from a run directory (replay) or from the launcher's objects (live)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcepl.config import Config, ConfigError, load_config
from mcepl.topology import Topology, TopologyError, load_topology


class NotARunError(ValueError):
    """The path is missing or is not a run directory; the message says which and why."""


@dataclass(frozen=True)
class RunInfo:
    name: str
    path: str
    algorithm: str
    model: str
    dataset: str
    codec: str
    rounds: int
    eval_every: int
    nodes: list[dict[str, Any]]  # {"id", "r", "labels" (list or None), "degree"}
    edges: list[list[int]]
    label_note: str  # how the labels were assigned, when they are not listed per node

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "algorithm": self.algorithm,
                "model": self.model, "dataset": self.dataset, "codec": self.codec,
                "rounds": self.rounds, "eval_every": self.eval_every, "nodes": self.nodes,
                "edges": self.edges, "label_note": self.label_note}


def node_labels(cfg: Config, topo: Topology) -> tuple[list[list[int] | None], str]:
    """Each node's labels, as the nodes compute them (no data set needed for the label
    partition: the assignment is drawn from the run seed alone)."""
    d = cfg.data
    if d.partition != "labels":
        note = (f"Dirichlet(alpha={d.alpha:g}) label mix" if d.partition == "dirichlet"
                else "iid: every label")
        return [None] * topo.num_nodes, note
    from mcepl.node.data.partition import assign_labels, read_label_assignment

    listed = [n.labels for n in topo.nodes]
    if all(lab is not None for lab in listed):
        return [sorted(lab) for lab in listed], "from the topology file"  # type: ignore[arg-type]
    try:
        if d.labels_file:
            return ([sorted(x) for x in read_label_assignment(d.labels_file, topo.num_nodes)],
                    f"from {d.labels_file}")
        return ([list(x) for x in assign_labels(topo.num_nodes, d.labels_per_node, 10,
                                                cfg.run.seed)],
                f"{d.labels_per_node} labels per node, drawn from seed {cfg.run.seed}")
    except (OSError, ValueError) as exc:
        return [None] * topo.num_nodes, f"labels unknown: {exc}"


def from_objects(cfg: Config, topo: Topology, name: str, path: str = "") -> RunInfo:
    labels, note = node_labels(cfg, topo)
    return RunInfo(
        name=name, path=path, algorithm=cfg.algorithm.name, model=cfg.model.name,
        dataset=cfg.data.dataset, codec=cfg.run.codec, rounds=cfg.run.rounds,
        eval_every=cfg.run.eval_every,
        nodes=[{"id": n.id, "r": n.retention, "labels": labels[n.id],
                "degree": topo.degree(n.id)} for n in topo.nodes],
        edges=[[a, b] for a, b in topo.edges], label_note=note)


def from_run_dir(run_dir: Path) -> RunInfo:
    """A run directory's info; NotARunError (one line) when it is missing or not a run."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise NotARunError(f"{run_dir}: no such directory")
    if not run_dir.is_dir():
        raise NotARunError(f"{run_dir}: not a directory")
    missing = [f for f in ("metrics.jsonl", "topology.json") if not (run_dir / f).is_file()]
    if missing:
        raise NotARunError(f"{run_dir}: not a run directory (no {' or '.join(missing)})")
    import mcepl.node.plugins  # noqa: F401 - the built-in names the config is checked against

    try:
        topo = load_topology(run_dir / "topology.json")
        cfg = load_config(run_dir / "config.toml") if (run_dir / "config.toml").is_file() \
            else load_config(None)
    except (TopologyError, ConfigError, OSError) as exc:
        raise NotARunError(f"{run_dir}: {exc}") from None
    info = from_objects(cfg, topo, name=run_dir.resolve().name, path=str(run_dir))
    return info


def run_status(run_dir: Path) -> str | None:
    """The `status` written into summary.json at the end of a run (None while it runs)."""
    try:
        s = json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return str(s.get("status")) if isinstance(s, dict) and "status" in s else None
