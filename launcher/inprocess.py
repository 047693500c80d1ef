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


def run_inprocess_to_dir(cfg: Config, topo: Topology, run_dir: str | Path | RunDir,
                         quiet: bool = False, observer: Observer | None = None,
                         mask_snapshots: str = "eval") -> dict[str, Any]:
    """Run every node in this process, writing `run_dir` (a path, or a RunDir already
    claimed); returns the summary. RunDirError when the directory already holds a run.
    ``observer`` gets each record as the collector's does ("record", node, record). Files are
    written only once every node is built; when building fails (e.g. a user model or data set
    that does not fit: UserCodeError) a claimed directory is given back (`RunDir.abandon`).
    ``mask_snapshots``: when the nodes of a mask method write their masks into
    ``run_dir/masks`` ("eval", "final" or "off")."""
    holder: dict[str, Any] = {}

    def on_ready() -> None:
        holder["rd"] = rd = RunDir.create(run_dir, cfg, topo)
        holder["out"] = open(rd.metrics, "w", buffering=1)  # noqa: SIM115 - closed below

    def on_round(rnd: int, records: list[dict[str, Any]]) -> None:
        for r in records:
            holder["out"].write(json.dumps(r, sort_keys=True) + "\n")
            if observer is not None:
                observer("record", r["node"], r)
        accs = [r["test_acc"] for r in records if r.get("test_acc") is not None]
        if accs and not quiet:
            print(f"round {rnd}/{cfg.run.rounds}: mean acc {sum(accs) / len(accs):.4f}",
                  flush=True)

    # the snapshot files are written from round 0 on, after on_ready has created the directory
    masks_dir = Path(run_dir.path if isinstance(run_dir, RunDir) else run_dir) / "masks"
    t0 = time.perf_counter()
    try:
        run_inprocess(cfg, topo, on_round=on_round, on_ready=on_ready,
                      masks_dir=None if mask_snapshots == "off" else masks_dir,
                      mask_snapshots=mask_snapshots if mask_snapshots != "off" else "eval")
    except BaseException:
        if "rd" not in holder and isinstance(run_dir, RunDir):
            run_dir.abandon()  # nothing ran: the same --out can be used again
        raise
    finally:
        if "out" in holder:
            holder["out"].close()
    rd = holder["rd"]
    summary = write_report(rd.path, {"algorithm": cfg.algorithm.name, "model": cfg.model.name,
                                     "dataset": cfg.data.dataset, "driver": "inprocess",
                                     "wall_s": time.perf_counter() - t0, "status": "ok"})
    if not quiet:
        print(format_summary(summary))
        print(f"run directory: {rd.path}")
    return summary
