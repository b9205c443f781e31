"""The checkers of notebook 06 (CACR) accept correct solutions, agree with
clcourse.losses.cacr_terms, name each known mistake and report a bare stub as unfinished."""
import math

import pytest
import torch
from helpers import fails_with

from clcourse.checks import (
    check_attraction_term,
    check_attraction_weights,
    check_equivalent_temperature_and_beta,
    check_repulsion_term,
    check_repulsion_weights,
)
from clcourse.checks.cacr import (
    attraction_term_variant,
    attraction_weights_variant,
    equivalent_temperature_and_beta_variant,
    repulsion_term_variant,
    repulsion_weights_variant,
    unit_views,
)
from clcourse.losses import cacr_terms

# ---------------------------------------------------------------- solutions a student might write

def loop_attraction_weights(z, tau_pos):
    """One query view at a time, the distances written out."""
    num_views, batch = z.shape[:2]
    weights = torch.zeros(batch, num_views, num_views, dtype=z.dtype)
    for a in range(num_views):
        others = [b for b in range(num_views) if b != a]
        d2 = torch.stack([((z[a] - z[b]) ** 2).sum(dim=1) for b in others], dim=1)      # [B, M]
        weights[:, a, others] = torch.softmax(tau_pos * d2, dim=1)
    return weights


def vector_repulsion_weights(za, zb, tau_neg):
    d2 = torch.cdist(za, zb) ** 2
    same_image = torch.eye(len(za), dtype=torch.bool)
    return torch.softmax(-tau_neg * d2.masked_fill(same_image, float("inf")), dim=1)


def attraction_term(z, tau_pos, alpha):
    per_image = z.transpose(0, 1)
    d2 = ((per_image[:, :, None] - per_image[:, None, :]) ** 2).sum(-1)
    return alpha * (loop_attraction_weights(z, tau_pos) * d2).sum(dim=2).mean()


def repulsion_term(z, tau_neg, beta):
    terms = [(vector_repulsion_weights(z[a], z[b], tau_neg) * torch.cdist(z[a], z[b]) ** 2)
             .sum(dim=1).mean()
             for a in range(len(z)) for b in range(a + 1, len(z))]
    return -beta * torch.stack(terms).mean()


def test_correct_solutions_pass(capsys):
    check_attraction_weights(loop_attraction_weights)
    check_attraction_weights(lambda z, tau: cacr_terms(z, tau_pos=tau).attraction_weights)
    check_repulsion_weights(vector_repulsion_weights)
    check_repulsion_weights(
        lambda za, zb, tau: cacr_terms([za, zb], tau_neg=tau).repulsion_weights[0])
    check_attraction_term(attraction_term)
    check_attraction_term(lambda z, tau, alpha: cacr_terms(z, tau_pos=tau, alpha=alpha).attraction)
    check_repulsion_term(repulsion_term)
    check_repulsion_term(lambda z, tau, beta: cacr_terms(z, tau_neg=tau, beta=beta).repulsion)
    assert capsys.readouterr().out.count("✓") == 8


@pytest.mark.parametrize("detach", [False, True])
def test_checker_references_are_the_package_terms(detach):
    x, z = unit_views(0, 4, 6, 5)
    terms = cacr_terms(x, 1.3, 0.7, 0.5, 2.0, detach_weights=detach)
    assert torch.allclose(attraction_weights_variant(z, 1.3), terms.attraction_weights.double(),
                          atol=1e-6)
    for pair, (a, b) in enumerate(terms.view_pairs.tolist()):
        assert torch.allclose(repulsion_weights_variant(z[a], z[b], 0.7),
                              terms.repulsion_weights[pair].double(), atol=1e-6)
    weights = "detached" if detach else "conditional"
    for ours, package in ((attraction_term_variant(z, 1.3, 0.5, weights=weights), terms.attraction),
                          (repulsion_term_variant(z, 0.7, 2.0, weights=weights), terms.repulsion)):
        assert torch.allclose(ours, package.double(), atol=1e-6)
        ours_grad, = torch.autograd.grad(ours, x, retain_graph=True)
        package_grad, = torch.autograd.grad(package, x, retain_graph=True)
        assert torch.allclose(ours_grad, package_grad.double(), atol=1e-5)


# ---------------------------------------------------------------- mistakes

@pytest.mark.parametrize("wrong, hint", [
    (dict(sign=-1.0), "FARTHEST positives"),
    (dict(mask="none"), "Leave the query view out"),
    (dict(mask="after"), "not after"),
    (dict(dim=1), "Normalise over the positives b"),
    (dict(cost="s"), "not the cosine similarity"),
    (dict(cost="d"), "not the distance d"),
    (dict(temperature="divide"), "not a temperature that divides"),
    (dict(temperature="none"), "looks like κ⁺ = 1"),
])
def test_attraction_weight_mistakes_are_named(wrong, hint):
    fails_with(check_attraction_weights, lambda z, tau: attraction_weights_variant(z, tau, **wrong),
               hint)


def test_attraction_weights_in_another_layout_are_named():
    fails_with(check_attraction_weights,
               lambda z, tau: attraction_weights_variant(z, tau).transpose(0, 1),
               r"image first: \[B, V, V\]")


@pytest.mark.parametrize("wrong, hint", [
    (dict(sign=1.0), "NEAREST negatives"),
    (dict(mask="none"), "its positive"),
    (dict(mask="after"), "not after"),
    (dict(dim=0), "Normalise over the negatives j"),
    (dict(pairing="zb,za"), "zb's rows as the queries"),
    (dict(pairing="za,za"), "OTHER view"),
    (dict(cost="s"), "not the cosine similarity"),
    (dict(cost="d"), "not the distance d"),
    (dict(temperature="divide"), "not a temperature that divides"),
    (dict(temperature="none"), "looks like κ⁻ = 1"),
])
def test_repulsion_weight_mistakes_are_named(wrong, hint):
    fails_with(check_repulsion_weights,
               lambda za, zb, tau: repulsion_weights_variant(za, zb, tau, **wrong), hint)


def test_repulsion_weights_without_the_diagonal_column_are_named():
    def dropped(za, zb, tau):
        w = vector_repulsion_weights(za, zb, tau)
        return w[~torch.eye(len(za), dtype=torch.bool)].view(len(za), -1)
    fails_with(check_repulsion_weights, dropped, r"\[B, B − 1\]")


@pytest.mark.parametrize("wrong, hint", [
    (dict(weights="uniform"), "plain mean over the positives"),
    (dict(weights="detached"), "gradient of detached weights"),
    (dict(use_alpha=False), "Multiply by γ⁺"),
    (dict(sign=-1.0), "cost to minimise"),
    (dict(cost="s"), "not the cosine similarity"),
    (dict(cost="d"), "not the distance d"),
    (dict(reduce_positives="mean"), "Sum over the positives b"),
    (dict(reduce_views="sum"), "Average over the query views"),
    (dict(reduce_images="sum"), "Average over the images"),
])
def test_attraction_term_mistakes_are_named(wrong, hint):
    fails_with(check_attraction_term,
               lambda z, tau, alpha: attraction_term_variant(z, tau, alpha, **wrong), hint)


@pytest.mark.parametrize("wrong, hint", [
    (dict(sign=1.0), "minus sign"),
    (dict(weights="uniform"), "plain mean over the negatives"),
    (dict(weights="detached"), "gradient of detached weights"),
    (dict(use_beta=False), "Multiply by γ⁻"),
    (dict(pairs="a!=b"), "all ordered pairs"),
    (dict(pairs="a<=b"), "paired with itself"),
    (dict(pairs="first"), r"the pair \(0, 1\) only"),
    (dict(pairs="consecutive"), "not only neighbours"),
    (dict(reduce_pairs="sum"), "Average over the V"),
    (dict(cost="s"), "not the cosine similarity"),
    (dict(cost="d"), "not the distance d"),
    (dict(reduce_negatives="mean"), "Sum over the negatives j"),
    (dict(reduce_images="sum"), "Average over the images"),
])
def test_repulsion_term_mistakes_are_named(wrong, hint):
    fails_with(check_repulsion_term,
               lambda z, tau, beta: repulsion_term_variant(z, tau, beta, **wrong), hint)


def test_other_errors_say_what_is_wrong():
    fails_with(check_attraction_term,
               lambda z, tau, alpha: attraction_term_variant(z, tau, alpha).detach(),
               "no gradient flows")
    fails_with(check_repulsion_term, lambda z, tau, beta: torch.zeros(3, dtype=z.dtype),
               "must return a scalar")
    fails_with(check_repulsion_term,
               lambda z, tau, beta: repulsion_term_variant(z, tau, beta) * 1.5,
               "does not match the reference")
    fails_with(check_attraction_weights, lambda z, tau: [1.0], "must return a torch.Tensor")

    def wrong_gradient(z, tau, alpha):     # the right value, a gradient scaled by 2
        value = attraction_term_variant(z, tau, alpha)
        return 2 * value - value.detach()
    fails_with(check_attraction_term, wrong_gradient, "the wrong gradient")


def test_unimplemented_exercises_say_so():
    def todo(*args):
        raise NotImplementedError
    for check in (check_attraction_weights, check_repulsion_weights, check_attraction_term,
                  check_repulsion_term, check_equivalent_temperature_and_beta):
        fails_with(check, todo, "not implemented yet")


# --------------------------------------------------------------- CACR's push as InfoNCE's and HCL's

def test_equivalent_temperature_and_beta_passes_and_is_the_losses_identity(capsys):
    check_equivalent_temperature_and_beta(lambda tau_neg, t: (1 / (2 * tau_neg), 2 * tau_neg * t))
    check_equivalent_temperature_and_beta(
        lambda tau_neg, t: (torch.tensor(0.5 / tau_neg), tau_neg * t * 2))
    assert capsys.readouterr().out.count("✓") == 2
    # the identity the checker relies on: CACR's repulsion weights (clcourse.losses) are InfoNCE's
    # softmax at tau = 1/(2 kappa-) and HCL's importance weights exp(beta s / t) at beta =
    # 2 kappa- t, over the negatives
    tau_neg, t = 0.9, 0.5
    temperature, beta = equivalent_temperature_and_beta_variant(tau_neg, t)
    assert math.isclose(temperature, 1 / 1.8) and math.isclose(beta, 0.9)
    _, z = unit_views(0, 2, 6, 5)
    za, zb = z[0].detach(), z[1].detach()
    cacr_weights = cacr_terms([za, zb], tau_neg=tau_neg).repulsion_weights[0]
    similarity = za @ zb.T
    off = ~torch.eye(6, dtype=torch.bool)
    push = torch.softmax(similarity / temperature, dim=1).masked_fill(~off, 0)
    importance = (beta * similarity / t).exp().masked_fill(~off, 0)
    assert torch.allclose(cacr_weights, (push / push.sum(1, keepdim=True)).to(cacr_weights.dtype),
                          atol=1e-6)
    assert torch.allclose(cacr_weights,
                          (importance / importance.sum(1, keepdim=True)).to(cacr_weights.dtype),
                          atol=1e-6)


@pytest.mark.parametrize("wrong, hint", [
    (lambda k, t: (1 / k, k * t), "Mind the 2 of d²"),
    (lambda k, t: (2 * k, 2 * k * t), "A temperature divides the cosine"),
    (lambda k, t: (1 / (2 * k), 2 * k / t), "don't divide"),
    (lambda k, t: (1 / (2 * k), 2 * k), "use HCL's temperature"),
    (lambda k, t: (1 / (2 * k), k * t), "Mind the 2 of d²"),
    (lambda k, t: (0.5, 1.0), "not CACR's repulsion weights"),
    (lambda k, t: (-1 / (2 * k), 2 * k * t), "a temperature is positive"),
    (lambda k, t: 1 / (2 * k), "must return two numbers"),
    (lambda k, t: (1 / (2 * k), "beta"), "must return two numbers"),
])
def test_equivalent_temperature_and_beta_mistakes_are_named(wrong, hint):
    fails_with(check_equivalent_temperature_and_beta, wrong, hint)
