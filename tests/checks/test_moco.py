"""The checkers of notebooks 03 (MoCo) and 04 (DCL, HCL, MoCHi) accept correct solutions, agree with
the package's losses and MoCo step, and name each known mistake."""
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import fails_with

from clcourse.checks import (
    check_dcl,
    check_enqueue,
    check_hcl,
    check_mochi_logits,
    check_moco_logits,
    check_moco_step,
    check_momentum_update,
)
from clcourse.checks.hard_negatives import _pairs, debiased_loss_variant, mochi_logits_variant
from clcourse.checks.moco import _moco_step_variant, _step_setup
from clcourse.losses import dcl, hcl, mochi_mix, moco_info_nce
from clcourse.methods import moco_step

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
        new_pointer = {"no_wrap": pointer + batch, "plus_one": (pointer + 1) % size,
                       "stay": pointer}.get(
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
                    # the mistake: a new local tensor
                    key = momentum * key + (1 - momentum) * query  # noqa: F841
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
        logits = torch.cat([negatives, positive] if mistake == "positive_last"
                           else [positive, negatives], dim=1)
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
        return debiased_loss_variant(z1, z2, temperature, tau_plus, beta if beta_used else None,
                                     **wrong)
    return loss


def dcl_as_in_the_paper(z1, z2, temperature, tau_plus):
    """An independent student solution: exp of cosines, masks, the DCL
    estimator, written plainly."""
    batch_size = z1.shape[0]
    out = F.normalize(torch.cat([z1, z2]), dim=1)
    neg = torch.exp(out @ out.T / temperature)
    mask = torch.ones_like(neg, dtype=torch.bool)
    for i in range(batch_size):
        mask[i, i] = mask[i, i + batch_size] = False
        mask[i + batch_size, i] = mask[i + batch_size, i + batch_size] = False
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
    check_mochi_logits(make_mochi_logits())
    check_moco_step(make_moco_step())
    check_moco_step(moco_step)
    assert capsys.readouterr().out.count("✓") == 12


@pytest.mark.parametrize("beta", [None, 0.5, 2.0])
@pytest.mark.parametrize("close", [False, True])
def test_checker_reference_is_the_package_loss(beta, close):
    z1, z2 = _pairs(0, 6, 16, close)
    z1, z2 = z1.requires_grad_(), z2.requires_grad_()
    ours = debiased_loss_variant(z1, z2, 0.3, 0.2, beta)
    package = dcl(z1, z2, 0.3, 0.2) if beta is None else hcl(z1, z2, 0.3, 0.2, beta)
    assert torch.allclose(ours, package.double(), atol=1e-6)
    assert torch.allclose(torch.autograd.grad(ours, z1)[0],
                          torch.autograd.grad(package, z1)[0].double(), atol=1e-5)


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
    fails_with(check_hcl, lambda z1, z2, t, tau, beta: debiased_loss_variant(z1, z2, t, tau, None),
               "You return DCL")


# ---------------------------------------------------------------- MoCHi

def make_mochi_logits(mistake=None):
    """A student's mochi_logits, written plainly, correct by default,
    with one mistake switched on."""
    def mochi_logits(q, k, queue, temperature, n_hardest, first, second, alpha, pick, beta_mix):
        hardest = (q @ queue.T).topk(n_hardest, dim=1, largest=mistake != "easiest").indices

        def rows(positions):
            if mistake == "query_zero":
                return queue[hardest].reshape(-1, queue.shape[1])[positions]
            if mistake == "positions_as_rows":
                return queue[positions]
            return queue[hardest.gather(1, positions)]
        a, b = alpha.unsqueeze(-1), beta_mix.unsqueeze(-1)
        if mistake == "alpha_swapped":
            a = 1 - a
        if mistake == "beta_swapped":
            b = 1 - b
        query = q if mistake == "no_detach" else q.detach()
        if mistake == "first_query":
            query = query[:1]
        type1 = a * rows(first) + (1 - a) * rows(second)
        type2 = b * query.unsqueeze(1) + (1 - b) * rows(pick)
        if mistake != "no_normalise":
            type1, type2 = F.normalize(type1, dim=-1), F.normalize(type2, dim=-1)
        synthetic = torch.cat([type1, type2], dim=1) if mistake != "no_type2" else type1
        key = k if mistake == "key_gradient" else k.detach()
        positive = (q * key).sum(dim=1, keepdim=True)
        extra = torch.einsum("bd,bmd->bm", q, synthetic)
        if mistake != "synthetic_temperature":
            extra = extra / temperature
        return torch.cat([positive / temperature, q @ queue.T / temperature, extra], dim=1)
    return mochi_logits


@pytest.mark.parametrize("mistake, hint", [
    ("query_zero", "hardest negatives of query 0"),
    ("positions_as_rows", "not queue rows"),
    ("easiest", "MOST similar"),
    ("alpha_swapped", "α weighs the first"),
    ("beta_swapped", "negative dominates"),
    ("first_query", "its own hard negatives"),
    ("no_normalise", "unit sphere"),
    ("synthetic_temperature", "synthetic negatives' logits by the temperature"),
    ("no_type2", "no type-2 logits"),
    ("no_detach", "q.detach"),
    ("key_gradient", "k.detach"),
])
def test_mochi_logits_mistakes_are_named(mistake, hint):
    fails_with(check_mochi_logits, make_mochi_logits(mistake), hint)


def test_mochi_logits_reference_agrees_with_the_package():
    """The checker's reference, fed mochi_mix's own draws (as positions),
    gives the package's MoCHi loss."""
    generator = torch.Generator().manual_seed(3)
    q, k = (F.normalize(torch.randn(5, 8, generator=generator), dim=1) for _ in range(2))
    queue = F.normalize(torch.randn(30, 8, generator=generator), dim=1)
    mix = mochi_mix(q, queue, n_hardest=6, n_mix_negatives=4, n_mix_query=3,
                    generator=torch.Generator().manual_seed(0))
    positions = lambda rows: (  # noqa: E731
        (mix.hardest_index[:, :, None] == rows[:, None, :]).float().argmax(1))
    logits = mochi_logits_variant(q, k, queue, 0.2, 6, positions(mix.pair_index[..., 0]),
                                  positions(mix.pair_index[..., 1]), mix.alpha,
                                  positions(mix.query_pair_index), mix.beta)
    package = moco_info_nce(q, k, queue, 0.2, extra_negatives=mix.negatives)
    assert torch.allclose(F.cross_entropy(logits, torch.zeros(5, dtype=torch.long)), package,
                          atol=1e-6)


# ---------------------------------------------------------------- one MoCo step

def make_moco_step(mistake=None):
    """A student's moco_step, written plainly, correct by default, with one mistake switched on."""
    def step(moco, query_views, key_views, index):
        q = F.normalize(moco.projector(moco.backbone(query_views)), dim=1)
        if mistake == "detach_q":
            q = q.detach()
        key_encoder = ((moco.backbone, moco.projector) if mistake == "query_encoder"
                       else (moco.key_backbone, moco.key_projector))
        with (torch.no_grad() if mistake not in ("query_encoder", "keys_with_gradient_flag")
              else torch.enable_grad()):
            shuffle = (torch.arange(len(key_views)) if mistake == "no_shuffle"
                       else torch.randperm(len(key_views)))
            k = key_encoder[1](key_encoder[0](key_views[shuffle]))
            k = k if mistake == "no_normalise_k" else F.normalize(k, dim=1)
            if mistake != "no_unshuffle":
                k = k[torch.argsort(shuffle)]
        if mistake == "keys_with_gradient_flag":
            k = k.detach().requires_grad_()
        queue = moco.queue
        if mistake == "enqueue_first":
            moco.enqueue(k, index)
        if mistake == "momentum_inside":
            for key_parameter, parameter in zip(moco.key_parameters(), moco.query_parameters()):
                key_parameter.data.mul_(0.9).add_(parameter.data, alpha=0.1)
        temperature = 1.0 if mistake == "no_temperature" else moco.temperature
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / temperature
        own_image = index[:, None] == moco.queue_index[None, :]
        if mistake == "shifted_mask":
            logits = logits.masked_fill(torch.cat([own_image,
                                                   torch.zeros(len(q), 1, dtype=torch.bool)], 1),
                                        float("-inf"))
        elif mistake == "zero_mask":
            logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(own_image, 0.0)], 1)
        elif mistake != "no_mask":
            logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(own_image, float("-inf"))],
                               1)
        targets = torch.arange(len(q)) if mistake == \
            "arange_targets" else torch.zeros(len(q), dtype=torch.long)
        loss = F.cross_entropy(logits, targets)
        if mistake == "two_values":
            return loss, k
        return loss, q, k
    return step


def test_moco_step_reference_is_the_package_step():
    method, query_views, key_views, index = _step_setup(0)
    torch.manual_seed(5)
    package = moco_step(method, query_views, key_views, index)
    reference = _moco_step_variant(method, query_views, key_views, index, 5)
    for ours, theirs in zip(reference, package):
        assert torch.allclose(ours, theirs, atol=1e-6)
    # the planted mistakes really change the result on the checker's inputs
    for wrong in (dict(shuffle=False), dict(unshuffle=False), dict(mask="none"),
                  dict(mask="shifted")):
        assert not torch.allclose(_moco_step_variant(method, query_views, key_views, index, 5,
                                                     **wrong)[0],
                                  reference[0], atol=1e-4), wrong


@pytest.mark.parametrize("mistake, hint", [
    ("no_shuffle", "shuffled batch"),
    ("no_unshuffle", "Undo the shuffle"),
    ("no_normalise_k", "Normalise the keys"),
    ("query_encoder", "keys come from the query encoder"),
    ("keys_with_gradient_flag", "carry a gradient"),
    ("detach_q", "queries carry no gradient"),
    ("enqueue_first", "Don't enqueue inside the step"),
    ("momentum_inside", "Leave the momentum update"),
    ("no_mask", "Mask the queue entries"),
    ("zero_mask", "not 0"),
    ("shifted_mask", "shifted by one column"),
    ("arange_targets", "targets are zeros"),
    ("no_temperature", "moco.temperature"),
    ("two_values", r"\(loss, q, k\)"),
])
def test_moco_step_mistakes_are_named(mistake, hint):
    fails_with(check_moco_step, make_moco_step(mistake), hint)


def test_unimplemented_exercises_say_so():
    def todo(*args):
        raise NotImplementedError
    for check in (check_enqueue, check_momentum_update, check_moco_logits, check_moco_step,
                  check_dcl, check_hcl, check_mochi_logits):
        fails_with(check, todo, "not implemented yet")
