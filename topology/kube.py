"""`mcepl topology kube`: Kubernetes manifests for any topology (one Job per node).

Written into one directory:

- ``mcepl.yaml``: a ConfigMap with the containers' ``topology.json`` and ``config.toml`` (the
  same container files as compose's, see :mod:`.deploy`); a headless Service ``<name>`` whose
  pods get stable DNS names ``node-<i>.<name>`` (each node Pod sets ``hostname: node-<i>`` and
  ``subdomain: <name>``; ``publishNotReadyAddresses`` so a name resolves from the pod's start):
  the topology advertises ``tcp://node-<i>.<name>:5555``; a Service ``<name>-collector`` on
  port 5600; one Job per node (``<name>-node-<i>``, one Pod, never restarted: a failed node ends
  the run as it does everywhere else) and a Job for the collector; a PersistentVolumeClaim for
  the results when they go to a claim this command creates;
- ``keys.yaml`` (mode 0600; only with CURVE, the default): one Secret per node,
  ``<name>-key-<i>``, holding that node's secret key file, mounted read-only into that node's
  Pod only, and ``<name>-key-collector`` with the collector's (metrics are authenticated
  too). The keys are made when the manifests are written (the topology in the ConfigMap
  carries the public keys); regenerate to get new ones. Do not commit this file.

The data set is a read-only volume (``--data hostpath:DIR``, the default being the config's
``data.root`` or ``/usr/share/datasets/<dataset>`` on every Kubernetes node, or
``--data pvc:CLAIM``); the results go to ``/results/<name>`` in ``--results pvc:CLAIM`` (default
``pvc:<name>-results``, created here) or ``hostpath:DIR``. Memory requests come from the peak
resident set of one node process measured by ``benchmarks/node_memory.py`` (see
:data:`NODE_PEAK_RSS_MIB`); CPU requests are ``run.threads_per_node`` cores.

The user's own model or data set (``model.name`` / ``data.dataset`` = ``package.module:attr``)
comes from ``--code``: a local directory ``DIR`` is packed into a ConfigMap ``<name>-code`` (its
files, subdirectories kept; caches and hidden files left out; at most :data:`CODE_LIMIT` bytes),
or ``hostpath:DIR`` / ``pvc:CLAIM`` name a volume that holds it; either way it is mounted
read-only at ``/code`` in every node Pod (not the collector's), on the containers'
``run.python_path``, and the image is not rebuilt. A local directory is checked for the named
modules on disk; nothing is imported.

No cluster is needed to write them; tests validate them offline against the Kubernetes schemas
(kubernetes-validate). They have not been run on a cluster.
"""

from __future__ import annotations

import base64
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .deploy import (
    CODE,
    COLLECTOR_PORT,
    CONTAINER_RESULTS_DIR,
    DATA,
    DEFAULT_IMAGE,
    FILES,
    IMAGE_GID,
    IMAGE_UID,
    KEY,
    NODE_PORT,
    RESULTS,
    Container,
    Layout,
    check_code_dir,
    collector_container,
    container_files,
    default_data_source,
    node_container,
)
from .generators import dumps_topology
from .keys import COLLECTOR, KeyPair, new_keypair, secret_key_text, with_public_keys
from .schema import Topology, TopologyError
from .yamltext import to_yaml_stream

#: Peak resident set (VmHWM) of one node process in MiB, by model, measured by
#: benchmarks/node_memory.py on Fashion-MNIST (evaluation included), max over the nodes:
#: small-cnn 20 nodes x 20 rounds 414.6 MiB (median 403.6); alexnet 3 nodes x 2 rounds
#: 1274.6 MiB (median 1264.1). Another model gets the largest figure.
NODE_PEAK_RSS_MIB = {"small-cnn": 415, "alexnet": 1275}
#: Requests are the measured peak plus this margin, rounded up to 64 MiB; limits twice that.
MEMORY_MARGIN = 1.25
#: The collector (plots, report) measured far below this; a fixed request.
COLLECTOR_MEMORY_MIB = 256
VOLUME_KINDS = ("hostpath", "pvc")
KEY_MODES = ("generate", "none")
CODE_LIMIT = 900 * 1024
"""Bytes of files a ``--code DIR`` ConfigMap may carry (Kubernetes caps an object at 1 MiB,
and binary files grow by a third in base64)."""
_CODE_SKIP_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache",
                   ".ruff_cache", ".venv", "venv", "node_modules"}
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_MAX_NAME = 40  # leaves room for "-node-<i>" / "-collector" within the 63-character limit


@dataclass(frozen=True)
class VolumeSource:
    """Where a volume comes from: ``hostpath:DIR`` (that directory on every Kubernetes node)
    or ``pvc:CLAIM`` (a PersistentVolumeClaim)."""

    kind: str
    ref: str

    @classmethod
    def parse(cls, text: str, flag: str) -> VolumeSource:
        kind, sep, ref = text.partition(":")
        if not sep or kind not in VOLUME_KINDS or not ref:
            raise TopologyError(f"{flag}: expected hostpath:DIR or pvc:CLAIM, got {text!r}")
        if kind == "hostpath" and not ref.startswith("/"):
            raise TopologyError(f"{flag}: hostpath needs an absolute directory, got {ref!r}")
        if kind == "pvc" and not _DNS_LABEL.match(ref):
            raise TopologyError(f"{flag}: {ref!r} is not a valid claim name (lowercase letters, "
                                "digits and '-')")
        return cls(kind, ref)

    def __str__(self) -> str:
        return f"{self.kind}:{self.ref}"

    def volume(self, name: str, *, read_only: bool) -> dict[str, Any]:
        if self.kind == "pvc":
            return {"name": name, "persistentVolumeClaim": {"claimName": self.ref,
                                                            "readOnly": read_only}}
        # DirectoryOrCreate: a missing directory becomes an empty one, so a node starts and
        # says in one line what is missing (with "Directory" the Pod would wait forever).
        return {"name": name, "hostPath": {"path": self.ref, "type": "DirectoryOrCreate"}}


def code_files(d: Path) -> list[tuple[str, bytes]]:
    """``(relative path, bytes)`` of the files under `d` that a ``--code`` ConfigMap carries,
    sorted: everything but hidden entries, caches (``__pycache__``, ``*.pyc``) and
    version-control or environment directories; TopologyError beyond CODE_LIMIT."""
    out: list[tuple[str, bytes]] = []
    total = 0
    for root, dirs, files in os.walk(d, followlinks=False):
        dirs[:] = sorted(x for x in dirs if not x.startswith(".") and x not in _CODE_SKIP_DIRS)
        for f in sorted(files):
            p = Path(root) / f
            if f.startswith(".") or f.endswith((".pyc", ".pyo")) or not p.is_file():
                continue
            data = p.read_bytes()
            total += len(data)
            if total > CODE_LIMIT:
                raise TopologyError(
                    f"--code {d}: more than {CODE_LIMIT // 1024} KiB of files, more than a "
                    f"ConfigMap holds; put the code on every Kubernetes node (--code "
                    f"hostpath:DIR) or in a claim (--code pvc:CLAIM)")
            out.append((p.relative_to(d).as_posix(), data))
    return out


def code_configmap(name: str, namespace: str | None, labels: dict[str, str],
                   files: list[tuple[str, bytes]]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The ConfigMap holding the user's files, and the ``items`` that put each back at its
    relative path under the mount (ConfigMap keys cannot hold '/')."""
    data: dict[str, str] = {}
    binary: dict[str, str] = {}
    items = []
    for i, (rel, content) in enumerate(files):
        key = f"f{i:04d}-" + re.sub(r"[^-._a-zA-Z0-9]", "_", rel.rsplit("/", 1)[-1])[:200]
        try:
            data[key] = content.decode("utf-8")
        except UnicodeDecodeError:
            binary[key] = base64.b64encode(content).decode("ascii")
        items.append({"key": key, "path": rel})
    cm: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": _meta(name, namespace, labels)}
    if data:
        cm["data"] = data
    if binary:
        cm["binaryData"] = binary
    return cm, items


def memory_mib(model: str) -> tuple[int, int]:
    """(request, limit) in MiB for one node running ``model``."""
    peak = NODE_PEAK_RSS_MIB.get(model, max(NODE_PEAK_RSS_MIB.values()))
    request = int(math.ceil(peak * MEMORY_MARGIN / 64) * 64)
    return request, 2 * request


def data_hint(data: VolumeSource) -> str:
    """``MCEPL_DATA_HINT`` of the node Pods (see node/main.py)."""
    if data.kind == "pvc":
        return (f"the mount of the PersistentVolumeClaim {data.ref}: copy the data set files "
                f"into that claim, or write the manifests again with `mcepl topology kube "
                f"--data pvc:CLAIM` or `--data hostpath:DIR`")
    return (f"the mount of the hostPath {data.ref} of the Kubernetes node this Pod runs on: put "
            f"the data set files there on every node, or write the manifests again with "
            f"`mcepl topology kube --data hostpath:DIR` or `--data pvc:CLAIM`")


def _meta(name: str, namespace: str | None, labels: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = dict(labels)
    return meta


def _env(c: Container) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in c.env.items()]


def _pod_security() -> dict[str, Any]:
    return {"runAsUser": IMAGE_UID, "runAsGroup": IMAGE_GID, "runAsNonRoot": True,
            "fsGroup": IMAGE_GID}


def _container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


@dataclass
class KubeOptions:
    name: str = "mcepl"
    namespace: str | None = None
    image: str = DEFAULT_IMAGE
    data: VolumeSource | None = None  # default: hostpath of default_data_source(cfg)
    results: VolumeSource | None = None  # default: pvc:<name>-results (created)
    keys: str = "generate"
    results_size: str = "1Gi"
    # the user's modules: a local directory (packed into a ConfigMap), "hostpath:DIR" or
    # "pvc:CLAIM"; None: the image must hold them
    code: str | None = None

    def check(self) -> None:
        if not _DNS_LABEL.match(self.name) or len(self.name) > _MAX_NAME:
            raise TopologyError(f"--name: {self.name!r} must be a DNS label of at most "
                                f"{_MAX_NAME} characters (lowercase letters, digits, '-')")
        if self.namespace is not None and not _DNS_LABEL.match(self.namespace):
            raise TopologyError(f"--namespace: {self.namespace!r} is not a valid namespace name")
        if self.keys not in KEY_MODES:
            raise TopologyError(f"--keys: one of {', '.join(KEY_MODES)}, got {self.keys!r}")


def kube_manifests(topo: Topology, cfg: Any, opts: KubeOptions
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Topology]:
    """(objects, secrets, container topology) for ``topo`` and ``cfg`` (a host topology and
    config, as for compose). The secrets list is empty without keys."""
    opts.check()
    name, ns = opts.name, opts.namespace
    data = opts.data or VolumeSource("hostpath", default_data_source(cfg))
    results = opts.results or VolumeSource("pvc", f"{name}-results")
    app = {"app.kubernetes.io/name": "mcepl", "app.kubernetes.io/instance": name}
    code_volume: dict[str, Any] | None = None
    code_objects: list[dict[str, Any]] = []
    if opts.code is not None:
        if opts.code.startswith(tuple(f"{k}:" for k in VOLUME_KINDS)):
            code_volume = VolumeSource.parse(opts.code, "--code").volume("code", read_only=True)
        else:
            files = code_files(check_code_dir(opts.code, cfg))
            cm, items = code_configmap(f"{name}-code", ns, app, files)
            code_objects.append(cm)
            code_volume = {"name": "code", "configMap": {"name": f"{name}-code",
                                                         "items": items}}
    ctopo, ccfg = container_files(topo, cfg, host=lambda i: f"node-{i}.{name}",
                                  code=code_volume is not None)
    from mcepl.config import dump_toml

    secret_texts: dict[int | str, str] = {}  # node id, or COLLECTOR
    if opts.keys == "generate":
        pairs: dict[int | str, KeyPair] = {n.id: new_keypair() for n in ctopo.nodes}
        pairs[COLLECTOR] = new_keypair()
        ctopo = with_public_keys(ctopo, {i: kp.public for i, kp in pairs.items()
                                         if i != COLLECTOR}, pairs[COLLECTOR].public)
        secret_texts = {i: secret_key_text(kp, i) for i, kp in pairs.items()}
    # a Pod asks for whole cores; "auto" (a share of one machine's cores) means one thread here
    threads = cfg.run.threads_per_node if isinstance(cfg.run.threads_per_node, int) else 1
    layout = Layout(collector=f"tcp://{name}-collector:{COLLECTOR_PORT}",
                    secure=bool(secret_texts), threads=threads,
                    data_hint=data_hint(data), results=f"{CONTAINER_RESULTS_DIR}/{name}",
                    code=code_volume is not None)
    files_cm = f"{name}-files"

    def volumes_for(c: Container) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        vols, mounts = [], []
        for m in c.mounts:
            if m.role == FILES:
                vols.append({"name": "files", "configMap": {"name": files_cm}})
            elif m.role == KEY:  # the container's own key: node i's, or the collector's
                # 0440 + fsGroup: readable by the image's user only
                who = c.node if c.node is not None else COLLECTOR
                vols.append({"name": "key", "secret": {"secretName": f"{name}-key-{who}",
                                                       "defaultMode": 0o440}})
            elif m.role == DATA:
                vols.append(data.volume("data", read_only=True))
            elif m.role == RESULTS:
                vols.append(results.volume("results", read_only=False))
            elif m.role == CODE and code_volume is not None:
                vols.append(dict(code_volume))
            else:
                raise TopologyError(f"kube: no volume for mount role {m.role!r}")
            mounts.append({"name": vols[-1]["name"], "mountPath": m.target,
                           "readOnly": m.read_only})
        return vols, mounts

    def job(job_name: str, labels: dict[str, str], c: Container, container_name: str,
            resources: dict[str, Any], pod_extra: dict[str, Any], port: int) -> dict[str, Any]:
        vols, mounts = volumes_for(c)
        container = {"name": container_name, "image": opts.image,
                     "imagePullPolicy": "IfNotPresent", "args": list(c.args)}
        if c.env:
            container["env"] = _env(c)
        container.update({"ports": [{"name": "mcepl", "containerPort": port}],
                          "resources": resources, "volumeMounts": mounts,
                          "securityContext": _container_security()})
        pod_spec = {**pod_extra, "restartPolicy": "Never", "enableServiceLinks": False,
                    "automountServiceAccountToken": False, "securityContext": _pod_security(),
                    "containers": [container], "volumes": vols}
        return {"apiVersion": "batch/v1", "kind": "Job",
                "metadata": _meta(job_name, ns, labels),
                "spec": {"backoffLimit": 0,
                         "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec}}}

    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": _meta(files_cm, ns, app),
         "data": {"topology.json": dumps_topology(ctopo), "config.toml": dump_toml(ccfg)}},
        *code_objects,
        {"apiVersion": "v1", "kind": "Service",
         "metadata": _meta(name, ns, app),
         "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                  "selector": {**app, "app.kubernetes.io/component": "node"},
                  "ports": [{"name": "mcepl", "port": NODE_PORT, "targetPort": NODE_PORT}]}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": _meta(f"{name}-collector", ns, app),
         "spec": {"selector": {**app, "app.kubernetes.io/component": "collector"},
                  "ports": [{"name": "metrics", "port": COLLECTOR_PORT,
                             "targetPort": COLLECTOR_PORT}]}},
    ]
    if opts.results is None:  # the default claim is ours to create
        objects.append({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": _meta(results.ref, ns, app),
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": opts.results_size}}}})
    col_labels = {**app, "app.kubernetes.io/component": "collector"}
    objects.append(job(f"{name}-collector", col_labels, collector_container(layout), "collector",
                       {"requests": {"cpu": "250m", "memory": f"{COLLECTOR_MEMORY_MIB}Mi"},
                        "limits": {"memory": f"{2 * COLLECTOR_MEMORY_MIB}Mi"}},
                       {}, COLLECTOR_PORT))
    req, lim = memory_mib(cfg.model.name)
    cpu = str(threads)
    for n in ctopo.nodes:
        labels = {**app, "app.kubernetes.io/component": "node", "mcepl/node": str(n.id)}
        objects.append(job(f"{name}-node-{n.id}", labels, node_container(layout, n.id), "node",
                           {"requests": {"cpu": cpu, "memory": f"{req}Mi"},
                            "limits": {"memory": f"{lim}Mi"}},
                           {"hostname": f"node-{n.id}", "subdomain": name}, NODE_PORT))
    secrets = [
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": _meta(f"{name}-key-{i}", ns, {**app, "mcepl/node": str(i)}),
         "type": "Opaque",
         "data": {f"node-{i}.key_secret": base64.b64encode(text.encode("ascii")).decode("ascii")}}
        for i, text in sorted((k, v) for k, v in secret_texts.items() if k != COLLECTOR)
    ]
    if COLLECTOR in secret_texts:
        text = secret_texts[COLLECTOR]
        secrets.append(
            {"apiVersion": "v1", "kind": "Secret",
             "metadata": _meta(f"{name}-key-{COLLECTOR}", ns,
                               {**app, "app.kubernetes.io/component": "collector"}),
             "type": "Opaque",
             "data": {f"{COLLECTOR}.key_secret":
                      base64.b64encode(text.encode("ascii")).decode("ascii")}})
    return objects, secrets, ctopo


@dataclass
class KubeFiles:
    manifests: Path
    secrets: Path | None
    nodes: int


def write_kube(topo: Topology, cfg: Any, outdir: str | Path, opts: KubeOptions) -> KubeFiles:
    """Write ``mcepl.yaml`` and (with keys) ``keys.yaml`` (mode 0600) into ``outdir``."""
    objects, secrets, ctopo = kube_manifests(topo, cfg, opts)
    out = Path(outdir)
    ns = f" -n {opts.namespace}" if opts.namespace else ""
    header = (
        f"# mcepl network on Kubernetes: {ctopo.num_nodes} nodes (algorithm "
        f"{cfg.algorithm.name}, {ctopo.num_edges} edges) and a metrics collector, as Jobs.\n"
        f"# Generated by `mcepl topology kube`; regenerate rather than edit. Run:\n"
        f"#   kubectl apply -f {out}/\n"
        f"#   kubectl{ns} wait --for=condition=complete job/{opts.name}-collector --timeout=24h\n"
        f"#   kubectl{ns} logs job/{opts.name}-collector      # the summary\n"
        f"# The run directory is {CONTAINER_RESULTS_DIR}/{opts.name} in the results volume. "
        f"Remove: kubectl delete -f {out}/\n"
    )
    try:
        out.mkdir(parents=True, exist_ok=True)
        manifests = out / "mcepl.yaml"
        _atomic_write(manifests, header + to_yaml_stream(objects), 0o644)
        secrets_path = None
        stale = out / "keys.yaml"
        if secrets:
            secrets_path = stale
            _atomic_write(secrets_path, (
                "# SECRET: one CURVE secret key per node (mcepl topology kube). Keep it private;\n"
                "# do not commit it. Each node's Pod mounts only its own Secret.\n")
                + to_yaml_stream(secrets), 0o600)
        elif stale.exists():
            stale.unlink()  # keys of an earlier generation would not match this topology
    except OSError as e:
        raise TopologyError(f"{out}: cannot write manifests: {e.strerror or e}") from None
    return KubeFiles(manifests, secrets_path, ctopo.num_nodes)


def _atomic_write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


__all__ = ["CODE_LIMIT", "KEY_MODES", "KubeFiles", "KubeOptions", "NODE_PEAK_RSS_MIB",
           "VolumeSource", "code_configmap", "code_files", "data_hint", "kube_manifests",
           "memory_mib", "write_kube"]
