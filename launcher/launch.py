"""`mcepl launch`: start one node process per topology entry on this machine and gather metrics.

Creates the run directory (config.toml, topology.json, metrics.jsonl, summary.json, plots, logs/),
shows progress, stops every child on Ctrl-C or as soon as one fails, and exits non-zero with
that node's error.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mcepl.config import Config
from mcepl.launcher.collector import Collector, Observer
from mcepl.launcher.progress import Progress
from mcepl.launcher.report import format_summary, write_report
from mcepl.launcher.rundir import RunDir, RunDirError
from mcepl.node.data import DatasetError
from mcepl.node.factory import default_run_id, node_shard
from mcepl.node.threads import LOCAL_NODES_ENV, resolve_threads
from mcepl.topology import Topology
from mcepl.topology.keys import generate_keys, key_paths


class LaunchError(RuntimeError):
    """A node (or the launcher itself) failed; the message says which and why."""


@dataclass
class LaunchResult:
    run_dir: Path
    summary: dict
    wall_s: float


def node_command(i: int, run_dir: Path, collector: str, run_id: str,
                 key: Path | None = None) -> list[str]:
    rd = RunDir(Path(run_dir))
    return [sys.executable, "-m", "mcepl.node.main", "--topology", str(rd.topology),
            "--config", str(rd.config), "--id", str(i), "--collector", collector,
            "--run-id", run_id, "--checkpoint-dir", str(rd.checkpoints),
            *(["--key", str(key)] if key is not None else [])]


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if "error:" in ln]
    return (errors or lines or [""])[-1]


def _stop(procs: list[subprocess.Popen], grace_s: float = 5.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def preflight(cfg: Config, topo: Topology) -> None:
    """Find (or download, once) the data set and check the partition before starting N nodes,
    so a missing file is one clear error instead of N failing processes racing to download."""
    try:
        node_shard(cfg, topo, 0)
    except (DatasetError, ValueError, OSError) as exc:
        raise LaunchError(str(exc)) from None


def launch(cfg: Config, topo: Topology, run_dir: Path, *, quiet: bool = False,
           run_id: str | None = None, secure: bool = False,
           observer: Observer | None = None) -> LaunchResult:
    """Run the whole network locally; returns the summary, raises LaunchError on a node failure.

    ``secure``: a fresh CURVE key pair per node in ``run_dir/keys`` (secret files 0600), public
    keys in the run's topology.json, each node given its secret key (``--key``).
    ``observer`` (e.g. the dashboard) gets what the collector gets, and ("failed", i,
    {"reason"}) when node i's process ends with an error."""
    if topo.secure and not secure:
        raise LaunchError("the topology has CURVE public keys, but a local launch only knows the "
                          "secret keys it makes itself: pass --secure (fresh keys in "
                          f"{Path(run_dir) / 'keys'}) or remove the public_key entries")
    try:
        rd = RunDir.create(run_dir, cfg, logs=True)
    except RunDirError as exc:
        raise LaunchError(str(exc)) from None
    run_dir = rd.path
    if secure:
        topo = generate_keys(topo, rd.keys)
    rd.write_topology(topo)
    run_id = run_id or default_run_id(cfg, topo)
    preflight(cfg, topo)
    collector = Collector(run_dir, run_id, topo.num_nodes, observer=observer)
    threads = resolve_threads(cfg.run.threads_per_node, topo.num_nodes)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads),
           LOCAL_NODES_ENV: str(topo.num_nodes)}
    procs: list[subprocess.Popen] = []
    logs = []
    t0 = time.perf_counter()
    progress = Progress(cfg.run.rounds, topo.num_nodes, enabled=not quiet)
    failure: str | None = None
    try:
        for n in topo.nodes:
            log = open(rd.node_log(n.id), "w")  # noqa: SIM115
            logs.append(log)
            key = key_paths(rd.keys, n.id)[1] if secure else None
            procs.append(subprocess.Popen(node_command(n.id, run_dir, collector.address, run_id,
                                                       key),
                                          stdout=log, stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True))
        with progress:
            while True:
                collector.poll(200)
                progress.update(collector.state)
                failed = collector.state.failures()
                codes = [p.poll() for p in procs]
                bad = [i for i, c in enumerate(codes) if c not in (None, 0)]
                if failed or bad:
                    i = min(failed) if failed else bad[0]
                    why = failed.get(i) or _last_line(rd.node_log(i))
                    code = codes[i]
                    failure = (f"node {i} failed" + (f" (exit {code})" if code else "")
                               + f": {why}  [log: {rd.node_log(i)}]")
                    if observer is not None:
                        observer("failed", i, {"reason": failure})
                    break
                if all(c == 0 for c in codes):
                    deadline = time.monotonic() + 5.0
                    while not collector.state.all_done() and time.monotonic() < deadline:
                        collector.poll(200)
                    progress.update(collector.state)
                    break
    except KeyboardInterrupt:
        failure = "interrupted (Ctrl-C); metrics received so far are in metrics.jsonl"
    finally:
        _stop(procs)
        collector.poll(100)
        collector.close()
        for log in logs:
            log.close()
    wall = time.perf_counter() - t0
    extra = {"algorithm": cfg.algorithm.name, "wall_s": wall, "run_id": run_id,
             "model": cfg.model.name, "dataset": cfg.data.dataset, "status": failure or "ok"}
    summary = write_report(run_dir, extra) if rd.metrics.stat().st_size else {}
    if failure:
        raise LaunchError(failure)
    if not quiet:
        print(format_summary(summary))
        print(f"run directory: {run_dir}")
    return LaunchResult(run_dir, summary, wall)
