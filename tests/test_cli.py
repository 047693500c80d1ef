"""The `mcepl` command as a user meets it: help, one-line errors, the in-process launch, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcepl.config import dump_toml
from mcepl.launcher.cli import main


@pytest.mark.parametrize("sub", [[], ["launch"], ["node"], ["collect"], ["report"],
                                 ["topology", "generate"], ["topology", "check"]])
def test_help(sub: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*sub, "--help"])
    assert exc.value.code == 0
    assert "usage: mcepl" in capsys.readouterr().out


def test_bad_config_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[run]\nrounds = 'many'\n")
    assert main(["launch", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "run.rounds" in err and str(bad) in err
    assert not (tmp_path / "r").exists()


def test_nodes_with_topology_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    topo = tmp_path / "t.json"
    assert main(["topology", "generate", "--kind", "ring", "--nodes", "3", "-o", str(topo)]) == 0
    assert main(["launch", "--topology", str(topo), "--nodes", "4"]) == 2
    assert "--nodes" in capsys.readouterr().err


def test_inprocess_launch_and_report(tmp_path: Path, tiny_cfg,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = tmp_path / "cfg.toml"
    cfg_path.write_text(dump_toml(tiny_cfg({"run": {"rounds": 2, "eval_every": 1}})))
    out = tmp_path / "run"
    assert main(["launch", "--inprocess", "--config", str(cfg_path), "--nodes", "3",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nodes"] == 3 and summary["rounds"] == 2 and summary["driver"] == "inprocess"
    # a second launch into the same directory must not overwrite it
    assert main(["launch", "--inprocess", "--config", str(cfg_path), "--nodes", "3",
                 "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["report", str(out)]) == 0
    assert "mean test accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("flags, expect", [
    (["--data-dir", "/nonexistent/fashion"], "--data-dir /nonexistent/fashion: no such directory"),
    (["--seed", str(10**20)], "run.seed"),
    (["--seed", "-1"], "run.seed: must be in 0..2^63-1"),
    (["--nodes", "0"], "--nodes must be >= 1"),
])
def test_bad_launch_flags_are_one_line(flags: list[str], expect: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["launch", *flags, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expect in err, err
    assert not (tmp_path / "r").exists()


def test_launch_names_the_topology_file_with_labels_out_of_range(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 11: such labels passed `topology check` and failed inside `launch` without the
    file's name."""
    topo = tmp_path / "t.json"
    assert main(["topology", "generate", "--kind", "ring", "--nodes", "3", "-o", str(topo),
                 "--labels-file", str(_labels(tmp_path, "1 2\n3 10\n4 5\n"))]) == 0
    capsys.readouterr()
    assert main(["topology", "check", str(topo)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{topo}: node 1: label 10 is outside the 10 classes of fashion-mnist" in err
    assert main(["launch", "--topology", str(topo), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(topo) in err and "label 10" in err, err
    # the check follows --dataset (or --config): cifar10 has 10 classes too
    assert main(["topology", "check", str(topo), "--dataset", "cifar10"]) == 2


def _labels(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "labels.txt"
    p.write_text(text)
    return p
