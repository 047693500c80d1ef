"""Crash and rejoin: a node killed with SIGKILL mid-run restarts with --resume from its last
checkpoint, its neighbours bring it back in step, and the run ends with exactly the numbers of
an uninterrupted run. The restarted node connects again under a fresh connection id; its hello
(run id and config hash, and with CURVE its key) binds the new connection to it."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcepl.config import dump_toml
from mcepl.node.checkpoint import checkpoint_path, load_checkpoint
from mcepl.node.inprocess import run_inprocess
from mcepl.topology import generate, save_topology
from mcepl.topology.keys import generate_keys, key_paths

RUN_ID = "crash-test"
LEARNING = ("test_acc", "train_loss", "density")


def records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def same(a: object, b: object) -> bool:
    """Equal, where JSON's null stands for NaN (metrics.jsonl cannot hold NaN)."""
    def nan(x: object) -> bool:
        return x is None or (isinstance(x, float) and math.isnan(x))
    return (nan(a) and nan(b)) or a == b


def wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.01)


# A user model with BatchNorm: its running statistics move during training and must come back
# from the checkpoint (evaluation uses them).
BN_MODEL = """from torch import nn


def net(input_shape, num_classes):
    return nn.Sequential(nn.Conv2d(input_shape[0], 4, 5, bias=False),
                         nn.BatchNorm2d(4, affine=False), nn.ReLU(), nn.MaxPool2d(4),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, num_classes))
"""


@pytest.mark.parametrize("algorithm, secure, model", [("mcepl", False, None),
                                                      ("dsgd", True, None),
                                                      ("mcepl", False, "user-batchnorm")])
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path: Path, tiny_cfg, algorithm: str,
                                                       secure: bool, model: str | None) -> None:
    rounds = 40
    extra: dict = {}
    if model is not None:
        (tmp_path / "mcepl_bn_model.py").write_text(BN_MODEL)
        extra = {"model": {"name": "mcepl_bn_model:net"},
                 "run": {"python_path": [str(tmp_path)]}}
    cfg = tiny_cfg({"algorithm": {"name": algorithm},
                    "run": {"rounds": rounds, "eval_every": 4, "round_timeout_s": 60}}, **extra)
    topo = generate("complete", 3, retention=[0.5, 0.3, 0.2], transport="ipc", ipc_dir=tmp_path)
    (tmp_path / "cfg.toml").write_text(dump_toml(cfg))
    keys = tmp_path / "keys"
    save_topology(generate_keys(topo, keys) if secure else topo, tmp_path / "topo.json")

    def key(who: int | str) -> list[str]:
        return ["--key", str(key_paths(keys, who)[1])] if secure else ["--insecure"]
    collector_addr = f"ipc://{tmp_path}/collector.sock"
    ckpt = tmp_path / "ckpt"
    run_dir = tmp_path / "run"
    common = ["--topology", str(tmp_path / "topo.json"), "--config", str(tmp_path / "cfg.toml"),
              "--run-id", RUN_ID]

    def node(i: int, *extra: str) -> subprocess.Popen:
        log = open(tmp_path / f"node-{i}{'-resumed' if extra else ''}.log", "w")  # noqa: SIM115
        return subprocess.Popen([sys.executable, "-m", "mcepl.node.main", *common, "--id", str(i),
                                 "--collector", collector_addr, "--checkpoint-dir", str(ckpt),
                                 *key(i), *extra], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "MCEPL_LOCAL_NODES": "3"})  # 3 share the cores

    collector = subprocess.Popen([sys.executable, "-m", "mcepl.launcher.cli", "collect", *common,
                                  "--bind", collector_addr, "--out", str(run_dir),
                                  "--timeout", "240", *key("collector")],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    procs = [node(i) for i in range(3)]
    try:
        path = checkpoint_path(ckpt, 1)
        wait(lambda: path.exists(), 120, "node 1 wrote no checkpoint")

        def ckpt_round() -> int:
            try:
                return load_checkpoint(path, run_id=RUN_ID, config_hash=cfg.hash(),
                                       node_id=1)["round"]
            except (FileNotFoundError, ValueError):
                return -1

        wait(lambda: ckpt_round() >= 5, 120, "node 1 did not reach round 5")
        os.kill(procs[1].pid, signal.SIGKILL)
        procs[1].wait(30)
        killed_after = ckpt_round()
        assert killed_after < rounds, "node 1 finished before it could be killed"
        procs[1] = node(1, "--resume")
        for p in procs:
            assert p.wait(240) == 0, (tmp_path / "node-1-resumed.log").read_text()[-2000:]
        assert collector.wait(60) == 0, collector.stdout.read() if collector.stdout else ""
    finally:
        for p in [*procs, collector]:
            if p.poll() is None:
                p.kill()
                p.wait()

    got = {(r["round"], r["node"]): r for r in records(run_dir / "metrics.jsonl")}
    want = {(r["round"], r["node"]): r for r in run_inprocess(cfg, topo, run_id=RUN_ID).records}
    assert set(got) == set(want)  # every round of every node, once
    for key, ref in want.items():
        for field in LEARNING:
            if field in ref:
                assert same(got[key][field], ref[field]), (key, field)
    resumed_log = (tmp_path / "node-1-resumed.log").read_text()
    assert f"resuming after round {killed_after}" in resumed_log
    others = (tmp_path / "node-0.log").read_text() + (tmp_path / "node-2.log").read_text()
    assert "neighbour 1 rejoined" in others
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok"
