"""Issue 14's check that every built-in method learns at its defaults: one table.

Every registered algorithm runs with nothing set but its name: the default config (Fashion-MNIST,
the small CNN, the default fixed weights, 4 labels per node, the method's default `lr` and other
parameters) on the default graph for 6 nodes (ER(0.5) from the run seed with the paper's retention
vector, 0.4 0.4 0.3 0.2 0.1 0.1; fedavg: the star it asks for, node 0 the server), 100 rounds,
in process, seed 0. Each node is tested on its own labels' test images, so a node that guesses
among its 4 labels scores 0.25 (chance); a method passes when its final mean accuracy is at least
twice that (`--factor`). Prints a markdown table (and with `--out` writes it); exits 1 if a
method does not pass.

    nice -n 10 python benchmarks/defaults_check.py --jobs 2 --out defaults-check.md
    python benchmarks/defaults_check.py --methods mcepl,dsgd --rounds 20
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import mcepl.node.plugins  # noqa: F401 - fills the registries
from mcepl.config import load_config
from mcepl.launcher.resolve import default_topology
from mcepl.node.inprocess import run_inprocess
from mcepl.registry import ALGORITHMS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", help="comma-separated algorithms (default: every registered one)")
    p.add_argument("--nodes", type=int, default=6)
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="directory with the data set files")
    p.add_argument("--factor", type=float, default=2.0,
                   help="pass: final mean accuracy >= factor x chance (default 2)")
    p.add_argument("--jobs", type=int, default=1, help="methods run at a time (processes)")
    p.add_argument("--out", help="also write the table (markdown) to this file")
    return p.parse_args(argv)


def run_one(method: str, nodes: int, rounds: int, eval_every: int, seed: int,
            data_dir: str | None) -> dict[str, Any]:
    """One method at its defaults; the numbers of its row."""
    data = {"root": data_dir} if data_dir else {}
    cfg = load_config(None).with_overrides(
        run={"rounds": rounds, "eval_every": eval_every, "seed": seed}, data=data,
        model={}, algorithm={"name": method})
    topo = default_topology(cfg, nodes, "tcp", method)
    t0 = time.perf_counter()
    res = run_inprocess(cfg, topo)
    wall = time.perf_counter() - t0
    evals = sorted({r["round"] for r in res.records if "test_acc" in r})
    accs = {k: res.mean_acc(k) for k in evals}
    best = max(evals, key=lambda k: accs[k])
    final = [r["test_acc"] for r in res.records if r["round"] == evals[-1] and "test_acc" in r]
    return {"method": method, "lr": cfg.algorithm.params.lr, "start": accs[evals[0]],
            "final": accs[evals[-1]], "best": accs[best], "best_round": best,
            "min_node": min(final), "wall_s": wall, "labels": cfg.data.labels_per_node,
            "init": cfg.model.weight_init, "edges": len(topo.edges)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    methods = args.methods.split(",") if args.methods else list(ALGORITHMS)
    unknown = [m for m in methods if m not in ALGORITHMS]
    if unknown:
        print(f"error: unknown method(s) {', '.join(unknown)}; valid: "
              f"{', '.join(ALGORITHMS)}", file=sys.stderr)
        return 2
    jobs = [(m, args.nodes, args.rounds, args.eval_every, args.seed, args.data_dir)
            for m in methods]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            rows = list(pool.map(run_one, *zip(*jobs, strict=True)))
    else:
        rows = [run_one(*job) for job in jobs]
    chance = 1.0 / rows[0]["labels"]
    bar = args.factor * chance
    lines = [f"| method | default lr | mean acc at round 0 | final mean acc | best (round) | "
             f"worst node, final | >= {bar:g} | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    failed = []
    for r in rows:
        ok = r["final"] >= bar
        if not ok:
            failed.append(r["method"])
        lines.append(f"| {r['method']} | {r['lr']:g} | {r['start']:.4f} | {r['final']:.4f} | "
                     f"{r['best']:.4f} ({r['best_round']}) | {r['min_node']:.4f} | "
                     f"{'yes' if ok else '**no**'} | {r['wall_s']:.0f} |")
    setting = (f"every method at its defaults: {args.nodes} nodes (default graph: ER(0.5), "
               f"fedavg a star), {rows[0]['labels']} labels per node (chance {chance:g}), "
               f"fixed weights {rows[0]['init']}, {args.rounds} rounds, seed {args.seed}, "
               f"in process, {args.jobs} at a time; pass: final mean accuracy >= "
               f"{args.factor:g} x chance")
    text = f"{setting}\n\n" + "\n".join(lines) + "\n"
    if failed:
        text += f"\nbelow {bar:g}: {', '.join(failed)}\n"
    if args.out:
        Path(args.out).write_text(text)
    print("\n" + text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
