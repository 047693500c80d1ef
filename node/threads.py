"""How many torch threads each node uses: ``run.threads_per_node``, or "auto".

"auto" gives every node an equal share of the cores this process may use:
``max(1, cores // nodes_here)``, where ``cores`` is the CPU affinity mask narrowed by a cgroup
CPU quota (containers), and ``nodes_here`` the number of node processes sharing them: the
topology's size for ``mcepl launch`` (which passes it to its children in ``MCEPL_LOCAL_NODES``)
and for the in-process driver, ``MCEPL_LOCAL_NODES`` or 1 for ``mcepl node``. So N nodes on C
cores never run more threads than cores (N >= C: one thread each) and leave at most
``C mod N`` cores idle.

Thread count can change floating-point results (how a convolution splits its sums), so the
in-process driver resolves "auto" exactly as the nodes of a local launch do: both use the same
count on the same machine and still agree number for number. Pin an integer to compare runs
across machines.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from mcepl.config import LOCAL_NODES_ENV

__all__ = ["AUTO", "LOCAL_NODES_ENV", "resolve_threads", "usable_cores"]

AUTO = "auto"


def _cgroup_cpu_limit() -> float | None:
    """CPUs allowed by a cgroup v2 (cpu.max) or v1 (cfs quota/period) limit, if any."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    """Cores this process may run on: the affinity mask, narrowed by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, max(1, math.floor(limit)))
    return max(1, cores)


def resolve_threads(setting: int | str, nodes_here: int | None = None) -> int:
    """Torch threads for one node: `setting` if an int, else the "auto" share of the cores.

    `nodes_here` defaults to ``$MCEPL_LOCAL_NODES`` (or 1 when unset).
    """
    if isinstance(setting, int) and not isinstance(setting, bool):
        if setting <= 0:
            raise ValueError(f"threads_per_node must be > 0, got {setting}")
        return setting
    if setting != AUTO:
        raise ValueError(f"threads_per_node must be a positive int or {AUTO!r}, got {setting!r}")
    if nodes_here is None:
        try:
            nodes_here = int(os.environ.get(LOCAL_NODES_ENV, "1"))
        except ValueError:
            nodes_here = 1
    return max(1, usable_cores() // max(1, nodes_here))
