"""What the full `mcepl experiment` presets would cost on this machine, from a few measured rounds.

For every kind of run the presets contain (method x graph x node count x data, at full size: the
paper's 20-node graph and label files, train fraction 0.2; Fig. 4's 3 nodes with all their
images), run a few training rounds in process and take the median wall time of a round (no
evaluation in them); then time the evaluation of one node's test images and scale it to every
node's test set. A run then costs

    rounds x (s per round) + evaluations x (s per evaluation of all nodes' test sets)
    (+ the validation split, for a search run)

and a preset costs the sum over its runs: the learning-rate searches (one run per grid value,
seed 0) and the final runs (one per seed), as `mcepl experiment PRESET --plan` lists them. In
process, one run uses one core; `--jobs N` divides the wall time by up to N on N free cores.

    nice -n 10 python benchmarks/experiment_cost.py --model small-cnn --rounds 3
    nice -n 10 python benchmarks/experiment_cost.py --model alexnet --rounds 3 --out cost.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import mcepl.node.plugins  # noqa: F401 - fills the registries
from mcepl.launcher.experiment import PRESETS, Options, build_plan
from mcepl.launcher.experiment.plan import Plan, RunSpec
from mcepl.node import rounds as rounds_mod
from mcepl.node.evaluation import accuracy
from mcepl.node.factory import all_shards, build_algorithm
from mcepl.node.inprocess import run_inprocess


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="small-cnn")
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--rounds", type=int, default=3, help="training rounds measured per kind")
    p.add_argument("--seeds", type=int, default=3, help="seeds of the final runs")
    p.add_argument("--eval-images", type=int, default=400,
                   help="test images timed for the evaluation estimate")
    p.add_argument("--reference-dir", help="the paper's graph and label files")
    p.add_argument("--data-dir", help="directory with the data set files")
    p.add_argument("--out", help="also write the tables (markdown) here")
    return p.parse_args(argv)


def kind_of(spec: RunSpec) -> tuple:
    t = spec.topology
    return (spec.config.algorithm.name, t.meta.get("kind"), t.meta.get("p"), t.num_nodes,
            spec.config.data.train_fraction)


def seconds_per_round(spec: RunSpec, rounds: int) -> float:
    """Median wall time of a training round (rounds 1..R) of this run, in process, no
    evaluation."""
    cfg = spec.config.with_overrides(run={"rounds": rounds}, data={"val_fraction": 0.0})
    due = rounds_mod.Evaluator.due
    rounds_mod.Evaluator.due = lambda self, rnd: False  # type: ignore[method-assign]
    try:
        res = run_inprocess(cfg, spec.topology)
    finally:
        rounds_mod.Evaluator.due = due  # type: ignore[method-assign]
    ends = {r["round"]: r["t_end"] for r in res.records}
    return statistics.median(ends[k] - ends[k - 1] for k in range(1, rounds + 1))


def seconds_per_image(spec: RunSpec, images: int) -> tuple[float, list[int], list[int]]:
    """Evaluation time per test image (node 0's model), and every node's test and training
    set sizes (for the validation split)."""
    shards = all_shards(spec.config, spec.topology)
    algo = build_algorithm(spec.config, spec.topology, 0, shards[0])
    x, y = shards[0].test_x[:images], shards[0].test_y[:images]
    accuracy(algo.predict, x[:8], y[:8])  # warm-up
    t0 = time.perf_counter()
    accuracy(algo.predict, x, y, spec.config.run.eval_batch_size)
    per = (time.perf_counter() - t0) / len(y)
    return per, [len(s.test_y) for s in shards], [len(s.train_y) for s in shards]


def n_evals(rounds: int, every: int) -> int:
    return len({0, rounds, *range(every, rounds + 1, every)})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    measured: dict[tuple, float] = {}
    evals: dict[tuple, tuple[float, list[int], list[int]]] = {}
    kinds_md = ["| method | graph | nodes | s/round | measured in |", "|---|---|---|---|---|"]
    cost_md = ["| preset | runs | node-rounds | train h | eval h | total h (1 job) |",
               "|---|---|---|---|---|---|"]
    tmp = Path(tempfile.mkdtemp(prefix="mcepl-cost-"))
    for name in args.presets.split(","):
        plan: Plan = build_plan(Options(
            preset=name, out=tmp / name, model=args.model, seeds=args.seeds,
            reference_dir=Path(args.reference_dir) if args.reference_dir else None,
            data_dir=args.data_dir))
        train_s = eval_s = 0.0
        node_rounds = 0
        per_setting: dict[str, list[float]] = {}  # setting -> [runs, train s, eval s]
        for cell in plan.cells:
            spec = cell.searches[0] if cell.searches else plan.spec(cell, "final", 1.0, 0)
            key = kind_of(spec)
            if key not in measured:
                t0 = time.perf_counter()
                measured[key] = seconds_per_round(spec, args.rounds)
                kinds_md.append(f"| {key[0]} | {key[1]}{'' if key[2] is None else key[2]} | "
                                f"{key[3]} | {measured[key]:.3f} | {name} |")
                print(f"{name}: {key}: {measured[key]:.3f} s/round "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
            ekey = (key[3], key[4], cell.setting.key, name if name == "fig4" else "")
            if ekey not in evals:
                evals[ekey] = seconds_per_image(spec, args.eval_images)
            per_image, tests, trains = evals[ekey]
            test_s = per_image * sum(tests)
            val_s = per_image * sum(round(plan.opts.val_fraction * n) for n in trains)
            s_round = measured[key]
            ns = len(cell.searches)
            cell_train = s_round * (ns * plan.search_rounds + args.seeds * plan.rounds)
            cell_eval = (ns * n_evals(plan.search_rounds, plan.search_eval_every)
                         * (test_s + val_s)
                         + args.seeds * n_evals(plan.rounds, plan.eval_every) * test_s)
            train_s += cell_train
            eval_s += cell_eval
            node_rounds += key[3] * (ns * plan.search_rounds + args.seeds * plan.rounds)
            acc = per_setting.setdefault(cell.setting.key, [0, 0.0, 0.0])
            acc[0] += ns + args.seeds
            acc[1] += cell_train
            acc[2] += cell_eval
        cost_md.append(f"| {name} | {plan.total_runs} | {node_rounds:,} | {train_s / 3600:.1f} "
                       f"| {eval_s / 3600:.1f} | {(train_s + eval_s) / 3600:.1f} |")
        print(cost_md[-1], flush=True)
        if len(per_setting) > 1:
            for setting, (runs, tr, ev) in per_setting.items():
                cost_md.append(f"| {name} {setting} | {runs} | | {tr / 3600:.1f} | "
                               f"{ev / 3600:.1f} | {(tr + ev) / 3600:.1f} |")
    text = (f"model {args.model}, {args.rounds} measured rounds per kind, {args.seeds} seeds, "
            "default learning-rate grids, 400 rounds (search and final)\n\n"
            + "\n".join(kinds_md) + "\n\nEvaluation: "
            + "; ".join(f"{k[2]}{' ' + k[3] if k[3] else ''}: {v[0] * 1e3:.2f} ms per image, "
                        f"{sum(v[1])} test images" for k, v in evals.items())
            + "\n\n" + "\n".join(cost_md) + "\n")
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
