"""`mcepl node`: one node as its own OS process (locally, in a container, or on its own machine)."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable

import torch

from mcepl.config import Config, ConfigError, load_config
from mcepl.node.checkpoint import checkpoint_path, load_checkpoint
from mcepl.node.data import DatasetError, DatasetNotFoundError
from mcepl.node.factory import (
    build_algorithm,
    build_evaluator,
    check_labels,
    default_run_id,
    node_shard,
)
from mcepl.node.lifecycle import Stopped, stop_on_signals, watch_parent
from mcepl.node.models import weights_digest
from mcepl.node.plugins import PluginError, load_plugins
from mcepl.node.runtime import NodeError, NodeRuntime
from mcepl.node.threads import resolve_threads
from mcepl.node.transport import CurveConfig, NodeSockets
from mcepl.topology import Topology, TopologyError, load_topology
from mcepl.topology.keys import KeyFileError, check_key_choice
from mcepl.userload import UserCodeError

STOP_LINGER_MS = 1000  # a node told to stop waits this long at most for unsent messages

log = logging.getLogger("mcepl.node")


def add_node_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("node", help="run one node (containers, separate machines)",
                       description="Run one node of the network described by --topology. Every "
                                   "node of a run must be given the same topology and config.")
    p.add_argument("--topology", required=True, help="topology JSON file (all nodes' addresses)")
    p.add_argument("--config", default=None, help="experiment config TOML (default: built-in)")
    p.add_argument("--id", type=int, required=True, help="this node's id in the topology")
    p.add_argument("--collector", default=None,
                   help="collector address, e.g. tcp://10.0.0.1:5600 (metrics are only logged "
                        "without one)")
    p.add_argument("--run-id", default=None, help="run id shared by all nodes (default: derived "
                                                  "from the config and topology)")
    p.add_argument("--bind", default=None, help="address to bind if different from the advertised "
                                                "one in the topology, e.g. tcp://0.0.0.0:5555")
    p.add_argument("--checkpoint-dir", default="checkpoints",
                   help="where this node writes its state after every round, and --resume reads "
                        "it (default ./checkpoints; run.checkpoint = false turns writing off)")
    p.add_argument("--masks-dir", default=None, metavar="DIR",
                   help="write this node's masks on its evaluation rounds under DIR/node-<i>/ "
                        "(mask methods; local files only, nothing extra on the wire; `mcepl "
                        "launch` uses RUN/masks; default: none)")
    p.add_argument("--mask-snapshots", choices=["eval", "final"], default="eval",
                   help="with --masks-dir: on every evaluation round (default) or only after "
                        "the last round")
    p.add_argument("--resume", action="store_true",
                   help="rejoin a running network from this node's last checkpoint after a crash")
    p.add_argument("--key", default=None, metavar="FILE",
                   help="this node's CURVE secret key file (node-<i>.key_secret, from `mcepl "
                        "topology keys`): traffic between nodes and to the collector is "
                        "encrypted and authenticated, only neighbours' keys are accepted")
    p.add_argument("--insecure", action="store_true",
                   help="run without CURVE keys (plaintext, unauthenticated: anyone who reaches "
                        "the ports can read the masks and, knowing the run id, pose as a "
                        "neighbour); refused unless given")
    p.add_argument("--listen-fd", type=int, default=None, metavar="FD",
                   help="adopt this already listening socket for the node's address (used by "
                        "`mcepl launch`, which reserves every address before starting nodes)")
    p.add_argument("--parent", type=int, default=None, metavar="PID",
                   help="stop when process PID is gone (used by `mcepl launch`: nodes never "
                        "outlive their launcher)")
    p.add_argument("--data-digest", default=None, metavar="HEX",
                   help="for a user data set (data.dataset = package.module:loader): the digest "
                        "of its arrays that every node must see (`mcepl launch` passes the one "
                        "it computed); the node refuses to start if its loader returns other "
                        "data. Its log names the digest it saw either way")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=cmd_node)


def cmd_node(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s node {args.id} %(levelname)s %(message)s")
    should_stop = watch_parent(args.parent) if args.parent is not None else None
    try:
        load_plugins()
        cfg = load_config(args.config)
        topo = load_topology(args.topology)
        if args.id not in topo.ids:
            raise TopologyError(f"{args.topology}: no node with id {args.id} "
                                f"(ids are 0..{topo.num_nodes - 1})")
        check_labels(cfg, topo, args.topology)
    except (ConfigError, TopologyError, PluginError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        check_key_choice(args.topology, topo.secure, args.key, args.insecure,
                         f"node-{args.id}.key_secret", "run plaintext and unauthenticated")
        curve = CurveConfig.for_node(topo, args.id, args.key)
    except KeyFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run_id = args.run_id or default_run_id(cfg, topo)
    resume_state = None
    if args.resume:
        try:
            resume_state = load_checkpoint(checkpoint_path(args.checkpoint_dir, args.id),
                                           run_id=run_id, config_hash=cfg.hash(), node_id=args.id)
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    digest = args.data_digest
    if digest is not None and not re.fullmatch(r"[0-9a-fA-F]{16,64}", digest):
        print(f"error: --data-digest: expected 16 to 64 hex digits, got {digest!r}",
              file=sys.stderr)
        return 2
    ckpt_dir = args.checkpoint_dir if cfg.run.checkpoint or args.resume else None
    restore = stop_on_signals()
    try:
        return run_node(cfg, topo, args.id, run_id, args.collector, args.bind,
                        checkpoint_dir=ckpt_dir, resume_state=resume_state, curve=curve,
                        listen_fd=args.listen_fd, should_stop=should_stop,
                        masks_dir=args.masks_dir, mask_snapshots=args.mask_snapshots,
                        data_digest=digest)
    finally:
        restore()


def run_node(cfg: Config, topo: Topology, node_id: int, run_id: str, collector: str | None,
             bind: str | None = None, checkpoint_dir: str | None = None,
             resume_state: dict | None = None, curve: CurveConfig | None = None,
             listen_fd: int | None = None,
             should_stop: Callable[[], str | None] | None = None,
             masks_dir: str | None = None, mask_snapshots: str = "eval",
             data_digest: str | None = None) -> int:
    """Load this node's shard, build its algorithm, run all rounds; 0 on success, 1 on failure
    (a signal to stop included: the collector is told "interrupted (SIGTERM)"), 2 when the
    user's model or data set named in the config does not import or fit."""
    from mcepl.protocol import encode_control

    torch.set_num_threads(resolve_threads(cfg.run.threads_per_node))
    spec = topo.node(node_id)
    peers = {j: topo.node(j).address for j in topo.neighbors(node_id)}
    sockets = None
    status, reason, code = "ok", "", 1
    collector_up = True
    linger: int | None = None
    try:
        sockets = NodeSockets(node_id, bind or spec.bind_address, peers, collector, curve=curve,
                              listen_fd=listen_fd)
        collector_up = sockets.wait_collector(cfg.run.connect_timeout_s)
        if not collector_up:
            raise NodeError(f"collector {collector} not reachable within "
                            f"{cfg.run.connect_timeout_s:g} s (run.connect_timeout_s): is `mcepl "
                            "collect` running there? It refuses to start when its --out "
                            "directory already holds a run")
        shard = node_shard(cfg, topo, node_id, data_digest)
        algo = build_algorithm(cfg, topo, node_id, shard)
        log.info("node %d: %d train / %d test samples, labels %s, r=%g, %d neighbours",
                 node_id, len(shard.train_y), len(shard.test_y), shard.labels, spec.retention,
                 len(peers))
        log.info("node %d: model %s, %d masked parameters (%d layers), fixed weights digest "
                 "%s%s", node_id, cfg.model.name, algo.ctx.model.num_masked,
                 len(algo.ctx.model.names), weights_digest(algo.ctx.model.module)[:16],
                 f", data set {cfg.data.dataset} digest {shard.digest[:16]}"
                 if shard.digest else "")
        runtime = NodeRuntime(cfg, topo, node_id, run_id, algo, sockets, checkpoint_dir,
                              evaluator=build_evaluator(cfg, shard), should_stop=should_stop,
                              masks_dir=masks_dir, mask_snapshots=mask_snapshots)
        if resume_state is not None:
            runtime.restore(resume_state)
        runtime.run()
        log.info("node %d: finished %d rounds; dropped messages: %s", node_id, cfg.run.rounds,
                 runtime.dropped_counts() or "none")
    except Stopped as exc:
        status, reason, linger = "error", f"interrupted ({exc.name})", STOP_LINGER_MS
    except KeyboardInterrupt:
        status, reason, linger = "error", "interrupted", STOP_LINGER_MS
    except DatasetError as exc:
        status, reason = "error", data_error_line(cfg, exc)
    except UserCodeError as exc:  # the user's model or data set: bad input, exit 2
        status, reason, code = "error", str(exc), 2
    except NodeError as exc:
        status, reason = "error", str(exc)
        if should_stop is not None and should_stop():
            linger = STOP_LINGER_MS  # nobody is listening any more
    except (RuntimeError, ValueError, OSError) as exc:
        status, reason = "error", str(exc)
    except Exception as exc:  # noqa: BLE001 - report anything else, then fail
        log.exception("node %d crashed", node_id)
        status, reason = "error", f"{type(exc).__name__}: {exc}"
    if status != "ok":
        print(f"error: {reason}" if code == 2 else f"node {node_id}: error: {reason}",
              file=sys.stderr)
    if sockets is not None:
        if sockets.curve is not None and (status == "ok" or sockets.rejected_counts()):
            log.info("node %d: CURVE: connections and messages refused by the transport: %s",
                     node_id, sockets.rejected_counts() or "none")
        if collector_up:  # else the goodbye would only wait out the socket's linger
            sockets.push_metrics(encode_control("bye", {"status": status,
                                                        "reason": reason[:4000]},
                                                run_id=run_id, sender=node_id))
        sockets.close(linger)
    return 0 if status == "ok" else code


def data_error_line(cfg: Config, exc: Exception) -> str:
    """One line for a data set that cannot be loaded (the loader's message may span lines).

    In a container, ``MCEPL_DATA_HINT`` (set by `mcepl topology compose` and `kube`) says where
    ``$MCEPL_DATA`` (/data) comes from and what to set: a missing data set is then reported as
    that mount, not as the places a local install would look in.
    """
    hint = os.environ.get("MCEPL_DATA_HINT")
    if hint and isinstance(exc, DatasetNotFoundError):
        where = os.environ.get("MCEPL_DATA", "/data")
        return f"data set {cfg.data.dataset!r} not found in {where}, {hint}"
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return f"{text} ({hint})" if hint else text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mcepl-node")
    sub = parser.add_subparsers()
    add_node_parser(sub)
    args = parser.parse_args(["node", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
