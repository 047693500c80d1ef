"""The launcher's memory estimate: refused with one line when N nodes do not fit, --force."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcepl.config import dump_toml
from mcepl.launcher import memory
from mcepl.launcher.cli import main
from mcepl.launcher.resolve import default_topology
from mcepl.node.factory import node_shard


def test_estimate_is_model_and_data_aware(tiny_cfg) -> None:
    cfg = tiny_cfg()
    topo = default_topology(cfg, 4)
    small = memory.estimate(cfg, topo, node_shard(cfg, topo, 0))
    big = memory.estimate(tiny_cfg(model={"name": "alexnet"}), topo, node_shard(cfg, topo, 0))
    assert small.nodes == 4 and small.per_node == sum(small.parts.values())
    assert small.parts["base"] == memory.BASE_BYTES
    assert big.parts["model"] > 10 * small.parts["model"]  # AlexNet: ~1.2 M parameters
    assert small.parts["data"] == node_shard(cfg, topo, 0).nbytes
    assert small.total == memory.LAUNCHER_BYTES + 4 * small.per_node
    forked = memory.estimate(cfg, topo, node_shard(cfg, topo, 0), forked=True)
    assert small.per_node - forked.per_node == memory.BASE_BYTES - memory.FORKED_BASE_BYTES


def test_refusal_is_one_line_with_the_largest_count_that_fits(
        tiny_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_cfg()
    topo = default_topology(cfg, 100)
    est = memory.estimate(cfg, topo, node_shard(cfg, topo, 0))
    room = memory.LAUNCHER_BYTES + 7 * est.per_node + est.per_node // 2
    monkeypatch.setenv(memory.AVAILABLE_ENV, str(room))
    line = memory.check(est)
    assert line is not None and "\n" not in line
    assert line.startswith("not enough memory for 100 nodes: estimated ")
    assert "at most 7 nodes fit" in line and memory.AVAILABLE_ENV in line and "--force" in line
    monkeypatch.setenv(memory.AVAILABLE_ENV, str(est.total))
    assert memory.check(est) is None  # exactly enough is enough


@pytest.mark.parametrize("text, value", [("2G", 2 << 30), ("512M", 512 << 20), ("1.5GiB",
                                          int(1.5 * (1 << 30))), ("1000", 1000)])
def test_parse_bytes(text: str, value: int) -> None:
    assert memory.parse_bytes(text) == value


def test_available_memory_of_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(memory.AVAILABLE_ENV, raising=False)
    room, source = memory.available()
    assert source in ("MemAvailable", "cgroup memory limit")
    assert room is None or room > 0


def test_cgroup_limit_narrows_what_is_free(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text("1073741824\n")
    (tmp_path / "memory.current").write_text("73741824\n")
    assert memory._cgroup_room(tmp_path) == 1_000_000_000
    (tmp_path / "memory.max").write_text("max\n")
    assert memory._cgroup_room(tmp_path) is None


def test_launch_refused_then_forced(tmp_path: Path, tiny_cfg, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A machine with (pretended) 300 MiB free: 3 nodes are refused before anything starts, the
    same --out is usable again, and --force runs them."""
    cfg_path = tmp_path / "cfg.toml"
    cfg_path.write_text(dump_toml(tiny_cfg({"run": {"rounds": 1, "eval_every": 1}})))
    monkeypatch.setenv(memory.AVAILABLE_ENV, "300M")
    out = tmp_path / "run"
    args = ["launch", "--config", str(cfg_path), "--nodes", "3", "--out", str(out), "--quiet",
            "--insecure"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    line = [ln for ln in err if ln.startswith("error:")]
    assert len(line) == 1 and "not enough memory for 3 nodes" in line[0], err
    assert "MiB per node" in line[0] and "300M" not in line[0] and "0.3 GB free" in line[0]
    assert "at most 0 nodes fit" in line[0]
    assert main([*args, "--force"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["nodes"] == 3


def test_bad_available_override_is_one_line(tmp_path: Path, tiny_cfg,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = tmp_path / "cfg.toml"
    cfg_path.write_text(dump_toml(tiny_cfg()))
    monkeypatch.setenv(memory.AVAILABLE_ENV, "lots")
    assert main(["launch", "--config", str(cfg_path), "--nodes", "2", "--out",
                 str(tmp_path / "r"), "--quiet", "--insecure"]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and f"{memory.AVAILABLE_ENV}='lots': not a size" in err[0], err
