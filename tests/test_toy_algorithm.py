"""Adding an algorithm is one module and one registration line: a toy algorithm defined only in
this file runs through the in-process driver, the launcher's default topology, the `mcepl`
command, and real node processes, with no other file of the project changed.

The node processes load it the way a user's own algorithm is loaded: this file's folder on
PYTHONPATH and its module name in MCEPL_PLUGINS (mcepl.node.plugins imports it, and importing
registers it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from mcepl.config import config_from_dict
from mcepl.launcher.cli import build_parser
from mcepl.launcher.launch import launch
from mcepl.launcher.resolve import default_topology
from mcepl.node.algorithms import Algorithm, NodeContext, register_algorithm
from mcepl.node.algorithms.base import expect_tensors
from mcepl.node.inprocess import run_inprocess
from mcepl.node.record import SCHEMA_VERSION
from mcepl.protocol.payload import Payload
from mcepl.registry import ALGORITHMS
from mcepl.topology import generate

COMPARED = ("test_acc", "label_mass", "bytes_sent", "bytes_received", "msgs_sent",
            "msgs_received", "mask_entries")


@dataclass
class ToyParams:
    batch_size: int = 8
    mix: float = 0.5  # weight of the neighbours' mean when merging


@register_algorithm
class ToyPrior(Algorithm):
    """Learns only a label prior: counts the labels of its minibatches, gossips the normalised
    counts (float32) with its neighbours, and predicts the most likely label everywhere."""

    name = "toy-prior"
    Params: ClassVar[type] = ToyParams
    required_topology = "ring"

    def __init__(self, ctx: NodeContext, params: ToyParams) -> None:
        super().__init__(ctx, params)
        self.k = ctx.shard.num_classes
        self.prior = torch.full((self.k,), 1.0 / self.k)
        self.gen = ctx.generator(purpose=5)

    def local_step(self, rnd: int) -> None:
        n = len(self.ctx.shard.train_y)
        idx = torch.randint(0, n, (self.params.batch_size,), generator=self.gen)
        counts = torch.bincount(self.ctx.shard.train_y[idx], minlength=self.k).float()
        self.prior = 0.8 * self.prior + 0.2 * counts / counts.sum()

    def outgoing(self, rnd: int, phase: int) -> dict[int, Payload]:
        return self.broadcast(Payload("toy-prior", {"p": self.prior.clone()}))

    def check(self, rnd: int, phase: int, sender: int, payload: Payload) -> None:
        expect_tensors(payload, "toy-prior", {"p": ((self.k,), torch.float32)})

    def incoming(self, rnd: int, phase: int, msgs: dict[int, Payload]) -> None:
        theirs = torch.stack([msgs[j].tensors["p"] for j in sorted(msgs)]).mean(0)
        self.prior = (1 - self.params.mix) * self.prior + self.params.mix * theirs

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.prior.log().expand(len(x), self.k)

    def stats(self) -> dict[str, float]:
        return {"label_mass": float(self.prior.max())}

    def state_dict(self) -> dict[str, Any]:
        return {"prior": self.prior.clone(), "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.prior = state["prior"].clone()
        self.gen.set_state(state["gen"])


def toy_cfg(tiny_cfg, rounds: int = 3):
    return tiny_cfg(algorithm={"name": "toy-prior", "mix": 0.25},
                    run={"rounds": rounds, "eval_every": 1})


def test_registered_by_its_one_line_and_validated_by_the_config(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert ALGORITHMS["toy-prior"] is ToyPrior
    cfg = config_from_dict({"algorithm": {"name": "toy-prior", "mix": 1}})
    assert cfg.algorithm.params == ToyParams(mix=1.0)  # typed, int converted to float
    assert cfg.to_dict()["algorithm"] == {"name": "toy-prior", "batch_size": 8, "mix": 1.0}
    with pytest.raises(ValueError, match="algorithm.lr"):
        config_from_dict({"algorithm": {"name": "toy-prior", "lr": 0.1}})
    # the launcher's default topology asks the algorithm which graph it needs
    topo = default_topology(cfg, 5, transport="ipc")
    assert topo.meta["kind"] == "ring" and all(len(topo.neighbors(i)) == 2 for i in topo.ids)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["launch", "--help"])
    assert "toy-prior" in capsys.readouterr().out  # the CLI lists what is registered


def test_inprocess_driver_runs_it(tiny_cfg) -> None:
    cfg = toy_cfg(tiny_cfg)
    topo = generate("ring", 4, retention=0.5, base_port=25000)
    res = run_inprocess(cfg, topo)
    recs = res.records
    assert len(recs) == 4 * 4
    train = [r for r in recs if r["round"] >= 1]
    # two neighbours, one float32 [10] tensor each: the bill is real, the same for everyone
    assert all(r["msgs_sent"] == 2 and r["msgs_received"] == 2 for r in train)
    assert len({r["bytes_sent"] for r in train}) == 1 and train[0]["bytes_sent"] > 2 * 40
    assert all(r["mask_entries"] == 0 and "bits_per_entry" not in r for r in recs)
    assert all(0.0 <= r["test_acc"] <= 1.0 and 0.1 <= r["label_mass"] <= 1.0 for r in recs)
    assert res.round_records[0].schema_version == SCHEMA_VERSION


@pytest.mark.slow
def test_real_node_processes_run_it(tmp_path: Path, tiny_cfg,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The nodes import this file as a plugin and give the in-process numbers."""
    here = Path(__file__).resolve().parent
    monkeypatch.setenv("MCEPL_PLUGINS", Path(__file__).stem)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(here), *filter(None, [os.environ.get("PYTHONPATH")])]))
    cfg = toy_cfg(tiny_cfg)
    topo = generate("ring", 3, retention=0.5, transport="ipc", ipc_dir=tmp_path)
    net = launch(cfg, topo, tmp_path / "run", quiet=True)
    assert net.summary["status"] == "ok" and net.summary["algorithm"] == "toy-prior"
    got = {(r["round"], r["node"]): r for r in map(
        json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())}
    want = {(r["round"], r["node"]): r for r in run_inprocess(cfg, topo).records}
    assert set(got) == set(want)
    for key, ref in want.items():
        for field in COMPARED:
            assert got[key].get(field) == ref.get(field), (key, field)
        assert got[key]["comm_s"] >= 0 and got[key]["dropped"] == 0
