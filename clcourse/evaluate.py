"""Evaluating a frozen representation: features, kNN accuracy, linear probe, alignment, uniformity.

Everything runs on the device of its inputs, without gradients into the encoder: features are
extracted under torch.no_grad, and the kNN and probe work on those detached features.

References:
- Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR 2018
  (InstDisc): the weighted kNN monitor.
- Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and
  Uniformity on the Hypersphere", ICML 2020: alignment and uniformity.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .augment import to_float_images
from .presets import autocast_dtype, no_autocast
from .validation import (
    describe_tensor,
    require_classes,
    require_embeddings,
    require_finite,
    require_images,
    require_in_range,
    require_int_at_least,
    require_labels,
    require_positive,
    require_same_shape,
    require_unit_range,
)

__all__ = ["extract_features", "eval_mode", "knn_predict", "knn_accuracy", "ProbeResult",
           "linear_probe", "alignment", "uniformity", "per_class_accuracy"]


# ---------------------------------------------------------------- features

def extract_features(backbone: nn.Module, images: torch.Tensor,
                     batch_size: int = 1024) -> torch.Tensor:
    """Run `backbone` over `images` in eval mode and return its features, float32 [N, D].

    Args:
        backbone: a module mapping float pixels in [0, 1], [B, 3, H, W], to features [B, D]
            (the backbone, not the projector).
        images: uint8 [N, 3, H, W] (converted to float / 255 one batch at a time, so the whole
            dataset is never held as float) or float in [0, 1] (checked: one host sync).
        batch_size: images per forward pass; the result does not depend on it (eval mode).

    Runs on the backbone's device (batches of images are moved there), under torch.no_grad, so the
    features are detached, and under autocast on a GPU (bf16, or fp16 on GPUs without native bf16).
    Every submodule's train/eval mode is restored afterwards. The features are not normalised.
    """
    if not isinstance(backbone, nn.Module):
        raise ValueError(f"backbone must be a torch.nn.Module, got {type(backbone).__name__}")
    require_images("images", images)
    require_unit_range("images", images)
    batch_size = require_int_at_least("batch_size", batch_size, 1)

    parameter = next(backbone.parameters(), None)
    device = parameter.device if parameter is not None else images.device
    amp_dtype = autocast_dtype(device)
    with eval_mode(backbone), torch.no_grad(), \
            torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                           enabled=amp_dtype is not None):
        features = []
        for start in range(0, images.shape[0], batch_size):
            batch = to_float_images(images[start:start + batch_size].to(device, non_blocking=True))
            features.append(backbone(batch).float())
    return torch.cat(features)


@contextmanager
def eval_mode(*modules: nn.Module):
    """Every submodule of `modules` in eval mode inside the context (batch-norm uses its running
    statistics and leaves them alone); on leaving, also after an error, each submodule gets back
    its own train/eval flag (so a network with, say, a frozen BN layer inside a training model
    keeps that mix)."""
    previous_modes = [(submodule, submodule.training) for module in modules
                      for submodule in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for submodule, was_training in previous_modes:
            submodule.training = was_training


# ---------------------------------------------------------------- weighted kNN

def _check_knn_inputs(train_features, train_labels, test_features, k, temperature,
                      chunk_size) -> tuple[torch.Tensor, int, float, int]:
    """Checks the arguments of `knn_predict`; returns train_labels (int64), k, temperature and
    chunk_size as plain values."""
    require_embeddings("train_features", train_features)
    require_embeddings("test_features", test_features)
    train_labels = require_labels("train_labels", train_labels, train_features.shape[0],
                                  "train_features")
    if test_features.shape[1] != train_features.shape[1]:
        raise ValueError(f"test_features has dimension {test_features.shape[1]} but "
                         f"train_features has {train_features.shape[1]}; they must match")
    if test_features.device != train_features.device:
        raise ValueError(f"test_features is on {test_features.device} but train_features on "
                         f"{train_features.device}; put them on the same device")
    k = require_int_at_least("k", k, 1)
    if k > train_features.shape[0]:
        raise ValueError(f"k must be at most the train-set size {train_features.shape[0]}, got {k}")
    temperature = require_positive("temperature", temperature)
    chunk_size = require_int_at_least("chunk_size", chunk_size, 1)
    require_finite("train_features", train_features)
    require_finite("test_features", test_features)
    return train_labels, k, temperature, chunk_size


def _num_classes(labels: torch.Tensor, name: str) -> int:
    """max label + 1, after checking that no label is negative (one host sync)."""
    low, high = torch.stack([labels.min(), labels.max()]).tolist()
    if low < 0:
        raise ValueError(f"{name} must be class indices >= 0, got a label {low}")
    return high + 1


def knn_predict(train_features: torch.Tensor, train_labels: torch.Tensor,
                test_features: torch.Tensor, k: int = 200, temperature: float = 0.1,
                chunk_size: int = 1024) -> torch.Tensor:
    r"""Weighted cosine k-nearest-neighbour predictions (InstDisc, Wu et al. 2018), int64 [N_test].

    With unit vectors u = f / ||f||, the k train points N_k(q) most similar to a test point q vote
    for their class with weight exp(s / T), s = u_q . u_i:

        \hat y(q) = \arg\max_c \sum_{i \in N_k(q)} \exp(s_{qi} / T) [y_i = c]

    The number of classes is max(train_labels) + 1. Test points are handled `chunk_size` at a time,
    so the full N_test x N_train similarity matrix is never built. Inputs are not modified. Features
    with a NaN or inf (a diverged encoder) raise a ValueError rather than vote: top-k over NaN picks
    arbitrary neighbours.
    """
    train_labels, k, temperature, chunk_size = _check_knn_inputs(train_features, train_labels,
                                                                 test_features, k, temperature,
                                                                 chunk_size)
    num_classes = _num_classes(train_labels, "train_labels")
    bank = F.normalize(train_features.detach().float(), dim=1)                       # [N_train, D]
    bank_labels = train_labels.to(bank.device)
    predictions = []
    with no_autocast(bank.device):
        for start in range(0, test_features.shape[0], chunk_size):
            queries = F.normalize(test_features[start:start + chunk_size].detach().float(), dim=1)
            similarity, neighbour = (queries @ bank.T).topk(k, dim=1)                  # [c, k] each
            # Subtracting each row's top similarity scales that row's weights by one constant, so
            # the vote is unchanged, and exp cannot overflow for small temperatures.
            weights = torch.exp((similarity - similarity[:, :1]) / temperature)
            votes = torch.zeros(len(queries), num_classes, device=bank.device)
            votes.scatter_add_(1, bank_labels[neighbour], weights)
            predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def knn_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor,
                 test_features: torch.Tensor, test_labels: torch.Tensor, k: int = 200,
                 temperature: float = 0.1, chunk_size: int = 1024) -> float:
    """Fraction of test points whose weighted kNN prediction (see `knn_predict`) is their label.

    The course's default monitor: L2-normalised backbone features, k = 200, T = 0.1 (the MoCo
    CIFAR demo and InstDisc settings). Returns a Python float in [0, 1].
    """
    require_embeddings("test_features", test_features)
    test_labels = require_labels("test_labels", test_labels, test_features.shape[0],
                                 "test_features")
    predictions = knn_predict(train_features, train_labels, test_features, k, temperature,
                              chunk_size)
    return (predictions == test_labels.to(predictions.device)).float().mean().item()


# ---------------------------------------------------------------- linear probe

@dataclass
class ProbeResult:
    """Outcome of `linear_probe`. `classifier` takes raw (unstandardised) features."""
    test_accuracy: float
    train_accuracy: float
    classifier: nn.Linear


def _accuracy(classifier: nn.Linear, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (classifier(features).argmax(dim=1) == labels).float().mean()


def linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor,
                 test_features: torch.Tensor, test_labels: torch.Tensor, epochs: int = 100,
                 lr: float = 3e-2, weight_decay: float = 1e-5, batch_size: int = 1024,
                 seed: int = 0) -> ProbeResult:
    r"""Multinomial logistic regression on frozen, precomputed features (the linear
    evaluation protocol).

    The features are standardised with the train set's per-dimension mean and standard deviation,
    x' = (x - mu) / sigma, so one learning rate suits any backbone's feature scale. Then a linear
    layer W x' + b (started at zero, so the result depends only on `seed`) minimises

        L = -\frac{1}{N} \sum_i \log \mathrm{softmax}(W x'_i + b)_{y_i}
            (+ weight_decay ||W||^2 / 2 via Adam)

    with Adam, minibatches in a seeded random order, and a cosine learning-rate decay to zero over
    all steps. The standardisation is folded into the returned classifier,
    W x' + b = (W / sigma) x + (b - (W / sigma) mu), so it takes raw features.

    Everything runs on the features' device; the features are detached (the encoder stays frozen).
    The number of classes is max(train_labels) + 1. Accuracies are those of the final epoch (no
    model selection on the test set). Features with a NaN or inf raise a ValueError.

    The defaults (Adam lr 0.03, batch 1024, 100 epochs: about 4,900 steps for 50,000 examples) come
    within about half a point of the converged optimum on 512-d CIFAR-10 features; a 50,000 x 512
    probe takes about 4 s on two CPU cores.
    """
    require_embeddings("train_features", train_features)
    require_embeddings("test_features", test_features)
    train_labels = require_labels("train_labels", train_labels, train_features.shape[0],
                                  "train_features")
    test_labels = require_labels("test_labels", test_labels, test_features.shape[0],
                                 "test_features")
    if test_features.shape[1] != train_features.shape[1]:
        raise ValueError(f"test_features has dimension {test_features.shape[1]} but "
                         f"train_features has {train_features.shape[1]}; they must match")
    epochs = require_int_at_least("epochs", epochs, 1)
    lr = require_positive("lr", lr)
    weight_decay = require_in_range("weight_decay", weight_decay, 0.0, math.inf,
                                    high_inclusive=False)
    batch_size = require_int_at_least("batch_size", batch_size, 1)
    seed = require_int_at_least("seed", seed, 0)
    require_finite("train_features", train_features)
    require_finite("test_features", test_features)
    num_classes = _num_classes(train_labels, "train_labels")

    device = train_features.device
    features = train_features.detach().float()
    labels = train_labels.to(device)
    mean = features.mean(dim=0)
    std = features.std(dim=0, unbiased=False).clamp_min(1e-6)    # constant dimensions stay finite
    standardised = (features - mean) / std

    classifier = nn.Linear(features.shape[1], num_classes, device=device)
    nn.init.zeros_(classifier.weight)
    nn.init.zeros_(classifier.bias)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(features) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    generator = torch.Generator(device=device).manual_seed(seed)

    # enable_grad: the probe trains even if the caller is inside torch.no_grad; float32 throughout.
    with torch.enable_grad(), no_autocast(device):
        for _ in range(epochs):
            order = torch.randperm(len(features), generator=generator, device=device)
            for batch in order.split(batch_size):
                loss = F.cross_entropy(classifier(standardised[batch]), labels[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()

    with torch.no_grad():
        scaled_weight = classifier.weight / std
        classifier.bias -= scaled_weight @ mean
        classifier.weight.copy_(scaled_weight)
        train_accuracy = _accuracy(classifier, features, labels)
        test_accuracy = _accuracy(classifier, test_features.detach().float().to(device),
                                  test_labels.to(device))
        train_accuracy, test_accuracy = torch.stack([train_accuracy, test_accuracy]).tolist()
    return ProbeResult(test_accuracy=test_accuracy, train_accuracy=train_accuracy,
                       classifier=classifier)


# ---------------------------------------------------------------- alignment and uniformity

def alignment(z1: torch.Tensor, z2: torch.Tensor, alpha: float = 2) -> torch.Tensor:
    r"""Alignment of positive pairs (Wang & Isola, ICML 2020), a scalar tensor; lower is better.

        L_align = E_{(x, y) ~ positive pairs} || f(x) - f(y) ||_2^\alpha

    Row i of `z1` and row i of `z2` ([N, D] each) are a positive pair, for example two views of one
    image; both are L2-normalised here, so the value lies in [0, 2^alpha]. Differentiable; nothing
    is detached.
    """
    require_embeddings("z1", z1)
    require_embeddings("z2", z2)
    require_same_shape("z1", z1, "z2", z2)
    require_positive("alpha", alpha)
    with no_autocast(z1.device):
        u1, u2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
        return (u1 - u2).norm(dim=1).pow(alpha).mean()


def uniformity(z: torch.Tensor, t: float = 2, chunk_size: int = 1024) -> torch.Tensor:
    r"""Uniformity of the embedding distribution (Wang & Isola, ICML 2020), a scalar tensor;
    lower is better.

        L_uniform = \log \frac{1}{N(N-1)} \sum_{i \ne j} \exp(-t || f(x_i) - f(x_j) ||_2^2)

    over all ordered pairs of distinct rows of `z` [N, D] (N >= 2), L2-normalised here. It is the
    log of the mean Gaussian-kernel potential; its minimum is reached by the uniform distribution
    on the sphere.

    For unit vectors ||u_i - u_j||^2 = 2 - 2 u_i . u_j. Rows are processed `chunk_size` at a time:
    each chunk's log-sum-exp is accumulated and combined with a final log-sum-exp, so no N x N
    matrix is built and the exponentials cannot underflow to log(0). Differentiable; nothing is
    detached.
    """
    require_embeddings("z", z)
    if z.shape[0] < 2:
        raise ValueError(f"z must have at least 2 rows to form a pair, got {z.shape[0]}")
    require_positive("t", t)
    require_int_at_least("chunk_size", chunk_size, 1)
    n = z.shape[0]
    columns = torch.arange(n, device=z.device)
    chunk_logsumexps = []
    with no_autocast(z.device):
        u = F.normalize(z.float(), dim=1)
        for start in range(0, n, chunk_size):
            rows = u[start:start + chunk_size]
            squared_distance = (2 - 2 * rows @ u.T).clamp_min(0)  # [c, N]
            self_pair = (columns[None, :]
                         == (start + torch.arange(len(rows), device=u.device))[:, None])
            log_kernel = (-t * squared_distance).masked_fill(self_pair, float("-inf"))
            chunk_logsumexps.append(torch.logsumexp(log_kernel.flatten(), dim=0))
        return torch.logsumexp(torch.stack(chunk_logsumexps), dim=0) - math.log(n * (n - 1))


# ---------------------------------------------------------------- per-class accuracy

def per_class_accuracy(predictions: torch.Tensor, labels: torch.Tensor,
                       num_classes: int | None = None) -> torch.Tensor:
    """Accuracy within each class, float32 [C]: entry c is the fraction of the examples labelled c
    that are predicted c (NaN for a class with no examples). C defaults to max(labels) + 1.

    On a class-imbalanced training set, the mean accuracy hides what happens to the rare
    classes; this does not.
    """
    if (not isinstance(predictions, torch.Tensor) or predictions.dim() != 1
            or predictions.is_floating_point()):
        raise ValueError(f"predictions must be a 1-D integer tensor of class indices, "
                         f"got {describe_tensor(predictions)}")
    require_labels("labels", labels, predictions.shape[0], "predictions")
    if num_classes is None:
        num_classes = _num_classes(labels, "labels")
    num_classes = require_int_at_least("num_classes", num_classes, 1)
    require_classes("labels", labels, num_classes, f"num_classes={num_classes}")
    labels = labels.to(predictions.device)
    correct = torch.zeros(num_classes, device=labels.device).index_add_(
        0, labels, (predictions == labels).float())
    counts = torch.bincount(labels, minlength=num_classes).float()
    return correct / counts
