"""`mcepl topology generate|check|compose|keys`: the argparse wiring, kept out of the main CLI.

Every handler takes the parsed Namespace and returns an exit code: 0 on success, 2 on a usage or
topology error, reported as one line on stderr (no traceback: these are user mistakes).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any

from .generators import (
    DEFAULT_BASE_PORT,
    DEFAULT_HOST,
    KINDS,
    MAX_ER_ATTEMPTS,
    PAPER_RETENTION,
    TRANSPORTS,
    default_ipc_dir,
    generate,
    load_topology,
    read_labels_file,
    save_topology,
)
from .schema import Topology, TopologyError, check_label_range


def add_topology_parser(subparsers: Any) -> Any:
    """Register ``topology`` (``generate``, ``check``, ``compose``, ``keys``) on the main CLI's
    subparsers.

    Returns the ``topology`` sub-command action so the caller can register more sub-commands
    (e.g. ``compose``) next to these.
    """
    topo = subparsers.add_parser(
        "topology", help="generate or check a topology file",
        description="Create and validate topology files (nodes, addresses, retention ratios, "
                    "undirected edges), and turn them into docker-compose files or Kubernetes "
                    "manifests.")
    topo.set_defaults(func=lambda _args: _usage(topo))
    sub = topo.add_subparsers(dest="topology_command", metavar="{generate,check,compose,kube,keys}")

    gen = sub.add_parser(
        "generate", help="write a new topology file",
        description="Generate a connected topology and write it as JSON (written atomically). "
                    f"Default retention: the paper's 20-node vector {_fmt_floats(PAPER_RETENTION)}"
                    " (cycled when N != 20).",
    )
    gen.add_argument("--kind", choices=KINDS, required=True,
                     help="graph family: er = Erdos-Renyi G(N,p) redrawn until connected; "
                          "star = node 0 is the hub (FedAvg server); adjacency = from --adjacency")
    gen.add_argument("--nodes", type=int, metavar="N", default=None,
                     help="number of nodes (required, except with --kind adjacency where the "
                          "matrix gives it)")
    gen.add_argument("--p", type=float, metavar="P", default=None,
                     help="edge probability for --kind er (default 0.5)")
    gen.add_argument("--seed", type=int, metavar="S", default=0,
                     help=f"seed (default 0) of the graph draw (er redraws with S+1, S+2, ... "
                          f"up to {MAX_ER_ATTEMPTS} times until connected) and of "
                          "--retention-choices")
    gen.add_argument("--retention", metavar="R|R1,R2,...", default=None,
                     help="retention ratio in (0,1]: one value for all nodes, or a comma list "
                          "with one value per node (default: the paper's vector)")
    gen.add_argument("--retention-choices", metavar="R1,R2,...", default=None,
                     help="draw each node's retention uniformly from these values (seeded)")
    gen.add_argument("--host", metavar="H", default=None,
                     help=f"host in every tcp address (default {DEFAULT_HOST})")
    gen.add_argument("--base-port", type=int, metavar="P", default=None,
                     help=f"node i listens on port P+i (default {DEFAULT_BASE_PORT})")
    gen.add_argument("--adjacency", metavar="FILE", default=None,
                     help="0/1 adjacency-matrix text file (whitespace-separated rows) for "
                          "--kind adjacency")
    gen.add_argument("--labels-file", metavar="FILE", default=None,
                     help="label assignment to embed: one line per node, whitespace-separated "
                          "label ids")
    gen.add_argument("--transport", choices=TRANSPORTS, default="tcp",
                     help="tcp://host:port addresses (default), or ipc:// sockets under "
                          f"{default_ipc_dir()} (one machine only)")
    gen.add_argument("-o", "--output", metavar="FILE", required=True,
                     help="topology JSON file to write")
    gen.set_defaults(func=cmd_generate)

    chk = sub.add_parser(
        "check", help="validate a topology file and summarise it",
        description="Validate a topology file. Prints a summary and exits 0, or prints the "
                    "first problem on one line to stderr and exits 2. Labels must lie within "
                    "the data set's classes (the data set of --config, or --dataset; default "
                    "fashion-mnist).")
    chk.add_argument("file", metavar="FILE", help="topology JSON file")
    chk.add_argument("--config", metavar="FILE", default=None,
                     help="the run's config TOML: its data set's classes bound the labels")
    chk.add_argument("--dataset", metavar="NAME", default=None,
                     help="the data set whose classes bound the labels (default: the config's)")
    chk.set_defaults(func=cmd_check)

    comp = sub.add_parser(
        "compose", help="write a docker-compose file (one service per node) for a topology",
        description="Write a docker-compose file with a collector service and one node-<i> "
                    "service per topology node, plus the files the containers read: the "
                    "topology with container addresses (tcp://node-<i>:5555, bound on 0.0.0.0) "
                    "and the config, in --run-dir (mounted read-only at /run/mcepl). The data "
                    "set directory ($MCEPL_DATA on the host, default data.root or "
                    "/usr/share/datasets/<dataset>) is mounted at /data; the run directory is "
                    "written to ./results.")
    comp.add_argument("file", metavar="TOPOLOGY", help="topology JSON file (any addresses)")
    comp.add_argument("--config", metavar="FILE", default=None,
                      help="experiment config TOML (default: built-in defaults)")
    comp.add_argument("-o", "--output", metavar="FILE", default="docker-compose.yml",
                      help="compose file to write (default docker-compose.yml)")
    comp.add_argument("--run-dir", metavar="DIR", default=None,
                      help="where the container topology.json and config.toml go (default: "
                           "deploy/ next to the compose file)")
    comp.add_argument("--image", metavar="NAME", default="mcepl:latest",
                      help="image of every service (default mcepl:latest)")
    comp.add_argument("--build", metavar="DIR", default=".",
                      help="directory with the Dockerfile, relative to the compose file "
                           "(default .); '' to leave the build section out")
    comp.add_argument("--keys", choices=("init", "none"), default="init",
                      help="CURVE keys (default init): a 'keys' service makes a fresh key pair "
                           "per node at `docker compose up`, in one named volume per node (no "
                           "secret key in any file here); 'none': plaintext traffic")
    comp.add_argument("--code", metavar="DIR", default=None,
                      help="directory of your own modules (model.name / data.dataset = "
                           "package.module:attr): mounted read-only at /code in every node "
                           "container and put on run.python_path, so the image is not rebuilt")
    comp.set_defaults(func=cmd_compose)

    kube = sub.add_parser(
        "kube", help="write Kubernetes manifests (one Job per node) for a topology",
        description="Write Kubernetes manifests into DIR: mcepl.yaml (a ConfigMap with the "
                    "container topology and config, a headless Service giving node i the DNS "
                    "name node-<i>.<name>, a Service for the collector, one Job per node and "
                    "one for the collector, a claim for the results) and, with CURVE keys (the "
                    "default), keys.yaml (mode 0600): one Secret per node holding its secret "
                    "key, mounted into that node only. Apply with `kubectl apply -f DIR/`. "
                    "Memory requests come from the measured peak memory of a node process.")
    kube.add_argument("file", metavar="TOPOLOGY", help="topology JSON file (any addresses)")
    kube.add_argument("--config", metavar="FILE", default=None,
                      help="experiment config TOML (default: built-in defaults)")
    kube.add_argument("-o", "--output", metavar="DIR", required=True,
                      help="directory for mcepl.yaml and keys.yaml")
    kube.add_argument("--name", default="mcepl",
                      help="prefix of every object and the headless Service's name (default "
                           "mcepl); the run directory is /results/NAME")
    kube.add_argument("--namespace", metavar="NS", default=None,
                      help="namespace of every object (default: kubectl's current one)")
    kube.add_argument("--image", metavar="NAME", default="mcepl:latest",
                      help="image of every Pod (default mcepl:latest; push it to a registry "
                           "the cluster can pull from)")
    kube.add_argument("--data", metavar="hostpath:DIR|pvc:CLAIM", default=None,
                      help="the data set, mounted read-only at /data: a directory on every "
                           "Kubernetes node (default hostpath: data.root, else "
                           "/usr/share/datasets/<dataset>) or a PersistentVolumeClaim")
    kube.add_argument("--results", metavar="hostpath:DIR|pvc:CLAIM", default=None,
                      help="where the collector writes (default pvc:NAME-results, a 1Gi claim "
                           "created by these manifests)")
    kube.add_argument("--keys", choices=("generate", "none"), default="generate",
                      help="CURVE keys (default generate): a fresh key pair per node now, the "
                           "public keys in the topology, each secret key in its node's Secret; "
                           "'none': plaintext traffic")
    kube.add_argument("--code", metavar="DIR|hostpath:DIR|pvc:CLAIM", default=None,
                      help="your own modules (model.name / data.dataset = package.module:attr), "
                           "mounted read-only at /code in every node Pod and put on "
                           "run.python_path: a local DIR is packed into a ConfigMap (<name>-code, "
                           "up to 900 KiB), hostpath:DIR and pvc:CLAIM name a volume holding "
                           "them; the image is not rebuilt")
    kube.set_defaults(func=cmd_kube)

    keys = sub.add_parser(
        "keys", help="make a CURVE key pair per node (encrypted, authenticated traffic)",
        description="Make one ZeroMQ CURVE key pair per node: KEYDIR/node-<i>.key (public) and "
                    "KEYDIR/node-<i>.key_secret (secret, mode 0600; give it to node i only, "
                    "`mcepl node --key FILE`), and write the topology with every node's "
                    "public_key (to KEYDIR/topology.json unless --update-topology or "
                    "--topology-out). Existing keys there are replaced.")
    keys.add_argument("file", metavar="TOPOLOGY", help="topology JSON file")
    keys.add_argument("-o", "--output", metavar="KEYDIR", required=True,
                      help="directory for the key files (created)")
    keys.add_argument("--update-topology", action="store_true",
                      help="write the public keys into TOPOLOGY itself")
    keys.add_argument("--topology-out", metavar="FILE", default=None,
                      help="write the topology with the public keys to FILE")
    keys.add_argument("--per-node-dirs", action="store_true",
                      help="write node i's files into KEYDIR/node-<i>/ (mode 0700), one "
                           "directory to mount per node")
    keys.add_argument("--owner", metavar="UID:GID", default=None,
                      help="chown the key files to UID:GID (when root makes keys for an "
                           "unprivileged node user)")
    keys.add_argument("--collector-owner", metavar="UID:GID", default=None,
                      help="chown the collector's key files to UID:GID (default: --owner)")
    keys.set_defaults(func=cmd_keys)
    return sub


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _fail(msg: str) -> int:
    print(f"error: {' '.join(str(msg).split())}", file=sys.stderr)
    return 2


def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise TopologyError(f"{flag}: expected numbers separated by commas, got {text!r}") from None


def cmd_generate(args: argparse.Namespace) -> int:
    """Handle ``topology generate``."""
    try:
        if args.kind == "adjacency":
            if args.adjacency is None:
                return _fail("--kind adjacency needs --adjacency FILE")
        elif args.adjacency is not None:
            return _fail(f"--adjacency only applies to --kind adjacency, not --kind {args.kind}")
        elif args.nodes is None:
            return _fail(f"--kind {args.kind} needs --nodes N")
        if args.p is not None and args.kind != "er":
            return _fail(f"--p only applies to --kind er, not --kind {args.kind}")
        if args.retention is not None and args.retention_choices is not None:
            return _fail("give --retention or --retention-choices, not both")
        if args.transport == "ipc" and (args.host is not None or args.base_port is not None):
            return _fail("--host and --base-port only apply to --transport tcp")

        retention: float | list[float] | None = None
        if args.retention is not None:
            vals = _floats(args.retention, "--retention")
            if not vals:
                return _fail("--retention: no value given")
            retention = vals[0] if len(vals) == 1 and "," not in args.retention else vals
        choices = None
        if args.retention_choices is not None:
            choices = _floats(args.retention_choices, "--retention-choices")
        labels = read_labels_file(args.labels_file) if args.labels_file else None

        topo = generate(
            args.kind, args.nodes,
            p=0.5 if args.p is None else args.p,
            seed=args.seed,
            retention=retention,
            retention_choices=choices,
            host=DEFAULT_HOST if args.host is None else args.host,
            base_port=DEFAULT_BASE_PORT if args.base_port is None else args.base_port,
            adjacency=args.adjacency,
            labels=labels,
            transport=args.transport,
        )
        save_topology(topo, args.output)
    except (TopologyError, ValueError, OSError) as e:
        return _fail(str(e))
    extra = ""
    if topo.meta.get("kind") == "er":
        extra = f" (p={topo.meta['p']}, seed {topo.meta['seed']}, {topo.meta['attempts']} draw(s))"
    print(f"wrote {args.output}: {topo.num_nodes} nodes, {topo.num_edges} edges, "
          f"kind {topo.meta['kind']}{extra}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Handle ``topology check``."""
    from mcepl.config import ConfigError, load_config
    from mcepl.registry import DATASETS

    try:
        topo = load_topology(args.file)
        dataset = args.dataset
        if dataset is None:
            dataset = load_config(args.config).data.dataset
        if args.dataset is not None and dataset not in DATASETS:
            return _fail(f"--dataset {dataset!r} is not one of {', '.join(DATASETS)}")
        classes = getattr(DATASETS.get(dataset), "num_classes", None)
        if isinstance(classes, int):
            check_label_range(topo, classes, args.file, dataset)
    except (TopologyError, ConfigError) as e:
        return _fail(str(e))
    print(summarize(topo, args.file))
    return 0


def cmd_compose(args: argparse.Namespace) -> int:
    """Handle ``topology compose``."""
    from mcepl.config import ConfigError, load_config

    from .compose import user_code_names, write_compose

    try:
        topo = load_topology(args.file)
        cfg = load_config(args.config)
        files = write_compose(topo, cfg, args.output, run_dir=args.run_dir, image=args.image,
                              build=args.build or None, keys=args.keys, code=args.code)
    except (TopologyError, ConfigError) as e:
        return _fail(str(e))
    if args.code is None:
        for key, name in user_code_names(cfg):
            print(f"note: {key} {name!r} is your own code; without --code DIR the image must "
                  f"already contain it", file=sys.stderr)
    print(f"wrote {files.compose}: {files.nodes} node services and a collector; "
          f"container files {files.topology} and {files.config}")
    return 0


def cmd_kube(args: argparse.Namespace) -> int:
    """Handle ``topology kube``."""
    from mcepl.config import ConfigError, load_config

    from .deploy import user_code_names
    from .kube import KubeOptions, VolumeSource, write_kube

    try:
        opts = KubeOptions(
            name=args.name, namespace=args.namespace, image=args.image, keys=args.keys,
            data=VolumeSource.parse(args.data, "--data") if args.data else None,
            results=VolumeSource.parse(args.results, "--results") if args.results else None,
            code=args.code)
        topo = load_topology(args.file)
        cfg = load_config(args.config)
        files = write_kube(topo, cfg, args.output, opts)
    except (TopologyError, ConfigError) as e:
        return _fail(str(e))
    if args.code is None:
        for key, name in user_code_names(cfg):
            print(f"note: {key} {name!r} is your own code; without --code the image must "
                  f"already contain it", file=sys.stderr)
    keys = (f" and {files.secrets} (one Secret per node; private, mode 0600)"
            if files.secrets else " (no CURVE keys: plaintext)")
    print(f"wrote {files.manifests}: {files.nodes} node Jobs, a collector Job and their "
          f"Services{keys}; apply with `kubectl apply -f {args.output}/`")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """Handle ``topology keys``."""
    from pathlib import Path

    from .keys import generate_keys

    if args.update_topology and args.topology_out is not None:
        return _fail("give --update-topology or --topology-out, not both")
    owners = []
    for flag, value in (("--owner", args.owner), ("--collector-owner", args.collector_owner)):
        if value is None:
            owners.append(None)
            continue
        try:
            uid, gid = (int(x) for x in value.split(":"))
            owners.append((uid, gid))
        except ValueError:
            return _fail(f"{flag}: expected UID:GID (numbers), got {value!r}")
    owner, collector_owner = owners
    keydir = Path(args.output)
    out = (Path(args.file) if args.update_topology else
           Path(args.topology_out) if args.topology_out is not None else keydir / "topology.json")
    try:
        topo = load_topology(args.file)
        keyed = generate_keys(topo, keydir, per_node_dirs=args.per_node_dirs, owner=owner,
                              collector_owner=collector_owner)
        out.parent.mkdir(parents=True, exist_ok=True)
        save_topology(keyed, out)
    except (TopologyError, OSError) as e:
        return _fail(str(e))
    where = f"{keydir}/node-<i>/" if args.per_node_dirs else f"{keydir}/"
    print(f"wrote {topo.num_nodes} CURVE key pairs and the collector's in {where} (node-<i>.key "
          f"and collector.key public, .key_secret secret, mode 0600) and the topology with the "
          f"public keys to {out}")
    return 0


def summarize(topo: Topology, name: str) -> str:
    """One paragraph a human can eyeball before launching a run."""
    deg = topo.degrees()
    rets = topo.retentions
    counts = Counter(rets)
    if len(counts) <= 8:
        ret_txt = ", ".join(f"{r:g} x{c}" for r, c in sorted(counts.items()))
    else:
        ret_txt = f"{len(counts)} distinct values"
    ret_txt += f" (min {min(rets):g}, mean {sum(rets) / len(rets):.4g}, max {max(rets):g})"
    labelled = sum(1 for n in topo.nodes if n.labels is not None)
    secure = "CURVE public keys on every node" if topo.secure else "no CURVE keys (plaintext)"
    first, last = topo.nodes[0].address, topo.nodes[-1].address
    addr_txt = first if first == last else f"{first} .. {last}"
    meta_txt = " ".join(f"{k}={v}" for k, v in topo.meta.items()) or "none"
    return (f"{name}: {topo.num_nodes} nodes, {topo.num_edges} edges, "
            f"{'connected' if topo.is_connected() else 'NOT connected'}; "
            f"degree min/mean/max {min(deg)}/{sum(deg) / len(deg):.2f}/{max(deg)}; "
            f"retention {ret_txt}; labels on {labelled}/{topo.num_nodes} nodes; "
            f"addresses {addr_txt}; {secure}; meta: {meta_txt}.")


def _fmt_floats(xs: Any) -> str:
    return " ".join(f"{x:g}" for x in xs)
