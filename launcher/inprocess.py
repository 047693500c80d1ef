"""`mcepl launch --inprocess`: the in-process driver writing the same run directory as a
networked launch (config.toml, topology.json, metrics.jsonl, summary and plots)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mcepl.config import Config
from mcepl.launcher.collector import Observer
from mcepl.launcher.report import format_summary, write_report
from mcepl.launcher.rundir import RunDir
from mcepl.node.inprocess import run_inprocess
from mcepl.topology import Topology


def run_inprocess_to_dir(cfg: Config, topo: Topology, run_dir: str | Path,
                         quiet: bool = False, observer: Observer | None = None) -> dict[str, Any]:
    """Run every node in this process, writing `run_dir`; returns the summary. RunDirError
    when the directory already holds a run. ``observer`` gets each record as the collector's
    does ("record", node, record)."""
    rd = RunDir.create(run_dir, cfg, topo)

    with open(rd.metrics, "w", buffering=1) as out:
        def on_round(rnd: int, records: list[dict[str, Any]]) -> None:
            for r in records:
                out.write(json.dumps(r, sort_keys=True) + "\n")
                if observer is not None:
                    observer("record", r["node"], r)
            accs = [r["test_acc"] for r in records if r.get("test_acc") is not None]
            if accs and not quiet:
                print(f"round {rnd}/{cfg.run.rounds}: mean acc {sum(accs) / len(accs):.4f}",
                      flush=True)

        t0 = time.perf_counter()
        run_inprocess(cfg, topo, on_round=on_round)
    summary = write_report(rd.path, {"algorithm": cfg.algorithm.name, "model": cfg.model.name,
                                     "dataset": cfg.data.dataset, "driver": "inprocess",
                                     "wall_s": time.perf_counter() - t0, "status": "ok"})
    if not quiet:
        print(format_summary(summary))
        print(f"run directory: {rd.path}")
    return summary
