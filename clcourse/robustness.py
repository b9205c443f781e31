"""How robust is a contrastive encoder? The fine-tuning scenarios, threat models and grid of
CL-Robustness (Ghofrani, Yaghouti & Jamshidi, "Rethinking Robust Contrastive Learning from the
Adversarial Perspective", https://arxiv.org/abs/2302.02502), notebook 08.

Three learning schemes (`clcourse.methods.SCHEMES`): CL (SimCLR), SCL (SupCon) and SL
(cross-entropy), each pretrained in the standard way or adversarially
(`clcourse.methods.AdversarialPretraining`). Then a linear classifier on top, trained by the shared
loop (`FineTune`), in one of three ways (`FINE_TUNING`):

    standard  min_W CE(W f(x))                         encoder frozen
    partial   min_W CE(W f(x)) + CE(W f(x + delta))    encoder frozen: an adversarial linear head
    full      the same loss, encoder trained too

with delta from PGD on the cross-entropy through encoder and head. The paper's four scenarios
(`SCENARIOS`) pair a pretraining with a fine-tuning: ST (standard, standard), AT
(adversarial, standard), Partial-AT (adversarial, partial) and Full-AT (adversarial, full).

Evaluation (`evaluate_robustness`), on held-out images, in batches on the device:
- clean accuracy;
- threat model I: PGD on a contrastive loss through encoder and projector: the attacker moves each
  image's embedding away from its clean embedding and towards the other images of the batch
  (`threat_model_1`);
- threat model II: PGD on the cross-entropy through encoder and linear head, end to end
  (`threat_model_2`);
- optionally AutoAttack (`autoattack_accuracy`, through torchattacks when it is installed),
  a stronger check.

Every attack, in training and at test, comes in two definitions (`DEFINITIONS`, argument
`definition`):

- "paper" (default), as the authors' code runs them: threat model I on SupConLoss at tau = 0.07,
  with the labels for SCL and without them (InfoNCE) for CL (for SL, which the authors do not
  attack this way, the course's extension: as CL); threat model II and the attacks of adversarial
  fine-tuning on the cross-entropy of the L2-normalised logits; PGD from delta = 0 in steps of
  0.01, in training and at test; adversarial pretraining forwards the clean and the adversarial
  images in two batch-norm passes;
- "course", the course's simpler variant: threat model I on InfoNCE at tau = 0.5 without labels
  for every scheme; cross-entropy on the raw logits; PGD from a random start in steps of 2/255 in
  training and epsilon / 4 at test; the adversarial pair in one batch-norm pass.

Every epsilon is in [0, 1] pixel units (the models normalise inside). Budgets are the paper's:
adversarial training at 8/255 with 5 steps, test attacks at 4/255 with 40 steps (the paper's 0.01
step is larger than epsilon / 2 at 4/255).

`pretrain_encoder` and `fine_tune` train with the preset's `RobustnessBudget` (`preset.robustness`)
and keep every model under a run name (`runs/<preset>/nb08_...`, `encoder_run_name`), so that later
notebooks (09, layer-wise analysis) load the same encoders.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .attacks import (
    NORMS,
    contrastive_objective,
    cross_entropy_objective,
    pgd,
    require_attack_budget,
    require_attack_result,
)
from .augment import to_float_images
from .losses import info_nce, supcon
from .methods import (
    DEFINITIONS,
    FINE_TUNING,
    PAPER_STEP_SIZE,
    PAPER_TEMPERATURE,
    SCHEMES,
    TRAIN_EPSILON,
    TRAIN_STEP_SIZE,
    TRAIN_STEPS,
    AdversarialPretraining,
    FineTune,
    Method,
    build_method,
    require_definition,
)
from .models import build_backbone
from .presets import Preset, RobustnessBudget, autocast_dtype, get_preset
from .validation import (
    require_bool,
    require_classes,
    require_images,
    require_int_at_least,
    require_labels,
    require_positive,
    require_unit_range,
)

__all__ = ["SCHEMES", "SCENARIOS", "FINE_TUNING", "FineTune", "TRAIN_EPSILON", "TRAIN_STEPS",
           "TRAIN_STEP_SIZE", "TEST_EPSILON", "TEST_STEPS", "THREAT_MODEL_1_TEMPERATURE",
           "DEFINITIONS", "PAPER_STEP_SIZE", "PAPER_TEMPERATURE", "require_definition",
           "require_scheme", "require_scenario", "require_norm", "threat_model_1", "threat_model_2",
           "robust_accuracy", "RobustAccuracy", "evaluate_robustness", "classifier_of",
           "autoattack_accuracy", "encoder_run_name", "build_encoder_method", "training_data",
           "pretrain_encoder", "fine_tune", "TRAININGS", "scenario_encoders"]

TEST_EPSILON, TEST_STEPS = 4 / 255, 40  # test attacks (the paper's)
THREAT_MODEL_1_TEMPERATURE = 0.5        # InfoNCE's temperature in the course's threat model I
# scenario -> (adversarial pretraining?, fine-tuning)
SCENARIOS = {"ST": (False, "standard"), "AT": (True, "standard"), "Partial-AT": (True, "partial"),
             "Full-AT": (True, "full")}


def require_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {list(SCHEMES)} (CL: SimCLR, SCL: SupCon, SL: "
                         f"cross-entropy), got {scheme!r}")
    return scheme


def require_scenario(scenario: str) -> str:
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {list(SCENARIOS)}, got {scenario!r}")
    return scenario


def require_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {list(NORMS)} (the threat "
                         f"model's ball), got {norm!r}")
    return norm


# ---------------------------------------------------------------- attacks and robust accuracy

def _test_attack_defaults(definition: str, epsilon: float, steps: int, step_size: float | None,
                          random_start: bool | None,
                          norm: str) -> tuple[float, int, float, bool]:
    """The budget of a test attack, with the definition's step (paper 0.01 in the L-infinity ball,
    the authors' only one; else epsilon / 4) and start (paper delta = 0, course random) unless
    given."""
    paper = require_definition(definition) == "paper"
    if step_size is None and paper and require_norm(norm) == "linf":
        step_size = PAPER_STEP_SIZE
    epsilon, steps, step_size = require_attack_budget(epsilon, steps, step_size)
    return epsilon, steps, step_size, not paper if random_start is None else random_start


def threat_model_1(encode: Callable, epsilon: float = TEST_EPSILON, steps: int = TEST_STEPS,
                   step_size: float | None = None, temperature: float | None = None, *,
                   definition: str = "paper", scheme: str = "cl", objective: Callable | None = None,
                   attack: Callable | None = None, random_start: bool | None = None,
                   norm: str = "linf",
                   seed: int = 0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    r"""Threat model I: an attacker who knows the encoder f and projector g (`encode`) and moves
    each image so that a contrastive loss between the batch's clean embeddings and the perturbed
    ones rises,

        \delta^* = \mathrm{PGD}\big[\max_{\lVert\delta\rVert_\infty \le \epsilon}
                   L_\tau\big(\mathrm{sg}[z(x)],\, z(x + \delta)\big)\big],
        z = g \circ f

    (the other images of the batch are the negatives, so the batch size is part of the threat).
    Returns attack(x, y) -> x + delta* for `robust_accuracy`. `definition` says what L is:

    - "paper" (default), the authors' code (`pgd_linf`): L = SupConLoss at tau = 0.07
      (`clcourse.methods.paper_contrastive_loss`), with the labels y when `scheme` is "scl" and
      without them (InfoNCE) for "cl"; PGD from delta = 0 in steps of 0.01 (in the L2 ball, which
      the authors do not use, epsilon / 4). The authors attack only
      CL and SCL encoders this way; for "sl" (the normalised logits as embedding) it is the
      course's extension, label-free as CL;
    - "course": L = InfoNCE at tau = 0.5 for every scheme, no labels read; PGD from a random point
      of the ball in steps of epsilon / 4.

    `temperature`, `step_size` and `random_start` override the definition's.
    `objective(encode, x, temperature) -> (x' -> loss)` replaces the definition's objective (e.g. a
    student's InfoNCE objective in notebook 08; it is given no labels); the attack raises it times
    the number of anchors 2B (a sum: the same gradient sign, and fp16 input gradients clear of
    underflow). `attack(loss_fn, x, epsilon, step_size, steps, random_start=..., norm=...,
    generator=...)` replaces `clcourse.attacks.pgd`. `norm`: the ball, "linf" (the paper's) or "l2"
    (epsilon is then the L2 radius in pixel units, e.g. 0.5 on CIFAR-10 as RobustBench). A random
    start is drawn from a generator seeded with `seed`, so an evaluation gives the same numbers
    every time.
    """
    epsilon, steps, step_size, random_start = _test_attack_defaults(definition, epsilon, steps,
                                                                    step_size, random_start, norm)
    paper = definition == "paper"
    if temperature is None:
        temperature = PAPER_TEMPERATURE if paper else THREAT_MODEL_1_TEMPERATURE
    temperature = require_positive("temperature", temperature)
    random_start = require_bool("random_start", random_start)
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {list(SCHEMES)} (CL: SimCLR, SCL: SupCon, SL: "
                         f"cross-entropy), got {scheme!r}")
    for name, fn in (("encode", encode), ("objective", objective), ("attack", attack)):
        if fn is not None and not callable(fn):
            raise ValueError(f"{name} must be a function, got {fn!r}")
    reads_labels = paper and scheme == "scl" and objective is None
    run_attack = _seeded(attack or pgd, seed, require_norm(norm))

    def perturb(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if len(x) < 2:
            raise ValueError(f"threat model I needs batches of at least 2 images (each image's "
                             f"negatives are the batch's other images), got a batch of {len(x)}: "
                             "with robust_accuracy, choose a batch_size that does not leave one "
                             "image over (len(images) % batch_size == 1)")
        if objective is not None:
            loss_fn = objective(encode, x, temperature)
        else:
            pair_loss = functools.partial(_contrastive_loss, temperature=temperature,
                                          labels=labels if reads_labels else None)
            loss_fn = contrastive_objective(encode, x, pair_loss)
        return run_attack(lambda x_prime: loss_fn(x_prime) * (2 * len(x_prime)), x, epsilon,
                          step_size, steps, random_start)
    return perturb


def _contrastive_loss(z_anchor: torch.Tensor, z: torch.Tensor, temperature: float,
                      labels: torch.Tensor | None) -> torch.Tensor:
    """SupCon with `labels`, InfoNCE without (at tau = 0.07: the authors' SupConLoss)."""
    if labels is not None:
        return supcon(z_anchor, z, labels, temperature)
    return info_nce(z_anchor, z, temperature)


def threat_model_2(classifier: Callable, epsilon: float = TEST_EPSILON, steps: int = TEST_STEPS,
                   step_size: float | None = None, *, definition: str = "paper",
                   attack: Callable | None = None, random_start: bool | None = None,
                   norm: str = "linf",
                   seed: int = 0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    r"""Threat model II: the usual white-box attack with labels, end to end through encoder
    and linear head,

        \delta^* = \mathrm{PGD}\big[\max_{\lVert\delta\rVert_\infty \le \epsilon}
                   \sum_i CE(W f(x_i + \delta_i), y_i)\big]

    Returns attack(x, y) -> x + delta* for `robust_accuracy`. `definition`: "paper" (default), the
    authors' code (`pgd_linf_end2end`): the cross-entropy of the L2-normalised logits
    normalize(W f(x)), PGD from delta = 0 in steps of 0.01; "course": the cross-entropy of the raw
    logits, from a random start in steps of epsilon / 4. `attack`, `step_size`, `random_start`,
    `norm` and `seed` as in `threat_model_1`."""
    epsilon, steps, step_size, random_start = _test_attack_defaults(definition, epsilon, steps,
                                                                    step_size, random_start, norm)
    random_start = require_bool("random_start", random_start)
    for name, fn in (("classifier", classifier), ("attack", attack)):
        if fn is not None and not callable(fn):
            raise ValueError(f"{name} must be a function, got {fn!r}")
    run_attack = _seeded(attack or pgd, seed, require_norm(norm))

    def perturb(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        objective = cross_entropy_objective(classifier, labels, check_labels=True,
                                            normalise_logits=definition == "paper")
        return run_attack(objective, x, epsilon, step_size, steps, random_start)
    return perturb


def _seeded(attack: Callable, seed: int, norm: str) -> Callable:
    """`attack` in the `norm` ball, called with a generator of its own, seeded once with `seed` on
    the images' device."""
    seed = require_int_at_least("seed", seed, 0)
    generators: dict[torch.device, torch.Generator] = {}

    def run(loss_fn, x, epsilon, step_size, steps, random_start):
        generator = generators.setdefault(x.device,
                                          torch.Generator(device=x.device).manual_seed(seed))
        return attack(loss_fn, x, epsilon, step_size, steps, random_start=random_start, norm=norm,
                      generator=generator)
    return run


def robust_accuracy(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                    batch_size: int = 500, progress: bool = True,
                    description: str = "robust accuracy") -> float:
    """The fraction of `images` that `classifier` (pixels in [0, 1] -> logits) still classifies
    right after `attack(x, y) -> x_adv` moved them (None: no attack, the clean accuracy).

    The whole set goes through in batches of `batch_size` on the classifier's device (uint8 images
    are converted one batch at a time), in eval mode (every module's mode is restored afterwards),
    under autocast on a GPU (bf16, fp16 on a T4) in channels_last layout, with a progress bar; the
    count stays on the device and is read once at the end. Each batch is attacked on its own, so an
    attack that uses the batch (threat model I) sees `batch_size` images at a time."""
    if not isinstance(classifier, nn.Module):
        raise ValueError("classifier must be a torch.nn.Module (pixels -> logits), got "
                         f"{type(classifier).__name__}")
    if labels is None:
        raise ValueError("labels must be given (one per image): robust accuracy "
                         "compares predictions with them")
    require_images("images", images)
    require_unit_range("images", images)
    labels = require_labels("labels", labels, images.shape[0], "images")
    progress = require_bool("progress", progress)
    if attack is not None and not callable(attack):
        raise ValueError(f"attack must be a function attack(x, y) -> x_adv, got {attack!r}")
    batch_size = require_int_at_least("batch_size", batch_size, 1)

    parameter = next(classifier.parameters(), None)
    device = parameter.device if parameter is not None else images.device
    amp_dtype = autocast_dtype(device)
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    modes = [(module, module.training) for module in classifier.modules()]
    classifier.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    try:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            with torch.no_grad():
                classes = classifier(to_float_images(images[:1].to(device))).shape[-1]
            require_classes("labels", labels, classes, f"the classifier has {classes} outputs")
            for start in tqdm(range(0, len(images), batch_size), desc=description, unit="batch",
                              disable=not progress, leave=False):
                x = (to_float_images(images[start:start + batch_size].to(device))
                     .contiguous(memory_format=layout))
                y = labels[start:start + batch_size].to(device)
                if attack is not None:
                    x = require_attack_result("attack", attack(x, y), x).detach()
                with torch.no_grad():
                    correct += (classifier(x).argmax(1) == y).sum()
    finally:
        for module, training in modes:
            module.training = training
    return correct.item() / len(images)


class RobustAccuracy(NamedTuple):
    """Accuracy on held-out images: clean, under threat model I and under threat model II."""
    clean: float
    threat_model_1: float
    threat_model_2: float


def evaluate_robustness(model: FineTune, images: torch.Tensor, labels: torch.Tensor,
                        epsilon: float = TEST_EPSILON, steps: int = TEST_STEPS,
                        step_size: float | None = None, temperature: float | None = None,
                        batch_size: int = 500, *, definition: str = "paper",
                        objective: Callable | None = None, attack: Callable | None = None,
                        norm: str = "linf", progress: bool = True) -> RobustAccuracy:
    """Clean accuracy and robust accuracy under both threat models of a fine-tuned classifier
    (`FineTune`): threat model I through its encoder and pretrained projector (with the labels
    where the paper's definition reads them: SCL), II through its encoder and linear head, both
    under `definition` ("paper" or "course"; see `threat_model_1`) with `epsilon`, `steps`,
    `step_size` in the `norm` ball ("linf" or "l2"; `objective` and `attack` go to the threat
    models), over all `images` in batches of `batch_size`."""
    if not isinstance(model, FineTune):
        raise ValueError("model must be a FineTune (encoder, pretrained projector and linear "
                         f"head), got {type(model).__name__}")
    require_definition(definition)
    classifier = _Classifier(model)
    common = dict(batch_size=batch_size, progress=progress)
    attacks = dict(definition=definition, attack=attack, norm=norm)
    return RobustAccuracy(
        robust_accuracy(classifier, images, labels, None, description="clean", **common),
        robust_accuracy(classifier, images, labels,
                        threat_model_1(model.encode, epsilon, steps, step_size, temperature,
                                       scheme=model.scheme, objective=objective, **attacks),
                        description=f"threat model I ({definition})", **common),
        robust_accuracy(classifier, images, labels,
                        threat_model_2(model.classify, epsilon, steps, step_size, **attacks),
                        description=f"threat model II ({definition})", **common))


class _Classifier(nn.Module):
    """A FineTune's classify as a module (pixels -> logits) whose mode switches
    the whole FineTune."""

    def __init__(self, model: FineTune):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.classify(x)


def classifier_of(model: FineTune) -> nn.Module:
    """The fine-tuned classifier as a module, pixels in [0, 1] -> logits (for
    `robust_accuracy`, torchattacks)."""
    if not isinstance(model, FineTune):
        raise ValueError(f"model must be a FineTune, got {type(model).__name__}")
    return _Classifier(model)


def autoattack_accuracy(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                        epsilon: float = TEST_EPSILON, num_classes: int = 10, batch_size: int = 500,
                        norm: str = "linf", progress: bool = True) -> float | None:
    """Robust accuracy under AutoAttack (Croce & Hein, ICML 2020, https://arxiv.org/abs/2003.01690;
    the standard version: APGD-CE, APGD-T, FAB-T, Square; RobustBench's reference) in the `norm`
    ball, as implemented by the torchattacks package: a stronger check of the PGD figures, not the
    course's own code. Returns None, with a message, when torchattacks is not installed. Runs in
    float32 (no autocast)."""
    try:
        import torchattacks
    except ImportError:
        print("AutoAttack skipped: it runs through the torchattacks package, which is not "
              "installed (pip install torchattacks)")
        return None
    epsilon, _, _ = require_attack_budget(epsilon, 1, None)
    norm = {"linf": "Linf", "l2": "L2"}[require_norm(norm)]
    auto = torchattacks.AutoAttack(classifier, norm=norm, eps=epsilon, version="standard",
                                   n_classes=num_classes, seed=0)

    def attack(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return auto(x.float().contiguous(), y)
    return robust_accuracy(classifier, images, labels, attack, batch_size, progress,
                           description="AutoAttack")


# -------------------------------------------------------- budgets and runs, shared with notebook 09

def encoder_run_name(scheme: str, adversarial: bool, budget: RobustnessBudget,
                     prefix: str = "nb08", definition: str = "paper") -> str:
    """`nb08_cl_st`, `nb08_scl_at_eps8_steps5`, `nb08_sl_at_eps8_steps5_course`, ...: the run of a
    pretrained encoder (adversarial training under the course's definition says so)."""
    require_scheme(scheme)
    adversarial = require_bool("adversarial", adversarial)
    require_definition(definition)
    if not adversarial:
        return f"{prefix}_{scheme}_st"
    suffix = "_course" if definition == "course" else ""
    return f"{prefix}_{scheme}_at_eps{round(255 * TRAIN_EPSILON)}_steps{budget.train_steps}{suffix}"


def _train_step_size(budget: RobustnessBudget, definition: str) -> float | None:
    """The budget's PGD step for the course's definition; None (the definition's 0.01) for the
    paper's."""
    return budget.train_step_size if require_definition(definition) == "course" else None


def build_encoder_method(scheme: str, adversarial: bool, budget: RobustnessBudget,
                         attack: Callable | None = None, definition: str = "paper",
                         **options) -> Method:
    """The pretraining method of `scheme` (seeded, so the same call builds the same initial
    weights): `AdversarialPretraining` with the budget's attack under `definition` when
    `adversarial`, else the scheme's own method."""
    require_scheme(scheme)
    adversarial = require_bool("adversarial", adversarial)
    torch.manual_seed(0)
    backbone = build_backbone(budget.backbone)
    if adversarial:
        return AdversarialPretraining(backbone, scheme, epsilon=TRAIN_EPSILON,
                                      steps=budget.train_steps,
                                      step_size=_train_step_size(budget, definition),
                                      attack=attack, definition=definition, **options)
    return build_method(SCHEMES[scheme], backbone, **options)


def training_data(budget: RobustnessBudget, device=None,
                  train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10's training (or test) images and labels of the budget, on `device`
    (default: the course's)."""
    from .data import load_dataset
    from .presets import get_device
    subset = budget.train_subset if train else budget.test_subset
    return load_dataset("cifar10", train=train, subset=subset, device=get_device(device))


def _robustness_budget(preset: Preset | str | None) -> tuple[Preset, RobustnessBudget]:
    preset = get_preset(preset) if preset is None or isinstance(preset, str) else preset
    if not isinstance(preset, Preset):
        raise ValueError("preset must be a Preset, a preset's name or None (the course's), got "
                         f"{preset!r}")
    if preset.robustness is None:
        raise ValueError(f"preset {preset.name!r} has no robustness budget (preset.robustness is "
                         "None): give it one with "
                         "preset.with_overrides(robustness=RobustnessBudget(...))")
    return preset, preset.robustness


def pretrain_encoder(scheme: str, adversarial: bool, *, preset: Preset | str | None = None,
                     data: tuple[torch.Tensor, torch.Tensor] | None = None, prefix: str = "nb08",
                     attack: Callable | None = None, definition: str = "paper",
                     progress: bool = True, **options):
    """Pretrain (or load, when the run exists) the encoder of `scheme` ("cl", "scl", "sl"), standard
    or adversarial (under `definition`, "paper" or "course"), with the preset's `RobustnessBudget`
    (`preset.robustness`), as run `encoder_run_name(...)` in runs/<preset>/. `data` = (uint8
    images, labels) (default: the budget's CIFAR-10 subset); `options` go to the method (e.g. a
    student's `loss=`), `attack` to the adversarial pretraining. Returns (method, History)."""
    from .train import train
    preset, budget = _robustness_budget(preset)
    images, labels = data if data is not None else training_data(budget)
    method = build_encoder_method(scheme, adversarial, budget, attack=attack,
                                  definition=definition, **options)
    history = train(method, images, labels=labels,
                    preset=preset.with_overrides(epochs=budget.pretrain_epochs,
                                                 batch_size=budget.batch_size),
                    run=encoder_run_name(scheme, adversarial, budget, prefix, definition),
                    progress=progress)
    return method, history


def fine_tune(encoder: Method, encoder_run: str, mode: str, *, preset: Preset | str | None = None,
              data: tuple[torch.Tensor, torch.Tensor] | None = None, attack: Callable | None = None,
              definition: str = "paper", progress: bool = True):
    """Fine-tune (or load) a linear head on `encoder` (`FineTune` in `mode`: "standard", "partial",
    "full"; the adversarial modes attack under `definition`) with the preset's robustness budget,
    as run `<encoder_run>_<mode>` (`_course` appended for an adversarial mode under the course's
    definition). Returns (FineTune, History)."""
    from .train import train
    preset, budget = _robustness_budget(preset)
    images, labels = data if data is not None else training_data(budget)
    torch.manual_seed(0)
    model = FineTune(encoder, mode, epsilon=TRAIN_EPSILON, steps=budget.train_steps,
                     step_size=_train_step_size(budget, definition), attack=attack,
                     definition=definition)
    budget_of_run = preset.with_overrides(epochs=budget.finetune_epochs,
                                          batch_size=budget.finetune_batch_size, warmup_epochs=0)
    suffix = "_course" if definition == "course" and mode != "standard" else ""
    history = train(model, images, labels=labels, preset=budget_of_run,
                    run=f"{encoder_run}_{mode}{suffix}", progress=progress)
    return model, history


# The encoders the scenarios leave: ST's, AT's (Partial-AT's too: it freezes the AT encoder) and
# Full-AT's (the AT encoder, adversarially fine-tuned with its head).
TRAININGS = ("ST", "AT", "Full-AT")


def scenario_encoders(scheme: str, *, preset: Preset | None = None,
                      data: tuple[torch.Tensor, torch.Tensor] | None = None, prefix: str = "nb08",
                      definition: str = "paper", progress: bool = True) -> dict[str, Method]:
    """The three encoders of `scheme` the scenarios leave (`TRAININGS`), trained or loaded as the
    runs of `pretrain_encoder` and `fine_tune` (notebook 08's, with `prefix` "nb08"): "ST" the
    standard pretraining, "AT" the adversarial pretraining (Partial-AT trains only a head on it, so
    its encoder is this one), "Full-AT" the `FineTune` that trained the AT encoder further with its
    head. Each has `backbone` and `encode` (for Full-AT through the pretrained projector, frozen),
    and is returned in eval mode."""
    standard, adversarial = (pretrain_encoder(scheme, at, preset=preset, data=data,
                                              prefix=prefix, definition=definition,
                                              progress=progress)[0]
                             for at in (False, True))
    _, budget = _robustness_budget(preset)
    full_at, _ = fine_tune(adversarial, encoder_run_name(scheme, True, budget, prefix, definition),
                           "full", preset=preset, data=data, definition=definition,
                           progress=progress)
    return {"ST": standard.eval(), "AT": adversarial.eval(), "Full-AT": full_at.eval()}
