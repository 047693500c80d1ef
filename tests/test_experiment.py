"""`mcepl experiment`: tiny versions of the presets (3 nodes, a few rounds, the tiny data set and a
3-node stand-in for the paper's reference files) for the learning-rate search, seeds, resume
(complete runs skipped, half-written ones redone, an interrupted experiment finishing with the
numbers of an uninterrupted one), results.md/.csv/.json, the verdict logic and bad input."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcepl.launcher.cli import main
from mcepl.launcher.experiment import PRESETS, ExperimentError, Options, build_plan
from mcepl.launcher.experiment.presets import MASK_LR_GRID, PAPER_LR_GRID, Ordering
from mcepl.launcher.experiment.results import CellResult, check, verdicts
from mcepl.launcher.experiment.runner import choose_lr, read_records
from mcepl.registry import ALGORITHMS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference files' names with a 3-node graph (a triangle) and 3-node label lines."""
    d = tmp_path_factory.mktemp("reference")
    (d / "paper-graph-20-nodes.adj").write_text("0 1 1\n1 0 1\n1 1 0\n")
    (d / "paper-labels-c3.txt").write_text("0 1 2\n3 4 5\n6 7 8\n")
    (d / "paper-labels-c4.txt").write_text("0 1 2 3\n2 3 4 5\n5 6 7 8\n")
    (d / "paper-labels-c5.txt").write_text("0 1 2 3 4\n3 4 5 6 7\n5 6 7 8 9\n")
    return d


def tiny_args(ref: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["experiment", "table2", "--reference-dir", str(ref), "--data-dir", str(data),
            "--model", "small-cnn", "--c", "4", "--rounds", "4", "--eval-every", "2",
            "--seeds", "2", "--lr-grid", "1,0.1", "--methods", "mcepl,ind-mask",
            "--out", str(out), *extra]


@pytest.fixture(scope="module")
def finished(tiny_reference: Path, tiny_data_dir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """One complete tiny table2 experiment (mcepl and ind-mask, 2 rates, 2 seeds: 8 runs)."""
    out = tmp_path_factory.mktemp("exp") / "table2"
    args = tiny_args(tiny_reference, tiny_data_dir, out)
    assert main(args) == 0
    return out, args


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ presets as data
def test_presets_are_consistent_data(tiny_reference: Path, tmp_path: Path) -> None:
    assert set(PRESETS) == {"table1", "table2", "table3", "fig4", "fig8", "fig9"}
    for name, preset in PRESETS.items():
        plan = build_plan(Options(preset=name, out=tmp_path / name, reference_dir=tiny_reference,
                                  model="small-cnn"))
        labels = {r.label for r in preset.rows}
        settings = {s.key for s in plan.settings}
        assert all(r.method in ALGORITHMS for r in preset.rows)
        assert {row for row, _ in preset.paper} <= labels, name
        assert {s for _, s in preset.paper} <= settings, name
        for o in preset.orderings:
            for term in (o.left, *o.right):
                if isinstance(term, str):
                    row, _, setting = term.partition("#")[0].partition("@")
                    assert row in labels, (name, term)
                    assert not setting or setting in settings, (name, term)
            assert o.settings is None or set(o.settings) <= settings, (name, o.claim)
        for cell in plan.cells:
            want = MASK_LR_GRID if cell.row.method in ("mcepl", "ind-mask") else PAPER_LR_GRID
            assert cell.grid == want
            cfg = cell.searches[0].config
            assert cfg.run.rounds == 400 and cfg.data.val_fraction == 0.2
            assert cfg.run.eval_every == 100  # a search needs few evaluations
            assert cfg.data.train_fraction == (1.0 if name == "fig4" else 0.2)
            final = cell.finals(1.0)[0]
            assert final.config.data.val_fraction == 0.0 and final.config.run.seed == 0
            assert final.config.run.eval_every == (3 if name == "fig4" else 20)
    t1 = build_plan(Options(preset="table1", out=tmp_path / "t1", reference_dir=tiny_reference))
    rets = {c.row.label: {n.retention for n in c.searches[0].topology.nodes} for c in t1.cells}
    assert rets["mcepl r=0.3"] == {0.3} and rets["dsgd"] == {1.0}
    fedavg = next(c for c in t1.cells if c.row.method == "fedavg").searches[0].topology
    assert fedavg.meta["kind"] == "star" and fedavg.nodes[2].labels == [6, 7, 8]
    t2 = build_plan(Options(preset="table2", out=tmp_path / "t2", reference_dir=tiny_reference))
    assert [n.retention for n in t2.cells[0].searches[0].topology.nodes] == [0.4, 0.4, 0.3]
    assert t2.cells[0].searches[0].config.model.name == "small-cnn"  # the project's default
    t3 = build_plan(Options(preset="table3", out=tmp_path / "t3", reference_dir=tiny_reference))
    assert [s.key for s in t3.settings] == ["ring", "er:0.3", "paper", "er:0.7"]
    f4 = build_plan(Options(preset="fig4", out=tmp_path / "f4"))  # needs no reference files
    nodes = f4.cells[1].searches[0].topology.nodes
    assert [n.retention for n in nodes] == [0.1, 0.3, 0.5]
    assert [n.labels for n in nodes] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert f4.cells[0].searches[0].config.model.weight_init == "uniform"


# ------------------------------------------------------------------ search, seeds, results
def test_search_chooses_on_validation_and_finals_use_the_whole_shard(
        finished: tuple[Path, list[str]]) -> None:
    out, _ = finished
    runs = out / "runs" / "c4"
    for method in ("mcepl", "ind-mask"):
        scores = {}
        for i, lr in enumerate(("1", "0.1")):  # grid order
            records = read_records(runs / method / f"search-lr{lr}")
            curve = {k: [r["val_acc"] for r in records if r["round"] == k and "val_acc" in r]
                     for k in (0, 2, 4)}
            assert all(len(v) == 3 for v in curve.values())
            means = [sum(v) / 3 for v in curve.values()]
            scores[lr] = (means[-1], max(means), -i)  # final, then best, then grid order
        chosen = max(scores, key=lambda k: scores[k])
        finals = sorted(p.name for p in (runs / method).iterdir() if p.name.startswith("final"))
        assert finals == [f"final-lr{chosen}-seed0", f"final-lr{chosen}-seed1"]
        for name in finals:
            recs = read_records(runs / method / name)
            assert all("val_acc" not in r for r in recs)
        cfgs = [tomllib.loads((runs / method / n / "config.toml").read_text()) for n in finals]
        assert [c["run"]["seed"] for c in cfgs] == [0, 1]
        assert all(c["algorithm"]["lr"] == float(chosen) for c in cfgs)
        assert (runs / method / finals[0] / "masks" / "node-0" / "round-00000.npz").exists()
        assert not (runs / method / "search-lr1" / "masks").exists()


def test_results_files(finished: tuple[Path, list[str]]) -> None:
    out, args = finished
    md = (out / "results.md").read_text()
    assert md.splitlines()[3] == "mcepl " + " ".join(args)  # the exact command, at the top
    assert "0.6451" in md and "0.6140" in md  # the paper's numbers beside ours
    assert "± " in md and "runs: complete" in md
    rows = read_csv(out / "results.csv")
    assert [r["row"] for r in rows] == ["mcepl", "ind-mask"]
    for r in rows:
        assert r["seeds"] == "2" and r["chosen_lr"] in ("1", "0.1")
        assert 0.0 <= float(r["final_mean"]) <= 1.0 and r["val_acc_lr1"] and r["val_acc_lr0.1"]
        summaries = [json.loads(p.read_text()) for p in
                     (out / "runs" / "c4" / r["row"]).glob("final-*/summary.json")]
        finals = [s["final_mean_acc"] for s in summaries]
        assert float(r["final_mean"]) == pytest.approx(sum(finals) / 2, abs=1e-6)
        assert float(r["bytes_per_node_per_round"]) == pytest.approx(
            sum(s["bytes_per_node_per_round"] for s in summaries) / 2, abs=1e-3)
    doc = json.loads((out / "results.json").read_text())
    assert doc["runs_complete"] == doc["runs_planned"] == 8
    claims = {v["claim"] for v in doc["verdicts"]}
    assert claims == set()  # every table2 ordering names a row not run here
    for png in ("accuracy_c4.png", "accuracy_vs_bytes_c4.png"):
        assert (out / png).stat().st_size > 0 and png in md


def test_rerun_skips_complete_and_redoes_half_written(
        finished: tuple[Path, list[str]], tmp_path: Path, capsys) -> None:
    src, args = finished
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    args = [a if a != str(src) else str(out) for a in args]
    before = read_csv(out / "results.csv")
    half = out / "runs" / "c4" / "mcepl" / "final-lr1-seed1"
    if not half.exists():
        half = next((out / "runs" / "c4" / "mcepl").glob("final-*-seed1"))
    lines = (half / "metrics.jsonl").read_text().splitlines()
    (half / "metrics.jsonl").write_text("\n".join(lines[:5]) + "\n{\"round\": 2, \"no")
    (half / "summary.json").unlink()
    gone = out / "runs" / "c4" / "ind-mask" / "search-lr0.1"
    shutil.rmtree(gone)
    capsys.readouterr()
    assert main(args) == 0
    text = capsys.readouterr().out
    assert f"redoing half-written run {half}" in text
    assert text.count("] c=4 |") == 2  # exactly the two missing runs ran
    assert "6 of 8 runs were already complete" in text
    assert read_csv(out / "results.csv") == before  # and gave the same numbers


@pytest.mark.slow
def test_interrupted_experiment_resumes(tiny_reference: Path, tiny_data_dir: Path,
                                        finished: tuple[Path, list[str]],
                                        tmp_path: Path) -> None:
    """SIGTERM mid-way (a real process), then the same command: it finishes with exactly the
    numbers of the uninterrupted experiment."""
    out = tmp_path / "exp"
    args = tiny_args(tiny_reference, tiny_data_dir, out)
    args[args.index("--methods") + 1] = "mcepl"  # 4 runs: 2 searches, 2 finals
    proc = subprocess.Popen([sys.executable, "-m", "mcepl.launcher.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("[2/"):
            proc.send_signal(signal.SIGTERM)
            break
        assert time.monotonic() < deadline, "".join(seen)
    rest = proc.stdout.read()
    assert proc.wait(60) == 143, "".join(seen) + rest
    assert "interrupted: " in rest and "run the same command again" in rest
    assert "INCOMPLETE" in (out / "results.md").read_text()
    assert main(args) == 0
    assert read_csv(out / "results.csv") == read_csv(finished[0] / "results.csv")[:1]


@pytest.mark.slow
def test_networked_jobs_give_the_in_process_numbers(tiny_reference: Path, tiny_data_dir: Path,
                                                    finished: tuple[Path, list[str]],
                                                    tmp_path: Path) -> None:
    """Two networked runs at once (each its own node processes and ports) equal the in-process
    runs of the same seeds, record for record."""
    out = tmp_path / "net"
    args = tiny_args(tiny_reference, tiny_data_dir, out, "--networked", "--jobs", "2")
    args[args.index("--methods") + 1] = "mcepl"
    ref_dir = finished[0] / "runs" / "c4" / "mcepl"
    lr = next(ref_dir.glob("final-*-seed0")).name.split("-")[1][2:]  # the rate it chose
    args[args.index("--lr-grid") + 1] = lr  # no search: the two final runs at once
    assert main(args) == 0
    keys = ("round", "node", "test_acc", "train_loss", "density", "bytes_sent",
            "bytes_received", "mask_entries")
    for seed in (0, 1):
        net = read_records(out / "runs" / "c4" / "mcepl" / f"final-lr{lr}-seed{seed}")
        ref = read_records(ref_dir / f"final-lr{lr}-seed{seed}")
        project = lambda recs: sorted(tuple(r.get(k) for k in keys) for r in recs)  # noqa: E731
        assert len(net) == 15 and project(net) == project(ref)


# ------------------------------------------------------------------ verdicts and choice
def _cell(row: str, setting: str = "c=4", **metrics: list[float]) -> CellResult:
    return CellResult(setting, row, row, [1.0], metrics=dict(metrics), seeds=[0, 1])


def test_verdict_logic() -> None:
    cells = [_cell("a", final=[0.8, 0.7], bytes=[10.0, 10.0]),
             _cell("b", final=[0.6, 0.6], bytes=[100.0, 100.0]),
             _cell("c", final=[0.9, 0.9]),
             _cell("a", "c=3", final=[0.5, 0.5]), _cell("b", "c=3", final=[0.55, 0.55]),
             _cell("c", "c=3", final=[0.1, math.nan])]
    paper = {("a", "c=4"): 0.7, ("b", "c=4"): 0.6, ("a", "c=3"): 0.8, ("b", "c=3"): 0.5}
    orderings = (
        Ordering("a beats b", "T", "a", ("b",)),
        Ordering("a beats b and c", "T", "a", ("b", "c"), settings=("c=4",)),
        Ordering("a is cheaper", "T", "a", ("b",), relation="<", metric="bytes",
                 settings=("c=4",)),
        Ordering("pinned spread", "T", "a@c=4", ("a@c=3",), relation="spread<=",
                 tolerance=0.3),
        Ordering("about as good", "T", "b", ("a",), relation=">=~", tolerance=0.2),
        Ordering("not run", "T", "a", ("zzz",)),
        Ordering("missing numbers", "T", "c", ("a",), metric="auc"),
    )
    vs = verdicts(orderings, cells, paper)
    got = {(v.claim, v.setting): (v.holds, v.paper_holds) for v in vs}
    assert got[("a beats b", "c=4")] == (True, True)  # 0.75 > 0.6
    assert got[("a beats b", "c=3")] == (False, True)  # 0.5 < 0.55; the paper: 0.8 > 0.5
    assert got[("a beats b and c", "c=4")] == (False, None)
    assert got[("a is cheaper", "c=4")] == (True, None)
    assert got[("pinned spread", None)] == (True, True)  # |0.75 - 0.5| <= 0.3
    assert got[("about as good", "c=4")] == (True, True)  # 0.6 >= 0.75 - 0.2
    assert got[("about as good", "c=3")] == (True, False)  # the paper: 0.5 < 0.8 - 0.2
    assert ("not run", "c=4") not in got  # a row this experiment does not run
    assert got[("missing numbers", "c=4")] == (None, None)
    a4 = next(v for v in vs if v.claim == "a beats b" and v.setting == "c=4")
    assert a4.terms[0][1:] == (pytest.approx(0.75), pytest.approx(0.0707, abs=1e-4), 2)
    assert check(">", [1.0, math.nan], 0) is None
    with pytest.raises(ValueError):
        check("~", [1.0, 2.0], 0)


def test_lr_grid_overrides(tmp_path: Path, tiny_reference: Path) -> None:
    def grids(*specs: str) -> dict[str, tuple[float, ...]]:
        plan = build_plan(Options(preset="table1", out=tmp_path, reference_dir=tiny_reference,
                                  c=(3,), lr_grid=specs))
        return {c.row.label: c.grid for c in plan.cells}

    assert grids()["dsgd"] == PAPER_LR_GRID and grids()["mcepl r=0.3"] == MASK_LR_GRID
    g = grids("1,0.1", "mcepl=10", "dsgd=0.5,0.5", "ind-mask r=0.5=2")
    assert g["mcepl r=0.3"] == g["mcepl r=0.5"] == (10.0,)  # a method: all its rows
    assert g["dsgd"] == (0.5,) and g["fedavg"] == (1.0, 0.1)  # duplicates dropped
    assert g["ind-mask r=0.5"] == (2.0,) and g["ind-mask r=0.3"] == (1.0, 0.1)  # one row
    assert grids("mcepl=10", "1")["mcepl r=0.3"] == (1.0,)  # the later one wins


def test_choose_lr_uses_validation_scores_only(tmp_path: Path, tiny_reference: Path) -> None:
    plan = build_plan(Options(preset="table2", out=tmp_path, reference_dir=tiny_reference,
                              methods=("mcepl",), lr_grid=("10,1,0.1",)))
    cell = plan.cells[0]
    assert choose_lr(cell, {10.0: (0.5, 0.9), 1.0: (0.7, 0.7), 0.1: (0.7, 0.8)}) == 0.1
    assert choose_lr(cell, {10.0: (math.nan, math.nan), 1.0: (0.2, 0.2),
                            0.1: (0.1, 0.9)}) == 1.0
    assert choose_lr(cell, {10.0: (0.3, 0.3), 1.0: (0.3, 0.3), 0.1: (0.3, 0.3)}) == 10.0


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("extra, message", [
    (["table9"], "unknown preset 'table9'; valid presets: table1, table2, table3, fig4, fig8, "
                 "fig9"),
    (["table2", "--methods", "sgd"], "unknown method 'sgd' for preset table2; valid: mcepl, "
                                     "ind-mask, ind-weipru, avr-weipru, par-weipru, dispfl"),
    (["table2", "--lr-grid", "1,abc"], "--lr-grid: 'abc' is not a learning rate; valid: "
                                       "positive numbers, e.g. 10,1,0.1,0.01,0.001"),
    (["table2", "--lr-grid", "-1"], "--lr-grid: '-1' is not a learning rate"),
    (["table2", "--lr-grid", "sgd=1"], "--lr-grid 'sgd=1': unknown method 'sgd'; valid: mcepl"),
    (["table2", "--c", "7"], "unknown c 7; valid: 3, 4, 5"),
    (["fig4", "--c", "4"], "--c does not apply to preset fig4"),
    (["table1", "--model", "resnet"], "unknown model 'resnet'; valid: "),
    (["table2", "--seeds", "0"], "--seeds must be >= 1"),
])
def test_bad_input_is_one_line_and_exit_2(extra: list[str], message: str, tmp_path: Path,
                                          tiny_reference: Path, capsys) -> None:
    code = main(["experiment", *extra, "--reference-dir", str(tiny_reference), "--out",
                 str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "x").exists()


def test_missing_reference_files_and_another_experiment(tmp_path: Path, capsys, monkeypatch,
                                                        finished: tuple[Path, list[str]]) -> None:
    code = main(["experiment", "table2", "--reference-dir", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"the paper's reference files are not in {tmp_path / 'nowhere'} (missing " \
           "paper-graph-20-nodes.adj, paper-labels-c3.txt" in err and "--reference-dir" in err
    monkeypatch.setenv("MCEPL_REFERENCE_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(ExperimentError, match=r"not in .*elsewhere .*\(or \$MCEPL_REFERENCE"):
        build_plan(Options(preset="table1", out=tmp_path / "y"))
    src, args = finished
    other = list(args)  # the same --out with another number of rounds
    other[other.index("--rounds") + 1] = "3"
    assert main(other) == 2
    err = capsys.readouterr().err
    assert f"{src} holds another experiment (rounds: 4 there, 3 now)" in err


def test_plan_lists_the_runs(capsys, tmp_path: Path, tiny_reference: Path) -> None:
    assert main(["experiment", "table1", "--plan", "--reference-dir", str(tiny_reference),
                 "--c", "3", "--seeds", "2", "--out", str(tmp_path / "p")]) == 0
    text = capsys.readouterr().out
    # 3 dense rows x (4 + 2) + 6 masked rows x ((4 or 5) + 2): 18 + 2*6 + 4*7 = 58
    assert "58 runs" in text and "fedavg" in text
    assert not (tmp_path / "p").exists()


def test_compare_baselines_is_a_thin_call(tmp_path: Path, tiny_reference: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compare_baselines.py"),
                           "--plan", "--reference-dir", str(tiny_reference), "--out",
                           str(tmp_path / "c")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("table2:") and "c=4 | dispfl" in proc.stdout
