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
image's user uid 1000), the collector's into ``mcepl-key-collector`` (owned by the uid the
collector runs as, ``$MCEPL_UID``) and the topology with every public key into ``mcepl-public``.
The nodes and the collector wait for it to complete, read that topology, and each mounts only
its own key volume (read-only) and gets ``--key``. Every ``up`` makes fresh keys; ``docker compose
down -v`` deletes them. ``keys="none"``: plaintext (every command gets ``--insecure``).

The output only depends on the inputs and on the paths relative to the compose file, so
regenerating from the written ``<run-dir>/topology.json`` and ``config.toml`` reproduces every
file byte for byte.

The data set is mounted from the host directory ``$MCEPL_DATA`` (default: the config's
``data.root``, else ``/usr/share/datasets/<dataset>``); the container config has
``data.download = false`` and the nodes get ``MCEPL_DATA_HINT`` naming that mount, so a missing
data set ends every node at once with one line saying what to set. A node waits at most
``run.connect_timeout_s`` for the collector to accept connections, so a collector that refused to
start (``./results`` already holds a run) ends every node too instead of letting them train for
nobody.

The user's own model or data set (``model.name`` / ``data.dataset`` = ``package.module:attr``):
``code`` (``--code DIR``) bind-mounts that host directory read-only at ``/code`` in every node
container (not the collector's), and the container config's ``run.python_path`` is
``["/code"]``: the image is not rebuilt for the user's code. The directory is checked for the
named top-level modules on disk; nothing is imported. Without ``code`` the image must already
hold the modules.

The containers' commands, environment and mounts come from :mod:`.deploy` (shared with the
Kubernetes manifests); YAML is written by :mod:`.yamltext` (no PyYAML needed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .deploy import (
    CODE,
    COLLECTOR_PORT,
    CONTAINER_CODE_DIR,
    CONTAINER_PUBLIC_DIR,
    CONTAINER_RUN_DIR,
    DATA,
    DEFAULT_IMAGE,
    FILES,
    HOST_DATASETS_DIR,
    IMAGE_GID,
    IMAGE_UID,
    KEY,
    PUBLIC,
    RESULTS,
    Container,
    Layout,
    check_code_dir,
    collector_container,
    container_files,
    container_topology,
    default_data_source,
    node_container,
    user_code_names,
)
from .generators import save_topology
from .schema import Topology, TopologyError
from .yamltext import to_yaml

__all__ = ["COLLECTOR_SERVICE", "ComposeFiles", "KEY_MODES", "check_code_dir", "compose_dict",
           "container_files", "container_topology", "default_data_source", "key_volume",
           "node_service", "render_compose", "to_yaml", "user_code_names", "write_compose"]

COLLECTOR_SERVICE = "collector"
NETWORK = "mcepl"
KEYS_SERVICE = "keys"
KEY_MODES = ("init", "none")
PUBLIC_VOLUME = "mcepl-public"
IMAGE_USER = f"{IMAGE_UID}:{IMAGE_GID}"
#: uid:gid the collector runs as (it writes ./results for the host user): owner of its key.
COLLECTOR_USER = "${MCEPL_UID:-1000}:${MCEPL_GID:-1000}"
COLLECTOR_KEY_VOLUME = "mcepl-key-collector"


def node_service(i: int) -> str:
    """Service name (and DNS name on the compose network) of node ``i``."""
    return f"node-{i}"


def _esc(text: str) -> str:
    """Escape ``$`` for compose's variable interpolation."""
    return text.replace("$", "$$")


def _rel(path: Path, base: Path) -> str:
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(base))
    rel = rel.replace(os.sep, "/")
    return rel if rel.startswith((".", "/")) else f"./{rel}"


def _mount_path(path: Path, base: Path) -> str:
    """`path` relative to the compose file when it lies below it (the bundle can move), else
    absolute."""
    rel = _rel(path, base)
    return os.path.abspath(path) if rel.startswith("..") else rel


def key_volume(i: int) -> str:
    """Named volume holding node ``i``'s key pair (mounted into the keys service and node i)."""
    return f"mcepl-key-{i}"


def data_hint(data_source: str) -> str:
    """``MCEPL_DATA_HINT`` of the nodes: the host directory behind /data (interpolated by
    compose at `up`) and what to set when the data set is not there."""
    return (f"the mount of the host directory ${{MCEPL_DATA:-{_esc(data_source)}}}: set "
            f"MCEPL_DATA to the host directory that holds the data set files and run "
            f"`docker compose up` again")


def _volumes(c: Container, *, run_dir: str, results: str, data_source: str,
             code: str | None = None) -> list[str]:
    """A container's mounts as compose short-syntax volumes."""
    source = {FILES: _esc(run_dir), PUBLIC: PUBLIC_VOLUME, RESULTS: _esc(results),
              DATA: f"${{MCEPL_DATA:-{_esc(data_source)}}}"}
    if code is not None:
        source[CODE] = _esc(code)
    out = []
    for m in c.mounts:
        if m.role == KEY:  # each container its own key: node i's, or the collector's
            src = key_volume(c.node) if c.node is not None else COLLECTOR_KEY_VOLUME
        else:
            src = source[m.role]
        out.append(f"{src}:{m.target}" + (":ro" if m.read_only else ""))
    return out


def compose_dict(topo: Topology, *, run_dir: str = "./deploy", image: str = DEFAULT_IMAGE,
                 build: str | None = ".", data_source: str = f"{HOST_DATASETS_DIR}/fashion-mnist",
                 results: str = "./results", threads: int | str = 1, keys: str = "init",
                 code: str | None = None) -> dict[str, Any]:
    """The compose document for a container topology (as made by :func:`container_topology`).

    ``run_dir``, ``build``, ``results`` and ``code`` are paths relative to the compose file (or
    absolute); ``build`` is the directory holding the Dockerfile (None: no build section, the
    image must exist). ``keys``: "init" (CURVE keys made by a keys service at `up`) or "none"
    (plaintext). ``code``: the user's module directory, mounted read-only at /code in the nodes.
    """
    if keys not in KEY_MODES:
        raise TopologyError(f"compose: keys must be one of {', '.join(KEY_MODES)}, got {keys!r}")
    secure = keys == "init"
    in_topo = f"{CONTAINER_RUN_DIR}/topology.json"
    layout = Layout(collector=f"tcp://{COLLECTOR_SERVICE}:{COLLECTOR_PORT}", secure=secure,
                    topology=f"{CONTAINER_PUBLIC_DIR}/topology.json" if secure else in_topo,
                    threads=threads, local_nodes=topo.num_nodes,
                    data_hint=data_hint(data_source), code=code is not None)

    def volumes(c: Container) -> list[str]:
        return _volumes(c, run_dir=run_dir, results=results, data_source=data_source, code=code)

    services: dict[str, Any] = {}
    after_keys = {KEYS_SERVICE: {"condition": "service_completed_successfully"}}
    if secure:
        services[KEYS_SERVICE] = {
            "image": image,
            "command": ["topology", "keys", in_topo, "-o", "/keys", "--per-node-dirs",
                        "--owner", IMAGE_USER, "--collector-owner", COLLECTOR_USER,
                        "--topology-out", "/keys/public/topology.json"],
            "user": "0:0",  # writes into fresh (root-owned) volumes, chowns to the node user
            "network_mode": "none",
            "volumes": [f"{_esc(run_dir)}:{CONTAINER_RUN_DIR}:ro", f"{PUBLIC_VOLUME}:/keys/public",
                        f"{COLLECTOR_KEY_VOLUME}:/keys/collector",
                        *(f"{key_volume(n.id)}:/keys/node-{n.id}" for n in topo.nodes)],
        }
    col = collector_container(layout)
    collector: dict[str, Any] = {"image": image}
    if build is not None:
        collector["build"] = build
    collector.update({
        "command": col.args,
        # The run directory lands in ./results owned by the host user (mkdir it first).
        "user": COLLECTOR_USER,
        "init": True,
        "networks": [NETWORK],
        "volumes": volumes(col),
    })
    if secure:
        collector["depends_on"] = dict(after_keys)
    services[COLLECTOR_SERVICE] = collector
    for n in topo.nodes:
        c = node_container(layout, n.id)
        depends: Any = [COLLECTOR_SERVICE]
        if secure:
            depends = {COLLECTOR_SERVICE: {"condition": "service_started"}, **after_keys}
        services[node_service(n.id)] = {
            "image": image,
            "command": c.args,
            "depends_on": depends,
            "environment": dict(c.env),
            "init": True,
            "networks": [NETWORK],
            "volumes": volumes(c),
        }
    doc: dict[str, Any] = {"services": services, "networks": {NETWORK: {"driver": "bridge"}}}
    if secure:
        doc["volumes"] = {PUBLIC_VOLUME: {}, COLLECTOR_KEY_VOLUME: {},
                          **{key_volume(n.id): {} for n in topo.nodes}}
    return doc


def render_compose(topo: Topology, cfg: Any, *, run_dir: str = "./deploy",
                   image: str = DEFAULT_IMAGE, build: str | None = ".",
                   data_source: str | None = None, keys: str = "init",
                   code: str | None = None) -> str:
    """The compose file's text, with a header saying how it was made and how to run it."""
    doc = compose_dict(topo, run_dir=run_dir, image=image, build=build,
                       data_source=data_source or default_data_source(cfg),
                       threads=cfg.run.threads_per_node, keys=keys, code=code)
    header = (
        f"# mcepl network: {topo.num_nodes} nodes (algorithm {cfg.algorithm.name}, "
        f"{topo.num_edges} edges) and a metrics collector.\n"
        "# Generated by `mcepl topology compose` together with "
        f"{run_dir}/topology.json and {run_dir}/config.toml;\n"
        "# regenerate rather than edit. Run (the run directory appears in ./results):\n"
        "#   mkdir -p results && MCEPL_UID=$(id -u) MCEPL_GID=$(id -g) docker compose up\n"
        "# MCEPL_DATA=/host/dir picks the data set directory mounted at /data.\n"
    )
    if code is not None:
        header += (f"# The user's modules ({code}) are mounted read-only at "
                   f"{CONTAINER_CODE_DIR} in every node\n# (run.python_path); edit them there, "
                   "no image rebuild needed.\n")
    if keys == "init":
        header += (
            "# Traffic between nodes is encrypted and authenticated (ZeroMQ CURVE): the\n"
            "# one-shot 'keys' service makes a fresh key pair per node at every `up`, into one\n"
            "# named volume per node (mcepl-key-<i>, mounted read-only into node-<i> only), the\n"
            "# collector's into mcepl-key-collector (metrics are authenticated too), and the\n"
            "# topology with the public keys into mcepl-public. `docker compose down -v`\n"
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
                  build: str | None = ".", keys: str = "init",
                  code: str | Path | None = None) -> ComposeFiles:
    """Write the compose file and its run files (topology.json, config.toml in ``run_dir``).

    ``run_dir`` defaults to ``deploy/`` next to the compose file; ``build`` is relative to the
    compose file. ``code``: the directory of the user's modules (checked, mounted at /code).
    """
    from mcepl.config import dump_toml

    output = Path(output)
    base = output.parent if str(output.parent) else Path(".")
    rdir = Path(run_dir) if run_dir is not None else base / "deploy"
    code_src = _mount_path(check_code_dir(code, cfg), base) if code is not None else None
    ctopo, ccfg = container_files(topo, cfg, code=code is not None)
    text = render_compose(ctopo, cfg, run_dir=_rel(rdir, base), image=image, build=build,
                          keys=keys, code=code_src)
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
