"""The run directory, in one place: where it goes by default, refusing one that already holds a
run, and the files every driver writes into it before the first round (config.toml,
topology.json, logs/).

Used by `mcepl launch` (networked and `--inprocess`) and `mcepl collect`, so the three agree on
the layout (see the README's Quickstart for the whole tree).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mcepl.config import Config, dump_toml
from mcepl.topology import Topology, save_topology

METRICS = "metrics.jsonl"


class RunDirError(ValueError):
    """The run directory cannot be used (one line naming it)."""


def default_run_dir(algorithm: str, now: datetime | None = None) -> Path:
    """runs/<time>-<algorithm> under the current directory."""
    return Path("runs") / f"{(now or datetime.now()):%Y%m%d-%H%M%S}-{algorithm}"


def check_unused(path: str | Path) -> Path:
    """`path` as a Path, or RunDirError when it already holds a run: two runs are never mixed
    and nothing already written is overwritten."""
    p = Path(path)
    if (p / METRICS).exists():
        raise RunDirError(f"{p} already holds a run ({METRICS}); choose another --out")
    return p


@dataclass(frozen=True)
class RunDir:
    """A run directory being written; `create` makes it."""

    path: Path

    @classmethod
    def create(cls, path: str | Path, cfg: Config, topo: Topology | None = None, *,
               logs: bool = False) -> RunDir:
        """Make the directory (refusing a used one), write config.toml (all defaults filled in)
        and, when given, topology.json; `logs` also makes logs/ for the node logs."""
        rd = cls(check_unused(path))
        rd.path.mkdir(parents=True, exist_ok=True)
        if logs:
            rd.logs.mkdir(exist_ok=True)
        rd.config.write_text(dump_toml(cfg))
        if topo is not None:
            rd.write_topology(topo)
        return rd

    def write_topology(self, topo: Topology) -> None:
        """topology.json, the exact topology the nodes run (keys included, when secure)."""
        save_topology(topo, self.topology)

    @property
    def config(self) -> Path:
        return self.path / "config.toml"

    @property
    def topology(self) -> Path:
        return self.path / "topology.json"

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def keys(self) -> Path:
        return self.path / "keys"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def node_log(self, node_id: int) -> Path:
        return self.logs / f"node-{node_id}.log"
