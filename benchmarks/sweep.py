"""Short in-process runs of methods with chosen hyper-parameters, per fixed-weight init: one table.

Each `METHOD` is an algorithm name followed by `:key=value` pairs of its parameters, e.g.
`dsgd-prox:mu=0.1`, `ind-weipru:lr=0.1`. Every method runs once per `--inits` entry on the same
data, graph and seed. The retention is the paper's heterogeneous vector by default, or one value
for every node (`--retention 0.3`, the paper's Table I). fedavg runs on a star at node 0 over the
same shards. Prints (and with `--out` writes) a markdown table: final and best mean accuracy over
the evaluation rounds, and the wall time of the run.

    python benchmarks/sweep.py dsgd-prox:mu=0.001 dsgd-prox:mu=0.01 dsgd-prox:mu=0.1 \\
        dsgd-prox:mu=1 --adjacency paper-graph-20-nodes.adj --labels-file paper-labels-c3.txt \\
        --rounds 300
    python benchmarks/sweep.py mcepl ind-weipru:lr=0.1 --inits default,kaiming-normal-scaled
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from mcepl.config import Config, ConfigError, config_from_dict
from mcepl.node.inprocess import run_inprocess
from mcepl.node.models import DEFAULT_WEIGHT_INIT
from mcepl.topology import PAPER_RETENTION, Topology, generate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("methods", nargs="+", metavar="METHOD",
                   help="algorithm[:key=value...], e.g. dsgd-prox:mu=0.1:lr=0.01")
    p.add_argument("--inits", default=DEFAULT_WEIGHT_INIT, help="comma-separated weight inits")
    p.add_argument("--model", default="small-cnn")
    p.add_argument("--nodes", type=int, default=20, help="nodes (ignored with --adjacency)")
    p.add_argument("--adjacency", help="0/1 adjacency-matrix file (e.g. the paper's graph)")
    p.add_argument("--labels-file", help="label assignment, one line per node")
    p.add_argument("--labels-per-node", type=int, default=4)
    p.add_argument("--retention", type=float, default=None,
                   help="one r for every node (default: the paper's heterogeneous vector)")
    p.add_argument("--train-fraction", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=150)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="directory with the data set files")
    p.add_argument("--out", help="also write the table (markdown) to this file")
    return p.parse_args(argv)


def parse_method(spec: str) -> tuple[str, dict[str, Any]]:
    """'dsgd-prox:mu=0.1:lr=0.01' -> ('dsgd-prox', {'mu': 0.1, 'lr': 0.01})."""
    name, *pairs = spec.split(":")
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"{spec!r}: expected key=value after ':', got {pair!r}")
        try:
            params[key] = int(value) if value.isdigit() else float(value)
        except ValueError:
            params[key] = value
    return name, params


def topology(args: argparse.Namespace, method: str) -> Topology:
    n = (generate("adjacency", None, adjacency=args.adjacency, seed=args.seed).num_nodes
         if args.adjacency else args.nodes)
    retention = (args.retention if args.retention is not None
                 else [PAPER_RETENTION[i % len(PAPER_RETENTION)] for i in range(n)])
    if method == "fedavg":
        return generate("star", n, seed=args.seed, retention=retention)
    if args.adjacency:
        return generate("adjacency", None, adjacency=args.adjacency, seed=args.seed,
                        retention=retention)
    return generate("er", n, p=0.5, seed=args.seed, retention=retention)


def config(args: argparse.Namespace, init: str, method: str, params: dict[str, Any]) -> Config:
    data: dict[str, Any] = {"labels_per_node": args.labels_per_node,
                            "train_fraction": args.train_fraction}
    if args.labels_file:
        data["labels_file"] = args.labels_file
    if args.data_dir:
        data["root"] = args.data_dir
    return config_from_dict({"data": data, "model": {"name": args.model, "weight_init": init},
                             "algorithm": {"name": method, **params},
                             "run": {"rounds": args.rounds, "eval_every": args.eval_every,
                                     "seed": args.seed}}, source="<sweep>")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        runs = [(spec, *parse_method(spec)) for spec in args.methods]
        inits = args.inits.split(",")
        for _spec, method, params in runs:  # every config is checked before anything runs
            for init in inits:
                config(args, init, method, params)
    except (ValueError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lines = ["| method | init | lr | final mean acc | best mean acc (round) | final mean acc by r "
             "| wall s |", "|---|---|---|---|---|---|---|"]
    for spec, method, params in runs:
        for init in inits:
            cfg = config(args, init, method, params)
            t0 = time.perf_counter()
            topo = topology(args, method)
            res = run_inprocess(cfg, topo)
            wall = time.perf_counter() - t0
            evals = sorted({r["round"] for r in res.records if "test_acc" in r})
            accs = {k: res.mean_acc(k) for k in evals}
            best = max(evals, key=lambda k: accs[k])
            by_r: dict[float, list[float]] = {}
            for rec in res.records:
                if rec["round"] == evals[-1]:
                    by_r.setdefault(topo.node(rec["node"]).retention, []).append(rec["test_acc"])
            per_r = ", ".join(f"{r:g}: {sum(v) / len(v):.3f}" for r, v in sorted(by_r.items()))
            lines.append(f"| {spec} | {init} | {cfg.algorithm.params['lr']:g} | "
                         f"{accs[evals[-1]]:.4f} | {accs[best]:.4f} ({best}) | {per_r} | "
                         f"{wall:.0f} |")
            print(lines[-1], flush=True)
    setting = (f"setting: {args.model}, {args.adjacency or f'ER(0.5), {args.nodes} nodes'}, "
               f"labels {args.labels_file or f'{args.labels_per_node} per node'}, retention "
               f"{args.retention if args.retention is not None else 'paper vector'}, "
               f"{args.rounds} rounds, train fraction {args.train_fraction}, seed {args.seed}")
    text = f"{setting}\n\n" + "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
