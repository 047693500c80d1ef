"""Mask snapshots (node/snapshots.py) and what the report draws from them (launcher/maskplots.py):
the files round-trip bit for bit, both drivers write the same ones on the same rounds and add
nothing to the bill, and the overlap between neighbours is the Jaccard index it claims to be."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mcepl.launcher.cli import main
from mcepl.launcher.inprocess import run_inprocess_to_dir
from mcepl.launcher.maskplots import (
    ALL,
    default_nodes,
    filter_stats,
    jaccard,
    middle,
    overlap_by_round,
)
from mcepl.node.inprocess import run_inprocess
from mcepl.node.snapshots import (
    MaskSnapshots,
    list_snapshots,
    load_masks,
    save_masks,
    snapshot_path,
)
from mcepl.topology import generate, save_topology


def test_save_load_round_trip(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    masks = {"a.weight": torch.rand(7, 3, 5, 5, generator=gen) > 0.7,
             "b.weight": (torch.rand(13, generator=gen) > 0.5).to(torch.float32),
             "c.weight": torch.zeros(3, 4, dtype=torch.bool)}
    path = save_masks(tmp_path / "node-2" / "round-00007.npz", masks)
    back = load_masks(path)
    assert list(back) == list(masks)
    for name, m in masks.items():
        assert back[name].dtype == bool
        assert np.array_equal(back[name], m.numpy() != 0)
    assert list_snapshots(tmp_path) == {2: {7: path}}
    assert not list(tmp_path.rglob(".*tmp*"))  # the temporary file was renamed away
    (tmp_path / "node-2" / "round-00009.npz").write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="not a mask snapshot"):
        load_masks(tmp_path / "node-2" / "round-00009.npz")


def test_cadence() -> None:
    ev = MaskSnapshots("x", 0, every=3, rounds=7)
    assert [k for k in range(8) if ev.due(k)] == [0, 3, 6, 7]
    fin = MaskSnapshots("x", 0, every=3, rounds=7, when="final")
    assert [k for k in range(8) if fin.due(k)] == [7]
    with pytest.raises(ValueError):
        MaskSnapshots("x", 0, 3, 7, when="sometimes")


def test_inprocess_writes_the_masks_the_nodes_evaluate(tmp_path: Path, tiny_cfg) -> None:
    cfg = tiny_cfg(run={"rounds": 4, "eval_every": 2})
    topo = generate("ring", 3, seed=0, retention=[0.5, 0.3, 0.2])
    res = run_inprocess(cfg, topo, masks_dir=tmp_path)
    snaps = list_snapshots(tmp_path)
    assert sorted(snaps) == [0, 1, 2] and all(sorted(s) == [0, 2, 4] for s in snaps.values())
    for i, algo in enumerate(res.algorithms):
        final = load_masks(snapshot_path(tmp_path, i, 4))
        assert list(final) == list(algo.masks())
        for name, m in algo.masks().items():
            assert np.array_equal(final[name], m.numpy() != 0)
    plain = run_inprocess(cfg, topo)  # snapshots change no number
    strip = lambda recs: [{k: v for k, v in r.items() if not k.endswith("_s") and k != "t_end"}  # noqa: E731
                          for r in recs]
    assert strip(plain.records) == strip(res.records)


def test_methods_without_masks_write_nothing(tmp_path: Path, tiny_cfg) -> None:
    cfg = tiny_cfg(algorithm={"name": "dsgd"}, run={"rounds": 2})
    run_inprocess(cfg, generate("ring", 3, seed=0), masks_dir=tmp_path)
    assert list_snapshots(tmp_path) == {}


def test_networked_nodes_write_the_same_snapshots(tmp_path: Path, tiny_cfg) -> None:
    cfg = tiny_cfg(run={"rounds": 2, "eval_every": 2, "checkpoint": False})
    topo = generate("ring", 3, seed=0, retention=[0.5, 0.3, 0.2])
    (tmp_path / "cfg.toml").write_text(__import__("mcepl.config").config.dump_toml(cfg))
    save_topology(topo, tmp_path / "topo.json")
    code = main(["launch", "--config", str(tmp_path / "cfg.toml"), "--topology",
                 str(tmp_path / "topo.json"), "--transport", "tcp", "--out",
                 str(tmp_path / "net"), "--quiet"])
    assert code == 0
    run_inprocess_to_dir(cfg, topo, tmp_path / "inproc", quiet=True)
    net, inp = list_snapshots(tmp_path / "net" / "masks"), list_snapshots(
        tmp_path / "inproc" / "masks")
    assert sorted(net) == sorted(inp) == [0, 1, 2]
    for i in net:
        assert sorted(net[i]) == sorted(inp[i]) == [0, 2]
        for k in net[i]:
            a, b = load_masks(net[i][k]), load_masks(inp[i][k])
            assert all(np.array_equal(a[n], b[n]) for n in a)
    # the mask pictures and overlap are in both reports
    for run in ("net", "inproc"):
        summary = json.loads((tmp_path / run / "summary.json").read_text())
        assert summary["masks"]["first_conv"]["nodes"] == [0, 1, 2]
        assert (tmp_path / run / "masks_first_conv.png").stat().st_size > 0
        assert (tmp_path / run / "mask_overlap.png").stat().st_size > 0
        assert "## Masks" in (tmp_path / run / "report.md").read_text()


def test_overlap_is_the_mean_jaccard_over_edges(tmp_path: Path) -> None:
    a = np.array([[1, 1, 0, 0]], bool)
    b = np.array([[1, 0, 1, 0]], bool)
    c = np.array([[0, 0, 0, 0]], bool)
    for node, (m1, m2) in enumerate([(a, a), (b, a), (c, a)]):
        save_masks(snapshot_path(tmp_path, node, 0), {"l1": m1, "l2": m2})
    save_masks(snapshot_path(tmp_path, 0, 5), {"l1": a, "l2": a})  # node 0 only: not a common round
    assert jaccard(a, b) == pytest.approx(1 / 3) and jaccard(c, c) == 1.0
    ov = overlap_by_round(tmp_path, [(0, 1), (1, 2)])
    # l1: J(a,b) = 1/3, J(b,c) = 0; l2: all a: 1; "all": (1 + 2 + 0 + 2) / (3 + 2 + 2 + 2)
    assert ov["l1"] == [(0, pytest.approx(1 / 6))]
    assert ov["l2"] == [(0, 1.0)]
    assert ov[ALL] == [(0, pytest.approx(5 / 9))]
    assert overlap_by_round(tmp_path / "none", [(0, 1)]) == {}


def test_filter_stats_and_node_choice() -> None:
    m = np.zeros((30, 2, 3, 3), bool)
    m[5, 0, 1, 1] = m[14, 1, 0, 0] = m[15, :, :, :] = True
    filters = middle(30)
    assert filters == range(5, 25)
    st = filter_stats(m, filters)
    assert st == {"kept": 20, "density": pytest.approx(20 / (20 * 18)), "nonzero_filters": 3}
    assert default_nodes(20) == [1, 3, 7, 5] and default_nodes(3) == [0, 1, 2]
