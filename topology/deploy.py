"""The containers of a deployed network, whatever runs them (docker compose or Kubernetes).

`compose.py` and `kube.py` render the same description: for each node and for the collector, the
`mcepl` command line, the environment and the mounts (which volume, where, read-only or not).
This module is the one place that builds them, so a new option of the node command or a new
mount is added here once and reaches both orchestrators.

Inside every container the paths are the same:

- ``/run/mcepl``: ``topology.json`` and ``config.toml`` (read-only);
- ``/run/mcepl-public``: the topology with the nodes' public CURVE keys when the keys are made
  at start-up (compose's ``keys`` service);
- ``/run/mcepl-key``: the container's own secret key (read-only; node i's, or the collector's:
  metrics are authenticated too);
- ``/data``: the data set (read-only), found through ``MCEPL_DATA=/data``; ``MCEPL_DATA_HINT``
  says where it comes from, so a node that does not find it names the mount and what to set;
- ``/results``: the collector's output;
- ``/code``: the user's own modules (``--code``; read-only, nodes only), on the container
  config's ``run.python_path``, when the config names a model or data set by import path.
"""

from __future__ import annotations

import dataclasses
import importlib.machinery
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcepl.config import LOCAL_NODES_ENV
from mcepl.userload import is_import_path, parse

from .generators import read_labels_file
from .schema import Topology, TopologyError

CONTAINER_RUN_DIR = "/run/mcepl"
CONTAINER_DATA_DIR = "/data"
CONTAINER_RESULTS_DIR = "/results"
CONTAINER_PUBLIC_DIR = "/run/mcepl-public"  # the topology with the public keys
CONTAINER_KEY_DIR = "/run/mcepl-key"  # node i's (or the collector's) own key
CONTAINER_CODE_DIR = "/code"  # the user's modules (--code), on run.python_path
NODE_PORT = 5555
COLLECTOR_PORT = 5600
DEFAULT_IMAGE = "mcepl:latest"
#: uid:gid of the image's user `mcepl` (Dockerfile ARG UID=1000): owner of the secret key files.
IMAGE_UID = 1000
IMAGE_GID = 1000
#: Where the Debian ``dataset-*`` packages (and ``scripts/install.sh``) put the data sets.
HOST_DATASETS_DIR = "/usr/share/datasets"
#: Environment variable telling a node where its /data mount comes from (see node/main.py).
DATA_HINT_ENV = "MCEPL_DATA_HINT"

# Volume roles a mount refers to; each orchestrator maps them to its own kind of volume.
FILES = "files"  # topology.json + config.toml
PUBLIC = "public"  # topology with the public keys (made at start-up)
KEY = "key"  # the container's own secret key (a node's, or the collector's)
DATA = "data"  # the data set
RESULTS = "results"  # the collector's output
CODE = "code"  # the user's modules


@dataclass(frozen=True)
class Mount:
    role: str  # FILES, PUBLIC, KEY, DATA, RESULTS or CODE
    target: str  # path inside the container
    read_only: bool = True


@dataclass(frozen=True)
class Container:
    """One container: the `mcepl` arguments (after the image's entrypoint), environment, mounts."""

    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    node: int | None = None  # the node id, None for the collector


@dataclass(frozen=True)
class Layout:
    """What the containers of one deployment share.

    ``topology`` is the file nodes and collector read (with public keys when ``secure``);
    ``collector`` the address nodes push metrics to; ``data_hint`` the value of
    ``MCEPL_DATA_HINT`` (where /data comes from and what to set when the data set is not there);
    ``code`` whether the user's modules are mounted at /code in the nodes.
    """

    collector: str
    secure: bool = True
    topology: str = f"{CONTAINER_RUN_DIR}/topology.json"
    config: str = f"{CONTAINER_RUN_DIR}/config.toml"
    threads: int | str = 1  # an int, or "auto": each node's share of the host's cores
    local_nodes: int = 1  # node containers sharing one host ("auto" threads divide by it)
    data_hint: str = ""
    results: str = CONTAINER_RESULTS_DIR
    code: bool = False


def node_container(layout: Layout, node_id: int) -> Container:
    """Node ``node_id``: ``mcepl node`` with the data set, the run files and (secure) its key."""
    args = ["node", "--topology", layout.topology, "--config", layout.config, "--id", str(node_id),
            "--collector", layout.collector]
    mounts = [Mount(DATA, CONTAINER_DATA_DIR), Mount(FILES, CONTAINER_RUN_DIR)]
    if layout.topology.startswith(CONTAINER_PUBLIC_DIR + "/"):
        mounts.append(Mount(PUBLIC, CONTAINER_PUBLIC_DIR))
    if layout.secure:
        args += ["--key", f"{CONTAINER_KEY_DIR}/node-{node_id}.key_secret"]
        mounts.append(Mount(KEY, CONTAINER_KEY_DIR))
    else:
        args.append("--insecure")  # plaintext is an explicit choice (mcepl node refuses else)
    if layout.code:
        mounts.append(Mount(CODE, CONTAINER_CODE_DIR))
    env = {"MCEPL_DATA": CONTAINER_DATA_DIR,
           **({"OMP_NUM_THREADS": str(layout.threads)} if isinstance(layout.threads, int)
              else {LOCAL_NODES_ENV: str(layout.local_nodes)})}
    if layout.data_hint:
        env[DATA_HINT_ENV] = layout.data_hint
    return Container(args=args, env=env, mounts=mounts, node=node_id)


def collector_container(layout: Layout) -> Container:
    """The collector: ``mcepl collect`` writing the run directory into ``layout.results``;
    secure, with its own key (only the nodes' keys may send it metrics)."""
    args = ["collect", "--topology", layout.topology, "--config", layout.config,
            "--bind", f"tcp://0.0.0.0:{COLLECTOR_PORT}", "--out", layout.results]
    mounts = [Mount(FILES, CONTAINER_RUN_DIR)]
    if layout.topology.startswith(CONTAINER_PUBLIC_DIR + "/"):
        mounts.append(Mount(PUBLIC, CONTAINER_PUBLIC_DIR))
    mounts.append(Mount(RESULTS, CONTAINER_RESULTS_DIR, read_only=False))
    if layout.secure:
        args += ["--key", f"{CONTAINER_KEY_DIR}/collector.key_secret"]
        mounts.append(Mount(KEY, CONTAINER_KEY_DIR))
    else:
        args.append("--insecure")
    return Container(args=args, mounts=mounts)


def container_topology(topo: Topology, host: Any = None,
                       labels: list[list[int]] | None = None) -> Topology:
    """Same graph, retentions and labels; node i advertises ``tcp://<host(i)>:5555`` and binds
    ``tcp://0.0.0.0:5555`` inside its container.

    ``host(i)`` is the name other containers resolve (default ``node-<i>``); ``labels`` (one
    list per node) replaces the nodes' labels when given. Public keys are dropped: they belong
    to one deployment (see compose.py and kube.py).
    """
    host = host or (lambda i: f"node-{i}")
    nodes = [
        dataclasses.replace(
            n, address=f"tcp://{host(n.id)}:{NODE_PORT}", bind=f"tcp://0.0.0.0:{NODE_PORT}",
            labels=[int(x) for x in labels[n.id]] if labels is not None else n.labels,
            public_key=None)
        for n in topo.nodes
    ]
    meta = {**topo.meta, "transport": "tcp"}
    return Topology(nodes=nodes, edges=list(topo.edges), meta=meta).validate("<container topology>")


def container_files(topo: Topology, cfg: Any, host: Any = None,
                    code: bool = False) -> tuple[Topology, Any]:
    """The topology and config as the containers see them.

    The config is made host-independent: ``data.root`` is dropped (the data set is mounted at
    /data) and ``data.download`` turned off (a container must find the mounted data set, not
    fetch one copy per node from the internet: a missing mount is then one clear line), and a
    ``data.labels_file`` is embedded into the topology as per-node labels (the same assignment).
    ``run.python_path`` is ``["/code"]`` when the user's modules are mounted there (`code`),
    else empty (host directories mean nothing in a container; the image must hold the modules).
    """
    labels = None
    if cfg.data.labels_file and not all(n.labels is not None for n in topo.nodes):
        labels = read_labels_file(cfg.data.labels_file, num_nodes=topo.num_nodes)
    ctopo = container_topology(topo, host, labels)
    data = dataclasses.replace(cfg.data, root=None, labels_file=None, download=False)
    run = dataclasses.replace(cfg.run, python_path=[CONTAINER_CODE_DIR] if code else [])
    return ctopo, dataclasses.replace(cfg, data=data, run=run)


def default_data_source(cfg: Any) -> str:
    """Host directory mounted at /data by default: ``data.root``, else the Debian location
    (for a user data set ``package.module:loader``: ``/usr/share/datasets/<package>``)."""
    if cfg.data.root:
        return os.path.abspath(os.path.expanduser(cfg.data.root))
    if is_import_path(cfg.data.dataset):
        return f"{HOST_DATASETS_DIR}/{parse(cfg.data.dataset)[0].split('.')[0]}"
    return f"{HOST_DATASETS_DIR}/{cfg.data.dataset}"


def user_code_names(cfg: Any) -> list[tuple[str, str]]:
    """``(key, name)`` for each config name that is the user's own code (an import path)."""
    names = [("model.name", cfg.model.name), ("data.dataset", cfg.data.dataset)]
    return [(key, name) for key, name in names if is_import_path(name)]


def check_code_dir(code: str | os.PathLike[str], cfg: Any) -> Path:
    """`code` as a directory holding the top-level module of every user-code name of `cfg`
    (looked up on the file system with importlib's path finder, which runs nothing: generating
    deployment files never imports user code); TopologyError naming what is missing."""
    d = Path(code).expanduser()
    if not d.is_dir():
        raise TopologyError(f"--code {code}: not a directory")
    for key, name in user_code_names(cfg):
        top = parse(name)[0].split(".")[0]
        if importlib.machinery.PathFinder.find_spec(top, [str(d)]) is None:
            raise TopologyError(f"--code {code}: {key} {name!r} needs module {top!r}, but "
                                f"{d} has no {top}.py or {top}/ (the directory is mounted at "
                                f"{CONTAINER_CODE_DIR} and searched first)")
    return d
