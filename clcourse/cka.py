r"""Inside the network: how similar two representations are, layer by layer (linear CKA), and how
linearly separable each layer is (layer-wise linear probes).

Notation. The outputs of one layer on n examples, flattened, are X in R^{n x p}; another layer's (of
the same or another network, on the same or perturbed inputs, the same examples in the same order)
are Y in R^{n x q}. H = I_n - 1 1^T / n centres the rows, K = X X^T and L = Y Y^T are the
linear-kernel Gram matrices, and

    HSIC_0(K, L) = tr(K H L H) / (n - 1)^2
    CKA(X, Y)    = HSIC(K, L) / \sqrt{HSIC(K, K) HSIC(L, L)}
                 = || \bar Y^T \bar X ||_F^2 / ( || \bar X^T \bar X ||_F || \bar Y^T \bar Y ||_F ),
    \bar X = H X.

CKA is 1 for X = Y and invariant to an orthogonal transform and an isotropic scaling of either side,
not to an arbitrary invertible linear map (Kornblith et al. 2019).

A whole test set does not fit in memory layer by layer (one ResNet-18 block output of 10,000 CIFAR
images is 10,000 x 65,536 floats). Minibatch CKA (Nguyen et al. 2021) averages, over k minibatches
of b examples, an unbiased estimate of HSIC in each (Song et al. 2012), with K~ = K with its
diagonal set to zero:

    HSIC_1(K, L) = [ tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((b - 1)(b - 2))
                     - 2/(b - 2) 1^T K~ L~ 1 ] / (b (b - 3))
    CKA_mb(X, Y) = \frac{1}{k} \sum_t HSIC_1(K_t, L_t) /
                   \sqrt{ \frac{1}{k} \sum_t HSIC_1(K_t, K_t)
                          \cdot \frac{1}{k} \sum_t HSIC_1(L_t, L_t) }

so only the b x b Gram matrices of the current batch and three running sums per pair of layers are
kept, never the features. HSIC_1 needs b >= 4. Because each batch's estimate is unbiased, the
average does not drift with the batch size the way the biased HSIC_0 of small batches would (with
few examples and many features, HSIC_0 makes even independent representations look similar).

Layer outputs come from forward hooks on named modules (`record_layers`); every network runs in eval
mode, under torch.no_grad and, on a GPU, under autocast; Gram matrices and HSIC are computed in
float32 and float64.

References:
- Kornblith, Norouzi, Lee & Hinton, "Similarity of Neural Network Representations Revisited", ICML
  2019, https://arxiv.org/abs/1905.00414 (linear CKA).
- Nguyen, Raghu & Kornblith, "Do Wide and Deep Networks Learn the Same Things?", ICLR 2021,
  https://arxiv.org/abs/2010.15327 (minibatch CKA with the unbiased HSIC).
- Song, Smola, Gretton, Bedo & Borgwardt, "Feature Selection via Dependence Maximization", JMLR 2012
  (the unbiased HSIC estimator).
- Ghofrani, Yaghouti & Jamshidi, "Rethinking Robust Contrastive Learning from the Adversarial
  Perspective", https://arxiv.org/abs/2302.02502 (CKA heatmaps and layer-wise probes of CL, SCL
  and SL encoders).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .attacks import pgd
from .augment import to_float_images
from .evaluate import eval_mode, linear_probe
from .models import BasicBlock, ResNet18, SmallCNN
from .presets import autocast_dtype, no_autocast
from .validation import (
    as_number,
    describe_tensor,
    require_bool,
    require_finite,
    require_images,
    require_int_at_least,
    require_labels,
    require_unit_range,
)

__all__ = ["Perturbation", "HSICEstimator", "MIN_ROWS_UNBIASED", "hsic_unbiased", "linear_cka",
           "gram", "minibatches", "MinibatchCKA", "minibatch_cka", "default_layers",
           "require_layers", "record_layers", "feature_attack", "CKAResult", "layer_cka", "pool",
           "pooled_layer_features", "LayerProbes", "layer_probes", "short_layer_names",
           "layer_redundancy"]

# (x [B, 3, H, W] pixels in [0, 1], labels [B] or None) -> the images the network sees, e.g.
# adversarial ones.
Perturbation = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]
# (K [b, b], L [b, b]) -> a 0-d tensor: an HSIC estimator, e.g. a student's version of
# `hsic_unbiased`.
HSICEstimator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MIN_ROWS_UNBIASED = 4        # HSIC_1 divides by b (b - 3) and by (b - 2)


# ---------------------------------------------------------------- CKA of two feature matrices

def _require_feature_pair(x: torch.Tensor, y: torch.Tensor, minimum_rows: int, why: str) -> None:
    for name, features in (("x", x), ("y", y)):
        if (not isinstance(features, torch.Tensor) or features.dim() != 2
                or not features.is_floating_point()):
            raise ValueError(f"{name} must be a floating-point tensor [n, features], one row per "
                             f"example, got {describe_tensor(features)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError("x and y must have the same number of rows (the same n examples, in the "
                         f"same order), got {x.shape[0]} and {y.shape[0]}")
    if x.device != y.device:
        raise ValueError(f"x is on {x.device} but y on {y.device}; put them on the same device")
    if x.shape[0] < minimum_rows:
        raise ValueError(f"x and y must have at least {minimum_rows} rows "
                         f"({why}), got {x.shape[0]}")
    require_finite("x", x)
    require_finite("y", y)


def _hsic_pairs(grams_a: torch.Tensor, grams_b: torch.Tensor) -> torch.Tensor:
    """HSIC_1(K_i, L_j) for every K_i of grams_a [A, b, b] and L_j of grams_b [B, b, b]:
    [A, B], float64.

    With K~ and L~ the Gram matrices with a zero diagonal: tr(K~ L~) = sum_uv K~_uv L~_vu, and
    1^T K~ L~ 1 = (K~^T 1) . (L~ 1), so all A x B pairs come from two matrix products."""
    b = grams_a.shape[-1]
    off_diagonal = ~torch.eye(b, dtype=torch.bool, device=grams_a.device)
    with no_autocast(grams_a.device):
        ka = grams_a.double() * off_diagonal
        kb = grams_b.double() * off_diagonal
        trace = ka.flatten(1) @ kb.transpose(1, 2).flatten(1).T                       # [A, B]
        totals = ka.sum((1, 2))[:, None] * kb.sum((1, 2))[None, :]  # (1^T K~ 1)(1^T L~ 1)
        cross = ka.sum(1) @ kb.sum(2).T                                             # 1^T K~ L~ 1
        return (trace + totals / ((b - 1) * (b - 2)) - 2 * cross / (b - 2)) / (b * (b - 3))


def hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    r"""The unbiased estimator of HSIC (Song et al. 2012) from two Gram matrices of the same b >= 4
    examples, a 0-d float64 tensor:

        HSIC_1(K, L) = [ tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((b-1)(b-2))
                         - 2/(b-2) 1^T K~ L~ 1 ] / (b (b-3))

    where K~, L~ are K, L with the diagonal set to zero. Its expectation over samples of b
    examples is the population HSIC, whatever b; it equals the U-statistic mean of K_uv
    L_uv + K_uv L_st - 2 K_uv L_us over all ordered quadruples (u, v, s, t) of distinct examples
    (the tests check it). With the linear kernel it does not change when a constant vector is
    added to every row of the features."""
    for name, gram_matrix in (("k", k), ("l", l)):
        if (not isinstance(gram_matrix, torch.Tensor) or gram_matrix.dim() != 2
                or not gram_matrix.is_floating_point()
                or gram_matrix.shape[0] != gram_matrix.shape[1]):
            raise ValueError(f"{name} must be a square floating-point Gram matrix [b, b], got "
                             f"{describe_tensor(gram_matrix)}")
    if k.shape != l.shape:
        raise ValueError("k and l must be Gram matrices of the same examples (the same shape), "
                         f"got {tuple(k.shape)} and {tuple(l.shape)}")
    if k.shape[0] < MIN_ROWS_UNBIASED:
        raise ValueError(f"k and l must be at least {MIN_ROWS_UNBIASED} x {MIN_ROWS_UNBIASED}: "
                         f"the unbiased HSIC divides by b (b - 3), got b = {k.shape[0]}")
    l = l.to(k.device)
    for name, gram_matrix in (("k", k), ("l", l)):
        require_finite(name, gram_matrix)
        # A Gram matrix is symmetric; float rounding in X X^T may differ in its last bits.
        scale = gram_matrix.abs().max()
        if not torch.allclose(gram_matrix, gram_matrix.T, rtol=0, atol=float(1e-5 * scale)):
            asymmetry = float((gram_matrix - gram_matrix.T).abs().max())
            raise ValueError(f"{name} must be a symmetric Gram matrix (K = X X^T), but "
                             f"{name} - {name}.T has entries up to {asymmetry:.3g}")
    return _hsic_pairs(k[None], l[None])[0, 0]


def _ratio(cross: torch.Tensor, self_a: torch.Tensor, self_b: torch.Tensor, layers_a: Sequence[str],
           layers_b: Sequence[str]) -> torch.Tensor:
    """cross [A, B] / sqrt(self_a [A] self_b [B]), after checking that every self term is
    positive (a sync)."""
    for names, values in ((layers_a, self_a), (layers_b, self_b)):
        bad = (values <= 0).nonzero().flatten().tolist()
        if bad:
            raise ValueError(f"{names[bad[0]]!r} has HSIC with itself {values[bad[0]].item():.3g} "
                             "<= 0: its features do not vary over the examples (a constant or "
                             "dead layer), or there are too few examples for the unbiased "
                             "estimate; CKA with it is undefined")
    return cross / (self_a[:, None] * self_b[None, :]).sqrt()


def linear_cka(x: torch.Tensor, y: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    r"""Linear CKA of two representations of the same n examples, x [n, p] and y [n, q]
    (Kornblith et al. 2019), a 0-d float64 tensor in [0, 1]:

        CKA(X, Y) = || \bar Y^T \bar X ||_F^2 / ( || \bar X^T \bar X ||_F || \bar Y^T \bar Y ||_F ),
        \bar X = X - 1 \mu_X^T (columns centred), \bar Y likewise

    computed as written when n > max(p, q), else through the n x n Gram matrices (the same number,
    ||\bar Y^T \bar X||_F^2 = tr(\bar K \bar L) with \bar K = \bar X \bar X^T), whichever is
    cheaper. With `unbiased` (n >= 4), HSIC_1 of the full Gram matrices replaces each squared norm
    (`hsic_unbiased`): what `minibatch_cka` computes with one batch of all n rows. In float64;
    features with a NaN or inf, and features constant over the examples, raise a ValueError."""
    unbiased = require_bool("unbiased", unbiased)
    _require_feature_pair(x, y, MIN_ROWS_UNBIASED if unbiased else 2,
                          "the unbiased HSIC divides by n (n - 3)" if unbiased
                          else "centring one row leaves nothing")
    with no_autocast(x.device):
        x = x.detach().double()
        y = y.detach().double()
        x = x - x.mean(0)
        y = y - y.mean(0)
        n, p, q = x.shape[0], x.shape[1], y.shape[1]
        if unbiased:
            grams = torch.stack([x @ x.T, y @ y.T])
            hsic = _hsic_pairs(grams, grams)  # [[xx, xy], [yx, yy]]
            cross, self_x, self_y = hsic[0, 1], hsic[0, 0], hsic[1, 1]
        elif n > max(p, q):
            cross = (y.T @ x).square().sum()
            self_x, self_y = (x.T @ x).square().sum(), (y.T @ y).square().sum()
        else:
            k, l = x @ x.T, y @ y.T
            cross, self_x, self_y = (k * l).sum(), k.square().sum(), l.square().sum()
        return _ratio(cross[None, None], self_x[None], self_y[None], ["x"], ["y"])[0, 0]


def gram(features: torch.Tensor) -> torch.Tensor:
    r"""The linear-kernel Gram matrix K = \bar X \bar X^T, float32 [b, b], of a batch of layer
    outputs [b, ...] flattened to X [b, d] and centred over the batch.

    Neither HSIC estimator changes when the features are shifted, but ReLU outputs have a large
    mean: without centring, K would be a large constant plus the small part that matters, and
    float32 would lose the latter."""
    with no_autocast(features.device):
        x = features.detach().flatten(1).float()
        x = x - x.mean(0)
        return x @ x.T


def minibatches(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of ceil(n / batch_size) consecutive batches of nearly equal size (they differ
    by at most one row, so no small remainder batch gets a noisy estimate of its own), fewer when
    needed so that each batch has at least 4 rows, the unbiased HSIC's minimum."""
    require_int_at_least("n", n, MIN_ROWS_UNBIASED)
    require_int_at_least("batch_size", batch_size, MIN_ROWS_UNBIASED)
    count = min(math.ceil(n / batch_size), n // MIN_ROWS_UNBIASED)
    size, extra = divmod(n, count)
    bounds, start = [], 0
    for index in range(count):
        stop = start + size + (index < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


class MinibatchCKA:
    r"""Minibatch linear CKA between every layer of one representation (A layers) and every layer of
    another (B layers), accumulated batch by batch (Nguyen et al. 2021):

        CKA_mb(i, j) = \sum_t HSIC_1(K_{i,t}, L_{j,t})
                       / \sqrt{ \sum_t HSIC_1(K_{i,t}, K_{i,t}) \sum_t HSIC_1(L_{j,t}, L_{j,t}) }

    (the 1/k of the means cancels). Holds three sums, [A, B], [A] and [B], on the device of the Gram
    matrices; `update` never reads them on the host.

    Args:
        layers_a, layers_b: names of the layers (rows and columns), used in error messages.
        hsic: the HSIC estimator (K, L) -> 0-d tensor, e.g. a student's `hsic_unbiased`, called once
            per pair of layers per batch on float64 Gram matrices; by default all pairs at once with
            `hsic_unbiased`'s formula.
    """

    def __init__(self, layers_a: Sequence[str], layers_b: Sequence[str],
                 hsic: HSICEstimator | None = None):
        if hsic is not None and not callable(hsic):
            raise ValueError(f"hsic must be a function (K, L) -> HSIC estimate, got {hsic!r}")
        self.layers_a, self.layers_b = tuple(layers_a), tuple(layers_b)
        self.hsic = hsic
        self.cross = self.self_a = self.self_b = None
        self.batches = 0

    def _estimates(self, grams_a: torch.Tensor, grams_b: torch.Tensor):
        if self.hsic is None:
            return _hsic_pairs(grams_a, grams_b), _hsic_pairs(grams_a, grams_a).diagonal(), \
                _hsic_pairs(grams_b, grams_b).diagonal()
        ka, kb = grams_a.double(), grams_b.double()

        def estimate(k, l):
            value = self.hsic(k, l)
            # a tensor stays on its device (no host read); anything else must be a number
            if (not (isinstance(value, torch.Tensor) and value.numel() == 1
                     and value.is_floating_point()) and as_number(value) is None):
                raise ValueError("hsic must return one number (a 0-d floating-point tensor or a "
                                 f"float), got {describe_tensor(value)}")
            return torch.as_tensor(value, dtype=torch.float64, device=k.device).reshape(())

        cross = torch.stack([torch.stack([estimate(k, l) for l in kb]) for k in ka])
        return (cross, torch.stack([estimate(k, k) for k in ka]),
                torch.stack([estimate(l, l) for l in kb]))

    def update(self, grams_a: torch.Tensor, grams_b: torch.Tensor) -> None:
        """Add one minibatch: grams_a [A, b, b], the Gram matrices (`gram`) of the first
        representation's layers, grams_b [B, b, b] the second's, of the same b >= 4 examples in
        the same order."""
        for name, grams, layers in (("grams_a", grams_a, self.layers_a),
                                    ("grams_b", grams_b, self.layers_b)):
            if (not isinstance(grams, torch.Tensor) or grams.dim() != 3
                    or grams.shape[0] != len(layers)
                    or grams.shape[1] != grams.shape[2]):
                raise ValueError(f"{name} must be a tensor [{len(layers)}, b, b] (one Gram matrix "
                                 f"per layer), got {describe_tensor(grams)}")
        if grams_a.shape[1] != grams_b.shape[1]:
            raise ValueError("grams_a and grams_b must come from the same examples, got batches "
                             f"of {grams_a.shape[1]} and {grams_b.shape[1]}")
        if grams_a.shape[1] < MIN_ROWS_UNBIASED:
            raise ValueError(f"a minibatch must have at least {MIN_ROWS_UNBIASED} examples for "
                             f"the unbiased HSIC, got {grams_a.shape[1]}")
        cross, self_a, self_b = self._estimates(grams_a, grams_b.to(grams_a.device))
        if self.batches == 0:
            self.cross, self.self_a, self.self_b = cross, self_a, self_b
        else:
            self.cross = self.cross + cross
            self.self_a, self.self_b = self.self_a + self_a, self.self_b + self_b
        self.batches += 1

    def value(self) -> torch.Tensor:
        """CKA [A, B], float64 on the CPU (one host read). A layer whose HSIC with itself is not
        positive (its features do not vary) raises a ValueError that names it."""
        if self.batches == 0:
            raise ValueError("no minibatch has been added yet: call update(grams_a, grams_b) first")
        if self.hsic is not None:
            estimates = torch.cat([self.cross.flatten(), self.self_a, self.self_b])
            if not bool(torch.isfinite(estimates).all()):
                raise ValueError("hsic returned a NaN or infinite estimate: an HSIC of finite "
                                 "Gram matrices is finite")
        return _ratio(self.cross, self.self_a, self.self_b, self.layers_a, self.layers_b).cpu()


def minibatch_cka(x: torch.Tensor, y: torch.Tensor, batch_size: int = 256,
                  hsic: HSICEstimator | None = None) -> torch.Tensor:
    """Minibatch linear CKA (`MinibatchCKA`) of two feature matrices x [n, p] and y [n, q] of the
    same n >= 4 examples, in consecutive batches of about `batch_size` rows (`minibatches`): a 0-d
    float64 tensor. With batch_size >= n it is `linear_cka(x, y, unbiased=True)`."""
    _require_feature_pair(x, y, MIN_ROWS_UNBIASED, "the unbiased HSIC divides by b (b - 3)")
    accumulator = MinibatchCKA(("x",), ("y",), hsic)
    for start, stop in minibatches(x.shape[0], batch_size):
        accumulator.update(gram(x[start:stop])[None], gram(y[start:stop])[None])
    return accumulator.value()[0, 0]


# -------------------------------------------------------------- layer outputs through forward hooks

def _module_names(network: nn.Module) -> list[str]:
    return [name for name, _ in network.named_modules() if name]


def default_layers(network: nn.Module) -> list[str]:
    """The layers compared by default, named as in `network.named_modules()`: every residual block
    and the pooled output of the first ResNet18 inside `network`, or the three stages and the pooled
    output of a SmallCNN (for a `Backbone`: "net.layer1.0", ..., "net.layer4.1", "net.pool", or
    "net.layer1", ..., "net.pool")."""
    if not isinstance(network, nn.Module):
        raise ValueError(f"network must be a torch.nn.Module, got {type(network).__name__}")
    for name, module in network.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, ResNet18):
            blocks = [block for block, child in module.named_modules()
                      if isinstance(child, BasicBlock)]
            return [prefix + block for block in blocks] + [prefix + "pool"]
        if isinstance(module, SmallCNN):
            return [prefix + layer for layer in ("layer1", "layer2", "layer3", "pool")]
    raise ValueError(f"layers must be given for a {type(network).__name__}: it holds no ResNet18 "
                     "or SmallCNN, whose layers are known; its modules are: "
                     f"{', '.join(_module_names(network)) or 'none'}")


def require_layers(network: nn.Module, layers: Sequence[str] | None) -> tuple[str, ...]:
    """`layers` checked against `network.named_modules()` (None: `default_layers(network)`): a
    non-empty list of distinct module names. An unknown name raises a ValueError that lists the
    available ones."""
    if layers is None:
        return tuple(default_layers(network))
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
        raise ValueError("layers must be a non-empty list of module names (or None for the "
                         f"default layers), got {layers!r}")
    available = _module_names(network)
    unknown = [name for name in layers if name not in available]
    if unknown:
        raise ValueError("layers has names that are not modules of this "
                         f"{type(network).__name__}: {unknown}; the available names are: "
                         f"{', '.join(available)}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers must not repeat a name, got {list(layers)}")
    return tuple(layers)


@contextmanager
def record_layers(network: nn.Module, layers: Sequence[str] | None = None,
                  transform: Callable[[torch.Tensor], object] | None = None):
    """Forward hooks on the named modules of `network`, for the duration of the context. Yields a
    dict that a forward pass fills with layer name -> `transform(output)` (default: a detached copy
    of the output; a transform such as `gram` keeps only what it returns, so no output is held after
    its layer ran, and a later in-place operation cannot change what was recorded).

        with record_layers(backbone, ["net.layer1", "net.pool"]) as outputs:
            backbone(x)
        outputs["net.layer1"]

    The dict holds one forward pass: a module that runs twice (a module reused in one pass, or a
    second pass in the same context) raises a ValueError rather than overwrite. The hooks are
    removed on leaving, also after an error; nothing else about the network changes (its mode,
    weights and statistics are the caller's business).
    """
    names = require_layers(network, layers)
    modules = dict(network.named_modules())
    outputs: dict[str, object] = {}

    def hook_for(name: str):
        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor):
                raise ValueError(f"module {name!r} returns a {type(output).__name__}, not a "
                                 "tensor: record a module whose output is one tensor")
            if name in outputs:
                raise ValueError(f"module {name!r} ran more than once while its outputs were "
                                 "recorded (a module used twice in one forward pass, or a second "
                                 "forward pass in the same record_layers context): record one "
                                 "forward pass per context")
            outputs[name] = output.detach().clone() if transform is None else transform(output)
        return hook

    handles = []
    try:
        for name in names:
            handles.append(modules[name].register_forward_hook(hook_for(name)))
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def _device(network: nn.Module) -> torch.device:
    parameter = next(network.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _autocast(device: torch.device):
    """bf16 (fp16 on a T4) autocast on a GPU, nothing on a CPU: the forward passes' precision,
    as in evaluation."""
    dtype = autocast_dtype(device)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def _layer_statistics(network: nn.Module, layers: tuple[str, ...], x: torch.Tensor,
                      labels: torch.Tensor | None, perturb: Perturbation | None,
                      transform: Callable[[torch.Tensor], torch.Tensor]) -> list:
    """`transform` of each layer's output when `network` (in eval mode, on x's device) sees x, or
    perturb(x, labels); the perturbation runs with gradients enabled (attacks need them), the
    forward pass without."""
    with _autocast(x.device):
        if perturb is not None:
            perturbed = perturb(x, labels)
            if not isinstance(perturbed, torch.Tensor) or perturbed.shape != x.shape:
                raise ValueError("a perturbation must return images shaped like its input "
                                 f"{tuple(x.shape)}, got {describe_tensor(perturbed)}")
            x = perturbed.detach()
        with torch.no_grad(), record_layers(network, layers, transform) as outputs:
            network(x)
    missing = [name for name in layers if name not in outputs]
    if missing:
        raise ValueError(f"layers {missing} produced no output in a forward pass of this "
                         f"{type(network).__name__}: record modules that its forward pass runs")
    return [outputs[name] for name in layers]


def _checked_images(images: torch.Tensor, labels) -> torch.Tensor | None:
    require_images("images", images)
    require_unit_range("images", images)
    if images.shape[0] < MIN_ROWS_UNBIASED:
        raise ValueError(f"images must hold at least {MIN_ROWS_UNBIASED} images for the unbiased "
                         f"HSIC, got {images.shape[0]}")
    return None if labels is None else require_labels("labels", labels, images.shape[0], "images")


def _batch(images: torch.Tensor, labels: torch.Tensor | None, start: int, stop: int,
           device: torch.device):
    x = to_float_images(images[start:stop].to(device, non_blocking=True))
    return x, None if labels is None else labels[start:stop].to(device, non_blocking=True)


def feature_attack(network: nn.Module, epsilon: float = 8 / 255, steps: int = 5,
                   step_size: float | None = None, seed: int = 0) -> Perturbation:
    r"""A label-free perturbation for `layer_cka` and `layer_probes`: L-inf PGD
    (`clcourse.attacks.pgd`, random start) that moves the network's output (for a backbone, its
    pooled features h) away from that of the clean batch,

        x' = argmax_{||x' - x||_inf <= epsilon}  || f(x') - f(x) ||_2^2 ,

    the same objective for every encoder, contrastive or supervised, so their layers can be compared
    under attack. `step_size` defaults to 2.5 epsilon / steps (Madry et al. 2018). Seeded: the first
    call makes a generator on the batch's device from `seed`, and later calls continue it (a pass
    over a test set is reproducible)."""
    if not isinstance(network, nn.Module):
        raise ValueError(f"network must be a torch.nn.Module, got {type(network).__name__}")
    require_int_at_least("steps", steps, 1)
    step_size = 2.5 * epsilon / steps if step_size is None else step_size
    generator: torch.Generator | None = None

    def perturb(x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        nonlocal generator
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(seed)
        with torch.no_grad():
            clean = network(x).float()
        return pgd(lambda x_adv: (network(x_adv).float() - clean).square().sum(), x, epsilon,
                   step_size, steps, random_start=True, generator=generator)
    return perturb


# --------------------------------------------------------------- CKA between the layers of networks

@dataclass(frozen=True)
class CKAResult:
    """Minibatch linear CKA between every layer of representation `a` (rows) and every layer
    of `b` (columns)."""

    a: Hashable
    b: Hashable
    layers_a: tuple[str, ...]
    layers_b: tuple[str, ...]
    matrix: torch.Tensor       # [len(layers_a), len(layers_b)], float64 on the CPU; 1 on the
                               # diagonal of (a, a)
    num_images: int
    num_batches: int

    def transposed(self) -> CKAResult:
        """The same result with the roles of a and b swapped (CKA is symmetric)."""
        return CKAResult(self.b, self.a, self.layers_b, self.layers_a, self.matrix.T.contiguous(),
                         self.num_images, self.num_batches)


def _representations(representations, layers) -> dict:
    if not isinstance(representations, Mapping) or not representations:
        raise ValueError("representations must be a non-empty dict name -> network, or "
                         f"name -> (network, perturbation), got {representations!r}")
    parsed = {}
    for key, value in representations.items():
        network, perturb = (value, None) if isinstance(value, nn.Module) else (
            tuple(value) if isinstance(value, (tuple, list)) and len(value) == 2 else (None, None))
        if not isinstance(network, nn.Module) or (perturb is not None and not callable(perturb)):
            raise ValueError(f"representations[{key!r}] must be a network (an nn.Module) "
                             "or a pair (network, perturbation function (x, labels) -> x' "
                             f"or None), got {value!r}")
        names = layers.get(key) if isinstance(layers, Mapping) else layers
        parsed[key] = (network, perturb, require_layers(network, names))
    return parsed


def layer_cka(representations: Mapping[Hashable, nn.Module | tuple[nn.Module, Perturbation | None]],
              images: torch.Tensor, labels: torch.Tensor | None = None, *,
              pairs: Sequence[tuple[Hashable, Hashable]] | None = None,
              layers: Sequence[str] | Mapping[Hashable, Sequence[str]] | None = None,
              batch_size: int = 500, hsic: HSICEstimator | None = None,
              progress: bool = False) -> dict[tuple, CKAResult]:
    """Minibatch linear CKA (`MinibatchCKA`) between the layers of several representations of the
    same images, in one pass over the images.

    A representation is a network seeing some input: `representations` maps a name (any hashable,
    e.g. a pair ("SimCLR", "PGD")) to a network (it sees the images) or to (network, perturb), where
    perturb(x, labels) -> x' makes the images it sees from each batch x (pixels in [0, 1]), e.g. an
    attack from `clcourse.attacks`. In each batch every representation runs once, its perturbation
    included, and keeps only the b x b Gram matrix of each layer; each requested pair adds one
    unbiased HSIC estimate per pair of layers. Memory is that of one batch plus the sums, whatever
    the number of images.

    Args:
        representations: name -> network or (network, perturbation); networks map [B, 3, H, W]
            pixels in [0, 1] to anything (a backbone); their layers are read with forward hooks
            (`record_layers`). Every network runs in eval mode (the perturbations too) and gets its
            own train/eval flags back at the end.
        images: uint8 [N, 3, H, W] or float in [0, 1], N >= 4 (moved to each network's device
            batch by batch).
        labels: optional [N] labels, passed to the perturbations (attacks that use them).
        pairs: the (a, b) pairs to compare; default every pair with a listed before b or a == b.
        layers: module names for every network, or name -> module names per representation (missing
            names get the default), default `default_layers` (ResNet-18: its 8 residual blocks and
            the pooled output).
        batch_size: examples per minibatch (see `minibatches`); the estimate's noise falls with it.
        hsic: an HSIC estimator to use instead of the built-in vectorised one (see `MinibatchCKA`).
        progress: show a progress bar over the batches.

    Returns {(a, b): CKAResult} for every requested pair.
    """
    progress = require_bool("progress", progress)
    parsed = _representations(representations, layers)
    keys = list(parsed)
    if pairs is None:
        pairs = [(a, b) for index, a in enumerate(keys) for b in keys[index:]]
    pairs = [tuple(pair) for pair in pairs]
    for pair in pairs:
        if len(pair) != 2 or any(key not in parsed for key in pair):
            raise ValueError("pairs must hold pairs of representation names "
                             f"from {keys}, got {pair!r}")
    if not pairs:
        raise ValueError("pairs must hold at least one pair of representation "
                         "names, got an empty list")
    labels = _checked_images(images, labels)
    needed = [key for key in keys if any(key in pair for pair in pairs)]
    accumulators = {pair: MinibatchCKA(parsed[pair[0]][2], parsed[pair[1]][2], hsic)
                    for pair in pairs}
    bounds = minibatches(images.shape[0], batch_size)
    networks = [parsed[key][0] for key in needed]
    with eval_mode(*networks):
        for start, stop in tqdm(bounds, desc="CKA", disable=not progress):
            grams = {}
            for key in needed:
                network, perturb, names = parsed[key]
                x, y = _batch(images, labels, start, stop, _device(network))
                grams[key] = torch.stack(_layer_statistics(network, names, x, y, perturb, gram))
            for (a, b), accumulator in accumulators.items():
                accumulator.update(grams[a], grams[b])
    return {(a, b): CKAResult(a, b, parsed[a][2], parsed[b][2], accumulator.value(),
                              images.shape[0], len(bounds))
            for (a, b), accumulator in accumulators.items()}


def layer_redundancy(result: CKAResult) -> float:
    r"""How alike the layers of one representation are: the mean linear CKA over its pairs of
    distinct layers,

        R = \frac{2}{L (L - 1)} \sum_{i < j} \mathrm{CKA}(\text{layer}_i, \text{layer}_j),

    from `layer_cka`'s result of a representation with itself (the same layers on both sides).
    1: every layer has the same similarity structure; near 0: every layer its own. This is the
    "redundancy between layers" that the first version of CL-Robustness measured with cross-layer
    CKA heatmaps."""
    if not isinstance(result, CKAResult):
        raise ValueError(f"result must be a CKAResult, got {type(result).__name__}")
    if result.layers_a != result.layers_b or len(result.layers_a) < 2:
        raise ValueError("result must compare a representation with itself over the same two or "
                         f"more layers, got layers {list(result.layers_a)} against "
                         f"{list(result.layers_b)}")
    size = len(result.layers_a)
    upper = torch.triu_indices(size, size, offset=1)
    return float(result.matrix[upper[0], upper[1]].mean())


# ---------------------------------------------------------------- layer-wise linear probes

def pool(output: torch.Tensor) -> torch.Tensor:
    """A layer's output as one feature vector per example, float32 [B, C]: the spatial mean of a
    feature map [B, C, H, W] (global average pooling, as the network's own head does), the flattened
    output otherwise."""
    output = output.detach().float()
    return output.mean((2, 3)) if output.dim() == 4 else output.flatten(1)


def pooled_layer_features(network: nn.Module, images: torch.Tensor,
                          labels: torch.Tensor | None = None, *,
                          layers: Sequence[str] | None = None, perturb: Perturbation | None = None,
                          batch_size: int = 500, progress: bool = False) -> dict[str, torch.Tensor]:
    """Layer name -> `pool`ed outputs [N, C] (float32, on the network's device) of `network` in eval
    mode on `images` (uint8 or float in [0, 1]), or on perturb(x, labels) of each batch
    (e.g. an attack)."""
    progress = require_bool("progress", progress)
    if not isinstance(network, nn.Module):
        raise ValueError(f"network must be a torch.nn.Module, got {type(network).__name__}")
    names = require_layers(network, layers)
    labels = _checked_images(images, labels)
    require_int_at_least("batch_size", batch_size, 1)
    device = _device(network)
    features: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    with eval_mode(network):
        for start in tqdm(range(0, images.shape[0], batch_size), desc="features",
                          disable=not progress):
            x, y = _batch(images, labels, start, start + batch_size, device)
            for name, pooled in zip(names, _layer_statistics(network, names, x, y, perturb, pool)):
                features[name].append(pooled)
    return {name: torch.cat(chunks) for name, chunks in features.items()}


@dataclass(frozen=True)
class LayerProbes:
    """Linear-probe accuracy of each layer: trained on clean training images, tested on
    each kind of input."""

    layers: tuple[str, ...]
    train_accuracy: tuple[float, ...]            # one per layer
    test_accuracy: dict[str, tuple[float, ...]]  # input name (e.g. "clean", "PGD") -> one per layer


def layer_probes(network: nn.Module, train_images: torch.Tensor, train_labels: torch.Tensor,
                 test_images: torch.Tensor, test_labels: torch.Tensor, *,
                 inputs: Mapping[str, Perturbation | None] | None = None,
                 layers: Sequence[str] | None = None, batch_size: int = 500, epochs: int = 100,
                 seed: int = 0, progress: bool = False) -> LayerProbes:
    """How linearly separable each layer of `network` is: a linear classifier on each layer's pooled
    features (`pool`; `clcourse.evaluate.linear_probe`, trained on the features' device, on the
    clean training images), tested on the test images as each entry of `inputs` makes them.

    Args:
        inputs: name -> perturbation (x, labels) -> x' applied to each test batch, None for the
            clean images; default {"clean": None}. With an attack, e.g. {"clean": None, "PGD":
            attack}, the same perturbed images are classified by every layer's probe: where the
            accuracy falls shows where in the network the perturbation takes effect (the attack
            targets whatever it closes over, not the probes).
        layers: module names, default `default_layers(network)`.
        epochs, seed: of each probe (see `linear_probe`).
    """
    progress = require_bool("progress", progress)
    inputs = {"clean": None} if inputs is None else dict(inputs)
    if not inputs or any(perturb is not None and not callable(perturb)
                         for perturb in inputs.values()):
        raise ValueError("inputs must be a non-empty dict name -> perturbation (x, labels) -> x' "
                         f"or None, got {inputs!r}")
    names = require_layers(network, layers)
    train_labels = require_labels("train_labels", train_labels, len(train_images), "train_images")
    test_labels = require_labels("test_labels", test_labels, len(test_images), "test_images")
    train = pooled_layer_features(network, train_images, layers=names, batch_size=batch_size,
                                  progress=progress)
    tests = {name: pooled_layer_features(network, test_images, test_labels, layers=names,
                                         perturb=perturb, batch_size=batch_size, progress=progress)
             for name, perturb in inputs.items()}
    train_accuracy, test_accuracy = [], {name: [] for name in inputs}
    for layer in names:
        probe = linear_probe(train[layer], train_labels, tests[next(iter(inputs))][layer],
                             test_labels, epochs=epochs, seed=seed)
        train_accuracy.append(probe.train_accuracy)
        with torch.no_grad():
            for name, features in tests.items():
                labels = test_labels.to(features[layer].device)
                correct = probe.classifier(features[layer]).argmax(1) == labels
                test_accuracy[name].append(correct.float().mean().item())
    return LayerProbes(names, tuple(train_accuracy),
                       {name: tuple(values) for name, values in test_accuracy.items()})


def short_layer_names(layers: Sequence[str]) -> list[str]:
    """Layer names without the prefix they all share up to a dot ("net.layer1.0",
    "net.pool" -> "layer1.0", "pool"), for axis labels."""
    layers = list(layers)
    if len(layers) < 2:
        return [name.rsplit(".", 1)[-1] if "." in name else name for name in layers]
    common = layers[0]
    for name in layers[1:]:
        while not name.startswith(common):
            common = common[:-1]
    cut = common.rfind(".") + 1
    return [name[cut:] or name for name in layers]
