"""Adversarial examples, from scratch: FGSM and PGD over a loss closure, and the attack on a
contrastive loss that CLAE trains with.

Units. Every model of the course takes pixels in [0, 1] and normalises inside (`models.Normalize`),
so an attack perturbs those pixels and every epsilon here is in [0, 1] pixel units. Papers often
state epsilon in the units of their normalised inputs; convert before comparing:
- CLAE's epsilon = 0.03 in its SimCLR code is in inputs normalised with mean 0.5 / std 0.5 (pixels
  in [-1, 1]), so it is 0.03 x 0.5 = 0.015 in pixels (about 3.8/255); its Plain and UEL code
  normalises with CIFAR-10's mean and std (about 0.2), where the same 0.03 is about 0.006 in pixels
  (1.5/255);
- robustness papers' 8/255 (about 0.031) is already in pixels.

Every function here
- raises `loss_fn` (gradient *ascent*): pass the loss the attacker wants to be high;
- takes the gradient with `torch.autograd.grad` with respect to the input only, so no attack leaves
  a gradient in any weight's `.grad`, and the attack's graph is freed at once;
- never changes a model's train/eval mode nor touches its batch-norm statistics: the forward passes
  inside `loss_fn` run in whatever mode the caller set (in train mode each of them updates the
  running statistics of the BN layers it passes through, as any training-mode forward does; evaluate
  in eval mode to leave them alone);
- projects onto the epsilon-ball around the clean input and onto [0, 1] after every step;
- runs on the device of its input without a host synchronisation (no `.item()`), also inside a
  training step under autocast, and returns a detached tensor.

Called from outside, an attack first checks that the clean pixels lie in [0, 1] (uint8 or float
pixels in 0..255 would give all-white images): one host synchronisation per call. The training
loop (`clcourse.train`) runs each step inside `pixels_checked()`, which skips that check: a step's
views come from clcourse's augmentations and lie in [0, 1]. What an attack given by the user returns
is checked by `require_attack_result` (shape, and finite pixels in [0, 1]).
"""
from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .validation import (
    describe_tensor,
    require_bool,
    require_classes,
    require_in_range,
    require_int_at_least,
    require_labels,
    require_positive,
    require_unit_range,
)

__all__ = ["NORMS", "require_attack_budget", "pixels_checked", "require_attack_result",
           "input_gradient", "project",
           "fgsm", "random_start_point", "pgd", "contrastive_attack", "contrastive_objective",
           "cross_entropy_objective"]

NORMS = ("linf", "l2")


_CHECKED = threading.local()


@contextlib.contextmanager
def pixels_checked():
    """Within it, the attacks skip their check that the clean pixels lie in [0, 1] (a host
    synchronisation): for a training step, whose views are in [0, 1] by construction."""
    before = getattr(_CHECKED, "active", False)
    _CHECKED.active = True
    try:
        yield
    finally:
        _CHECKED.active = before


def _require_input(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 1:
        hint = (": convert uint8 pixels with clcourse.augment.to_float_images(x)"
                if isinstance(x, torch.Tensor) and x.dtype == torch.uint8 else "")
        raise ValueError("x must be a floating-point tensor [B, ...] of pixels in [0, 1], "
                         f"got {describe_tensor(x)}{hint}")
    if not getattr(_CHECKED, "active", False):
        require_unit_range("x", x)


def _require_epsilon(epsilon: float) -> float:
    return require_in_range("epsilon", epsilon, 0.0, math.inf, high_inclusive=False)


def _require_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm


def require_attack_result(name: str, x_adv, x: torch.Tensor, values: bool = True) -> torch.Tensor:
    """What an attack given by the user (`name`) returned for the clean images x: a floating-point
    tensor of x's shape on x's device and, with `values`, of finite pixels in [0, 1] (one host
    read: where a training step calls it, on the first step only). Returns it."""
    if (not isinstance(x_adv, torch.Tensor) or not x_adv.is_floating_point()
            or x_adv.shape != x.shape or x_adv.device != x.device):
        raise ValueError(f"{name} must return the perturbed images: a floating-point tensor of "
                         f"the clean images' shape {tuple(x.shape)} on {x.device}, got "
                         f"{describe_tensor(x_adv)}"
                         + (f" on {x_adv.device}" if isinstance(x_adv, torch.Tensor) else ""))
    if values:
        require_unit_range(f"what {name} returned", x_adv)
    return x_adv


def require_attack_budget(epsilon: float, steps: int,
                          step_size: float | None) -> tuple[float, int, float]:
    """(epsilon >= 0, steps >= 1, step size > 0: default epsilon / 4) as plain numbers."""
    epsilon = require_in_range("epsilon", epsilon, 0.0, math.inf, high_inclusive=False)
    steps = require_int_at_least("steps", steps, 1)
    if step_size is None:
        if epsilon == 0:
            return epsilon, steps, 1 / 255      # any step: the ball is a point
        return epsilon, steps, epsilon / 4
    return epsilon, steps, require_positive("step_size", step_size)


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each sample of a batch [B, ...], shaped [B, 1, ...] to broadcast against it."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def input_gradient(loss_fn: Callable[[torch.Tensor], torch.Tensor],
                   x: torch.Tensor) -> torch.Tensor:
    """d loss_fn(x) / dx at x, by `torch.autograd.grad` with respect to x only (no weight's `.grad`
    changes), with gradient recording on even inside `torch.no_grad()`."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(x)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise ValueError(f"loss_fn must return a scalar tensor, got {describe_tensor(loss)}")
        gradient, = torch.autograd.grad(loss, x)
    return gradient


def project(x_adv: torch.Tensor, x: torch.Tensor, epsilon: float,
            norm: str = "linf") -> torch.Tensor:
    r"""Onto the epsilon-ball around x, then onto the valid pixels [0, 1]:

        linf: \delta \leftarrow \mathrm{clip}(\delta, -\epsilon, \epsilon)
        l2:   \delta \leftarrow \delta \cdot \min(1, \epsilon / \lVert \delta \rVert_2)
              (per sample)

    with delta = x_adv - x, then x + delta clipped to [0, 1] (which keeps it in the ball: clipping
    to the box moves each pixel towards x). epsilon >= 0; norm "linf" or "l2"."""
    epsilon = _require_epsilon(epsilon)
    _require_norm(norm)
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-epsilon, epsilon)
    else:
        delta = delta * (epsilon / _per_sample_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
    return (x + delta).clamp(0.0, 1.0)


def fgsm(loss_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
         epsilon: float) -> torch.Tensor:
    r"""Fast gradient sign method (Goodfellow et al., "Explaining and Harnessing Adversarial
    Examples", ICLR 2015, https://arxiv.org/abs/1412.6572): one step of size epsilon along the sign
    of the gradient,

        x_{adv} = \mathrm{clip}_{[0, 1]}\big( x + \epsilon \, \mathrm{sign}(\nabla_x L(x)) \big)

    Args:
        loss_fn: x -> scalar loss to raise (e.g. ``lambda x: F.cross_entropy(model(x), y)``).
        x: clean inputs [B, ...], pixels in [0, 1].
        epsilon: L-infinity budget in pixel units, >= 0 (CLAE's 0.03 on [-1, 1]
            inputs is 0.015 here).
    """
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be a function x -> scalar loss, got {loss_fn!r}")
    _require_input(x)
    _require_epsilon(epsilon)
    x = x.detach()
    return (x + epsilon * input_gradient(loss_fn, x).sign()).clamp(0.0, 1.0)


def random_start_point(x: torch.Tensor, epsilon: float, norm: str = "linf",
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """A random point near x for PGD to start from, clipped to [0, 1]: linf, uniform noise in
    [-epsilon, epsilon] per pixel; l2, a random direction at a radius drawn uniformly from
    [0, epsilon] (the draws of torchattacks' PGD and PGDL2, in the same order)."""
    _require_input(x)
    epsilon = _require_epsilon(epsilon)
    _require_norm(norm)
    if norm == "linf":
        noise = torch.empty_like(x).uniform_(-epsilon, epsilon, generator=generator)
    else:
        direction = torch.empty_like(x).normal_(generator=generator)
        radius = torch.zeros(x.shape[0], *([1] * (x.dim() - 1)), device=x.device, dtype=x.dtype)
        radius.uniform_(0.0, 1.0, generator=generator)
        noise = direction * radius / _per_sample_norm(direction) * epsilon
    return (x + noise).clamp(0.0, 1.0)


def pgd(loss_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, epsilon: float,
        step_size: float, steps: int, random_start: bool = False, norm: str = "linf",
        generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Projected gradient descent (here: ascent) on the loss (Madry et al., "Towards Deep Learning
    Models Resistant to Adversarial Attacks", ICLR 2018, https://arxiv.org/abs/1706.06083). From
    x^0 = x (or a random point of the ball, `random_start`), `steps` times

        linf:  x^{t+1} = \Pi\big( x^t + \eta \, \mathrm{sign}(\nabla_x L(x^t)) \big)
        l2:    x^{t+1} = \Pi\big( x^t
                                + \eta \, \nabla_x L(x^t) / \lVert \nabla_x L(x^t) \rVert_2 \big)

    where eta is `step_size` and Pi projects onto the epsilon-ball around x and onto [0, 1]
    (`project`). One step of size epsilon without random start is FGSM.

    Args:
        loss_fn: x -> scalar loss to raise.
        x: clean inputs [B, ...], pixels in [0, 1].
        epsilon: budget in pixel units, >= 0 (8/255 is the usual CIFAR robustness budget in linf).
        step_size: eta > 0, in pixel units (linf: per pixel; l2: length of the step).
        steps: number of steps, >= 1.
        random_start: start from a random point of the ball (`random_start_point`) instead of x.
        norm: "linf" or "l2".
        generator: random source for the start (default: torch's global one).
    """
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be a function x -> scalar loss, got {loss_fn!r}")
    _require_input(x)
    _require_epsilon(epsilon)
    require_positive("step_size", step_size)
    require_int_at_least("steps", steps, 1)
    random_start = require_bool("random_start", random_start)
    _require_norm(norm)
    x = x.detach()
    with pixels_checked():   # checked above
        x_adv = random_start_point(x, epsilon, norm, generator) if random_start else x
    for _ in range(steps):
        gradient = input_gradient(loss_fn, x_adv)
        if norm == "linf":
            step = gradient.sign()
        else:
            step = gradient / _per_sample_norm(gradient).clamp_min(1e-12)
        x_adv = project(x_adv + step_size * step, x, epsilon, norm)
    return x_adv


def contrastive_attack(encode: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                       epsilon: float, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                       steps: int = 1, step_size: float | None = None) -> torch.Tensor:
    r"""Adversarial views for a contrastive loss, without labels (CLAE, Ho & Vasconcelos, NeurIPS
    2020, https://arxiv.org/abs/2010.12050): move each view x so that the batch's contrastive loss
    between the clean embeddings and the perturbed ones rises,

        \delta = \epsilon \, \mathrm{sign}\,
                 \nabla_{x'} L\big(\mathrm{sg}[z(x)],\, z(x')\big) \big|_{x' = x},
        \qquad x_{adv} = \mathrm{clip}_{[0, 1]}(x + \delta)

    with z = `encode` (pixels -> embeddings), L = `loss` (e.g. InfoNCE over the batch) and sg a
    stop-gradient: the anchors z(x) are constants. `steps` = 1 is this FGSM step (CLAE); more steps
    run PGD from x on the same objective, with the anchors of the first forward pass and `step_size`
    (default 2.5 epsilon / steps).

    At x' = x each anchor equals its own perturbed view, so the positive term has no gradient (the
    cosine of a unit vector with itself is at its maximum): the first step is driven by the
    negatives alone. It moves each view towards the other images of the batch, and so away from
    its own positive.

    One forward pass per step (the anchors come from the first); in train mode each updates the
    running statistics of the BN layers it passes through. CLAE runs it through the adversarial
    branch of dual batch-norm (`models.adversarial_batchnorm`).

    Args:
        encode: x [B, 3, H, W] -> embeddings [B, D].
        x: the clean views, pixels in [0, 1].
        epsilon: L-infinity budget in pixel units, >= 0 (CLAE: 0.03 on [-1, 1] inputs = 0.015 here).
        loss: (z_anchor, z) -> scalar, raised by the attack.
        steps: 1 for FGSM, more for PGD.
        step_size: PGD's step in pixel units (default 2.5 epsilon / steps); FGSM's is epsilon.
    """
    for name, fn in (("encode", encode), ("loss", loss)):
        if not callable(fn):
            raise ValueError(f"{name} must be a function, got {fn!r}")
    require_int_at_least("steps", steps, 1)
    _require_input(x)
    anchors = []

    def objective(x_prime: torch.Tensor) -> torch.Tensor:
        z = encode(x_prime)
        if not anchors:  # the first forward pass is at x itself: its embeddings are the anchors
            anchors.append(z.detach())
        return loss(anchors[0], z)

    with pixels_checked():   # checked above
        if steps == 1:
            return fgsm(objective, x, epsilon)
        if step_size is None:
            step_size = 2.5 * epsilon / steps
        return pgd(objective, x, epsilon, step_size, steps)


def contrastive_objective(encode: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                          loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                          ) -> Callable[[torch.Tensor], torch.Tensor]:
    r"""The objective of an attack on an encoder (CL-Robustness' threat model I, and the attack of
    contrastive adversarial training): the contrastive loss between the clean embeddings and those
    of the perturbed images,

        x' \mapsto L\big(\mathrm{sg}[z(x)],\, z(x')\big)

    with z = `encode` and L = `loss(z_anchor, z)` (InfoNCE, or SupCon with the labels bound in). The
    anchors sg[z(x)] are computed here, once, without gradient, by their own forward pass; the
    returned function embeds x' alone, one forward pass per attack step. Unlike
    `contrastive_attack`, whose anchors come from the attack's first pass at x itself, this lets the
    attack start from a random point of the ball.

    Returns a function x' -> scalar, to hand to `pgd` as its `loss_fn`.
    """
    for name, fn in (("encode", encode), ("loss", loss)):
        if not callable(fn):
            raise ValueError(f"{name} must be a function, got {fn!r}")
    with torch.no_grad():
        anchors = encode(x)
    return lambda x_prime: loss(anchors, encode(x_prime))


def cross_entropy_objective(classifier: Callable[[torch.Tensor], torch.Tensor],
                            labels: torch.Tensor, normalise_logits: bool = False,
                            check_labels: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    r"""The objective of an attack with labels (CL-Robustness' threat model II, and the attack of
    supervised and adversarial fine-tuning): x' -> \sum_i CE(classifier(x'_i), y_i), in float32;
    with `normalise_logits`, x' -> \sum_i CE(normalize(classifier(x'_i)), y_i), the cross-entropy of
    the L2-normalised logits (logits in [-1, 1]), which CL-Robustness' code attacks.

    Summed rather than averaged: the sign of its gradient is the same, and under fp16 autocast
    (a T4) the input gradient of a sum stays clear of underflow. With `check_labels` (where labels
    enter from a user, as in threat model II), the first call checks them against the images and
    the classifier's outputs (one sync); a training step, whose labels were checked where they
    entered, leaves it off."""
    if not callable(classifier):
        raise ValueError(f"classifier must be a function x -> logits, got {classifier!r}")
    check_labels = require_bool("check_labels", check_labels)

    def objective(x_prime: torch.Tensor) -> torch.Tensor:
        nonlocal labels, check_labels
        logits = classifier(x_prime).float()
        if check_labels:   # once, at the first call
            labels = require_labels("labels", labels, x_prime.shape[0], "the images attacked")
            require_classes("labels", labels, logits.shape[1],
                            f"the classifier has {logits.shape[1]} outputs")
            check_labels = False
        if normalise_logits:
            logits = F.normalize(logits, dim=1)
        return F.cross_entropy(logits, labels, reduction="sum")
    return objective
