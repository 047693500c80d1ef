"""Summaries and plots from a run directory's metrics.jsonl (launch, collect and `mcepl report`)."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Records of metrics.jsonl; a torn last line (crash mid-write) is skipped, not fatal."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl (is this a run directory?)")
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            print(f"warning: {path}:{i}: unreadable line skipped")
    return out


def accuracy_curve(records: list[dict[str, Any]]) -> list[tuple[int, float, int]]:
    """(round, mean over nodes of test_acc, nodes reporting) for every evaluated round."""
    by_round: dict[int, list[float]] = defaultdict(list)
    for r in records:
        if r.get("test_acc") is not None:
            by_round[r["round"]].append(r["test_acc"])
    return [(k, statistics.fmean(v), len(v)) for k, v in sorted(by_round.items())]


def cumulative_bytes(records: list[dict[str, Any]]) -> dict[int, int]:
    """Total bytes sent by all nodes up to and including each round."""
    per_round: dict[int, int] = defaultdict(int)
    for r in records:
        per_round[r["round"]] += int(r.get("bytes_sent", 0))
    total, out = 0, {}
    for k in sorted(per_round):
        total += per_round[k]
        out[k] = total
    return out


def summarize(records: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The numbers a user asks first: final/best mean accuracy, bytes per node per round."""
    curve = accuracy_curve(records)
    nodes = sorted({r["node"] for r in records})
    rounds = max((r["round"] for r in records), default=0)
    train = [r for r in records if r["round"] >= 1]
    sent = [int(r.get("bytes_sent", 0)) for r in train]
    last = {r["node"]: r for r in records if r["round"] == rounds}
    s: dict[str, Any] = {
        "nodes": len(nodes),
        "rounds": rounds,
        "final_mean_acc": curve[-1][1] if curve else None,
        "final_round": curve[-1][0] if curve else None,
        "best_mean_acc": max((c[1] for c in curve), default=None),
        "best_round": max(curve, key=lambda c: c[1])[0] if curve else None,
        "accuracy_curve": [{"round": k, "mean_acc": a, "nodes": n} for k, a, n in curve],
        "bytes_sent_total": sum(int(r.get("bytes_sent", 0)) for r in records),
        "bytes_sent_setup": sum(int(r.get("bytes_sent", 0)) for r in records if r["round"] == 0),
        "bytes_per_node_per_round": statistics.fmean(sent) if sent else 0.0,
        "per_node_final_acc": {str(i): last[i].get("test_acc") for i in sorted(last)},
        "compute_s_per_round": _median([r.get("compute_s") for r in train]),
        "comm_s_per_round": _median([r.get("comm_s") for r in train]),
        "dropped_messages": sum(int(last[i].get("dropped", 0)) for i in last),
    }
    if extra:
        s.update(extra)
    return s


def _median(values: list[Any]) -> float | None:
    v = [x for x in values if isinstance(x, (int, float)) and math.isfinite(x)]
    return statistics.median(v) if v else None


def plot_accuracy(runs: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Mean accuracy per round (and faint per-node curves when there is one run)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, records in runs.items():
        if len(runs) == 1:
            per_node: dict[int, list[tuple[int, float]]] = defaultdict(list)
            for r in records:
                if r.get("test_acc") is not None:
                    per_node[r["node"]].append((r["round"], r["test_acc"]))
            for pts in per_node.values():
                ax.plot(*zip(*sorted(pts), strict=True), color="grey", alpha=0.25, lw=0.8)
        curve = accuracy_curve(records)
        if curve:
            ax.plot([c[0] for c in curve], [c[1] for c in curve], marker="o", ms=3, lw=2,
                    label=f"{label} (mean)")
    ax.set_xlabel("round (iteration)")
    ax.set_ylabel("test accuracy on own test set")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy_vs_bytes(runs: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Mean accuracy against cumulative bytes sent by all nodes (the paper's Fig. 5/7 axes)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, records in runs.items():
        cum = cumulative_bytes(records)
        curve = accuracy_curve(records)
        xs = [max(cum.get(k, 0), 1) for k, _, _ in curve]
        ax.plot(xs, [a for _, a, _ in curve], marker="o", ms=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("cumulative bytes sent (all nodes)")
    ax.set_ylabel("mean test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(run_dir: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """summary.json and the plots for one run directory; returns the summary."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    old = run_dir / "summary.json"
    base = json.loads(old.read_text()) if old.exists() and extra is None else {}
    keep = {k: base[k] for k in ("algorithm", "wall_s", "run_id", "model", "dataset") if k in base}
    summary = summarize(records, {**keep, **(extra or {})})
    tmp = run_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True))
    tmp.replace(run_dir / "summary.json")
    label = str(summary.get("algorithm", run_dir.name))
    plot_accuracy({label: records}, run_dir / "accuracy.png")
    plot_accuracy_vs_bytes({label: records}, run_dir / "accuracy_vs_bytes.png")
    return summary


def format_summary(s: dict[str, Any]) -> str:
    """A few human lines for the terminal."""
    def pct(v: Any) -> str:
        return "n/a" if v is None else f"{100 * v:.2f}%"

    lines = [
        f"nodes {s['nodes']}, rounds {s['rounds']}"
        + (f", algorithm {s['algorithm']}" if "algorithm" in s else "")
        + (f", wall time {s['wall_s']:.1f} s" if "wall_s" in s else ""),
        f"mean test accuracy: final {pct(s['final_mean_acc'])} (round {s['final_round']}), "
        f"best {pct(s['best_mean_acc'])} (round {s['best_round']})",
        f"bytes sent: {s['bytes_per_node_per_round']:.0f} per node per round, "
        f"{s['bytes_sent_total'] / 1e6:.2f} MB in all (set-up {s['bytes_sent_setup']} B)",
    ]
    if s.get("compute_s_per_round") is not None:
        lines.append(f"median per round and node: compute {s['compute_s_per_round'] * 1e3:.1f} ms, "
                     f"communication/wait {(s['comm_s_per_round'] or 0) * 1e3:.1f} ms")
    if s.get("dropped_messages"):
        lines.append(f"dropped messages: {s['dropped_messages']}")
    return "\n".join(lines)
