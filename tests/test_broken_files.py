"""A corpus of broken config and topology files (tests/corpus/): each must give a one-line error
that names the file and the key, node or edge at fault, and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mcepl.launcher.cli import main
from mcepl.topology import generate, save_topology

CORPUS = Path(__file__).parent / "corpus"


def expectations(kind: str) -> dict[Path, str]:
    """`# expect: TEXT` on a file's first line, or `name: TEXT` in the folder's EXPECT file."""
    d = CORPUS / kind
    out: dict[Path, str] = {}
    for line in (d / "EXPECT").read_text().splitlines() if (d / "EXPECT").exists() else []:
        name, _, text = line.partition(": ")
        out[d / name] = text
    for f in sorted(d.iterdir()):
        if f.name == "EXPECT" or f in out:
            continue
        first = f.read_bytes().split(b"\n", 1)[0].decode("utf-8", "replace")
        assert first.startswith("# expect: "), f"{f} has no expectation"
        out[f] = first.removeprefix("# expect: ")
    return out


CONFIGS = expectations("config")
TOPOLOGIES = expectations("topology")


def test_corpus_is_not_empty() -> None:
    assert len(CONFIGS) >= 20 and len(TOPOLOGIES) >= 20


@pytest.fixture(scope="module")
def good_topology(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("topo") / "good.json"
    save_topology(generate("ring", 3, retention=0.5), p)
    return p


def one_line_error(capsys: pytest.CaptureFixture[str], path: Path, expect: str) -> None:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert err.count("\n") == 0, err
    assert str(path) in err or path.name in err, err
    assert expect in err, err


@pytest.mark.parametrize("path", list(CONFIGS), ids=lambda p: p.name)
def test_broken_config(path: Path, good_topology: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["node", "--config", str(path), "--topology", str(good_topology), "--id", "0"])
    assert code == 2
    one_line_error(capsys, path, CONFIGS[path])
    assert main(["launch", "--config", str(path), "--out", "/nonexistent/never"]) == 2
    one_line_error(capsys, path, CONFIGS[path])


@pytest.mark.parametrize("path", list(TOPOLOGIES), ids=lambda p: p.name)
def test_broken_topology(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topology", "check", str(path)]) == 2
    one_line_error(capsys, path, TOPOLOGIES[path])
    assert main(["node", "--topology", str(path), "--id", "0"]) == 2
    one_line_error(capsys, path, TOPOLOGIES[path])


@pytest.mark.parametrize("args", [
    ["launch", "--config", str(CORPUS / "config" / "rounds-string.toml")],
    ["node", "--topology", str(CORPUS / "topology" / "disconnected.json"), "--id", "0"],
    ["topology", "check", str(CORPUS / "topology" / "not-json.json")],
])
def test_real_process_exits_nonzero_without_traceback(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "mcepl.launcher.cli", *args], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0
