"""The checkers of notebook 07 (SCE) accept correct solutions, report a bare stub as unfinished, and
name each known mistake, written here as a student would write it."""
import pytest
import torch
import torch.nn.functional as F
from helpers import fails_with

from clcourse.checks import check_sce_loss, check_soft_target
from clcourse.checks.sce import soft_target_variant
from clcourse.losses import sce_target

# ---------------------------------------------------------------- the soft target

def make_soft_target(mistake=None):
    def soft_target(k, queue, temperature_momentum, lam, queue_mask=None):
        if mistake == "gradient":
            scores = k @ queue.T / temperature_momentum
        else:
            scores = (k @ queue.T).detach() / temperature_momentum
        if mistake == "no_temperature":
            scores = (k @ queue.T).detach()
        if mistake == "times_temperature":
            scores = (k @ queue.T).detach() * temperature_momentum
        if queue_mask is not None and mistake not in ("ignore_mask", "zero_after"):
            mask = ~queue_mask if mistake == "inverted_mask" else queue_mask
            scores = scores.masked_fill(mask, float("-inf"))
        if mistake in ("self_zero", "self_similarity"):
            own = 0.0 if mistake == "self_zero" else 1.0 / temperature_momentum
            scores = torch.cat([torch.full_like(scores[:, :1], own), scores], dim=1)
            relation = (1 - lam) * torch.softmax(scores, dim=1)
            relation[:, 0] += lam
            return relation
        relation = torch.softmax(scores, dim=0 if mistake == "dim0" else 1)
        if mistake == "zero_after" and queue_mask is not None:
            relation = relation * ~queue_mask
        if mistake == "no_queue_part":
            return (1 - lam) * relation
        positive, rest = (1 - lam, lam) if mistake == "swap" else (lam, 1 - lam)
        if mistake == "no_one_minus":
            rest = 1.0
        return torch.cat([torch.full((len(k), 1), positive, dtype=k.dtype), rest * relation], dim=1)
    return soft_target


@pytest.mark.parametrize("mistake, hint", [
    ("self_zero", r"logit 0 .* authors' code \(CEA-LIST/SCE and eztorch\)"),
    ("self_similarity", "key itself is in the relation"),
    ("no_temperature", "Divide the similarities k · n by τm"),
    ("times_temperature", "don't multiply"),
    ("swap", "not the other way round"),
    ("no_one_minus", "Scale the queue's softmax by 1 − λ"),
    ("dim0", "not over the batch"),
    ("ignore_mask", "must get weight 0"),
    ("zero_after", "−inf before the softmax"),
    ("inverted_mask", "not where it is kept"),
    ("gradient", "carries a gradient"),
    ("no_queue_part", r"shape \(4, 10\).*\[B, 1 \+ K\]"),
])
def test_soft_target_mistakes_are_named(mistake, hint):
    fails_with(check_soft_target, make_soft_target(mistake), hint)


def test_the_variant_with_no_switch_is_the_package_target():
    generator = torch.Generator().manual_seed(0)
    k, queue = (F.normalize(torch.randn(n, 6, generator=generator, dtype=torch.float64), dim=1)
                for n in (3, 9))
    mask = torch.rand(3, 9, generator=generator) < 0.3
    for lam in (0.0, 0.4, 1.0):
        assert torch.allclose(soft_target_variant(k, queue, 0.1, lam, mask),
                              sce_target(k, queue, 0.1, lam, mask).double(), atol=1e-6)


# ---------------------------------------------------------------- the loss

def make_sce_loss(mistake=None):
    def sce_loss(q, k, queue, temperature, temperature_momentum, lam, queue_mask=None):
        tau, tau_m = ((temperature_momentum, temperature) if mistake == "swap_temperatures"
                      else (temperature, temperature_momentum))
        if mistake == "no_temperature":
            tau = 1.0
        keys = k if mistake == "gradient_into_k" else k.detach()
        logits = torch.cat([(q * keys).sum(1, keepdim=True), q @ queue.detach().T], dim=1) / tau
        mask = None if mistake == "ignore_mask" else queue_mask
        if mask is not None and mistake != "mask_target_only":
            logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(mask, float("-inf"))],
                               dim=1)
        if mistake == "one_hot":
            return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))
        target = make_soft_target()(q if mistake == "target_from_q" else k, queue, tau_m, lam, mask)
        if mistake == "no_log_softmax":
            return -(target * logits.masked_fill(target == 0, 0)).sum(1).mean()
        log_p = torch.log_softmax(logits, dim=1)
        if mistake != "nan":
            log_p = log_p.masked_fill(target == 0, 0)
        per_query = -(target * log_p).sum(1)
        if mistake == "kl":
            per_query = per_query + torch.special.xlogy(target, target).sum(1)
        if mistake == "sign":
            per_query = -per_query
        if mistake == "normalised_q":     # harmless: q is a unit vector already
            per_query = per_query + 0 * q.norm(dim=1)
        return per_query.sum() if mistake == "sum" else per_query.mean()
    return sce_loss


@pytest.mark.parametrize("mistake, hint", [
    ("one_hot", "MoCo's InfoNCE"),
    ("no_temperature", "Divide the logits .* by the temperature τ"),
    ("swap_temperatures", "temperatures are swapped"),
    ("target_from_q", "target comes from the key k"),
    ("no_log_softmax", "Take log_softmax"),
    ("sum", "not a sum"),
    ("kl", "KL divergence"),
    ("sign", "sign backwards"),
    ("ignore_mask", "Pass queue_mask on"),
    ("mask_target_only", "leave the prediction too"),
    ("nan", "returned NaN.*0 · \\(−inf\\)"),
    ("gradient_into_k", "Gradient flows into k"),
])
def test_sce_loss_mistakes_are_named(mistake, hint):
    fails_with(check_sce_loss, make_sce_loss(mistake), hint)


def test_correct_solutions_pass(capsys):
    check_soft_target(make_soft_target())
    check_sce_loss(make_sce_loss())
    check_sce_loss(make_sce_loss("normalised_q"))
    assert capsys.readouterr().out.count("✓") == 3


def test_a_detached_loss_is_told_that_no_gradient_flows():
    def detached(*args):
        return make_sce_loss()(*args).detach()
    fails_with(check_sce_loss, detached, "no gradient flows into q")


@pytest.mark.parametrize("check", [check_soft_target, check_sce_loss])
def test_unimplemented_exercises_say_so(check):
    def stub(*args):
        raise NotImplementedError()
    fails_with(check, stub, "not implemented yet")
