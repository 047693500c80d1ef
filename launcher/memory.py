"""Will N node processes fit in this machine's memory? An estimate made before any node starts.

What a node process really occupies (its private pages: the summed PSS of the node processes,
shared pages split among them) is, calibrated on `mcepl launch` runs (README, "Memory and
speed"):

    base          Python + torch + mcepl + ZeroMQ, before any data: BASE_BYTES
    model state   PARAM_COPIES float32 copies of every parameter (the shared weights, scores,
                  their gradient, the aggregation tensors, scratch buffers, the masks)
    training      the layer outputs of one forward/backward piece (micro-batch), four times
                  (outputs, their gradients, the allocator's slack)
    evaluation    the layer outputs of one evaluation batch
    data          the node's own shard, as stored (uint8)

The shared libraries' pages (torch's among them) are in memory once for all processes; they and
the launcher itself (torch imported, the collector) count once, as LAUNCHER_BYTES. What is
available is the kernel's MemAvailable (free memory plus what the page cache can give back),
narrowed by a cgroup memory limit where there is one; ``MCEPL_MEMORY_AVAILABLE`` (bytes, or with
a K/M/G suffix) overrides it (tests; or to keep room for other work on the machine).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mcepl.config import Config
from mcepl.node.data import Shard
from mcepl.topology import Topology

if TYPE_CHECKING:
    from torch import nn

AVAILABLE_ENV = "MCEPL_MEMORY_AVAILABLE"
MiB = 1 << 20
BASE_BYTES = 150 * MiB
"""A spawned node process's private memory before its data and model state: 142-148 MiB
anonymous after importing torch and mcepl (of 218-241 MiB RSS, the rest torch's shared library
pages), plus ZeroMQ's threads and buffers."""
FORKED_BASE_BYTES = 20 * MiB
"""The same for a node forked from the launcher's fork server (launcher/forkserver.py): the
imported pages stay shared; what a node writes of them, its allocator and ZeroMQ are its own
(100 forked small-CNN nodes measured 48 MiB each in all, against 185 MiB spawned)."""
PARAM_COPIES = 12
"""float32 copies per parameter held by a node at its peak: weights, scores, their gradients
(per micro-batch and summed), aggregation tensors, scratch buffers, masks (calibrated on MCE-PL
with AlexNet: 20 forked nodes measured 137 MiB each)."""
LAUNCHER_BYTES = 500 * MiB
"""The shared library pages (~100 MiB, once), the launcher process (torch imported for the data
check, the collector, progress) and the fork server."""


@dataclass(frozen=True)
class Estimate:
    nodes: int
    per_node: int
    launcher: int
    parts: dict[str, int]

    @property
    def total(self) -> int:
        return self.launcher + self.nodes * self.per_node

    def max_nodes(self, available: int) -> int:
        """The most node processes that fit in `available` bytes."""
        return max(0, (available - self.launcher) // self.per_node)


def _algorithm_params(cfg: Config) -> object:
    from mcepl.node.algorithms import ALGORITHMS

    cls = ALGORITHMS[cfg.algorithm.name]
    return cfg.algorithm.params if cfg.algorithm.params is not None else cls.Params()


def estimate(cfg: Config, topo: Topology, shard: Shard, forked: bool = False,
             module: nn.Module | None = None) -> Estimate:
    """Peak memory of the run's node processes on this machine, from the model (`module`, the
    shared network the launcher built to check it; built here if not given), the batch sizes
    and one node's shard (`shard`); `forked`: the nodes are forked from the fork server rather
    than spawned."""
    from mcepl.node.batching import activation_bytes_per_sample, micro_batch_size
    from mcepl.node.evaluation import eval_batch_size
    from mcepl.node.factory import build_shared_model

    if module is None:
        module = build_shared_model(cfg, shard).module
    params = sum(p.numel() for p in module.parameters())
    act = activation_bytes_per_sample(module, shard.input_shape)
    algo = _algorithm_params(cfg)
    batch = int(getattr(algo, "batch_size", 128))
    device = "cpu" if cfg.run.device == "cpu" else "cuda"
    piece = micro_batch_size(getattr(algo, "micro_batch", "auto"), batch, act, device)
    ev = eval_batch_size(cfg.run.eval_batch_size, device, act)
    on_host = device == "cpu"  # on a GPU model state and activations live in its memory
    parts = {
        "base": FORKED_BASE_BYTES if forked else BASE_BYTES,
        "model": PARAM_COPIES * 4 * params if on_host else 4 * params,
        "training": 4 * piece * act if on_host else 0,
        "evaluation": ev * act if on_host else 0,
        "data": shard.nbytes,
    }
    return Estimate(topo.num_nodes, sum(parts.values()), LAUNCHER_BYTES, parts)


def parse_bytes(text: str) -> int:
    """'2G', '512M', '1048576' -> bytes (binary units)."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    num = t[:-1] if t[-1:] in "KMGT" and t else t
    try:
        value = float(num)
    except ValueError:
        raise ValueError(f"{AVAILABLE_ENV}={text!r}: not a size (e.g. 2G, 512M, bytes)") from None
    if not value >= 0:
        raise ValueError(f"{AVAILABLE_ENV}={text!r}: must be >= 0")
    return int(value * mult)


def _meminfo_available(path: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """What this process's memory cgroup still allows (limit minus usage), if it has a limit."""
    pairs = [(root / "memory.max", root / "memory.current"),  # v2
             (root / "memory" / "memory.limit_in_bytes",
              root / "memory" / "memory.usage_in_bytes")]  # v1
    for limit_f, usage_f in pairs:
        try:
            limit_s = limit_f.read_text().strip()
            if limit_s == "max" or int(limit_s) >= 1 << 60:
                return None
            return max(0, int(limit_s) - int(usage_f.read_text().strip()))
        except (OSError, ValueError):
            continue
    return None


def available() -> tuple[int | None, str]:
    """(bytes available for new processes, where the figure comes from), None if unknown."""
    env = os.environ.get(AVAILABLE_ENV)
    if env:
        return parse_bytes(env), AVAILABLE_ENV
    mem, cg = _meminfo_available(), _cgroup_room()
    if cg is not None and (mem is None or cg < mem):
        return cg, "cgroup memory limit"
    return mem, "MemAvailable"


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def check(est: Estimate) -> str | None:
    """None when the run fits (or what is available is unknown), else the one-line refusal."""
    room, source = available()
    if room is None or est.total <= room:
        return None
    fit = est.max_nodes(room)
    return (f"not enough memory for {est.nodes} nodes: estimated {_gb(est.total)} "
            f"({est.per_node / MiB:.0f} MiB per node + {est.launcher / MiB:.0f} MiB launcher), "
            f"{_gb(room)} free ({source}); at most {fit} node{'s' if fit != 1 else ''} fit; "
            "--force starts them anyway")


def describe(est: Estimate) -> str:
    """The estimate in a few words, for the launch's first lines."""
    parts = ", ".join(f"{k} {v / MiB:.0f}" for k, v in est.parts.items())
    return (f"memory estimate: {_gb(est.total)} for {est.nodes} nodes "
            f"({est.per_node / MiB:.0f} MiB each: {parts} MiB)")
