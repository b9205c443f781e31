"""Checkers for notebook 08 (robustness of CL, SupCon and supervised learning): a PGD step
with its projection, the SupCon loss, and the objective of threat model I in the course's definition
(the label-free attack on an encoder; at tau = 0.07 it is also the paper's for CL)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attacks import contrastive_objective, input_gradient, project
from ..losses import info_nce, supcon
from ._core import ExerciseError, as_tensor, call_student, diagnose, exercise, passed, seeded

__all__ = ["check_pgd_step", "check_supcon", "check_threat_model_1_objective"]


# ---------------------------------------------------------------- one PGD step

def _pixels(seed: int, batch_size: int) -> torch.Tensor:
    """Images in [0, 1] with a share of pixels at 0 and 1, so that clipping matters."""
    x = torch.rand(batch_size, 3, 4, 4, generator=seeded(seed), dtype=torch.float64)
    return torch.where(x < 0.1, torch.zeros_like(x), torch.where(x > 0.9, torch.ones_like(x), x))


@exercise()
def check_pgd_step(fn, cases=((4, 8 / 255, 2 / 255), (3, 0.05, 0.03), (5, 0.1, 0.02))) -> None:
    """fn(x_adv, x, gradient, epsilon, step_size) -> clip_[0,1](x + clip(x_adv + step_size
    sign(gradient) - x, -epsilon, epsilon)): one step up the loss, projected onto the L-infinity
    ball around the clean x and [0, 1]."""
    for seed, (batch_size, epsilon, step_size) in enumerate(cases):
        x = _pixels(seed, batch_size)
        g = seeded(50 + seed)
        x_adv = project(x + epsilon * (2 * torch.rand(x.shape, generator=g, dtype=x.dtype) - 1), x,
                        epsilon)
        gradient = torch.randn(x.shape, generator=g, dtype=x.dtype)
        gradient[..., 0, 0] = 0.0
        context = f"epsilon={epsilon:.4f}, step_size={step_size}"
        student = as_tensor(call_student(fn, x_adv.clone(), x.clone(), gradient.clone(),
                                         epsilon, step_size, name="pgd_step"), "pgd_step")
        moved = x_adv + step_size * gradient.sign()
        reference = project(moved, x, epsilon)
        diagnose("pgd_step", student.to(reference.dtype), reference, {
            "Step *up* the loss (gradient ascent): x_adv + step_size * sign(gradient), not minus.":
                project(x_adv - step_size * gradient.sign(), x, epsilon),
            "PGD steps along the *sign* of the gradient (the steepest ascent in L-infinity), "
            "not the gradient itself.":
                project(x_adv + step_size * gradient, x, epsilon),
            "Project back onto the epsilon-ball around the clean x: delta = (x_adv_new - "
            "x).clamp(-epsilon, epsilon).": moved.clamp(0, 1),
            "Clip the result to the valid pixels [0, 1] after the projection.":
                x + (moved - x).clamp(-epsilon, epsilon),
            "Return the new images x + delta, not the perturbation delta.": reference - x,
            "The step has size step_size, not epsilon.":
                project(x_adv + epsilon * gradient.sign(), x, epsilon),
        }, context)
    passed("pgd_step", "a signed step up, projected onto the epsilon-ball around x and onto [0, 1]")


# ---------------------------------------------------------------- the SupCon loss

def _supcon_variants(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor,
                     temperature: float) -> dict:
    """What the usual mistakes compute (float64)."""
    u = F.normalize(torch.cat([z1, z2]), dim=1)
    y = torch.cat([labels, labels])
    eye = torch.eye(len(u), dtype=torch.bool)
    positives = (y[:, None] == y[None, :]) & ~eye

    def l_out(similarity, positives=positives, denominator=~eye, rows=slice(None), average=True):
        """-(1/|P(i)|) sum_{p in P(i)} log(exp(s_ip) / sum_{a in denominator(i)}
        exp(s_ia)), mean over rows."""
        log_prob = similarity - torch.logsumexp(similarity.masked_fill(~denominator, float("-inf")),
                                                1, keepdim=True)
        per_anchor = -(log_prob * positives).sum(1)
        if average:
            per_anchor = per_anchor / positives.sum(1)
        return per_anchor[rows].mean()

    logits = u @ u.T / temperature
    raw = torch.cat([z1, z2])
    l_in = -(torch.log((torch.exp(logits) * positives).sum(1) / positives.sum(1))
             - torch.logsumexp(logits.masked_fill(eye, float("-inf")), 1)).mean()
    return {
        "Average over the positives *outside* the log (SupCon's L_out): -(1/|P(i)|) sum_p log "
        "p(p | i). The mean inside the log is L_in, which trains worse.": l_in,
        "Leave the anchor itself out of the denominator: mask the diagonal with -inf "
        "before the log-softmax.":
            l_out(logits, denominator=torch.ones_like(eye)),
        "The anchor is not its own positive: remove the diagonal from the positive mask.":
            l_out(logits, positives=positives | eye, denominator=torch.ones_like(eye)),
        "Keep the positives in the denominator: it runs "
        "over every view but the anchor (as InfoNCE's), not "
        "over the negatives alone.": l_out(logits, denominator=~positives & ~eye),
        "Normalise the embeddings to the unit sphere first (F.normalize(z, dim=1)).":
            l_out(raw @ raw.T / temperature),
        "Divide the similarities by the temperature.": l_out(u @ u.T),
        "Average over the number of positives |P(i)| of each anchor, not sum.":
            l_out(logits, average=False),
        "Use both views as anchors: all 2B rows, with the labels repeated for the second view "
        "(torch.cat([labels, labels])).": l_out(logits, rows=slice(0, len(z1))),
        "Positives are the views with the anchor's *label*, not only the other view of its image.":
            info_nce(z1, z2, temperature),
    }


@exercise(stands_for=supcon)
def check_supcon(fn, cases=((8, 5, 3, 0.1), (6, 4, 2, 0.5), (10, 6, 4, 0.2))) -> None:
    """fn(z1, z2, labels, temperature) -> SupCon's L_out over the 2B anchors
    (clcourse.losses.supcon)."""
    for seed, (batch_size, dim, classes, temperature) in enumerate(cases):
        g = seeded(seed)
        z1 = torch.randn(batch_size, dim, generator=g, dtype=torch.float64)
        z2 = torch.randn(batch_size, dim, generator=g, dtype=torch.float64)
        labels = torch.randint(0, classes, (batch_size,), generator=g)
        labels[:2] = torch.tensor([0, 0])                       # at least one shared class
        context = f"B={batch_size}, {classes} classes, temperature={temperature}"
        student = as_tensor(call_student(fn, z1.clone(), z2.clone(), labels.clone(),
                                         temperature, name="supcon"),
                            "supcon")
        if student.dim() != 0:
            raise ExerciseError(f"supcon ({context}) must return one number (a 0-d tensor): "
                                f"average the anchors' losses, got shape {tuple(student.shape)}.")
        reference = supcon(z1, z2, labels, temperature)
        diagnose("supcon", student.double(), reference.double(),
                 _supcon_variants(z1, z2, labels, temperature), context)
    distinct = torch.arange(6)
    z1, z2 = torch.randn(6, 4, generator=seeded(9)), torch.randn(6, 4, generator=seeded(10))
    student = as_tensor(call_student(fn, z1, z2, distinct, 0.3, name="supcon"), "supcon")
    if not torch.allclose(student.double(), info_nce(z1, z2, 0.3).double(), atol=1e-5):
        raise ExerciseError("supcon with all labels distinct must equal InfoNCE (the other view "
                            "is the only positive).")
    passed("supcon", "L_out over 2B anchors, positives by label, InfoNCE's denominator")


# ---------------------------------------------------------------- threat model I's objective

def _encoder(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, 5)).double().eval()


@exercise(allowed=(info_nce,))
def check_threat_model_1_objective(fn, cases=((6, 0.5), (5, 0.2))) -> None:
    """fn(encode, x, temperature) -> a function x' -> InfoNCE_tau(sg[encode(x)], encode(x')): the
    anchors are the clean embeddings, constants; only x' moves."""
    for seed, (batch_size, temperature) in enumerate(cases):
        encoder = _encoder(seed)
        x, x_prime = _pixels(seed, batch_size), _pixels(seed + 20, batch_size)
        context = f"B={batch_size}, temperature={temperature}"
        objective = call_student(fn, encoder, x.clone(), temperature,
                                 name="threat_model_1_objective")
        if not callable(objective):
            raise ExerciseError("threat_model_1_objective must return a function x_prime -> loss "
                                f"(e.g. a lambda or an inner def), got {type(objective).__name__}.")
        value = as_tensor(objective(x_prime.clone()), "the objective")
        if any(p.grad is not None for p in encoder.parameters()):
            raise ExerciseError("the objective left gradients in the encoder's weights: "
                                "compute the anchors under torch.no_grad() and let the attack "
                                "take the input gradient.")
        reference_fn = contrastive_objective(encoder, x, lambda a, z: info_nce(a, z, temperature))
        reference = reference_fn(x_prime)
        with torch.no_grad():
            anchors = encoder(x)
        mistakes = {
            "Raise the loss: the attacker wants the contrastive loss *high* (return "
            "it, not its negative).":
                -reference,
            "Compare with the clean embeddings encode(x), computed once: both "
            "arguments are encode(x_prime) here, so the positives are always "
            "identical.": info_nce(encoder(x_prime), encoder(x_prime), temperature),
            "Use the temperature you are given.": info_nce(anchors, encoder(x_prime), 1.0),
            "The perturbed images x_prime must go through the encoder: the loss "
            "does not move with them.":
                info_nce(anchors, anchors, temperature),
        }
        diagnose("threat_model_1_objective", value.double(), reference.double(), mistakes, context)
        gradient = input_gradient(objective, x_prime)
        reference_gradient = input_gradient(reference_fn, x_prime)
        if not torch.allclose(gradient, reference_gradient, atol=1e-6, rtol=1e-4):
            raise ExerciseError(f"threat_model_1_objective ({context}): the value is right but "
                                "its gradient with respect to x_prime is not: the anchors must "
                                "be constants (computed from x, detached), only "
                                "encode(x_prime) moves.")
    passed("threat_model_1_objective", "InfoNCE between the constant clean embeddings "
                                       "and the perturbed ones")
