"""Which shared fixed weights `w` carry signal: statistics of the untrained networks per init.

For each model, weight init and retention r (the same r on every node), each node's
network exactly as its algorithm builds it before any training (ind-mask: the random mask
Thres(|z0|) over the node's fixed weights, the mask methods' start; ind-weipru: w pruned to r by
magnitude; dispfl: a uniformly random mask), evaluated on a seeded sample of the node's own test
images. Per (model, init, method, r): the fraction of a node's images given its most frequent
predicted class (mean and max over nodes, and how many nodes exceed 1/2), the input-dependent
logit spread (std over images, mean over classes) and the class-offset spread (std over classes of
the mean logit over images). The failure this guards against: an untrained sparse network whose
logits are its biases, so every image gets one class and training at a small rate never leaves.

Training runs per init: `benchmarks/sweep.py --inits ...`.

    python benchmarks/weight_init.py --adjacency paper-graph-20-nodes.adj \\
        --labels-file paper-labels-c4.txt
    python benchmarks/weight_init.py --models alexnet --max-nodes 6 --test-images 300 \\
        --retentions 0.1,0.3,0.5,1.0 --methods ind-mask,ind-weipru --labels-file ...
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from mcepl.config import Config, config_from_dict
from mcepl.node.factory import all_shards, build_algorithm
from mcepl.node.models import WEIGHT_INITS
from mcepl.topology import Topology, generate

INITS = ("default", "kaiming-normal", "kaiming-normal-scaled", "signed-constant",
         "signed-constant-scaled")
RETENTIONS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="small-cnn", help="comma-separated: small-cnn,alexnet")
    p.add_argument("--inits", default=",".join(INITS), help="comma-separated weight inits")
    p.add_argument("--retentions", default=",".join(map(str, RETENTIONS)),
                   help="comma-separated r (the same on every node)")
    p.add_argument("--methods", default="ind-mask,ind-weipru,dispfl",
                   help="comma-separated algorithms whose starting networks are measured")
    p.add_argument("--nodes", type=int, default=20, help="nodes (ignored with --adjacency)")
    p.add_argument("--max-nodes", type=int, default=None,
                   help="evaluate only the first N nodes (AlexNet is slow on a CPU)")
    p.add_argument("--test-images", type=int, default=1000,
                   help="images per node, a seeded sample of its test set")
    p.add_argument("--adjacency", help="0/1 adjacency-matrix file (e.g. the paper's graph)")
    p.add_argument("--labels-file", help="label assignment, one line per node")
    p.add_argument("--labels-per-node", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="directory with the data set files")
    p.add_argument("--out", help="also write the tables (markdown) to this file")
    return p.parse_args(argv)


def topology(args: argparse.Namespace, retention: float) -> Topology:
    if args.adjacency:
        return generate("adjacency", None, adjacency=args.adjacency, seed=args.seed,
                        retention=retention)
    return generate("er", args.nodes, p=0.5, seed=args.seed, retention=retention)


def config(args: argparse.Namespace, model: str, init: str, method: str) -> Config:
    data = {"labels_per_node": args.labels_per_node}
    if args.labels_file:
        data["labels_file"] = args.labels_file
    if args.data_dir:
        data["root"] = args.data_dir
    return config_from_dict({"data": data, "model": {"name": model, "weight_init": init},
                             "algorithm": {"name": method}, "run": {"seed": args.seed}},
                            source="<weight_init>")


def logit_stats(logits: torch.Tensor) -> tuple[float, float, float]:
    """(majority fraction, input-dependent spread, class-offset spread) of (images, classes)."""
    pred = logits.argmax(dim=1)
    majority = int(torch.bincount(pred, minlength=logits.shape[1]).max()) / len(pred)
    return majority, float(logits.std(dim=0).mean()), float(logits.mean(dim=0).std())


def untrained(args: argparse.Namespace) -> str:
    rs = [float(r) for r in args.retentions.split(",")]
    methods = args.methods.split(",")
    lines = ["| model | init | method | " + " | ".join(f"r={r:g}" for r in rs) + " |",
             "|---|---|---|" + "---|" * len(rs)]
    legend = ("cell: majority fraction mean / max over nodes, nodes above 1/2; input-dependent "
              "logit spread : class-offset spread (medians over nodes)")
    for model in args.models.split(","):
        shards = all_shards(config(args, model, "default", "ind-mask"), topology(args, 1.0))
        n = min(len(shards), args.max_nodes or len(shards))
        samples = []
        for i in range(n):
            g = torch.Generator().manual_seed(args.seed * 7919 + i)
            k = min(args.test_images, len(shards[i].test_y))
            samples.append(torch.randperm(len(shards[i].test_y), generator=g)[:k])
        bias = list(build_algorithm(config(args, model, "default", "ind-mask"),
                                    topology(args, 1.0), 0, shards[0]).ctx.model.module
                    .parameters())[-1]
        lines.append(f"| {model} | (std of the final layer's bias: {float(bias.std()):.3g}) |")
        for init in args.inits.split(","):
            for method in methods:
                cells = []
                for r in rs:
                    topo = topology(args, r)
                    cfg = config(args, model, init, method)
                    stats = []
                    for i in range(n):
                        algo = build_algorithm(cfg, topo, i, shards[i])
                        with torch.inference_mode():
                            logits = algo.predict(shards[i].test_x[samples[i]])
                        stats.append(logit_stats(logits))
                    maj = [s[0] for s in stats]
                    above = sum(m > 0.5 for m in maj)
                    cells.append(f"{statistics.mean(maj):.2f} / {max(maj):.2f}, {above}/{n}; "
                                 f"{statistics.median(s[1] for s in stats):.3g} : "
                                 f"{statistics.median(s[2] for s in stats):.3g}")
                lines.append(f"| {model} | {init} | {method} | " + " | ".join(cells) + " |")
                print(lines[-1], flush=True)
    return legend + "\n\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bad = [i for i in args.inits.split(",") if i not in WEIGHT_INITS]
    if bad:
        print(f"error: unknown init(s) {bad}; known: {', '.join(WEIGHT_INITS)}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    setting = (f"setting: {args.adjacency or f'ER(0.5), {args.nodes} nodes'}, labels "
               f"{args.labels_file or f'{args.labels_per_node} per node'}, seed {args.seed}")
    table = untrained(args)
    text = f"{setting}\n\n{table}\n"
    if args.out:
        Path(args.out).write_text(text)
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
