"""The `mcepl` command: launch, node, collect, topology, report."""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from datetime import datetime
from pathlib import Path

from mcepl import __version__
from mcepl.config import Config, ConfigError, dump_toml, load_config
from mcepl.topology import (
    PAPER_RETENTION,
    Topology,
    TopologyError,
    generate,
    load_topology,
    save_topology,
    with_transport,
)

DEFAULT_NODES = 20
DEFAULT_BASE_PORT = 5550


def free_base_port(n: int, start: int = DEFAULT_BASE_PORT, host: str = "127.0.0.1") -> int:
    """The first port >= start with n consecutive free TCP ports on `host`."""
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


def default_topology(cfg: Config, nodes: int, transport: str, algorithm: str) -> Topology:
    """ER(0.5) with the paper's retention vector; a star with the server at 0 for fedavg."""
    kind = "star" if algorithm == "fedavg" else "er"
    retention = [PAPER_RETENTION[i % len(PAPER_RETENTION)] for i in range(nodes)]
    base = free_base_port(nodes) if transport == "tcp" else DEFAULT_BASE_PORT
    return generate(kind, nodes, p=0.5, seed=cfg.run.seed, retention=retention,
                    base_port=base, transport=transport)


def _add_common_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--topology", help="topology JSON (default: ER(0.5), paper retention vector)")
    p.add_argument("--config", help="experiment config TOML (default: built-in defaults)")
    p.add_argument("--nodes", type=int, help=f"nodes when no topology is given ({DEFAULT_NODES})")
    p.add_argument("--rounds", type=int, help="training rounds (iterations)")
    p.add_argument("--algorithm", help="algorithm name, e.g. mcepl, ind-mask")
    p.add_argument("--dataset", help="fashion-mnist or cifar10")
    p.add_argument("--data-dir", help="directory holding the data set files")
    p.add_argument("--model", help="alexnet or small-cnn")
    p.add_argument("--seed", type=int, help="run seed (data split, shared weights, sampling)")
    p.add_argument("--eval-every", type=int, help="evaluate every N rounds (and at the last)")
    p.add_argument("--device", help="cpu, cuda, cuda:N")
    p.add_argument("--transport", choices=["tcp", "ipc"],
                   help="rewrite addresses to this transport")
    p.add_argument("--codec", choices=["raw", "entropy", "delta"],
                   help="mask codec on the wire (run.codec): raw = 1 bit per entry, entropy "
                        "= ~H(r) bits per entry, delta = change since the last mask sent")
    p.add_argument("--out", help="run directory (default runs/<time>-<algorithm>)")
    p.add_argument("--quiet", action="store_true", help="no progress or summary output")


def resolve_run(args: argparse.Namespace) -> tuple[Config, Topology]:
    """Config and topology from files plus flag overrides, validated."""
    cfg = load_config(args.config)
    cfg = cfg.with_overrides(
        run={"rounds": args.rounds, "seed": args.seed, "eval_every": args.eval_every,
             "device": args.device, "codec": getattr(args, "codec", None)},
        data={"dataset": args.dataset, "root": args.data_dir},
        model={"name": args.model},
        algorithm={"name": args.algorithm} if args.algorithm else {},
    )
    transport = args.transport or "tcp"
    if args.topology:
        if args.nodes is not None:
            raise ConfigError("--nodes applies only without --topology (the file sets the nodes)")
        topo = load_topology(args.topology)
        if args.transport:
            topo = with_transport(topo, transport, base_port=free_base_port(topo.num_nodes)
                                  if transport == "tcp" else None)
    else:
        nodes = args.nodes if args.nodes is not None else DEFAULT_NODES
        if nodes < 1:
            raise ConfigError(f"--nodes must be >= 1, got {nodes}")
        topo = default_topology(cfg, nodes, transport, cfg.algorithm.name)
    return cfg, topo


def cmd_launch(args: argparse.Namespace) -> int:
    from mcepl.launcher.launch import LaunchError, launch

    try:
        cfg, topo = resolve_run(args)
    except (ConfigError, TopologyError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.inprocess and args.secure:
        print("error: --secure applies to networked runs; --inprocess has no sockets",
              file=sys.stderr)
        return 2
    run_dir = Path(args.out or f"runs/{datetime.now():%Y%m%d-%H%M%S}-{cfg.algorithm.name}")
    if (run_dir / "metrics.jsonl").exists():
        print(f"error: {run_dir} already holds a run (metrics.jsonl); choose another --out",
              file=sys.stderr)
        return 2
    if not args.quiet:
        print(f"mcepl {__version__}: {topo.num_nodes} nodes, {len(topo.edges)} edges, "
              f"{cfg.algorithm.name} on {cfg.data.dataset} with {cfg.model.name}, "
              f"{cfg.run.rounds} rounds -> {run_dir}")
    try:
        if args.inprocess:
            run_inprocess_to_dir(cfg, topo, run_dir, quiet=args.quiet)
        else:
            launch(cfg, topo, run_dir, quiet=args.quiet, secure=args.secure)
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def run_inprocess_to_dir(cfg: Config, topo: Topology, run_dir: Path, quiet: bool = False) -> dict:
    """The in-process driver, writing the same run directory as a networked launch."""
    from mcepl.launcher.report import format_summary, write_report
    from mcepl.node.inprocess import run_inprocess

    if (run_dir / "metrics.jsonl").exists():
        raise ConfigError(f"{run_dir} already holds a run (metrics.jsonl); choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(dump_toml(cfg))
    save_topology(topo, run_dir / "topology.json")
    out = open(run_dir / "metrics.jsonl", "w", buffering=1)  # noqa: SIM115

    def on_round(rnd: int, records: list[dict]) -> None:
        for r in records:
            out.write(json.dumps(r, sort_keys=True) + "\n")
        accs = [r["test_acc"] for r in records if "test_acc" in r]
        if accs and not quiet:
            print(f"round {rnd}/{cfg.run.rounds}: mean acc {sum(accs) / len(accs):.4f}", flush=True)

    t0 = time.perf_counter()
    try:
        run_inprocess(cfg, topo, on_round=on_round)
    finally:
        out.close()
    summary = write_report(run_dir, {"algorithm": cfg.algorithm.name, "model": cfg.model.name,
                                     "dataset": cfg.data.dataset, "driver": "inprocess",
                                     "wall_s": time.perf_counter() - t0, "status": "ok"})
    if not quiet:
        print(format_summary(summary))
        print(f"run directory: {run_dir}")
    return summary


def cmd_collect(args: argparse.Namespace) -> int:
    from mcepl.launcher.collector import Collector
    from mcepl.launcher.report import format_summary, write_report
    from mcepl.node.factory import default_run_id

    try:
        cfg = load_config(args.config)
        topo = load_topology(args.topology)
    except (ConfigError, TopologyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run_id = args.run_id or default_run_id(cfg, topo)
    run_dir = Path(args.out)
    if (run_dir / "metrics.jsonl").exists():
        print(f"error: {run_dir} already holds a run (metrics.jsonl); choose another --out",
              file=sys.stderr)
        return 2
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(dump_toml(cfg))
    save_topology(topo, run_dir / "topology.json")
    try:
        col = Collector(run_dir, run_id, topo.num_nodes, bind=args.bind)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"collector for {run_id} listening on {col.address}; waiting for {topo.num_nodes} nodes",
          flush=True)
    t0 = time.perf_counter()
    deadline = time.monotonic() + args.timeout if args.timeout else None
    try:
        while not col.state.all_done():
            col.poll(500)
            if deadline and time.monotonic() > deadline:
                print("error: timed out waiting for nodes", file=sys.stderr)
                break
    except KeyboardInterrupt:
        print("interrupted; metrics so far are in metrics.jsonl", file=sys.stderr)
    finally:
        col.close()
    failures = col.state.failures()
    summary = write_report(run_dir, {"algorithm": cfg.algorithm.name, "model": cfg.model.name,
                                     "dataset": cfg.data.dataset, "run_id": run_id,
                                     "wall_s": time.perf_counter() - t0,
                                     "status": "ok" if not failures and col.state.all_done()
                                     else "incomplete"})
    print(format_summary(summary))
    for i, why in sorted(failures.items()):
        print(f"node {i} failed: {why}", file=sys.stderr)
    return 0 if col.state.all_done() and not failures else 1


def cmd_report(args: argparse.Namespace) -> int:
    from mcepl.launcher.report import format_summary, write_comparison, write_report

    for d in args.runs:
        try:
            s = write_report(Path(d))
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"== {d}\n{format_summary(s)}\nreport: {Path(d) / 'report.md'}")
    if len(args.runs) > 1:
        out = Path(args.out or "report")
        write_comparison([Path(d) for d in args.runs], out)
        print(f"comparison: {out / 'report.md'} (plots and comparison.csv beside it)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from mcepl.node.main import add_node_parser
    from mcepl.topology.cli import add_topology_parser

    parser = argparse.ArgumentParser(prog="mcepl", description="Decentralized personalized "
                                     "learning with binary masks (MCE-PL) over ZeroMQ.")
    parser.add_argument("--version", action="version", version=f"mcepl {__version__}")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("launch", help="run a whole network on this machine",
                       description="Start one node process per topology entry, collect metrics, "
                                   "write a run directory. With no arguments: 20 nodes, ER(0.5), "
                                   "the paper's retention vector, MCE-PL on Fashion-MNIST.")
    _add_common_run_flags(p)
    p.add_argument("--inprocess", action="store_true",
                   help="run all nodes in this process (the reference driver; no sockets)")
    p.add_argument("--secure", action="store_true",
                   help="encrypt and authenticate the traffic between nodes with ZeroMQ CURVE: "
                        "a fresh key pair per node in RUN/keys (secret files mode 0600)")
    p.set_defaults(func=cmd_launch)

    add_node_parser(sub)

    p = sub.add_parser("collect", help="gather metrics from nodes on other machines",
                       description="Bind a metrics collector and write the run directory.")
    p.add_argument("--topology", required=True)
    p.add_argument("--config")
    p.add_argument("--bind", default="tcp://0.0.0.0:5600", help="address to listen on")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--run-id")
    p.add_argument("--timeout", type=float, default=0, help="give up after N seconds (0: never)")
    p.set_defaults(func=cmd_collect)

    add_topology_parser(sub)

    p = sub.add_parser("report", help="summary, tables and plots from run directories",
                       description="For each run directory write summary.json, report.md, "
                                   "bytes_per_node.csv/.md, accuracy_per_round.csv, "
                                   "accuracy.png and accuracy_vs_bytes.png into it; with "
                                   "several runs also comparison plots and tables in --out.")
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--out", help="where comparison plots go when several runs are given")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        if args.command is None and (argv if argv is not None else sys.argv[1:]) == []:
            parser.print_help()
            return 0
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
