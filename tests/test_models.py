"""Models (node/models/): the paper's AlexNet, SmallCNN, build_model and the MaskedModel wrapper."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mcepl.config import ModelConfig
from mcepl.node.models import (
    DEFAULT_WEIGHT_INIT,
    WEIGHT_INITS,
    AlexNet,
    MaskedModel,
    SmallCNN,
    build_model,
    is_retention_scaled,
)


def _params_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------- AlexNet


def test_alexnet_cifar_masked_weight_count_and_output() -> None:
    model = build_model("alexnet", (3, 32, 32), 10, seed=0)
    mm = MaskedModel(model)
    assert mm.num_masked == 1_227_328
    assert mm.names == ["features.0.weight", "features.4.weight", "features.8.weight",
                        "classifier.0.weight", "classifier.2.weight"]
    assert [tuple(mm.w[n].shape) for n in mm.names] == [
        (64, 3, 5, 5), (128, 64, 5, 5), (256, 128, 5, 5), (192, 1024), (10, 192)]
    # conv layers have no bias; linear biases exist (fixed, not masked)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is None for c in convs)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_alexnet_fashion_mnist_has_256_features() -> None:
    model = AlexNet(input_shape=(1, 28, 28), num_classes=10)
    assert model.classifier[0].in_features == 256
    with torch.no_grad():
        assert model.features(torch.zeros(3, 1, 28, 28)).shape == (3, 256)
        assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_small_cnn_both_shapes(shape: tuple[int, int, int]) -> None:
    model = build_model("small-cnn", shape, 10, seed=1)
    assert isinstance(model, SmallCNN)
    mm = MaskedModel(model)
    assert len(mm.names) == 4
    assert [mm.is_linear(n) for n in mm.names] == [False, False, True, True]
    with torch.no_grad():
        out = mm.forward(torch.randn(5, *shape), mm.masked_weights(
            {n: torch.ones_like(t, dtype=torch.bool) for n, t in mm.w.items()}))
    assert out.shape == (5, 10)


def test_build_model_unknown_names() -> None:
    with pytest.raises(ValueError, match="nope"):
        build_model("nope", (1, 28, 28), 10, seed=0)
    with pytest.raises(ValueError, match="weird"):
        build_model("small-cnn", (1, 28, 28), 10, seed=0, weight_init="weird")


# --------------------------------------------------------------------------- build_model seeds


@pytest.mark.parametrize("name", ["small-cnn", "alexnet"])
def test_build_model_seeded(name: str) -> None:
    a = build_model(name, (1, 28, 28), 10, seed=5)
    b = build_model(name, (1, 28, 28), 10, seed=5)
    c = build_model(name, (1, 28, 28), 10, seed=6)
    assert _params_equal(a, b)
    assert not _params_equal(a, c)
    sa, sc = a.state_dict(), c.state_dict()
    assert all(not torch.equal(sa[k], sc[k]) for k in sa)  # every tensor differs


def test_build_model_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    expected = torch.rand(5)
    torch.set_rng_state(state)
    build_model("small-cnn", (1, 28, 28), 10, seed=9)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(torch.rand(5), expected)
    # and the global state does not leak into the model either
    torch.manual_seed(999)
    a = build_model("small-cnn", (1, 28, 28), 10, seed=9)
    torch.manual_seed(1)
    b = build_model("small-cnn", (1, 28, 28), 10, seed=9)
    assert _params_equal(a, b)


@pytest.mark.parametrize("init", WEIGHT_INITS)
def test_weight_init_options(init: str) -> None:
    a = build_model("small-cnn", (1, 28, 28), 10, seed=3, weight_init=init)
    b = build_model("small-cnn", (1, 28, 28), 10, seed=3, weight_init=init)
    assert _params_equal(a, b)
    d = build_model("small-cnn", (1, 28, 28), 10, seed=3, weight_init="default")
    kn = build_model("small-cnn", (1, 28, 28), 10, seed=3, weight_init="kaiming-normal")
    mm, md, mk = MaskedModel(a), MaskedModel(d), MaskedModel(kn)
    sa, sd = a.state_dict(), d.state_dict()
    for k in sa:  # biases (and anything else unmasked) are PyTorch's whatever the init
        assert torch.equal(sa[k], sd[k]) == (init == "default" or k not in mm.names), k
    w = torch.cat([t.reshape(-1) for t in mm.w.values()])
    if init == "uniform":
        assert float(w.min()) >= -1.0 and float(w.max()) <= 1.0
        assert float(w.abs().max()) > 0.9  # really U[-1, 1], not the (much narrower) default
    for n in mm.names:
        fan_in = mm.w[n][0].numel()
        if init.startswith("kaiming-normal"):
            assert torch.equal(mm.w[n], mk.w[n])  # "-scaled" draws the very same w
            assert abs(float(mm.w[n].std()) / (2.0 / fan_in) ** 0.5 - 1) < 0.25
        if init.startswith("signed-constant"):  # the kaiming-normal signs, one magnitude
            torch.testing.assert_close(mm.w[n].abs(), torch.full_like(mm.w[n],
                                                                      (2.0 / fan_in) ** 0.5))
            assert torch.equal(torch.sign(mm.w[n]), torch.sign(mk.w[n]))
    if init != "default":
        assert all(not torch.equal(mm.w[n], md.w[n]) for n in mm.names)


def test_default_init_is_the_retention_scaled_kaiming_normal() -> None:
    assert DEFAULT_WEIGHT_INIT == "kaiming-normal-scaled" == ModelConfig().weight_init
    assert _params_equal(build_model("small-cnn", (1, 28, 28), 10, seed=1),
                         build_model("small-cnn", (1, 28, 28), 10, seed=1,
                                     weight_init="kaiming-normal"))
    assert is_retention_scaled(DEFAULT_WEIGHT_INIT)
    assert not any(is_retention_scaled(i) for i in ("default", "uniform", "kaiming-normal"))


def test_fixed_weights_scale_by_one_over_sqrt_r_only_when_scaled() -> None:
    net = build_model("small-cnn", (1, 28, 28), 10, seed=0)
    plain, scaled = MaskedModel(net), MaskedModel(net, retention_scaled=True)
    r = {n: 0.25 if i % 2 else 1.0 for i, n in enumerate(plain.names)}
    fp, fs = plain.fixed_weights(r), scaled.fixed_weights(r)
    for n in plain.names:
        assert fp[n] is plain.w[n]  # unscaled: the shared tensor itself
        torch.testing.assert_close(fs[n], plain.w[n] * (2.0 if r[n] == 0.25 else 1.0),
                                   rtol=0, atol=0)
    assert scaled.scale(0.04) == pytest.approx(5.0) and plain.scale(0.04) == 1.0
    with pytest.raises(ValueError, match="retention"):
        scaled.scale(0.0)


# --------------------------------------------------------------------------- MaskedModel


class _UserNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(2, 4, 3, bias=True), nn.ReLU(), nn.Flatten())
        self.head = nn.Linear(4 * 6, 5)
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)) * self.scale


def test_masked_model_on_user_module() -> None:
    torch.manual_seed(0)
    net = _UserNet()
    reference = copy.deepcopy(net)
    mm = MaskedModel(net)
    assert mm.names == ["body.0.weight", "head.weight"]
    assert mm.num_masked == 4 * 2 * 3 + 5 * 24
    assert not mm.is_linear("body.0.weight") and mm.is_linear("head.weight")
    assert all(not p.requires_grad for p in net.parameters())
    assert mm.w["head.weight"] is dict(net.named_parameters())["head.weight"]

    g = torch.Generator().manual_seed(4)
    masks = {n: torch.rand(t.shape, generator=g) < 0.5 for n, t in mm.w.items()}
    x = torch.randn(3, 2, 8, generator=g)
    out = mm.forward(x, mm.masked_weights(masks))

    with torch.no_grad():  # the same module with the weights masked by hand
        reference.body[0].weight.mul_(masks["body.0.weight"].float())
        reference.head.weight.mul_(masks["head.weight"].float())
        expected = reference(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    # the bias and the extra parameter are used, unmasked: a full mask reproduces the module
    full = {n: torch.ones_like(t, dtype=torch.bool) for n, t in mm.w.items()}
    with torch.no_grad():
        torch.testing.assert_close(mm.forward(x, mm.masked_weights(full)), net(x))
    # forward never wrote the masked weights into the module
    assert _params_equal(net, _reload(net, _UserNet))


def _reload(net: nn.Module, cls: type[nn.Module]) -> nn.Module:
    fresh = cls()
    fresh.load_state_dict(net.state_dict())
    return fresh


def test_masked_model_forward_leaves_module_unchanged() -> None:
    net = build_model("small-cnn", (1, 28, 28), 10, seed=0)
    before = copy.deepcopy(net.state_dict())
    mm = MaskedModel(net)
    zeros = {n: torch.zeros_like(t, dtype=torch.bool) for n, t in mm.w.items()}
    mm.forward(torch.randn(2, 1, 28, 28), mm.masked_weights(zeros))
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_masked_model_gradient_flows_to_effective_weights_only() -> None:
    net = _UserNet()
    mm = MaskedModel(net)
    masks = {n: torch.ones_like(t, dtype=torch.bool) for n, t in mm.w.items()}
    v = {n: t.detach().requires_grad_(True) for n, t in mm.masked_weights(masks).items()}
    loss = mm.forward(torch.randn(2, 2, 8), v).sum()
    grads = torch.autograd.grad(loss, list(v.values()))
    assert all(g.shape == mm.w[n].shape for g, n in zip(grads, v, strict=True))
    assert all(p.grad is None for p in net.parameters())


def test_masked_model_needs_a_maskable_layer() -> None:
    with pytest.raises(ValueError):
        MaskedModel(nn.Sequential(nn.ReLU(), nn.Flatten()))


# --------------------------------------------------------------------------- logit ELU


@pytest.mark.parametrize("name", ["small-cnn", "alexnet"])
def test_logit_elu_switch(name: str) -> None:
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    plain = build_model(name, (1, 28, 28), 10, seed=2)
    elu = build_model(name, (1, 28, 28), 10, seed=2, logit_elu=True)
    assert _params_equal(plain, elu)  # same weights; only the head differs
    with torch.no_grad():
        a, b = plain(x), elu(x)
    torch.testing.assert_close(b, nn.functional.elu(a))
    assert float(b.min()) >= -1.0
    if float(a.min()) < 0:
        assert not torch.equal(a, b)
