"""The topology file: who the nodes are, where they listen, and which of them talk.

Every process of a run (launcher, each node, the collector) reads the same file, so a mistake in it
must be caught once, on load, with a message that points at the exact node, edge or key at fault,
instead of surfacing later as a hung handshake. Hence the strict, one-error-per-line validation.

JSON layout (version 1)::

    {
      "version": 1,
      "nodes": [
        {"id": 0, "address": "tcp://127.0.0.1:5550", "retention": 0.4, "labels": [1, 2, 3, 4]},
        {"id": 1, "address": "tcp://10.0.0.2:5555", "retention": 0.2,
         "bind": "tcp://0.0.0.0:5555"}
      ],
      "edges": [[0, 1]],
      "meta": {"kind": "er", "p": 0.5, "seed": 0}
    }

Rules:

- ``version``, ``nodes`` and ``edges`` are required; ``meta`` (free-form object) is optional.
- Node ids must be exactly ``0..N-1`` (any order in the file; kept sorted by id in memory) so that a
  node id is also an index into per-node arrays (retention vector, mixing matrix, label lists).
- ``address`` is what the neighbours connect to: ``tcp://host:port`` (port 1..65535) or
  ``ipc://path``; addresses are unique. ``bind`` (optional) is what the node itself binds when it
  differs from the advertised address (containers, NAT), e.g. ``tcp://0.0.0.0:5555``.
- ``retention`` is in (0, 1]; ``labels`` (optional) is a non-empty list of distinct ints >= 0.
- Edges are undirected: ``[a, b]`` and ``[b, a]`` are the same edge, so listing both is a duplicate.
  They are stored normalised as ``(min, max)`` and sorted. No self loops; the graph is connected.
- ``labels``: on every node or on none (a partial assignment is an error, not silently
  ignored). Whether they lie within the data set's classes is checked by whoever knows the data
  set (``check_label_range``: ``mcepl topology check``, ``launch``, ``node``).
- ``public_key`` (optional) is the node's ZeroMQ CURVE public key, 40 characters of Z85 (as
  ``mcepl topology keys`` writes it). Either every node has one (the network runs encrypted and
  authenticated) or none has; keys are distinct.
- ``collector`` (optional) is ``{"public_key": KEY}``: the metrics collector's CURVE public key,
  which the nodes' metrics PUSH sockets authenticate the collector with. A topology with node
  keys needs it (metrics are authenticated too), one without node keys must not have it.
"""

from __future__ import annotations

import difflib
import operator
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:  # imported where used: every node process loads this module, and networkx
    import networkx as nx  # costs 12 MB of memory per process

FORMAT_VERSION = 1

_TOP_KEYS = ("version", "nodes", "edges", "meta", "collector")
_TOP_REQUIRED = ("version", "nodes", "edges")
_NODE_KEYS = ("id", "address", "retention", "labels", "bind", "public_key")
_NODE_REQUIRED = ("id", "address", "retention")

_TCP_RE = re.compile(r"^tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.*-]+):(?P<port>[0-9]+)$")
# A CURVE public key: 32 bytes as Z85 (ZeroMQ RFC 32), i.e. 40 characters of this alphabet.
Z85_ALPHABET = ("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                ".-:+=^!/*?&<>()[]{}@%$#")
_Z85_KEY_RE = re.compile("^[" + re.escape(Z85_ALPHABET) + "]{40}$")
# Unix domain socket paths are limited to 108 bytes including the NUL (sun_path on Linux).
_IPC_MAX_PATH = 107


class TopologyError(ValueError):
    """A topology that cannot be used. The message is one line naming the file and the culprit."""


@dataclass(frozen=True)
class NodeSpec:
    """One node: where its neighbours reach it, its retention ratio, its optional label set."""

    id: int
    address: str
    retention: float
    labels: list[int] | None = None
    bind: str | None = None
    public_key: str | None = None  # CURVE public key, Z85 (40 chars)

    @property
    def bind_address(self) -> str:
        """The address this node binds: ``bind`` when given, else its advertised address."""
        return self.bind if self.bind is not None else self.address

    def to_json_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "address": self.address, "retention": self.retention}
        if self.labels is not None:
            d["labels"] = list(self.labels)
        if self.bind is not None:
            d["bind"] = self.bind
        if self.public_key is not None:
            d["public_key"] = self.public_key
        return d


@dataclass(frozen=True)
class Topology:
    """Nodes plus undirected edges. Treat as immutable (use ``dataclasses.replace`` to derive).

    Construction only normalises (nodes sorted by id, edges as sorted ``(min, max)`` pairs); call
    :meth:`validate` to check it. :meth:`from_json_dict` and the generators always do.
    """

    nodes: list[NodeSpec]
    edges: list[tuple[int, int]]
    meta: dict[str, Any] = field(default_factory=dict)
    collector_key: str | None = None  # the collector's CURVE public key, Z85 (40 chars)
    _adj: dict[int, list[int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        nodes = sorted(self.nodes, key=lambda n: n.id)
        edges = sorted((min(a, b), max(a, b)) for a, b in self.edges)
        adj: dict[int, set[int]] = {n.id: set() for n in nodes}
        for a, b in edges:
            adj.setdefault(a, set()).add(b)
            adj.setdefault(b, set()).add(a)
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "meta", dict(self.meta))
        object.__setattr__(self, "_adj", {k: sorted(v) for k, v in adj.items()})

    # ---- queries -------------------------------------------------------------------------------
    @property
    def ids(self) -> list[int]:
        return [n.id for n in self.nodes]

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    @property
    def retentions(self) -> list[float]:
        """Retention ratio per node, indexed by node id."""
        return [n.retention for n in self.nodes]

    def node(self, i: int) -> NodeSpec:
        try:
            k = operator.index(i)  # accept numpy ints; floats and bools are not ids
        except TypeError:
            k = -1
        if isinstance(i, bool) or not 0 <= k < len(self.nodes) or self.nodes[k].id != k:
            raise KeyError(f"no node {i!r} in topology (ids 0..{len(self.nodes) - 1})")
        return self.nodes[k]

    def neighbors(self, i: int) -> list[int]:
        """Sorted neighbour ids of node ``i`` (without ``i`` itself)."""
        return list(self._adj.get(self.node(i).id, []))

    def degree(self, i: int) -> int:
        return len(self.neighbors(i))

    def degrees(self) -> list[int]:
        return [len(self._adj.get(n.id, [])) for n in self.nodes]

    @property
    def secure(self) -> bool:
        """True when the nodes carry CURVE public keys (all of them do, or none)."""
        return any(n.public_key is not None for n in self.nodes)

    def is_connected(self) -> bool:
        return len(self._components()) <= 1

    def to_networkx(self) -> nx.Graph:
        """Undirected graph with node attributes address/retention/labels/bind (None when unset)."""
        import networkx as nx

        g = nx.Graph()
        for n in self.nodes:
            g.add_node(n.id, address=n.address, retention=n.retention, labels=n.labels,
                       bind=n.bind)
        g.add_edges_from(self.edges)
        return g

    # ---- (de)serialisation ---------------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "version": FORMAT_VERSION,
            "nodes": [n.to_json_dict() for n in self.nodes],
            "edges": [[a, b] for a, b in self.edges],
            "meta": dict(self.meta),
        }
        if self.collector_key is not None:
            d["collector"] = {"public_key": self.collector_key}
        return d

    @classmethod
    def from_json_dict(cls, d: Any, source: str = "<topology>") -> Topology:
        """Parse and fully validate a decoded JSON document; errors name ``source``."""
        topo = _parse(d, source)
        topo.validate(source)
        return topo

    # ---- validation ----------------------------------------------------------------------------
    def validate(self, source: str = "<topology>") -> Topology:
        """Check every rule of the module docstring; raise :class:`TopologyError` on the first."""
        err = _Err(source)
        if len(self.nodes) < 1:
            err("a topology needs at least 1 node, got an empty 'nodes' list")
        _check_ids([n.id for n in self.nodes], err, positions=None)
        seen_addr: dict[str, int] = {}
        for n in self.nodes:
            where = f"node {n.id}"
            _check_address(n.address, err, where, "address")
            if n.address in seen_addr:
                err(f"{where}: address {n.address!r} already used by node {seen_addr[n.address]}")
            seen_addr[n.address] = n.id
            if n.bind is not None:
                _check_address(n.bind, err, where, "bind")
            _check_retention(n.retention, err, where)
            if n.labels is not None:
                _check_labels(n.labels, err, where)
        _check_labels_everywhere(self.nodes, err)
        _check_public_keys(self.nodes, self.collector_key, err)
        _check_edges([list(e) for e in self.edges], len(self.nodes), err, normalised=True)
        comps = self._components()
        if len(comps) > 1:
            err(_disconnected_message(comps))
        return self

    def _components(self) -> list[list[int]]:
        """Connected components (sorted, largest first) over the node ids."""
        seen: set[int] = set()
        comps: list[list[int]] = []
        for start in (n.id for n in self.nodes):
            if start in seen:
                continue
            stack, comp = [start], []
            seen.add(start)
            while stack:
                u = stack.pop()
                comp.append(u)
                for v in self._adj.get(u, []):
                    if v not in seen:
                        seen.add(v)
                        stack.append(v)
            comps.append(sorted(comp))
        comps.sort(key=lambda c: (-len(c), c[0]))
        return comps


# ---- helpers ---------------------------------------------------------------------------------
class _Err:
    """Raise a TopologyError prefixed with the source name, always as one line."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __call__(self, msg: str) -> NoReturn:
        raise TopologyError(f"{self.source}: {' '.join(msg.split())}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _tname(x: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
            int: "integer", float: "number"}.get(type(x), type(x).__name__)


def _check_keys(obj: dict, allowed: tuple[str, ...], required: tuple[str, ...], err: _Err,
                where: str) -> None:
    for k in obj:
        if k not in allowed:
            hint = difflib.get_close_matches(str(k), allowed, n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            err(f"{where}: unknown key {k!r}{did}; allowed keys: {', '.join(allowed)}")
    for k in required:
        if k not in obj:
            err(f"{where}: missing required key {k!r}")


def _check_address(addr: str, err: _Err, where: str, key: str) -> None:
    if addr.startswith("tcp://"):
        m = _TCP_RE.match(addr)
        if not m:
            err(f"{where}: {key} {addr!r} is not of the form tcp://host:port")
        port = int(m.group("port"))
        if not 1 <= port <= 65535:
            err(f"{where}: {key} {addr!r} has port {port}, outside 1..65535")
    elif addr.startswith("ipc://"):
        path = addr[len("ipc://"):]
        if not path or any(c.isspace() for c in path):
            err(f"{where}: {key} {addr!r} is not of the form ipc://path (non-empty, no spaces)")
        if len(path.encode()) > _IPC_MAX_PATH:
            err(f"{where}: {key} {addr!r}: ipc path longer than {_IPC_MAX_PATH} bytes "
                "(unix socket limit); use a shorter directory")
    else:
        err(f"{where}: {key} {addr!r} must be tcp://host:port or ipc://path")


def is_z85_key(text: Any) -> bool:
    """A 40-character Z85 string (the text form of a 32-byte CURVE key)."""
    return isinstance(text, str) and _Z85_KEY_RE.match(text) is not None


def _check_labels_everywhere(nodes: list[NodeSpec], err: _Err) -> None:
    with_labels = [n.id for n in nodes if n.labels is not None]
    if with_labels and len(with_labels) != len(nodes):
        missing = [n.id for n in nodes if n.labels is None]
        err(f"node {missing[0]}: no labels, but nodes {_fmt_ids(with_labels)} have them; give "
            "labels to every node or to none (then data.labels_file or labels_per_node applies)")


def check_label_range(topo: Topology, num_classes: int, source: str, dataset: str) -> None:
    """Every node's labels lie in 0..num_classes-1 (the data set's classes); TopologyError
    naming `source`, the node and the data set otherwise."""
    err = _Err(source)
    for n in topo.nodes:
        bad = [x for x in (n.labels or []) if x >= num_classes]
        if bad:
            err(f"node {n.id}: label {bad[0]} is outside the {num_classes} classes of {dataset} "
                f"(0..{num_classes - 1})")


def _check_public_keys(nodes: list[NodeSpec], collector_key: str | None, err: _Err) -> None:
    with_key = [n.id for n in nodes if n.public_key is not None]
    if with_key and len(with_key) != len(nodes):
        missing = [n.id for n in nodes if n.public_key is None]
        err(f"node {missing[0]}: missing public_key (nodes {_fmt_ids(with_key)} have one; "
            "every node needs a key, or none; `mcepl topology keys` makes them)")
    seen: dict[str, int] = {}
    for n in nodes:
        if n.public_key is None:
            continue
        if not is_z85_key(n.public_key):
            err(f"node {n.id}: public_key {n.public_key!r} is not a CURVE public key "
                "(40 characters of Z85)")
        if n.public_key in seen:
            err(f"node {n.id}: public_key already used by node {seen[n.public_key]}")
        seen[n.public_key] = n.id
    if collector_key is not None:
        if not is_z85_key(collector_key):
            err(f"collector: public_key {collector_key!r} is not a CURVE public key "
                "(40 characters of Z85)")
        if not with_key:
            err("collector: a public_key, but the nodes have none; give every node a key "
                "(`mcepl topology keys`) or remove the collector entry")
        if collector_key in seen:
            err(f"collector: public_key already used by node {seen[collector_key]}")
    elif with_key:
        err("the nodes have public keys but the collector has none (\"collector\": "
            "{\"public_key\": ...}): metrics are authenticated too; `mcepl topology keys` "
            "writes both")


def _check_retention(r: float, err: _Err, where: str) -> None:
    if not 0.0 < r <= 1.0:  # also rejects NaN
        err(f"{where}: retention {r!r} is not in (0, 1]")


def _check_labels(labels: Any, err: _Err, where: str) -> None:
    if not isinstance(labels, list):
        err(f"{where}: labels must be an array of ints, got {_tname(labels)}")
    if not labels:
        err(f"{where}: labels is empty (omit the key when a node has no fixed label set)")
    for x in labels:
        if not _is_int(x) or x < 0:
            err(f"{where}: labels must be non-negative ints, got {x!r}")
    dup = [x for x, c in Counter(labels).items() if c > 1]
    if dup:
        err(f"{where}: labels must be distinct, {dup[0]} appears more than once")


def _check_ids(ids: list[int], err: _Err, positions: list[int] | None) -> None:
    """Ids must be exactly 0..N-1 so they double as indices into per-node arrays."""
    first: dict[int, int] = {}
    for k, i in enumerate(ids):
        if i in first:
            if positions is None:
                err(f"duplicate node id {i}")
            err(f"node {i} (nodes[{positions[k]}]): duplicate node id, "
                f"also used by nodes[{positions[first[i]]}]")
        first[i] = k
    n = len(ids)
    missing = sorted(set(range(n)) - set(ids))
    extra = sorted(set(ids) - set(range(n)))
    if missing or extra:
        err(f"node ids must be exactly 0..{n - 1} (N={n}): missing {_fmt_ids(missing)}, "
            f"unexpected {_fmt_ids(extra)}")


def _check_edges(edges: list[list[int]], n: int, err: _Err, normalised: bool) -> None:
    seen: dict[tuple[int, int], int] = {}
    for k, (a, b) in enumerate(edges):
        where = f"edge [{a}, {b}]" if normalised else f"edges[{k}] [{a}, {b}]"
        if a == b:
            err(f"{where}: self loop on node {a}")
        for x in (a, b):
            if not 0 <= x < n:
                err(f"{where}: unknown node {x} (ids are 0..{n - 1})")
        key = (min(a, b), max(a, b))
        if key in seen:
            if normalised:
                err(f"{where}: duplicate edge (edges are undirected)")
            j = seen[key]
            err(f"{where}: duplicate of edges[{j}] {edges[j]} (edges are undirected)")
        seen[key] = k


def _fmt_ids(ids: list[int], limit: int = 10) -> str:
    if not ids:
        return "none"
    s = ", ".join(str(i) for i in ids[:limit])
    return "{" + s + (f", ... ({len(ids)} in all)" if len(ids) > limit else "") + "}"


def _disconnected_message(comps: list[list[int]]) -> str:
    shown = " ".join(_fmt_ids(c) for c in comps[:5])
    more = f" and {len(comps) - 5} more" if len(comps) > 5 else ""
    return (f"graph is not connected: {len(comps)} components {shown}{more}; "
            f"node {comps[1][0]} cannot reach node {comps[0][0]}")


def _parse(d: Any, source: str) -> Topology:
    """Type and key checks on the raw document, with positions; returns an unvalidated Topology."""
    err = _Err(source)
    if not isinstance(d, dict):
        err(f"top level must be a JSON object, got {_tname(d)}")
    _check_keys(d, _TOP_KEYS, _TOP_REQUIRED, err, "top level")
    version = d["version"]
    if not _is_int(version) or version != FORMAT_VERSION:
        err(f"key 'version': unsupported version {version!r} (this mcepl reads {FORMAT_VERSION})")
    raw_nodes, raw_edges, meta = d["nodes"], d["edges"], d.get("meta", {})
    if not isinstance(raw_nodes, list):
        err(f"key 'nodes' must be an array, got {_tname(raw_nodes)}")
    if not raw_nodes:
        err("a topology needs at least 1 node, got an empty 'nodes' list")
    if not isinstance(raw_edges, list):
        err(f"key 'edges' must be an array, got {_tname(raw_edges)}")
    if not isinstance(meta, dict):
        err(f"key 'meta' must be an object, got {_tname(meta)}")
    collector_key = None
    if "collector" in d:
        col = d["collector"]
        if not isinstance(col, dict):
            err(f"key 'collector' must be an object, got {_tname(col)}")
        _check_keys(col, ("public_key",), ("public_key",), err, "collector")
        collector_key = col["public_key"]
        if not is_z85_key(collector_key):
            got = repr(collector_key) if isinstance(collector_key, str) else _tname(collector_key)
            err(f"collector: key 'public_key' must be a CURVE public key (40 characters of Z85), "
                f"got {got}")

    nodes: list[NodeSpec] = []
    for k, rn in enumerate(raw_nodes):
        nodes.append(_parse_node(rn, k, err))
    _check_ids([n.id for n in nodes], err, positions=list(range(len(nodes))))

    edges: list[list[int]] = []
    for k, e in enumerate(raw_edges):
        if not (isinstance(e, list) and len(e) == 2 and all(_is_int(x) for x in e)):
            err(f"edges[{k}]: expected a pair of node ids [a, b], got {e!r}")
        edges.append(e)
    _check_edges(edges, len(nodes), err, normalised=False)
    return Topology(nodes=nodes, edges=[(a, b) for a, b in edges], meta=meta,
                    collector_key=collector_key)


def _parse_node(rn: Any, k: int, err: _Err) -> NodeSpec:
    where = f"nodes[{k}]"
    if not isinstance(rn, dict):
        err(f"{where}: expected an object, got {_tname(rn)}")
    if _is_int(rn.get("id")):
        where = f"node {rn['id']} (nodes[{k}])"
    _check_keys(rn, _NODE_KEYS, _NODE_REQUIRED, err, where)
    nid, addr, ret = rn["id"], rn["address"], rn["retention"]
    labels, bind, key = rn.get("labels"), rn.get("bind"), rn.get("public_key")
    if not _is_int(nid):
        err(f"{where}: key 'id' must be an integer, got {_tname(nid)} {nid!r}")
    if not isinstance(addr, str):
        err(f"{where}: key 'address' must be a string, got {_tname(addr)}")
    if isinstance(ret, bool) or not isinstance(ret, (int, float)):
        err(f"{where}: key 'retention' must be a number, got {_tname(ret)} {ret!r}")
    if isinstance(ret, int) and ret.bit_length() > 1000:  # no float holds it (found by fuzzing)
        err(f"{where}: retention of {ret.bit_length()} bits is not in (0, 1]")
    if labels is not None and not isinstance(labels, list):
        err(f"{where}: key 'labels' must be an array of ints, got {_tname(labels)}")
    if bind is not None and not isinstance(bind, str):
        err(f"{where}: key 'bind' must be a string, got {_tname(bind)}")
    if key is not None and not is_z85_key(key):
        got = repr(key) if isinstance(key, str) else _tname(key)
        err(f"{where}: key 'public_key' must be a CURVE public key (40 characters of Z85), "
            f"got {got}")
    return NodeSpec(id=nid, address=addr, retention=float(ret),
                    labels=list(labels) if labels is not None else None, bind=bind,
                    public_key=key)
