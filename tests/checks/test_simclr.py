"""The checkers accept correct solutions and name the mistake in wrong ones."""
import pytest
import torch
import torch.nn.functional as F

from clcourse.checks import (
    ExerciseError,
    check_alignment,
    check_info_nce,
    check_positive_mask,
    check_uniformity,
)


def positive_mask(batch_size):
    index = torch.arange(2 * batch_size)
    return (index[:, None] - index[None, :]).abs() == batch_size


def make_info_nce(normalise=True, mask_self=True, temperature_power=1, multiply=False,
                  detach_z2=False, reduce="mean", drop_positive=False, one_direction=False):
    def info_nce(z1, z2, temperature):
        if detach_z2:
            z2 = z2.detach()
        z = torch.cat([z1, z2])
        if normalise:
            z = F.normalize(z, dim=1)
        t = temperature ** temperature_power
        logits = z @ z.T * t if multiply else z @ z.T / t
        n = z1.shape[0]
        if mask_self:
            logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
        positives = positive_mask(n)
        positive_logit = logits[positives]
        if drop_positive:
            logits = logits.masked_fill(positives, float("-inf"))
        per_anchor = torch.logsumexp(logits, dim=1) - positive_logit
        if one_direction:
            per_anchor = per_anchor[:n]
        return per_anchor.sum() if reduce == "sum" else per_anchor.mean()
    return info_nce


def cross_view_info_nce(both_directions):
    def info_nce_loss(z1, z2, temperature):
        u1, u2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        targets = torch.arange(z1.shape[0])
        one_way = F.cross_entropy(u1 @ u2.T / temperature, targets)
        if not both_directions:
            return one_way
        return (one_way + F.cross_entropy(u2 @ u1.T / temperature, targets)) / 2
    return info_nce_loss


@pytest.mark.parametrize("both_directions, hint", [
    (False, "anchors are the first view only"), (True, "own side are negatives too")])
def test_info_nce_with_cross_view_negatives_only_is_diagnosed(both_directions, hint):
    with pytest.raises(ExerciseError, match=hint):
        check_info_nce(cross_view_info_nce(both_directions))


def test_messages_name_the_students_function(capsys):
    def info_nce_loss(z1, z2, temperature):
        return make_info_nce(reduce="sum")(z1, z2, temperature)

    with pytest.raises(ExerciseError) as raised:
        check_info_nce(info_nce_loss)
    assert str(raised.value).startswith("info_nce_loss (B=4, D=8, temperature=0.5) is not right")

    def uniformity_loss_of_mine(z, t):
        return make_uniformity()(z, t)

    check_uniformity(uniformity_loss_of_mine)
    assert capsys.readouterr().out.startswith("✓ uniformity_loss_of_mine: ")


def test_a_lambda_is_called_by_the_exercises_name():
    with pytest.raises(ExerciseError, match=r"^info_nce \(B=4"):
        check_info_nce(lambda z1, z2, t: make_info_nce(reduce="sum")(z1, z2, t))


def test_correct_solutions_pass(capsys):
    check_positive_mask(positive_mask)
    check_info_nce(make_info_nce())
    check_alignment(make_alignment())
    check_alignment(
        lambda z1, z2: (2 - 2 * (F.normalize(z1, dim=1) * F.normalize(z2, dim=1)).sum(1)).mean())
    check_uniformity(make_uniformity())
    check_uniformity(
        lambda z, t: torch.pdist(F.normalize(z, dim=1)).pow(2).mul(-t).exp().mean().log())
    assert capsys.readouterr().out.count("✓") == 6


@pytest.mark.parametrize("wrong, hint", [
    (dict(normalise=False), "unit length"),
    (dict(mask_self=False), "itself"),
    (dict(multiply=True), "don't multiply"),
    (dict(temperature_power=2), "twice"),
    (dict(drop_positive=True), "positive AND the negatives"),
    (dict(reduce="sum"), "not a sum"),
    (dict(one_direction=True), "all 2B views"),
    (dict(detach_z2=True), "gradient"),
])
def test_info_nce_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        check_info_nce(make_info_nce(**wrong))


def test_positive_mask_mistakes_are_named():
    with pytest.raises(ExerciseError, match="diagonal"):
        check_positive_mask(lambda b: positive_mask(b) | torch.eye(2 * b, dtype=torch.bool))
    with pytest.raises(ExerciseError, match="one direction"):
        check_positive_mask(lambda b: positive_mask(b).triu())
    with pytest.raises(ExerciseError, match="shape"):
        check_positive_mask(lambda b: torch.eye(b, dtype=torch.bool))


def test_unimplemented_exercises_say_so():
    def stub(*args):
        raise NotImplementedError
    for check in (check_positive_mask, check_info_nce, check_alignment, check_uniformity):
        with pytest.raises(ExerciseError, match="not implemented"):
            check(stub)


# ---------------------------------------------------------------- alignment and uniformity

def make_alignment(mistake=None):
    def alignment_loss(z1, z2):
        if mistake == "no_normalise":
            u1, u2 = z1, z2
        else:
            dim = 0 if mistake == "columns" else 1
            u1, u2 = F.normalize(z1, dim=dim), F.normalize(z2, dim=dim)
        distance = (u1 - u2).norm(dim=1)
        if mistake == "not_squared":
            return distance.mean()
        if mistake == "one_minus_cosine":
            return (1 - (u1 * u2).sum(1)).mean()
        if mistake == "cosine":
            return (u1 * u2).sum(1).mean()
        if mistake == "sum":
            return distance.pow(2).sum()
        if mistake == "mean_difference":
            return (u1 - u2).mean(0).pow(2).sum()
        if mistake == "per_pair":
            return distance.pow(2)
        if mistake == "detached":
            return distance.pow(2).mean().detach()
        return distance.pow(2).mean()
    return alignment_loss


def loop_uniformity(z, t):
    """Obviously correct: every ordered pair i != j, one at a time."""
    u = F.normalize(z, dim=1)
    kernel = [torch.exp(-t * (u[i] - u[j]).pow(2).sum()) for i in range(len(u))
              for j in range(len(u)) if i != j]
    return torch.log(torch.stack(kernel).mean())


def make_uniformity(mistake=None):
    def uniformity_loss(z, t):
        u = z if mistake == "no_normalise" else F.normalize(z, dim=1)
        t = 2.0 if mistake == "fixed_t" else t
        distance = torch.cdist(u, u)
        squared = distance if mistake == "not_squared" else distance.pow(2)
        n = len(u)
        pairs = squared.flatten() if mistake == \
            "with_self" else squared[~torch.eye(n, dtype=torch.bool)]
        if mistake == "mean_of_log":
            return (-t * pairs).mean()
        kernel = torch.exp(-t * pairs)
        return torch.log(kernel.sum() if mistake == "sum" else kernel.mean())
    return uniformity_loss


def test_checker_references_match_loops():
    generator = torch.Generator().manual_seed(0)
    z1, z2 = (torch.randn(6, 4, generator=generator, dtype=torch.float64),
              torch.randn(6, 4, generator=generator, dtype=torch.float64))
    for t in (2.0, 0.5):
        assert make_uniformity()(z1, t).item() == pytest.approx(loop_uniformity(z1, t).item(),
                                                                abs=1e-10)
    u1, u2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    expected = sum((u1[i] - u2[i]).pow(2).sum() for i in range(6)) / 6
    assert make_alignment()(z1, z2).item() == pytest.approx(expected.item(), abs=1e-10)


@pytest.mark.parametrize("mistake, hint", [
    ("no_normalise", "unit length"),
    ("columns", "not each column"),
    ("not_squared", "Square the distance"),
    ("one_minus_cosine", "half of it"),
    ("cosine", "mean cosine similarity"),
    ("sum", "not a sum"),
    ("mean_difference", "squared length of the mean difference"),
    ("per_pair", "one value per pair"),
    ("detached", "no gradient"),
])
def test_alignment_mistakes_are_named(mistake, hint):
    with pytest.raises(ExerciseError, match=hint):
        check_alignment(make_alignment(mistake))


@pytest.mark.parametrize("mistake, hint", [
    ("with_self", "pairs of a point with itself"),
    ("no_normalise", "unit length"),
    ("not_squared", "squared distance"),
    ("mean_of_log", "mean of the log"),
    ("sum", "not a sum"),
    ("fixed_t", "Use the t you are given"),
])
def test_uniformity_mistakes_are_named(mistake, hint):
    with pytest.raises(ExerciseError, match=hint):
        check_uniformity(make_uniformity(mistake))
