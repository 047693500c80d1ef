"""The README's "Your own model and data set" example: the files it shows are the ones in
examples/, and its commands run (few nodes, few rounds) as a user types them, from the
repository root, with real node processes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"


def readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


@pytest.mark.parametrize("path", ["examples/resnet/small_resnet.py",
                                  "examples/resnet/config.toml"])
def test_readme_shows_the_example_files_as_they_are(path: str) -> None:
    section = readme_section("Your own model and data set")
    blocks = re.findall(rf"`{re.escape(path)}`:\n\n```\w+\n(.*?)```", section, re.S)
    assert blocks, f"README does not show {path}"
    assert blocks[0] == (REPO / path).read_text()


def commands(section: str) -> list[str]:
    return [ln.split("#")[0].strip() for ln in section.splitlines()
            if ln.startswith(("mcepl ", "python "))]


def run(cmd: str, *extra: str, timeout: int = 600) -> subprocess.CompletedProcess:
    argv = cmd.split()
    exe = [sys.executable, "-m", "mcepl.launcher.cli"] if argv[0] == "mcepl" else [sys.executable]
    return subprocess.run([*exe, *argv[1:], *extra], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_resnet_example_runs(tmp_path: Path, tiny_data_dir: Path) -> None:
    cmds = [c for c in commands(readme_section("Your own model and data set"))
            if "examples/resnet/config.toml" in c]
    assert cmds[0] == "mcepl launch --config examples/resnet/config.toml"
    out = tmp_path / "resnet"
    proc = run(cmds[0], "--nodes", "3", "--rounds", "2", "--eval-every", "2",
               "--data-dir", str(tiny_data_dir), "--quiet", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["model"] == "small_resnet:resnet8"
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["node"] for r in recs} == {0, 1, 2} and max(r["round"] for r in recs) == 2
    assert all(r["test_acc"] is not None for r in recs if r["round"] in (0, 2))
    log = (out / "logs" / "node-0.log").read_text()
    assert "model small_resnet:resnet8, 77072 masked parameters (10 layers)" in log


def test_npz_data_example_runs(tmp_path: Path) -> None:
    cmds = commands(readme_section("Your own model and data set"))
    make = next(c for c in cmds if "make_npz.py" in c)
    launch = next(c for c in cmds if "examples/npz_data/config.toml" in c)
    data = tmp_path / "npz"
    make = make.replace("/tmp/npz-demo", str(data))
    proc = run(make, "--train-per-class", "20", "--test-per-class", "5")
    assert proc.returncode == 0, proc.stderr
    launch = launch.replace("/tmp/npz-demo", str(data)).replace("--nodes 10", "--nodes 3")
    out = tmp_path / "run"
    proc = run(launch, "--rounds", "2", "--eval-every", "1", "--inprocess", "--quiet",
               "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["dataset"] == "npz_data:load"
    assert summary["nodes"] == 3 and summary["rounds"] == 2
