import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from clcourse.models import (CIFAR10_MEAN, CIFAR10_STD, Backbone, Normalize, ResNet18, SmallCNN, SplitBatchNorm2d,
                             build_backbone, projection_mlp, use_split_batchnorm)
from clcourse.presets import PRESETS, get_preset


def test_resnet18_has_the_cifar_stem_and_512_features():
    net = ResNet18()
    first_conv = net.stem[0]
    assert first_conv.kernel_size == (3, 3) and first_conv.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    assert sum(p.numel() for p in net.parameters()) == 11_168_832  # torchvision's resnet18 minus fc, 3x3 stem
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


def test_channels_last_gives_the_same_features():
    torch.manual_seed(0)
    backbone = build_backbone("resnet18").eval()
    x = torch.rand(2, 3, 32, 32)
    expected = backbone(x)
    backbone.to(memory_format=torch.channels_last)
    assert torch.allclose(backbone(x.contiguous(memory_format=torch.channels_last)), expected, atol=1e-5)


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


def test_presets(monkeypatch):
    monkeypatch.delenv("CLCOURSE_PRESET", raising=False)
    expected_default = "colab" if torch.cuda.is_available() else "smoke"
    assert get_preset().name == expected_default
    monkeypatch.setenv("CLCOURSE_PRESET", "full")
    assert get_preset().name == "full"
    assert get_preset("smoke").name == "smoke"
    assert PRESETS["smoke"].backbone == "small_cnn" and PRESETS["colab"].backbone == "resnet18"
    assert get_preset("smoke").with_overrides(epochs=1).epochs == 1
    monkeypatch.setenv("CLCOURSE_PRESET", "huge")
    with pytest.raises(ValueError, match="CLCOURSE_PRESET.*huge"):
        get_preset()
    with pytest.raises(ValueError, match="name"):
        get_preset("tiny")


def test_max_epochs_and_max_train_images_cap_the_presets_training_budget_and_nothing_else(monkeypatch):
    monkeypatch.setenv("CLCOURSE_MAX_EPOCHS", "2")
    capped = get_preset("smoke")
    assert (capped.epochs, capped.sweep_epochs) == (2, 2)
    assert capped.with_overrides(epochs=12, sweep_epochs=6) == PRESETS["smoke"]
    monkeypatch.setenv("CLCOURSE_MAX_EPOCHS", "100")
    assert get_preset("full").epochs == 100 and get_preset("smoke") == PRESETS["smoke"]
    monkeypatch.setenv("CLCOURSE_MAX_TRAIN_IMAGES", "512")
    assert get_preset("smoke").train_subset == 512 and get_preset("colab").train_subset == 512
    assert get_preset("smoke").with_overrides(train_subset=2560) == PRESETS["smoke"]
    monkeypatch.setenv("CLCOURSE_MAX_TRAIN_IMAGES", "")
    monkeypatch.setenv("CLCOURSE_MAX_EPOCHS", "")
    assert get_preset("colab") == PRESETS["colab"]
    for wrong in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv("CLCOURSE_MAX_EPOCHS", wrong)
        with pytest.raises(ValueError, match=f"CLCOURSE_MAX_EPOCHS must be an integer >= 1, got '?{wrong}"):
            get_preset("smoke")


def test_split_batchnorm_in_training_gives_the_same_result_in_channels_last():
    # On a GPU the training loop runs in channels_last; the split statistics must not depend on the layout.
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5)
    contiguous, channels_last = SplitBatchNorm2d(3, 4), SplitBatchNorm2d(3, 4)
    expected = contiguous(x)
    result = channels_last(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(result, expected, atol=1e-6)
    assert torch.allclose(channels_last.running_mean, contiguous.running_mean, atol=1e-7)
    assert torch.allclose(channels_last.running_var, contiguous.running_var, atol=1e-7)
