"""Dual batch-norm (AdvProp / CLAE): the conversion keeps a network's clean behaviour, the context manager
routes through the adversarial branch and restores, each branch updates only its own statistics (the
adversarial one with momentum 0.01), and it works with channels_last, bf16 autocast and torch.compile."""
import copy

import pytest
import torch
import torch.nn as nn

from clcourse.models import (Backbone, DualBatchNorm, SmallCNN, SplitBatchNorm2d, adversarial_batchnorm,
                             dual_batchnorm_layers, projection_mlp, use_dual_batchnorm)


def network(seed=0):
    """A backbone (BatchNorm2d) and a projector (BatchNorm1d), as a method has them."""
    torch.manual_seed(seed)
    backbone = Backbone(SmallCNN(width=4))
    return nn.Sequential(backbone, projection_mlp(backbone.feature_dim, 16, 8))


def images(seed=0, n=8):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def batchnorm_state(model, branch):
    """Running statistics of every clean (or adversarial) branch, by parameter name."""
    return {key: value.clone() for key, value in model.state_dict().items()
            if f".{branch}.running_" in key or f".{branch}.num_batches" in key}


def test_every_batchnorm_is_converted_once_and_the_clean_branch_keeps_the_network():
    model = network()
    model.train()
    model(images(1))                                  # running statistics that are not the initial ones
    original = copy.deepcopy(model)
    use_dual_batchnorm(model)
    use_dual_batchnorm(model)                         # converting twice wraps nothing twice
    layers = dual_batchnorm_layers(model)
    assert len(layers) == 4                           # three conv stages and the projector's BatchNorm1d
    assert not any(isinstance(m, DualBatchNorm) for layer in layers for m in layer.children())
    for mode in ("eval", "train"):
        getattr(original, mode)()
        getattr(model, mode)()
        assert torch.allclose(model(images(2)), original(images(2)), atol=1e-6)
    for layer in layers:   # the adversarial twin starts as a copy, with its own momentum
        assert layer.adversarial.momentum == 0.01 and layer.clean.momentum == 0.1
        assert layer.adversarial.weight is not layer.clean.weight


def test_split_batchnorm_keeps_its_kind_in_both_branches():
    bn = SplitBatchNorm2d(4, num_splits=2)
    dual = DualBatchNorm(bn)
    assert isinstance(dual.clean, SplitBatchNorm2d) and isinstance(dual.adversarial, SplitBatchNorm2d)


def test_each_branch_moves_only_its_own_running_statistics():
    model = use_dual_batchnorm(network()).train()
    clean, adversarial = batchnorm_state(model, "clean"), batchnorm_state(model, "adversarial")
    with adversarial_batchnorm(model):
        model(images(1))
    assert all(torch.equal(value, batchnorm_state(model, "clean")[key]) for key, value in clean.items())
    moved = batchnorm_state(model, "adversarial")
    assert all(not torch.equal(value, moved[key]) for key, value in adversarial.items())

    model(images(2))                                   # a clean pass leaves the adversarial branch alone
    assert all(torch.equal(value, batchnorm_state(model, "adversarial")[key]) for key, value in moved.items())
    assert any(not torch.equal(value, batchnorm_state(model, "clean")[key]) for key, value in clean.items())


def test_adversarial_running_mean_is_an_average_with_momentum_001():
    dual = DualBatchNorm(nn.BatchNorm2d(3)).train()
    x = torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(0)) + 2.0
    with adversarial_batchnorm(dual):
        dual(x)
    assert torch.allclose(dual.adversarial.running_mean, 0.01 * x.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.equal(dual.clean.running_mean, torch.zeros(3))


def test_routes_give_different_outputs_and_gradients_reach_only_the_branch_used():
    model = use_dual_batchnorm(network()).train()
    with adversarial_batchnorm(model):
        model[0].net.layer1[0][1].adversarial.weight.data.fill_(2.0)    # make the branches differ
        model(images(1)).sum().backward()
    layer = model[0].net.layer1[0][1]
    assert layer.adversarial.weight.grad is not None and layer.clean.weight.grad is None
    assert not torch.allclose(model.eval()(images(1)), _adversarial_eval(model, images(1)))


def _adversarial_eval(model, x):
    with adversarial_batchnorm(model):
        return model(x)


def test_context_restores_the_previous_route_even_after_an_error_and_when_nested():
    model = use_dual_batchnorm(network())
    layers = dual_batchnorm_layers(model)
    with pytest.raises(RuntimeError):
        with adversarial_batchnorm(model):
            assert all(layer.route_adversarial for layer in layers)
            raise RuntimeError("inside")
    assert not any(layer.route_adversarial for layer in layers)
    with adversarial_batchnorm(model):
        with adversarial_batchnorm(model[1]):
            pass
        assert all(layer.route_adversarial for layer in layers)     # the inner exit restored "adversarial"
    assert not any(layer.route_adversarial for layer in layers)


def test_routing_a_network_without_dual_batchnorm_is_refused():
    with pytest.raises(ValueError, match="no DualBatchNorm layer.*use_dual_batchnorm"):
        with adversarial_batchnorm(network()):
            pass


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_bad_momentum_names_the_argument_and_the_range(bad):
    with pytest.raises(ValueError, match=r"adversarial_momentum must be in \[0.0, 1.0\], got"):
        use_dual_batchnorm(network(), bad)
    with pytest.raises(ValueError, match="batch_norm must be a batch-norm layer"):
        DualBatchNorm(nn.Linear(2, 2))


def test_channels_last_and_bf16_autocast_on_both_routes():
    model = use_dual_batchnorm(network()).train()
    reference = copy.deepcopy(model)
    x = images(3)
    fast = x.contiguous(memory_format=torch.channels_last)
    model.to(memory_format=torch.channels_last)
    for route in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = _adversarial_eval(model, fast) if route else model(fast)
        expected = _adversarial_eval(reference, x) if route else reference(x)
        assert torch.allclose(out.float(), expected, atol=0.1, rtol=0.05)
    assert torch.allclose(batchnorm_state(model, "adversarial")["0.net.layer1.0.1.adversarial.running_mean"],
                          batchnorm_state(reference, "adversarial")["0.net.layer1.0.1.adversarial.running_mean"],
                          atol=1e-2)


def test_compiled_network_follows_the_route_like_eager():
    # aot_eager: TorchDynamo's graph capture (which guards on the route attribute) without code generation.
    torch._dynamo.reset()
    model = use_dual_batchnorm(network()).eval()
    with adversarial_batchnorm(model):
        for layer in dual_batchnorm_layers(model):
            layer.adversarial.bias.data.add_(0.5)
    compiled = torch.compile(model, backend="aot_eager")
    x = images(4)
    for _ in range(2):     # clean, adversarial, clean, adversarial: each route keeps its own graph
        assert torch.allclose(compiled(x), model(x), atol=1e-6)
        with adversarial_batchnorm(model):
            adversarial = compiled(x)
        assert torch.allclose(adversarial, _adversarial_eval(model, x), atol=1e-6)
        assert not torch.allclose(adversarial, model(x), atol=1e-3)
