"""The `mcepl` command: argument parsing only. Each subcommand maps its flags onto the launcher
(`launch`, `inprocess`, `collector`, `report`, `rundir`, `resolve`), the node entry
(`mcepl node`), the topology tools (`mcepl topology ...`) and the dashboard (`dashboard/`), and
turns their errors into one line on stderr and an exit code (2: bad input, 1: the run failed)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mcepl import __version__
from mcepl.config import Config, ConfigError, load_config
from mcepl.node.plugins import PluginError, load_plugins
from mcepl.registry import ALGORITHMS, DATASETS, MASK_CODECS, MODELS
from mcepl.topology import Topology, TopologyError, load_topology
from mcepl.userload import UserCodeError

from .resolve import DEFAULT_NODES
from .resolve import resolve_run as _resolve
from .rundir import RunDir, RunDirError, check_unused, default_run_dir

INSECURE_WARNING = ("warning: --insecure: traffic between nodes and to the collector is "
                    "plaintext and unauthenticated (anyone who reaches the ports can read the "
                    "masks and, knowing the run id, pose as a node)")


def _add_common_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--topology", help="topology JSON (default: ER(0.5), paper retention vector; "
                                      "the graph an algorithm needs, e.g. fedavg's star)")
    p.add_argument("--config", help="experiment config TOML (default: built-in defaults)")
    p.add_argument("--nodes", type=int, help=f"nodes when no topology is given ({DEFAULT_NODES})")
    p.add_argument("--rounds", type=int, help="training rounds (iterations)")
    p.add_argument("--algorithm", help=f"algorithm name: {', '.join(ALGORITHMS)}")
    p.add_argument("--dataset", help=f"{', '.join(DATASETS)}, or your own loader as "
                                     "package.module:loader (README: Your own model and data "
                                     "set)")
    p.add_argument("--data-dir", help="directory holding the data set files (data.root; a "
                                      "user loader is given it)")
    p.add_argument("--model", help=f"{', '.join(MODELS)}, or your own factory as "
                                   "package.module:factory")
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


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} outside 0..65535")
    return port


def _add_dashboard_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dashboard", nargs="?", type=_port, const=-1, default=None, metavar="PORT",
                   help="serve a live web page of the run at http://127.0.0.1:PORT/ (default "
                        "port 8050, or the next free one; 0: any free port)")
    p.add_argument("--dashboard-bind", default="127.0.0.1", metavar="HOST",
                   help="address the dashboard listens on (default 127.0.0.1, this machine "
                        "only; 0.0.0.0 opens it to other machines)")


def _open_dashboard(args: argparse.Namespace, cfg: Config, topo: Topology,
                    run_dir: Path) -> Any:
    """The live dashboard the flags ask for, started (its line printed), or None;
    DashboardError when it cannot listen."""
    if getattr(args, "dashboard", None) is None:
        return None
    from .dashboard.live import LiveDashboard, bind_note
    from .dashboard.runinfo import from_objects

    info = from_objects(cfg, topo, name=run_dir.name, path=str(run_dir))
    dash = LiveDashboard(info, args.dashboard_bind, None if args.dashboard < 0 else args.dashboard)
    dash.start()
    print(bind_note(dash.server), flush=True)
    return dash


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
    from .launch import LaunchError, LaunchInterrupted, launch

    try:
        cfg, topo = resolve_run(args)
    except (ConfigError, TopologyError, RuntimeError) as exc:
        return _error(exc)
    if args.secure and args.insecure:
        return _error("--secure and --insecure contradict each other")
    if args.inprocess and args.secure:
        return _error("--secure applies to networked runs; --inprocess has no sockets")
    try:
        if args.out:
            check_unused(args.out)
            rd = RunDir.claim(args.out)
        else:
            rd = RunDir.claim(default_run_dir(cfg.algorithm.name), unique=True)
    except RunDirError as exc:
        return _error(exc)
    run_dir = rd.path
    if not args.quiet:
        print(f"mcepl {__version__}: {topo.num_nodes} nodes, {len(topo.edges)} edges, "
              f"{cfg.algorithm.name} on {cfg.data.dataset} with {cfg.model.name}, "
              f"{cfg.run.rounds} rounds -> {run_dir}")
    if args.insecure and not args.inprocess:
        print(INSECURE_WARNING, file=sys.stderr)
    from .dashboard.server import DashboardError

    try:
        dash = _open_dashboard(args, cfg, topo, run_dir)
    except DashboardError as exc:
        rd.abandon()  # nothing ran: the same --out can be used again
        return _error(exc)
    observer = dash.observer if dash is not None else None
    status = "finished: ok"
    try:
        if args.inprocess:
            run_inprocess_to_dir(cfg, topo, rd, quiet=args.quiet, observer=observer,
                                 mask_snapshots=args.mask_snapshots)
        else:
            # the launcher chooses the addresses unless a topology file fixes them
            auto = args.topology is None or args.transport is not None
            launch(cfg, topo, rd, quiet=args.quiet, secure=not args.insecure, auto_ports=auto,
                   observer=observer, mask_snapshots=args.mask_snapshots, force=args.force)
    except (RunDirError, UserCodeError) as exc:
        status = f"failed: {exc}"
        return _error(exc)
    except LaunchInterrupted as exc:
        status = "interrupted"
        print(f"interrupted: {exc}; summary in {run_dir / 'summary.json'}", file=sys.stderr)
        return 128 + exc.signum
    except LaunchError as exc:
        status = f"failed: {exc}"
        return _error(exc, 1)
    except KeyboardInterrupt:
        status = "interrupted"
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if dash is not None:
            dash.finish(status)
            dash.stop()
            if not args.quiet:
                print(f"dashboard closed; to look again: mcepl dashboard {run_dir}")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from mcepl.node.factory import default_run_id
    from mcepl.topology.keys import (
        KeyFileError,
        check_collector_key,
        check_key_choice,
        load_secret_key,
    )

    from .collector import CollectorKeys, collect_run

    try:
        cfg = load_config(args.config)
        topo = load_topology(args.topology)
    except (ConfigError, TopologyError) as exc:
        return _error(exc)
    try:
        check_key_choice(args.topology, topo.secure, args.key, args.insecure,
                         "collector.key_secret", "collect plaintext, unauthenticated metrics")
        pair = load_secret_key(args.key) if args.key is not None else None
        check_collector_key(topo, pair, args.key)
    except KeyFileError as exc:
        return _error(exc)
    from .dashboard.server import DashboardError

    try:
        check_unused(args.out)
        dash = _open_dashboard(args, cfg, topo, Path(args.out))
    except (RunDirError, DashboardError) as exc:
        return _error(exc)
    if args.insecure:
        print(INSECURE_WARNING, file=sys.stderr)
    status = "incomplete"
    try:
        result = collect_run(cfg, topo, Path(args.out),
                             run_id=args.run_id or default_run_id(cfg, topo), bind=args.bind,
                             timeout_s=args.timeout,
                             observer=dash.observer if dash is not None else None,
                             keys=CollectorKeys.for_topology(topo, pair) if pair else None)
        status = "finished: ok" if result.ok else "incomplete"
    except (RunDirError, RuntimeError) as exc:
        return _error(exc)
    finally:
        if dash is not None:
            dash.finish(status)
            dash.stop()
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


def cmd_dashboard(args: argparse.Namespace) -> int:
    import time

    from .dashboard.live import ReplayDashboard, bind_note
    from .dashboard.runinfo import NotARunError
    from .dashboard.server import DashboardError

    if args.speed < 0:
        return _error(f"--speed must be >= 0, got {args.speed:g}")
    try:
        dash = ReplayDashboard([Path(d) for d in args.runs], args.bind, args.port, args.speed)
    except (NotARunError, DashboardError) as exc:
        return _error(exc)
    dash.start()
    print(bind_note(dash.server), flush=True)
    print(f"serving {len(args.runs)} run{'s' if len(args.runs) > 1 else ''}; Ctrl-C to stop",
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        dash.stop()
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    import shlex

    from .experiment import ExperimentError, Options, run_experiment

    opts = Options(
        preset=args.preset, out=Path(args.out or f"experiments/{args.preset}"),
        reference_dir=Path(args.reference_dir) if args.reference_dir else None,
        c=tuple(args.c) if args.c else None,
        methods=tuple(m.strip() for ms in args.methods for m in ms.split(",") if m.strip())
        if args.methods else None,
        lr_grid=tuple(args.lr_grid or ()), seeds=args.seeds, dataset=args.dataset,
        model=args.model, data_dir=args.data_dir, rounds=args.rounds,
        search_rounds=args.search_rounds, eval_every=args.eval_every,
        val_fraction=args.val_fraction, device=args.device, jobs=args.jobs,
        networked=args.networked)
    command = "mcepl " + shlex.join(args.argv)
    try:
        return run_experiment(opts, command, plan_only=args.plan,
                              results_only=args.results_only)
    except ExperimentError as exc:
        return _error(exc)
    except KeyboardInterrupt:  # before the runs started (they handle it themselves)
        print("interrupted", file=sys.stderr)
        return 130


def _c_values(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of label counts: {text!r} (e.g. 3,4,5)") \
            from None


def _add_experiment_parser(sub: argparse._SubParsersAction) -> None:
    from .experiment import PRESETS
    from .experiment.plan import DEFAULT_SEEDS, DEFAULT_VAL_FRACTION, REFERENCE_ENV

    p = sub.add_parser(
        "experiment", help="run one of the paper's tables or figures (presets)",
        description="Run a preset of the paper's experiments: for each method and setting, a "
                    "learning-rate search on a validation split of each node's training shard, "
                    "then the chosen rate over several seeds; write results.md (the paper's "
                    "numbers beside ours, a verdict on each of its orderings), results.csv/"
                    ".json and plots into --out. Runs already complete in --out are skipped, "
                    "half-written ones redone: run the same command again to resume. Presets: "
                    + "; ".join(f"{k}: {v.title}" for k, v in PRESETS.items()))
    p.add_argument("preset", help=", ".join(PRESETS))
    p.add_argument("--out", help="experiment directory (default experiments/<preset>)")
    p.add_argument("--reference-dir", help="directory with the paper's graph and label files "
                   f"(default ${REFERENCE_ENV}, else /work/shared/reference)")
    p.add_argument("--c", type=_c_values, help="labels per node, e.g. 4 or 3,4,5 (default: "
                   "the preset's; tables I and II: 3,4,5)")
    p.add_argument("--methods", action="append", metavar="M[,M...]",
                   help="only these rows (method names or row labels, e.g. mcepl,ind-mask)")
    p.add_argument("--lr-grid", action="append", metavar="[METHOD=]LR,LR...",
                   help="learning rates to search, for every method (1,0.1) or one "
                        "(mcepl=10,1); one value skips the search. Default: 1,0.1,0.01,0.001, "
                        "plus 10 for the mask methods")
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS,
                   help=f"seeds per final run, 0..N-1 (default {DEFAULT_SEEDS})")
    p.add_argument("--dataset", help=" or ".join(DATASETS) + " (default fashion-mnist)")
    p.add_argument("--data-dir", help="directory holding the data set files")
    p.add_argument("--model", help=" or ".join(MODELS) + " (default small-cnn, the project's; "
                   "alexnet is the paper's)")
    p.add_argument("--rounds", type=int, help="iterations of the final runs (default 400)")
    p.add_argument("--search-rounds", type=int,
                   help="iterations of the learning-rate search runs (default: --rounds)")
    p.add_argument("--eval-every", type=int, help="evaluate every N rounds (default: the "
                   "preset's, 20; fig4: 3)")
    p.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                   help="share of each node's training shard set aside (per label) to choose "
                        f"the learning rate on (default {DEFAULT_VAL_FRACTION:g})")
    p.add_argument("--device", help="cpu, cuda, cuda:N")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1)")
    p.add_argument("--networked", action="store_true",
                   help="run each network as real node processes over TCP (mcepl launch) "
                        "instead of in one process")
    p.add_argument("--plan", action="store_true", help="print the runs and exit")
    p.add_argument("--results-only", action="store_true",
                   help="run nothing; rewrite results.md/.csv/.json and the plots from --out")
    p.set_defaults(func=cmd_experiment)


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
    p.add_argument("--insecure", action="store_true",
                   help="plaintext, unauthenticated traffic; by default a run is encrypted and "
                        "authenticated with ZeroMQ CURVE: a fresh key pair per node and for the "
                        "collector in RUN/keys (secret files mode 0600)")
    p.add_argument("--mask-snapshots", choices=["eval", "final", "off"], default="eval",
                   help="mask methods write every node's masks into RUN/masks on each "
                        "evaluation round (eval, the default), only after the last round "
                        "(final), or not at all (off); `mcepl report` draws them")
    p.add_argument("--secure", action="store_true",
                   help="the default (kept for old scripts): CURVE keys for the run")
    p.add_argument("--force", action="store_true",
                   help="start the nodes even when their estimated memory exceeds what is free "
                        "(by default such a launch is refused, naming the largest node count "
                        "that fits)")
    _add_dashboard_flags(p)
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
    p.add_argument("--key", metavar="FILE",
                   help="the collector's CURVE secret key file (collector.key_secret, from "
                        "`mcepl topology keys`): only the nodes' keys may send metrics")
    p.add_argument("--insecure", action="store_true",
                   help="collect without keys (plaintext, unauthenticated); refused unless given")
    _add_dashboard_flags(p)
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

    _add_experiment_parser(sub)

    p = sub.add_parser("dashboard", help="a web page of finished (or running) runs",
                       description="Serve the dashboard of one or more run directories at "
                                   "http://127.0.0.1:PORT/: the graph, accuracy per round, "
                                   "accuracy against bytes (all runs side by side) and the "
                                   "per-node table. A run still being written is followed.")
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--port", type=_port, default=None,
                   help="port (default 8050, or the next free one; 0: any free port)")
    p.add_argument("--bind", default="127.0.0.1", metavar="HOST",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 opens it to other "
                        "machines)")
    p.add_argument("--speed", type=float, default=0.0, metavar="ROUNDS_PER_S",
                   help="replay the records at this many rounds per second (default 0: all at "
                        "once)")
    p.set_defaults(func=cmd_dashboard)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        load_plugins()  # MCEPL_PLUGINS: the user's own algorithms (and models, codecs, ...)
    except PluginError as exc:
        return _error(exc)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if not getattr(args, "func", None):
        if args.command is None and (argv if argv is not None else sys.argv[1:]) == []:
            parser.print_help()
            return 0
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
