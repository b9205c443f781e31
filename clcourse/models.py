"""Encoders for 32x32 (and 96x96) images: ResNet-18 with the CIFAR stem, a small CNN for CPU runs,
the projection MLP, split batch-norm for MoCo on one device, and dual batch-norm (a second set of BN
layers for adversarial examples, AdvProp / CLAE).

Every backbone starts with its own `Normalize` layer, so every model takes pixels in [0, 1]. Attacks
in later notebooks perturb those pixels directly, with epsilons in [0, 1] pixel units.
"""
from __future__ import annotations

import copy
import hashlib
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from .validation import require_bool, require_in_range, require_int_at_least

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "Normalize", "conv_bn_relu", "BasicBlock", "ResNet18",
           "SmallCNN", "Backbone", "BACKBONES", "build_backbone", "projection_mlp",
           "SplitBatchNorm2d", "use_split_batchnorm", "DualBatchNorm", "use_dual_batchnorm",
           "dual_batchnorm_layers", "adversarial_batchnorm", "batchnorm_statistics_frozen",
           "weights_fingerprint"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class Normalize(nn.Module):
    """(x - mean) / std per channel, as the first layer of a model that takes [0, 1] pixels."""

    def __init__(self, mean=CIFAR10_MEAN, std=CIFAR10_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A dtype check costs no host sync (a range check would, every forward pass: that one is
        # made where images enter, see `require_unit_range`).
        if not x.is_floating_point():
            raise ValueError(f"the model takes float pixels in [0, 1], got {x.dtype} "
                             "images: convert them with "
                             "clcourse.augment.to_float_images(images) (uint8 / 255) first")
        return (x - self.mean) / self.std


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (He et al. 2016)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class ResNet18(nn.Module):
    """ResNet-18 with the CIFAR stem: a 3x3 convolution with stride 1 and no max-pool, so 32x32
    inputs keep their resolution in the first stage. Returns the 512-d pooled features."""

    feature_dim = 512

    def __init__(self):
        super().__init__()
        self.stem = conv_bn_relu(3, 64)
        widths = (64, 128, 256, 512)
        stages, in_channels = [], 64
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(in_channels, width, stride),
                                        BasicBlock(width, width)))
            in_channels = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.pool(x)


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU stages (widths w, 2w, 4w) with max-pooling: a few-minute CPU stand-in for
    ResNet-18 (about 1,300 training images/s on 2 CPU cores at w = 32)."""

    def __init__(self, width: int = 32):
        super().__init__()
        require_int_at_least("width", width, 1)
        self.feature_dim = 4 * width
        self.layer1 = nn.Sequential(conv_bn_relu(3, width), nn.MaxPool2d(2))
        self.layer2 = nn.Sequential(conv_bn_relu(width, 2 * width), nn.MaxPool2d(2))
        self.layer3 = conv_bn_relu(2 * width, 4 * width)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.layer3(self.layer2(self.layer1(x))))


class Backbone(nn.Module):
    """`Normalize` followed by a feature extractor; takes [0, 1] pixels and returns
    `feature_dim` features."""

    def __init__(self, net: nn.Module, mean=CIFAR10_MEAN, std=CIFAR10_STD):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net
        self.feature_dim = net.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


BACKBONES = {"resnet18": ResNet18, "small_cnn": SmallCNN}


def build_backbone(name: str, mean=CIFAR10_MEAN, std=CIFAR10_STD) -> Backbone:
    """A backbone by name ("resnet18" or "small_cnn") that takes [0, 1] pixels."""
    if name not in BACKBONES:
        raise ValueError(f"backbone name must be one of {sorted(BACKBONES)}, got {name!r}")
    return Backbone(BACKBONES[name](), mean, std)


def projection_mlp(in_dim: int, hidden_dim: int = 512, out_dim: int = 128,
                   batch_norm: bool = True) -> nn.Sequential:
    """The projection head g: Linear -> BN -> ReLU -> Linear (SimCLR). The loss sees g(h);
    evaluation uses h.

    MoCo v2's head has no batch-norm (`batch_norm=False`): BN statistics shared across a batch of
    keys would leak which key belongs to which query."""
    batch_norm = require_bool("batch_norm", batch_norm)
    for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
        require_int_at_least(name, value, 1)
    if not batch_norm:
        return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True),
                             nn.Linear(hidden_dim, out_dim))
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))


class SplitBatchNorm2d(nn.BatchNorm2d):
    """Batch-norm whose training statistics are computed separately on `num_splits` interleaved
    groups of the batch, as if each group ran on its own GPU.

    MoCo's shuffled BN stops the query and its key from sharing batch statistics, which would let
    the model find the positive through BN instead of through the image ("cheating"). On one device
    the MoCo CIFAR demo emulates it this way: reshape [N, C, H, W] to [N / S, S * C, H, W], so each
    of the S channel copies sees the samples with index = s (mod S).
    """

    def __init__(self, num_features: int, num_splits: int, **kwargs):
        super().__init__(num_features, **kwargs)
        require_int_at_least("num_splits", num_splits, 1)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        n, c, h, w = x.shape
        splits = self.num_splits
        if n % splits:
            raise ValueError(f"batch size must be divisible by num_splits={splits} in "
                             f"SplitBatchNorm2d, got {n}")
        running_mean = self.running_mean.repeat(splits)
        running_var = self.running_var.repeat(splits)
        out = F.batch_norm(
            x.reshape(n // splits, c * splits, h, w), running_mean, running_var,
            self.weight.repeat(splits), self.bias.repeat(splits),
            training=True, momentum=self.momentum, eps=self.eps)
        with torch.no_grad():  # the running statistics are the average over the splits
            self.running_mean.copy_(running_mean.view(splits, c).mean(0))
            self.running_var.copy_(running_var.view(splits, c).mean(0))
        return out.reshape(n, c, h, w)


def use_split_batchnorm(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every BatchNorm2d in `module` (in place) by a SplitBatchNorm2d with the
    same parameters."""
    require_int_at_least("num_splits", num_splits, 1)
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SplitBatchNorm2d):
            split = SplitBatchNorm2d(child.num_features, num_splits, eps=child.eps,
                                     momentum=child.momentum)
            split.load_state_dict(child.state_dict())
            split.to(device=child.weight.device, dtype=child.weight.dtype)
            setattr(module, name, split)
        else:
            use_split_batchnorm(child, num_splits)
    return module


# ---------------------------------------------------------------- dual batch-norm (AdvProp, CLAE)

class DualBatchNorm(nn.Module):
    """Two batch-norm layers of the same shape behind one switch: `clean` for ordinary images and
    for every evaluation, `adversarial` for adversarial examples, while every other weight of the
    network is shared (AdvProp: Xie et al., "Adversarial Examples Improve Image Recognition", CVPR
    2020; CLAE uses it too).

    Adversarial inputs have other activation statistics than clean ones; one shared BN would mix the
    two in its batch statistics and in its running averages. The adversarial copy starts as a copy
    of the clean layer (weights and running statistics) and keeps its running averages with
    `adversarial_momentum` (0.01 in CLAE's code, against PyTorch's default 0.1 on the clean layer).

    Which layer runs is decided by `route_adversarial` (False: clean), set for a whole network with
    the `adversarial_batchnorm` context manager; a layer only ever updates its own running
    statistics, so clean passes never move the adversarial averages and vice versa. Under
    torch.compile the switch is a guarded attribute: each route gets its own graph.
    """

    def __init__(self, batch_norm: nn.modules.batchnorm._BatchNorm,
                 adversarial_momentum: float = 0.01):
        super().__init__()
        if not isinstance(batch_norm, nn.modules.batchnorm._BatchNorm):
            raise ValueError(f"batch_norm must be a batch-norm layer (nn.BatchNorm1d/2d/3d), got "
                             f"{type(batch_norm).__name__}")
        require_in_range("adversarial_momentum", adversarial_momentum, 0.0, 1.0)
        self.clean = batch_norm
        self.adversarial = copy.deepcopy(batch_norm)
        self.adversarial.momentum = adversarial_momentum
        self.route_adversarial = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adversarial(x) if self.route_adversarial else self.clean(x)


def use_dual_batchnorm(module: nn.Module, adversarial_momentum: float = 0.01) -> nn.Module:
    """Replace every batch-norm layer of `module` (in place) by a `DualBatchNorm` whose clean
    branch is that layer, so a trained network keeps its weights and statistics on the clean route.
    Returns `module`."""
    require_in_range("adversarial_momentum", adversarial_momentum, 0.0, 1.0)
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, DualBatchNorm(child, adversarial_momentum))
        elif not isinstance(child, DualBatchNorm):
            use_dual_batchnorm(child, adversarial_momentum)
    return module


def dual_batchnorm_layers(module: nn.Module) -> list[DualBatchNorm]:
    """The `DualBatchNorm` layers of `module`."""
    return [m for m in module.modules() if isinstance(m, DualBatchNorm)]


@contextmanager
def adversarial_batchnorm(module: nn.Module):
    """Within this context every forward pass of `module` goes through the adversarial batch-norm
    branch of its `DualBatchNorm` layers (in training mode it updates that branch's running
    statistics, as any BN forward does); on leaving, each layer's previous route is restored.

        with adversarial_batchnorm(model):
            z_adv = model(x_adv)
    """
    layers = dual_batchnorm_layers(module)
    if not layers:
        raise ValueError(f"module ({type(module).__name__}) has no DualBatchNorm layer to route "
                         "through: convert it with use_dual_batchnorm(module) first")
    previous = [layer.route_adversarial for layer in layers]
    for layer in layers:
        layer.route_adversarial = True
    try:
        yield module
    finally:
        for layer, route in zip(layers, previous):
            layer.route_adversarial = route


# ----------------------------------------------------------- batch-norm statistics during an attack

@contextmanager
def batchnorm_statistics_frozen(module: nn.Module):
    """Within this context the batch-norm layers of `module` that are in training mode still
    normalise with the statistics of each batch, but leave their running averages
    (and batch counters) as they were.

    An attack inside a training step (adversarial training) makes several forward passes of
    perturbed copies of the batch. In training mode each would move the running averages that
    evaluation uses, so that they end up describing mostly the attack's intermediate images (a bug
    of CL-Robustness' code, which attacks in training mode). Here the attack sees the network the
    step trains (batch statistics) and only the step's own forward passes update the averages. The
    layers run with momentum 0, restored on leaving."""
    layers = [layer for layer in module.modules()
              if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.training
              and layer.track_running_stats]
    saved = [(layer, layer.momentum, layer.num_batches_tracked.clone()) for layer in layers]
    for layer in layers:
        layer.momentum = 0.0     # running = (1 - 0) * running + 0 * batch statistic
    try:
        yield module
    finally:
        for layer, momentum, count in saved:
            layer.momentum = momentum
            layer.num_batches_tracked.copy_(count)


def weights_fingerprint(module: nn.Module) -> str:
    """A short hash of every value in `module`'s state dict: changes when any weight
    or statistic does."""
    digest = hashlib.sha1()
    for key, value in module.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy()
                      .tobytes())
    return digest.hexdigest()[:16]
