"""Losses against slow references that loop over anchors in float64, one formula line per paper equation."""
import math

import pytest
import torch
import torch.nn.functional as F

from clcourse.losses import dcl, hcl, info_nce, mochi_mix, mochi_negatives, moco_info_nce, positive_index
from helpers import randn

SHAPES = [(2, 3), (2, 16), (5, 3), (5, 16)]  # (B, D)
TEMPERATURES = [0.1, 0.5, 1.0]
SEEDS = [0, 1, 2]


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
        assert torch.allclose(grad, expected_grad, atol=atol, rtol=rtol), (grad - expected_grad).abs().max()


# ---------------------------------------------------------------- references (float64, one anchor at a time)

def anchor_terms(z1, z2, temperature):
    """For each of the 2B anchors: pos = exp(s+/t) and the list of neg_j = exp(s_j/t), j not i, not p(i)."""
    u = F.normalize(torch.cat([z1, z2]), dim=1)
    n, batch = len(u), len(z1)
    for i in range(n):
        p = (i + batch) % n
        pos = torch.exp(u[i] @ u[p] / temperature)
        negs = [torch.exp(u[i] @ u[j] / temperature) for j in range(n) if j not in (i, p)]
        yield pos, negs


def reference_info_nce(z1, z2, temperature):
    losses = [-torch.log(pos / (pos + sum(negs))) for pos, negs in anchor_terms(z1, z2, temperature)]
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
        ng = max((sum(negs) - tau_plus * n * pos) / (1 - tau_plus), torch.tensor(n * math.exp(-1 / temperature)))
        losses.append(-torch.log(pos / (pos + ng)))
    return torch.stack(losses).mean()


def reference_moco(q, k, queue, temperature, queue_mask=None, extra_negatives=None):
    q, k, queue = F.normalize(q, dim=1), F.normalize(k.detach(), dim=1), F.normalize(queue.detach(), dim=1)
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
                                    lambda a, b: reference_info_nce(a, b, temperature), *views(seed, batch, dim))


def test_info_nce_closed_form_on_orthogonal_images():
    # Two images, identical views, orthogonal to each other: every anchor sees its positive at cosine 1
    # and two negatives at cosine 0, so the loss is log(1 + 2 e^{-1/t}).
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    for t in TEMPERATURES:
        assert torch.allclose(info_nce(z, 3 * z, t), torch.tensor(math.log(1 + 2 * math.exp(-1 / t))), atol=1e-6)


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
                                    lambda a, b: reference_dcl(a, b, temperature, tau_plus), *views(seed, batch, dim))


@pytest.mark.parametrize("batch,dim", SHAPES)
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("tau_plus,beta", [(0.1, 1.0), (0.0, 0.5), (0.2, 2.0)])
def test_hcl_value_and_gradient_match_the_authors_formula(batch, dim, temperature, tau_plus, beta):
    for seed in SEEDS:
        assert_same_value_and_grads(lambda a, b: hcl(a, b, temperature, tau_plus, beta),
                                    lambda a, b: reference_hcl(a, b, temperature, tau_plus, beta)[0],
                                    *views(seed, batch, dim))


@pytest.mark.parametrize("batch,dim", SHAPES)
def test_reductions_hcl_to_dcl_to_info_nce(batch, dim):
    for seed in SEEDS:
        z = views(seed, batch, dim)
        for t in TEMPERATURES:
            # with tau_plus = 0 the clamp cannot bind: the plain negative sum is already >= N e^{-1/t}
            assert reference_hcl(*[x.double() for x in z], t, tau_plus=0.0, beta=0.0)[1] == 0
            base, base_grads = value_and_grads(lambda a, b: info_nce(a, b, t), *z)
            for loss_fn in (lambda a, b: dcl(a, b, t, tau_plus=0.0), lambda a, b: hcl(a, b, t, tau_plus=0.0, beta=0.0)):
                loss, grads = value_and_grads(loss_fn, *z)
                assert torch.allclose(loss, base, atol=1e-6, rtol=1e-5)
                assert all(torch.allclose(g, h, atol=1e-6, rtol=1e-5) for g, h in zip(grads, base_grads))
            for tau_plus in (0.1, 0.5):
                loss, grads = value_and_grads(lambda a, b: hcl(a, b, t, tau_plus, beta=0.0), *z)
                expected, expected_grads = value_and_grads(lambda a, b: dcl(a, b, t, tau_plus), *z)
                assert torch.allclose(loss, expected, atol=1e-6, rtol=1e-5)
                assert all(torch.allclose(g, h, atol=1e-6, rtol=1e-5) for g, h in zip(grads, expected_grads))


@pytest.mark.parametrize("loss_name", ["dcl", "hcl"])
def test_active_clamp_matches_the_reference(loss_name):
    # Image 0's two views nearly coincide and image 1 sits on the opposite side: pos ~ e^{1/t} dwarfs the
    # two negatives ~ e^{-1/t}, so the debiased estimate goes negative and the floor N e^{-1/t} applies.
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
    with_weights, with_grads = value_and_grads(lambda a, b: reference_hcl(a, b, t, tau_plus, beta)[0], *z,
                                               dtype=torch.float64)
    detached, detached_grads = value_and_grads(
        lambda a, b: reference_hcl(a, b, t, tau_plus, beta, detach_importance=True)[0], *z, dtype=torch.float64)
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
    losses = [lambda: dcl(z1, z2, 0.2), lambda: hcl(z1, z2, 0.2), lambda: moco_info_nce(q, k, queue, 0.1)]
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
        q, k, queue = randn(seed, batch, dim), randn(seed + 10, batch, dim), randn(seed + 20, 7, dim)
        assert_same_value_and_grads(lambda a: moco_info_nce(a, k, queue, temperature),
                                    lambda a: reference_moco(a, k.double(), queue.double(), temperature), q)


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
    # Refused by default (that query learns nothing); check_mask=False, for callers that proved the mask once,
    # computes it as the loop does.
    with pytest.raises(ValueError, match="queue_mask masks every queue entry of some query"):
        moco_info_nce(q, k, queue, 0.2, queue_mask=mask)
    assert_same_value_and_grads(lambda a: moco_info_nce(a, k, queue, 0.2, queue_mask=mask, check_mask=False),
                                lambda a: reference_moco(a, k.double(), queue.double(), 0.2, mask), q)
    one_at_a_time = torch.stack([moco_info_nce(q[b:b + 1], k[b:b + 1], queue[~mask[b]], 0.2) if (~mask[b]).any()
                                 else torch.tensor(0.0) for b in range(4)]).mean()
    assert torch.allclose(moco_info_nce(q, k, queue, 0.2, queue_mask=mask, check_mask=False), one_at_a_time)


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
    assert torch.equal(moco_info_nce(q, k, queue, extra_negatives=empty), moco_info_nce(q, k, queue))


# ---------------------------------------------------------------- MoCHi

def mochi_inputs(seed=0, batch=4, queue_size=30, dim=8):
    return randn(seed, batch, dim), randn(seed + 1, queue_size, dim)


def test_mochi_shapes_unit_norm_ranges_and_no_gradient():
    q, queue = mochi_inputs()
    q.requires_grad_(True)
    queue.requires_grad_(True)
    mix = mochi_mix(q, queue, n_hardest=6, n_mix_negatives=5, n_mix_query=3, generator=torch.Generator().manual_seed(0))
    assert mix.negatives.shape == (4, 8, 8) and mix.negatives.dtype == torch.float32
    assert mix.hardest_index.shape == (4, 6) and mix.pair_index.shape == (4, 5, 2)
    assert mix.alpha.shape == (4, 5) and mix.query_pair_index.shape == (4, 3) and mix.beta.shape == (4, 3)
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
    assert (mix.pair_index[..., 0] != mix.pair_index[..., 1]).all()  # two different negatives when N >= 2


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
    # Query b lives in the plane of coordinates (2b, 2b+1) and so do exactly 4 queue entries (shuffled
    # among the others); every other entry is orthogonal to it. With N = 4 its hardest set is that
    # cluster, so every synthetic negative of query b must stay in its plane. Indexing a flattened
    # [B*N, D] with [0, N) (the query-0 bug) would put query 0's plane into every query's negatives.
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
    mask.scatter_(1, similarity.topk(3, dim=1).indices, True)  # the 3 hardest of every query are false negatives
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
    (lambda: moco_info_nce(Z, Z, QUEUE, queue_mask=torch.zeros(4, 9, dtype=torch.bool)), "queue_mask"),
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
    (lambda: mochi_negatives(Z, QUEUE, 3, 1, 1, queue_mask=torch.zeros(10, 4, dtype=torch.bool)), "queue_mask"),
    (lambda: mochi_negatives(Z, QUEUE, 3, 1, 1, queue_mask=torch.arange(10).expand(4, 10) < 8), "n_hardest"),
])
def test_bad_input_names_the_argument(call, argname):
    with pytest.raises(ValueError, match=argname):
        call()


def test_n_hardest_error_gives_the_queue_size():
    with pytest.raises(ValueError, match=r"n_hardest.*K = 10.*11"):
        mochi_negatives(Z, QUEUE, 11, 1, 1)
