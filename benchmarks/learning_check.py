"""Issue 2's learning check: MCE-PL against ind-mask on real Fashion-MNIST, in-process driver.

20 nodes, 4 labels each, ER(0.5) neighbours, the paper's heterogeneous retention vector.
Prints the mean accuracy (over nodes, each on its own test set) per evaluation and the wall time
of each method, writes one run directory per method and comparison plots under --out.

    python benchmarks/learning_check.py --rounds 300 --eval-every 25 --out runs/learning-check
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mcepl.config import load_config
from mcepl.launcher.inprocess import run_inprocess_to_dir
from mcepl.launcher.report import plot_accuracy, plot_accuracy_vs_bytes, read_metrics
from mcepl.launcher.resolve import default_topology
from mcepl.topology import generate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--model", default="small-cnn")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-fraction", type=float, default=1.0)
    ap.add_argument("--adjacency", help="use this adjacency file (e.g. the paper's graph)")
    ap.add_argument("--methods", nargs="+", default=["mcepl", "ind-mask"])
    ap.add_argument("--out", default="runs/learning-check")
    args = ap.parse_args()

    out = Path(args.out)
    summaries, runs = {}, {}
    for method in args.methods:
        cfg = load_config(None).with_overrides(
            run={"rounds": args.rounds, "eval_every": args.eval_every, "seed": args.seed},
            model={"name": args.model}, data={"train_fraction": args.train_fraction},
            algorithm={"name": method})
        if args.adjacency:
            topo = generate("adjacency", None, adjacency=args.adjacency)
        else:
            topo = default_topology(cfg, args.nodes, "tcp", method)
        print(f"== {method}: {topo.num_nodes} nodes, {len(topo.edges)} edges, {args.model}, "
              f"{args.rounds} rounds", flush=True)
        summaries[method] = run_inprocess_to_dir(cfg, topo, out / method, quiet=False)
        runs[method] = read_metrics(out / method)
    plot_accuracy(runs, out / "accuracy.png")
    plot_accuracy_vs_bytes(runs, out / "accuracy_vs_bytes.png")

    rounds = [c["round"] for c in summaries[args.methods[0]]["accuracy_curve"]]
    print("\n| round | " + " | ".join(args.methods) + " |")
    print("|---|" + "---|" * len(args.methods))
    for i, k in enumerate(rounds):
        row = [f"{summaries[m]['accuracy_curve'][i]['mean_acc']:.4f}" for m in args.methods]
        print(f"| {k} | " + " | ".join(row) + " |")
    print("| wall s | " + " | ".join(f"{summaries[m]['wall_s']:.0f}" for m in args.methods) + " |")
    (out / "learning_check.json").write_text(json.dumps(summaries, indent=2))


if __name__ == "__main__":
    main()
