"""The checkers accept correct solutions and name the mistake in wrong ones."""
import pytest
import torch
import torch.nn.functional as F

from clcourse.checks import ExerciseError, check_info_nce, check_positive_mask, check_similarity_matrix


def similarity_matrix(z):
    z = F.normalize(z, dim=1)
    return z @ z.T


def positive_mask(batch_size):
    index = torch.arange(2 * batch_size)
    return (index[:, None] - index[None, :]).abs() == batch_size


def make_info_nce(normalise=True, mask_self=True, temperature_power=1, multiply=False, detach_z2=False,
                  reduce="mean", drop_positive=False, one_direction=False):
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


def test_correct_solutions_pass(capsys):
    check_similarity_matrix(similarity_matrix)
    check_positive_mask(positive_mask)
    check_info_nce(make_info_nce())
    assert capsys.readouterr().out.count("✓") == 3


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


def test_similarity_matrix_mistakes_are_named():
    with pytest.raises(ExerciseError, match="unit length"):
        check_similarity_matrix(lambda z: z @ z.T)
    with pytest.raises(ExerciseError, match="columns"):
        check_similarity_matrix(lambda z: F.normalize(z, dim=0) @ F.normalize(z, dim=0).T)
    with pytest.raises(ExerciseError, match="shape"):
        check_similarity_matrix(lambda z: F.normalize(z, dim=1).T @ F.normalize(z, dim=1))


def test_positive_mask_mistakes_are_named():
    with pytest.raises(ExerciseError, match="diagonal"):
        check_positive_mask(lambda b: positive_mask(b) | torch.eye(2 * b, dtype=torch.bool))
    with pytest.raises(ExerciseError, match="one direction"):
        check_positive_mask(lambda b: positive_mask(b).triu())
    with pytest.raises(ExerciseError, match="shape"):
        check_positive_mask(lambda b: torch.eye(b, dtype=torch.bool))


def test_unimplemented_exercise_says_so():
    def stub(z1, z2, temperature):
        raise NotImplementedError
    with pytest.raises(ExerciseError, match="not implemented"):
        check_info_nce(stub)
