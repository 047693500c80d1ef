"""Running an experiment's runs: in this process or as `mcepl launch` subprocesses, `jobs` at
a time, skipping complete run directories and redoing half-written ones, with one progress line
per finished run.

A run directory is *complete* when its summary.json says status ok, metrics.jsonl holds a record
of every node for every round (and, for a search run, every node's validation accuracy at the
last round), and its config.toml is the one planned. Anything else that exists is half-written
(a run interrupted by Ctrl-C, SIGTERM, a crash): it is deleted and run again, never counted.
A complete directory whose config differs from the plan (another version's defaults, a hand
edit) is an error: nothing already computed is thrown away silently.

Runs go in table order: a cell's search runs, then, once they are all done, its final runs at
the chosen learning rate. Ctrl-C or SIGTERM stops every running run (their directories are
half-written, so the next invocation redoes exactly those) and exits 130.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mcepl.config import dump_toml
from mcepl.topology import save_topology

from .plan import Cell, ExperimentError, Plan, RunSpec, lr_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


# ---------------------------------------------------------------- run directories
def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl as dicts; unreadable lines (a torn last line) are skipped."""
    out = []
    try:
        text = (run_dir / "metrics.jsonl").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(d, dict) and isinstance(d.get("round"), int) \
                and isinstance(d.get("node"), int):
            out.append(d)
    return out


def same_config(run_dir: Path, spec: RunSpec) -> str | None:
    """None when run_dir/config.toml is the planned config, else the first key that differs."""
    try:
        have = tomllib.loads((run_dir / "config.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return "config.toml unreadable"
    want = tomllib.loads(dump_toml(spec.config))
    for section in sorted(set(have) | set(want)):
        a, b = have.get(section, {}), want.get(section, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return f"{section}.{key}: {a.get(key)!r} there, {b.get(key)!r} planned"
    return None


def run_state(spec: RunSpec) -> str:
    """"missing", "complete" or "partial"; ExperimentError for a complete run of another
    config."""
    d = spec.path
    if not d.exists():
        return "missing"
    try:
        summary = json.loads((d / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return "partial"
    if summary.get("status") != "ok":
        return "partial"
    n, rounds = spec.topology.num_nodes, spec.config.run.rounds
    records = read_records(d)
    seen = {(r["node"], r["round"]) for r in records}
    if any((i, k) not in seen for i in range(n) for k in range(rounds + 1)):
        return "partial"
    if spec.kind == "search":
        last = {r["node"]: r for r in records if r["round"] == rounds}
        if any(not isinstance(last[i].get("val_acc"), (int, float)) for i in range(n)):
            return "partial"
    diff = same_config(d, spec)
    if diff is not None:
        raise ExperimentError(f"{d} holds a complete run of another config ({diff}); move it "
                              "away or choose another --out")
    return "complete"


def mean_at(records: list[dict[str, Any]], key: str, rnd: int) -> float | None:
    vals = [r[key] for r in records if r["round"] == rnd and isinstance(r.get(key), (int, float))]
    return sum(vals) / len(vals) if vals else None


def search_score(spec: RunSpec) -> tuple[float, float]:
    """(final, best) mean validation accuracy of a complete search run (NaN when missing)."""
    records = read_records(spec.path)
    rounds = sorted({r["round"] for r in records if isinstance(r.get("val_acc"), (int, float))})
    curve = [mean_at(records, "val_acc", k) for k in rounds]
    vals = [v for v in curve if v is not None and math.isfinite(v)]
    if not vals:
        return math.nan, math.nan
    return (curve[-1] if curve[-1] is not None else math.nan), max(vals)


def choose_lr(cell: Cell, scores: dict[float, tuple[float, float]]) -> float:
    """The grid rate with the highest final mean validation accuracy (ties: the higher best,
    then the earlier in the grid); NaN scores never win."""
    def key(i_lr: tuple[int, float]) -> tuple[float, float, int]:
        i, lr = i_lr
        final, best = scores.get(lr, (math.nan, math.nan))
        return (final if math.isfinite(final) else -1.0,
                best if math.isfinite(best) else -1.0, -i)
    return max(enumerate(cell.grid), key=key)[1]


def run_summary(spec: RunSpec) -> dict[str, Any]:
    try:
        return json.loads((spec.path / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


# ---------------------------------------------------------------- executors
@dataclass
class Finished:
    spec: RunSpec
    ok: bool
    error: str = ""
    wall_s: float = 0.0


class InParent:
    """Runs one run at a time in this process (the in-process driver; the default, jobs 1)."""

    def __init__(self) -> None:
        self.done: list[Finished] = []

    def free(self) -> bool:
        return True

    def submit(self, spec: RunSpec) -> None:
        from mcepl.launcher.inprocess import run_inprocess_to_dir

        t0 = time.perf_counter()
        try:
            run_inprocess_to_dir(spec.config, spec.topology, spec.path, quiet=True,
                                 mask_snapshots=spec.snapshots)
            self.done.append(Finished(spec, True, wall_s=time.perf_counter() - t0))
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - one failed run must not end the others
            spec.path.mkdir(parents=True, exist_ok=True)
            (spec.path / "error.log").write_text(traceback.format_exc())
            self.done.append(Finished(spec, False, f"{type(exc).__name__}: {exc}",
                                      time.perf_counter() - t0))

    def poll(self) -> list[Finished]:
        out, self.done = self.done, []
        return out

    def running(self) -> int:
        return 0

    def stop(self) -> None:
        pass


class Subprocesses:
    """Runs each run as `mcepl launch` (networked, or --inprocess), up to `jobs` at a time, each
    in its own session, interrupted when this process dies (`child.py`)."""

    def __init__(self, jobs: int, networked: bool) -> None:
        self.jobs, self.networked = jobs, networked
        self.procs: dict[subprocess.Popen, tuple[RunSpec, float, IO[str]]] = {}

    def free(self) -> bool:
        return len(self.procs) < self.jobs

    def submit(self, spec: RunSpec) -> None:
        spec.path.mkdir(parents=True, exist_ok=True)
        (spec.path / "config.toml").write_text(dump_toml(spec.config))
        save_topology(spec.topology, spec.path / "topology.json")
        cmd = [sys.executable, "-m", "mcepl.launcher.experiment.child", str(os.getpid()),
               "launch", "--quiet",
               "--config", str(spec.path / "config.toml"),
               "--topology", str(spec.path / "topology.json"), "--out", str(spec.path),
               "--mask-snapshots", spec.snapshots]
        # networked: the launcher picks and holds free ports itself (--transport tcp), so runs
        # at once never collide; links are encrypted as by default
        cmd += ["--transport", "tcp"] if self.networked else ["--inprocess"]
        log = open(spec.path / "launch.log", "w")  # noqa: SIM115 - closed when it ends
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.procs[proc] = (spec, time.perf_counter(), log)

    def poll(self) -> list[Finished]:
        out = []
        for proc in list(self.procs):
            code = proc.poll()
            if code is None:
                continue
            spec, t0, log = self.procs.pop(proc)
            log.close()
            err = "" if code == 0 else f"exit {code}: {last_line(spec.path / 'launch.log')}"
            out.append(Finished(spec, code == 0, err, time.perf_counter() - t0))
        return out

    def running(self) -> int:
        return len(self.procs)

    def stop(self) -> None:
        """SIGINT to every run's process group (launch stops its nodes), SIGKILL after 10 s."""
        for proc in self.procs:
            _signal_group(proc, signal.SIGINT)
        deadline = time.monotonic() + 10.0
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        for _spec, _t0, log in self.procs.values():
            log.close()
        self.procs.clear()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or ["(no output)"])[-1][:300]


# ---------------------------------------------------------------- the scheduler
def fmt_duration(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


@dataclass
class Progress:
    """Counts and the ETA: the remaining node-rounds at this session's observed pace."""

    total: int
    out: Callable[[str], None]
    done: int = 0
    t0: float = field(default_factory=time.perf_counter)
    node_rounds_done: int = 0
    remaining_node_rounds: int = 0

    def eta(self) -> float:
        if not self.node_rounds_done:
            return math.nan
        pace = (time.perf_counter() - self.t0) / self.node_rounds_done
        return pace * self.remaining_node_rounds


class Scheduler:
    """Runs a plan's runs in table order through an executor; returns a process exit code."""

    def __init__(self, plan: Plan, write: Callable[[str], None] | None = None) -> None:
        self.plan = plan
        self.write = write or (lambda s: print(s, flush=True))
        opts = plan.opts
        self.executor: InParent | Subprocesses = (
            InParent() if opts.jobs == 1 and not opts.networked
            else Subprocesses(opts.jobs, opts.networked))
        self.queue: list[tuple[int, int, int, RunSpec]] = []
        self.seq = 0
        self.pending_search: dict[int, set[float]] = {}
        self.chosen: dict[int, float] = {}
        self.failed: list[Finished] = []
        self.skipped = 0
        self.announced = False  # the "resuming" line, before the first run that runs
        self.progress = Progress(plan.total_runs, self.write)

    # the queue: (cell index, 0 search / 1 final, order) -> table order, searches first
    def _push(self, idx: int, spec: RunSpec) -> None:
        heapq.heappush(self.queue, (idx, 0 if spec.kind == "search" else 1, self.seq, spec))
        self.seq += 1

    def _enqueue_finals(self, idx: int, cell: Cell, lr: float) -> None:
        self.chosen[idx] = lr
        for spec in cell.finals(lr):
            self._push(idx, spec)

    def start(self) -> None:
        plan = self.plan
        estimate = 0
        for idx, cell in enumerate(plan.cells):
            n = cell.setting.edges_topology.num_nodes
            estimate += n * (plan.search_rounds * len(cell.searches)
                             + plan.rounds * plan.opts.seeds)
            if cell.searches:
                self.pending_search[idx] = {s.lr for s in cell.searches}
                for spec in cell.searches:
                    self._push(idx, spec)
            else:
                self._enqueue_finals(idx, cell, cell.grid[0])
        self.progress.remaining_node_rounds = estimate

    def _cell_of(self, spec: RunSpec) -> tuple[int, Cell]:
        for idx, cell in enumerate(self.plan.cells):
            if cell.key == (spec.setting, spec.row):
                return idx, cell
        raise KeyError(spec.name)

    def _finished(self, spec: RunSpec, skipped: bool, wall_s: float = 0.0) -> None:
        p = self.progress
        p.done += 1
        p.remaining_node_rounds = max(0, p.remaining_node_rounds - spec.node_rounds)
        if skipped:
            self.skipped += 1
        else:
            p.node_rounds_done += spec.node_rounds
            self.write(f"[{p.done}/{p.total}] {spec.name}: {self._numbers(spec)} | "
                       f"{fmt_duration(wall_s)} | ETA {fmt_duration(p.eta())}")
        idx, cell = self._cell_of(spec)
        left = self.pending_search.get(idx)
        if spec.kind == "search" and left is not None:  # None: a search of the cell failed
            left.discard(spec.lr)
            if not left:
                self._choose(idx, cell)

    def _choose(self, idx: int, cell: Cell) -> None:
        scores = {s.lr: search_score(s) for s in cell.searches}
        lr = choose_lr(cell, scores)
        grid = ", ".join(f"{lr_text(k)}: {v[0]:.4f}" for k, v in scores.items())
        self.write(f"{cell.setting.key} | {cell.row.label}: chose lr={lr_text(lr)} "
                   f"(final mean validation accuracy {grid})")
        self._enqueue_finals(idx, cell, lr)

    def _numbers(self, spec: RunSpec) -> str:
        if spec.kind == "search":
            final, best = search_score(spec)
            return f"validation acc {final:.4f} (best {best:.4f})"
        s = run_summary(spec)
        f, b = s.get("final_mean_acc"), s.get("best_mean_acc")
        if not isinstance(f, (int, float)) or not isinstance(b, (int, float)):
            return "no accuracy"
        return f"test acc {f:.4f} (best {b:.4f})"

    def run(self) -> int:
        """Everything to its end; KeyboardInterrupt (Ctrl-C, SIGTERM) after stopping the runs."""
        self.start()
        try:
            while self.queue or self.executor.running():
                while self.queue and self.executor.free():
                    spec = heapq.heappop(self.queue)[3]
                    state = run_state(spec)
                    if state == "complete":
                        self._finished(spec, skipped=True)
                        continue
                    if state == "partial":
                        self.write(f"redoing half-written run {spec.path}")
                        shutil.rmtree(spec.path)
                    if not self.announced and self.skipped:
                        self.write(f"resuming: {self.skipped} runs already complete (skipped)")
                    self.announced = True
                    self.executor.submit(spec)
                    self._collect()
                if self.executor.running():
                    time.sleep(0.2)
                    self._collect()
        except BaseException:
            self.executor.stop()
            raise
        if self.skipped:
            self.write(f"{self.skipped} of {self.progress.total} runs were already complete "
                       "(skipped)")
        return 1 if self.failed else 0

    def _collect(self) -> None:
        for fin in self.executor.poll():
            if fin.ok and run_state(fin.spec) == "complete":
                self._finished(fin.spec, skipped=False, wall_s=fin.wall_s)
                continue
            fin.error = fin.error or "the run directory is not complete"
            self.failed.append(fin)
            self.progress.done += 1
            self.write(f"[{self.progress.done}/{self.progress.total}] {fin.spec.name}: FAILED "
                       f"({fin.error}) [{fin.spec.path}]")
            idx, cell = self._cell_of(fin.spec)
            if fin.spec.kind == "search" and idx in self.pending_search:
                # no rate can be chosen for this cell: its other queued searches and its final
                # runs are not run
                self.pending_search.pop(idx)
                dropped = [q for q in self.queue if q[0] == idx]
                self.queue = [q for q in self.queue if q[0] != idx]
                heapq.heapify(self.queue)
                self.progress.total -= len(dropped) + self.plan.opts.seeds
                self.write(f"{cell.setting.key} | {cell.row.label}: a search run failed; its "
                           "final runs are skipped")


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `docker stop`): handled like Ctrl-C, exit 143 instead of 130."""


def install_sigterm() -> Callable[[], None]:
    """SIGTERM raises `Terminated` in the main thread (stopping like Ctrl-C); returns the
    function that restores the previous handler."""
    def handler(signum: int, frame: Any) -> None:
        raise Terminated
    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, old)
