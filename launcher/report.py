"""Summaries, tables and plots from a run's metrics.jsonl (launch, collect, `mcepl report`).

Files written into a run directory by `write_report`:

    summary.json            headline numbers and the communication bill (per kind, node, link)
    accuracy.png            mean accuracy per round (per-node curves in grey)
    accuracy_vs_bytes.png   mean accuracy against cumulative bytes sent (paper Fig. 5 and 7)
    accuracy_per_round.csv  round, mean accuracy, nodes evaluated, cumulative bytes
    bytes_per_node.csv/.md  per node: bytes sent/received per kind, mask bits per entry
    report.md               a markdown summary of all of the above

`write_comparison` writes the same plots with one curve per run, plus a comparison table.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mcepl import jsonio  # noqa: E402
from mcepl.node.record import RecordError, RoundRecord  # noqa: E402
from mcepl.protocol import binary_entropy, parse_peer_bytes  # noqa: E402
from mcepl.protocol.accounting import zmtp_frame_header  # noqa: E402


def read_records(run_dir: Path) -> list[RoundRecord]:
    """The records of metrics.jsonl; a torn last line (crash mid-write) or a record that does
    not read as a RoundRecord is skipped with a warning, not fatal."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl (is this a run directory?)")
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(RoundRecord.from_json(jsonio.loads(line)))
        except (json.JSONDecodeError, jsonio.JSONLimitError):
            print(f"warning: {path}:{i}: unreadable line skipped")
        except RecordError as exc:
            print(f"warning: {path}:{i}: record skipped: {exc}")
    return out


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """`read_records` in JSON form (the flat dicts the summaries and plots read)."""
    return [r.to_json() for r in read_records(run_dir)]


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
    s.update(communication(records))
    if extra:
        s.update(extra)
    return s


def _int(r: dict[str, Any], key: str) -> int:
    v = r.get(key)
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


def bytes_per_node(records: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per node, over the whole run: bytes per kind and direction, mask entries and bits/entry.

    data = training payload (`bytes_sent`, `bytes_received`: the messages the rounds used),
    control = handshake, metrics = the records pushed to the collector (each record states its
    own message size) and the "waiting for" status messages (`bytes_sent_status`), framing =
    the ZMTP headers ZeroMQ put around the frames sent (records included; status messages, 2
    bytes each, are not)."""
    out: dict[int, dict[str, Any]] = {}
    rounds: dict[int, int] = defaultdict(int)
    for r in records:
        n = out.setdefault(r["node"], defaultdict(int))
        rounds[r["node"]] += 1 if r["round"] >= 1 else 0
        n["data_sent"] += _int(r, "bytes_sent")
        n["_train"] += _int(r, "bytes_sent") if r["round"] >= 1 else 0
        n["data_received"] += _int(r, "bytes_received")
        n["control_sent"] += _int(r, "bytes_sent_control")
        n["control_received"] += _int(r, "bytes_received_control")
        m = _int(r, "bytes_sent_metrics")
        n["metrics_sent"] += m + _int(r, "bytes_sent_status")
        n["mask_entries"] += _int(r, "mask_entries")
        n["mask_bytes"] += _int(r, "mask_bytes")
        framing = sum(f for (_, _), (_, _, f) in _peers(r).items())
        n["framing_sent"] += framing + (zmtp_frame_header(m) if m else 0)
    for i, n in out.items():
        n["bits_per_entry"] = 8 * n["mask_bytes"] / n["mask_entries"] if n["mask_entries"] else None
        # training rounds only (round 0 is the set-up exchange), like bytes_per_node_per_round
        n["data_sent_per_round"] = n.pop("_train") / rounds[i] if rounds[i] else 0.0
        out[i] = dict(n)
    return dict(sorted(out.items()))


def _peers(r: dict[str, Any]) -> dict[tuple[int, str], tuple[int, int, int]]:
    text = r.get("peer_bytes")
    if not isinstance(text, str):
        return {}
    try:
        return parse_peer_bytes(text)
    except ValueError:
        return {}


def bytes_per_link(records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per directed link "i->j" (sender's count): bytes sent per kind and the ZMTP framing."""
    out: dict[str, dict[str, int]] = {}
    for r in records:
        for (j, kind), (sent, _, framing) in _peers(r).items():
            link = out.setdefault(f"{r['node']}->{j}",
                                  {"data": 0, "control": 0, "ack": 0, "framing": 0})
            link[kind] = link.get(kind, 0) + sent
            link["framing"] += framing
    return dict(sorted(out.items(), key=lambda kv: tuple(map(int, kv[0].split("->")))))


def communication(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The communication part of summary.json."""
    nodes = bytes_per_node(records)
    entries = sum(n["mask_entries"] for n in nodes.values())
    mask_bytes = sum(n["mask_bytes"] for n in nodes.values())
    ones = [(r.get("density"), _int(r, "mask_entries")) for r in records if _int(r, "mask_entries")]
    total = {k: sum(n[k] for n in nodes.values()) for k in (
        "data_sent", "data_received", "control_sent", "control_received", "metrics_sent",
        "framing_sent")}
    out: dict[str, Any] = {
        "bytes_by_kind": {
            "data": {"sent": total["data_sent"], "received": total["data_received"]},
            "control": {"sent": total["control_sent"], "received": total["control_received"]},
            "metrics": {"sent": total["metrics_sent"]},
            "zmtp_framing": {"sent": total["framing_sent"]},
        },
        "mask_entries_total": entries,
        "bits_per_entry": 8 * mask_bytes / entries if entries else None,
        "bytes_per_node": {str(i): n for i, n in nodes.items()},
        "bytes_per_link": bytes_per_link(records),
        "codec_s_per_round": _median([(r.get("encode_s") or 0) + (r.get("decode_s") or 0)
                                      for r in records if r["round"] >= 1
                                      and ("encode_s" in r or "decode_s" in r)]),
    }
    dens = [d for d, _ in ones if isinstance(d, (int, float))]
    if dens:  # what an ideal entropy coder would spend at the masks' density, for comparison
        out["binary_entropy_at_density"] = statistics.fmean(binary_entropy(d) for d in dens)
    return out


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
    if ax.get_legend_handles_labels()[0]:  # no labelled curve: no legend (and no warning)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy_vs_bytes(runs: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Mean accuracy against cumulative bytes sent by all nodes (the paper's Fig. 5/7 axes)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, records in runs.items():
        cum = cumulative_bytes(records)
        # a log axis has no 0: points before the first byte (e.g. dsgd's round 0) are left out
        pts = [(cum.get(k, 0), a) for k, a, _ in accuracy_curve(records) if cum.get(k, 0) > 0]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("cumulative bytes sent, training payload (all nodes)")
    ax.set_ylabel("mean test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:  # runs that sent nothing (ind-mask) draw no curve
        ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_config(run_dir: Path) -> dict[str, Any]:
    """The run's config.toml as a dict ({} when absent or unreadable)."""
    try:
        return tomllib.loads((Path(run_dir) / "config.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def write_report(run_dir: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """summary.json, the plots, the tables and report.md for one run directory; returns the
    summary."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    old = run_dir / "summary.json"
    base = json.loads(old.read_text()) if old.exists() and extra is None else {}
    keep = {k: base[k] for k in ("algorithm", "wall_s", "run_id", "model", "dataset", "status",
                                 "driver", "secure") if k in base}
    cfg = run_config(run_dir)
    from_cfg = {"codec": cfg.get("run", {}).get("codec", "raw")} if cfg else {}
    if cfg and "algorithm" not in keep and "name" in cfg.get("algorithm", {}):
        from_cfg["algorithm"] = cfg["algorithm"]["name"]
    collector = run_dir / "collector.json"
    if collector.exists():
        try:
            from_cfg["collector_received"] = json.loads(collector.read_text()).get("received")
        except (OSError, json.JSONDecodeError):
            pass
    summary = summarize(records, {**from_cfg, **keep, **(extra or {})})
    masks = mask_report(run_dir)
    if masks:
        summary["masks"] = masks
    tmp = run_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True))
    tmp.replace(run_dir / "summary.json")
    label = run_label(summary, run_dir)
    plot_accuracy({label: records}, run_dir / "accuracy.png")
    plot_accuracy_vs_bytes({label: records}, run_dir / "accuracy_vs_bytes.png")
    write_accuracy_csv(records, run_dir / "accuracy_per_round.csv")
    write_bytes_tables(summary, run_dir)
    (run_dir / "report.md").write_text(markdown_report(summary, run_dir))
    return summary


def mask_report(run_dir: Path) -> dict[str, Any]:
    """The mask pictures and overlap table of a run with mask snapshots (RUN/masks; see
    `maskplots.write_mask_report`); {} for a run without them or without its topology."""
    if not (Path(run_dir) / "masks").is_dir():
        return {}
    from mcepl.topology import TopologyError, load_topology

    from .maskplots import write_mask_report

    try:
        topo = load_topology(Path(run_dir) / "topology.json")
    except (TopologyError, OSError) as exc:
        print(f"warning: {run_dir}: mask pictures skipped: {exc}")
        return {}
    return write_mask_report(run_dir, topo.edges, {n.id: n.retention for n in topo.nodes})


def run_label(summary: dict[str, Any], run_dir: Path) -> str:
    """"mcepl/entropy" style label: the algorithm, and the mask codec when it is not raw."""
    label = str(summary.get("algorithm", Path(run_dir).name))
    codec = summary.get("codec")
    return f"{label}/{codec}" if codec and codec != "raw" else label


def write_accuracy_csv(records: list[dict[str, Any]], path: Path) -> None:
    cum = cumulative_bytes(records)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["round", "mean_acc", "nodes", "cumulative_bytes_sent"])
        for k, acc, n in accuracy_curve(records):
            w.writerow([k, f"{acc:.6f}", n, cum.get(k, 0)])


NODE_COLUMNS = ("data_sent", "data_received", "data_sent_per_round", "control_sent",
                "control_received", "metrics_sent", "framing_sent", "mask_entries", "mask_bytes",
                "bits_per_entry")


def write_bytes_tables(summary: dict[str, Any], run_dir: Path) -> None:
    """bytes_per_node.csv and bytes_per_node.md (one row per node and a total row)."""
    nodes = summary.get("bytes_per_node", {})
    with open(run_dir / "bytes_per_node.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["node", *NODE_COLUMNS])
        for i, n in nodes.items():
            w.writerow([i, *(_cell(n.get(c)) for c in NODE_COLUMNS)])
    (run_dir / "bytes_per_node.md").write_text(_node_table_md(nodes, summary) + "\n")


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def _node_table_md(nodes: dict[str, dict[str, Any]], summary: dict[str, Any]) -> str:
    cols = ("data_sent", "data_received", "data_sent_per_round", "control_sent",
            "metrics_sent", "framing_sent", "mask_entries", "bits_per_entry")
    lines = ["| node | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for i, n in nodes.items():
        lines.append(f"| {i} | " + " | ".join(_cell(n.get(c)) for c in cols) + " |")
    if nodes:
        tot = {c: sum(n.get(c) or 0 for n in nodes.values()) for c in cols}
        tot["bits_per_entry"] = summary.get("bits_per_entry")
        tot["data_sent_per_round"] = summary.get("bytes_per_node_per_round")
        lines.append("| **all** | " + " | ".join(_cell(tot[c]) for c in cols) + " |")
    return "\n".join(lines)


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def markdown_report(s: dict[str, Any], run_dir: Path) -> str:
    """report.md: the headline numbers, the bill per kind, the per-node table, the plots."""
    def pct(v: Any) -> str:
        return "n/a" if v is None else f"{100 * v:.2f}%"

    kinds = s.get("bytes_by_kind", {})
    lines = [
        f"# Run {Path(run_dir).name}",
        "",
        f"- algorithm: {s.get('algorithm', 'n/a')}, mask codec: {s.get('codec', 'raw')}, "
        f"model: {s.get('model', 'n/a')}, data set: {s.get('dataset', 'n/a')}",
        f"- nodes: {s['nodes']}, rounds: {s['rounds']}, status: {s.get('status', 'n/a')}"
        + (f", wall time: {s['wall_s']:.1f} s" if isinstance(s.get("wall_s"), float) else ""),
        f"- mean test accuracy: final {pct(s['final_mean_acc'])} (round {s['final_round']}), "
        f"best {pct(s['best_mean_acc'])} (round {s['best_round']})",
        f"- training payload: {_fmt_bytes(s['bytes_sent_total'])} sent in all, "
        f"{_fmt_bytes(s['bytes_per_node_per_round'])} per node per round "
        f"(set-up round {_fmt_bytes(s['bytes_sent_setup'])})",
    ]
    if s.get("bits_per_entry") is not None:
        line = (f"- masks: {s['mask_entries_total']:,} entries sent at "
                f"{s['bits_per_entry']:.4f} bits per entry")
        if s.get("binary_entropy_at_density") is not None:
            line += f" (H(density) = {s['binary_entropy_at_density']:.4f}; raw = 1 bit)"
        lines.append(line)
    if s.get("codec_s_per_round") is not None and s.get("compute_s_per_round"):
        lines.append(f"- median per node and round: encode+decode "
                     f"{1e3 * s['codec_s_per_round']:.2f} ms, compute "
                     f"{1e3 * s['compute_s_per_round']:.1f} ms")
    lines += ["", "## Bytes by kind (all nodes)", "", "| kind | sent | received |",
              "|---|---|---|"]
    for kind, v in kinds.items():
        lines.append(f"| {kind} | {v.get('sent', '')} | {v.get('received', '')} |")
    col = s.get("collector_received")
    if col:
        lines.append(f"| metrics at the collector (records + status + bye) | | "
                     f"{sum(c['metrics'] + c['bye'] + c.get('status', 0) for c in col.values())} |")
    lines += ["", "## Bytes per node", "", _node_table_md(s.get("bytes_per_node", {}), s), "",
              "## Accuracy", "", "| round | mean accuracy | nodes |", "|---|---|---|"]
    lines += [f"| {c['round']} | {c['mean_acc']:.4f} | {c['nodes']} |"
              for c in s.get("accuracy_curve", [])]
    lines += ["", "![accuracy per round](accuracy.png)", "",
              "![accuracy against cumulative bytes](accuracy_vs_bytes.png)", ""]
    lines += _masks_md(s.get("masks") or {})
    return "\n".join(lines)


def _masks_md(m: dict[str, Any]) -> list[str]:
    """report.md's section on the learned masks (runs with mask snapshots)."""
    if not m:
        return []
    lines = ["## Masks", ""]
    fc = m.get("first_conv")
    if fc:
        lines += [f"First conv layer `{fc['layer']}` at round {fc['round']}, output filters "
                  f"{fc['filters'][0]}..{fc['filters'][-1]} (black = kept):", "",
                  "| node (1-based) | kept | density | non-zero filters |", "|---|---|---|---|"]
        for i, st in fc["stats"].items():
            lines.append(f"| {int(i) + 1} | {st['kept']} | {st['density']:.4f} | "
                         f"{st['nonzero_filters']}/{len(fc['filters'])} |")
        lines += ["", "![first conv layer masks](masks_first_conv.png)", ""]
    ov = m.get("overlap_final")
    if ov:
        lines += [f"Mask overlap between neighbours (mean Jaccard over the graph's edges) at "
                  f"round {m.get('overlap_round')}: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in ov.items())
                  + " (per round: mask_overlap.csv)", "",
                  "![mask overlap between neighbours per layer](mask_overlap.png)", ""]
    return lines


def write_comparison(run_dirs: list[Path], out: Path) -> dict[str, dict[str, Any]]:
    """Comparison plots and comparison.md/.csv for several run directories (each reported
    first). Returns label -> summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {}
    summaries: dict[str, dict[str, Any]] = {}
    for d in run_dirs:
        s = json.loads((Path(d) / "summary.json").read_text())
        label = f"{run_label(s, Path(d))} ({Path(d).name})"
        runs[label] = read_metrics(Path(d))
        summaries[label] = s
    plot_accuracy(runs, out / "accuracy.png")
    plot_accuracy_vs_bytes(runs, out / "accuracy_vs_bytes.png")
    cols = ("final_mean_acc", "best_mean_acc", "bytes_per_node_per_round", "bytes_sent_total",
            "bits_per_entry")
    with open(out / "comparison.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "algorithm", "codec", *cols])
        for label, s in summaries.items():
            w.writerow([label, s.get("algorithm", ""), s.get("codec", ""),
                        *(_cell(s.get(c)) for c in cols)])
    lines = ["# Comparison", "", "| run | final acc | best acc | bytes/node/round | "
             "total bytes | bits/entry |", "|---|---|---|---|---|---|"]
    for label, s in summaries.items():
        lines.append(f"| {label} | {_cell(s.get('final_mean_acc'))} | "
                     f"{_cell(s.get('best_mean_acc'))} | "
                     f"{_fmt_bytes(s.get('bytes_per_node_per_round'))} | "
                     f"{_fmt_bytes(s.get('bytes_sent_total'))} | "
                     f"{_cell(s.get('bits_per_entry'))} |")
    lines += ["", "![accuracy per round](accuracy.png)", "",
              "![accuracy against cumulative bytes](accuracy_vs_bytes.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    return summaries


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
    if s.get("bits_per_entry") is not None:
        lines.append(f"masks: {s['bits_per_entry']:.4f} bits per entry on the wire"
                     + (f" (codec {s['codec']})" if s.get("codec") else ""))
    if s.get("compute_s_per_round") is not None:
        lines.append(f"median per round and node: compute {s['compute_s_per_round'] * 1e3:.1f} ms, "
                     f"communication/wait {(s['comm_s_per_round'] or 0) * 1e3:.1f} ms")
    if s.get("dropped_messages"):
        lines.append(f"dropped messages: {s['dropped_messages']}")
    return "\n".join(lines)
