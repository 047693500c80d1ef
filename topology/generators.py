"""Build, read and write topology files; derive mixing matrices from them.

Generators are deterministic in their seed so that a run can be rebuilt from the file's ``meta``
alone, and they always return a validated :class:`~mcepl.topology.schema.Topology`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mcepl import jsonio

from .schema import NodeSpec, Topology, TopologyError

#: Per-node retention ratios of the paper's node-heterogeneity experiments (Table II), node 0..19.
PAPER_RETENTION: tuple[float, ...] = (
    0.4, 0.4, 0.3, 0.2, 0.1, 0.1, 0.1, 0.2, 0.4, 0.2,
    0.4, 0.2, 0.3, 0.3, 0.4, 0.3, 0.1, 0.1, 0.3, 0.3,
)

KINDS: tuple[str, ...] = ("er", "ring", "complete", "star", "adjacency")
TRANSPORTS: tuple[str, ...] = ("tcp", "ipc")
#: How many G(n, p) draws (seeds seed, seed+1, ...) to try before giving up on a connected one.
MAX_ER_ATTEMPTS = 1000
DEFAULT_HOST = "127.0.0.1"
DEFAULT_BASE_PORT = 5550


def default_ipc_dir() -> str:
    """Where ipc sockets go when no directory is given (short, so paths fit the socket limit)."""
    return os.path.join(tempfile.gettempdir(), "mcepl-ipc")


# ---- generation ---------------------------------------------------------------------------------
def generate(
    kind: str,
    num_nodes: int | None,
    *,
    p: float = 0.5,
    seed: int = 0,
    retention: float | Sequence[float] | None = None,
    retention_choices: Sequence[float] | None = None,
    host: str = DEFAULT_HOST,
    base_port: int = DEFAULT_BASE_PORT,
    adjacency: str | Path | None = None,
    labels: Sequence[Sequence[int]] | None = None,
    transport: str = "tcp",
    ipc_dir: str | Path | None = None,
) -> Topology:
    """Generate a validated topology.

    Kinds:
      - ``er``: Erdos-Renyi G(n, p) drawn with networkx from ``seed``; while the draw is not
        connected it is redrawn with ``seed+1``, ``seed+2``, ... up to :data:`MAX_ER_ATTEMPTS` draws
        (``meta`` records ``attempts`` and the ``graph_seed`` that was kept).
      - ``ring``, ``complete``: as named.
      - ``star``: node 0 is the hub (FedAvg's server), every other node a leaf.
      - ``adjacency``: edges from a 0/1 adjacency-matrix text file (``adjacency=``); the node count
        comes from the file, and an explicit ``num_nodes`` that differs is an error.

    Retention (at most one of ``retention`` / ``retention_choices``):
      - a float: the same ratio for every node (the paper's Table I setting);
      - a sequence of N floats: one per node;
      - ``retention_choices``: each node draws uniformly from the choices with
        ``numpy.random.default_rng(seed)``;
      - neither: :data:`PAPER_RETENTION` (the paper's Table II vector) when N == 20, cycled as
        ``PAPER_RETENTION[i % 20]`` for any other N, so the default is always heterogeneous and
        reproducible rather than an arbitrary constant.

    Addresses are ``tcp://{host}:{base_port + i}``, or with ``transport="ipc"``
    ``ipc://{ipc_dir}/node-{i}.sock`` (``ipc_dir`` defaults to :func:`default_ipc_dir`).
    ``labels``, when given, is one label list per node, embedded in the file.
    """
    if kind not in KINDS:
        raise TopologyError(f"unknown topology kind {kind!r}; choose one of {', '.join(KINDS)}")
    if transport not in TRANSPORTS:
        raise TopologyError(f"unknown transport {transport!r}; choose tcp or ipc")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TopologyError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    meta: dict[str, Any] = {"kind": kind}

    if kind == "adjacency":
        if adjacency is None:
            raise TopologyError("kind 'adjacency' needs an adjacency-matrix file (--adjacency)")
        n_file, edges = read_adjacency(adjacency)
        if num_nodes is not None and num_nodes != n_file:
            raise TopologyError(f"{adjacency}: the matrix has {n_file} nodes but {num_nodes} "
                                "were asked for (leave the node count out with an adjacency file)")
        n = n_file
        meta["adjacency"] = str(adjacency)
    else:
        if adjacency is not None:
            raise TopologyError(f"an adjacency file only applies to kind 'adjacency', not {kind!r}")
        if num_nodes is None:
            raise TopologyError(f"kind {kind!r} needs a node count")
        if isinstance(num_nodes, bool) or not isinstance(num_nodes, (int, np.integer)):
            raise TopologyError(f"node count must be an integer, got {num_nodes!r}")
        n = int(num_nodes)
        if n < 1:
            raise TopologyError(f"node count must be at least 1, got {n}")
        if kind == "er":
            edges, attempts = _er_edges(n, p, seed)
            meta.update(p=float(p), attempts=attempts, graph_seed=seed + attempts - 1)
        elif kind == "ring":
            edges = [(i, (i + 1) % n) for i in range(n)] if n > 2 else [(0, 1)] if n == 2 else []
        elif kind == "complete":
            edges = [(i, j) for i in range(n) for j in range(i + 1, n)]
        else:  # star
            edges = [(0, i) for i in range(1, n)]
            meta["hub"] = 0
    meta["seed"] = seed

    rets, mode = _retentions(n, retention, retention_choices, seed)
    meta["retention"] = mode
    if retention_choices is not None:
        meta["retention_choices"] = [float(r) for r in retention_choices]

    if labels is not None and len(labels) != n:
        raise TopologyError(f"labels: got {len(labels)} label lists for {n} nodes")

    meta["transport"] = transport
    addresses = _addresses(n, transport, host, base_port, ipc_dir)
    nodes = [
        NodeSpec(id=i, address=addresses[i], retention=rets[i],
                 labels=[int(x) for x in labels[i]] if labels is not None else None)
        for i in range(n)
    ]
    return Topology(nodes=nodes, edges=list(edges), meta=meta).validate(f"<generated {kind}>")


def _er_edges(n: int, p: float, seed: int) -> tuple[list[tuple[int, int]], int]:
    """Edges of the first connected G(n, p) among seeds seed, seed+1, ...; plus the draw count."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise TopologyError(f"er: p must be a probability in [0, 1], got {p!r}")
    if n > 1 and p == 0.0:
        raise TopologyError(f"er: p=0 never gives a connected graph on {n} nodes")
    import networkx as nx  # here, not at the top: node processes never need it (12 MB each)

    for attempt in range(MAX_ER_ATTEMPTS):
        g = nx.gnp_random_graph(n, p, seed=seed + attempt)
        if nx.is_connected(g):
            return [(min(a, b), max(a, b)) for a, b in g.edges()], attempt + 1
    raise TopologyError(
        f"er: no connected G(n={n}, p={p}) in {MAX_ER_ATTEMPTS} draws (seeds {seed}.."
        f"{seed + MAX_ER_ATTEMPTS - 1}); use a larger p (about ln(n)/n or more)")


def _retentions(n: int, retention: float | Sequence[float] | None,
                choices: Sequence[float] | None, seed: int) -> tuple[list[float], str]:
    if retention is not None and choices is not None:
        raise TopologyError("give either a retention value/list or retention choices, not both")
    if choices is not None:
        if len(choices) == 0:
            raise TopologyError("retention choices: the list is empty")
        rng = np.random.default_rng(seed)
        return [float(x) for x in rng.choice(np.asarray(choices, dtype=float), size=n)], "choices"
    if retention is None:
        if n == len(PAPER_RETENTION):
            return list(PAPER_RETENTION), "paper"
        return [PAPER_RETENTION[i % len(PAPER_RETENTION)] for i in range(n)], "paper-cycled"
    if isinstance(retention, (int, float)) and not isinstance(retention, bool):
        return [float(retention)] * n, "uniform"
    rets = [float(r) for r in retention]
    if len(rets) != n:
        raise TopologyError(f"retention: got {len(rets)} values for {n} nodes")
    return rets, "list"


def _addresses(n: int, transport: str, host: str | None, base_port: int | None,
               ipc_dir: str | Path | None) -> list[str]:
    if transport == "ipc":
        d = os.path.abspath(ipc_dir if ipc_dir is not None else default_ipc_dir())
        return [f"ipc://{d}/node-{i}.sock" for i in range(n)]
    host = DEFAULT_HOST if host is None else host
    base_port = DEFAULT_BASE_PORT if base_port is None else base_port
    if base_port < 1 or base_port + n - 1 > 65535:
        raise TopologyError(f"base port {base_port}: ports {base_port}..{base_port + n - 1} "
                            "must lie in 1..65535")
    return [f"tcp://{host}:{base_port + i}" for i in range(n)]


def with_transport(topo: Topology, transport: str, ipc_dir: str | Path | None = None,
                   host: str | None = None, base_port: int | None = None) -> Topology:
    """Same graph, retentions and labels, with addresses rewritten (e.g. for ``--transport ipc``).

    tcp: each node keeps its own host and port unless ``host`` / ``base_port`` override them
    (a node coming from ipc gets 127.0.0.1 and 5550+i by default); a ``bind`` keeps its host and
    follows the new port. ipc: ``ipc://{ipc_dir}/node-{i}.sock`` and no ``bind``.
    """
    if transport not in TRANSPORTS:
        raise TopologyError(f"unknown transport {transport!r}; choose tcp or ipc")
    n = topo.num_nodes
    if transport == "ipc":
        addrs = _addresses(n, "ipc", None, None, ipc_dir)
        nodes = [replace(node, address=addrs[node.id], bind=None) for node in topo.nodes]
    else:
        if base_port is not None:
            _addresses(n, "tcp", host, base_port, None)  # range check only
        nodes = []
        for node in topo.nodes:
            old = _split_tcp(node.address)
            new_host = host if host is not None else old[0] if old else DEFAULT_HOST
            if base_port is not None:
                new_port = base_port + node.id
            else:
                new_port = old[1] if old else DEFAULT_BASE_PORT + node.id
            bind = node.bind
            old_bind = _split_tcp(bind) if bind is not None else None
            if old_bind is not None:
                bind = f"tcp://{old_bind[0]}:{new_port}"
            nodes.append(replace(node, address=f"tcp://{new_host}:{new_port}", bind=bind))
    meta = {**topo.meta, "transport": transport}
    return replace(topo, nodes=nodes, meta=meta).validate(f"<{transport} addresses>")


def _split_tcp(addr: str) -> tuple[str, int] | None:
    if not addr.startswith("tcp://"):
        return None
    host, _, port = addr[len("tcp://"):].rpartition(":")
    return host, int(port)


# ---- input files --------------------------------------------------------------------------------
def _read_text(path: str | Path, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise TopologyError(f"{path}: cannot read {what}: {reason}") from None


def _data_lines(text: str) -> list[tuple[int, list[str]]]:
    """(line number, tokens) of each non-blank line, with ``#`` comments removed."""
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        toks = line.split("#", 1)[0].split()
        if toks:
            out.append((lineno, toks))
    return out


def read_adjacency(path: str | Path) -> tuple[int, list[tuple[int, int]]]:
    """Parse a whitespace-separated 0/1 adjacency matrix; return (N, sorted edges (i < j)).

    Checks square, 0/1 only, zero diagonal, symmetric and connected, naming line and column.
    """
    rows = _data_lines(_read_text(path, "adjacency matrix"))
    n = len(rows)
    if n == 0:
        raise TopologyError(f"{path}: adjacency matrix is empty")
    mat: list[list[int]] = []
    for i, (lineno, toks) in enumerate(rows):
        if len(toks) != n:
            raise TopologyError(f"{path}:{lineno}: row {i} has {len(toks)} entries, expected {n} "
                                "(the matrix must be square)")
        row = []
        for j, t in enumerate(toks):
            if t not in ("0", "1"):
                raise TopologyError(f"{path}:{lineno}: entry ({i}, {j}) is {t!r}, expected 0 or 1")
            row.append(int(t))
        if row[i]:
            raise TopologyError(f"{path}:{lineno}: diagonal entry ({i}, {i}) is 1 (no self loops)")
        mat.append(row)
    for i in range(n):
        for j in range(i + 1, n):
            if mat[i][j] != mat[j][i]:
                raise TopologyError(f"{path}: not symmetric: entry ({i}, {j}) is {mat[i][j]} but "
                                    f"({j}, {i}) is {mat[j][i]}")
    edges = [(i, j) for i in range(n) for j in range(i + 1, n) if mat[i][j]]
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(edges)
    if not nx.is_connected(g):
        comps = sorted((sorted(c) for c in nx.connected_components(g)), key=lambda c: (-len(c), c))
        raise TopologyError(f"{path}: graph is not connected ({len(comps)} components); "
                            f"node {comps[1][0]} cannot reach node {comps[0][0]}")
    return n, edges


def read_labels_file(path: str | Path, num_nodes: int | None = None) -> list[list[int]]:
    """Label assignment file: line i (blank and ``#`` lines skipped) = node i's label ids."""
    out: list[list[int]] = []
    for lineno, toks in _data_lines(_read_text(path, "labels file")):
        try:
            labels = [int(t) for t in toks]
        except ValueError:
            raise TopologyError(f"{path}:{lineno}: labels must be integers, got "
                                f"{' '.join(toks)!r}") from None
        out.append(labels)
    if num_nodes is not None and len(out) != num_nodes:
        raise TopologyError(f"{path}: {len(out)} label lines for {num_nodes} nodes")
    return out


# ---- topology files -----------------------------------------------------------------------------
class _DuplicateKey(ValueError):
    pass


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k, v in pairs:
        if k in d:
            raise _DuplicateKey(f"duplicate key {k!r} in a JSON object")
        d[k] = v
    return d


def load_topology(path: str | Path) -> Topology:
    """Read and validate a topology file; every problem is a one-line :class:`TopologyError`."""
    text = _read_text(path, "topology file")
    try:
        doc = jsonio.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as e:
        raise TopologyError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    except jsonio.JSONLimitError as e:
        raise TopologyError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e}") from None
    except ValueError as e:  # duplicate key
        raise TopologyError(f"{path}: invalid topology: {e}") from None
    return Topology.from_json_dict(doc, source=str(path))


def dumps_topology(topo: Topology) -> str:
    """JSON text with one node and one edge per line: readable, and diffs stay small."""
    d = topo.to_json_dict()
    try:
        meta = json.dumps(d["meta"])
    except (TypeError, ValueError) as e:
        raise TopologyError(f"meta is not JSON-serialisable: {e}") from None
    nodes = ",\n".join("    " + json.dumps(nd) for nd in d["nodes"])
    edges = ",\n".join("    " + json.dumps(e) for e in d["edges"])
    edges_block = f"[\n{edges}\n  ]" if edges else "[]"
    collector = f',\n  "collector": {json.dumps(d["collector"])}' if "collector" in d else ""
    return (f'{{\n  "version": {d["version"]},\n  "nodes": [\n{nodes}\n  ],\n'
            f'  "edges": {edges_block},\n  "meta": {meta}{collector}\n}}\n')


def save_topology(topo: Topology, path: str | Path) -> None:
    """Validate, then write atomically (temp file + fsync + os.replace) so that a crash never
    leaves a half-written file for the nodes to read."""
    path = Path(path)
    topo.validate(str(path))
    text = dumps_topology(topo)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        mode = 0o644
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise TopologyError(f"{path}: cannot write topology file: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise TopologyError(f"{path}: cannot write topology file: {e.strerror or e}") from None
        raise


# ---- mixing matrices ----------------------------------------------------------------------------
def mixing_weights(topo: Topology, scheme: str = "metropolis") -> np.ndarray:
    """N x N gossip matrix W for the averaging baselines (row i = weights node i applies).

    - ``metropolis`` (Metropolis-Hastings): ``W_ij = 1 / (1 + max(d_i, d_j))`` on edges, the rest
      on the diagonal. Symmetric and doubly stochastic, so plain averaging preserves the mean.
    - ``uniform``: ``1 / (d_i + 1)`` over N_i and i itself. Row-stochastic only: NOT symmetric and
      columns do not sum to 1 when degrees differ.
    """
    n = topo.num_nodes
    deg = topo.degrees()
    w = np.zeros((n, n), dtype=np.float64)
    if scheme == "metropolis":
        for a, b in topo.edges:
            w[a, b] = w[b, a] = 1.0 / (1.0 + max(deg[a], deg[b]))
        w[np.arange(n), np.arange(n)] = 1.0 - w.sum(axis=1)
    elif scheme == "uniform":
        for i in range(n):
            share = 1.0 / (deg[i] + 1)
            w[i, i] = share
            for j in topo.neighbors(i):
                w[i, j] = share
    else:
        raise ValueError(f"unknown mixing scheme {scheme!r}; choose metropolis or uniform")
    return w
