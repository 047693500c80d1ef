"""`mcepl topology compose`: a docker-compose file for any topology (one service per node).

From a topology and a config this writes three files:

- ``docker-compose.yml``: a ``collector`` service (``mcepl collect``, writing the run directory
  into the mounted ``./results``) and one ``node-<i>`` service per topology node
  (``mcepl node --id <i> --collector tcp://collector:5600``), all on one user-defined network;
- ``<run-dir>/topology.json``: the same graph, retentions and labels, with container addresses:
  every node advertises ``tcp://node-<i>:5555`` (its service name, resolved by Docker's DNS) and
  binds ``tcp://0.0.0.0:5555`` inside its own container;
- ``<run-dir>/config.toml``: the config, made host-independent (``data.root`` dropped: the data
  set is mounted at ``/data`` and found through ``MCEPL_DATA``; a ``data.labels_file`` is embedded
  into the topology as per-node labels, which gives the same assignment).

``<run-dir>`` is mounted read-only at ``/run/mcepl`` in every container.

CURVE keys (``keys="init"``, the default) are made at ``docker compose up``, never written here:
a one-shot ``keys`` service (no network, runs first) runs ``mcepl topology keys`` on the topology,
writing node i's key pair into the named volume ``mcepl-key-<i>`` (secret file 0600, owned by the
image's user uid 1000) and the topology with every public key into ``mcepl-public``. The nodes and
the collector wait for it to complete, read that topology, and each node mounts only its own key
volume (read-only) and gets ``--key``. Every ``up`` makes fresh keys; ``docker compose down -v``
deletes them. ``keys="none"``: plaintext, as before. The output only depends
on the inputs and on the paths relative to the compose file, so regenerating from the written
``<run-dir>/topology.json`` and ``config.toml`` reproduces every file byte for byte.

YAML is written by a small emitter here (block mappings, lists of scalars on one line when short,
every string double-quoted with JSON escapes, which YAML reads the same way): no PyYAML needed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .generators import read_labels_file, save_topology
from .schema import Topology, TopologyError

CONTAINER_RUN_DIR = "/run/mcepl"
CONTAINER_DATA_DIR = "/data"
CONTAINER_RESULTS_DIR = "/results"
NODE_PORT = 5555
COLLECTOR_PORT = 5600
COLLECTOR_SERVICE = "collector"
NETWORK = "mcepl"
DEFAULT_IMAGE = "mcepl:latest"
KEYS_SERVICE = "keys"
KEY_MODES = ("init", "none")
PUBLIC_VOLUME = "mcepl-public"
CONTAINER_PUBLIC_DIR = "/run/mcepl-public"  # the topology with the public keys
CONTAINER_KEY_DIR = "/run/mcepl-key"  # node i's own key volume
#: uid:gid of the image's user `mcepl` (Dockerfile ARG UID=1000): owner of the secret key files.
IMAGE_USER = "1000:1000"
#: Where the Debian ``dataset-*`` packages (and ``scripts/install.sh``) put the data sets.
HOST_DATASETS_DIR = "/usr/share/datasets"


def node_service(i: int) -> str:
    """Service name (and DNS name on the compose network) of node ``i``."""
    return f"node-{i}"


def container_topology(topo: Topology, labels: list[list[int]] | None = None) -> Topology:
    """Same graph, retentions and labels; addresses ``tcp://node-<i>:5555``, bind ``0.0.0.0``.

    ``labels`` (one list per node) replaces the nodes' labels when given. Public keys are
    dropped (see the module docstring).
    """
    nodes = [
        dataclasses.replace(
            n, address=f"tcp://{node_service(n.id)}:{NODE_PORT}",
            bind=f"tcp://0.0.0.0:{NODE_PORT}",
            labels=[int(x) for x in labels[n.id]] if labels is not None else n.labels,
            public_key=None)  # keys are made per deployment, at `docker compose up`
        for n in topo.nodes
    ]
    meta = {**topo.meta, "transport": "tcp"}
    return Topology(nodes=nodes, edges=list(topo.edges), meta=meta).validate("<compose topology>")


def container_files(topo: Topology, cfg: Any) -> tuple[Topology, Any]:
    """The topology and config as the containers see them (see the module docstring)."""
    labels = None
    if cfg.data.labels_file and not all(n.labels is not None for n in topo.nodes):
        labels = read_labels_file(cfg.data.labels_file, num_nodes=topo.num_nodes)
    ctopo = container_topology(topo, labels)
    data = dataclasses.replace(cfg.data, root=None, labels_file=None)
    return ctopo, dataclasses.replace(cfg, data=data)


def default_data_source(cfg: Any) -> str:
    """Host directory mounted at /data unless ``$MCEPL_DATA`` says otherwise."""
    if cfg.data.root:
        return os.path.abspath(os.path.expanduser(cfg.data.root))
    return f"{HOST_DATASETS_DIR}/{cfg.data.dataset}"


def _rel(path: Path, base: Path) -> str:
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(base))
    rel = rel.replace(os.sep, "/")
    return rel if rel.startswith((".", "/")) else f"./{rel}"


def _esc(text: str) -> str:
    """Escape ``$`` for compose's variable interpolation."""
    return text.replace("$", "$$")


def key_volume(i: int) -> str:
    """Named volume holding node ``i``'s key pair (mounted into the keys service and node i)."""
    return f"mcepl-key-{i}"


def compose_dict(topo: Topology, *, run_dir: str = "./deploy", image: str = DEFAULT_IMAGE,
                 build: str | None = ".", data_source: str = f"{HOST_DATASETS_DIR}/fashion-mnist",
                 results: str = "./results", threads: int | str = 1, keys: str = "init"
                 ) -> dict[str, Any]:
    """The compose document for a container topology (as made by :func:`container_topology`).

    ``run_dir``, ``build`` and ``results`` are paths relative to the compose file; ``build`` is
    the directory holding the Dockerfile (None: no build section, the image must exist).
    ``keys``: "init" (CURVE keys made by a keys service at `up`) or "none" (plaintext).
    """
    if keys not in KEY_MODES:
        raise TopologyError(f"compose: keys must be one of {', '.join(KEY_MODES)}, got {keys!r}")
    secure = keys == "init"
    run_files = f"{_esc(run_dir)}:{CONTAINER_RUN_DIR}:ro"
    public_files = f"{PUBLIC_VOLUME}:{CONTAINER_PUBLIC_DIR}:ro"
    in_topo = f"{CONTAINER_RUN_DIR}/topology.json"
    topo_file = f"{CONTAINER_PUBLIC_DIR}/topology.json" if secure else in_topo
    cfg_file = f"{CONTAINER_RUN_DIR}/config.toml"
    services: dict[str, Any] = {}
    after_keys = {KEYS_SERVICE: {"condition": "service_completed_successfully"}}
    if secure:
        services[KEYS_SERVICE] = {
            "image": image,
            "command": ["topology", "keys", in_topo, "-o", "/keys", "--per-node-dirs",
                        "--owner", IMAGE_USER, "--topology-out", "/keys/public/topology.json"],
            "user": "0:0",  # writes into fresh (root-owned) volumes, chowns to the node user
            "network_mode": "none",
            "volumes": [run_files, f"{PUBLIC_VOLUME}:/keys/public",
                        *(f"{key_volume(n.id)}:/keys/node-{n.id}" for n in topo.nodes)],
        }
    collector: dict[str, Any] = {"image": image}
    if build is not None:
        collector["build"] = build
    collector.update({
        "command": ["collect", "--topology", topo_file, "--config", cfg_file,
                    "--bind", f"tcp://0.0.0.0:{COLLECTOR_PORT}", "--out", CONTAINER_RESULTS_DIR],
        # The run directory lands in ./results owned by the host user (mkdir it first).
        "user": "${MCEPL_UID:-1000}:${MCEPL_GID:-1000}",
        "init": True,
        "networks": [NETWORK],
        "volumes": [run_files, f"{_esc(results)}:{CONTAINER_RESULTS_DIR}"],
    })
    if secure:
        collector["depends_on"] = dict(after_keys)
        collector["volumes"].insert(1, public_files)
    services[COLLECTOR_SERVICE] = collector
    for n in topo.nodes:
        command = ["node", "--topology", topo_file, "--config", cfg_file, "--id", str(n.id),
                   "--collector", f"tcp://{COLLECTOR_SERVICE}:{COLLECTOR_PORT}"]
        volumes = [f"${{MCEPL_DATA:-{_esc(data_source)}}}:{CONTAINER_DATA_DIR}:ro", run_files]
        depends: Any = [COLLECTOR_SERVICE]
        if secure:
            command += ["--key", f"{CONTAINER_KEY_DIR}/node-{n.id}.key_secret"]
            volumes += [public_files, f"{key_volume(n.id)}:{CONTAINER_KEY_DIR}:ro"]
            depends = {COLLECTOR_SERVICE: {"condition": "service_started"}, **after_keys}
        services[node_service(n.id)] = {
            "image": image,
            "command": command,
            "depends_on": depends,
            "environment": {"MCEPL_DATA": CONTAINER_DATA_DIR,
                            # "auto" threads: each node's share of the host's cores
                            **({"OMP_NUM_THREADS": str(threads)} if isinstance(threads, int)
                               else {"MCEPL_LOCAL_NODES": str(topo.num_nodes)})},
            "init": True,
            "networks": [NETWORK],
            "volumes": volumes,
        }
    doc: dict[str, Any] = {"services": services, "networks": {NETWORK: {"driver": "bridge"}}}
    if secure:
        doc["volumes"] = {PUBLIC_VOLUME: {}, **{key_volume(n.id): {} for n in topo.nodes}}
    return doc


# ---- a minimal YAML emitter ---------------------------------------------------------------------
_FLOW_WIDTH = 160  # lists of scalars that fit on one line this wide are written [a, b, c]


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid YAML double-quoted scalar
    raise TypeError(f"cannot write {type(v).__name__} to YAML")


def _yaml_lines(d: dict[str, Any], indent: int) -> list[str]:
    pad = "  " * indent
    out: list[str] = []
    for key, val in d.items():
        if isinstance(val, dict):
            if val:
                out.append(f"{pad}{key}:")
                out.extend(_yaml_lines(val, indent + 1))
            else:
                out.append(f"{pad}{key}: {{}}")
        elif isinstance(val, list):
            flow = f"{pad}{key}: [{', '.join(_scalar(x) for x in val)}]"
            if len(flow) <= _FLOW_WIDTH or not val:
                out.append(flow)
            else:
                out.append(f"{pad}{key}:")
                out.extend(f"{pad}  - {_scalar(x)}" for x in val)
        else:
            out.append(f"{pad}{key}: {_scalar(val)}")
    return out


def to_yaml(doc: dict[str, Any]) -> str:
    """YAML text of a document made of dicts (str keys), lists of scalars, str, int and bool."""
    lines: list[str] = []
    for key, val in doc.items():
        if lines:
            lines.append("")
        lines.extend(_yaml_lines({key: val}, 0))
    return "\n".join(lines) + "\n"


def render_compose(topo: Topology, cfg: Any, *, run_dir: str = "./deploy",
                   image: str = DEFAULT_IMAGE, build: str | None = ".",
                   data_source: str | None = None, keys: str = "init") -> str:
    """The compose file's text, with a header saying how it was made and how to run it."""
    doc = compose_dict(topo, run_dir=run_dir, image=image, build=build,
                       data_source=data_source or default_data_source(cfg),
                       threads=cfg.run.threads_per_node, keys=keys)
    header = (
        f"# mcepl network: {topo.num_nodes} nodes (algorithm {cfg.algorithm.name}, "
        f"{topo.num_edges} edges) and a metrics collector.\n"
        "# Generated by `mcepl topology compose` together with "
        f"{run_dir}/topology.json and {run_dir}/config.toml;\n"
        "# regenerate rather than edit. Run (the run directory appears in ./results):\n"
        "#   mkdir -p results && MCEPL_UID=$(id -u) MCEPL_GID=$(id -g) docker compose up\n"
        "# MCEPL_DATA=/host/dir picks the data set directory mounted at /data.\n"
    )
    if keys == "init":
        header += (
            "# Traffic between nodes is encrypted and authenticated (ZeroMQ CURVE): the\n"
            "# one-shot 'keys' service makes a fresh key pair per node at every `up`, into one\n"
            "# named volume per node (mcepl-key-<i>, mounted read-only into node-<i> only), and\n"
            "# the topology with the public keys into mcepl-public. `docker compose down -v`\n"
            "# deletes them. No secret key is stored in any file of the repository.\n"
        )
    return header + to_yaml(doc)


@dataclass
class ComposeFiles:
    compose: Path
    topology: Path
    config: Path
    nodes: int


def write_compose(topo: Topology, cfg: Any, output: str | Path, *,
                  run_dir: str | Path | None = None, image: str = DEFAULT_IMAGE,
                  build: str | None = ".", keys: str = "init") -> ComposeFiles:
    """Write the compose file and its run files (topology.json, config.toml in ``run_dir``).

    ``run_dir`` defaults to ``deploy/`` next to the compose file; ``build`` is relative to the
    compose file.
    """
    from mcepl.config import dump_toml

    output = Path(output)
    base = output.parent if str(output.parent) else Path(".")
    rdir = Path(run_dir) if run_dir is not None else base / "deploy"
    ctopo, ccfg = container_files(topo, cfg)
    text = render_compose(ctopo, cfg, run_dir=_rel(rdir, base), image=image, build=build,
                          keys=keys)
    try:
        rdir.mkdir(parents=True, exist_ok=True)
        base.mkdir(parents=True, exist_ok=True)
        save_topology(ctopo, rdir / "topology.json")
        (rdir / "config.toml").write_text(dump_toml(ccfg))
        tmp = output.with_name(f".{output.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, output)
    except OSError as e:
        raise TopologyError(f"{output}: cannot write compose files: {e.strerror or e}") from None
    return ComposeFiles(output, rdir / "topology.json", rdir / "config.toml", ctopo.num_nodes)
