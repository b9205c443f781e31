"""SCE (notebook 07): the soft target and both forms of the loss against slow per-query loops, their reductions
(lambda = 1 is MoCo's InfoNCE), stop-gradients and bad input; the SCE method on MoCo v2 (weak view to the
momentum encoder, split BN there only, a student's loss trains it); the soft-target diagnostics."""
import functools
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from clcourse.augment import simclr_cifar, weak
from clcourse.diagnostics import (keys, queries, same_class_similarity, soft_targets, soft_targets_from_embeddings,
                                  target_spread)
from clcourse.losses import moco_info_nce, sce, sce_in_batch, sce_target
from clcourse.methods import SCE, Batch, MoCo, build_method
from clcourse.models import Backbone, SmallCNN, SplitBatchNorm2d
from helpers import fit, flipped_views, noisy_views, randn, random_unit, reference_sce, tiny_sce

DIM = 8


def inputs(seed=0, batch=5, size=11, dim=DIM, masked=False):
    """Raw (not unit) q, k, queue, and optionally a mask that leaves every query at least one entry."""
    q, k, queue = (randn(seed, batch, dim, dtype=torch.float64) * 2,
                   randn(seed + 1, batch, dim, dtype=torch.float64) * 0.5,
                   randn(seed + 2, size, dim, dtype=torch.float64) * 3)
    mask = None
    if masked:
        mask = torch.rand(batch, size, generator=torch.Generator().manual_seed(seed + 3)) < 0.3
        mask[:, -1] = False
    return q, k, queue, mask


# ---------------------------------------------------------------- slow references

def reference_in_batch(z1, z2, temperature, temperature_momentum, lam):
    """The paper's equation, term by term: s2_ik, w2_ik, p1_ik."""
    u1, u2 = F.normalize(z1, dim=1), F.normalize(z2.detach(), dim=1)
    n, total = len(u1), 0.0
    for i in range(n):
        others = [math.exp(float(u2[i] @ u2[j]) / temperature_momentum) for j in range(n) if j != i]
        denominator = torch.stack([torch.exp(u1[i] @ u2[j] / temperature) for j in range(n)]).sum()
        for kk in range(n):
            s2 = 0.0 if kk == i else math.exp(float(u2[i] @ u2[kk]) / temperature_momentum) / sum(others)
            w2 = lam * (kk == i) + (1 - lam) * s2
            total = total - w2 * torch.log(torch.exp(u1[i] @ u2[kk] / temperature) / denominator)
    return total / n


def value_and_grad(fn, q):
    q = q.clone().requires_grad_()
    value = fn(q)
    gradient, = torch.autograd.grad(value, q)
    return value.detach(), gradient


# ---------------------------------------------------------------- the loss

@pytest.mark.parametrize("temperature, temperature_momentum, lam, masked", [
    (0.1, 0.05, 0.5, False), (0.2, 0.1, 0.3, True), (0.5, 0.5, 0.0, True), (0.07, 0.04, 0.9, False),
])
def test_sce_value_and_gradient_match_the_loop(temperature, temperature_momentum, lam, masked):
    q, k, queue, mask = inputs(masked=masked)
    value, gradient = value_and_grad(lambda x: sce(x, k, queue, temperature, temperature_momentum, lam, mask), q)
    expected, expected_gradient = value_and_grad(
        lambda x: reference_sce(x, k, queue, temperature, temperature_momentum, lam, mask), q)
    assert torch.allclose(value.double(), expected, atol=1e-5)
    assert torch.allclose(gradient.double(), expected_gradient, atol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_lambda_one_is_moco_info_nce(masked):
    q, k, queue, mask = inputs(seed=4, masked=masked)
    value, gradient = value_and_grad(lambda x: sce(x, k, queue, 0.2, 0.05, 1.0, mask), q)
    expected, expected_gradient = value_and_grad(lambda x: moco_info_nce(x, k, queue, 0.2, queue_mask=mask), q)
    assert torch.allclose(value, expected, atol=1e-6) and torch.allclose(gradient, expected_gradient, atol=1e-6)


def test_loss_is_linear_in_lambda_between_infonce_and_the_relational_loss():
    q, k, queue, mask = inputs(seed=6, masked=True)
    relational, infonce = (sce(q, k, queue, 0.1, 0.05, lam, mask) for lam in (0.0, 1.0))
    for lam in (0.25, 0.5, 0.8):
        assert torch.allclose(sce(q, k, queue, 0.1, 0.05, lam, mask), lam * infonce + (1 - lam) * relational, atol=1e-5)
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
    for b in range(5):     # the queue part, one query at a time: (1 - lam) exp(k.n / tau_m) / sum over the allowed n
        allowed = [j for j in range(11) if mask is None or not mask[b, j]]
        weights = torch.exp(unit_queue[allowed] @ unit_k[b] / 0.05)
        assert torch.allclose(target[b, 1:][allowed].double(), (1 - lam) * weights / weights.sum(), atol=1e-6)


def test_target_leaves_the_self_slot_out_unlike_the_deprecated_code():
    # The deprecated code puts the key itself into the relation with logit 0: a small, nonzero weight.
    _, k, queue, _ = inputs(seed=9)
    target = sce_target(k, queue, 0.05, 0.5)
    scores = F.normalize(k, dim=1) @ F.normalize(queue, dim=1).T / 0.05
    with_self_slot = torch.cat([torch.zeros(5, 1, dtype=scores.dtype), scores], dim=1)
    deprecated_positive = 0.5 + 0.5 * torch.softmax(with_self_slot, dim=1)[:, 0]
    assert (deprecated_positive > target[:, 0]).all()


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
    assert torch.allclose(sce(q, k, queue, 0.1, 0.05, 0.5, mask), sce(q, k, queue[kept], 0.1, 0.05, 0.5), atol=1e-6)


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
    expected, expected_gradient = value_and_grad(lambda x: reference_in_batch(x, z2, 0.2, 0.1, lam), z1)
    assert torch.allclose(value.double(), expected, atol=1e-5)
    assert torch.allclose(gradient.double(), expected_gradient, atol=1e-5)
    # image i with key z2_i and the other images' z2 as its queue
    per_image = torch.stack([sce(z1[i:i + 1], z2[i:i + 1], z2[[j for j in range(6) if j != i]], 0.2, 0.1, lam)
                             for i in range(6)])
    assert torch.allclose(value, per_image.mean(), atol=1e-5)
    z1, z2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    sce_in_batch(z1, z2, 0.2, 0.1, lam).backward()
    assert z1.grad is not None and z2.grad is None


@pytest.mark.parametrize("call, message", [
    (lambda q, k, Q: sce(q, k, Q, lam=1.5), r"lam must be in \[0.0, 1.0\], got 1.5"),
    (lambda q, k, Q: sce(q, k, Q, lam=-0.1), r"lam must be in \[0.0, 1.0\], got -0.1"),
    (lambda q, k, Q: sce(q, k, Q, temperature=0.0), "temperature must be a finite number > 0, got 0.0"),
    (lambda q, k, Q: sce(q, k, Q, temperature_momentum=-1.0),
     "temperature_momentum must be a finite number > 0, got -1.0"),
    (lambda q, k, Q: sce(q, k, Q[:, :4]), r"queue must have the embedding size of k \(8\).*got shape \(11, 4\)"),
    (lambda q, k, Q: sce(q, k[:3], Q), r"q and k must have the same shape, got \(5, 8\) and \(3, 8\)"),
    (lambda q, k, Q: sce(q[:, :4], k, Q), r"q and k must have the same shape"),
    (lambda q, k, Q: sce(q, k, Q, queue_mask=torch.zeros(5, 10, dtype=torch.bool)), r"queue_mask .* \[5, 11\]"),
    (lambda q, k, Q: sce_target(k, Q, lam=2), r"lam must be in \[0.0, 1.0\], got 2"),
    (lambda q, k, Q: sce_target(k, Q, temperature_momentum=0), "temperature_momentum must be a finite number > 0"),
    (lambda q, k, Q: sce_in_batch(q, k[:, :4]), "z1 and z2 must have the same shape"),
    (lambda q, k, Q: sce_in_batch(q[:1], k[:1]), "at least 2 images"),
    (lambda q, k, Q: sce_in_batch(q, k, lam=float("nan")), r"lam must be in \[0.0, 1.0\], got nan"),
])
def test_bad_input_names_the_argument_the_value_and_the_range(call, message):
    q, k, queue, _ = inputs()
    with pytest.raises(ValueError, match=message):
        call(q.float(), k.float(), queue.float())


# ---------------------------------------------------------------- the method

def batch_of(method, images, index, seed=1):
    views = method.make_views(images[index], torch.Generator().manual_seed(seed))
    return Batch(views, images[index], None, index)


def test_defaults_are_the_authors_cifar10_configuration():
    method = SCE(Backbone(SmallCNN(width=4)))
    assert (method.lam, method.temperature, method.temperature_momentum) == (0.5, 0.1, 0.05)
    assert method.queue.shape[0] == 4096 and method.momentum == 0.99 and not method.symmetric
    assert method.bn_splits == 8 and SCE.lr == 0.06 and method.loss is sce
    strong, weak_view = method.view_recipes
    assert repr(strong) == repr(simclr_cifar()) and repr(weak_view) == repr(weak())
    assert build_method("sce", Backbone(SmallCNN(width=4)), lam=0.2).lam == 0.2


def test_the_weak_view_goes_to_the_momentum_encoder_and_the_strong_one_to_the_online_encoder(images):
    calls = []

    def strong(x, generator=None):
        calls.append("strong")
        return noisy_views(x, generator)

    def weak_recipe(x, generator=None):
        calls.append("weak")
        return flipped_views(x, generator)

    method = tiny_sce(augment=strong, key_augment=weak_recipe).eval()
    index = torch.arange(8)
    batch = batch_of(method, images, index)
    assert calls == ["strong", "weak"]
    method.enqueue(random_unit(32, 0), torch.arange(32) + 100)
    queue_before = method.queue.clone()
    output = method.training_step(batch)
    with torch.no_grad():
        q = F.normalize(method.projector(method.backbone(batch.views[0])), dim=1)
        k = F.normalize(method.key_projector(method.key_backbone(batch.views[1])), dim=1)
    assert torch.allclose(output.loss, sce(q, k, queue_before, 0.1, 0.05, 0.5), atol=1e-5)
    method.on_step_end(batch, output)
    assert torch.allclose(method.queue[:8], k, atol=1e-6) and method.queue_index[:8].tolist() == index.tolist()


def test_split_batchnorm_only_in_the_momentum_encoder_and_the_ema_pairs_every_parameter():
    method = tiny_sce(bn_splits=4)
    assert not any(isinstance(m, SplitBatchNorm2d) for m in method.backbone.modules())
    norms = [m for m in method.key_backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(isinstance(m, SplitBatchNorm2d) and m.num_splits == 4 for m in norms)
    assert [p.shape for p in method.query_parameters()] == [p.shape for p in method.key_parameters()]
    with torch.no_grad():
        for p in method.query_parameters():
            p.add_(torch.randn_like(p))
    old = [p.clone() for p in method.key_parameters()]
    method.momentum_update_fn(method.key_encoder(), method.query_encoder(), 0.9)
    for key, before, query in zip(method.key_parameters(), old, method.query_parameters()):
        assert torch.allclose(key, 0.9 * before + 0.1 * query, atol=1e-6)
    assert method.config()["bn_splits"] == 4


def test_lambda_one_gives_moco_v2s_loss_on_the_same_weights_and_queue():
    sce_method, moco = tiny_sce(lam=1.0).eval(), tiny_sce(cls=MoCo, bn_splits=1).eval()
    moco.load_state_dict(sce_method.state_dict())     # SplitBatchNorm2d keeps BatchNorm2d's parameters and buffers
    index = torch.tensor([0, 1, 2, 3])
    sce_method.enqueue(random_unit(32, 0), torch.arange(32) % 6)
    moco.enqueue(sce_method.queue, sce_method.queue_index)
    q, k = random_unit(4, 1), random_unit(4, 2)
    assert torch.allclose(sce_method.query_loss(q, k, index), moco.query_loss(q, k, index), atol=1e-6)
    assert not torch.allclose(tiny_sce(lam=0.5).query_loss(q, k, index), moco.query_loss(q, k, index), atol=1e-3)


def test_same_image_keys_are_masked_in_the_target_and_the_prediction():
    method = tiny_sce(queue_size=12).eval()
    index = torch.tensor([3, 5, 7, 9])
    method.enqueue(random_unit(12, 0), torch.tensor([3, 5, 7, 9, 3, 20, 21, 22, 23, 24, 25, 9]))
    q, k = random_unit(4, 1).requires_grad_(), random_unit(4, 2)
    excluded = index[:, None] == method.queue_index[None, :]
    loss = method.query_loss(q, k, index)
    expected = reference_sce(q.double(), k.double(), method.queue.double(), 0.1, 0.05, 0.5, excluded)
    assert torch.allclose(loss.double(), expected, atol=1e-5)


def test_no_gradient_into_the_momentum_encoder_and_momentum_one_freezes_it(images):
    method = tiny_sce()
    method.training_step(batch_of(method, images, torch.arange(8))).loss.backward()
    assert all(not p.requires_grad and p.grad is None for p in method.key_parameters())
    assert all(p.grad is not None for p in method.query_parameters())
    frozen = tiny_sce(momentum=1.0)
    before = [p.clone() for p in frozen.key_parameters()]
    fit(frozen, images, epochs=1, batch_size=8, lr=0.1, progress=False)
    assert all(torch.equal(p, b) for p, b in zip(frozen.key_parameters(), before))


def student_sce(q, k, queue, temperature, temperature_momentum, lam, queue_mask=None):
    logits = torch.cat([(q * k.detach()).sum(1, keepdim=True), q @ queue.detach().T], dim=1) / temperature
    with torch.no_grad():
        scores = k @ queue.T / temperature_momentum
        if queue_mask is not None:
            scores = scores.masked_fill(queue_mask, float("-inf"))
        target = torch.cat([torch.full((len(k), 1), lam), (1 - lam) * torch.softmax(scores, dim=1)], dim=1)
    if queue_mask is not None:
        logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(queue_mask, float("-inf"))], dim=1)
    return -(target * torch.log_softmax(logits, dim=1).masked_fill(target == 0, 0)).sum(1).mean()


def test_a_students_loss_is_what_trains(images):
    seen = []

    def spying(*args, **kwargs):
        seen.append((args[0].dtype, torch.is_autocast_enabled("cpu"), args[3:6], "queue_mask" in kwargs))
        return student_sce(*args, **kwargs)

    library, student = tiny_sce(queue_size=24), tiny_sce(queue_size=24, loss=spying)
    histories = [fit(m, images, epochs=2, batch_size=16, lr=0.1, progress=False, log_every=1)
                 for m in (library, student)]
    assert [r["loss"] for r in histories[0].steps] == pytest.approx([r["loss"] for r in histories[1].steps], abs=1e-4)
    assert torch.allclose(student.queue, library.queue, atol=1e-4)
    assert seen[-1] == (torch.float32, False, (0.1, 0.05, 0.5), True)
    assert student.config()["functions"]["loss"] == f"{__name__}.test_a_students_loss_is_what_trains.<locals>.spying"

    def no_soft_target(q, k, queue, temperature, temperature_momentum, lam, queue_mask=None):
        return student_sce(q, k, queue, temperature, temperature_momentum, 1.0, queue_mask)
    wrong = tiny_sce(loss=no_soft_target).eval()
    right = tiny_sce().eval()
    q, k = random_unit(4, 1), random_unit(4, 2)
    assert not torch.allclose(wrong.query_loss(q, k, torch.arange(4)), right.query_loss(q, k, torch.arange(4)))


def test_compiled_step_gives_the_eager_numbers(images, monkeypatch):
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    losses = []
    for compile in (False, True):
        history = fit(tiny_sce(), images, epochs=1, batch_size=16, lr=0.1, compile=compile, log_every=1, progress=False)
        losses.append([r["loss"] for r in history.steps])
    assert losses[0] == losses[1]


@pytest.mark.parametrize("options, message", [
    (dict(lam=1.2), r"lam must be in \[0.0, 1.0\], got 1.2"),
    (dict(temperature_momentum=0.0), "temperature_momentum must be a finite number > 0, got 0.0"),
    (dict(temperature=-1.0), "temperature must be a finite number > 0, got -1.0"),
    (dict(bn_splits=0), "bn_splits must be an integer >= 1, got 0"),
    (dict(loss="sce"), "loss must be a function"),
    (dict(logits=lambda *a: None), "logits is not an option of SCE"),
])
def test_bad_method_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        tiny_sce(**options)


def test_config_records_the_new_hyperparameters_and_views():
    config = tiny_sce(lam=0.3, temperature_momentum=0.07).config()
    assert config["name"] == "SCE" and config["lam"] == 0.3 and config["temperature_momentum"] == 0.07
    assert config["views"] == ["helpers.noisy_views", "helpers.flipped_views"]
    assert config["functions"] == {"loss": "clcourse.losses.sce",
                                   "momentum_update": "clcourse.methods.moco.update_key_encoder",
                                   "enqueue": "clcourse.methods.moco.ring_buffer_enqueue",
                                   "step": "clcourse.methods.moco.moco_step"}


# ---------------------------------------------------------------- diagnostics

def test_keys_are_the_momentum_encoders_unit_embeddings_in_eval_mode(trained_sce, images):
    k = keys(trained_sce, images[:10], batch_size=3)
    trained_sce.eval()
    with torch.no_grad():
        expected = F.normalize(trained_sce.key_projector(trained_sce.key_backbone(images[:10].float() / 255)), dim=1)
    trained_sce.train()
    assert torch.allclose(k, expected, atol=1e-5) and trained_sce.training


def test_soft_targets_of_the_method_are_the_losss_target_and_prediction(trained_sce, images):
    index = torch.arange(6)
    targets = soft_targets(trained_sce, images[:6], index=index)
    q, k = queries(trained_sce, images[:6]), keys(trained_sce, images[:6])
    mask = index[:, None] == trained_sce.queue_index[None, :]
    assert mask.any()          # 2 epochs of 48 images through a queue of 24: some keys are the queries' own
    assert torch.allclose(targets.target, sce_target(k, trained_sce.queue, 0.05, 0.5, mask), atol=1e-6)
    logits = torch.cat([(q * k).sum(1, keepdim=True), (q @ trained_sce.queue.T).masked_fill(mask, float("-inf"))], 1) / 0.1
    assert torch.allclose(targets.prediction, torch.softmax(logits, dim=1), atol=1e-6)
    assert torch.allclose(targets.push, targets.prediction - targets.target)


def test_a_moco_method_defaults_to_its_one_hot_target(images):
    moco = tiny_sce(cls=MoCo, queue_size=24)
    fit(moco, images, epochs=1, batch_size=8, lr=0.1, progress=False)
    targets = soft_targets(moco, images[:4])
    assert targets.lam == 1.0 and torch.equal(targets.target[:, 1:], torch.zeros(4, 24))
    assert torch.allclose(targets.relation.sum(1), torch.ones(4))


def test_target_spread_against_a_loop():
    generator = torch.Generator().manual_seed(0)
    q, k, queue = (F.normalize(torch.randn(n, DIM, generator=generator), dim=1) for n in (4, 4, 9))
    queue_index = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 0])
    train_labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    labels = torch.tensor([0, 1, 2, 0])
    mask = torch.zeros(4, 9, dtype=torch.bool)
    mask[0, [0, 8]] = True
    targets = soft_targets_from_embeddings(q * 3, k, queue, queue_index, 0.2, 0.1, 0.4, mask)
    spread = target_spread(targets, labels, train_labels)
    for i in range(4):
        allowed = [j for j in range(9) if not mask[i, j]]
        relation = torch.softmax(queue[allowed] @ k[i] / 0.1, dim=0)
        logits = torch.cat([(q[i] @ k[i])[None], queue[allowed] @ q[i]]) / 0.2
        p = torch.softmax(logits, dim=0)[1:]
        same = torch.tensor([int(train_labels[queue_index[j]]) == int(labels[i]) for j in allowed])
        assert torch.isclose(spread.same_class_mass[i], relation[same].sum(), atol=1e-6)
        assert torch.isclose(spread.same_class_share[i], same.float().mean(), atol=1e-6)
        assert torch.isclose(spread.effective_entries[i], torch.exp(-(relation * relation.log()).sum()), atol=1e-4)
        assert torch.isclose(spread.same_class_push[i], (p - 0.6 * relation)[same].sum(), atol=1e-6)
        assert torch.isclose(spread.infonce_same_class_push[i], p[same].sum(), atol=1e-6)


def test_same_class_similarity_against_a_loop():
    z = randn(30, 7, 4, dtype=torch.float32)
    labels = torch.tensor([0, 1, 0, 1, 2, 0, 2])
    same, other = same_class_similarity(z, labels)
    u = F.normalize(z, dim=1)
    pairs = [(float(u[i] @ u[j]), bool(labels[i] == labels[j])) for i in range(7) for j in range(7) if i != j]
    assert math.isclose(same.item(), np.mean([s for s, flag in pairs if flag]), abs_tol=1e-6)
    assert math.isclose(other.item(), np.mean([s for s, flag in pairs if not flag]), abs_tol=1e-6)
    with pytest.raises(ValueError, match="at least 2 rows"):
        same_class_similarity(z[:1], labels[:1])
