"""Checkers for notebook 05 (adversarial examples, CLAE): FGSM on a contrastive loss, and CLAE's
objective (which views go through which batch-norm branch, which embeddings each term compares)."""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn as nn

from ..attacks import contrastive_attack, input_gradient
from ..losses import info_nce
from ..methods import clae_objective
from ..models import adversarial_batchnorm, dual_batchnorm_layers, use_dual_batchnorm
from ._core import ExerciseError, as_tensor, call_student, diagnose, exercise, passed, same, seeded

__all__ = ["check_fgsm_contrastive", "check_clae_objective"]


def _encoder(seed: int, dual: bool = False) -> nn.Module:
    """A small conv encoder with batch-norm, in float64 and training mode (as during training)."""
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 12),
                            nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 5))
    if dual:
        use_dual_batchnorm(encoder)
        with torch.no_grad():  # branches that differ, so that a pass on the wrong route shows
            for layer in dual_batchnorm_layers(encoder):
                layer.adversarial.weight.uniform_(0.5, 1.5, generator=seeded(seed))
                layer.adversarial.bias.uniform_(-0.3, 0.3, generator=seeded(seed + 1))
    return encoder.double().train()


def _views(seed: int, batch_size: int, count: int = 1) -> list[torch.Tensor]:
    """Images in [0, 1] with a share of pixels at 0 and 1, so that clipping matters."""
    g = seeded(100 + seed)
    views = []
    for _ in range(count):
        x = torch.rand(batch_size, 3, 6, 6, generator=g, dtype=torch.float64)
        views.append(torch.where(x < 0.1, torch.zeros_like(x),
                                 torch.where(x > 0.9, torch.ones_like(x), x)))
    return views


def _contrastive_loss(temperature: float) -> Callable:
    return lambda z_anchor, z: info_nce(z_anchor, z, temperature)


# ---------------------------------------------------------------- FGSM on a contrastive loss

@exercise(stands_for=contrastive_attack)
def check_fgsm_contrastive(fn, cases=((6, 0.03, 0.5), (5, 0.1, 0.2), (4, 0.05, 1.0))) -> None:
    """fn(encode, x, epsilon, loss) -> x + epsilon sign(grad_x loss(sg[encode(x)], encode(x))),
    clipped to [0, 1]."""
    for seed, (batch_size, epsilon, temperature) in enumerate(cases):
        encoder, (x,) = _encoder(seed), _views(seed, batch_size)
        loss = _contrastive_loss(temperature)
        context = f"B={batch_size}, epsilon={epsilon}, temperature={temperature}"
        student_encoder = copy.deepcopy(encoder)
        student = as_tensor(call_student(fn, student_encoder, x.clone(), epsilon, loss,
                                         name="fgsm_contrastive"),
                            "fgsm_contrastive")
        if any(parameter.grad is not None for parameter in student_encoder.parameters()):
            raise ExerciseError("fgsm_contrastive left gradients in the encoder's weights: take "
                                "the gradient with torch.autograd.grad(loss, x), which computes "
                                "it for x alone. loss.backward() also writes every weight's "
                                ".grad, and the training step's optimiser would use them.")
        if not student_encoder.training:
            raise ExerciseError("fgsm_contrastive switched the encoder to eval mode: leave the "
                                "mode as the caller set it (CLAE attacks in training mode, "
                                "through the adversarial batch-norm).")
        if student.requires_grad:
            raise ExerciseError("fgsm_contrastive returns images that still require a gradient: "
                                "return x_adv.detach(), a constant for the training step.")
        reference = contrastive_attack(copy.deepcopy(encoder), x, epsilon, loss)
        with torch.no_grad():
            anchors = copy.deepcopy(encoder)(x)
        gradient = input_gradient(lambda images: loss(anchors, copy.deepcopy(encoder)(images)), x)
        step = epsilon * gradient.sign()
        diagnose("fgsm_contrastive", student.to(reference.dtype), reference, {
            "Return the adversarial images x + delta, not the perturbation delta.": step,
            "The images are unchanged: take one step, x + epsilon * sign(gradient).": x,
            "Step *up* the loss (gradient ascent): x + epsilon * sign(gradient), not minus.":
                (x - step).clamp(0, 1),
            "Clip the adversarial images to the valid pixel range: (x + delta).clamp(0, 1).":
                x + step,
            "FGSM steps along the *sign* of the gradient, epsilon * gradient.sign(), "
            "not the gradient itself.":
                (x + epsilon * gradient).clamp(0, 1),
            "The step has size epsilon: x + epsilon * sign(gradient).":
                (x + gradient.sign()).clamp(0, 1),
        }, context)
    passed("fgsm_contrastive", "one signed-gradient step up the contrastive loss, in "
                               "[0, 1], weights untouched")


# ---------------------------------------------------------------- CLAE's objective

class _Branches:
    """A dual-BN encoder with its clean and adversarial routes, and the attack CLAE
    uses, for one check."""

    def __init__(self, encoder: nn.Module, epsilon: float, temperature: float):
        self.encoder = encoder
        self.loss = _contrastive_loss(temperature)
        self.epsilon = epsilon

    def encode(self, x):
        return self.encoder(x)

    def encode_adversarial(self, x):
        with adversarial_batchnorm(self.encoder):
            return self.encoder(x)

    def attack(self, encode, x):
        return contrastive_attack(encode, x, self.epsilon, self.loss)

    def statistics(self, branch: str) -> list[torch.Tensor]:
        return [value.clone() for key, value in self.encoder.state_dict().items()
                if f".{branch}.running_" in key]


def _clae_variant(encoder, views, epsilon, temperature, alpha, *, joint=True, attacked=0,
                  attack_route="adversarial", embed_route="adversarial", clean_route="clean",
                  attack=True):
    """CLAE's objective on a copy of `encoder`, with switches that reproduce the usual mistakes; the
    defaults are the right objective. Returns (z1, z2, z_adv, the copy's branches)."""
    b = _Branches(copy.deepcopy(encoder), epsilon, temperature)
    routes = {"clean": b.encode, "adversarial": b.encode_adversarial}
    view1, view2 = views
    if joint:
        z1, z2 = routes[clean_route](torch.cat([view1, view2])).chunk(2)
    else:
        z1, z2 = routes[clean_route](view1), routes[clean_route](view2)
    attacked_view = views[attacked]
    x_adv = b.attack(routes[attack_route], attacked_view) if attack else attacked_view
    return z1, z2, routes[embed_route](x_adv), b


def _unpack(result) -> tuple[torch.Tensor, ...]:
    if not isinstance(result, (tuple, list)) or len(result) != 4:
        raise ExerciseError("clae_objective must return four things: (loss, z1, z2, z_adv), e.g. "
                            f"`return total, z1, z2, z_adv`; got {type(result).__name__}"
                            + (f" of length {len(result)}"
                               if isinstance(result, (tuple, list)) else ""))
    return tuple(as_tensor(value, f"clae_objective's {name}")
                 for value, name in zip(result, ("loss", "z1", "z2", "z_adv")))


@exercise(stands_for=clae_objective)
def check_clae_objective(fn, cases=((5, 0.05, 0.5, 0.7), (4, 0.1, 0.2, 2.0))) -> None:
    """fn(encode, encode_adversarial, attack, loss, view1, view2, alpha) -> (L(z1, z2) + alpha
    L(z1, z_adv), z1, z2, z_adv), z1 and z2 from one clean pass, z_adv from the attacked view1
    through the adversarial branch."""
    for seed, (batch_size, epsilon, temperature, alpha) in enumerate(cases):
        encoder, views = _encoder(seed, dual=True), _views(seed, batch_size, count=2)
        context = f"B={batch_size}, alpha={alpha}"
        variant = lambda **wrong: _clae_variant(encoder, views, epsilon, temperature, alpha,
                                                **wrong)
        student_branches = _Branches(copy.deepcopy(encoder), epsilon, temperature)
        result = call_student(fn, student_branches.encode, student_branches.encode_adversarial,
                              student_branches.attack, student_branches.loss, views[0].clone(),
                              views[1].clone(), alpha, name="clae_objective")
        loss, z1, z2, z_adv = _unpack(result)

        reference_branches = _Branches(copy.deepcopy(encoder), epsilon, temperature)
        reference = clae_objective(reference_branches.encode, reference_branches.encode_adversarial,
                                   reference_branches.attack, reference_branches.loss, *views,
                                   alpha)

        separate = variant(joint=False)
        diagnose("clae_objective's z1", z1, reference.z1, {
            "Embed both views in ONE clean pass, encode(torch.cat([view1, view2])), "
            "then split it with .chunk(2): batch-norm then normalises the 2B views "
            "together, as in SimCLR.": separate[0],
            "The clean views go through encode, the clean batch-norm branch; encode_adversarial "
            "is for the adversarial view (and the attack).": variant(clean_route="adversarial")[0],
            "z1 is the embedding of view1 (the first half of the clean pass), z2 that of view2.":
                reference.z2,
        }, context)
        diagnose("clae_objective's z2", z2, reference.z2,
                 {"z2 is the embedding of view2.": reference.z1}, context)
        diagnose("clae_objective's z_adv", z_adv, reference.z_adv, {
            "Attack view1 (x_i), the anchor's own crop: the adversarial "
            "view is a perturbed copy of the view that z1 embeds, so that "
            "it is a hard positive for z1.": variant(attacked=1)[2],
            "Run the attack through encode_adversarial: "
            "attack(encode_adversarial, view1). Adversarial inputs have their own "
            "batch-norm statistics.": variant(attack_route="clean")[2],
            "Embed the adversarial view with encode_adversarial (the adversarial "
            "batch-norm branch), not encode.":
                variant(embed_route="clean")[2],
            "Perturb the view before embedding it: x_adv = attack(encode_adversarial, view1).":
                variant(attack=False)[2],
        }, context)

        term = reference_branches.loss
        r1, r2, radv = (t.detach() for t in reference[1:])
        diagnose("clae_objective's loss", loss.detach(), reference.loss.detach(), {
            "The adversarial term compares z_adv with z1, the embedding of the view it was made "
            "from: L(z1, z2) + alpha * L(z1, z_adv).": term(r1, r2) + alpha * term(r2, radv),
            "alpha weighs the adversarial term: L(z1, z2) + alpha * L(z1, z_adv).":
                alpha * term(r1, r2) + term(r1, radv),
            "Weigh the adversarial term by alpha: L(z1, z2) + alpha * L(z1, z_adv).":
                term(r1, r2) + term(r1, radv),
            "Keep the clean term: CLAE adds the adversarial term to the loss, "
            "L(z1, z2) + alpha * L(z1, z_adv).":
                alpha * term(r1, radv),
        }, context)
        if not loss.requires_grad:
            raise ExerciseError("clae_objective returns the right loss but no gradient flows: "
                                "don't detach the embeddings or the loss.")
        for branch in ("clean", "adversarial"):
            if not all(same(a, b) for a, b in zip(student_branches.statistics(branch),
                                                  reference_branches.statistics(branch))):
                raise ExerciseError(
                    f"clae_objective gives the right numbers but the {branch} batch-norm "
                    "branch saw other passes than it should: one clean pass of the 2B "
                    "views; through the adversarial branch, the attack's pass and the "
                    "adversarial view's, nothing more.")
        loss.backward()
        reference.loss.backward()
        gradients = [(name, parameter.grad, expected.grad) for (name, parameter), expected
                     in zip(student_branches.encoder.named_parameters(),
                            reference_branches.encoder.parameters())]
        if any(".adversarial." in name and grad is None for name, grad, _ in gradients):
            raise ExerciseError("clae_objective has the right value but no gradient reaches the "
                                "adversarial branch: z_adv is detached, and the adversarial term "
                                "must train the encoder through it too.")
        if not all(grad is not None and same(grad, expected) for _, grad, expected in gradients):
            raise ExerciseError("clae_objective has the right value but the wrong gradient: is "
                                "z1 or z2 detached somewhere?")
    passed("clae_objective", "clean pass of both views, attack and adversarial view through the "
                             "adversarial branch, L(z1, z2) + alpha L(z1, z_adv); value, "
                             "gradient and BN statistics match")
