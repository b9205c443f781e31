"""CLAE: contrastive learning with adversarial examples as extra, hard positives
(Ho & Vasconcelos 2020)."""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attacks import contrastive_attack
from ..models import adversarial_batchnorm, use_dual_batchnorm
from ..negatives import rank_among_negatives
from ..validation import require_bool, require_in_range, require_int_at_least, require_positive
from .base import Batch, Method, StepOutput, describe, require_function
from .simclr import DCL, HCL, SimCLR

__all__ = ["CLAE", "ClaeOutput", "clae_objective", "debiasing_floor_binds", "BASES"]

# The methods CLAE wraps: the two-view SimCLR family, whose loss compares (z1, z2).
BASES = {"simclr": SimCLR, "dcl": DCL, "hcl": HCL}


def debiasing_floor_binds(temperature: float, tau_plus: float) -> bool:
    r"""Whether CLAE's attack on DCL or HCL (`temperature` t, `tau_plus`) is in its zero-gradient
    regime. At delta = 0 each anchor's positive is its own clean embedding (cosine 1, at its
    maximum: no gradient), and the debiased negative mass
    max((R - \tau^+ N e^{1/t}) / (1 - \tau^+), N e^{-1/t}) sits on its floor, a constant, whenever
    R / N < F(t) = \tau^+ e^{1/t} + (1 - \tau^+) e^{-1/t}; the attack's input gradient is then
    zero for that anchor (up to float rounding, whose sign an FGSM step follows: noise, not an
    attack). Negatives orthogonal to the anchor give R / N = 1; the regime is
    the common case once F(t) >= 2, twice that (t < 0.34 at tau_plus = 0.1; F(0.5) = 0.86)."""
    return (tau_plus * math.exp(1 / temperature)
            + (1 - tau_plus) * math.exp(-1 / temperature)) >= 2


class ClaeOutput(NamedTuple):
    """What `clae_objective` returns: the loss and the three embeddings it compares."""
    loss: torch.Tensor      # L(z1, z2) + alpha L(z1, z_adv)
    z1: torch.Tensor        # g(f(x_i)), clean branch
    z2: torch.Tensor        # g(f(x_j)), clean branch
    z_adv: torch.Tensor     # g(f_adv(x_i + delta)), adversarial branch


def clae_objective(encode: Callable, encode_adversarial: Callable, attack: Callable, loss: Callable,
                   view1: torch.Tensor, view2: torch.Tensor, alpha: float) -> ClaeOutput:
    r"""CLAE's loss for one batch of two views (Ho & Vasconcelos, "Contrastive Learning with
    Adversarial Examples", NeurIPS 2020, https://arxiv.org/abs/2010.12050; the SimCLR variant of
    the authors' code):

        z_i, z_j = g(f(x_i)), g(f(x_j))             one clean forward pass of the 2B views
        x_adv    = attack(encode_adversarial, x_i)  x_i + delta, delta from FGSM on L
                                                    (`contrastive_attack`)
        z_adv    = g(f_adv(x_adv))                  through the adversarial batch-norm branch
        L_CLAE   = L(z_i, z_j) + \alpha L(z_i, z_adv)

    The adversarial view is a perturbed copy of the *same* crop x_i, so z_adv is a hard positive for
    z_i; through the batch it is also a negative for every other image. z_i is the clean anchor of
    both terms and gets gradient from both; x_adv carries none (the attack's gradient is discarded).

    Args:
        encode, encode_adversarial: pixels -> embeddings through the clean / adversarial BN branch.
        attack: (encode, x) -> adversarial x, detached.
        loss: (z1, z2) -> scalar contrastive loss (InfoNCE, DCL, HCL, ...).
        view1, view2: the two views x_i, x_j [B, 3, H, W].
        alpha: weight of the adversarial term.
    """
    z1, z2 = encode(torch.cat([view1, view2])).chunk(2)
    x_adv = attack(encode_adversarial, view1)
    z_adv = encode_adversarial(x_adv)
    return ClaeOutput(loss(z1, z2) + alpha * loss(z1, z_adv), z1, z2, z_adv)


class _FirstOutput:
    """`encode` that keeps (detached) the first embeddings it computes: the attack's forward pass at
    delta = 0, which the method compares with the adversarial one at no extra cost."""

    def __init__(self, encode: Callable):
        self.encode, self.first = encode, None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encode(x)
        if self.first is None:
            self.first = z.detach()
        return z


class CLAE(Method):
    r"""Contrastive Learning with Adversarial Examples (Ho & Vasconcelos, NeurIPS 2020) on top of
    any two-view method whose loss compares (z1, z2): SimCLR (the paper's setting), DCL or HCL
    (`base`), whose backbone, projector, views and loss it uses (`base_options` go to that method):

        L = L(z_i, z_j) + \alpha L(z_i, z_adv(x_i + \delta)),
        \delta = \epsilon \, \mathrm{sign}
                 \nabla_{x} L(\mathrm{sg}[z_adv(x_i)], z_adv(x)) |_{x = x_i}

    (`clae_objective`, `clcourse.attacks.contrastive_attack`). `epsilon` is in [0, 1] pixel units:
    the default 0.015 is CLAE's 0.03 on inputs normalised with mean 0.5 / std 0.5
    (pixels in [-1, 1]), as in the authors' SimCLR code (their Plain and UEL code normalises with
    CIFAR-10's std, about 0.2: there 0.03 is about 0.006 in pixels). `attack_steps` = 1 is the
    paper's FGSM step; more steps run PGD (step `attack_step_size`, default 2.5 epsilon / steps).

    Dual batch-norm (`dual_batchnorm=True`, AdvProp): every BN layer of backbone and projector
    gets an adversarial twin (momentum `adversarial_momentum`, 0.01 as in CLAE's code); the
    attack's forward pass and the adversarial term go through it, in training mode, so they update
    *that* branch's running statistics, as the authors' code does; the clean branch serves the
    clean term and every evaluation (kNN, linear probe, `embed`). `dual_batchnorm=False` shares
    one BN for the ablation.

    The attack raises the base loss summed over the 2B anchors instead of averaged: the gradient's
    sign is the same, and on fp16 GPUs (T4) the input gradient stays clear of underflow.

    Logs, per batch: `clean_loss` and `adversarial_loss` (the two terms); `attack_raise`, how
    much the perturbation raised the adversarial term over delta = 0,
    L(z_i, z_adv(x_i + delta)) - L(z_i, z_adv(x_i)) (z_adv(x_i) is the attack's own first forward
    pass, so this costs no extra pass); `positive_similarity` cos(z_i, z_j) beside
    `adversarial_similarity` cos(z_i, z_adv); and `adversarial_negative_rank`, the mean rank of the
    adversarial views among each anchor's real negatives
    (`clcourse.negatives.rank_among_negatives`: 0.5 is as hard as a typical real negative).

    Exercises plug in here: `attack(encode, x, epsilon, loss) -> x_adv` replaces the FGSM step (then
    `attack_steps` must be 1) and `objective` replaces `clae_objective` (same signature).

    `compilable = False`: the attack takes an input gradient (torch.autograd.grad) inside the step,
    which TorchDynamo does not trace, so the training loop runs this step eagerly; the dual
    batch-norm layers themselves compile.

    On DCL and HCL (the course's extension) at a low temperature the attack has nothing to climb:
    at delta = 0 the debiasing floor binds and the input gradient is zero up to rounding
    (`debiasing_floor_binds`), so the adversarial view of most images is sign noise; CLAE warns (a
    UserWarning). Use t >= 0.35 (the default 0.5 is fine) or base="simclr".

    Differences from the authors' SimCLR code: the two views share one clean forward pass (theirs:
    one pass per view); the attack makes one forward pass (theirs: two with identical outputs, which
    move the adversarial running statistics twice); x_adv is clipped to [0, 1] (theirs is not); the
    projector has batch-norm, which gets its adversarial twin too (theirs has none); the optimiser
    is the course's SGD recipe (theirs: Adam, lr 3e-4); the views are the base method's, colour
    jitter 0.4 (theirs: 0.8 and hue 0.2, ``augment=clcourse.augment.clae_simclr()``).
    """

    compilable = False

    def __init__(self, backbone: nn.Module, base: str = "simclr", epsilon: float = 0.015,
                 alpha: float = 1.0, attack_steps: int = 1, attack_step_size: float | None = None,
                 dual_batchnorm: bool = True, adversarial_momentum: float = 0.01,
                 attack: Callable | None = None, objective: Callable | None = None, **base_options):
        dual_batchnorm = require_bool("dual_batchnorm", dual_batchnorm)
        if base not in BASES:
            raise ValueError(f"base must be one of {sorted(BASES)} (a two-view method whose loss "
                             f"compares z1 and z2), got {base!r}")
        base_method = BASES[base](backbone, **base_options)
        super().__init__(base_method.backbone, base_method.view_recipes)
        require_in_range("epsilon", epsilon, 0.0, math.inf, high_inclusive=False)
        require_in_range("alpha", alpha, 0.0, math.inf, high_inclusive=False)
        require_int_at_least("attack_steps", attack_steps, 1)
        if attack_step_size is not None:
            require_positive("attack_step_size", attack_step_size)
        elif attack_steps > 1 and epsilon == 0:
            raise ValueError("epsilon must be > 0 for a PGD attack (attack_steps > 1), whose "
                             "default step size is 2.5 epsilon / attack_steps; got epsilon=0")
        require_in_range("adversarial_momentum", adversarial_momentum, 0.0, 1.0)
        for name, fn in (("attack", attack), ("objective", objective)):
            require_function(name, fn)
        if attack is not None and attack_steps != 1:
            raise ValueError("attack replaces the one-step attack: attack_steps must be 1 when "
                             f"attack is given, got {attack_steps}")
        if base != "simclr" and debiasing_floor_binds(base_method.temperature,
                                                      base_method.tau_plus):
            warnings.warn(
                f"CLAE on {base.upper()} at temperature {base_method.temperature:g} (tau_plus "
                f"{base_method.tau_plus:g}): at delta = 0 the positive is at its maximum and the "
                "debiasing floor N exp(-1/t) binds, so the attack's gradient is zero (up to float "
                "rounding) for most images and their adversarial views are noise, not attacks. Use "
                "a temperature of at least 0.35 (the default 0.5 is fine) or base='simclr'.",
                UserWarning, stacklevel=2)
        # Held, not registered as a submodule: its backbone and projector are this method's own.
        self.__dict__["base"] = base_method
        self.projector = base_method.projector
        self.lr = base_method.lr
        self.epsilon, self.alpha, self.dual_batchnorm = epsilon, alpha, dual_batchnorm
        self.attack_steps, self.attack_step_size = attack_steps, attack_step_size
        self.attack_fn, self.objective_fn = attack, objective or clae_objective
        if dual_batchnorm:
            use_dual_batchnorm(self.backbone, adversarial_momentum)
            use_dual_batchnorm(self.projector, adversarial_momentum)
        self.hyperparameters = dict(base=base, **base_method.hyperparameters, epsilon=epsilon,
                                    alpha=alpha, attack_steps=attack_steps,
                                    attack_step_size=attack_step_size,
                                    dual_batchnorm=dual_batchnorm,
                                    adversarial_momentum=(adversarial_momentum if dual_batchnorm
                                                          else None))

    def functions(self) -> dict[str, Callable]:
        return {**self.base.functions(), "attack": self.attack_fn or contrastive_attack,
                "objective": self.objective_fn}

    def on_train_start(self, num_images: int, batch_size: int) -> None:
        self.base.on_train_start(num_images, batch_size)

    def pair_loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """The base method's loss of the pair of embeddings (z1, z2)."""
        return self.base.contrastive_loss((z1, z2))

    def encode_adversarial(self, x: torch.Tensor) -> torch.Tensor:
        """g(f(x)) through the adversarial batch-norm branch (the shared one with
        dual_batchnorm=False)."""
        if not self.dual_batchnorm:
            return self.encode(x)
        with adversarial_batchnorm(self):
            return self.encode(x)

    def attack_loss(self, z_anchor: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The base loss summed over the 2B anchors: the attack's objective (same gradient
        sign as the mean)."""
        return self.pair_loss(z_anchor, z) * (2 * z.shape[0])

    def perturb(self, encode: Callable, x: torch.Tensor) -> torch.Tensor:
        """x + delta: FGSM (or PGD) on `attack_loss` through `encode`, or the given `attack`."""
        if self.attack_fn is not None:
            return self.attack_result(self.attack_fn,
                                      self.attack_fn(encode, x, self.epsilon, self.attack_loss), x)
        return contrastive_attack(encode, x, self.epsilon, self.attack_loss, self.attack_steps,
                                  self.attack_step_size)

    def training_step(self, batch: Batch) -> StepOutput:
        view1, view2 = batch.views
        encode_adversarial = _FirstOutput(self.encode_adversarial)
        loss, z1, z2, z_adv = self.objective_fn(self.encode, encode_adversarial, self.perturb,
                                                self.pair_loss, view1, view2, self.alpha)
        if encode_adversarial.first is None:
            raise ValueError(f"objective ({describe(self.objective_fn)}) never called "
                             "encode_adversarial: the attack and the adversarial "
                             "view must go through it")
        with torch.no_grad():
            z1, z2, z_adv = (F.normalize(z.detach().float(), dim=1) for z in (z1, z2, z_adv))
            adversarial_loss = self.pair_loss(z1, z_adv)
            logs = {"clean_loss": self.pair_loss(z1, z2),
                    "adversarial_loss": adversarial_loss,
                    "attack_raise": adversarial_loss - self.pair_loss(z1, encode_adversarial.first),
                    "positive_similarity": (z1 * z2).sum(1).mean(),
                    "adversarial_similarity": (z1 * z_adv).sum(1).mean(),
                    "adversarial_negative_rank": rank_among_negatives(z1, (z1, z2), z_adv).mean()}
        return StepOutput(loss, logs)
