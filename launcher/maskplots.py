"""What the learned masks look like (the paper's Fig. 8/9) and how alike neighbours' masks are.

Read from a run's mask snapshots (``RUN/masks/node-<i>/round-<k>.npz``, written by mask methods
on evaluation rounds; see `mcepl.node.snapshots`):

- `first_conv_grid`: the first conv layer's masks of chosen nodes as an image grid: per node one
  panel, the output filters (the middle 20, as in the paper) across, the input channels down,
  each cell one k x k kernel, black = kept;
- `overlap_by_round`: per evaluation round and masked layer, the mean over the graph's edges of
  the Jaccard index |m_i AND m_j| / |m_i OR m_j| of the two ends' masks (1 when both are
  empty), plus ``"all"`` over every masked entry; `plot_overlap` draws it.

`mcepl report` writes both for any run that has snapshots; `mcepl experiment` uses the same
functions for its fig8/fig9 presets.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mcepl.node.snapshots import list_snapshots, load_masks  # noqa: E402

PAPER_NODES = (1, 3, 7, 5)  # the paper's nodes 2, 4, 8, 6 (1-based), in its order
MIDDLE_FILTERS = 20
ALL = "all"

Overlap = dict[str, list[tuple[int, float]]]  # layer (or "all") -> [(round, mean Jaccard)]


def first_conv_name(masks: Mapping[str, np.ndarray]) -> str | None:
    """The first layer whose mask is 4-D (out, in, kh, kw), in model order."""
    return next((n for n, m in masks.items() if m.ndim == 4), None)


def middle(count: int, k: int = MIDDLE_FILTERS) -> range:
    """The middle `k` of `count` indices (all of them when count <= k)."""
    k = min(k, count)
    start = (count - k) // 2
    return range(start, start + k)


def default_nodes(num_nodes: int) -> list[int]:
    """The paper's nodes (2, 4, 8, 6, 1-based) when the run has them, else up to 4 nodes."""
    if num_nodes > max(PAPER_NODES):
        return list(PAPER_NODES)
    return list(range(min(num_nodes, 4)))


def final_masks(masks_dir: Path, nodes: Sequence[int] | None = None
                ) -> tuple[int, dict[int, dict[str, np.ndarray]]]:
    """(round, node -> masks) of the last round every listed node (default: every node with
    snapshots) has a snapshot of; (-1, {}) when there is none."""
    snaps = list_snapshots(masks_dir)
    ids = list(snaps) if nodes is None else [i for i in nodes if i in snaps]
    if not ids:
        return -1, {}
    common = set.intersection(*(set(snaps[i]) for i in ids))
    if not common:
        return -1, {}
    rnd = max(common)
    return rnd, {i: load_masks(snaps[i][rnd]) for i in ids}


def filter_stats(mask: np.ndarray, filters: range) -> dict[str, float]:
    """For a conv mask (out, in, kh, kw) restricted to `filters`: kept entries, their share,
    and the output filters that keep anything (the paper's "non-zero output dimensions")."""
    sub = mask[list(filters)]
    return {"kept": int(sub.sum()), "density": float(sub.mean()) if sub.size else 0.0,
            "nonzero_filters": int(sub.reshape(len(filters), -1).any(axis=1).sum())}


def kernel_image(mask: np.ndarray, filters: range) -> np.ndarray:
    """One panel: input channels down, the chosen output filters across, each kernel kh x kw,
    separated by a one-pixel gap (value 0.5); 1 = kept."""
    out_c, in_c, kh, kw = mask.shape
    sel = list(filters)
    img = np.full((in_c * (kh + 1) - 1, len(sel) * (kw + 1) - 1), 0.5)
    for col, f in enumerate(sel):
        for ch in range(in_c):
            y, x = ch * (kh + 1), col * (kw + 1)
            img[y:y + kh, x:x + kw] = mask[f, ch].astype(float)
    return img


def first_conv_grid(panels: Sequence[tuple[str, np.ndarray]], path: Path,
                    title: str | None = None, k: int = MIDDLE_FILTERS) -> None:
    """Draw one panel per (label, first-conv mask): the middle `k` output filters."""
    if not panels:
        return
    rows = len(panels)
    first = panels[0][1]
    fig_w = max(6.0, 0.32 * min(k, first.shape[0]) + 1.5)
    fig_h = sum(0.35 * m.shape[1] + 0.6 for _, m in panels) + (0.4 if title else 0)
    fig, axes = plt.subplots(rows, 1, figsize=(fig_w, max(fig_h, 1.2 * rows)), squeeze=False)
    for ax, (label, mask) in zip(axes[:, 0], panels, strict=True):
        filters = middle(mask.shape[0], k)
        ax.imshow(kernel_image(mask, filters), cmap="gray_r", vmin=0, vmax=1,
                  interpolation="nearest")
        st = filter_stats(mask, filters)
        ax.set_title(f"{label}: {st['kept']} kept ({100 * st['density']:.1f}%), "
                     f"{st['nonzero_filters']}/{len(filters)} filters non-zero", fontsize=9)
        kh, kw = mask.shape[2:]
        ax.set_xticks([c * (kw + 1) + kw / 2 - 0.5 for c in range(len(filters))])
        ax.set_xticklabels([str(f) for f in filters], fontsize=6)
        ax.set_yticks([c * (kh + 1) + kh / 2 - 0.5 for c in range(mask.shape[1])])
        ax.set_yticklabels([str(c) for c in range(mask.shape[1])], fontsize=6)
        ax.set_ylabel("input", fontsize=8)
    axes[-1, 0].set_xlabel("output filter", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union


def overlap_by_round(masks_dir: Path, edges: Sequence[tuple[int, int]]) -> Overlap:
    """Per layer (and "all"), the mean over `edges` of the two ends' mask Jaccard index, for
    every round both ends have a snapshot of. {} without snapshots or edges."""
    snaps = list_snapshots(masks_dir)
    pairs = [(i, j) for i, j in edges if i in snaps and j in snaps]
    if not pairs:
        return {}
    nodes = sorted({n for e in pairs for n in e})
    rounds = sorted(set.intersection(*(set(snaps[i]) for i in nodes)))
    out: Overlap = {}
    for rnd in rounds:
        masks = {i: load_masks(snaps[i][rnd]) for i in nodes}
        per_layer: dict[str, list[float]] = {}
        inter = union = 0
        for i, j in pairs:
            a, b = masks[i], masks[j]
            for name in a:
                if name not in b or a[name].shape != b[name].shape:
                    continue
                per_layer.setdefault(name, []).append(jaccard(a[name], b[name]))
                inter += int(np.count_nonzero(a[name] & b[name]))
                union += int(np.count_nonzero(a[name] | b[name]))
        for name, vals in per_layer.items():
            out.setdefault(name, []).append((rnd, float(np.mean(vals))))
        if per_layer:
            # "all": one Jaccard over every masked entry, summed over the edges
            out.setdefault(ALL, []).append((rnd, 1.0 if union == 0 else inter / union))
    return out


def write_overlap_csv(overlap: Overlap, path: Path) -> None:
    layers = list(overlap)
    rounds = sorted({r for pts in overlap.values() for r, _ in pts})
    table = {name: dict(pts) for name, pts in overlap.items()}
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["round", *layers])
        for r in rounds:
            w.writerow([r, *(f"{table[n][r]:.6f}" if r in table[n] else "" for n in layers)])


def plot_overlap(runs: Mapping[str, Overlap], path: Path, title: str | None = None) -> None:
    """Mask overlap between neighbours per layer over rounds; one colour per layer, one line
    style per run (so mcepl and ind-mask can share the axes)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    styles = ["-", "--", ":", "-."]
    colors: dict[str, Any] = {}
    cmap = plt.get_cmap("tab10")
    for k, (label, overlap) in enumerate(runs.items()):
        for name, pts in overlap.items():
            if name not in colors:
                colors[name] = "black" if name == ALL else cmap(len(colors) % 10)
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, styles[k % len(styles)], color=colors[name], marker="o", ms=2.5,
                    lw=2.2 if name == ALL else 1.2,
                    label=f"{label}: {name}" if len(runs) > 1 else name)
    ax.set_xlabel("round (iteration)")
    ax.set_ylabel("mask overlap with neighbours (Jaccard)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, loc="best", ncol=2 if len(runs) > 1 else 1)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_mask_report(run_dir: Path, edges: Sequence[tuple[int, int]],
                      retention: Mapping[int, float]) -> dict[str, Any]:
    """For a run with mask snapshots: masks_first_conv.png (the final masks of the default
    nodes), mask_overlap.png and mask_overlap.csv. Returns what report.md and summary.json
    say about them ({} without snapshots)."""
    masks_dir = Path(run_dir) / "masks"
    snaps = list_snapshots(masks_dir)
    if not snaps:
        return {}
    out: dict[str, Any] = {}
    nodes = [i for i in default_nodes(max(snaps) + 1) if i in snaps]
    rnd, finals = final_masks(masks_dir, nodes)
    if finals:
        name = first_conv_name(next(iter(finals.values())))
        if name is not None:
            panels = [(f"node {i + 1} (1-based; id {i}), r = {retention.get(i, float('nan')):g}",
                       finals[i][name]) for i in nodes]
            first_conv_grid(panels, Path(run_dir) / "masks_first_conv.png",
                            title=f"first conv layer ({name}) masks at round {rnd}")
            out["first_conv"] = {"layer": name, "round": rnd, "nodes": nodes,
                                 "filters": list(middle(finals[nodes[0]][name].shape[0])),
                                 "stats": {str(i): filter_stats(finals[i][name],
                                                                middle(finals[i][name].shape[0]))
                                           for i in nodes}}
    overlap = overlap_by_round(masks_dir, edges)
    if overlap:
        write_overlap_csv(overlap, Path(run_dir) / "mask_overlap.csv")
        plot_overlap({"run": overlap}, Path(run_dir) / "mask_overlap.png")
        out["overlap_final"] = {name: pts[-1][1] for name, pts in overlap.items()}
        out["overlap_round"] = overlap[ALL][-1][0] if ALL in overlap else None
    return out
