"""Losses (clcourse/losses.py) against slow references that loop over anchors in float64, one
formula line per paper equation: InfoNCE, DCL and HCL, MoCo's InfoNCE, MoCHi's synthetic negatives,
SCE's soft target and both forms of its loss, SupCon; bad input; edges found by tools/mutate.py.
(CACR and multi-view InfoNCE: tests/test_losses_cacr.py.)"""
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import randn, reference_sce, reference_supcon

import clcourse.losses as losses
from clcourse.losses import (
    dcl,
    hcl,
    info_nce,
    mochi_mix,
    mochi_negatives,
    moco_info_nce,
    positive_index,
    sce,
    sce_in_batch,
    sce_target,
    supcon,
)

SHAPES = [(2, 3), (2, 16), (5, 3), (5, 16)]  # (B, D)
TEMPERATURES = [0.1, 0.5, 1.0]
SEEDS = [0, 1, 2]
DIM = 8


def views(seed, batch, dim):
    return randn(seed, batch, dim), randn(seed + 1000, batch, dim)


def value_and_grads(loss_fn, *inputs, dtype=torch.float32):
    """The loss and its gradient w.r.t. every input, computed on copies cast to `dtype`."""
    leaves = [x.detach().to(dtype).requires_grad_(True) for x in inputs]
    loss = loss_fn(*leaves)
    return loss.detach().double(), [g.double() for g in torch.autograd.grad(loss, leaves)]


def assert_same_value_and_grads(loss_fn, reference_fn, *inputs, atol=1e-5, rtol=1e-4):
    loss, grads = value_and_grads(loss_fn, *inputs)
    expected, expected_grads = value_and_grads(reference_fn, *inputs, dtype=torch.float64)
    assert torch.allclose(loss, expected, atol=atol, rtol=rtol), (loss, expected)
    for grad, expected_grad in zip(grads, expected_grads):
        assert torch.allclose(grad, expected_grad, atol=atol, rtol=rtol), (
            (grad - expected_grad).abs().max())


# ------------------------------------------------------- references (float64, one anchor at a time)

def anchor_terms(z1, z2, temperature):
    """For each of the 2B anchors: pos = exp(s+/t) and the list of neg_j = exp(s_j/t),
    j not i, not p(i)."""
    u = F.normalize(torch.cat([z1, z2]), dim=1)
    n, batch = len(u), len(z1)
    for i in range(n):
        p = (i + batch) % n
        pos = torch.exp(u[i] @ u[p] / temperature)
        negs = [torch.exp(u[i] @ u[j] / temperature) for j in range(n) if j not in (i, p)]
        yield pos, negs


def reference_info_nce(z1, z2, temperature):
    losses = [-torch.log(pos / (pos + sum(negs)))
              for pos, negs in anchor_terms(z1, z2, temperature)]
    return torch.stack(losses).mean()


def reference_hcl(z1, z2, temperature, tau_plus, beta, detach_importance=False):
    """HCL as in the authors' code; beta = 0 is DCL. Also returns how many anchors hit the clamp."""
    losses, clamped = [], 0
    for pos, negs in anchor_terms(z1, z2, temperature):
        neg = torch.stack(negs)
        n = len(neg)
        imp = neg ** beta
        if detach_importance:
            imp = imp.detach()
        reweight_neg = (imp * neg).sum() / imp.mean()
        estimate = (reweight_neg - tau_plus * n * pos) / (1 - tau_plus)
        floor = n * math.exp(-1 / temperature)
        clamped += int(estimate < floor)
        ng = torch.clamp(estimate, min=floor)
        losses.append(-torch.log(pos / (pos + ng)))
    return torch.stack(losses).mean(), clamped


def reference_dcl(z1, z2, temperature, tau_plus):
    """DCL written separately from HCL (no importance weights at all)."""
    losses = []
    for pos, negs in anchor_terms(z1, z2, temperature):
        n = len(negs)
        ng = max((sum(negs) - tau_plus * n * pos) / (1 - tau_plus),
                 torch.tensor(n * math.exp(-1 / temperature)))
        losses.append(-torch.log(pos / (pos + ng)))
    return torch.stack(losses).mean()


def reference_moco(q, k, queue, temperature, queue_mask=None, extra_negatives=None):
    q, k, queue = (F.normalize(q, dim=1), F.normalize(k.detach(), dim=1),
                   F.normalize(queue.detach(), dim=1))
    losses = []
    for b in range(len(q)):
        pos = torch.exp(q[b] @ k[b] / temperature)
        negs = [torch.exp(q[b] @ n / temperature)
                for j, n in enumerate(queue) if queue_mask is None or not queue_mask[b, j]]
        if extra_negatives is not None:
            extra = F.normalize(extra_negatives[b].detach().to(q.dtype), dim=1)
            negs += [torch.exp(q[b] @ h / temperature) for h in extra]
        losses.append(-torch.log(pos / (pos + sum(negs))))
    return torch.stack(losses).mean()


# ---------------------------------------------------------------- info_nce

def test_positive_index_pairs_the_two_views():
    assert positive_index(3).tolist() == [3, 4, 5, 0, 1, 2]


@pytest.mark.parametrize("batch,dim", SHAPES)
@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_info_nce_value_and_gradient_match_the_loop(batch, dim, temperature):
    for seed in SEEDS:
        assert_same_value_and_grads(lambda a, b: info_nce(a, b, temperature),
                                    lambda a, b: reference_info_nce(a, b, temperature),
                                    *views(seed, batch, dim))


def test_info_nce_closed_form_on_orthogonal_images():
    # Two images, identical views, orthogonal to each other: every anchor sees its positive at
    # cosine 1 and two negatives at cosine 0, so the loss is log(1 + 2 e^{-1/t}).
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    for t in TEMPERATURES:
        assert torch.allclose(info_nce(z, 3 * z, t),
                              torch.tensor(math.log(1 + 2 * math.exp(-1 / t))), atol=1e-6)


def test_info_nce_with_one_image_is_refused():
    # One image has no negatives: its loss would be 0 with zero gradients, whatever the encoder.
    z1, z2 = views(0, 1, 4)
    with pytest.raises(ValueError, match="info_nce needs at least 2 images .* z1 has 1 row"):
        info_nce(z1, z2)


def test_info_nce_does_not_depend_on_the_embedding_scale():
    z1, z2 = views(3, 4, 8)
    assert torch.allclose(info_nce(z1, z2), info_nce(5 * z1, 0.1 * z2))


# ---------------------------------------------------------------- dcl and hcl

@pytest.mark.parametrize("batch,dim", SHAPES)
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("tau_plus", [0.0, 0.1, 0.3])
def test_dcl_value_and_gradient_match_the_loop(batch, dim, temperature, tau_plus):
    for seed in SEEDS:
        assert_same_value_and_grads(lambda a, b: dcl(a, b, temperature, tau_plus),
                                    lambda a, b: reference_dcl(a, b, temperature, tau_plus),
                                    *views(seed, batch, dim))


@pytest.mark.parametrize("batch,dim", SHAPES)
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("tau_plus,beta", [(0.1, 1.0), (0.0, 0.5), (0.2, 2.0)])
def test_hcl_value_and_gradient_match_the_authors_formula(batch, dim, temperature, tau_plus, beta):
    for seed in SEEDS:
        assert_same_value_and_grads(
            lambda a, b: hcl(a, b, temperature, tau_plus, beta),
            lambda a, b: reference_hcl(a, b, temperature, tau_plus, beta)[0],
            *views(seed, batch, dim))


@pytest.mark.parametrize("batch,dim", SHAPES)
def test_reductions_hcl_to_dcl_to_info_nce(batch, dim):
    for seed in SEEDS:
        z = views(seed, batch, dim)
        for t in TEMPERATURES:
            # with tau_plus = 0 the clamp cannot bind: the plain negative sum is already >= N
            # e^{-1/t}
            assert reference_hcl(*[x.double() for x in z], t, tau_plus=0.0, beta=0.0)[1] == 0
            base, base_grads = value_and_grads(lambda a, b, t=t: info_nce(a, b, t), *z)
            for loss_fn in (lambda a, b, t=t: dcl(a, b, t, tau_plus=0.0),
                            lambda a, b, t=t: hcl(a, b, t, tau_plus=0.0, beta=0.0)):
                loss, grads = value_and_grads(loss_fn, *z)
                assert torch.allclose(loss, base, atol=1e-6, rtol=1e-5)
                assert all(torch.allclose(g, h, atol=1e-6, rtol=1e-5)
                           for g, h in zip(grads, base_grads))
            for tau_plus in (0.1, 0.5):
                loss, grads = value_and_grads(
                    lambda a, b, t=t, tau_plus=tau_plus: hcl(a, b, t, tau_plus, beta=0.0), *z)
                expected, expected_grads = value_and_grads(
                    lambda a, b, t=t, tau_plus=tau_plus: dcl(a, b, t, tau_plus), *z)
                assert torch.allclose(loss, expected, atol=1e-6, rtol=1e-5)
                assert all(torch.allclose(g, h, atol=1e-6, rtol=1e-5)
                           for g, h in zip(grads, expected_grads))


@pytest.mark.parametrize("loss_name", ["dcl", "hcl"])
def test_active_clamp_matches_the_reference(loss_name):
    # Image 0's two views nearly coincide and image 1 sits on the opposite side: pos ~ e^{1/t}
    # dwarfs the two negatives ~ e^{-1/t}, so the debiased estimate goes negative and the floor N
    # e^{-1/t} applies.
    z1 = torch.tensor([[1.0, 0.02, 0.0], [-1.0, 0.0, 0.03]])
    z2 = torch.tensor([[1.0, -0.01, 0.02], [-1.0, 0.02, 0.0]])
    t, tau_plus, beta = 0.5, 0.5, (0.0 if loss_name == "dcl" else 1.0)
    _, clamped = reference_hcl(z1.double(), z2.double(), t, tau_plus, beta)
    assert clamped == 4  # every anchor
    assert_same_value_and_grads(lambda a, b: hcl(a, b, t, tau_plus, beta),
                                lambda a, b: reference_hcl(a, b, t, tau_plus, beta)[0], z1, z2)
    if loss_name == "dcl":
        assert_same_value_and_grads(lambda a, b: dcl(a, b, t, tau_plus),
                                    lambda a, b: reference_dcl(a, b, t, tau_plus), z1, z2)


def test_clamp_active_for_some_anchors_only():
    # Close views of 6 random images and tau_plus = 0.3: some anchors hit the floor, some do not.
    z1 = randn(7, 6, 4)
    z2 = z1 + 0.3 * randn(8, 6, 4)
    t, tau_plus = 0.5, 0.3
    for beta in (0.0, 1.0):
        _, clamped = reference_hcl(z1.double(), z2.double(), t, tau_plus, beta)
        assert 0 < clamped < 12
    assert_same_value_and_grads(lambda a, b: hcl(a, b, t, tau_plus, 1.0),
                                lambda a, b: reference_hcl(a, b, t, tau_plus, 1.0)[0], z1, z2)
    assert_same_value_and_grads(lambda a, b: dcl(a, b, t, tau_plus),
                                lambda a, b: reference_dcl(a, b, t, tau_plus), z1, z2)


def test_hcl_gradient_flows_through_the_importance_weights():
    z = views(4, 5, 8)
    t, tau_plus, beta = 0.5, 0.1, 1.0
    loss, grads = value_and_grads(lambda a, b: hcl(a, b, t, tau_plus, beta), *z)
    with_weights, with_grads = value_and_grads(
        lambda a, b: reference_hcl(a, b, t, tau_plus, beta)[0], *z, dtype=torch.float64)
    detached, detached_grads = value_and_grads(
        lambda a, b: reference_hcl(a, b, t, tau_plus, beta, detach_importance=True)[0], *z,
        dtype=torch.float64)
    assert torch.allclose(with_weights, detached)  # same value, different gradient
    for grad, expected, other in zip(grads, with_grads, detached_grads):
        assert torch.allclose(grad, expected, atol=1e-5, rtol=1e-4)
        assert (grad - other).abs().max() > 1e-3


def test_dcl_and_hcl_stay_finite_at_small_temperature():
    z1, z2 = views(5, 8, 16)
    for loss in (dcl(z1, z2, temperature=0.01), hcl(z1, z2, temperature=0.01, beta=2.0)):
        assert torch.isfinite(loss)
    z = torch.stack([z1, z2]).requires_grad_(True)
    hcl(z[0], z[1], temperature=0.01, tau_plus=0.3, beta=2.0).backward()
    assert torch.isfinite(z.grad).all()


def test_losses_are_float32_under_autocast():
    z1, z2 = views(6, 4, 16)
    q, k, queue = randn(1, 4, 16), randn(2, 4, 16), randn(3, 20, 16)
    losses = [lambda: dcl(z1, z2, 0.2), lambda: hcl(z1, z2, 0.2),
              lambda: moco_info_nce(q, k, queue, 0.1)]
    for loss_fn in losses:
        expected = loss_fn()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_fn()
        assert loss.dtype == torch.float32
        assert torch.allclose(loss, expected, atol=1e-6, rtol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        negatives = mochi_negatives(q, queue, 5, 3, 2, generator=torch.Generator().manual_seed(0))
    assert negatives.dtype == torch.float32


# ---------------------------------------------------------------- moco_info_nce

@pytest.mark.parametrize("batch,dim", SHAPES)
@pytest.mark.parametrize("temperature", [0.07, 0.2, 1.0])
def test_moco_info_nce_value_and_gradient_match_the_loop(batch, dim, temperature):
    for seed in SEEDS:
        q, k, queue = (randn(seed, batch, dim), randn(seed + 10, batch, dim),
                       randn(seed + 20, 7, dim))
        assert_same_value_and_grads(
            lambda a, k=k, queue=queue: moco_info_nce(a, k, queue, temperature),
            lambda a, k=k, queue=queue: reference_moco(a, k.double(), queue.double(), temperature),
            q)


def test_moco_info_nce_gradient_reaches_only_the_queries():
    q, k, queue, extra = randn(0, 3, 8), randn(1, 3, 8), randn(2, 10, 8), randn(3, 3, 4, 8)
    for x in (q, k, queue, extra):
        x.requires_grad_(True)
    moco_info_nce(q, k, queue, extra_negatives=extra).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None and queue.grad is None and extra.grad is None


def test_moco_info_nce_mask_removes_exactly_the_masked_entries():
    q, k, queue = randn(0, 4, 8), randn(1, 4, 8), randn(2, 12, 8)
    mask = randn(3, 4, 12) > 0.5
    mask[2] = True  # a query with no queue negative left: only its positive remains, loss 0 for it
    # Refused by default (that query learns nothing); check_mask=False, for callers that proved the
    # mask once, computes it as the loop does.
    with pytest.raises(ValueError, match="queue_mask masks every queue entry of some query"):
        moco_info_nce(q, k, queue, 0.2, queue_mask=mask)
    assert_same_value_and_grads(
        lambda a: moco_info_nce(a, k, queue, 0.2, queue_mask=mask, check_mask=False),
        lambda a: reference_moco(a, k.double(), queue.double(), 0.2, mask), q)
    one_at_a_time = torch.stack(
        [moco_info_nce(q[b:b + 1], k[b:b + 1], queue[~mask[b]], 0.2) if (~mask[b]).any()
         else torch.tensor(0.0) for b in range(4)]).mean()
    assert torch.allclose(moco_info_nce(q, k, queue, 0.2, queue_mask=mask, check_mask=False),
                          one_at_a_time)


def test_moco_info_nce_with_mochi_negatives_matches_the_loop():
    q, k, queue = randn(0, 4, 8), randn(1, 4, 8), randn(2, 16, 8)
    extra = mochi_negatives(q, queue, n_hardest=5, n_mix_negatives=3, n_mix_query=2,
                            generator=torch.Generator().manual_seed(0))
    mask = randn(3, 4, 16) > 1.0
    assert_same_value_and_grads(
        lambda a: moco_info_nce(a, k, queue, 0.2, queue_mask=mask, extra_negatives=extra),
        lambda a: reference_moco(a, k.double(), queue.double(), 0.2, mask, extra.double()), q)
    # no synthetic negative at all is the plain loss
    empty = q.new_zeros(4, 0, 8)
    assert torch.equal(moco_info_nce(q, k, queue, extra_negatives=empty),
                       moco_info_nce(q, k, queue))


def test_moco_info_nce_with_every_queue_entry_masked_is_refused():
    q, k, queue = torch.randn(4, 8), torch.randn(4, 8), torch.randn(6, 8)
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[1] = True
    with pytest.raises(ValueError, match="queue_mask masks every queue entry of some query"):
        moco_info_nce(q, k, queue, queue_mask=mask)
    extra = torch.randn(4, 2, 8)            # synthetic negatives are negatives too
    assert moco_info_nce(q, k, queue, queue_mask=mask, extra_negatives=extra) > 0


# ---------------------------------------------------------------- MoCHi

def mochi_inputs(seed=0, batch=4, queue_size=30, dim=8):
    return randn(seed, batch, dim), randn(seed + 1, queue_size, dim)


def test_mochi_shapes_unit_norm_ranges_and_no_gradient():
    q, queue = mochi_inputs()
    q.requires_grad_(True)
    queue.requires_grad_(True)
    mix = mochi_mix(q, queue, n_hardest=6, n_mix_negatives=5, n_mix_query=3,
                    generator=torch.Generator().manual_seed(0))
    assert mix.negatives.shape == (4, 8, 8) and mix.negatives.dtype == torch.float32
    assert mix.hardest_index.shape == (4, 6) and mix.pair_index.shape == (4, 5, 2)
    assert (mix.alpha.shape == (4, 5) and mix.query_pair_index.shape == (4, 3)
            and mix.beta.shape == (4, 3))
    assert torch.allclose(mix.negatives.norm(dim=2), torch.ones(4, 8))
    assert ((mix.alpha >= 0) & (mix.alpha <= 1)).all()
    assert ((mix.beta >= 0) & (mix.beta <= 0.5)).all()
    assert not any(t.requires_grad for t in mix)
    assert not mochi_negatives(q, queue, 6, 5, 3).requires_grad


def test_mochi_hardest_sets_are_each_querys_own_top_n():
    q, queue = mochi_inputs(seed=1)
    mix = mochi_mix(q, queue, n_hardest=7, n_mix_negatives=20, n_mix_query=10,
                    generator=torch.Generator().manual_seed(1))
    qn, queue_n = F.normalize(q.double(), dim=1), F.normalize(queue.double(), dim=1)
    for b in range(len(q)):
        similarity = [float(qn[b] @ n) for n in queue_n]
        hardest = sorted(range(len(queue)), key=lambda j: -similarity[j])[:7]
        assert mix.hardest_index[b].tolist() == hardest
        assert set(mix.pair_index[b].flatten().tolist()) <= set(hardest)
        assert set(mix.query_pair_index[b].tolist()) <= set(hardest)
    # two different negatives when N >= 2
    assert (mix.pair_index[..., 0] != mix.pair_index[..., 1]).all()


def test_mochi_negatives_are_rebuilt_from_the_returned_recipe():
    q, queue = mochi_inputs(seed=2)
    s, s_query = 6, 4
    mix = mochi_mix(q, queue, n_hardest=5, n_mix_negatives=s, n_mix_query=s_query,
                    generator=torch.Generator().manual_seed(2))
    qn, queue_n = F.normalize(q.double(), dim=1), F.normalize(queue.double(), dim=1)
    for b in range(len(q)):
        for m in range(s):
            i, j = mix.pair_index[b, m].tolist()
            a = float(mix.alpha[b, m])
            expected = F.normalize(a * queue_n[i] + (1 - a) * queue_n[j], dim=0)
            assert torch.allclose(mix.negatives[b, m].double(), expected, atol=1e-6)
        for m in range(s_query):
            c, beta = int(mix.query_pair_index[b, m]), float(mix.beta[b, m])
            expected = F.normalize(beta * qn[b] + (1 - beta) * queue_n[c], dim=0)
            assert torch.allclose(mix.negatives[b, s + m].double(), expected, atol=1e-6)


def test_mochi_never_mixes_another_querys_negatives():
    # Query b lives in the plane of coordinates (2b, 2b+1) and so do exactly 4 queue entries
    # (shuffled among the others); every other entry is orthogonal to it. With N = 4 its hardest set
    # is that cluster, so every synthetic negative of query b must stay in its plane. Indexing a
    # flattened [B*N, D] with [0, N) (the query-0 bug) would put query 0's plane into every query's
    # negatives.
    batch, per_cluster = 3, 4
    angles = torch.linspace(0.2, 1.3, per_cluster)
    queue = torch.zeros(batch * per_cluster, 2 * batch)
    q = torch.zeros(batch, 2 * batch)
    for b in range(batch):
        rows = slice(b * per_cluster, (b + 1) * per_cluster)
        queue[rows, 2 * b], queue[rows, 2 * b + 1] = torch.cos(angles), torch.sin(angles)
        q[b, 2 * b] = q[b, 2 * b + 1] = 1.0
    queue = queue[torch.randperm(len(queue), generator=torch.Generator().manual_seed(0))]
    negatives = mochi_negatives(q, queue, n_hardest=per_cluster, n_mix_negatives=8, n_mix_query=8,
                                generator=torch.Generator().manual_seed(0))
    for b in range(batch):
        outside = torch.ones(2 * batch, dtype=torch.bool)
        outside[2 * b:2 * b + 2] = False
        assert negatives[b][:, outside].abs().max() < 1e-6
        assert negatives[b][:, ~outside].norm(dim=1).allclose(torch.ones(16))


def test_mochi_with_one_hardest_negative_mixes_it_with_itself():
    q, queue = mochi_inputs(seed=3)
    mix = mochi_mix(q, queue, n_hardest=1, n_mix_negatives=3, n_mix_query=0)
    hardest = F.normalize(queue, dim=1)[mix.hardest_index[:, 0]]
    assert torch.allclose(mix.negatives, hardest.unsqueeze(1).expand(-1, 3, -1), atol=1e-6)
    assert mix.negatives.shape == (4, 3, 8)


def test_mochi_never_uses_masked_queue_entries():
    q, queue = mochi_inputs(seed=4, queue_size=40)
    similarity = F.normalize(q, dim=1) @ F.normalize(queue, dim=1).T
    mask = randn(5, 4, 40) > 0.8
    # the 3 hardest of every query are false negatives
    mask.scatter_(1, similarity.topk(3, dim=1).indices, True)
    mix = mochi_mix(q, queue, n_hardest=8, n_mix_negatives=30, n_mix_query=30,
                    generator=torch.Generator().manual_seed(4), queue_mask=mask)
    for b in range(len(q)):
        allowed = [j for j in similarity[b].argsort(descending=True).tolist() if not mask[b, j]]
        assert mix.hardest_index[b].tolist() == allowed[:8]
        used = mix.pair_index[b].flatten().tolist() + mix.query_pair_index[b].tolist()
        assert not mask[b, used].any()


def test_mochi_generator_makes_it_reproducible():
    q, queue = mochi_inputs(seed=5)

    def draw(seed):
        return mochi_mix(q, queue, 6, 5, 3, generator=torch.Generator().manual_seed(seed))

    first, again, other = draw(0), draw(0), draw(1)
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert not torch.equal(first.negatives, other.negatives)
    torch.manual_seed(3)
    global_first = mochi_negatives(q, queue, 6, 5, 3)
    torch.manual_seed(3)
    assert torch.equal(global_first, mochi_negatives(q, queue, 6, 5, 3))


def test_mochi_with_no_mixes_returns_an_empty_set():
    q, queue = mochi_inputs()
    assert mochi_negatives(q, queue, 4, 0, 0).shape == (4, 0, 8)
    assert mochi_negatives(q, queue, 4, 0, 2).shape == (4, 2, 8)


# ---------------------------------------------------------------- SCE: soft target, both forms

def inputs(seed=0, batch=5, size=11, dim=DIM, masked=False):
    """Raw (not unit) q, k, queue, and optionally a mask that leaves every query at least one
    entry."""
    q, k, queue = (randn(seed, batch, dim, dtype=torch.float64) * 2,
                   randn(seed + 1, batch, dim, dtype=torch.float64) * 0.5,
                   randn(seed + 2, size, dim, dtype=torch.float64) * 3)
    mask = None
    if masked:
        mask = torch.rand(batch, size, generator=torch.Generator().manual_seed(seed + 3)) < 0.3
        mask[:, -1] = False
    return q, k, queue, mask


def reference_in_batch(z1, z2, temperature, temperature_momentum, lam):
    """The paper's equation, term by term: s2_ik, w2_ik, p1_ik."""
    u1, u2 = F.normalize(z1, dim=1), F.normalize(z2.detach(), dim=1)
    n, total = len(u1), 0.0
    for i in range(n):
        others = [math.exp(float(u2[i] @ u2[j]) / temperature_momentum) for j in range(n) if j != i]
        denominator = torch.stack([torch.exp(u1[i] @ u2[j] / temperature) for j in range(n)]).sum()
        for kk in range(n):
            s2 = (0.0 if kk == i
                  else math.exp(float(u2[i] @ u2[kk]) / temperature_momentum) / sum(others))
            w2 = lam * (kk == i) + (1 - lam) * s2
            total = total - w2 * torch.log(torch.exp(u1[i] @ u2[kk] / temperature) / denominator)
    return total / n


def value_and_grad(fn, q):
    q = q.clone().requires_grad_()
    value = fn(q)
    gradient, = torch.autograd.grad(value, q)
    return value.detach(), gradient


@pytest.mark.parametrize("temperature, temperature_momentum, lam, masked", [
    (0.1, 0.05, 0.5, False), (0.2, 0.1, 0.3, True), (0.5, 0.5, 0.0, True), (0.07, 0.04, 0.9, False),
])
def test_sce_value_and_gradient_match_the_loop(temperature, temperature_momentum, lam, masked):
    q, k, queue, mask = inputs(masked=masked)
    value, gradient = value_and_grad(
        lambda x: sce(x, k, queue, temperature, temperature_momentum, lam, mask), q)
    expected, expected_gradient = value_and_grad(
        lambda x: reference_sce(x, k, queue, temperature, temperature_momentum, lam, mask), q)
    assert torch.allclose(value.double(), expected, atol=1e-5)
    assert torch.allclose(gradient.double(), expected_gradient, atol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_lambda_one_is_moco_info_nce(masked):
    q, k, queue, mask = inputs(seed=4, masked=masked)
    value, gradient = value_and_grad(lambda x: sce(x, k, queue, 0.2, 0.05, 1.0, mask), q)
    expected, expected_gradient = value_and_grad(
        lambda x: moco_info_nce(x, k, queue, 0.2, queue_mask=mask), q)
    assert (torch.allclose(value, expected, atol=1e-6)
            and torch.allclose(gradient, expected_gradient, atol=1e-6))


def test_loss_is_linear_in_lambda_between_infonce_and_the_relational_loss():
    q, k, queue, mask = inputs(seed=6, masked=True)
    relational, infonce = (sce(q, k, queue, 0.1, 0.05, lam, mask) for lam in (0.0, 1.0))
    for lam in (0.25, 0.5, 0.8):
        assert torch.allclose(sce(q, k, queue, 0.1, 0.05, lam, mask),
                              lam * infonce + (1 - lam) * relational, atol=1e-5)
    assert not torch.allclose(relational, infonce, atol=1e-2)


@pytest.mark.parametrize("lam, masked", [(0.5, False), (0.3, True), (0.0, True), (1.0, False)])
def test_targets_are_distributions_with_exactly_lambda_on_the_positive(lam, masked):
    _, k, queue, mask = inputs(seed=8, masked=masked)
    target = sce_target(k, queue, 0.05, lam, mask)
    assert target.shape == (5, 12) and not target.requires_grad
    assert (target >= 0).all() and torch.allclose(target.sum(1), torch.ones(5), atol=1e-6)
    assert torch.equal(target[:, 0], torch.full((5,), lam))
    if masked:
        assert (target[:, 1:][mask] == 0).all() and (target[:, 1:][~mask] > 0).all()
    unit_k, unit_queue = F.normalize(k, dim=1), F.normalize(queue, dim=1)
    # the queue part, one query at a time: (1 - lam) exp(k.n / tau_m) / sum over the allowed n
    for b in range(5):
        allowed = [j for j in range(11) if mask is None or not mask[b, j]]
        weights = torch.exp(unit_queue[allowed] @ unit_k[b] / 0.05)
        assert torch.allclose(target[b, 1:][allowed].double(), (1 - lam) * weights / weights.sum(),
                              atol=1e-6)


def authors_sce(q, k, queue, temperature, temperature_momentum, lam):
    """The authors' queue form (CEA-LIST/SCE, eztorch's default): the key's own slot in the relation
    with logit 0."""
    q, k, queue = (F.normalize(t.double(), dim=1) for t in (q, k, queue))
    query_logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / temperature
    key_logits = torch.cat([torch.zeros(len(k), 1, dtype=k.dtype), k @ queue.T],
                           dim=1) / temperature_momentum
    one_hot = F.one_hot(torch.zeros(len(q), dtype=torch.long), query_logits.shape[1])
    target = F.normalize(lam * one_hot + (1 - lam) * key_logits.softmax(1), p=1, dim=1)
    return -(target * query_logits.log_softmax(1)).sum(1).mean()


def test_target_leaves_the_self_slot_out_unlike_the_authors_code():
    # The authors' code puts the key itself into the relation with logit 0: a small, nonzero extra
    # weight.
    _, k, queue, _ = inputs(seed=9)
    target = sce_target(k, queue, 0.05, 0.5)
    scores = F.normalize(k, dim=1) @ F.normalize(queue, dim=1).T / 0.05
    with_self_slot = torch.cat([torch.zeros(5, 1, dtype=scores.dtype), scores], dim=1)
    authors_positive = 0.5 + 0.5 * torch.softmax(with_self_slot, dim=1)[:, 0]
    assert (authors_positive > target[:, 0]).all()


@pytest.mark.parametrize("embeddings, smallest, largest",
                         [("clustered", 0.0, 1e-6), ("random", 1e-4, 3e-4)])
def test_leaving_the_self_slot_out_changes_the_loss_by_little_at_a_full_queue(
        embeddings, smallest, largest):
    # K = 4096, tau_m = 0.05, tau = 0.1, lambda = 0.5, D = 128, queries near their keys (as after
    # some training).
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 128, generator=g)

    def draw(n):
        if embeddings == "random":
            return F.normalize(torch.randn(n, 128, generator=g), dim=1)
        return F.normalize(centres[torch.randint(0, 10, (n,), generator=g)]
                           + torch.randn(n, 128, generator=g), dim=1)
    k, queue = draw(256), draw(4096)
    q = F.normalize(k + 0.05 * torch.randn(256, 128, generator=g), dim=1)
    difference = abs(sce(q.double(), k.double(), queue.double(), 0.1, 0.05, 0.5).item()
                     - authors_sce(q, k, queue, 0.1, 0.05, 0.5).item())
    # measured: about 1e-7 (float32 rounding) and 1.9e-4
    assert smallest <= difference <= largest


def test_no_gradient_reaches_the_key_the_queue_or_the_target():
    q, k, queue, mask = inputs(seed=10, masked=True)
    q, k, queue = (t.clone().requires_grad_() for t in (q, k, queue))
    sce(q, k, queue, 0.1, 0.05, 0.5, mask).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None and queue.grad is None
    assert not sce_target(k, queue, 0.05, 0.5).requires_grad


def test_masked_entries_count_as_if_they_were_not_in_the_queue():
    q, k, queue, _ = inputs(seed=12, batch=1)
    mask = torch.zeros(1, 11, dtype=torch.bool)
    mask[0, [2, 5, 6]] = True
    kept = [j for j in range(11) if not mask[0, j]]
    assert torch.allclose(sce(q, k, queue, 0.1, 0.05, 0.5, mask),
                          sce(q, k, queue[kept], 0.1, 0.05, 0.5), atol=1e-6)


def test_sce_is_finite_and_float32_at_small_temperatures_and_under_autocast():
    q, k, queue, mask = inputs(seed=14, masked=True)
    assert math.isfinite(sce(q * 10, k, queue, 0.01, 0.005, 0.5, mask).item())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = sce(q.float(), k.float(), queue.float(), 0.1, 0.05, 0.5, mask)
    assert loss.dtype == torch.float32


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_in_batch_form_matches_the_papers_equation_and_the_queue_form(lam):
    z1, z2 = randn(20, 6, DIM, dtype=torch.float64), randn(21, 6, DIM, dtype=torch.float64)
    value, gradient = value_and_grad(lambda x: sce_in_batch(x, z2, 0.2, 0.1, lam), z1)
    expected, expected_gradient = value_and_grad(lambda x: reference_in_batch(x, z2, 0.2, 0.1, lam),
                                                 z1)
    assert torch.allclose(value.double(), expected, atol=1e-5)
    assert torch.allclose(gradient.double(), expected_gradient, atol=1e-5)
    # image i with key z2_i and the other images' z2 as its queue
    per_image = torch.stack(
        [sce(z1[i:i + 1], z2[i:i + 1], z2[[j for j in range(6) if j != i]], 0.2, 0.1, lam)
         for i in range(6)])
    assert torch.allclose(value, per_image.mean(), atol=1e-5)
    z1, z2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    sce_in_batch(z1, z2, 0.2, 0.1, lam).backward()
    assert z1.grad is not None and z2.grad is None


@pytest.mark.parametrize("call, message", [
    (lambda q, k, Q: sce(q, k, Q, lam=1.5), r"lam must be in \[0.0, 1.0\], got 1.5"),
    (lambda q, k, Q: sce(q, k, Q, lam=-0.1), r"lam must be in \[0.0, 1.0\], got -0.1"),
    (lambda q, k, Q: sce(q, k, Q, temperature=0.0),
     "temperature must be a finite number > 0, got 0.0"),
    (lambda q, k, Q: sce(q, k, Q, temperature_momentum=-1.0),
     "temperature_momentum must be a finite number > 0, got -1.0"),
    (lambda q, k, Q: sce(q, k, Q[:, :4]),
     r"queue must have the embedding size of k \(8\).*got shape \(11, 4\)"),
    (lambda q, k, Q: sce(q, k[:3], Q),
     r"q and k must have the same shape, got \(5, 8\) and \(3, 8\)"),
    (lambda q, k, Q: sce(q[:, :4], k, Q), r"q and k must have the same shape"),
    (lambda q, k, Q: sce(q, k, Q, queue_mask=torch.zeros(5, 10, dtype=torch.bool)),
     r"queue_mask .* \[5, 11\]"),
    (lambda q, k, Q: sce_target(k, Q, lam=2), r"lam must be in \[0.0, 1.0\], got 2"),
    (lambda q, k, Q: sce_target(k, Q, temperature_momentum=0),
     "temperature_momentum must be a finite number > 0"),
    (lambda q, k, Q: sce_in_batch(q, k[:, :4]), "z1 and z2 must have the same shape"),
    (lambda q, k, Q: sce_in_batch(q[:1], k[:1]), "at least 2 images"),
    (lambda q, k, Q: sce_in_batch(q, k, lam=float("nan")), r"lam must be in \[0.0, 1.0\], got nan"),
])
def test_bad_input_names_the_argument_the_value_and_the_range(call, message):
    q, k, queue, _ = inputs()
    with pytest.raises(ValueError, match=message):
        call(q.float(), k.float(), queue.float())


# ---------------------------------------------------------------- SupCon

@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_supcon_and_its_gradient_match_a_loop_over_anchors(temperature):
    z1, z2 = torch.randn(6, 5, requires_grad=True), torch.randn(6, 5, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    ours = supcon(z1, z2, labels, temperature)
    ours_grad = torch.autograd.grad(ours, (z1, z2))
    expected = reference_supcon(z1, z2, labels, temperature)
    expected_grad = torch.autograd.grad(expected, (z1, z2))
    assert ours.item() == pytest.approx(expected.item(), rel=1e-5)
    for a, b in zip(ours_grad, expected_grad):
        assert torch.allclose(a.double(), b.double(), atol=1e-5)


def test_supcon_with_distinct_labels_is_info_nce():
    z1, z2 = torch.randn(8, 4), torch.randn(8, 4)
    assert torch.allclose(supcon(z1, z2, torch.arange(8), 0.2), info_nce(z1, z2, 0.2), atol=1e-6)
    # ...and a shared label changes it (the positives are more than the other view)
    assert not torch.allclose(supcon(z1, z2, torch.zeros(8, dtype=torch.long), 0.2),
                              info_nce(z1, z2, 0.2))


@pytest.mark.parametrize("labels, says",
                         [(None, "labels"), (torch.arange(5), "labels has 5 entries"),
                           (torch.rand(6), "integer")])
def test_supcon_refuses_bad_labels(labels, says):
    with pytest.raises(ValueError, match=says):
        supcon(torch.randn(6, 4), torch.randn(6, 4), labels, 0.1)


# ---------------------------------------------------------------- bad input

Z = torch.randn(4, 8)
QUEUE = torch.randn(10, 8)


@pytest.mark.parametrize("call,argname", [
    (lambda: info_nce(Z, Z, temperature=0), "temperature"),
    (lambda: info_nce(Z, Z[:3]), "z1"),
    (lambda: info_nce(Z[0], Z[0]), "z1"),
    (lambda: dcl(Z, Z, temperature=-1.0), "temperature"),
    (lambda: dcl(Z, Z, tau_plus=1.0), "tau_plus"),
    (lambda: dcl(Z, Z, tau_plus=-0.1), "tau_plus"),
    (lambda: dcl(Z, torch.randn(4, 7)), "z1"),
    (lambda: dcl(Z[:1], Z[:1]), "z1"),
    (lambda: hcl(Z, Z, temperature=0.0), "temperature"),
    (lambda: hcl(Z, Z, tau_plus=1.5), "tau_plus"),
    (lambda: hcl(Z, Z, beta=-0.5), "beta"),
    (lambda: hcl(Z, Z[:2]), "z1"),
    (lambda: hcl(Z[:1], Z[:1]), "z1"),
    (lambda: moco_info_nce(Z, Z, QUEUE, temperature=0), "temperature"),
    (lambda: moco_info_nce(Z, Z[:3], QUEUE), "q"),
    (lambda: moco_info_nce(Z, Z, torch.randn(10, 5)), "queue"),
    (lambda: moco_info_nce(Z, Z, QUEUE, queue_mask=torch.zeros(4, 9, dtype=torch.bool)),
     "queue_mask"),
    (lambda: moco_info_nce(Z, Z, QUEUE, queue_mask=torch.zeros(4, 10)), "queue_mask"),
    (lambda: moco_info_nce(Z, Z, QUEUE, extra_negatives=torch.randn(4, 8)), "extra_negatives"),
    (lambda: moco_info_nce(Z, Z, QUEUE, extra_negatives=torch.randn(3, 2, 8)), "extra_negatives"),
    (lambda: moco_info_nce(Z, Z, QUEUE, extra_negatives=torch.randn(4, 2, 7)), "extra_negatives"),
    (lambda: mochi_negatives(Z, QUEUE, 0, 1, 1), "n_hardest"),
    (lambda: mochi_negatives(Z, QUEUE, 11, 1, 1), "n_hardest"),
    (lambda: mochi_negatives(Z, QUEUE, 2.5, 1, 1), "n_hardest"),
    (lambda: mochi_negatives(Z, QUEUE, 3, -1, 1), "n_mix_negatives"),
    (lambda: mochi_negatives(Z, QUEUE, 3, 1, -1), "n_mix_query"),
    (lambda: mochi_negatives(Z, torch.randn(10, 5), 3, 1, 1), "queue"),
    (lambda: mochi_negatives(Z, QUEUE, 3, 1, 1, queue_mask=torch.zeros(10, 4, dtype=torch.bool)),
     "queue_mask"),
    (lambda: mochi_negatives(Z, QUEUE, 3, 1, 1, queue_mask=torch.arange(10).expand(4, 10) < 8),
     "n_hardest"),
])
def test_bad_input_names_the_argument(call, argname):
    with pytest.raises(ValueError, match=argname):
        call()


def test_n_hardest_error_gives_the_queue_size():
    with pytest.raises(ValueError, match=r"n_hardest.*K = 10.*11"):
        mochi_negatives(Z, QUEUE, 11, 1, 1)


# ---------------------------------------------------------------- edges found by tools/mutate.py

Q, K, SMALL_QUEUE = randn(0, 3, 6), randn(1, 3, 6), randn(2, 5, 6)


def test_mochi_with_two_hardest_never_pairs_an_entry_with_itself():
    mix = mochi_mix(Q, SMALL_QUEUE, n_hardest=2, n_mix_negatives=40, n_mix_query=0,
                    generator=torch.Generator().manual_seed(0))
    assert (mix.pair_index[..., 0] != mix.pair_index[..., 1]).all()


def test_mochi_draws_every_ordered_pair_of_the_hardest_set():
    mix = mochi_mix(Q, SMALL_QUEUE, n_hardest=3, n_mix_negatives=200, n_mix_query=0,
                    generator=torch.Generator().manual_seed(0))
    for b in range(len(Q)):
        position = {int(j): p for p, j in enumerate(mix.hardest_index[b])}
        pairs = [(position[int(i)], position[int(j)]) for i, j in mix.pair_index[b]]
        counts = {pair: pairs.count(pair) for pair in set(pairs)}
        assert set(counts) == {(a, c) for a in range(3) for c in range(3) if a != c}
        assert min(counts.values()) > 200 / 6 / 2          # about evenly: 33 each expected


def test_mochi_coefficients_cover_their_whole_ranges():
    mix = mochi_mix(Q, SMALL_QUEUE, n_hardest=3, n_mix_negatives=100, n_mix_query=100,
                    generator=torch.Generator().manual_seed(0))
    assert 0 <= mix.alpha.min() < 0.05 and 0.95 < mix.alpha.max() <= 1           # alpha ~ U(0, 1)
    assert 0 <= mix.beta.min() < 0.03 and 0.47 < mix.beta.max() < 0.5            # beta ~ U(0, 0.5)


def test_mochi_n_hardest_may_be_the_whole_queue_or_all_the_mask_leaves():
    assert mochi_mix(Q, SMALL_QUEUE, n_hardest=5, n_mix_negatives=2,
                     n_mix_query=2).hardest_index.shape == (3, 5)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    # 3 entries left to each query
    mask[:, :2] = True
    mix = mochi_mix(Q, SMALL_QUEUE, n_hardest=3, n_mix_negatives=2, n_mix_query=2, queue_mask=mask)
    assert sorted(mix.hardest_index[0].tolist()) == [2, 3, 4]
    with pytest.raises(ValueError, match="n_hardest"):
        mochi_mix(Q, SMALL_QUEUE, n_hardest=4, n_mix_negatives=2, n_mix_query=2, queue_mask=mask)
    with pytest.raises(ValueError, match="n_hardest"):
        mochi_mix(Q, SMALL_QUEUE, n_hardest=6, n_mix_negatives=2, n_mix_query=2)


def test_moco_extra_negatives_are_normalised():
    extra = randn(3, 3, 4, 6)
    unit = extra / extra.norm(dim=2, keepdim=True)
    assert torch.allclose(moco_info_nce(Q, K, SMALL_QUEUE, extra_negatives=5 * extra),
                          moco_info_nce(Q, K, SMALL_QUEUE, extra_negatives=unit), atol=1e-6)


def test_moco_mask_check_counts_extra_negatives_as_negatives():
    everything = torch.ones(3, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="queue_mask"):
        moco_info_nce(Q, K, SMALL_QUEUE, queue_mask=everything)
    with pytest.raises(ValueError, match="queue_mask"):
        moco_info_nce(Q, K, SMALL_QUEUE, queue_mask=everything,
                      extra_negatives=Q.new_zeros(3, 0, 6))
    loss = moco_info_nce(Q, K, SMALL_QUEUE, queue_mask=everything,
                         extra_negatives=randn(3, 3, 2, 6))
    assert torch.isfinite(loss) and loss > 0


@pytest.mark.parametrize("loss", [dcl, hcl])
def test_tau_plus_one_divides_by_zero_and_is_refused(loss):
    with pytest.raises(ValueError, match=r"tau_plus must be in \[0.0, 1.0\), got 1.0"):
        loss(Q, K, tau_plus=1.0)
    assert torch.isfinite(loss(Q, K, tau_plus=0.999))
    assert torch.isfinite(loss(Q, K, tau_plus=0.0))


def test_hcl_beta_range_is_zero_to_infinity_open():
    with pytest.raises(ValueError, match=r"beta must be in \[0.0, inf\), got inf"):
        hcl(Q, K, beta=math.inf)
    assert torch.allclose(hcl(Q, K, beta=0.0), dcl(Q, K))
    with pytest.raises(ValueError, match="beta"):
        hcl(Q, K, beta=-1e-9)


@pytest.mark.parametrize("loss,documented,other", [
    (info_nce, dict(temperature=0.5), dict(temperature=0.2)),
    (dcl, dict(temperature=0.5, tau_plus=0.1), dict(temperature=0.2, tau_plus=0.2)),
    (hcl, dict(temperature=0.5, tau_plus=0.1, beta=1.0),
     dict(temperature=0.2, tau_plus=0.2, beta=2.0)),
    (sce_in_batch, dict(temperature=0.1, temperature_momentum=0.05, lam=0.5),
     dict(temperature=0.2, temperature_momentum=0.1, lam=0.25)),
])
def test_pair_loss_defaults_are_the_documented_values(loss, documented, other):
    assert torch.equal(loss(Q, K), loss(Q, K, **documented))
    for name, value in other.items():                       # each default matters on these inputs
        assert not torch.allclose(loss(Q, K, **documented),
                                  loss(Q, K, **{**documented, name: value}))


@pytest.mark.parametrize("loss,documented,other", [
    (moco_info_nce, dict(temperature=0.2), dict(temperature=0.1)),
    (sce, dict(temperature=0.1, temperature_momentum=0.05, lam=0.5),
     dict(temperature=0.2, temperature_momentum=0.1, lam=0.25)),
    (lambda q, k, queue, **kw: sce_target(k, queue, **kw), dict(temperature_momentum=0.05, lam=0.5),
     dict(temperature_momentum=0.1, lam=0.25)),
])
def test_queue_loss_defaults_are_the_documented_values(loss, documented, other):
    assert torch.equal(loss(Q, K, SMALL_QUEUE), loss(Q, K, SMALL_QUEUE, **documented))
    for name, value in other.items():
        assert not torch.allclose(loss(Q, K, SMALL_QUEUE, **documented),
                                  loss(Q, K, SMALL_QUEUE, **{**documented, name: value}))


def test_mochi_mixes_in_float32_whatever_the_input_precision():
    mix = mochi_mix(Q.bfloat16(), SMALL_QUEUE.bfloat16(), n_hardest=3, n_mix_negatives=2,
                    n_mix_query=2, generator=torch.Generator().manual_seed(0))
    reference = mochi_mix(Q.bfloat16().float(), SMALL_QUEUE.bfloat16().float(), n_hardest=3,
                          n_mix_negatives=2, n_mix_query=2,
                          generator=torch.Generator().manual_seed(0))
    assert mix.negatives.dtype == torch.float32 and torch.equal(mix.negatives, reference.negatives)


def test_the_documented_defaults_are_the_papers():
    import inspect

    def default(function, name):
        return inspect.signature(function).parameters[name].default

    assert default(losses.multiview_info_nce, "temperature") == 0.5
    assert default(losses.supcon, "temperature") == 0.1   # the SupContrast CIFAR recipe: tau = 0.1
    # CACR: kappa+ = 1, kappa- = 0.9, gamma+ = gamma- = 1
    for cacr in (losses.cacr, losses.cacr_terms):
        assert [default(cacr, name)
                for name in ("tau_pos", "tau_neg", "alpha", "beta")] == [1.0, 0.9, 1.0, 1.0]
        assert default(cacr, "weights") == "both" and default(cacr, "detach_weights") is False


def test_keys_and_queue_get_no_gradient():
    generator = torch.Generator().manual_seed(0)
    q, k = (torch.randn(4, 8, generator=generator, requires_grad=True) for _ in range(2))
    queue = torch.randn(16, 8, generator=generator, requires_grad=True)

    def logits_alone(q, k, queue):   # moco_logits detaches by itself, whoever calls it
        return losses.moco_logits(q, k, queue, 0.2).logsumexp(dim=1).sum()

    for loss in (losses.moco_info_nce, losses.sce, logits_alone):
        loss(q, k, queue).backward()
        assert q.grad is not None and k.grad is None and queue.grad is None
        q.grad = None


def test_sce_in_batch_needs_two_images_and_takes_two():
    generator = torch.Generator().manual_seed(0)
    z1, z2 = (torch.randn(2, 8, generator=generator) for _ in range(2))
    assert torch.isfinite(losses.sce_in_batch(z1, z2))
    with pytest.raises(ValueError, match="at least 2 images"):
        losses.sce_in_batch(z1[:1], z2[:1])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_two_view_losses_compute_in_float32_from_half_precision_embeddings(dtype):
    z1, z2 = views(3, 5, 8)
    for loss in (lambda a, b: info_nce(a, b, 0.5), lambda a, b: dcl(a, b, 0.5, 0.1),
                 lambda a, b: hcl(a, b, 0.5, 0.1, 1.0)):
        low = loss(z1.to(dtype), z2.to(dtype))
        assert low.dtype == torch.float32
        assert torch.allclose(low, loss(z1.to(dtype).float(), z2.to(dtype).float()), atol=1e-6)


def test_moco_info_nce_keeps_keys_queue_and_extra_negatives_constant_whatever_logits_it_is_given():
    q, k, queue, extra = randn(0, 3, 8), randn(1, 3, 8), randn(2, 10, 8), randn(3, 3, 2, 8)
    for x in (q, k, queue, extra):
        x.requires_grad_(True)

    def students_logits(q, k, queue, temperature):   # a notebook 03 student who forgot to detach
        return torch.cat([(q * k).sum(dim=1, keepdim=True), q @ queue.T], dim=1) / temperature

    loss = moco_info_nce(q, k, queue, extra_negatives=extra.bfloat16(), logits=students_logits)
    loss.backward()
    assert q.grad.abs().sum() > 0 and k.grad is None and queue.grad is None and extra.grad is None
    # half-precision extra negatives are read in float32, like the rest
    assert loss == moco_info_nce(q, k, queue, extra_negatives=extra.bfloat16().float(),
                                 logits=students_logits)
