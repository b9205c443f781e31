"""Notebook 08's checkers accept correct solutions, name each usual mistake, and
report a bare stub as unfinished."""
import pytest
import torch
import torch.nn.functional as F

from clcourse.checks import (
    ExerciseError,
    check_pgd_step,
    check_supcon,
    check_threat_model_1_objective,
)
from clcourse.losses import info_nce


def pgd_step(x_adv, x, gradient, epsilon, step_size, *, sign=1.0, signed=True, ball=True, clip=True,
             returns="images", size=None):
    moved = x_adv + sign * (step_size if size is None else epsilon) * (gradient.sign() if signed
                                                                       else gradient)
    if ball:
        moved = x + (moved - x).clamp(-epsilon, epsilon)
    if clip:
        moved = moved.clamp(0, 1)
    return moved - x if returns == "delta" else moved


def pgd_step_clip_first(x_adv, x, gradient, epsilon, step_size):
    moved = (x_adv + step_size * torch.sign(gradient)).clamp(0, 1)
    return torch.min(torch.max(moved, x - epsilon), x + epsilon)


@pytest.mark.parametrize("solution", [pgd_step, pgd_step_clip_first])
def test_correct_pgd_steps_pass(solution, capsys):
    check_pgd_step(solution)
    assert "✓ pgd_step" in capsys.readouterr().out


@pytest.mark.parametrize("mistake, message", [
    (dict(sign=-1.0), r"Step \*up\* the loss"),
    (dict(signed=False), r"\*sign\* of the gradient"),
    (dict(ball=False), "Project back onto the epsilon-ball"),
    (dict(clip=False), "Clip the result to the valid pixels"),
    (dict(returns="delta"), "not the perturbation delta"),
    (dict(size="epsilon"), "size step_size, not epsilon"),
])
def test_pgd_step_mistakes_are_named(mistake, message):
    with pytest.raises(ExerciseError, match=message):
        check_pgd_step(lambda *args: pgd_step(*args, **mistake))


def supcon(z1, z2, labels, temperature, *, form="out", mask_self=True, self_positive=False,
           positives_in_denominator=True, normalise=True, divide=True, average=True, anchors="both",
           by="label"):
    z = torch.cat([z1, z2])
    u = F.normalize(z, dim=1) if normalise else z
    y = torch.cat([labels, labels]) if by == "label" else torch.cat([torch.arange(len(z1))] * 2)
    eye = torch.eye(len(u), dtype=torch.bool)
    positives = (y[:, None] == y[None, :]) & (torch.ones_like(eye) if self_positive else ~eye)
    logits = u @ u.T / (temperature if divide else 1.0)
    excluded = eye if mask_self else torch.zeros_like(eye)
    if not positives_in_denominator:
        excluded = excluded | positives
    log_normaliser = torch.logsumexp(logits.masked_fill(excluded, float("-inf")), 1, keepdim=True)
    if form == "in":
        per_anchor = (-torch.log((torch.exp(logits) * positives).sum(1) / positives.sum(1))
                      + log_normaliser[:, 0])
    else:
        per_anchor = -((logits - log_normaliser) * positives).sum(1)
        if average:
            per_anchor = per_anchor / positives.sum(1)
    return per_anchor[:len(z1)].mean() if anchors == "first" else per_anchor.mean()


def supcon_loop(z1, z2, labels, temperature):
    u = F.normalize(torch.cat([z1, z2]), dim=1)
    y = torch.cat([labels, labels])
    total = 0
    for i in range(len(u)):
        keep = torch.arange(len(u)) != i
        log_prob = u[i] @ u.T / temperature - torch.logsumexp((u[i] @ u[keep].T) / temperature, 0)
        mask = (y == y[i]) & keep
        total = total - log_prob[mask].mean()
    return total / len(u)


@pytest.mark.parametrize("solution", [supcon, supcon_loop])
def test_correct_supcon_passes(solution, capsys):
    check_supcon(solution)
    assert "✓ supcon" in capsys.readouterr().out


@pytest.mark.parametrize("mistake, message", [
    (dict(form="in"), "outside\\* the log"),
    (dict(mask_self=False), "anchor itself out of the denominator"),
    (dict(self_positive=True, mask_self=False), "not its own positive"),
    (dict(positives_in_denominator=False), "Keep the positives in the denominator"),
    (dict(normalise=False), "Normalise the embeddings"),
    (dict(divide=False), "Divide the similarities by the temperature"),
    (dict(average=False), "Average over the number of positives"),
    (dict(anchors="first"), "Use both views as anchors"),
    (dict(by="image"), r"the anchor's \*label\*"),
])
def test_supcon_mistakes_are_named(mistake, message):
    with pytest.raises(ExerciseError, match=message):
        check_supcon(lambda *args: supcon(*args, **mistake))


def objective(encode, x, temperature, *, sign=1.0, anchors_from="x", temperature_used=None,
              moves=True):
    with torch.no_grad():
        anchors = encode(x)
    t = temperature if temperature_used is None else temperature_used

    def loss(x_prime):
        z = encode(x_prime) if moves else anchors
        a = anchors if anchors_from == "x" else z
        return sign * info_nce(a, z, t)
    return loss


def objective_without_no_grad(encode, x, temperature):
    anchors = encode(x).detach()
    return lambda x_prime: info_nce(encode(x_prime), anchors, temperature)


@pytest.mark.parametrize("solution", [objective, objective_without_no_grad])
def test_correct_threat_model_1_objectives_pass(solution, capsys):
    check_threat_model_1_objective(solution)
    assert f"✓ {solution.__name__}: " in capsys.readouterr().out


@pytest.mark.parametrize("mistake, message", [
    (dict(sign=-1.0), "Raise the loss"),
    (dict(anchors_from="x_prime"), "Compare with the clean embeddings"),
    (dict(temperature_used=1.0), "Use the temperature you are given"),
    (dict(moves=False), "must go through the encoder"),
])
def test_threat_model_1_objective_mistakes_are_named(mistake, message):
    with pytest.raises(ExerciseError, match=message):
        check_threat_model_1_objective(lambda *args: objective(*args, **mistake))


def test_an_objective_that_is_not_a_function_is_named():
    with pytest.raises(ExerciseError, match="must return a function x_prime -> loss"):
        check_threat_model_1_objective(lambda encode, x, t: info_nce(encode(x), encode(x), t))


@pytest.mark.parametrize("checker, arity", [(check_pgd_step, 5), (check_supcon, 4),
                                            (check_threat_model_1_objective, 3)])
def test_a_bare_stub_is_reported_as_unfinished(checker, arity):
    def stub(*args):
        assert len(args) == arity
        raise NotImplementedError
    with pytest.raises(ExerciseError, match="not implemented yet"):
        checker(stub)
