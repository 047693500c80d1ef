"""`mcepl experiment PRESET`: the paper's tables and figures as one command each.

presets.py  the experiments as data (settings, rows, the paper's numbers and orderings)
plan.py     options -> the runs (search and final) with validated configs and topologies
runner.py   running them (in process or `mcepl launch` subprocesses, `--jobs` at a time),
            resuming, progress and ETA, Ctrl-C/SIGTERM
results.py  results.md/.csv/.json, the verdicts on the paper's orderings, the plots
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from .plan import ExperimentError, Options, Plan, build_plan, fingerprint, lr_text
from .presets import PRESETS
from .runner import Scheduler, Terminated, install_sigterm

__all__ = ["PRESETS", "ExperimentError", "Options", "Plan", "build_plan", "describe",
           "run_experiment"]

STATE_FILE = "experiment.json"


def describe(plan: Plan) -> str:
    """What the experiment will run (`--plan`)."""
    lines = [f"{plan.preset.name}: {plan.preset.title}"]
    node_rounds = 0
    for cell in plan.cells:
        n = cell.setting.edges_topology.num_nodes
        runs = (len(cell.searches), plan.opts.seeds)
        node_rounds += n * (runs[0] * plan.search_rounds + runs[1] * plan.rounds)
        grid = ",".join(lr_text(v) for v in cell.grid)
        lines.append(f"  {cell.setting.key} | {cell.row.label} ({cell.row.method}): "
                     f"lr grid {grid}: {runs[0]} search run(s) x {plan.search_rounds} rounds, "
                     f"{runs[1]} final run(s) x {plan.rounds} rounds, {n} nodes")
    lines.append(f"{plan.total_runs} runs, {node_rounds:,} node-rounds; model "
                 f"{plan.base['model'].get('name', 'small-cnn')}; out {plan.opts.out}")
    return "\n".join(lines)


def check_state(plan: Plan, command: str) -> None:
    """Refuse an --out that holds another experiment; record this invocation's command."""
    out = plan.opts.out
    path = out / STATE_FILE
    fp = fingerprint(plan)
    state: dict = {"fingerprint": fp, "commands": []}
    if path.exists():
        try:
            state = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            raise ExperimentError(f"{path} is unreadable; choose another --out") from None
        old = state.get("fingerprint", {})
        diff = [k for k in sorted(set(old) | set(fp)) if old.get(k) != fp.get(k)]
        if diff:
            k = diff[0]
            raise ExperimentError(f"{out} holds another experiment ({k}: {old.get(k)!r} there, "
                                  f"{fp.get(k)!r} now); choose another --out or the same "
                                  "options to resume it")
    elif out.exists() and any(out.iterdir()):
        raise ExperimentError(f"{out} exists and holds no experiment ({STATE_FILE}); choose "
                              "another --out")
    out.mkdir(parents=True, exist_ok=True)
    state.setdefault("commands", []).append({"command": command,
                                             "time": time.strftime("%Y-%m-%d %H:%M:%S")})
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)


def preflight(plan: Plan) -> None:
    """Load the first run's data once: a missing data set is one line before anything runs."""
    from mcepl.node.data import DatasetError
    from mcepl.node.factory import node_shard

    cell = plan.cells[0]
    spec = cell.searches[0] if cell.searches else plan.spec(cell, "final", cell.grid[0], 0)
    try:
        node_shard(spec.config, spec.topology, 0)
    except (DatasetError, ValueError, OSError) as exc:
        text = " ".join(str(exc).split())
        raise ExperimentError(f"data: {text}") from None


def run_experiment(opts: Options, command: str, *, plan_only: bool = False,
                   results_only: bool = False,
                   write: Callable[[str], None] | None = None) -> int:
    """The whole command; returns the exit code (2 bad input, 1 a run failed, 130 interrupted
    by Ctrl-C, 143 by SIGTERM).
    ExperimentError propagates (the CLI prints it)."""
    say = write or (lambda s: print(s, flush=True))
    plan = build_plan(opts)
    if plan_only:
        say(describe(plan))
        return 0
    if results_only and not (opts.out / STATE_FILE).exists():
        raise ExperimentError(f"--results-only: {opts.out} holds no experiment ({STATE_FILE})")
    check_state(plan, command)
    # imported here, not at the top: matplotlib stays out of every other `mcepl` command
    # (a node process, `mcepl --help`; tests/test_layers.py checks it)
    from .results import write_results

    code = 0
    if not results_only:
        preflight(plan)
        say(f"{plan.preset.name}: {plan.total_runs} runs ({len(plan.cells)} method/setting "
            f"cells), {'networked' if opts.networked else 'in-process'}, {opts.jobs} at a time "
            f"-> {opts.out}")
        sched = Scheduler(plan, say)
        restore = install_sigterm()
        try:
            code = sched.run()
        except KeyboardInterrupt as exc:
            done = sched.progress.done
            say(f"interrupted: {done} of {sched.progress.total} runs complete; run the same "
                "command again to resume (half-written runs are redone)")
            write_results(plan, command, sched.progress.total)
            return 143 if isinstance(exc, Terminated) else 130
        finally:
            restore()
        for fin in sched.failed:
            say(f"failed: {fin.spec.name}: {fin.error} [{fin.spec.path}]")
    doc = write_results(plan, command)
    for v in doc["verdicts"]:
        verdict = {True: "holds", False: "DOES NOT HOLD", None: "no data"}[v["holds"]]
        say(f"  {verdict}: {v['claim']} ({v['source']}" +
            (f", {v['setting']})" if v["setting"] else ")"))
    say(f"results: {Path(opts.out) / 'results.md'} ({doc['runs_complete']} of "
        f"{doc['runs_planned']} runs)")
    return code
