"""The mask maths of MCE-PL (node/masks.py), each equation pinned on small hand-checked tensors."""

from __future__ import annotations

import math
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from mcepl.node import masks as M
from mcepl.node.algorithms.mcepl import masked_loss_grads
from mcepl.node.models import MaskedModel

RATIOS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def exact_keep(n: int, r: float) -> int:
    """K = n - floor((1 - r) n) in exact arithmetic on the decimal value of r."""
    return n - math.floor((1 - Fraction(str(r))) * n)


# --------------------------------------------------------------------------- keep_count / thres


@pytest.mark.parametrize(("n", "r", "k"), [
    (10, 0.5, 5), (10, 0.1, 1), (10, 1.0, 10), (7, 0.5, 4), (7, 0.3, 3), (1, 0.1, 1),
    (3, 0.34, 2), (101, 0.25, 26), (9, 0.7, 7), (5, 0.2, 1), (10, 0.7, 7), (10, 0.3, 3),
])
def test_keep_count_hand_values(n: int, r: float, k: int) -> None:
    assert M.keep_count(n, r) == k


def test_keep_count_matches_exact_formula() -> None:
    """K = n - floor((1-r) n) with r the decimal ratio, for r = 0.1..1.0 and n = 1..400.

    E.g. r = 0.8 on 10 entries keeps 8 and r = 0.9 on 10 keeps 9: (1 - r) n must not lose an
    entry to floating-point rounding (1 - 0.8 = 0.19999999999999996 in binary floating point).
    """
    wrong = [(n, r, M.keep_count(n, r), exact_keep(n, r))
             for r in RATIOS for n in range(1, 401) if M.keep_count(n, r) != exact_keep(n, r)]
    assert not wrong, f"{len(wrong)} (n, r, got, expected) wrong, e.g. {wrong[:8]}"


@pytest.mark.parametrize(("r", "k"), [(0.8, 8), (0.9, 9), (0.3, 3), (0.7, 7)])
def test_thres_ten_entries(r: float, k: int) -> None:
    """A 10-entry layer at retention r keeps exactly 10 r entries (the paper's r_i values)."""
    a = torch.arange(10, dtype=torch.float32)
    m = M.thres(a, r)
    assert int(m.sum()) == k
    assert torch.equal(m, a >= 10 - k)


@pytest.mark.parametrize("r", [0.0, -0.1, 1.0001, 2.0])
def test_keep_count_rejects_bad_ratio(r: float) -> None:
    with pytest.raises(ValueError):
        M.keep_count(10, r)


@pytest.mark.parametrize("r", RATIOS)
@pytest.mark.parametrize("shape", [(7,), (3, 5), (4, 3, 3), (5, 2, 3, 3)])
def test_thres_keeps_exactly_k_largest(shape: tuple[int, ...], r: float) -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(shape, generator=g).abs()
    m = M.thres(a, r)
    k = M.keep_count(a.numel(), r)
    assert m.dtype == torch.bool and m.shape == a.shape
    assert int(m.sum()) == k
    if 0 < k < a.numel():  # every kept entry >= every dropped one
        assert a[m].min() >= a[~m].max()


def test_thres_different_ratio_per_node() -> None:
    """The same layer tensor thresholded at each node's own r gives that node's own K."""
    a = torch.arange(1, 22, dtype=torch.float32).reshape(3, 7)  # n = 21, all distinct
    for r, k in [(0.1, 3), (0.3, 7), (0.5, 11), (0.7, 15), (1.0, 21)]:
        m = M.thres(a, r)
        assert int(m.sum()) == k == M.keep_count(21, r)
        assert torch.equal(m.reshape(-1), torch.arange(21) >= 21 - k)  # the k largest


def test_thres_hand_example() -> None:
    a = torch.tensor([[0.5, 3.0, 1.0], [2.0, 0.1, 4.0]])
    m = M.thres(a, 0.5)  # K = 3: 4.0, 3.0, 2.0
    assert m.tolist() == [[False, True, False], [True, False, True]]


def test_thres_ties_lower_index_wins_and_repeatable() -> None:
    a = torch.ones(6)
    m1 = M.thres(a, 0.5)
    m2 = M.thres(a.clone(), 0.5)
    assert m1.tolist() == [True, True, True, False, False, False]
    assert torch.equal(m1, m2)
    b = torch.tensor([1.0, 2.0, 1.0, 1.0, 0.0, 1.0])
    # K = 3: the 2.0 and then the two lowest-index 1.0s
    assert M.thres(b, 0.5).tolist() == [True, True, True, False, False, False]
    c = torch.tensor([[0.0, 5.0, 5.0], [5.0, 5.0, 1.0]])
    # n = 6, K = 6 - floor(0.66 * 6) = 3: the first three 5.0s in flat order
    assert M.thres(c, 0.34).tolist() == [[False, True, True], [True, False, False]]


def test_thres_does_not_modify_input() -> None:
    a = torch.tensor([3.0, 1.0, 2.0])
    before = a.clone()
    M.thres(a, 0.5)
    assert torch.equal(a, before)


# --------------------------------------------------------------------------- fil


def test_fil_conv_4d() -> None:
    m = torch.zeros(4, 2, 2, 2, dtype=torch.bool)
    m[0].view(-1)[:1] = True  # 1 one
    m[1].view(-1)[:2] = True  # 2 ones
    m[2].view(-1)[:3] = True  # 3 ones
    m[3] = True  # 8 ones
    out = M.fil(m, 2)
    assert out.shape == m.shape and out.dtype == torch.bool
    assert out.reshape(4, -1).sum(dim=1).tolist() == [0, 0, 3, 8]
    assert torch.equal(out[2:], m[2:])  # filters above tau untouched, entry by entry
    out3 = M.fil(m, 3)
    assert out3.reshape(4, -1).sum(dim=1).tolist() == [0, 0, 0, 8]


def test_fil_linear_2d() -> None:
    m = torch.tensor([[1, 0, 0, 1], [1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 1, 0]], dtype=torch.bool)
    out = M.fil(m, 2)
    assert out.tolist() == [[False] * 4, [True, True, True, False], [False] * 4, [False] * 4]
    out1 = M.fil(m, 1)
    assert out1.tolist() == [[True, False, False, True], [True, True, True, False],
                             [False] * 4, [False] * 4]


def test_fil_zero_is_noop() -> None:
    g = torch.Generator().manual_seed(1)
    m = torch.rand(3, 4, 2, 2, generator=g) < 0.2
    assert torch.equal(M.fil(m, 0), m)


# --------------------------------------------------------------------------- straight-through


def _tiny_linear() -> tuple[MaskedModel, SimpleNamespace]:
    lin = nn.Linear(3, 2)  # masked weight w is 2x3, bias fixed
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]]))
        lin.bias.copy_(torch.tensor([0.1, -0.2]))
    mm = MaskedModel(nn.Sequential(lin))
    return mm, SimpleNamespace(model=mm)


def test_straight_through_by_hand_cross_entropy() -> None:
    mm, ctx = _tiny_linear()
    w = mm.w["0.weight"].detach().numpy().astype(np.float64)
    b = np.array([0.1, -0.2])
    mask = torch.tensor([[True, False, True], [False, True, True]])
    z = torch.tensor([[0.3, -0.2, -0.7], [-0.1, 0.4, 0.9]])
    x = torch.tensor([[1.0, 2.0, -1.0], [0.5, -1.5, 2.0]])
    y = torch.tensor([1, 0])

    # by hand: logits = x v^T + b, CE mean over the batch, dL/dv = (1/B) Σ (p - e_y) x^T
    v = w * mask.numpy()
    xn = x.numpy().astype(np.float64)
    logits = xn @ v.T + b
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    onehot = np.eye(2)[y.numpy()]
    loss_hand = float(np.mean(-np.log(p[np.arange(2), y.numpy()])))
    dl_dv_hand = (p - onehot).T @ xn / 2
    g_hand = dl_dv_hand * w * np.sign(z.numpy())

    loss, grads = masked_loss_grads(ctx, {"0.weight": mask}, x, y)  # type: ignore[arg-type]
    assert list(grads) == ["0.weight"]
    assert loss == pytest.approx(loss_hand, rel=1e-6)
    np.testing.assert_allclose(grads["0.weight"].numpy(), dl_dv_hand, rtol=1e-5, atol=1e-7)
    g = M.straight_through_grad(grads["0.weight"], mm.w["0.weight"], z)
    np.testing.assert_allclose(g.numpy(), g_hand, rtol=1e-5, atol=1e-7)
    # dL/dv is the gradient w.r.t. the effective weight, so masked-out entries still get one
    assert (grads["0.weight"][~mask] != 0).all()


def test_straight_through_elementwise_formula() -> None:
    dl_dv = torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.0, -1.0]])
    w = torch.tensor([[2.0, 2.0, -1.0], [4.0, 1.0, 3.0]])
    z = torch.tensor([[-0.1, 0.2, 0.3], [0.0, -5.0, -0.4]])
    expected = torch.tensor([[-2.0, -4.0, -3.0], [0.0, 0.0, 3.0]])
    assert torch.equal(M.straight_through_grad(dl_dv, w, z), expected)


def test_masked_loss_grads_does_not_touch_w() -> None:
    mm, ctx = _tiny_linear()
    before = {n: t.clone() for n, t in mm.module.state_dict().items()}
    mask = torch.ones(2, 3, dtype=torch.bool)
    masked_loss_grads(ctx, {"0.weight": mask}, torch.randn(4, 3), torch.tensor([0, 1, 1, 0]))
    for n, t in mm.module.state_dict().items():
        assert torch.equal(t, before[n])
        assert t.grad is None


# --------------------------------------------------------------------------- group lasso


def test_group_lasso_hand_value_and_grad() -> None:
    z = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0], [-6.0, 8.0]])
    assert float(M.group_lasso(z)) == pytest.approx(5.0 + 0.0 + 1.0 + 10.0)
    g = M.group_lasso_grad(z)
    expected = torch.tensor([[0.6, 0.8], [0.0, 0.0], [1.0, 0.0], [-0.6, 0.8]])
    torch.testing.assert_close(g, expected)
    assert torch.isfinite(g).all()


@pytest.mark.parametrize("shape", [(4, 5), (3, 2, 3, 3)])
def test_group_lasso_grad_matches_autograd_and_finite_differences(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(2)
    z = torch.randn(shape, generator=g, dtype=torch.float64)
    # value: one group per output filter/row
    by_hand = sum(float(z[o].pow(2).sum().sqrt()) for o in range(shape[0]))
    assert float(M.group_lasso(z)) == pytest.approx(by_hand, rel=1e-12)
    zr = z.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(M.group_lasso(zr), zr)
    ours = M.group_lasso_grad(z)
    assert ours.shape == z.shape
    torch.testing.assert_close(ours, auto)
    eps = 1e-6
    fd = torch.zeros_like(z).reshape(-1)
    flat = z.reshape(-1)
    for i in range(flat.numel()):
        zp, zm = flat.clone(), flat.clone()
        zp[i] += eps
        zm[i] -= eps
        fd[i] = (M.group_lasso(zp.reshape(shape)) - M.group_lasso(zm.reshape(shape))) / (2 * eps)
    torch.testing.assert_close(ours, fd.reshape(shape), rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- neighbour mean


def test_neighbor_mean_none_one_several() -> None:
    like = torch.zeros(2, 3, dtype=torch.float32)
    a0 = M.neighbor_mean([], like)
    assert a0.dtype == torch.float32 and a0.shape == (2, 3) and not a0.any()
    m1 = torch.tensor([[1, 0, 1], [0, 0, 1]], dtype=torch.bool)
    a1 = M.neighbor_mean([m1], like)
    assert a1.dtype == torch.float32
    assert torch.equal(a1, m1.float())
    m2 = torch.tensor([[1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    m3 = torch.tensor([[1, 0, 0], [1, 0, 1]], dtype=torch.bool)
    a3 = M.neighbor_mean([m1, m2, m3], like)
    expected = torch.tensor([[3, 1, 1], [1, 0, 3]], dtype=torch.float32) / 3
    torch.testing.assert_close(a3, expected)
    # inputs untouched
    assert m1.dtype == torch.bool and m1.tolist() == [[True, False, True], [False, False, True]]


# --------------------------------------------------------------------------- aggregation tensor


def test_aggregation_tensor_hand_example() -> None:
    z = torch.tensor([[1.0, -2.0], [3.0, -4.0]])
    a = torch.tensor([[0.0, 0.5], [1.0, 0.5]])
    # mean|z| = 2.5: y = z + 2.5 sign(z) A
    expected = torch.tensor([[1.0, -3.25], [5.5, -5.25]])
    y = M.aggregation_tensor(z, a)
    torch.testing.assert_close(y, expected)
    assert torch.equal(M.aggregation_tensor(z, torch.zeros_like(a)), z)  # A = 0: y = z
    # zero scores stay zero (sign(0) = 0)
    z0 = torch.tensor([0.0, 2.0])
    torch.testing.assert_close(M.aggregation_tensor(z0, torch.ones(2)), torch.tensor([0.0, 3.0]))


def test_mask_from_scores_with_and_without_a() -> None:
    z = torch.tensor([1.0, -1.5, 2.0, 0.5])
    # without A: |z| -> top 2 are 2.0 (idx 2) and 1.5 (idx 1)
    assert M.mask_from_scores(z, 0.5).tolist() == [False, True, True, False]
    # with A: mean|z| = 1.25, y = [2.25, -1.5, 2.0, 1.75] -> top 2 are idx 0 and 2
    a = torch.tensor([1.0, 0.0, 0.0, 1.0])
    assert M.mask_from_scores(z, 0.5, a=a).tolist() == [True, False, True, False]
    # A = None and A = 0 agree
    assert torch.equal(M.mask_from_scores(z, 0.5, a=torch.zeros(4)), M.mask_from_scores(z, 0.5))


def test_mask_from_scores_with_fil() -> None:
    z = torch.tensor([[5.0, 4.0, 3.0, -0.1], [0.2, 0.1, -6.0, 0.3]])
    # r = 0.5, K = 4: |z| top four are 6, 5, 4, 3 -> row 0 has 3 ones, row 1 has 1
    m = M.mask_from_scores(z, 0.5, tau=0)
    assert m.tolist() == [[True, True, True, False], [False, False, True, False]]
    mf = M.mask_from_scores(z, 0.5, tau=1)
    assert mf.tolist() == [[True, True, True, False], [False] * 4]
    mf3 = M.mask_from_scores(z, 0.5, tau=3)
    assert not mf3.any()


def test_mask_from_scores_does_not_modify_z() -> None:
    z = torch.tensor([1.0, -1.5, 2.0, 0.5])
    before = z.clone()
    M.mask_from_scores(z, 0.5, a=torch.ones(4))
    assert torch.equal(z, before)


# --------------------------------------------------------------------------- fine-tuning


def test_fine_tune_moves_only_neighbour_entries() -> None:
    z = torch.tensor([[0.3, -0.7, 1.1], [0.0, 2.0, -0.4]])
    g = torch.tensor([[1.0, 2.0, -1.0], [0.5, -3.0, 4.0]])
    a = torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.0, 0.25]])
    out = M.fine_tune(z, g, a, lr_ft=0.1)
    expected = torch.tensor([[0.3, -0.7 - 0.1, 1.1 + 0.1], [0.0, 2.0, -0.4 - 0.1]])
    torch.testing.assert_close(out, expected)
    untouched = a == 0
    assert torch.equal(out[untouched], z[untouched])  # bit-identical where A == 0
    assert (out[~untouched] != z[~untouched]).all()
    # all-zero A is a no-op, bit for bit; input not modified
    assert torch.equal(M.fine_tune(z, g, torch.zeros_like(z), 10.0), z)
    assert z.tolist()[0][0] == pytest.approx(0.3)


# ------------------------------------------------------------------------ speed-ups keep the bits


def _sorted_thres(a: torch.Tensor, k: int) -> torch.Tensor:
    """The definition: a stable descending sort, first k entries (the old implementation)."""
    flat = a.reshape(-1)
    order = torch.sort(flat, descending=True, stable=True).indices
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    mask[order[:k]] = True
    return mask.reshape(a.shape)


@pytest.mark.parametrize("kind", ["normal", "ties", "ints", "nan", "signed-zeros", "inf"])
@pytest.mark.parametrize("n", [1, 2, 9, 1000, 20_011])
def test_top_k_selection_equals_stable_sort(kind: str, n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    if kind == "normal":
        a = torch.randn(n, generator=gen)
    elif kind == "ties":
        a = torch.randint(0, 4, (n,), generator=gen).float()
    elif kind == "ints":
        a = torch.randint(0, 3, (n,), generator=gen)
    elif kind == "nan":
        a = torch.randn(n, generator=gen)
        a[torch.rand(n, generator=gen) < 0.2] = float("nan")
    elif kind == "signed-zeros":
        a = torch.where(torch.rand(n, generator=gen) < 0.5, torch.tensor(0.0), torch.tensor(-0.0))
    else:
        a = torch.randn(n, generator=gen)
        a[torch.rand(n, generator=gen) < 0.2] = float("inf")
    for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        if 0 <= k <= n:
            assert torch.equal(M.top_k_mask(a, k), _sorted_thres(a, k)), (kind, n, k)
    for r in RATIOS:
        assert torch.equal(M.thres(a.reshape(-1, 1), r),
                           _sorted_thres(a.reshape(-1, 1), M.keep_count(n, r)))
    with pytest.raises(ValueError, match="cannot keep"):
        M.top_k_mask(a, n + 1)


def test_buffer_variants_are_bit_identical() -> None:
    """The `out`/`scratch` forms (what MCE-PL runs every step) give exactly the allocating
    forms' bits, and the inputs are untouched."""
    gen = torch.Generator().manual_seed(3)
    for shape in [(16, 3, 5, 5), (32, 40), (7,)]:
        z, w, d = (torch.randn(shape, generator=gen) for _ in range(3))
        z.view(-1)[:3] = 0.0  # sign(0) and an all-zero group where there are groups
        if len(shape) > 1:
            z[0] = 0.0
        masks = [torch.rand(shape, generator=gen) < p for p in (0.2, 0.5, 0.9)]
        a = M.neighbor_mean(masks, z)
        z0 = z.clone()
        out, tmp = torch.full(shape, 7.0), torch.full(shape, -3.0)
        assert torch.equal(M.straight_through_grad(d, w, z, out=out, scratch=tmp),
                           M.straight_through_grad(d, w, z))
        assert torch.equal(M.straight_through_grad(d, w, z, out=out),
                           M.straight_through_grad(d, w, z))
        if len(shape) > 1:
            assert torch.equal(M.group_lasso_grad(z, out=out), M.group_lasso_grad(z))
        assert torch.equal(M.neighbor_mean(masks, z, out=out), a)
        assert torch.equal(M.neighbor_mean([], z, out=out), M.neighbor_mean([], z))
        assert torch.equal(M.aggregation_tensor(z, a, out=out), M.aggregation_tensor(z, a))
        for r in (0.1, 0.5):
            assert torch.equal(M.mask_from_scores(z, r, 1, a, out=out),
                               M.mask_from_scores(z, r, 1, a))
            assert torch.equal(M.mask_from_scores(z, r, 0, None, out=out),
                               M.mask_from_scores(z, r, 0, None))
        expected = M.fine_tune(z, d, a, 0.7)
        assert torch.equal(M.fine_tune(z, d, a, 0.7, out=out, scratch=tmp), expected)
        assert torch.equal(z, z0)
        zz = z.clone()
        assert M.fine_tune(zz, d, a, 0.7, out=zz, scratch=tmp) is zz  # in place
        assert torch.equal(zz, expected)
