"""Compare MCE-PL, ind-mask and every baseline on one setting, in-process, and tabulate them.

The paper's Table I/II setting on the offline stand-in: Fashion-MNIST, 20 nodes, ER(0.5) (or the
paper's own graph with `--adjacency`), 4 labels per node, the paper's heterogeneous retention
vector, the same number of iterations for every method, each at its paper learning rate (its
`Params` defaults). fedavg runs on a star with the server at node 0 over the same 20 shards.

One run directory per method under `--out` (the same files as `mcepl launch --inprocess`), and
a markdown table (printed and written to `<out>/table.md`): final and best mean accuracy, bytes
sent per node per round (mean over rounds >= 1) and that cost relative to mcepl's.

    python benchmarks/compare_baselines.py --rounds 300 --eval-every 25 --out runs/compare
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mcepl.config import config_from_dict
from mcepl.launcher.inprocess import run_inprocess_to_dir
from mcepl.node.algorithms import ALGORITHMS
from mcepl.topology import PAPER_RETENTION, Topology, generate

DEFAULT_METHODS = ("mcepl", "ind-mask", "dsgd", "fedavg", "dsgd-prox", "lottery-dsgd",
                   "ind-weipru", "avr-weipru", "par-weipru", "dispfl")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=300, help="iterations for every method")
    p.add_argument("--eval-every", type=int, default=25, help="evaluate every N rounds")
    p.add_argument("--model", default="small-cnn", help="small-cnn or alexnet")
    p.add_argument("--train-fraction", type=float, default=1.0,
                   help="fraction of each node's training share used")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help="comma-separated subset (default: all)")
    p.add_argument("--nodes", type=int, default=20, help="nodes (ignored with --adjacency)")
    p.add_argument("--labels-per-node", type=int, default=4)
    p.add_argument("--adjacency", help="0/1 adjacency-matrix file, e.g. the paper's 20-node graph")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="directory with the data set files")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=f"runs/compare-baselines-{time.strftime('%Y%m%d-%H%M%S')}")
    p.add_argument("--reuse", action="store_true",
                   help="take a method's numbers from an existing run directory under --out")
    return p.parse_args(argv)


def topology_for(method: str, args: argparse.Namespace) -> Topology:
    """ER(0.5) (or the given graph) with the paper's retention; a star at 0 for fedavg."""
    if args.adjacency:
        base = generate("adjacency", None, adjacency=args.adjacency, seed=args.seed)
        n = base.num_nodes
    else:
        n, base = args.nodes, None
    retention = [PAPER_RETENTION[i % len(PAPER_RETENTION)] for i in range(n)]
    if method == "fedavg":
        return generate("star", n, seed=args.seed, retention=retention)
    if base is not None:
        return generate("adjacency", None, adjacency=args.adjacency, seed=args.seed,
                        retention=retention)
    return generate("er", n, p=0.5, seed=args.seed, retention=retention)


def run_method(method: str, args: argparse.Namespace, out: Path) -> dict:
    run_dir = out / method
    if args.reuse and (run_dir / "summary.json").exists():
        return json.loads((run_dir / "summary.json").read_text())
    data = {"train_fraction": args.train_fraction, "labels_per_node": args.labels_per_node}
    if args.data_dir:
        data["root"] = args.data_dir
    cfg = config_from_dict({
        "data": data,
        "model": {"name": args.model},
        "algorithm": {"name": method},
        "run": {"rounds": args.rounds, "eval_every": args.eval_every, "seed": args.seed,
                "device": args.device},
    }, source="<compare_baselines>")
    return run_inprocess_to_dir(cfg, topology_for(method, args), run_dir, quiet=True)


def markdown_table(rows: list[dict], ref_bytes: float | None) -> str:
    lines = ["| method | final mean acc | best mean acc (round) | bytes/node/round | vs mcepl | "
             "wall s |", "|---|---|---|---|---|---|"]
    for r in rows:
        b = r["bytes_per_node_per_round"]
        ratio = f"{b / ref_bytes:.1f}x" if ref_bytes else "n/a"
        lines.append(f"| {r['method']} | {r['final_mean_acc']:.4f} | {r['best_mean_acc']:.4f} "
                     f"({r['best_round']}) | {b:,.0f} | {ratio} | {r.get('wall_s', 0):.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in ALGORITHMS]
    if unknown:
        print(f"error: unknown method(s) {unknown}; known: {', '.join(ALGORITHMS)}",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for m in methods:
        t0 = time.perf_counter()
        s = run_method(m, args, out)
        rows.append({"method": m, **s})
        print(f"{m}: final {s['final_mean_acc']:.4f}, best {s['best_mean_acc']:.4f}, "
              f"{s['bytes_per_node_per_round']:,.0f} B/node/round "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    ref = next((r["bytes_per_node_per_round"] for r in rows if r["method"] == "mcepl"), None)
    table = markdown_table(rows, ref)
    setting = (f"{args.model}, {rows[0]['nodes'] if rows else args.nodes} nodes, "
               f"{'graph ' + args.adjacency if args.adjacency else 'ER(0.5)'}, "
               f"{args.labels_per_node} labels/node, {args.rounds} rounds, "
               f"train fraction {args.train_fraction}, seed {args.seed}")
    text = f"Setting: {setting}\n\n{table}\n"
    (out / "table.md").write_text(text)
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
