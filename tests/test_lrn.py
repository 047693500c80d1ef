"""The fast LocalResponseNorm and evaluation max-pool (node/models/lrn.py, pool.py) against
torch's own layers: forward bit-identical, LRN backward to float tolerance."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mcepl.node.models import AlexNet
from mcepl.node.models.lrn import FastLocalResponseNorm, local_response_norm
from mcepl.node.models.pool import FastMaxPool2d

CASES = [  # shape, size, alpha, beta, k
    ((4, 64, 10, 10), 4, 2e-5, 0.75, 1.0),  # AlexNet's first LRN
    ((3, 128, 6, 6), 4, 1e-4, 0.75, 1.0),
    ((2, 7, 5, 5), 3, 1e-2, 0.75, 2.0),
    ((2, 6, 9), 5, 0.5, 0.5, 1.0),  # 3-D input
    ((2, 5, 3, 3, 3), 2, 1.0, 0.9, 0.5),  # 5-D input
    ((2, 3, 4, 4), 8, 0.3, 0.75, 1.0),  # window wider than the channels
    ((2, 1, 4, 4), 1, 0.3, 0.75, 1.0),
]


@pytest.mark.parametrize("shape,size,alpha,beta,k", CASES)
def test_forward_is_bit_identical_to_torch(shape, size, alpha, beta, k) -> None:
    gen = torch.Generator().manual_seed(len(shape) * 100 + size)
    x = torch.randn(shape, generator=gen) * 3
    ref = F.local_response_norm(x, size, alpha, beta, k)
    assert torch.equal(local_response_norm(x, size, alpha, beta, k), ref)
    with torch.inference_mode():
        assert torch.equal(local_response_norm(x, size, alpha, beta, k), ref)
    xg = x.clone().requires_grad_()  # the autograd path too
    assert torch.equal(local_response_norm(xg, size, alpha, beta, k), ref)


@pytest.mark.parametrize("shape,size,alpha,beta,k", CASES)
def test_backward_matches_torch_to_float_tolerance(shape, size, alpha, beta, k) -> None:
    gen = torch.Generator().manual_seed(7 + size)
    x = torch.randn(shape, generator=gen) * 3
    g = torch.randn(shape, generator=gen)
    x1 = x.clone().requires_grad_()
    F.local_response_norm(x1, size, alpha, beta, k).backward(g)
    x2 = x.clone().requires_grad_()
    local_response_norm(x2, size, alpha, beta, k).backward(g)
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-5, atol=1e-6)
    # and in double precision, where both are exact to ~1e-15
    xd1, xd2 = x.double().requires_grad_(), x.double().requires_grad_()
    F.local_response_norm(xd1, size, alpha, beta, k).backward(g.double())
    local_response_norm(xd2, size, alpha, beta, k).backward(g.double())
    torch.testing.assert_close(xd2.grad, xd1.grad, rtol=1e-12, atol=1e-13)


def test_gradcheck_double() -> None:
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: local_response_norm(t, 4, 0.3, 0.75, 1.0), (x,))


def test_module_is_a_local_response_norm_and_alexnet_uses_it() -> None:
    m = FastLocalResponseNorm(4, alpha=1e-4, beta=0.75)
    assert isinstance(m, nn.LocalResponseNorm)
    assert m.extra_repr() == nn.LocalResponseNorm(4, 1e-4).extra_repr()
    assert not list(m.parameters())
    fast = AlexNet()
    assert sum(isinstance(x, FastLocalResponseNorm) for x in fast.modules()) == 3
    slow = AlexNet(fast_layers=False)
    assert not any(isinstance(x, FastLocalResponseNorm) for x in slow.modules())
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fast(x), slow(x))


def test_rejects_two_dimensional_input_and_passes_empty() -> None:
    with pytest.raises(ValueError, match="3 or more"):
        local_response_norm(torch.zeros(2, 3), 2)
    empty = torch.zeros(0, 4, 2, 2)
    assert local_response_norm(empty, 2).shape == empty.shape


# --------------------------------------------------------------------------- max-pooling


@pytest.mark.parametrize("shape,k,s", [((3, 8, 30, 30), 3, 2), ((2, 4, 12, 12), 3, 2),
                                       ((2, 4, 7, 9), 2, 2), ((5, 6, 6), 3, 1),
                                       ((2, 3, 4, 4), (2, 3), (1, 2))])
def test_fast_max_pool_evaluation_is_bit_identical(shape, k, s) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen)
    x.view(-1)[::7] = 0.5  # ties
    x.view(-1)[::11] = float("nan")
    x.view(-1)[5] = float("-inf")
    pool = FastMaxPool2d(k, s)
    with torch.inference_mode():
        fast = pool(x)
    assert torch.equal(fast.isnan(), F.max_pool2d(x, k, s).isnan())
    assert torch.equal(torch.nan_to_num(fast, 9.0), torch.nan_to_num(F.max_pool2d(x, k, s), 9.0))


def test_fast_max_pool_training_is_torch_own() -> None:
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    FastMaxPool2d(3, 2)(x).sum().backward()
    nn.MaxPool2d(3, 2)(x2).sum().backward()
    assert torch.equal(x.grad, x2.grad)
    padded = FastMaxPool2d(3, 2, padding=1)  # not the fast path: torch's, same result
    with torch.inference_mode():
        assert torch.equal(padded(x.detach()), F.max_pool2d(x.detach(), 3, 2, 1))
