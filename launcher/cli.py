"""The `mcepl` command: argument parsing only. Each subcommand maps its flags onto the launcher
(`launch`, `inprocess`, `collector`, `report`, `rundir`, `resolve`), the node entry
(`mcepl node`) and the topology tools (`mcepl topology ...`), and turns their errors into one
line on stderr and an exit code (2: bad input, 1: the run failed)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mcepl import __version__
from mcepl.config import Config, ConfigError, load_config
from mcepl.node.plugins import PluginError, load_plugins
from mcepl.registry import ALGORITHMS, DATASETS, MASK_CODECS, MODELS
from mcepl.topology import Topology, TopologyError, load_topology

from .resolve import DEFAULT_NODES
from .resolve import resolve_run as _resolve
from .rundir import RunDirError, check_unused, default_run_dir


def _add_common_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--topology", help="topology JSON (default: ER(0.5), paper retention vector; "
                                      "the graph an algorithm needs, e.g. fedavg's star)")
    p.add_argument("--config", help="experiment config TOML (default: built-in defaults)")
    p.add_argument("--nodes", type=int, help=f"nodes when no topology is given ({DEFAULT_NODES})")
    p.add_argument("--rounds", type=int, help="training rounds (iterations)")
    p.add_argument("--algorithm", help=f"algorithm name: {', '.join(ALGORITHMS)}")
    p.add_argument("--dataset", help=" or ".join(DATASETS))
    p.add_argument("--data-dir", help="directory holding the data set files")
    p.add_argument("--model", help=" or ".join(MODELS))
    p.add_argument("--seed", type=int, help="run seed (data split, shared weights, sampling)")
    p.add_argument("--eval-every", type=int, help="evaluate every N rounds (and at the last)")
    p.add_argument("--device", help="cpu, cuda, cuda:N")
    p.add_argument("--transport", choices=["tcp", "ipc"],
                   help="rewrite addresses to this transport")
    p.add_argument("--codec", choices=list(MASK_CODECS),
                   help="mask codec on the wire (run.codec): raw = 1 bit per entry, entropy "
                        "= ~H(r) bits per entry, delta = change since the last mask sent")
    p.add_argument("--out", help="run directory (default runs/<time>-<algorithm>)")
    p.add_argument("--quiet", action="store_true", help="no progress or summary output")


def resolve_run(args: argparse.Namespace) -> tuple[Config, Topology]:
    """Config and topology from the launch flags (files plus overrides), validated."""
    return _resolve(
        args.config, args.topology, nodes=args.nodes, transport=args.transport,
        run={"rounds": args.rounds, "seed": args.seed, "eval_every": args.eval_every,
             "device": args.device, "codec": getattr(args, "codec", None)},
        data={"dataset": args.dataset, "root": args.data_dir},
        model={"name": args.model},
        algorithm={"name": args.algorithm} if args.algorithm else {},
    )


def _error(msg: object, code: int = 2) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return code


def cmd_launch(args: argparse.Namespace) -> int:
    from .inprocess import run_inprocess_to_dir
    from .launch import LaunchError, launch

    try:
        cfg, topo = resolve_run(args)
    except (ConfigError, TopologyError, RuntimeError) as exc:
        return _error(exc)
    if args.inprocess and args.secure:
        return _error("--secure applies to networked runs; --inprocess has no sockets")
    try:
        run_dir = check_unused(args.out or default_run_dir(cfg.algorithm.name))
    except RunDirError as exc:
        return _error(exc)
    if not args.quiet:
        print(f"mcepl {__version__}: {topo.num_nodes} nodes, {len(topo.edges)} edges, "
              f"{cfg.algorithm.name} on {cfg.data.dataset} with {cfg.model.name}, "
              f"{cfg.run.rounds} rounds -> {run_dir}")
    try:
        if args.inprocess:
            run_inprocess_to_dir(cfg, topo, run_dir, quiet=args.quiet)
        else:
            launch(cfg, topo, run_dir, quiet=args.quiet, secure=args.secure)
    except RunDirError as exc:
        return _error(exc)
    except LaunchError as exc:
        return _error(exc, 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from mcepl.node.factory import default_run_id

    from .collector import collect_run

    try:
        cfg = load_config(args.config)
        topo = load_topology(args.topology)
    except (ConfigError, TopologyError) as exc:
        return _error(exc)
    try:
        result = collect_run(cfg, topo, Path(args.out),
                             run_id=args.run_id or default_run_id(cfg, topo), bind=args.bind,
                             timeout_s=args.timeout)
    except (RunDirError, RuntimeError) as exc:
        return _error(exc)
    return 0 if result.ok else 1


def cmd_report(args: argparse.Namespace) -> int:
    from .report import format_summary, write_comparison, write_report

    for d in args.runs:
        try:
            s = write_report(Path(d))
        except (FileNotFoundError, ValueError) as exc:
            return _error(exc)
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
    try:
        load_plugins()  # MCEPL_PLUGINS: the user's own algorithms (and models, codecs, ...)
    except PluginError as exc:
        return _error(exc)
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
