"""Learning with labels, and adversarially: the three learning schemes of CL-Robustness
(notebook 08), CL (SimCLR), SCL (SupCon) and SL (cross-entropy), adversarial pretraining for each,
and the fine-tuning of a linear head on a pretrained encoder (standard, partial, full)."""
from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attacks import contrastive_objective, cross_entropy_objective, pgd, require_attack_budget
from ..augment import to_float_images
from ..distributed import gather, gather_with_grad, is_distributed
from ..losses import info_nce, supcon
from ..models import batchnorm_statistics_frozen, weights_fingerprint
from ..presets import no_autocast
from ..validation import require_bool, require_in_range, require_int_at_least, require_positive
from .base import (
    Batch,
    ContrastiveMethod,
    Method,
    StepOutput,
    mean_view_similarity,
    require_function,
)
from .simclr import SimCLR

__all__ = ["SupCon", "Supervised", "AdversarialPretraining", "FineTune", "SCHEMES", "FINE_TUNING",
           "TRAIN_EPSILON", "TRAIN_STEPS", "TRAIN_STEP_SIZE", "DEFINITIONS", "PAPER_STEP_SIZE",
           "PAPER_TEMPERATURE", "require_definition", "scheme_of", "paper_contrastive_loss",
           "unaugmented"]

# Adversarial training as in CL-Robustness: 5 PGD steps within 8/255, pixels in [0, 1]; the step is
# the definition's (below).
TRAIN_EPSILON, TRAIN_STEPS = 8 / 255, 5
FINE_TUNING = ("standard", "partial", "full")

# Two definitions of CL-Robustness' attacks (adversarial training and the threat models):
# - "paper": as the authors' code (softsys4ai/CL-Robustness) runs them: PGD from delta = 0 with a
#   step of 0.01 in training and at test; contrastive attacks on SupConLoss at tau = 0.07 (with the
#   labels for SCL, without for CL); cross-entropy attacks on the L2-normalised logits;
# - "course": the course's simpler variant: PGD from a random point of the ball, steps of 2/255 in
#   training (epsilon / 4 at test), InfoNCE at the scheme's training temperature (threat model I:
#   0.5) without labels for every scheme, cross-entropy on the raw logits.
DEFINITIONS = ("paper", "course")
PAPER_STEP_SIZE = 0.01        # the authors' PGD step (their `--alpha`), training and test
PAPER_TEMPERATURE = 0.07      # the authors' SupConLoss temperature (= its base temperature)
TRAIN_STEP_SIZE = 2 / 255     # the course's PGD step in adversarial training


def require_definition(definition: str) -> str:
    if definition not in DEFINITIONS:
        raise ValueError(f"definition must be one of {list(DEFINITIONS)} (paper: the authors' "
                         f"attacks; course: the course's variant), got {definition!r}")
    return definition


class SupCon(ContrastiveMethod):
    """Supervised contrastive learning (Khosla et al., NeurIPS 2020): SimCLR's views, backbone and
    projector, but every view of the anchor's class is a positive (`clcourse.losses.supcon`,
    L_out). Needs labels.

    `loss(z1, z2, labels, temperature)` is `clcourse.losses.supcon` unless given, e.g. the
    function a student wrote in notebook 08; it receives float32 embeddings with autocast off.
    Defaults: temperature 0.1 and the learning rate of SupContrast's CIFAR recipe (0.5 for a
    batch of 1024). The recipe's loss carries a factor tau / 0.07 that ours drops, so its steps are
    1.43x ours at tau = 0.1 (ours: 0.7x the recipe's effective learning rate); for the recipe's
    steps train with lr = 0.125 x 0.1 / 0.07 (about 0.18 per 256 images)."""

    requires_labels = True
    lr = 0.125
    default_loss = staticmethod(supcon)
    loss_signature = "loss(z1, z2, labels, temperature)"

    def __init__(self, backbone: nn.Module, temperature: float = 0.1, projector_hidden: int = 512,
                 projector_out: int = 128, augment=None, loss: Callable | None = None):
        super().__init__(backbone, 2, projector_hidden, projector_out, augment, loss)
        self.temperature = require_positive("temperature", temperature)
        self.hyperparameters = dict(temperature=self.temperature, projector_hidden=projector_hidden,
                                    projector_out=projector_out)

    def apply_loss(self, views: list[torch.Tensor], labels: torch.Tensor | None) -> torch.Tensor:
        z1, z2 = views
        return self.loss(z1, z2, labels, self.temperature)


class Supervised(Method):
    """The supervised baseline (SL): a linear classifier on the backbone's features, trained end to
    end with cross-entropy on one view of each image (`augment`, default crop + flip:
    `clcourse.augment.weak`). Needs labels.

    The classifier sits where the other methods have their projector: `encode` gives its logits, and
    `embed(projected=True)` their L2-normalised version, which threat model I attacks (notebook 08).
    The loss takes the raw logits, an ordinary classifier. CL-Robustness' baseline L2-normalises
    them first (a cosine classifier with temperature 1, whose logits stay in [-1, 1]), which
    handicaps it; the authors' SL also crops with 5 pixels of padding, not ours."""

    requires_labels = True
    lr = 0.1

    def __init__(self, backbone: nn.Module, num_classes: int = 10, augment=None):
        if augment is None:
            from ..augment import weak
            augment = weak()
        super().__init__(backbone, (augment,))
        num_classes = require_int_at_least("num_classes", num_classes, 2)
        self.projector = nn.Linear(backbone.feature_dim, num_classes)
        self.num_classes = num_classes
        self.hyperparameters = dict(num_classes=num_classes)

    def training_step(self, batch: Batch) -> StepOutput:
        logits = self.encode(batch.views[0])
        with no_autocast(logits.device):
            loss = F.cross_entropy(logits.float(), batch.labels)
        accuracy = (logits.detach().argmax(1) == batch.labels).float().mean()
        return StepOutput(loss, {"train_accuracy": accuracy})


SCHEMES = {"cl": "simclr", "scl": "supcon", "sl": "supervised"}   # CL-Robustness' schemes -> our
                                                                  # methods
SCHEME_METHODS = {"cl": SimCLR, "scl": SupCon, "sl": Supervised}


def scheme_of(method: Method) -> str:
    """The learning scheme of a pretrained method: its own for `AdversarialPretraining`, "scl" for
    SupCon, "sl" for the supervised baseline, "cl" for any other (label-free) method."""
    if isinstance(method, AdversarialPretraining):
        return method.scheme
    if isinstance(method, SupCon):
        return "scl"
    return "sl" if isinstance(method, Supervised) else "cl"


def _attack_defaults(definition: str, step_size: float | None,
                     random_start: bool | None) -> tuple[float, bool]:
    """The PGD step and start of adversarial training under `definition`, unless given."""
    paper = require_definition(definition) == "paper"
    if step_size is None:
        step_size = PAPER_STEP_SIZE if paper else TRAIN_STEP_SIZE
    if random_start is None:
        random_start = not paper
    return require_positive("step_size", step_size), require_bool("random_start", random_start)


def paper_contrastive_loss(z_anchor: torch.Tensor, z: torch.Tensor,
                           labels: torch.Tensor | None) -> torch.Tensor:
    """The authors' attack objective on a pair of embeddings: SupConLoss at tau = 0.07 over the 2B
    anchors [z_anchor; z], with `labels` (SCL) or without (CL: InfoNCE). Their SupConLoss also
    multiplies by tau / tau_base, which is 1 at tau = tau_base = 0.07."""
    if labels is None:
        return info_nce(z_anchor, z, PAPER_TEMPERATURE)
    return supcon(z_anchor, z, labels, PAPER_TEMPERATURE)


class AdversarialPretraining(Method):
    r"""Adversarial pretraining of any of the three schemes of CL-Robustness (Ghofrani, Yaghouti &
    Jamshidi, "Rethinking Robust Contrastive Learning from the Adversarial Perspective",
    https://arxiv.org/abs/2302.02502): each step perturbs the clean, un-augmented images x^0 within
    the L-infinity ball of radius epsilon so that an attack objective rises, and trains on the
    perturbed copy besides the scheme's usual views,

        \delta^* = \mathrm{PGD}_T\big[\max_{\lVert\delta\rVert_\infty \le \epsilon}
                                    A(x^0, x^0 + \delta)\big]
        CL, SCL:  \mathcal{L} = L(x^0, x^0 + \delta^*) + L(x^1, x^2)
        SL:       \mathcal{L} = CE(x^0 + \delta^*) + CE(x^1)

    with L the scheme's training loss (`scheme`: "cl" SimCLR's InfoNCE, "scl" SupCon with the
    labels, "sl" the cross-entropy of `Supervised`) and x^1, x^2 its augmented views. The attack's
    result carries no gradient. The attack objective A and the PGD follow `definition`:

    - "paper" (default), the authors' code: for CL and SCL, A = SupConLoss at tau = 0.07 between
      sg[z(x^0)] and z(x') (`paper_contrastive_loss`: with the labels for SCL, InfoNCE for CL),
      whatever temperature the scheme trains with; for SL, the cross-entropy of the L2-normalised
      logits; PGD from delta = 0 (where the positive term of the contrastive objective has no
      gradient: the first step is driven by the negatives) with steps of 0.01. The adversarial pair
      goes through the network in two passes, x^0 and x^0 + delta* each with its own batch-norm
      statistics, as theirs does;
    - "course": A = the scheme's own loss (its temperature; raw logits for SL), PGD from a random
      point of the ball with steps of 2/255, and the pair in one pass of 2B images, as the scheme's
      views (`clcourse.attacks.contrastive_objective` for CL and SCL, `cross_entropy_objective`
      for SL).

    `step_size` and `random_start` override the definition's. Under both, the attack runs in
    training mode, so with the batch's statistics, but with the running averages of batch-norm
    frozen (`models.batchnorm_statistics_frozen`; the authors' attack passes move them), and the
    scheme's views x^1, x^2 share one pass (the authors forward each view on its own).
    `attack(loss_fn, x, epsilon, step_size, steps, random_start=...)` replaces
    `clcourse.attacks.pgd`, e.g. the one a student builds in notebook 08.

    `scheme_options` go to the scheme's method (SimCLR, SupCon or Supervised), whose backbone,
    projector, views, learning rate and loss this method uses; it needs labels when the scheme does.
    Cost per step: the attack's `steps` forward and backward passes of B images and one forward pass
    for the anchors, on top of twice the scheme's own step (about 4.5x a SimCLR step at 5 steps).

    `compilable = False`: the attack takes input gradients inside the step.
    """

    compilable = False

    def __init__(self, backbone: nn.Module, scheme: str = "cl", epsilon: float = TRAIN_EPSILON,
                 steps: int = TRAIN_STEPS, step_size: float | None = None,
                 random_start: bool | None = None, attack: Callable | None = None,
                 definition: str = "paper", **scheme_options):
        if scheme not in SCHEME_METHODS:
            raise ValueError(f"scheme must be one of {sorted(SCHEME_METHODS)} (CL: SimCLR, SCL: "
                             f"SupCon, SL: cross-entropy), got {scheme!r}")
        base = SCHEME_METHODS[scheme](backbone, **scheme_options)
        super().__init__(base.backbone, base.view_recipes)
        epsilon = require_in_range("epsilon", epsilon, 0.0, math.inf, high_inclusive=False)
        steps = require_int_at_least("steps", steps, 1)
        step_size, random_start = _attack_defaults(definition, step_size, random_start)
        require_function("attack", attack, "attack(loss_fn, x, epsilon, step_size, "
                                           "steps, random_start=...)")
        # Held, not registered as a submodule: its backbone and projector are this method's own.
        self.__dict__["base"] = base
        self.projector = base.projector
        self.scheme, self.lr, self.requires_labels = scheme, base.lr, base.requires_labels
        self.num_classes = base.num_classes
        self.definition, self.epsilon, self.steps = definition, epsilon, steps
        self.step_size, self.random_start = step_size, random_start
        self.attack_fn = attack or pgd
        self.hyperparameters = dict(scheme=scheme, **base.hyperparameters, definition=definition,
                                    epsilon=epsilon, steps=steps, step_size=step_size,
                                    random_start=random_start)

    def functions(self) -> dict[str, Callable]:
        return {**self.base.functions(), "attack": self.attack_fn}

    def on_train_start(self, num_images: int, batch_size: int) -> None:
        self.base.on_train_start(num_images, batch_size)

    def attack_objective(self, clean: torch.Tensor, labels: torch.Tensor | None) -> Callable:
        """x' -> the attack objective at x' against the clean batch (see the class docstring),
        summed over its anchors (the attack raises it; a sum has the mean's gradient sign and keeps
        fp16 input gradients clear of underflow)."""
        paper = self.definition == "paper"
        if self.scheme == "sl":
            return cross_entropy_objective(self.encode, labels, normalise_logits=paper)

        def summed_loss(z_anchor: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            anchors = 2 * len(z)
            if not paper:
                return self.base.contrastive_loss((z_anchor, z), labels) * anchors
            attack_labels = labels if self.scheme == "scl" else None
            if is_distributed():   # the global batch's objective, as one process computes it
                z_anchor, z = gather_with_grad(torch.stack([z_anchor, z], dim=1)).unbind(1)
                attack_labels = gather(attack_labels) if attack_labels is not None else None
            return paper_contrastive_loss(z_anchor, z, attack_labels) * anchors
        return contrastive_objective(self.encode, clean, summed_loss)

    def adversarial_step(self, batch: Batch, clean: torch.Tensor,
                         adversarial: torch.Tensor) -> StepOutput:
        """The scheme's loss on the adversarial pair (x^0, x^0 + delta*), or CE(x^0 + delta*) for
        SL: two batch-norm passes under the paper's definition, the scheme's one under the course's.
        """
        if self.scheme == "sl":
            return self.base.training_step(batch._replace(views=(adversarial,)))
        if self.definition == "course":
            return self.base.training_step(batch._replace(views=(clean, adversarial)))
        embeddings = (self.encode(clean), self.encode(adversarial))
        return StepOutput(self.base.contrastive_loss(embeddings, batch.labels),
                          {"positive_similarity": mean_view_similarity(embeddings)})

    def training_step(self, batch: Batch) -> StepOutput:
        clean = to_float_images(batch.images)  # x^0: the images themselves, un-augmented
        if batch.views[0].is_contiguous(memory_format=torch.channels_last):
            clean = clean.contiguous(memory_format=torch.channels_last)
        with batchnorm_statistics_frozen(self):
            adversarial = self.attack_fn(self.attack_objective(clean, batch.labels), clean,
                                         self.epsilon, self.step_size, self.steps,
                                         random_start=self.random_start)
        if self.attack_fn is not pgd:
            adversarial = self.attack_result(self.attack_fn, adversarial, clean)
        standard = self.base.training_step(batch)
        attacked = self.adversarial_step(batch, clean, adversarial)
        logs = {**standard.logs,
                **{f"adversarial_{key}": value for key, value in attacked.logs.items()},
                "standard_loss": standard.loss.detach(), "adversarial_loss": attacked.loss.detach()}
        return StepOutput(standard.loss + attacked.loss, logs)


def unaugmented(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The images themselves as float pixels in [0, 1]: the views of the fine-tuning, which
    CL-Robustness trains on un-augmented images (the generator is not used)."""
    return to_float_images(images)


class FineTune(Method):
    r"""A linear classifier W on a pretrained encoder f, trained in the shared loop
    (`clcourse.train.train`): the fine-tuning of CL-Robustness' scenarios (`mode`):

        standard:  \min_W CE(W f(x), y)                               f frozen (ST, AT)
        partial:   \min_W CE(W f(x), y) + CE(W f(x + \delta), y)       f frozen (Partial-AT)
        full:      \min_{W, f} CE(W f(x), y) + CE(W f(x + \delta), y)  (Full-AT)

    The loss reads the raw logits (as the authors'); x and x + delta go through the network in two
    passes. \delta: PGD within `epsilon` (the paper's 8/255), `steps` steps, end to end through
    encoder and head, with batch-norm's running averages frozen during the attack; `definition`
    says on what and how (`attack` replaces `clcourse.attacks.pgd`, same arguments):

    - "paper" (default), the authors' code: on \sum_i CE(normalize(W f(x_i + \delta_i)), y_i), the
      cross-entropy of the L2-normalised logits (their `EncoderWithHead` normalises every head's
      output), from delta = 0 in steps of 0.01;
    - "course": on the cross-entropy of the raw logits, from a random start in steps of 2/255.

    `step_size` and `random_start` override the definition's.

    A frozen encoder stays in eval mode whatever the loop asks (its batch-norm statistics do not
    move) and its weights get no gradient, so the loop's optimiser never sees them. The pretrained
    projector comes along, frozen, for threat model I (`encode`); it is never trained. The views are
    the images themselves (`unaugmented`, as the paper) unless `augment` says otherwise. `scheme` is
    the encoder's learning scheme (`scheme_of`), which threat model I's paper definition reads.

    `encoder` is the pretrained method (any `Method`: its backbone and projector are copied). Its
    weights' fingerprint is part of the configuration, so a run under the same name on another
    encoder is refused.
    """

    requires_labels = True
    # Peak SGD learning rate per 256 images: a linear head on frozen features, or the whole network.
    LEARNING_RATES = {"standard": 0.5, "partial": 0.5, "full": 0.05}

    def __init__(self, encoder: Method, mode: str = "standard", num_classes: int = 10,
                 epsilon: float = TRAIN_EPSILON, steps: int = TRAIN_STEPS,
                 step_size: float | None = None, random_start: bool | None = None,
                 attack: Callable | None = None, augment=None, definition: str = "paper"):
        if not isinstance(encoder, Method):
            raise ValueError("encoder must be a pretrained clcourse Method (its backbone and "
                             f"projector are used), got {type(encoder).__name__}")
        if mode not in FINE_TUNING:
            raise ValueError(f"mode must be one of {list(FINE_TUNING)}, got {mode!r}")
        num_classes = require_int_at_least("num_classes", num_classes, 2)
        step_size, random_start = _attack_defaults(definition, step_size, random_start)
        epsilon, steps, step_size = require_attack_budget(epsilon, steps, step_size)
        require_function("attack", attack, "attack(loss_fn, x, epsilon, step_size, "
                                           "steps, random_start=...)")
        super().__init__(copy.deepcopy(encoder.backbone), (augment or unaugmented,))
        self.projector = copy.deepcopy(encoder.projector).requires_grad_(False)
        self.head = nn.Linear(self.backbone.feature_dim, num_classes)
        self.num_classes = num_classes
        self.mode, self.scheme, self.definition = mode, scheme_of(encoder), definition
        if mode != "full":
            self.backbone.requires_grad_(False)
        self.compilable = mode == "standard"      # the adversarial modes take input gradients
        self.lr = self.LEARNING_RATES[mode]
        self.epsilon, self.steps = epsilon, steps
        self.step_size, self.random_start = step_size, random_start
        self.attack_fn = attack or pgd
        self.hyperparameters = dict(mode=mode, num_classes=num_classes,
                                    encoder=type(encoder).__name__,
                                    encoder_weights=weights_fingerprint(encoder))
        if mode != "standard":
            self.hyperparameters.update(definition=definition, epsilon=epsilon, steps=steps,
                                        step_size=step_size, random_start=random_start)
        self.train()

    def functions(self) -> dict[str, Callable]:
        return {"attack": self.attack_fn}

    def train(self, mode: bool = True) -> FineTune:
        """Training mode for what is trained; a frozen encoder and the projector
        stay in eval mode."""
        super().train(mode)
        self.projector.eval()
        if self.mode != "full":
            self.backbone.eval()
        return self

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits W f(x)."""
        return self.head(self.backbone(x))

    def training_step(self, batch: Batch) -> StepOutput:
        x, labels = batch.views[0], batch.labels
        logits = self.classify(x)
        loss = F.cross_entropy(logits.float(), labels)
        logs = {"train_accuracy": (logits.detach().argmax(1) == labels).float().mean()}
        if self.mode == "standard":
            return StepOutput(loss, logs)
        objective = cross_entropy_objective(self.classify, labels,
                                            normalise_logits=self.definition == "paper")
        with batchnorm_statistics_frozen(self):
            x_adv = self.attack_fn(objective, x, self.epsilon, self.step_size, self.steps,
                                   random_start=self.random_start)
        if self.attack_fn is not pgd:
            x_adv = self.attack_result(self.attack_fn, x_adv, x)
        adversarial_logits = self.classify(x_adv)
        adversarial_loss = F.cross_entropy(adversarial_logits.float(), labels)
        logs.update(
            clean_loss=loss.detach(), adversarial_loss=adversarial_loss.detach(),
            adversarial_accuracy=(adversarial_logits.detach().argmax(1) == labels).float().mean())
        return StepOutput(loss + adversarial_loss, logs)
