"""SCE (clcourse/methods/sce.py, notebook 07) on MoCo v2: the authors' defaults, the weak view to
the momentum encoder, split batch-norm there only, lambda = 1 is MoCo v2's loss, same-image keys
masked, no gradient into the momentum encoder, a student's loss trains it, compiled and eager agree,
bad options refused. (The loss itself: tests/test_losses.py; its diagnostics:
tests/diagnostics/.)"""
import functools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import (
    fit,
    flipped_views,
    function_names,
    noisy_views,
    random_unit,
    reference_sce,
    tiny_sce,
)

from clcourse.augment import simclr_cifar, weak
from clcourse.losses import sce
from clcourse.methods import SCE, Batch, MoCo, build_method
from clcourse.models import Backbone, SmallCNN, SplitBatchNorm2d

DIM = 8


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


def test_the_weak_view_goes_to_the_momentum_encoder_and_the_strong_one_to_the_online_encoder(
        images):
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
    assert (torch.allclose(method.queue[:8], k, atol=1e-6)
            and method.queue_index[:8].tolist() == index.tolist())


def test_split_batchnorm_only_in_the_momentum_encoder_and_the_ema_pairs_every_parameter():
    method = tiny_sce(bn_splits=4)
    assert not any(isinstance(m, SplitBatchNorm2d) for m in method.backbone.modules())
    norms = [m for m in method.key_backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(isinstance(m, SplitBatchNorm2d) and m.num_splits == 4 for m in norms)
    assert [p.shape for p in method.query_parameters()] == [p.shape
                                                            for p in method.key_parameters()]
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
    # SplitBatchNorm2d keeps BatchNorm2d's parameters and buffers
    moco.load_state_dict(sce_method.state_dict())
    index = torch.tensor([0, 1, 2, 3])
    sce_method.enqueue(random_unit(32, 0), torch.arange(32) % 6)
    moco.enqueue(sce_method.queue, sce_method.queue_index)
    q, k = random_unit(4, 1), random_unit(4, 2)
    assert torch.allclose(sce_method.query_loss(q, k, index), moco.query_loss(q, k, index),
                          atol=1e-6)
    assert not torch.allclose(tiny_sce(lam=0.5).query_loss(q, k, index),
                              moco.query_loss(q, k, index), atol=1e-3)


def test_same_image_keys_are_masked_in_the_target_and_the_prediction():
    method = tiny_sce(queue_size=12).eval()
    index = torch.tensor([3, 5, 7, 9])
    method.enqueue(random_unit(12, 0), torch.tensor([3, 5, 7, 9, 3, 20, 21, 22, 23, 24, 25, 9]))
    q, k = random_unit(4, 1).requires_grad_(), random_unit(4, 2)
    excluded = index[:, None] == method.queue_index[None, :]
    loss = method.query_loss(q, k, index)
    expected = reference_sce(q.double(), k.double(), method.queue.double(), 0.1, 0.05, 0.5,
                             excluded)
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
    logits = torch.cat([(q * k.detach()).sum(1, keepdim=True), q @ queue.detach().T],
                       dim=1) / temperature
    with torch.no_grad():
        scores = k @ queue.T / temperature_momentum
        if queue_mask is not None:
            scores = scores.masked_fill(queue_mask, float("-inf"))
        target = torch.cat([torch.full((len(k), 1), lam), (1 - lam) * torch.softmax(scores, dim=1)],
                           dim=1)
    if queue_mask is not None:
        logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(queue_mask, float("-inf"))],
                           dim=1)
    return -(target * torch.log_softmax(logits, dim=1).masked_fill(target == 0, 0)).sum(1).mean()


def test_a_students_loss_is_what_trains(images):
    seen = []

    def spying(*args, **kwargs):
        seen.append(
            (args[0].dtype, torch.is_autocast_enabled("cpu"), args[3:6], "queue_mask" in kwargs))
        return student_sce(*args, **kwargs)

    library, student = tiny_sce(queue_size=24), tiny_sce(queue_size=24, loss=spying)
    histories = [fit(m, images, epochs=2, batch_size=16, lr=0.1, progress=False, log_every=1)
                 for m in (library, student)]
    assert ([r["loss"] for r in histories[0].steps]
            == pytest.approx([r["loss"] for r in histories[1].steps], abs=1e-4))
    assert torch.allclose(student.queue, library.queue, atol=1e-4)
    assert seen[-1] == (torch.float32, False, (0.1, 0.05, 0.5), True)
    assert function_names(student.config())["loss"] == \
        f"{__name__}.test_a_students_loss_is_what_trains.<locals>.spying"

    def no_soft_target(q, k, queue, temperature, temperature_momentum, lam, queue_mask=None):
        return student_sce(q, k, queue, temperature, temperature_momentum, 1.0, queue_mask)
    wrong = tiny_sce(loss=no_soft_target).eval()
    right = tiny_sce().eval()
    q, k = random_unit(4, 1), random_unit(4, 2)
    assert not torch.allclose(wrong.query_loss(q, k, torch.arange(4)),
                              right.query_loss(q, k, torch.arange(4)))


def test_compiled_step_gives_the_eager_numbers(images, monkeypatch):
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    losses = []
    for compile in (False, True):
        history = fit(tiny_sce(), images, epochs=1, batch_size=16, lr=0.1, compile=compile,
                      log_every=1, progress=False)
        losses.append([r["loss"] for r in history.steps])
    assert losses[0] == losses[1]


@pytest.mark.parametrize("options, message", [
    (dict(lam=1.2), r"lam must be in \[0.0, 1.0\], got 1.2"),
    (dict(temperature_momentum=0.0), "temperature_momentum must be a finite number > 0, got 0.0"),
    (dict(temperature=-1.0), "temperature must be a finite number > 0, got -1.0"),
    (dict(bn_splits=0), "bn_splits must be an integer >= 1, got 0"),
    (dict(loss="sce"), "loss must be a function"),
    (dict(logits=lambda *a: None), "logits is not an option of SCE"),
    (dict(symmetric="no"), "symmetric must be True or False, got 'no'"),
    (dict(mask_same_image="no"), "mask_same_image must be True or False, got 'no'"),
])
def test_bad_method_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        tiny_sce(**options)


def test_config_records_the_new_hyperparameters_and_views():
    config = tiny_sce(lam=0.3, temperature_momentum=0.07).config()
    assert (config["name"] == "SCE" and config["lam"] == 0.3
            and config["temperature_momentum"] == 0.07)
    assert config["views"] == ["helpers.noisy_views", "helpers.flipped_views"]
    assert function_names(config) == {"loss": "clcourse.losses.sce",
                                   "momentum_update": "clcourse.methods.moco.update_key_encoder",
                                   "enqueue": "clcourse.methods.moco.ring_buffer_enqueue",
                                   "step": "clcourse.methods.moco.moco_step"}


def test_a_queue_mask_that_leaves_a_query_no_candidate_is_refused_as_moco_info_nce_refuses_it():
    """Every queue entry masked: SCE's target softmax has nothing to spread over (NaN)."""
    q, k, queue = random_unit(2, seed=0), random_unit(2, seed=1), random_unit(3, seed=2)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    mask[1] = True
    with pytest.raises(ValueError,
                       match="queue_mask masks every queue entry of some query .* that query has "
                             r"no negative, so its loss does not depend on its embedding "
                             r"\(InfoNCE: 0, SCE: NaN\)"):
        sce(q, k, queue, queue_mask=mask)
    # what the check prevents
    assert torch.isnan(sce(q, k, queue, queue_mask=mask, check_mask=False))
    mask[1, 0] = False
    assert torch.isfinite(sce(q, k, queue, queue_mask=mask))
    with pytest.raises(ValueError, match="check_mask must be True or False, got 'no'"):
        sce(q, k, queue, queue_mask=mask, check_mask="no")
