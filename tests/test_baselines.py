"""The weight-based baselines: each update rule on tiny tensors, the payloads, and a few rounds
of every method in the in-process driver (deterministic, checkpoint-complete)."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from mcepl.config import ConfigError, config_from_dict
from mcepl.node.algorithms import ALGORITHMS, BASELINES, MinibatchSampler, NodeContext
from mcepl.node.algorithms.dispfl import SCREEN_PURPOSE, DisPFL, fire_and_regrow
from mcepl.node.algorithms.dsgd import DSGD, DSGDProx
from mcepl.node.algorithms.fedavg import FedAvg, check_star, sample_weighted_average
from mcepl.node.algorithms.lottery import LotteryDSGD, lottery_prune
from mcepl.node.algorithms.weights import (
    SAMPLER_PURPOSE,
    check_dense,
    check_sparse,
    decode_sparse,
    dense_payload,
    keep_top,
    loss_and_grads,
    partial_average,
    prune,
    sparse_payload,
)
from mcepl.node.algorithms.weipru import AvrWeiPru, IndWeiPru, ParWeiPru
from mcepl.node.data import Shard
from mcepl.node.inprocess import run_inprocess
from mcepl.node.masks import keep_count
from mcepl.node.models import MaskedModel
from mcepl.protocol import decode_message, encode_payload, message_size
from mcepl.protocol.payload import Payload
from mcepl.topology import Topology, generate, mixing_weights

NAMES = [cls.name for cls in BASELINES]


# ---- a tiny world: a 2-layer MLP on 8 features, synthetic shards -----
class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def tiny_ctx(topo: Topology, node: int, seed: int = 0, rounds: int = 10) -> NodeContext:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = TinyNet()
    g = torch.Generator().manual_seed(100 + node)
    x = torch.randn(40, 8, generator=g)
    y = torch.randint(0, 3, (40,), generator=g)
    shard = Shard(train_x=x, train_y=y, test_x=x[:10], test_y=y[:10], labels=[0, 1, 2],
                  num_classes=3, input_shape=(1, 1, 8))
    return NodeContext(node_id=node, topology=topo, shard=shard, model=MaskedModel(module),
                       total_rounds=rounds, seed=seed)


def build(cls: type, topo: Topology, rounds: int = 10, **params) -> list:
    return [cls(tiny_ctx(topo, i, rounds=rounds), cls.Params(batch_size=8, **params))
            for i in topo.ids]


def play_round(algos: list, rnd: int) -> None:
    """The round loop without the wire: local step, then each phase's exchange."""
    if rnd >= 1:
        for a in algos:
            a.local_step(rnd)
    for phase in range(algos[0].phases(rnd)):
        inbox: list[dict[int, Payload]] = [{} for _ in algos]
        for i, a in enumerate(algos):
            for j, p in a.outgoing(rnd, phase).items():
                inbox[j][i] = p
        for i, a in enumerate(algos):
            assert set(inbox[i]) == set(a.expected(rnd, phase))
            for j, p in inbox[i].items():
                a.check(rnd, phase, j, p)
            a.incoming(rnd, phase, inbox[i])


def first_batch_grads(algo) -> dict[str, torch.Tensor]:
    """The gradient the node's first local step takes (same minibatch, same point)."""
    ctx = algo.ctx
    idx = MinibatchSampler(len(ctx.shard.train_y), algo.params.batch_size,
                           ctx.generator(purpose=SAMPLER_PURPOSE)).next()
    return loss_and_grads(ctx.model, algo.x, ctx.shard.train_x[idx], ctx.shard.train_y[idx])[2]


PATH3 = generate("ring", 3)  # a triangle: every node sees both others
PATH4 = Topology(nodes=generate("ring", 4).nodes, edges=[(0, 1), (1, 2), (2, 3)]).validate("<p4>")


# ---- mixing and dsgd / dsgd-prox -----------------------------------------------------------------
def test_metropolis_weights_are_doubly_stochastic_and_dsgd_uses_its_row() -> None:
    topo = generate("er", 12, p=0.3, seed=3)
    w = mixing_weights(topo, "metropolis")
    assert np.allclose(w.sum(axis=0), 1) and np.allclose(w.sum(axis=1), 1)
    assert np.allclose(w, w.T) and (w >= 0).all()
    algo = DSGD(tiny_ctx(topo, 5), DSGD.Params())
    assert algo.coeffs == [w[5, j] for j in sorted([5, *topo.neighbors(5)])]
    uni = DSGD(tiny_ctx(topo, 5), DSGD.Params(mixing="uniform"))
    assert uni.coeffs == [1 / (len(topo.neighbors(5)) + 1)] * (len(topo.neighbors(5)) + 1)


def test_dsgd_mixes_then_subtracts_the_gradient_at_the_unmixed_model() -> None:
    algos = build(DSGD, PATH4, lr=0.5)
    x0 = [a.x for a in algos]
    g0 = [first_batch_grads(a) for a in algos]
    w = mixing_weights(PATH4)
    play_round(algos, 1)
    for i, a in enumerate(algos):
        for n in a.x:
            want = sum(w[i, j] * x0[j][n] for j in range(4)) - 0.5 * g0[i][n]
            torch.testing.assert_close(a.x[n], want, rtol=1e-5, atol=1e-6)


def test_dsgd_prox_keeps_a_personal_model_pulled_by_mu() -> None:
    algos = build(DSGDProx, PATH4, lr=0.5, mu=0.3)
    x0 = [a.x for a in algos]
    g0 = [first_batch_grads(a) for a in algos]
    w = mixing_weights(PATH4)
    play_round(algos, 1)
    for i, a in enumerate(algos):
        for n in a.x:
            mix = sum(w[i, j] * x0[j][n] for j in range(4))
            want = x0[i][n] - 0.5 * (g0[i][n] + 0.3 * (x0[i][n] - mix))
            torch.testing.assert_close(a.x[n], want, rtol=1e-5, atol=1e-6)


# ---- partial averaging, pruning ------------------------------------------------------------------
def test_partial_average_counts_only_the_nodes_that_keep_an_entry() -> None:
    a, b, c = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([5.0, 6.0, 0.0, 0.0]), \
        torch.tensor([9.0, 0.0, 7.0, 0.0])
    ma, mb, mc = (torch.tensor(v, dtype=torch.bool) for v in
                  ([1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 1, 0]))
    out = partial_average([(a, ma), (b, mb), (c, mc)])
    assert out.tolist() == [5.0, 4.0, 5.0, 0.0]  # (1+5+9)/3, (2+6)/2, (3+7)/2, kept by nobody
    assert partial_average([(a, None), (b, None)]).tolist() == [3.0, 4.0, 1.5, 2.0]


@pytest.mark.parametrize("r", [0.1, 0.25, 0.5, 1.0])
def test_pruning_keeps_exactly_k_per_layer(r: float) -> None:
    g = torch.Generator().manual_seed(1)
    w = {"a.weight": torch.randn(7, 3, 5, 5, generator=g), "b.weight": torch.randn(13, 11,
                                                                                   generator=g)}
    m = prune(w, w, r)
    for n in w:
        assert int(m[n].sum()) == keep_count(w[n].numel(), r)
        dropped = w[n].abs()[~m[n]]
        assert dropped.numel() == 0 or w[n].abs()[m[n]].min() >= dropped.max()
    assert keep_top(torch.tensor([1.0, 3.0, 3.0, 2.0]), 2).tolist() == [False, True, True, False]


@pytest.mark.parametrize("cls", [IndWeiPru, AvrWeiPru, ParWeiPru])
def test_weipru_models_stay_at_exactly_k_per_layer(cls: type) -> None:
    topo = Topology(nodes=[n.__class__(id=n.id, address=n.address, retention=r)
                           for n, r in zip(PATH3.nodes, (0.2, 0.5, 0.7), strict=True)],
                    edges=PATH3.edges).validate("<het>")
    algos = build(cls, topo, lr=0.5)
    for rnd in range(4):
        play_round(algos, rnd)
        for a in algos:
            for n in a.layers:
                k = keep_count(a.x[n].numel(), a.ctx.retention)
                assert int(a.m[n].sum()) == k and int((a.x[n] != 0).sum()) <= k
                assert bool((a.x[n][~a.m[n]] == 0).all())


def test_avr_and_par_weipru_merge_rules() -> None:
    for cls in (AvrWeiPru, ParWeiPru):
        algos = build(cls, PATH3, lr=0.5)
        for a in algos:
            a.local_step(1)
        xs = [{n: t.clone() for n, t in a.x.items()} for a in algos]
        ms = [dict(a.m) for a in algos]
        sent = [a.outgoing(1, 0)[(i + 1) % 3] for i, a in enumerate(algos)]
        algos[0].incoming(1, 0, {1: sent[1], 2: sent[2]})
        for n in xs[0]:
            if cls is AvrWeiPru or n not in ms[0]:
                avg = (xs[0][n] + xs[1][n] + xs[2][n]) / 3
            else:
                avg = partial_average([(xs[j][n], ms[j][n]) for j in range(3)])
            if n in ms[0]:
                keep = prune({n: avg}, [n], algos[0].ctx.retention)[n]
                avg = torch.where(keep, avg, torch.zeros_like(avg))
            torch.testing.assert_close(algos[0].x[n], avg)


# ---- lottery-dsgd --------------------------------------------------------------------------------
def test_lottery_prune_removes_the_rate_by_magnitude_never_below_target() -> None:
    x = {"w": torch.arange(1.0, 101.0)}
    m = {"w": torch.ones(100, dtype=torch.bool)}
    counts = []
    for _ in range(12):
        m, _changed = lottery_prune(x, m, r=0.3, rate=0.2)
        counts.append(int(m["w"].sum()))
    assert counts[:6] == [80, 64, 52, 42, 34, 30] and counts[-1] == 30
    assert m["w"].nonzero().min() == 70  # the 30 largest magnitudes survive


def batch_grads(algo, weights: dict[str, torch.Tensor], purpose: int = SAMPLER_PURPOSE,
                skip: int = 0) -> dict[str, torch.Tensor]:
    """The gradient at `weights` on the node's (skip+1)-th minibatch of stream `purpose`."""
    ctx = algo.ctx
    sampler = MinibatchSampler(len(ctx.shard.train_y), algo.params.batch_size,
                               ctx.generator(purpose=purpose))
    for _ in range(skip):
        sampler.next()
    idx = sampler.next()
    return loss_and_grads(ctx.model, weights, ctx.shard.train_x[idx], ctx.shard.train_y[idx])[2]


def test_lottery_prunes_the_received_model_resets_then_trains_the_ticket_it_sends() -> None:
    """LotteryFL's client order: test the received model, prune it by magnitude, reset the
    survivors to the initial weights, train the reset ticket, send the trained ticket."""
    lr = 0.5
    algos = build(LotteryDSGD, PATH3, lr=lr, acc_threshold=0.0)  # always accurate enough
    a = algos[0]
    init = {n: t.clone() for n, t in a.x.items()}
    received = {n: t + 0.01 * torch.arange(t.numel()).reshape(t.shape) for n, t in init.items()}
    a.x = dict(received)  # as if aggregated last round: magnitudes differ from the init's
    want_m, _ = lottery_prune(received, a.m, a.ctx.retention, 0.2)
    ticket = {n: torch.where(want_m[n], init[n], 0.0) if n in want_m else init[n] for n in init}
    g = batch_grads(a, ticket)
    a.local_step(1)
    assert a.prune_events == 1
    for n in a.layers:
        assert torch.equal(a.m[n], want_m[n])
        assert int(a.m[n].sum()) == a.m[n].numel() - math.floor(0.2 * a.m[n].numel())
    for n in a.x:
        want = ticket[n] - lr * g[n]
        if n in want_m:
            want = torch.where(want_m[n], want, 0.0)
        torch.testing.assert_close(a.x[n], want, rtol=1e-6, atol=1e-7)
        assert not torch.equal(a.x[n], ticket[n])  # trained, not the bare reset ticket
    sent = a.outgoing(1, 0)[1]
    got, masks = decode_sparse(sent, a.x, a.layers, torch.device("cpu"))
    for n in a.x:
        assert torch.equal(got[n], a.x[n])
    assert all(torch.equal(masks[n], want_m[n]) for n in a.layers)
    no = build(LotteryDSGD, PATH3, lr=lr, acc_threshold=1.0)[0]  # never accurate enough
    x0 = dict(no.x)
    g0 = first_batch_grads(no)
    no.local_step(1)
    assert no.prune_events == 0 and all(bool(m.all()) for m in no.m.values())
    for n in no.x:
        torch.testing.assert_close(no.x[n], x0[n] - lr * g0[n])


def test_lottery_aggregates_over_the_keepers_only() -> None:
    algos = build(LotteryDSGD, PATH3, lr=0.5, acc_threshold=0.0)
    for a in algos:
        a.local_step(1)
    xs, ms = [dict(a.x) for a in algos], [dict(a.m) for a in algos]
    sent = [a.outgoing(1, 0)[(i + 1) % 3] for i, a in enumerate(algos)]
    algos[0].incoming(1, 0, {1: sent[1], 2: sent[2]})
    for n in algos[0].layers:
        avg = partial_average([(xs[j][n], ms[j][n]) for j in range(3)])
        torch.testing.assert_close(algos[0].x[n], torch.where(ms[0][n], avg, 0.0))


# ---- dispfl --------------------------------------------------------------------------------------
def test_fire_and_regrow_keeps_density_and_leaves_the_weights_alone() -> None:
    x = {"w": torch.tensor([0.0, 5.0, 0.1, 3.0, 0.0, 0.2, 4.0, 0.0])}
    before = x["w"].clone()
    m = {"w": torch.tensor([0, 1, 1, 1, 0, 1, 1, 0], dtype=torch.bool)}
    grad = {"w": torch.tensor([9.0, 0.0, 8.0, 0.0, 1.0, 0.0, 0.0, 7.0])}
    new_m = fire_and_regrow(x, m, grad, frac=0.6)  # ceil(0.6 * 5) = 3 dropped: 0.1, 0.2, 3.0
    # regrow 3 of the then-inactive entries by |grad|: 0 (9), 2 (8, just dropped), 7 (7)
    assert new_m["w"].tolist() == [True, True, True, False, False, False, True, True]
    assert torch.equal(x["w"], before)


def test_dispfl_round_by_hand() -> None:
    """Dis-PFL's order: masked local SGD; fire and regrow once, after the local steps; send the
    trained model on the OLD mask; aggregate each entry over the neighbours whose old mask keeps
    it, then apply the new mask (regrown entries take the neighbours' average)."""
    lr, steps, rounds = 0.5, 2, 4
    algos = build(DisPFL, PATH3, rounds=rounds, lr=lr, local_steps=steps)
    old = [dict(a.m) for a in algos]
    trained = []
    for a, m0 in zip(algos, old, strict=True):
        x = dict(a.x)
        for k in range(steps):  # masked SGD on the node's own minibatch stream
            g = batch_grads(a, x, skip=k)
            x = {n: t - lr * g[n] for n, t in x.items()}
            x = {n: torch.where(m0[n], t, 0.0) if n in m0 else t for n, t in x.items()}
        trained.append(x)
    new = []
    for a, x, m0 in zip(algos, trained, old, strict=True):
        screen = batch_grads(a, x, purpose=SCREEN_PURPOSE)  # fresh minibatch, trained model
        frac = 0.5 / 2 * (1 + math.cos(0.0))  # round 1 is the code's round index 0
        new.append(fire_and_regrow(x, m0, {n: screen[n].abs() for n in a.layers}, frac))
    for a in algos:
        a.local_step(1)
    for a, x, m0, m1 in zip(algos, trained, old, new, strict=True):
        for n in a.x:
            torch.testing.assert_close(a.x[n], x[n], rtol=1e-6, atol=1e-7)
        for n in a.layers:
            assert torch.equal(a.m_sent[n], m0[n]) and torch.equal(a.m[n], m1[n])
            assert int(a.m[n].sum()) == int(m0[n].sum())
        sent = a.outgoing(1, 0)[(a.ctx.node_id + 1) % 3]
        got, masks = decode_sparse(sent, a.x, a.layers, torch.device("cpu"))
        for n in a.layers:
            assert torch.equal(masks[n], m0[n]) and torch.equal(got[n], x[n])
    inbox = [{j: algos[j].outgoing(1, 0)[i] for j in PATH3.neighbors(i)} for i in range(3)]
    for i, a in enumerate(algos):
        a.incoming(1, 0, inbox[i])
    regrown_checked = False
    for i, a in enumerate(algos):
        for n in a.x:
            total = sum(torch.where(old[j][n], trained[j][n], 0.0) if n in a.layers
                        else trained[j][n] for j in range(3))
            count = sum(old[j][n].float() if n in a.layers else torch.ones_like(total)
                        for j in range(3))
            want = torch.where(count > 0, total / count.clamp_min(1), 0.0)
            if n in a.layers:
                want = torch.where(new[i][n], want, 0.0)
                grown = new[i][n] & ~old[i][n]
                others = sum(old[j][n].float() for j in range(3) if j != i)
                if bool((grown & (others > 0)).any()):
                    regrown_checked = True
                    assert bool((a.x[n][grown & (others > 0)] != 0).all())
                assert bool((a.x[n][old[i][n] & ~new[i][n]] == 0).all())  # dropped
            torch.testing.assert_close(a.x[n], want, rtol=1e-6, atol=1e-7)
    assert regrown_checked


@pytest.mark.parametrize("regrow", ["gradient", "random"])
def test_dispfl_density_is_constant_and_masks_change_once_per_round(regrow: str) -> None:
    algos = build(DisPFL, PATH3, rounds=5, lr=0.5, regrow=regrow, local_steps=3)
    first = [dict(a.m) for a in algos]
    for rnd in range(6):
        before = [dict(a.m) for a in algos]
        play_round(algos, rnd)
        for a, m0 in zip(algos, before, strict=True):
            for n in a.layers:
                kept = keep_count(a.m[n].numel(), a.ctx.retention)
                assert int(a.m[n].sum()) == kept
                assert bool((a.x[n][~a.m[n]] == 0).all())
                if rnd >= 1:  # one drop-and-regrow of ceil(α_t K) entries, whatever local_steps
                    frac = 0.25 * (1 + math.cos(math.pi * (rnd - 1) / 5))
                    assert int((a.m[n] ^ m0[n]).sum()) <= 2 * math.ceil(frac * kept)
    assert any(not torch.equal(a.m[n], f[n]) for a, f in zip(algos, first, strict=True)
               for n in a.layers)


# ---- payloads ------------------------------------------------------------------------------------
def wire(p: Payload) -> tuple[Payload, int]:
    frames = encode_payload(p, run_id="r", round=1, phase=0, sender=0)
    return decode_message(frames, run_id="r").payload, message_size(frames)


def test_sparse_payload_round_trip_and_size() -> None:
    g = torch.Generator().manual_seed(0)
    x = {"c.weight": torch.randn(8, 4, 3, 3, generator=g), "l.weight": torch.randn(10, 32,
                                                                                   generator=g),
         "l.bias": torch.randn(10, generator=g)}
    layers = ["c.weight", "l.weight"]
    m = prune(x, layers, 0.25)
    got, size = wire(sparse_payload(x, m))
    check_sparse(got, x, layers)
    w, masks = decode_sparse(got, x, layers, torch.device("cpu"))
    for n in layers:
        assert torch.equal(masks[n], m[n])
        assert torch.equal(w[n], torch.where(m[n], x[n], 0.0))
        assert torch.equal(got.tensors[f"{n}.values"], x[n][m[n]])  # row-major order
    assert torch.equal(w["l.bias"], x["l.bias"])
    kept = sum(int(m[n].sum()) for n in layers)
    dense_size = wire(dense_payload(x))[1]
    assert size < dense_size
    assert size >= 4 * (kept + 10) + sum(math.ceil(x[n].numel() / 8) for n in layers)


def test_checks_reject_wrong_names_shapes_dtypes_lengths() -> None:
    x = {"l.weight": torch.ones(3, 4), "l.bias": torch.ones(3)}
    m = {"l.weight": torch.tensor([[1, 0, 1, 0]] * 3, dtype=torch.bool)}
    good = sparse_payload(x, m)
    check_sparse(good, x, m)

    def variant(**change) -> Payload:
        t = dict(good.tensors)
        t.update(change)
        return Payload(good.kind, t)

    bad = [
        variant(**{"l.weight.values": torch.ones(5)}),  # popcount is 6
        variant(**{"l.weight.values": torch.ones(2, 3)}),
        variant(**{"l.weight.values": torch.ones(6, dtype=torch.int64)}),
        variant(**{"l.weight.mask": torch.ones(4, 3, dtype=torch.bool)}),
        variant(**{"l.bias": torch.ones(3, dtype=torch.int64)}),
        Payload(good.kind, {k: v for k, v in good.tensors.items() if k != "l.bias"}),
        Payload("model", dict(good.tensors)),
    ]
    for p in bad:
        with pytest.raises(ValueError):
            check_sparse(p, x, m)
    check_dense(dense_payload(x), x)
    for p in (dense_payload({"l.weight": torch.ones(3, 4)}), Payload("model", {
            "l.weight": torch.ones(3, 4), "l.bias": torch.ones(4)}), good):
        with pytest.raises(ValueError):
            check_dense(p, x)


def test_messages_off_the_schedule_are_rejected() -> None:
    dsgd = build(DSGD, PATH3)
    good = dsgd[1].outgoing(1, 0)[0]
    dsgd[0].check(1, 0, 1, good)
    for rnd, phase, sender in [(0, 0, 1), (1, 1, 1), (1, 0, 0), (1, 0, 7)]:
        with pytest.raises(ValueError, match="expects no message"):
            dsgd[0].check(rnd, phase, sender, good)
    ind = build(IndWeiPru, PATH3)
    with pytest.raises(ValueError, match="expects no message"):
        ind[0].check(1, 0, 1, sparse_payload(ind[1].x, ind[1].m))


# ---- fedavg --------------------------------------------------------------------------------------
def test_fedavg_weights_by_sample_count() -> None:
    models = [{"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([4.0, 8.0])}]
    avg = sample_weighted_average(models, [30, 10])
    torch.testing.assert_close(avg["w"], torch.tensor([1.75, 2.0]))


def test_fedavg_round_is_a_sample_weighted_average_everyone_adopts() -> None:
    star = generate("star", 4)
    algos = build(FedAvg, star, lr=0.5)
    algos[2].n_samples = 70  # uneven shares
    for a in algos:
        a.local_step(1)
    trained = [dict(a.x) for a in algos]
    counts = [a.n_samples for a in algos]
    assert algos[0].expected(1, 0) == [1, 2, 3] and algos[1].expected(1, 0) == []
    assert algos[0].expected(1, 1) == [] and algos[3].expected(1, 1) == [0]
    assert algos[0].outgoing(1, 0) == {} and set(algos[1].outgoing(1, 0)) == {0}
    for rnd_phase in range(2):
        inbox: list[dict[int, Payload]] = [{} for _ in algos]
        for i, a in enumerate(algos):
            for j, p in a.outgoing(1, rnd_phase).items():
                inbox[j][i] = p
        for i, a in enumerate(algos):
            for j, p in inbox[i].items():
                a.check(1, rnd_phase, j, p)
            a.incoming(1, rnd_phase, inbox[i])
    for n in trained[0]:
        want = sum(c * t[n] for c, t in zip(counts, trained, strict=True)) / sum(counts)
        for a in algos:
            torch.testing.assert_close(a.x[n], want)
    with pytest.raises(ValueError):  # a client does not take models from another client
        algos[1].check(1, 1, 2, algos[0].outgoing(1, 1)[1])
    upload = algos[1].outgoing(2, 0)[0]
    algos[0].check(2, 0, 1, upload)
    zero = Payload(upload.kind, {**upload.tensors, "n_samples": torch.tensor([0])})
    with pytest.raises(ValueError, match="n_samples"):
        algos[0].check(2, 0, 1, zero)


def test_fedavg_refuses_a_topology_that_is_not_a_star_at_0() -> None:
    check_star(generate("star", 5))
    with pytest.raises(ValueError, match="star topology with the server at node 0; node 1 is "
                                         "connected to node 2"):
        FedAvg(tiny_ctx(generate("ring", 4), 0), FedAvg.Params())
    with pytest.raises(ValueError, match="star topology"):
        check_star(generate("complete", 3))


# ---- config --------------------------------------------------------------------------------------
def test_params_defaults_and_validation() -> None:
    # the rates the validation search chose on Fashion-MNIST (README, "Algorithms")
    lrs = {"dsgd": 0.1, "fedavg": 0.1, "dsgd-prox": 0.01, "lottery-dsgd": 0.1,
           "ind-weipru": 0.1, "avr-weipru": 0.1, "par-weipru": 0.1, "dispfl": 0.1}
    for name, lr in lrs.items():
        p = ALGORITHMS[name].Params()
        assert (p.lr, p.batch_size, p.weight_decay, p.local_steps) == (lr, 128, 0.0, 1)
    assert ALGORITHMS["dsgd-prox"].Params().mu == 0.001  # the sweep's choice (README)
    assert ALGORITHMS["dispfl"].Params().anneal == 0.5
    for algo, key, val in [("dsgd", "mixing", "ring"), ("dispfl", "regrow", "magic"),
                           ("lottery-dsgd", "prune_rate", 1.5), ("fedavg", "lr", -1.0),
                           ("dsgd-prox", "mu", -0.1)]:
        with pytest.raises(ConfigError, match=f"algorithm.{key}"):
            config_from_dict({"algorithm": {"name": algo, key: val}})


# ---- whole runs in the in-process driver ---------------------------------------------------------
def topo_for(name: str) -> Topology:
    return generate("star", 4) if name == "fedavg" else generate("er", 4, p=0.6, seed=1)


def _strip(records: list[dict]) -> str:
    """Records without timings (`*_s`, `t_*`), as JSON (so NaN == NaN)."""
    return json.dumps([{k: v for k, v in r.items() if not (k.endswith("_s") or k.startswith("t_"))}
                       for r in records], sort_keys=True)


@pytest.mark.parametrize("name", NAMES)
def test_each_method_runs_and_is_deterministic(name: str, tiny_cfg) -> None:
    cfg = tiny_cfg(algorithm={"name": name}, run={"rounds": 3})
    a = run_inprocess(cfg, topo_for(name))
    b = run_inprocess(cfg, topo_for(name))
    assert _strip(a.records) == _strip(b.records)
    assert len(a.records) == 4 * 4 and all("test_acc" in r for r in a.records)
    sent = [r["bytes_sent"] for r in a.records if r["round"] >= 1]
    assert (max(sent) == 0) == (name == "ind-weipru")
    assert all(math.isfinite(r["train_loss"]) for r in a.records if r["round"] >= 1)


@pytest.mark.parametrize("cls", BASELINES)
def test_checkpoint_resumes_bit_identically(cls: type) -> None:
    topo = generate("star", 3) if cls is FedAvg else PATH3
    straight = build(cls, topo, rounds=4, lr=0.3)
    for rnd in range(5):
        play_round(straight, rnd)
    first = build(cls, topo, rounds=4, lr=0.3)
    for rnd in range(3):
        play_round(first, rnd)
    resumed = build(cls, topo, rounds=4, lr=0.3)
    for a, b in zip(first, resumed, strict=True):
        buf = io.BytesIO()
        torch.save(a.state_dict(), buf)
        buf.seek(0)
        b.load_state_dict(torch.load(buf, weights_only=True))  # as node checkpoints
        a.x = {n: t * 0 for n, t in a.x.items()}  # the saved state must not alias live tensors
    for rnd in range(3, 5):
        play_round(resumed, rnd)
    for a, b in zip(straight, resumed, strict=True):
        for n in a.x:
            assert torch.equal(a.x[n], b.x[n]), (cls.name, n)
        assert a.stats() == b.stats()
