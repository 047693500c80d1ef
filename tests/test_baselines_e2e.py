"""Every baseline through real node processes (ipc sockets) gives exactly the numbers of the
in-process driver: same accuracies, same bytes, same training losses, node by node.

3 nodes (a star for fedavg), 2 rounds, small-cnn on the tiny data set of conftest: about 5 s
per method, most of it the node processes starting up.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcepl.launcher.launch import launch
from mcepl.node.algorithms import BASELINES
from mcepl.node.inprocess import run_inprocess
from mcepl.topology import generate

pytestmark = pytest.mark.slow

ROUNDS = 2


def _key_numbers(records: list[dict]) -> dict[tuple[int, int], tuple]:
    """(round, node) -> what both drivers must agree on."""
    out = {}
    for r in records:
        loss = r.get("train_loss") if r["round"] >= 1 else None  # NaN at round 0 (JSON: null)
        out[(r["round"], r["node"])] = (r.get("test_acc"), r["bytes_sent"], r["bytes_received"],
                                        loss, r.get("density"))
    return out


@pytest.mark.parametrize("name", [cls.name for cls in BASELINES])
def test_real_processes_match_inprocess(name: str, tiny_cfg, tmp_path: Path) -> None:
    cfg = tiny_cfg(algorithm={"name": name}, run={"rounds": ROUNDS, "eval_every": 1})
    topo = generate("star" if name == "fedavg" else "ring", 3, transport="ipc", ipc_dir=tmp_path)
    launch(cfg, topo, tmp_path / "run", quiet=True)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    got = _key_numbers([json.loads(ln) for ln in lines if ln.strip()])
    reference = _key_numbers(run_inprocess(cfg, topo).records)
    assert got == reference
    assert len(reference) == 3 * (ROUNDS + 1)
    assert all(got[(k, i)][0] is not None for k in range(ROUNDS + 1) for i in range(3))
    sent = [got[(k, i)][1] for k in range(1, ROUNDS + 1) for i in range(3)]
    assert all(s == 0 for s in sent) if name == "ind-weipru" else all(s > 0 for s in sent)
