"""Backbones and batch-norm (clcourse/models.py): ResNet-18's CIFAR stem, unit-range pixels
normalised first (uint8 refused), channels_last, the projector; split batch-norm per interleaved
group (in bf16 channels_last on a GPU too); dual batch-norm that routes through its adversarial
branch and moves only that branch's statistics; batch-norm statistics frozen during an attack."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from clcourse.models import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    Backbone,
    DualBatchNorm,
    Normalize,
    ResNet18,
    SmallCNN,
    SplitBatchNorm2d,
    adversarial_batchnorm,
    batchnorm_statistics_frozen,
    build_backbone,
    dual_batchnorm_layers,
    projection_mlp,
    use_dual_batchnorm,
    use_split_batchnorm,
)


def test_resnet18_has_the_cifar_stem_and_512_features():
    net = ResNet18()
    first_conv = net.stem[0]
    assert first_conv.kernel_size == (3, 3) and first_conv.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    # torchvision's resnet18 minus fc, 3x3 stem
    assert sum(p.numel() for p in net.parameters()) == 11_168_832
    x = torch.rand(2, 3, 32, 32)
    assert net(x).shape == (2, 512)
    # the stem keeps the 32x32 resolution in the first stage
    assert net.layer1(net.stem(x)).shape == (2, 64, 32, 32)


def test_backbones_take_unit_range_pixels_and_normalise_first():
    backbone = build_backbone("small_cnn")
    assert isinstance(backbone.normalize, Normalize)
    x = torch.rand(4, 3, 32, 32)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    backbone.eval()
    assert torch.allclose(backbone(x), backbone.net((x - mean) / std))
    assert backbone(x).shape == (4, backbone.feature_dim) == (4, 128)


def test_uint8_images_straight_into_a_backbone_are_refused(images):
    with pytest.raises(ValueError,
                       match="takes float pixels in \\[0, 1\\], got torch.uint8.*to_float_images"):
        Backbone(SmallCNN(width=4))(images)


def test_channels_last_gives_the_same_features():
    torch.manual_seed(0)
    backbone = build_backbone("resnet18").eval()
    x = torch.rand(2, 3, 32, 32)
    expected = backbone(x)
    backbone.to(memory_format=torch.channels_last)
    assert torch.allclose(backbone(x.contiguous(memory_format=torch.channels_last)), expected,
                          atol=1e-5)


def test_projection_mlp():
    head = projection_mlp(128, 64, 16)
    assert head(torch.randn(5, 128)).shape == (5, 16)
    with pytest.raises(ValueError, match="out_dim"):
        projection_mlp(128, 64, 0)


def test_unknown_backbone():
    with pytest.raises(ValueError, match="resnet18"):
        build_backbone("resnet1000")


def test_split_batchnorm_normalises_each_interleaved_group_separately():
    torch.manual_seed(0)
    splits, channels = 4, 3
    bn = SplitBatchNorm2d(channels, splits)
    nn.init.normal_(bn.weight)
    nn.init.normal_(bn.bias)
    x = torch.randn(8, channels, 5, 5) * 3 + 1
    out = bn(x)
    for s in range(splits):
        group = x[s::splits]
        expected = F.batch_norm(group, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
        assert torch.allclose(out[s::splits], expected, atol=1e-5)
    # running statistics: the average of the per-group updates
    group_means = torch.stack([x[s::splits].mean((0, 2, 3)) for s in range(splits)]).mean(0)
    assert torch.allclose(bn.running_mean, 0.1 * group_means, atol=1e-6)
    bn.eval()
    plain = nn.BatchNorm2d(channels)
    plain.load_state_dict(bn.state_dict())
    plain.eval()
    assert torch.allclose(bn(x), plain(x))


def test_split_batchnorm_with_one_split_is_batchnorm():
    torch.manual_seed(0)
    x = torch.randn(6, 2, 3, 3)
    assert torch.allclose(SplitBatchNorm2d(2, 1)(x), nn.BatchNorm2d(2)(x), atol=1e-6)


def test_split_batchnorm_needs_a_divisible_batch():
    with pytest.raises(ValueError, match="num_splits"):
        SplitBatchNorm2d(2, 4)(torch.randn(6, 2, 3, 3))


def test_use_split_batchnorm_replaces_every_batchnorm_and_keeps_weights():
    torch.manual_seed(0)
    backbone = Backbone(SmallCNN(width=4))
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    use_split_batchnorm(backbone, 2)
    kinds = [type(m) for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert kinds and all(k is SplitBatchNorm2d for k in kinds)
    after = backbone.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_split_batchnorm_in_training_gives_the_same_result_in_channels_last():
    # On a GPU the training loop runs in channels_last; the split statistics must not depend on the
    # layout.
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5)
    contiguous, channels_last = SplitBatchNorm2d(3, 4), SplitBatchNorm2d(3, 4)
    expected = contiguous(x)
    result = channels_last(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(result, expected, atol=1e-6)
    assert torch.allclose(channels_last.running_mean, contiguous.running_mean, atol=1e-7)
    assert torch.allclose(channels_last.running_var, contiguous.running_var, atol=1e-7)


@pytest.mark.cuda
def test_split_batchnorm_in_bf16_channels_last_matches_each_group_in_float32():
    # The MoCo training path on a GPU: bf16 activations in channels_last through cuDNN's batch-norm,
    # after the reshape that copies a channels_last tensor.
    torch.manual_seed(0)
    splits, channels = 8, 16
    bn = SplitBatchNorm2d(channels, splits).cuda()
    nn.init.normal_(bn.weight)
    nn.init.normal_(bn.bias)
    x = (torch.randn(64, channels, 8, 8, device="cuda") * 3 + 1).to(torch.bfloat16)
    out = bn(x.contiguous(memory_format=torch.channels_last))
    assert out.shape == x.shape and out.dtype == torch.bfloat16
    for s in range(splits):
        expected = F.batch_norm(x[s::splits].float(), None, None, bn.weight, bn.bias, training=True,
                                eps=bn.eps)
        assert torch.allclose(out[s::splits].float(), expected, atol=0.05, rtol=0.02)
    group_means = torch.stack([x[s::splits].float().mean((0, 2, 3)) for s in range(splits)]).mean(0)
    assert torch.allclose(bn.running_mean, 0.1 * group_means, atol=1e-3)


# ---------------------------------------------------------------- dual batch-norm (AdvProp, CLAE)

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
    # running statistics that are not the initial ones
    model(images(1))
    original = copy.deepcopy(model)
    use_dual_batchnorm(model)
    use_dual_batchnorm(model)                         # converting twice wraps nothing twice
    layers = dual_batchnorm_layers(model)
    # three conv stages and the projector's BatchNorm1d
    assert len(layers) == 4
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
    assert (isinstance(dual.clean, SplitBatchNorm2d)
            and isinstance(dual.adversarial, SplitBatchNorm2d))


def test_each_branch_moves_only_its_own_running_statistics():
    model = use_dual_batchnorm(network()).train()
    clean, adversarial = batchnorm_state(model, "clean"), batchnorm_state(model, "adversarial")
    with adversarial_batchnorm(model):
        model(images(1))
    assert all(torch.equal(value, batchnorm_state(model, "clean")[key])
               for key, value in clean.items())
    moved = batchnorm_state(model, "adversarial")
    assert all(not torch.equal(value, moved[key]) for key, value in adversarial.items())

    # a clean pass leaves the adversarial branch alone
    model(images(2))
    assert all(torch.equal(value, batchnorm_state(model, "adversarial")[key])
               for key, value in moved.items())
    assert any(not torch.equal(value, batchnorm_state(model, "clean")[key])
               for key, value in clean.items())


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
        # the inner exit restored "adversarial"
        assert all(layer.route_adversarial for layer in layers)
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
    assert torch.allclose(
        batchnorm_state(model, "adversarial")["0.net.layer1.0.1.adversarial.running_mean"],
        batchnorm_state(reference, "adversarial")["0.net.layer1.0.1.adversarial.running_mean"],
        atol=1e-2)


def test_compiled_network_follows_the_route_like_eager():
    # aot_eager: TorchDynamo's graph capture (which guards on the route attribute) without code
    # generation.
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


# ---------------------------------------------------------------- batch-norm frozen in an attack

def test_batchnorm_statistics_frozen_uses_batch_statistics_and_leaves_the_averages():
    layer = nn.BatchNorm2d(3).train()
    x = torch.randn(4, 3, 5, 5) * 3 + 1
    with batchnorm_statistics_frozen(layer):
        inside = layer(x)
    assert torch.equal(layer.running_mean, torch.zeros(3)) and layer.num_batches_tracked.item() == 0
    assert layer.momentum == 0.1
    assert torch.allclose(
        inside, F.batch_norm(x, None, None, layer.weight, layer.bias, training=True), atol=1e-6)
