"""What a run is before it starts: the config and topology from files and overrides, and the
default topology (asked of the algorithm).

`mcepl launch` maps its flags onto `resolve_run`; benchmarks call it (or `default_topology`)
directly. Addresses of a default topology are placeholders (127.0.0.1:5550+i, or the default
ipc directory): `launch(..., auto_ports=True)` replaces them with addresses it reserved
(launcher/ports.py), so concurrent launches never collide.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from mcepl.config import Config, ConfigError, load_config
from mcepl.node.factory import check_labels
from mcepl.registry import ALGORITHMS
from mcepl.topology import (
    PAPER_RETENTION,
    Topology,
    generate,
    load_topology,
    with_transport,
)

DEFAULT_NODES = 20
DEFAULT_BASE_PORT = 5550
DEFAULT_KIND = "er"  # for algorithms that need no particular graph: ER(0.5), connected, seeded


def free_base_port(n: int, start: int = DEFAULT_BASE_PORT, host: str = "127.0.0.1") -> int:
    """The first port >= start with n consecutive free TCP ports on `host` right now (another
    process may take them before they are used: launches use `auto_ports` instead; this serves
    tools that need fixed, known ports, e.g. benchmarks/tcpdump_bytes.py)."""
    port = start
    while port + n < 65000:
        for k in range(n):
            with socket.socket() as s:
                try:
                    s.bind((host, port + k))
                except OSError:
                    port = port + k + 1
                    break
        else:
            return port
    raise RuntimeError(f"no {n} consecutive free ports on {host} from {start}")


def default_topology(cfg: Config, nodes: int, transport: str = "tcp",
                     algorithm: str | None = None) -> Topology:
    """The graph the algorithm declares it needs (`Algorithm.required_topology`, e.g. fedavg's
    star with the server at 0), else ER(0.5); the paper's retention vector, repeated. The
    addresses are placeholders for `launch(..., auto_ports=True)` (see the module docstring)."""
    name = algorithm or cfg.algorithm.name
    cls = ALGORITHMS.get(name)
    kind = getattr(cls, "required_topology", None) or DEFAULT_KIND
    retention = [PAPER_RETENTION[i % len(PAPER_RETENTION)] for i in range(nodes)]
    return generate(kind, nodes, p=0.5, seed=cfg.run.seed, retention=retention,
                    base_port=DEFAULT_BASE_PORT, transport=transport)


def resolve_run(config: str | None = None, topology: str | None = None, *,
                nodes: int | None = None, transport: str | None = None,
                run: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
                model: dict[str, Any] | None = None,
                algorithm: dict[str, Any] | None = None) -> tuple[Config, Topology]:
    """Config and topology from their files (None: the defaults) plus overrides (a None value
    means "not given"), validated. ConfigError/TopologyError on bad input."""
    root = (data or {}).get("root")
    if root is not None and not Path(root).expanduser().is_dir():
        raise ConfigError(f"--data-dir {root}: no such directory")
    cfg = load_config(config).with_overrides(run=run or {}, data=data or {}, model=model or {},
                                              algorithm=algorithm or {})
    chosen = transport or "tcp"
    if topology:
        if nodes is not None:
            raise ConfigError("--nodes applies only without --topology (the file sets the nodes)")
        topo = load_topology(topology)
        check_labels(cfg, topo, topology)
        if transport:  # placeholders: the launcher picks the ports or the socket directory
            topo = with_transport(topo, chosen, base_port=DEFAULT_BASE_PORT
                                  if chosen == "tcp" else None)
        return cfg, topo
    n = nodes if nodes is not None else DEFAULT_NODES
    if n < 1:
        raise ConfigError(f"--nodes must be >= 1, got {n}")
    return cfg, default_topology(cfg, n, chosen)
