"""The cost of processes and sockets: time per round of a networked run against the in-process
driver on the same config, measured side by side in one invocation.

Time per round = median over rounds k of (the moment the last node finished round k) minus (the
moment the last node finished round k-1), from the `t_end` stamps of metrics.jsonl. Evaluation
runs only at round 0 and the last round, which are excluded.

    python benchmarks/launch_overhead.py --nodes 20 --rounds 60 --out runs/overhead
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

from mcepl.config import load_config
from mcepl.launcher.inprocess import run_inprocess_to_dir
from mcepl.launcher.launch import launch
from mcepl.launcher.report import read_metrics
from mcepl.launcher.resolve import default_topology


def round_times(records: list[dict]) -> list[float]:
    done: dict[int, float] = defaultdict(float)
    for r in records:
        done[r["round"]] = max(done[r["round"]], r["t_end"])
    last = max(done)
    return [done[k] - done[k - 1] for k in range(2, last)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--algorithm", default="mcepl")
    ap.add_argument("--model", default="small-cnn")
    ap.add_argument("--transport", default="tcp", choices=["tcp", "ipc"])
    ap.add_argument("--out", default="runs/overhead")
    args = ap.parse_args()
    out = Path(args.out)
    cfg = load_config(None).with_overrides(
        run={"rounds": args.rounds, "eval_every": args.rounds}, model={"name": args.model},
        algorithm={"name": args.algorithm})
    topo = default_topology(cfg, args.nodes, args.transport, args.algorithm)

    net = launch(cfg, topo, out / "networked", quiet=True, auto_ports=True)
    inproc = run_inprocess_to_dir(cfg, topo, out / "inprocess", quiet=True)
    t_net = round_times(read_metrics(out / "networked"))
    t_in = round_times(read_metrics(out / "inprocess"))
    res = {
        "nodes": args.nodes, "rounds": args.rounds, "model": args.model,
        "transport": args.transport,
        "networked_round_s_median": statistics.median(t_net),
        "inprocess_round_s_median": statistics.median(t_in),
        "ratio_networked_over_inprocess": statistics.median(t_net) / statistics.median(t_in),
        "networked_wall_s": net.wall_s, "inprocess_wall_s": inproc["wall_s"],
        "same_final_accuracy": net.summary["final_mean_acc"] == inproc["final_mean_acc"],
    }
    print(json.dumps(res, indent=2))
    (out / "overhead.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
