"""MCE-PL and ind-mask (node/algorithms/mcepl.py) on the tiny synthetic data set.

Most tests drive the `Algorithm` objects with a small in-memory round loop written here
(`run_round`), so they can look inside the nodes between rounds; the determinism test goes
through `run_inprocess`. Retention ratios are chosen so that K = n - floor((1-r) n) is the same in
exact and in floating-point arithmetic for the small CNN's layers (test_masks.py pins K itself).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from mcepl.config import Config
from mcepl.node.algorithms import MCEPL, Algorithm, IndMask, MinibatchSampler
from mcepl.node.data import load_dataset
from mcepl.node.factory import all_shards, build_algorithm
from mcepl.node.inprocess import run_inprocess
from mcepl.protocol.payload import Payload
from mcepl.topology import Topology, generate

RETENTION = [0.3, 0.5, 0.75, 1.0]
TIMING_KEYS = {"compute_s", "t_end", "wall_s"}  # wall-clock numbers, never reproducible

MakeCfg = Callable[..., Config]


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    """One intra-op thread, as the drivers use per node (and fast on a shared machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def ring4() -> Topology:
    return generate("ring", 4, retention=RETENTION)


def er4() -> Topology:
    # seed 1: edges (0,1), (1,2), (1,3), (2,3): degrees 1, 3, 2, 2
    return generate("er", 4, p=0.6, seed=1, retention=RETENTION)


def build_nodes(cfg: Config, topo: Topology) -> list[Algorithm]:
    shards = all_shards(cfg, topo)
    return [build_algorithm(cfg, topo, n.id, shards[n.id]) for n in topo.nodes]


def run_round(algos: list[Algorithm], rnd: int) -> None:
    """One round as the drivers run it: local steps, then every phase's exchange in memory."""
    if rnd >= 1:
        for a in algos:
            a.local_step(rnd)
    phases = {a.phases(rnd) for a in algos}
    assert len(phases) == 1
    for phase in range(phases.pop()):
        out = [a.outgoing(rnd, phase) for a in algos]
        for i, a in enumerate(algos):
            assert sorted(out[i]) == sorted(a.ctx.neighbors)
            msgs = {j: out[j][i] for j in a.expected(rnd, phase)}
            for j, payload in msgs.items():
                a.check(rnd, phase, j, payload)
            a.incoming(rnd, phase, msgs)


def exact_keep(n: int, r: float) -> int:
    return n - math.floor((1 - Fraction(str(r))) * n)


def my_thres(a: torch.Tensor, r: float) -> torch.Tensor:
    """Thres_r written independently: the K largest, ties to the lower flat index."""
    flat = a.reshape(-1)
    k = exact_keep(flat.numel(), r)
    order = torch.argsort(-flat, stable=True)
    out = torch.zeros(flat.numel(), dtype=torch.bool)
    out[order[:k]] = True
    return out.reshape(a.shape)


def _is_timing(key: str) -> bool:
    return key in TIMING_KEYS or key.endswith("_s") or key.startswith("t_")


def _nan_safe(v: Any) -> Any:
    return "nan" if isinstance(v, float) and math.isnan(v) else v


def strip_timing(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records without wall-clock fields, NaN made comparable."""
    return [{k: _nan_safe(v) for k, v in r.items() if not _is_timing(k)} for r in records]


def snapshot(a: Algorithm) -> dict[str, Any]:
    s = a.state_dict()
    return {k: {n: t.clone() for n, t in v.items()} for k, v in s.items()
            if k in ("z", "m", "a_prev", "m_half", "g")}


def assert_same_state(s1: dict[str, Any], s2: dict[str, Any]) -> None:
    assert s1.keys() == s2.keys()
    for k in s1:
        assert list(s1[k]) == list(s2[k]), k
        for n in s1[k]:
            assert s1[k][n].dtype == s2[k][n].dtype, (k, n)
            assert torch.equal(s1[k][n], s2[k][n]), (k, n)


# --------------------------------------------------------------------------- the fixture data


def test_tiny_data_is_fashion_mnist_format_and_learnable(tiny_data_dir: Path) -> None:
    names = sorted(p.name for p in tiny_data_dir.iterdir())
    assert names == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                     "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    ds = load_dataset("fashion-mnist", root=tiny_data_dir, download=False)
    assert ds.train_x.shape == (600, 1, 28, 28) and ds.test_x.shape == (200, 1, 28, 28)
    assert np.bincount(ds.train_y).tolist() == [60] * 10
    # nearest class mean separates the classes: the data are learnable
    x_tr = ds.train_x.reshape(600, -1).astype(np.float64)
    x_te = ds.test_x.reshape(200, -1).astype(np.float64)
    means = np.stack([x_tr[ds.train_y == c].mean(0) for c in range(10)])
    pred = ((x_te[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == ds.test_y).mean() > 0.95


# --------------------------------------------------------------------------- w is never touched


@pytest.mark.parametrize("algo", ["mcepl", "ind-mask"])
def test_shared_weights_never_change(tiny_cfg: MakeCfg, algo: str) -> None:
    cfg = tiny_cfg(algorithm={"name": algo, "weight_decay": 5e-4})
    algos = build_nodes(cfg, ring4())
    before = [{k: v.clone() for k, v in a.ctx.model.module.state_dict().items()} for a in algos]
    for k in before[0]:  # identical across nodes from the start
        for b in before[1:]:
            assert torch.equal(b[k], before[0][k])
    for rnd in range(cfg.run.rounds + 1):
        run_round(algos, rnd)
        for a in algos:
            a.predict(a.ctx.shard.test_x[:4])
    for a, b in zip(algos, before, strict=True):
        after = a.ctx.model.module.state_dict()
        assert list(after) == list(b)
        for k in b:
            assert torch.equal(after[k], b[k]), k
        assert all(not p.requires_grad and p.grad is None for p in a.ctx.model.module.parameters())
    # and the scores did move: training happened
    z0 = build_nodes(cfg, ring4())[0].z
    assert any(not torch.equal(z0[n], algos[0].z[n]) for n in z0)


# --------------------------------------------------------------------------- exactly K ones


@pytest.mark.parametrize("algo", ["mcepl", "ind-mask"])
@pytest.mark.parametrize("topo_fn", [ring4, er4])
def test_exactly_k_ones_per_layer_every_round(tiny_cfg: MakeCfg, algo: str,
                                              topo_fn: Callable[[], Topology]) -> None:
    cfg = tiny_cfg(algorithm={"name": algo, "fil_threshold": 0})
    topo = topo_fn()
    algos = build_nodes(cfg, topo)
    for rnd in range(cfg.run.rounds + 1):
        run_round(algos, rnd)
        for i, a in enumerate(algos):
            r = topo.node(i).retention
            assert a.ctx.retention == r == RETENTION[i]
            assert list(a.m) == a.ctx.model.names
            for n, m in a.m.items():
                assert m.dtype == torch.bool and m.shape == a.ctx.model.w[n].shape
                assert int(m.sum()) == exact_keep(m.numel(), r), (rnd, i, n)
            if algo == "mcepl" and rnd >= 1:
                for n, m in a.m_half.items():
                    assert int(m.sum()) == exact_keep(m.numel(), r), (rnd, i, n)
            density = a.stats()["density"]
            total = sum(m.numel() for m in a.m.values())
            assert density == pytest.approx(sum(exact_keep(m.numel(), r)
                                                 for m in a.m.values()) / total)
    # different r really gives different masks sizes
    dens = [a.stats()["density"] for a in algos]
    assert dens == sorted(dens) and len(set(dens)) == 4


def test_fil_threshold_zeroes_sparse_rows(tiny_cfg: MakeCfg) -> None:
    """With Fil on, every kept filter/row holds more than tau ones (and never more than K)."""
    tau = 20
    cfg = tiny_cfg(algorithm={"fil_threshold": tau})
    algos = build_nodes(cfg, ring4())
    for rnd in range(3):
        run_round(algos, rnd)
    for a in algos:
        for m in a.m.values():
            counts = m.reshape(m.shape[0], -1).sum(1)
            assert ((counts == 0) | (counts > tau)).all()
            assert int(m.sum()) <= exact_keep(m.numel(), a.ctx.retention)


@pytest.mark.parametrize("algo", ["mcepl", "ind-mask"])
def test_linear_retention_honoured(tiny_cfg: MakeCfg, algo: str) -> None:
    cfg = tiny_cfg(algorithm={"name": algo, "linear_retention": 0.6})
    algos = build_nodes(cfg, ring4())
    for rnd in range(2):
        run_round(algos, rnd)
        for a in algos:
            for n, m in a.m.items():
                r = 0.6 if a.ctx.model.is_linear(n) else a.ctx.retention
                assert int(m.sum()) == exact_keep(m.numel(), r), (a.ctx.node_id, n)
    assert [a.ctx.model.is_linear(n) for n in algos[0].m] == [False, False, True, True]


# ------------------------------------------------------------------------ initial neighbour masks


def test_init_neighbor_masks_thres_sends_at_round_zero(tiny_cfg: MakeCfg) -> None:
    topo = er4()
    algos = build_nodes(tiny_cfg(algorithm={"init_neighbor_masks": "thres"}), topo)
    init_masks = []
    for a in algos:
        assert a.phases(0) == 1 and a.phases(1) == 1 and a.phases(5) == 1
        m0 = {n: my_thres(a.z[n].abs(), a.ctx.retention) for n in a.z}
        for n in a.z:
            assert torch.equal(a.m[n], m0[n])
        out = a.outgoing(0, 0)
        assert sorted(out) == a.ctx.neighbors
        for p in out.values():
            assert p.kind == "mask" and list(p.tensors) == a.ctx.model.names
            assert all(torch.equal(p.tensors[n], m0[n]) for n in m0)
        init_masks.append(m0)
    run_round(algos, 0)
    for a in algos:
        nb = a.ctx.neighbors
        for n in a.z:
            expected = torch.stack([init_masks[j][n].float() for j in nb]).mean(0)
            torch.testing.assert_close(a.a_prev[n], expected)
            assert torch.equal(a.m[n], init_masks[a.ctx.node_id][n])  # round 0 trains nothing
    # in the driver: round 0 carries one message per neighbour
    res = run_inprocess(tiny_cfg(run={"rounds": 1}), topo)
    r0 = [r for r in res.records if r["round"] == 0]
    assert [r["msgs_sent"] for r in r0] == [topo.degree(i) for i in range(4)]
    assert all(r["bytes_sent"] > 0 for r in r0)


def test_init_neighbor_masks_shared_random_does_not_send(tiny_cfg: MakeCfg) -> None:
    topo = ring4()
    cfg = tiny_cfg(algorithm={"init_neighbor_masks": "shared-random"})
    algos = build_nodes(cfg, topo)
    for a in algos:
        assert a.phases(0) == 0 and a.phases(1) == 1
    for n in algos[0].a_prev:
        a0 = algos[0].a_prev[n]
        assert a0.dtype.is_floating_point
        assert set(a0.unique().tolist()) <= {0.0, 1.0}
        for a in algos[1:]:
            assert torch.equal(a.a_prev[n], a0)  # one shared mask for everyone
        expected = 0.9 if algos[0].ctx.model.is_linear(n) else 0.3
        assert float(a0.mean()) == pytest.approx(expected, abs=0.05)
    res = run_inprocess(cfg.with_overrides(run={"rounds": 1}), topo)
    r0 = [r for r in res.records if r["round"] == 0]
    assert all(r["msgs_sent"] == 0 and r["bytes_sent"] == 0 for r in r0)
    r1 = [r for r in res.records if r["round"] == 1]
    assert all(r["msgs_sent"] == 2 for r in r1)


def test_ind_mask_sends_nothing(tiny_cfg: MakeCfg) -> None:
    res = run_inprocess(tiny_cfg(algorithm={"name": "ind-mask"}, run={"rounds": 2}), ring4())
    assert all(r["msgs_sent"] == 0 and r["bytes_sent"] == 0 for r in res.records)
    a = res.algorithms[0]
    assert isinstance(a, IndMask) and not isinstance(a, MCEPL)
    assert all(a.phases(k) == 0 for k in range(3)) and a.outgoing(1, 0) == {}


# --------------------------------------------------------------------------- one iteration by hand


@pytest.mark.parametrize("topo_fn", [ring4, er4])
def test_one_mcepl_iteration_by_hand(tiny_cfg: MakeCfg, topo_fn: Callable[[], Topology]) -> None:
    lr, lr_ft, wd, lam = 0.7, 0.3, 1e-3, 0.01
    cfg = tiny_cfg(algorithm={"lr": lr, "lr_ft": lr_ft, "weight_decay": wd, "group_lasso": lam})
    topo = topo_fn()
    algos = build_nodes(cfg, topo)
    run_round(algos, 0)
    run_round(algos, 1)  # so that m, z and a_prev are all past their initial values
    node = 1
    a = algos[node]
    assert isinstance(a, MCEPL)
    r = a.ctx.retention
    model = a.ctx.model
    names = model.names
    z = {n: a.z[n].clone() for n in names}
    m = {n: a.m[n].clone() for n in names}
    a_prev = {n: a.a_prev[n].clone() for n in names}
    # the node's fixed weights: the shared w, times 1/sqrt(r) under the default "-scaled" init
    assert cfg.model.weight_init == "kaiming-normal-scaled" and model.retention_scaled
    w = {n: model.w[n].detach().clone() * (1.0 / math.sqrt(r)) for n in names}
    sampler = MinibatchSampler(len(a.ctx.shard.train_y), a.params.batch_size, torch.Generator())
    sampler.load_state_dict(a.sampler.state_dict())
    idx = sampler.next()

    a.local_step(2)
    z_half_algo = {n: a.z[n].clone() for n in names}

    # step 1: loss with m^(k-1), STE gradient + group lasso + weight decay, z^(k-1/2)
    x, y = a.ctx.shard.train_x[idx], a.ctx.shard.train_y[idx]
    v = {n: (w[n] * m[n].float()).requires_grad_(True) for n in names}
    model.module.train()
    loss = F.cross_entropy(functional_call(model.module, v, (x,), strict=False), y)
    dl_dv = dict(zip(names, torch.autograd.grad(loss, [v[n] for n in names]), strict=True))
    assert a.stats()["train_loss"] == pytest.approx(float(loss.detach()), rel=1e-6)
    g, z_half, m_half = {}, {}, {}
    for n in names:
        rows = z[n].reshape(z[n].shape[0], -1)
        gl = (rows / rows.norm(dim=1, keepdim=True)).reshape(z[n].shape)
        g[n] = dl_dv[n] * w[n] * torch.sign(z[n]) + lam * gl + wd * z[n]
        z_half[n] = z[n] - lr * g[n]
        # step 2: intermediate mask from z^(k-1/2) and the previous neighbour masks
        y_half = z_half[n] + z_half[n].abs().mean() * torch.sign(z_half[n]) * a_prev[n]
        m_half[n] = my_thres(y_half.abs(), r)
    for n in names:
        torch.testing.assert_close(a.g[n], g[n], rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(a.z[n], z_half[n], rtol=1e-5, atol=1e-7)
        assert torch.equal(a.m_half[n], m_half[n]), n
        assert torch.equal(a.m[n], m[n])  # the model mask is not replaced before the exchange

    # step 3: what is sent is m^(k-1/2), a binary tensor per layer, to every neighbour
    out = a.outgoing(2, 0)
    assert sorted(out) == topo.neighbors(node)
    for p in out.values():
        assert p.kind == "mask" and list(p.tensors) == names
        assert all(p.tensors[n].dtype == torch.bool for n in names)
        assert all(torch.equal(p.tensors[n], m_half[n]) for n in names)

    # hand-made neighbour masks
    gen = torch.Generator().manual_seed(42)
    msgs = {j: Payload("mask", {n: torch.rand(z[n].shape, generator=gen) < 0.2 + 0.2 * j
                                for n in names}) for j in topo.neighbors(node)}
    for j, p in msgs.items():
        a.check(2, 0, j, p)
    a.incoming(2, 0, msgs)

    for n in names:
        # step 4: fine-tuning with A^(k-1/2), only where some neighbour keeps the entry
        big_a = torch.stack([msgs[j].tensors[n].float() for j in sorted(msgs)]).mean(0)
        z_k = z_half[n] - lr_ft * g[n] * big_a
        # step 5: aggregation
        y_k = z_k + z_k.abs().mean() * torch.sign(z_k) * big_a
        m_k = my_thres(y_k.abs(), r)
        torch.testing.assert_close(a.z[n], z_k, rtol=1e-5, atol=1e-7)
        untouched = big_a == 0
        assert untouched.any() and (~untouched).any()
        assert torch.equal(a.z[n][untouched], z_half_algo[n][untouched])  # bit for bit
        torch.testing.assert_close(a.a_prev[n], big_a)
        assert torch.equal(a.m[n], m_k), n
        assert int(a.m[n].sum()) == exact_keep(a.m[n].numel(), r)
    # the personalised model w ⊙ m^(k) is what is evaluated
    xe = a.ctx.shard.test_x[:8]
    with torch.no_grad():
        model.module.eval()
        expected = functional_call(model.module, {n: w[n] * a.m[n].float() for n in names},
                                   (xe,), strict=False)
    torch.testing.assert_close(a.predict(xe), expected, rtol=0, atol=0)


def test_fine_tune_leaves_untouched_entries_alone(tiny_cfg: MakeCfg) -> None:
    """Neighbours that keep nothing: step 4 moves no entry, step 5 gives Thres(|z^(k-1/2)|)."""
    algos = build_nodes(tiny_cfg(), ring4())
    run_round(algos, 0)
    a = algos[0]
    a.local_step(1)
    z_half = {n: t.clone() for n, t in a.z.items()}
    empty = {j: Payload("mask", {n: torch.zeros_like(t, dtype=torch.bool) for n, t in a.z.items()})
             for j in a.ctx.neighbors}
    a.incoming(1, 0, empty)
    for n in z_half:
        assert torch.equal(a.z[n], z_half[n])
        assert torch.equal(a.m[n], my_thres(z_half[n].abs(), a.ctx.retention))


# --------------------------------------------------------------------------- determinism


def test_run_inprocess_deterministic(tiny_cfg: MakeCfg) -> None:
    topo = er4()
    cfg = tiny_cfg()
    r1 = run_inprocess(cfg, topo)
    r2 = run_inprocess(cfg, topo)
    rec1, rec2 = strip_timing(r1.records), strip_timing(r2.records)
    assert len(rec1) == 4 * (cfg.run.rounds + 1)
    assert rec1 == rec2
    assert all("test_acc" in r and "train_loss" in r for r in rec1 if r["round"] >= 1)
    for a, b in zip(r1.algorithms, r2.algorithms, strict=True):
        assert_same_state(snapshot(a), snapshot(b))
    r3 = run_inprocess(cfg.with_overrides(run={"seed": 1}), topo)
    assert strip_timing(r3.records) != rec1
    assert any(r.get("train_loss") != s.get("train_loss") for r, s in zip(
        strip_timing(r3.records), rec1, strict=True) if r["round"] >= 1)
    assert any(not torch.equal(a.z[n], b.z[n]) for a, b in zip(
        r1.algorithms, r3.algorithms, strict=True) for n in a.z)


# --------------------------------------------------------------------------- check()


def test_check_rejects_bad_payloads(tiny_cfg: MakeCfg) -> None:
    algos = build_nodes(tiny_cfg(), ring4())
    a = algos[0]
    good = algos[1].outgoing(0, 0)[0]
    a.check(0, 0, 1, good)  # fine
    t = dict(good.tensors)
    names = list(t)
    bad: dict[str, Payload] = {
        "kind": Payload("model", t),
        "missing layer": Payload("mask", {n: t[n] for n in names[:-1]}),
        "extra layer": Payload("mask", {**t, "extra.weight": torch.ones(3, dtype=torch.bool)}),
        "renamed": Payload("mask", {("x" + n if n == names[0] else n): v for n, v in t.items()}),
        "order": Payload("mask", {n: t[n] for n in reversed(names)}),
        "shape": Payload("mask", {**t, names[0]: t[names[0]].reshape(-1)}),
        "transposed": Payload("mask", {**t, names[-1]: t[names[-1]].T.contiguous()}),
        "dtype float": Payload("mask", {**t, names[1]: t[names[1]].float()}),
        "dtype int": Payload("mask", {**t, names[2]: t[names[2]].long()}),
        "empty": Payload("mask", {}),
    }
    for why, p in bad.items():
        with pytest.raises(ValueError):
            a.check(1, 0, 1, p)
            pytest.fail(f"check() accepted a payload with a wrong {why}")


# --------------------------------------------------------------------------- checkpoints


def _save_load(states: list[dict[str, Any]]) -> list[dict[str, Any]]:
    buf = io.BytesIO()
    torch.save(states, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize(("algo", "init"), [("mcepl", "thres"), ("mcepl", "shared-random"),
                                            ("ind-mask", "thres")])
def test_state_dict_round_trip_continues_bit_identically(tiny_cfg: MakeCfg, algo: str,
                                                         init: str) -> None:
    total, cut = 5, 2
    cfg = tiny_cfg(algorithm={"name": algo, "init_neighbor_masks": init, "weight_decay": 1e-3},
                   run={"rounds": total})
    topo = er4()

    ref = build_nodes(cfg, topo)
    ref_trace = []
    for rnd in range(total + 1):
        run_round(ref, rnd)
        ref_trace.append([(snapshot(a), a.stats()) for a in ref])

    first = build_nodes(cfg, topo)
    for rnd in range(cut + 1):
        run_round(first, rnd)
    saved = _save_load([a.state_dict() for a in first])
    del first

    resumed = build_nodes(cfg, topo)  # fresh objects: their own init is overwritten by the load
    for a, s in zip(resumed, saved, strict=True):
        a.load_state_dict(s)
    for i, a in enumerate(resumed):
        assert_same_state(snapshot(a), ref_trace[cut][i][0])
    for rnd in range(cut + 1, total + 1):
        run_round(resumed, rnd)
        for i, a in enumerate(resumed):
            s_ref, stats_ref = ref_trace[rnd][i]
            assert_same_state(snapshot(a), s_ref)
            assert a.stats() == stats_ref
    x = resumed[0].ctx.shard.test_x[:8]
    assert torch.equal(resumed[0].predict(x), ref[0].predict(x))


def test_state_dict_is_a_snapshot(tiny_cfg: MakeCfg) -> None:
    """A state_dict held in memory must not change when training goes on (e.g. a checkpoint
    written later by another thread): loading it must resume from the round it was taken."""
    cfg = tiny_cfg(run={"rounds": 4})
    topo = ring4()
    algos = build_nodes(cfg, topo)
    for rnd in range(2):
        run_round(algos, rnd)
    taken = [a.state_dict() for a in algos]
    expected = [snapshot(a) for a in algos]
    run_round(algos, 2)  # training continues after the checkpoint was taken
    for a, s, e in zip(algos, taken, expected, strict=True):
        fresh = build_nodes(cfg, topo)[a.ctx.node_id]
        fresh.load_state_dict(s)
        assert_same_state(snapshot(fresh), e)
