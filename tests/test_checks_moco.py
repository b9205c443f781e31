"""The checkers of notebooks 03 (MoCo) and 04 (DCL, HCL, MoCHi) accept correct solutions, agree with the
package's losses, and name each known mistake."""
import math

import pytest
import torch
import torch.nn.functional as F

from clcourse.checks import (ExerciseError, check_dcl, check_enqueue, check_hcl, check_mix_negatives,
                             check_mix_query, check_moco_logits, check_momentum_update)
from clcourse.checks.hard_negatives import _pairs, debiased_loss_variant
from clcourse.losses import dcl, hcl, mochi_mix, moco_info_nce


def fails_with(check, fn, hint):
    with pytest.raises(ExerciseError, match=hint):
        check(fn)


# ---------------------------------------------------------------- enqueue

def make_enqueue(mistake=None):
    def enqueue(queue, pointer, keys):
        size, batch = len(queue), len(keys)
        if mistake == "shift":
            return torch.cat([queue[batch:], keys]), (pointer + batch) % size
        if mistake == "front":
            return torch.cat([keys, queue[:-batch]]), (pointer + batch) % size
        if mistake == "truncate":
            end = min(pointer + batch, size)
            queue[pointer:end] = keys[:end - pointer]
            return queue, (pointer + batch) % size
        if mistake == "slice":
            queue[pointer:pointer + batch] = keys
            return queue, (pointer + batch) % size
        start = 0 if mistake == "ignore_pointer" else pointer
        slots = (start + torch.arange(batch)) % size
        queue[slots] = keys
        new_pointer = {"no_wrap": pointer + batch, "plus_one": (pointer + 1) % size, "stay": pointer}.get(
            mistake, (pointer + batch) % size)
        return queue, torch.tensor(new_pointer) if mistake == "tensor_pointer" else new_pointer
    return enqueue


@pytest.mark.parametrize("mistake, hint", [
    ("shift", "shifting one"),
    ("front", "at the end, not the front"),
    ("ignore_pointer", "starting at the pointer"),
    ("truncate", "continue at row 0"),
    ("slice", "continue at row 0"),
    ("no_wrap", "must wrap around"),
    ("plus_one", "number of keys written"),
    ("stay", "Move the pointer"),
])
def test_enqueue_mistakes_are_named(mistake, hint):
    fails_with(check_enqueue, make_enqueue(mistake), hint)


# ---------------------------------------------------------------- momentum update

def make_momentum_update(mistake=None):
    def momentum_update(key_encoder, query_encoder, momentum):
        pairs = list(zip(key_encoder.parameters(), query_encoder.parameters()))
        if mistake == "no_grad_missing":
            for key, query in pairs:
                key.mul_(momentum).add_(query, alpha=1 - momentum)
            return
        with torch.no_grad():
            for key, query in pairs:
                if mistake == "swapped":
                    key.mul_(1 - momentum).add_(query, alpha=momentum)
                elif mistake == "copy":
                    key.copy_(query)
                elif mistake == "rebind":
                    key = momentum * key + (1 - momentum) * query  # noqa: F841 (the mistake: a new local tensor)
                elif mistake == "query_moves":
                    query.mul_(momentum).add_(key, alpha=1 - momentum)
                else:
                    key.mul_(momentum).add_(query, alpha=1 - momentum)
    return momentum_update


@pytest.mark.parametrize("mistake, hint", [
    ("swapped", "swapped m and 1 - m"),
    ("copy", "copied the query encoder"),
    ("rebind", "did not change"),
    ("query_moves", "changed the query encoder"),
    ("no_grad_missing", "torch.no_grad"),
])
def test_momentum_update_mistakes_are_named(mistake, hint):
    fails_with(check_momentum_update, make_momentum_update(mistake), hint)


def test_momentum_update_through_data_passes():
    def momentum_update(key_encoder, query_encoder, momentum):
        for key, query in zip(key_encoder.parameters(), query_encoder.parameters()):
            key.data = momentum * key.data + (1 - momentum) * query.data
    check_momentum_update(momentum_update)


# ---------------------------------------------------------------- MoCo logits

def make_moco_logits(mistake=None):
    def moco_logits(q, k, queue, temperature):
        if mistake != "no_detach":
            k, queue = k.detach(), queue.detach()
        positive = q @ k.T if mistake == "matrix_positive" else (q * k).sum(dim=1, keepdim=True)
        negatives = q @ queue.T
        if mistake == "no_positive":
            return negatives / temperature
        logits = torch.cat([negatives, positive] if mistake == "positive_last" else [positive, negatives], dim=1)
        if mistake == "no_temperature":
            return logits
        if mistake == "multiply":
            return logits * temperature
        if mistake == "twice":
            return logits / temperature ** 2
        return logits / temperature
    return moco_logits


@pytest.mark.parametrize("mistake, hint", [
    ("positive_last", "column 0"),
    ("no_temperature", "Divide the logits by the temperature"),
    ("multiply", "don't multiply"),
    ("twice", "once, not twice"),
    ("matrix_positive", "one logit per query"),
    ("no_positive", "put the positive"),
    ("no_detach", "k.detach"),
])
def test_moco_logits_mistakes_are_named(mistake, hint):
    fails_with(check_moco_logits, make_moco_logits(mistake), hint)


def test_moco_logits_reference_gives_the_package_loss():
    generator = torch.Generator().manual_seed(0)
    q, k, queue = (F.normalize(torch.randn(n, 8, generator=generator), dim=1) for n in (4, 4, 12))
    logits = make_moco_logits()(q, k, queue, 0.2)
    loss = F.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
    assert torch.allclose(loss, moco_info_nce(q, k, queue, 0.2), atol=1e-6)


# ---------------------------------------------------------------- DCL and HCL

def make_debiased(beta_used, **wrong):
    def loss(z1, z2, temperature, tau_plus, beta=None):
        return debiased_loss_variant(z1, z2, temperature, tau_plus, beta if beta_used else None, **wrong)
    return loss


def dcl_as_in_the_paper(z1, z2, temperature, tau_plus):
    """An independent student solution: exp of cosines, masks, the DCL estimator, written plainly."""
    batch_size = z1.shape[0]
    out = F.normalize(torch.cat([z1, z2]), dim=1)
    neg = torch.exp(out @ out.T / temperature)
    mask = torch.ones_like(neg, dtype=torch.bool)
    for i in range(batch_size):
        mask[i, i] = mask[i, i + batch_size] = mask[i + batch_size, i] = mask[i + batch_size, i + batch_size] = False
    neg = neg.masked_select(mask).view(2 * batch_size, -1)
    pos = torch.exp((F.normalize(z1, dim=1) * F.normalize(z2, dim=1)).sum(-1) / temperature)
    pos = torch.cat([pos, pos])
    n = 2 * batch_size - 2
    ng = (-tau_plus * n * pos + neg.sum(dim=-1)) / (1 - tau_plus)
    ng = torch.clamp(ng, min=n * math.e ** (-1 / temperature))
    return (-torch.log(pos / (pos + ng))).mean()


def test_correct_solutions_pass(capsys):
    check_enqueue(make_enqueue())
    check_enqueue(make_enqueue("tensor_pointer"))
    check_momentum_update(make_momentum_update())
    check_moco_logits(make_moco_logits())
    check_dcl(make_debiased(False))
    check_dcl(dcl_as_in_the_paper)
    check_dcl(dcl)
    check_hcl(make_debiased(True))
    check_hcl(hcl)
    check_mix_negatives(mix_negatives())
    check_mix_query(mix_query())
    assert capsys.readouterr().out.count("✓") == 11


@pytest.mark.parametrize("beta", [None, 0.5, 2.0])
@pytest.mark.parametrize("close", [False, True])
def test_checker_reference_is_the_package_loss(beta, close):
    z1, z2 = _pairs(0, 6, 16, close)
    z1, z2 = z1.requires_grad_(), z2.requires_grad_()
    ours = debiased_loss_variant(z1, z2, 0.3, 0.2, beta)
    package = dcl(z1, z2, 0.3, 0.2) if beta is None else hcl(z1, z2, 0.3, 0.2, beta)
    assert torch.allclose(ours, package.double(), atol=1e-6)
    assert torch.allclose(torch.autograd.grad(ours, z1)[0], torch.autograd.grad(package, z1)[0].double(), atol=1e-5)


@pytest.mark.parametrize("wrong, hint", [
    (dict(normalise=False), "unit length"),
    (dict(use_temperature=False), "by the temperature"),
    (dict(keep_positive=False), "Decoupled"),
    (dict(divide_by_one_minus_tau=False), r"\(1 − τ⁺\)"),
    (dict(n_in_correction=False), "τ⁺ · N · pos"),
    (dict(extra_negatives=1), "2B − 2"),
    (dict(extra_negatives=2), "not 2B"),
    (dict(floor="e^(-1/t)"), "not e"),
    (dict(floor="none"), "NaN"),
    (dict(all_anchors=False), "all 2B anchors"),
    (dict(reduce="sum"), "not a sum"),
])
def test_dcl_mistakes_are_named(wrong, hint):
    fails_with(check_dcl, make_debiased(False, **wrong), hint)


def test_dcl_that_ignores_tau_plus_is_called_infonce():
    def info_nce_instead(z1, z2, temperature, tau_plus):
        return debiased_loss_variant(z1, z2, temperature, 0.0, None)
    fails_with(check_dcl, info_nce_instead, "plain InfoNCE")


@pytest.mark.parametrize("wrong, hint", [
    (dict(weights="exp(s/t)"), "β belongs in the exponent"),
    (dict(weights="exp(beta s)"), r"not exp\(β s\)"),
    (dict(normalise_weights="neg"), "wrong mean"),
    (dict(normalise_weights="none"), "Normalise the importance weights"),
    (dict(normalise_weights="mean"), "a sum over negatives"),
    (dict(detach_weights=True), "does not detach imp"),
    (dict(floor="none"), "[Cc]lamp"),
    (dict(keep_positive=False), "Decoupled"),
])
def test_hcl_mistakes_are_named(wrong, hint):
    fails_with(check_hcl, make_debiased(True, **wrong), hint)


def test_hcl_that_is_dcl_is_named():
    fails_with(check_hcl, lambda z1, z2, t, tau, beta: debiased_loss_variant(z1, z2, t, tau, None), "You return DCL")


# ---------------------------------------------------------------- MoCHi

def mix_negatives(mistake=None):
    def mix(queue, hardest, first, second, alpha):
        if mistake == "query_zero":
            flat = queue[hardest].reshape(-1, queue.shape[1])
            rows_a, rows_b = flat[first], flat[second]
        elif mistake == "positions_as_rows":
            rows_a, rows_b = queue[first], queue[second]
        else:
            rows_a, rows_b = queue[hardest.gather(1, first)], queue[hardest.gather(1, second)]
        a = alpha.unsqueeze(-1)
        if mistake == "alpha_swapped":
            a = 1 - a
        mixed = a * rows_a + (1 - a) * rows_b
        if mistake == "no_normalise":
            return mixed
        return F.normalize(mixed, dim=1 if mistake == "wrong_dim" else -1)
    return mix


@pytest.mark.parametrize("mistake, hint", [
    ("query_zero", "hardest negatives of query 0"),
    ("positions_as_rows", "positions in each query's hardest list"),
    ("no_normalise", "unit sphere"),
    ("wrong_dim", "dim=-1"),
    ("alpha_swapped", "α weighs the first"),
])
def test_mix_negatives_mistakes_are_named(mistake, hint):
    fails_with(check_mix_negatives, mix_negatives(mistake), hint)


def mix_query(mistake=None):
    def mix(q, queue, hardest, pick, beta):
        if mistake != "no_detach":
            q = q.detach()
        if mistake == "query_zero":
            rows = queue[hardest].reshape(-1, queue.shape[1])[pick]
        elif mistake == "positions_as_rows":
            rows = queue[pick]
        else:
            rows = queue[hardest.gather(1, pick)]
        b = beta.unsqueeze(-1)
        if mistake == "beta_swapped":
            b = 1 - b
        query = q[:1].unsqueeze(1) if mistake == "first_query" else q.unsqueeze(1)
        mixed = b * query + (1 - b) * rows
        return mixed if mistake == "no_normalise" else F.normalize(mixed, dim=-1)
    return mix


@pytest.mark.parametrize("mistake, hint", [
    ("query_zero", "hardest negatives of query 0"),
    ("positions_as_rows", "positions in each query's hardest list"),
    ("no_normalise", "unit sphere"),
    ("beta_swapped", "negative dominates"),
    ("first_query", "its own hardest negatives"),
    ("no_detach", "q.detach"),
])
def test_mix_query_mistakes_are_named(mistake, hint):
    fails_with(check_mix_query, mix_query(mistake), hint)


def test_mix_references_agree_with_the_package():
    generator = torch.Generator().manual_seed(3)
    q = F.normalize(torch.randn(5, 8, generator=generator), dim=1)
    queue = F.normalize(torch.randn(30, 8, generator=generator), dim=1)
    result = mochi_mix(q, queue, n_hardest=6, n_mix_negatives=4, n_mix_query=3,
                       generator=torch.Generator().manual_seed(0))
    positions = lambda rows: (result.hardest_index[:, :, None] == rows[:, None, :]).float().argmax(1)  # noqa: E731
    type1 = mix_negatives()(queue, result.hardest_index, positions(result.pair_index[..., 0]),
                            positions(result.pair_index[..., 1]), result.alpha)
    type2 = mix_query()(q, queue, result.hardest_index, positions(result.query_pair_index), result.beta)
    assert torch.allclose(torch.cat([type1, type2], dim=1), result.negatives, atol=1e-6)


def test_unimplemented_exercises_say_so():
    def todo(*args):
        raise NotImplementedError
    for check in (check_enqueue, check_momentum_update, check_moco_logits, check_dcl, check_hcl,
                  check_mix_negatives, check_mix_query):
        fails_with(check, todo, "not implemented yet")
