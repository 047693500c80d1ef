"""An experiment's numbers, the verdict on each of the paper's orderings, and the files showing
them: results.md (the exact command at the top), results.csv, results.json and the plots.

Everything is read back from the run directories, so `--results-only` rewrites the same files
from what is on disk, and an interrupted experiment reports what it has.

Metrics of a final run (each a number per seed; the tables show mean ± std over seeds):

- ``final``: mean accuracy over nodes at the last round; ``best``: the best evaluated round's;
- ``auc``: the mean of the accuracy curve over the evaluated rounds >= 1 (higher = learns
  faster and better; "converges fastest");
- ``early``: the mean accuracy at the first evaluation after round 0 ("starts slower");
- ``bytes``: training payload bytes sent per node per round (rounds >= 1);
- ``node#i``: node i's own final accuracy;
- ``masks#...``: from the run's mask snapshots (last round), over the preset's picture nodes:
  ``kept<i>`` node i's kept first-conv entries among the middle 20 filters, ``pair<i>,<j>``
  the Jaccard index of nodes i and j's first-conv masks, ``filters`` the non-zero filters among
  the middle 20 summed over the picture nodes, ``overlap`` the mask overlap between neighbours
  over all layers.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mcepl.launcher.maskplots import (  # noqa: E402
    ALL,
    filter_stats,
    final_masks,
    first_conv_grid,
    first_conv_name,
    jaccard,
    middle,
    overlap_by_round,
    plot_overlap,
)
from mcepl.launcher.report import accuracy_curve, cumulative_bytes  # noqa: E402

from .plan import Cell, Plan, RunSpec, lr_text, slug  # noqa: E402
from .presets import Ordering  # noqa: E402
from .runner import choose_lr, read_records, run_state, run_summary, search_score  # noqa: E402

METRICS = ("final", "best", "auc", "early", "bytes", "node", "masks")
GRAPH_NAMES = {"paper": "paper (the paper's 20-node ER 0.5 graph)", "er:0.3": "er:0.3 (ER 0.3, "
               "seed 0)", "er:0.7": "er:0.7 (ER 0.7, seed 0)",
               "complete": "complete (every node linked to every other)"}


@dataclass
class CellResult:
    setting: str
    row: str
    method: str
    grid: list[float]
    search: dict[str, list[float]] = field(default_factory=dict)  # lr -> [final, best] val acc
    chosen_lr: float | None = None
    seeds: list[int] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)  # name -> one value per seed
    paper: float | None = None
    runs: list[str] = field(default_factory=list)

    def mean_std(self, name: str) -> tuple[float, float, int]:
        vals = [v for v in self.metrics.get(name, []) if v is not None and math.isfinite(v)]
        if not vals:
            return math.nan, math.nan, 0
        return (statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0,
                len(vals))


@dataclass
class Verdict:
    claim: str
    source: str
    setting: str | None
    relation: str
    metric: str
    holds: bool | None  # None: a number is missing
    terms: list[tuple[str, float, float, int]]  # (term, mean, std, seeds)
    paper_holds: bool | None = None


# ---------------------------------------------------------------- gathering
def gather(plan: Plan) -> list[CellResult]:
    """Every cell's search scores, chosen rate and final-run metrics, from the directories."""
    out = []
    for cell in plan.cells:
        res = CellResult(cell.setting.key, cell.row.label, cell.row.method, list(cell.grid),
                         paper=plan.preset.paper.get((cell.row.label, cell.setting.key)))
        if cell.searches:
            done = [s for s in cell.searches if _complete(s)]
            res.search = {lr_text(s.lr): list(search_score(s)) for s in done}
            if len(done) == len(cell.searches):
                res.chosen_lr = choose_lr(cell, {s.lr: search_score(s) for s in done})
        else:
            res.chosen_lr = cell.grid[0]
        if res.chosen_lr is not None:
            for spec in cell.finals(res.chosen_lr):
                if not _complete(spec):
                    continue
                res.seeds.append(spec.seed)
                res.runs.append(str(spec.path))
                for k, v in run_metrics(plan, spec).items():
                    res.metrics.setdefault(k, []).append(v)
        out.append(res)
    return out


def _complete(spec: RunSpec) -> bool:
    try:
        return run_state(spec) == "complete"
    except ValueError:
        return False


def run_metrics(plan: Plan, spec: RunSpec) -> dict[str, float]:
    s = run_summary(spec)
    curve = [(c["round"], c["mean_acc"]) for c in s.get("accuracy_curve", [])]
    trained = [a for k, a in curve if k >= 1]
    m: dict[str, float] = {
        "final": _num(s.get("final_mean_acc")), "best": _num(s.get("best_mean_acc")),
        "auc": statistics.fmean(trained) if trained else math.nan,
        "early": trained[0] if trained else math.nan,
        "bytes": _num(s.get("bytes_per_node_per_round")),
    }
    for i, acc in (s.get("per_node_final_acc") or {}).items():
        m[f"node#{i}"] = _num(acc)
    m.update(mask_metrics(plan, spec))
    return m


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def picture_nodes(plan: Plan, n: int) -> list[int]:
    nodes = list(plan.preset.picture_nodes)
    return nodes if all(i < n for i in nodes) else list(range(min(n, 4)))


def mask_metrics(plan: Plan, spec: RunSpec) -> dict[str, float]:
    masks_dir = spec.path / "masks"
    if not masks_dir.is_dir():
        return {}
    nodes = picture_nodes(plan, spec.topology.num_nodes)
    rnd, finals = final_masks(masks_dir, nodes)
    out: dict[str, float] = {}
    if finals:
        name = first_conv_name(next(iter(finals.values())))
        if name is not None:
            filters = 0
            for i, masks in finals.items():
                st = filter_stats(masks[name], middle(masks[name].shape[0]))
                out[f"masks#kept{i}"] = st["kept"]
                filters += st["nonzero_filters"]
            out["masks#filters"] = filters
            for a in finals:
                for b in finals:
                    if a < b:
                        out[f"masks#pair{a},{b}"] = jaccard(finals[a][name], finals[b][name])
    final = (run_summary(spec).get("masks") or {}).get("overlap_final") or {}
    if ALL in final:  # the report worked it out already
        out["masks#overlap"] = final[ALL]
    else:
        overlap = overlap_by_round(masks_dir, spec.topology.edges)
        if ALL in overlap:
            out["masks#overlap"] = overlap[ALL][-1][1]
    return out


# ---------------------------------------------------------------- verdicts
def parse_term(term: str | float) -> tuple[str | None, str | None, str | None, float | None]:
    """(row, pinned setting, detail, constant) of an ordering term."""
    if isinstance(term, (int, float)):
        return None, None, None, float(term)
    row, _, detail = term.partition("#")
    row, _, setting = row.partition("@")
    return row, setting or None, detail or None, None


def term_value(results: dict[tuple[str, str], CellResult], term: str | float, setting: str | None,
               metric: str) -> tuple[str, float, float, int]:
    row, pinned, detail, const = parse_term(term)
    if const is not None:
        return f"{const:g}", const, 0.0, 0
    where = pinned or setting
    name = metric if detail is None else f"{metric}#{detail}"
    label = (row or "") + (f" @ {where}" if pinned else "") + (f" [{detail}]" if detail else "")
    res = results.get((where or "", row or ""))
    if res is None:
        return label, math.nan, math.nan, 0
    mean, std, n = res.mean_std(name)
    return label, mean, std, n


def check(relation: str, values: list[float], tolerance: float) -> bool | None:
    if any(not math.isfinite(v) for v in values):
        return None
    left, rights = values[0], values[1:]
    if relation == ">":
        return all(left > r for r in rights)
    if relation == "<":
        return all(left < r for r in rights)
    if relation == ">=~":
        return all(left >= r - tolerance for r in rights)
    if relation == "spread<=":
        return max(values) - min(values) <= tolerance
    raise ValueError(f"unknown relation {relation!r}")


def verdicts(orderings: tuple[Ordering, ...], cells: list[CellResult],
             paper: dict[tuple[str, str], float]) -> list[Verdict]:
    """Each ordering checked in each setting it applies to (once when its terms pin theirs).
    Orderings about rows or settings this experiment does not run (--methods, --c) are left
    out; a row that runs but has no numbers yet gives "no data"."""
    results = {(c.setting, c.row): c for c in cells}
    settings = list(dict.fromkeys(c.setting for c in cells))
    rows = {c.row for c in cells}
    out = []
    for o in orderings:
        terms = [o.left, *o.right]
        named = [parse_term(t) for t in terms]
        if any(r is not None and r not in rows for r, *_ in named) or \
                any(s is not None and s not in settings for _, s, *_ in named):
            continue
        pinned = all(parse_term(t)[1] is not None or parse_term(t)[3] is not None for t in terms)
        where: list[str | None] = [None] if pinned else \
            [s for s in settings if o.settings is None or s in o.settings]
        for s in where:
            vals = [term_value(results, t, s, o.metric) for t in terms]
            holds = check(o.relation, [v[1] for v in vals], o.tolerance)
            out.append(Verdict(o.claim, o.source, s, o.relation, o.metric, holds, vals,
                               paper_check(o, terms, s, paper)))
    return out


def paper_check(o: Ordering, terms: list[str | float], setting: str | None,
                paper: dict[tuple[str, str], float]) -> bool | None:
    """Does the ordering hold in the paper's own table numbers? (accuracy claims only)"""
    if o.metric not in ("final", "best"):
        return None
    vals = []
    for t in terms:
        row, pinned, detail, const = parse_term(t)
        if const is not None:
            vals.append(const)
            continue
        v = paper.get((row or "", pinned or setting or ""))
        if v is None or detail:
            return None
        vals.append(v)
    return check(o.relation, vals, o.tolerance)


# ---------------------------------------------------------------- files
def fmt(mean: float, std: float, n: int, digits: int = 4) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if n > 1 else "")


def fmt_bytes(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:,.0f} B"


def write_results(plan: Plan, command: str, total_runs: int | None = None) -> dict[str, Any]:
    """results.md, results.csv, results.json and the plots in the experiment's --out."""
    out = plan.opts.out
    out.mkdir(parents=True, exist_ok=True)
    cells = gather(plan)
    verdict_list = verdicts(plan.preset.orderings, cells, plan.preset.paper)
    plots = write_plots(plan, cells)
    done = sum(len(c.search) for c in cells) + sum(len(c.seeds) for c in cells)
    doc = {"command": command, "preset": plan.preset.name, "title": plan.preset.title,
           "setting": setting_lines(plan), "runs_complete": done,
           "runs_planned": total_runs if total_runs is not None else plan.total_runs,
           "cells": [asdict(c) for c in cells],
           "verdicts": [asdict(v) for v in verdict_list], "plots": plots}
    (out / "results.json").write_text(json.dumps(doc, indent=2, default=_json_num))
    write_csv(cells, out / "results.csv")
    (out / "results.md").write_text(markdown(plan, command, cells, verdict_list, plots, done,
                                             doc["runs_planned"]))
    return doc


def _json_num(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else str(v)


def setting_lines(plan: Plan) -> list[str]:
    p, o = plan.preset, plan.opts
    cfg = plan.base
    graphs = ", ".join(GRAPH_NAMES.get(g, g) for g in p.graphs)
    return [
        f"data set {cfg['data'].get('dataset', 'fashion-mnist')}, "
        f"model {cfg['model'].get('name', 'small-cnn')}"
        + (f", fixed weights {p.weight_init}" if p.weight_init else "")
        + f", train fraction {p.train_fraction:g}",
        f"graphs: {graphs}; settings: {', '.join(s.key for s in plan.settings)}; "
        f"{plan.settings[0].edges_topology.num_nodes} nodes",
        f"{plan.rounds} rounds, evaluation every {plan.eval_every}; {o.seeds} seed(s) "
        f"(0..{o.seeds - 1}) per final run",
        f"learning rate chosen per method and setting on a validation split of "
        f"{o.val_fraction:g} of each node's training shard (seed 0, {plan.search_rounds} rounds, "
        f"evaluated every {plan.search_eval_every}; the highest final mean validation accuracy "
        "wins); final runs train on the whole shard and are tested on each node's own test set",
    ] + ([p.note] if p.note else [])


def write_csv(cells: list[CellResult], path: Path) -> None:
    grid = list(dict.fromkeys(lr_text(lr) for c in cells for lr in c.grid))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["setting", "row", "method", "chosen_lr", "seeds", "final_mean", "final_std",
                    "best_mean", "best_std", "auc_mean", "bytes_per_node_per_round", "paper",
                    *(f"val_acc_lr{g}" for g in grid)])
        for c in cells:
            fm, fs, n = c.mean_std("final")
            bm, bs, _ = c.mean_std("best")
            am, _, _ = c.mean_std("auc")
            by, _, _ = c.mean_std("bytes")
            w.writerow([c.setting, c.row, c.method,
                        "" if c.chosen_lr is None else lr_text(c.chosen_lr), n,
                        *(_c(v) for v in (fm, fs, bm, bs, am, by)),
                        "" if c.paper is None else f"{c.paper:.4f}",
                        *(_c(c.search[g][0]) if g in c.search else "" for g in grid)])


def _c(v: float) -> str:
    return "" if not math.isfinite(v) else f"{v:.6f}"


def markdown(plan: Plan, command: str, cells: list[CellResult], vs: list[Verdict],
             plots: list[tuple[str, str]], done: int, planned: int) -> str:
    p = plan.preset
    lines = [f"# {p.title}", "", "```", command, "```", ""]
    lines += [f"- {s}" for s in setting_lines(plan)]
    status = "complete" if done >= planned else f"INCOMPLETE: {done} of {planned} runs done"
    lines += [f"- runs: {status}", ""]
    by_setting: dict[str, list[CellResult]] = defaultdict(list)
    for c in cells:
        by_setting[c.setting].append(c)
    for setting, cs in by_setting.items():
        lines += [f"## {setting}", "",
                  "lr: the rate the search chose; acc: mean over nodes of each node's accuracy "
                  "on its own test set, mean ± std over seeds; paper: the paper's number "
                  "(CIFAR-10, AlexNet).", "",
                  "| method | lr | final acc | best acc | paper | bytes/node/round | seeds |",
                  "|---|---|---|---|---|---|---|"]
        for c in cs:
            lines.append(f"| {c.row} | {'n/a' if c.chosen_lr is None else lr_text(c.chosen_lr)}"
                         f" | {fmt(*c.mean_std('final'))} | {fmt(*c.mean_std('best'))} | "
                         f"{'' if c.paper is None else f'{c.paper:.4f}'} | "
                         f"{fmt_bytes(c.mean_std('bytes')[0])} | {len(c.seeds)} |")
        searched = [c for c in cs if c.search]
        if searched:
            grid = list(dict.fromkeys(lr_text(lr) for c in searched for lr in c.grid))
            lines += ["", "Learning-rate search: final mean validation accuracy per rate "
                      "(* = chosen):", "", "| method | " + " | ".join(grid) + " |",
                      "|---" * (len(grid) + 1) + "|"]
            for c in searched:
                cellv = []
                for g in grid:
                    v = c.search.get(g)
                    mark = "*" if c.chosen_lr is not None and lr_text(c.chosen_lr) == g else ""
                    cellv.append("" if v is None else f"{v[0]:.4f}{mark}")
                lines.append(f"| {c.row} | " + " | ".join(cellv) + " |")
        lines.append("")
    lines += ["## The paper's orderings", "",
              "Each claim checked on the mean over seeds (final = last round). 'paper' says "
              "whether the paper's own table numbers satisfy it (accuracy claims only). Claims "
              "about methods or settings not run here are left out.", "",
              "| claim | source | setting | verdict | our numbers | paper |",
              "|---|---|---|---|---|---|"]
    for v in vs:
        verdict = {True: "holds", False: "**does not hold**", None: "no data"}[v.holds]
        nums = "; ".join(f"{t}: {fmt(m, s, n)}" if v.metric != "bytes" else
                         f"{t}: {fmt_bytes(m)}" for t, m, s, n in v.terms)
        paper = {True: "holds", False: "does not hold", None: ""}[v.paper_holds]
        lines.append(f"| {v.claim} | {v.source} | {v.setting or '-'} | {verdict} | {nums} | "
                     f"{paper} |")
    lines += [""]
    if plots:
        lines += ["## Plots", ""]
        for name, alt in plots:
            lines += [f"![{alt}]({name})", ""]
    lines += ["## Run directories", "", f"Under `{plan.opts.out / 'runs'}`: "
              "`<setting>/<method>/search-lr<lr>` (validation split, seed 0) and "
              "`<setting>/<method>/final-lr<lr>-seed<s>`; each is an ordinary run directory "
              "(`mcepl report DIR`, `mcepl dashboard DIR`).", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- plots
def _mean_curves(runs: list[list[dict[str, Any]]]) -> tuple[list[tuple[int, float]],
                                                            list[tuple[float, float]]]:
    """Mean over seeds of the accuracy curve, and of (cumulative bytes, accuracy)."""
    acc: dict[int, list[float]] = defaultdict(list)
    cum: dict[int, list[float]] = defaultdict(list)
    for records in runs:
        cb = cumulative_bytes(records)
        for k, a, _ in accuracy_curve(records):
            acc[k].append(a)
            cum[k].append(cb.get(k, 0))
    rounds = sorted(k for k in acc if len(acc[k]) == len(runs))
    curve = [(k, statistics.fmean(acc[k])) for k in rounds]
    vs_bytes = [(statistics.fmean(cum[k]), statistics.fmean(acc[k])) for k in rounds
                if statistics.fmean(cum[k]) > 0]
    return curve, vs_bytes


def write_plots(plan: Plan, cells: list[CellResult]) -> list[tuple[str, str]]:
    """Accuracy per round and against cumulative bytes per setting, plus the preset's
    pictures; returns (file, caption) pairs."""
    out = plan.opts.out
    made: list[tuple[str, str]] = []
    by_setting: dict[str, list[CellResult]] = defaultdict(list)
    for c in cells:
        by_setting[c.setting].append(c)
    for setting, cs in by_setting.items():
        curves = {c.row: _mean_curves([read_records(Path(r)) for r in c.runs])
                  for c in cs if c.runs}
        if not curves:
            continue
        name = f"accuracy_{slug(setting)}.png"
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for row, (curve, _) in curves.items():
            if curve:
                ax.plot(*zip(*curve, strict=True), marker="o", ms=2.5, label=row)
        _axes(ax, "round (iteration)", "mean test accuracy (mean over seeds)",
              f"{plan.preset.name}, {setting}")
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        made.append((name, f"accuracy per round, {setting}"))
        name = f"accuracy_vs_bytes_{slug(setting)}.png"
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for row, (_, vb) in curves.items():
            if vb:
                ax.plot(*zip(*vb, strict=True), marker="o", ms=2.5, label=row)
        ax.set_xscale("log")
        _axes(ax, "cumulative bytes sent, training payload (all nodes)",
              "mean test accuracy (mean over seeds)", f"{plan.preset.name}, {setting} "
              "(methods that send nothing have no curve)")
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        made.append((name, f"accuracy against cumulative bytes, {setting}"))
    for kind, row in plan.preset.pictures:
        made += picture(plan, cells, kind, row)
    return made


def _axes(ax: Any, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")


def _cell_runs(plan: Plan, cells: list[CellResult], row: str) -> list[tuple[Cell, CellResult]]:
    pairs = []
    for cell, res in zip(plan.cells, cells, strict=True):
        if (not row or cell.row.label == row) and res.runs:
            pairs.append((cell, res))
    return pairs


def picture(plan: Plan, cells: list[CellResult], kind: str, row: str) -> list[tuple[str, str]]:
    """The preset's figures: "masks" (first conv masks of the picture nodes, seed 0),
    "overlap" (neighbours' mask overlap per layer, every masked row), "per-node" (each node's
    accuracy per round, every row)."""
    out = plan.opts.out
    made = []
    if kind == "masks":
        for cell, res in _cell_runs(plan, cells, row):
            run = Path(res.runs[0])
            topo = plan.spec(cell, "final", res.chosen_lr or 1.0, 0).topology
            nodes = picture_nodes(plan, topo.num_nodes)
            rnd, finals = final_masks(run / "masks", nodes)
            if not finals:
                continue
            name = first_conv_name(next(iter(finals.values())))
            if name is None:
                continue
            rets = {n.id: n.retention for n in topo.nodes}
            panels = [(f"node {i + 1}, r = {rets.get(i, math.nan):g}", finals[i][name])
                      for i in nodes if i in finals]
            file = f"masks_{slug(cell.setting.key)}_{slug(row)}.png"
            first_conv_grid(panels, out / file, title=f"{row}, {cell.setting.key}: first conv "
                            f"layer masks (middle filters), round {rnd}, seed {res.seeds[0]}")
            made.append((file, f"{row}: first conv layer masks of nodes "
                               + ", ".join(str(i + 1) for i in nodes) + " (1-based)"))
    elif kind == "overlap":
        by_setting: dict[str, dict[str, Any]] = defaultdict(dict)
        for cell, res in _cell_runs(plan, cells, row):
            run = Path(res.runs[0])
            edges = plan.spec(cell, "final", res.chosen_lr or 1.0, 0).topology.edges
            ov = overlap_by_round(run / "masks", edges)
            if ov:
                by_setting[cell.setting.key][cell.row.label] = ov
        for setting, runs in by_setting.items():
            file = f"mask_overlap_{slug(setting)}.png"
            plot_overlap(runs, out / file, title=f"mask overlap between neighbours, {setting}, "
                         "seed 0 (solid/dashed: one method each)")
            made.append((file, f"mask overlap between neighbours per layer over rounds, "
                               f"{setting}"))
    elif kind == "per-node":
        for cell0, _ in _cell_runs(plan, cells, row)[:1]:
            setting = cell0.setting.key
            rows = [(c, r) for c, r in _cell_runs(plan, cells, "") if c.setting.key == setting]
            n = cell0.setting.edges_topology.num_nodes
            fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.6), squeeze=False)
            for c, r in rows:
                rets = plan.spec(c, "final", r.chosen_lr or 1.0, 0).topology.nodes
                per_node: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
                for run in r.runs:
                    for rec in read_records(Path(run)):
                        if isinstance(rec.get("test_acc"), (int, float)):
                            per_node[rec["node"]][rec["round"]].append(rec["test_acc"])
                for i in range(n):
                    pts = sorted((k, statistics.fmean(v)) for k, v in per_node[i].items())
                    if pts:
                        axes[0, i].plot(*zip(*pts, strict=True), lw=1.2,
                                        label=f"{c.row.label} (r = {rets[i].retention:g})")
            for i in range(n):
                _axes(axes[0, i], "round (iteration)", "test accuracy" if i == 0 else "",
                      f"node {i}")
            fig.tight_layout()
            file = f"per_node_{slug(setting)}.png"
            fig.savefig(out / file, dpi=120)
            plt.close(fig)
            made.append((file, f"each node's accuracy per round, {setting}"))
    return made
