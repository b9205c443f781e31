"""Methods: MoCo's queue, momentum encoder and split BN; MoCHi's mixing schedule; DCL and HCL as SimCLR
variants; every method through the shared training loop, with exact resume; bad arguments."""
import functools
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from clcourse.losses import dcl, hcl, info_nce, mochi_negatives
from clcourse.methods import DCL, HCL, METHODS, MoCHi, MoCo, SimCLR, build_method, update_key_encoder
from clcourse.models import Backbone, SmallCNN, SplitBatchNorm2d
from clcourse.runs import list_checkpoints
from helpers import noisy_batch, noisy_views, random_unit, tiny_method, train_briefly, views_of

DIM = 8


def reference_moco_loss(q, k, queue, temperature, excluded=None, extra=None):
    """Loop over queries: -log softmax of the positive among [k_b, allowed queue entries, extra_b]."""
    q, k, queue = F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(queue, dim=1)
    losses = []
    for b in range(len(q)):
        negatives = [queue[j] for j in range(len(queue)) if excluded is None or not excluded[b][j]]
        if extra is not None:
            negatives += list(F.normalize(extra[b], dim=1))
        logits = torch.stack([q[b] @ k[b]] + [q[b] @ n for n in negatives]) / temperature
        losses.append(-torch.log_softmax(logits, dim=0)[0])
    return torch.stack(losses).mean()


# ---------------------------------------------------------------- MoCo: the queue

def test_enqueue_is_a_ring_buffer_in_fifo_order():
    method = tiny_method("moco", queue_size=8)
    initial = method.queue.clone()
    enqueued_keys, enqueued_index = [], []
    for step, expected_slots, expected_pointer in [(0, [0, 1, 2], 3), (1, [3, 4, 5], 6), (2, [6, 7, 0], 1)]:
        keys = random_unit(3, seed=10 + step)
        index = torch.arange(3) + 100 * step
        before = method.queue.clone()
        method.enqueue(keys, index)
        assert torch.equal(method.queue[expected_slots], keys)
        assert method.queue_index[expected_slots].tolist() == index.tolist()
        untouched = [s for s in range(8) if s not in expected_slots]
        assert torch.equal(method.queue[untouched], before[untouched])
        assert int(method.queue_pointer) == expected_pointer
        enqueued_keys.append(keys)
        enqueued_index.append(index)
    # Oldest to newest starts at the pointer: exactly the last 8 keys enqueued, in order.
    newest_eight = torch.cat(enqueued_keys)[-8:]
    assert torch.equal(method.queue.roll(-int(method.queue_pointer), dims=0), newest_eight)
    assert method.queue_index.roll(-int(method.queue_pointer)).tolist() == torch.cat(enqueued_index)[-8:].tolist()
    assert not torch.equal(initial[1:3], method.queue[1:3])


def test_pointer_wraps_to_zero_when_the_queue_fills_exactly():
    method = tiny_method("moco", queue_size=6)
    method.enqueue(random_unit(3, 0), torch.arange(3))
    method.enqueue(random_unit(3, 1), torch.arange(3))
    assert int(method.queue_pointer) == 0
    method.enqueue(random_unit(3, 2), torch.arange(3) + 7)
    assert method.queue_index.tolist() == [7, 8, 9, 0, 1, 2]


def test_queue_starts_with_random_unit_vectors_of_no_image():
    method = tiny_method("moco", queue_size=16)
    assert torch.allclose(method.queue.norm(dim=1), torch.ones(16))
    assert method.queue_index.tolist() == [-1] * 16 and int(method.queue_pointer) == 0


def test_more_keys_than_queue_slots_is_refused():
    method = tiny_method("moco", queue_size=4)
    with pytest.raises(ValueError, match="queue_size"):
        method.enqueue(random_unit(5, 0), torch.arange(5))


def test_a_query_never_sees_a_key_of_its_own_image(images):
    method = tiny_method("moco", queue_size=12).eval()
    index = torch.tensor([3, 5, 7, 9])
    # Half the queue holds (stale) keys of the batch's own images, the rest keys of other images.
    method.enqueue(random_unit(12, 0), torch.tensor([3, 5, 7, 9, 3, 20, 21, 22, 23, 24, 25, 9]))
    q, k = random_unit(4, 1).requires_grad_(), random_unit(4, 2)
    loss = method.query_loss(q, k, index)
    excluded = index[:, None] == method.queue_index[None, :]
    assert excluded.sum() == 6
    expected = reference_moco_loss(q, k, method.queue, method.temperature, excluded)
    assert torch.allclose(loss, expected, atol=1e-6)
    gradient, = torch.autograd.grad(loss, q)
    expected_gradient, = torch.autograd.grad(expected, q)
    assert torch.allclose(gradient, expected_gradient, atol=1e-6)

    unmasked = tiny_method("moco", queue_size=12, mask_same_image=False)
    unmasked.load_state_dict(method.state_dict())
    assert unmasked.same_image_mask(index) is None
    assert torch.allclose(unmasked.query_loss(q, k, index),
                          reference_moco_loss(q, k, method.queue, method.temperature), atol=1e-6)


def test_training_step_is_the_queue_loss_and_keys_are_enqueued_after_the_optimiser_step(images):
    method = tiny_method("moco", queue_size=32).eval()     # eval: BN uses running statistics, keys are deterministic
    method.enqueue(random_unit(32, 0), torch.arange(32) % 5)
    index = torch.arange(8)
    batch = noisy_batch(method, images, index)
    queue_before = method.queue.clone()
    output = method.training_step(batch)
    loss, logs = output.loss, output.logs
    with torch.no_grad():
        q = F.normalize(method.projector(method.backbone(batch.views[0])), dim=1)
        k = F.normalize(method.key_projector(method.key_backbone(batch.views[1])), dim=1)
    excluded = index[:, None] == (torch.arange(32) % 5)[None, :]
    assert torch.allclose(loss, reference_moco_loss(q, k, queue_before, method.temperature, excluded), atol=1e-5)
    assert torch.allclose(logs["positive_similarity"], (q * k).sum(1).mean(), atol=1e-6)
    assert torch.equal(method.queue, queue_before) and int(method.queue_pointer) == 0  # not yet: backward needs it
    method.on_step_end(batch, output)
    assert torch.allclose(method.queue[:8], k, atol=1e-6)
    assert method.queue_index[:8].tolist() == index.tolist()
    assert torch.equal(method.queue[8:], queue_before[8:]) and int(method.queue_pointer) == 8


def test_keys_are_computed_on_a_shuffled_batch_and_returned_in_order(images):
    method = tiny_method("moco", bn_splits=4)
    views = views_of(images[:8])[1]
    torch.manual_seed(5)
    keys = method.keys(views)
    torch.manual_seed(5)
    shuffle = torch.randperm(8)
    with torch.no_grad():
        expected = F.normalize(method.key_projector(method.key_backbone(views[shuffle])), dim=1)[torch.argsort(shuffle)]
        unshuffled = F.normalize(method.key_projector(method.key_backbone(views)), dim=1)
    assert torch.allclose(keys, expected, atol=1e-6)
    # With split BN the batch statistics a key sees depend on its group, so the shuffle changes the keys.
    assert not torch.allclose(keys, unshuffled, atol=1e-4)
    assert not keys.requires_grad


def test_split_batchnorm_in_both_encoders_which_are_separate_copies():
    method = tiny_method("moco", bn_splits=4)
    for encoder in (method.backbone, method.key_backbone):
        norms = [m for m in encoder.modules() if isinstance(m, nn.BatchNorm2d)]
        assert norms and all(isinstance(m, SplitBatchNorm2d) and m.num_splits == 4 for m in norms)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in method.projector.modules())  # MoCo v2 head: no BN
    for query_p, key_p in zip(method.query_parameters(), method.key_parameters()):
        assert torch.equal(query_p, key_p) and query_p.data_ptr() != key_p.data_ptr()
    plain = tiny_method("moco", bn_splits=1)
    assert not any(isinstance(m, SplitBatchNorm2d) for m in plain.modules())


def test_symmetric_loss_uses_both_directions_and_enqueues_both_keys(images):
    method = tiny_method("moco", queue_size=32, symmetric=True).eval()
    method.enqueue(random_unit(32, 0), torch.arange(32) + 100)
    queue_before = method.queue.clone()
    batch = noisy_batch(method, images, torch.arange(8))
    output = method.training_step(batch)
    loss = output.loss
    with torch.no_grad():
        q1, q2 = (F.normalize(method.projector(method.backbone(v)), dim=1) for v in batch.views)
        k1, k2 = (F.normalize(method.key_projector(method.key_backbone(v)), dim=1) for v in batch.views)
    method.on_step_end(batch, output)
    expected = (reference_moco_loss(q1, k2, queue_before, method.temperature)      # summed, as in the demo
                + reference_moco_loss(q2, k1, queue_before, method.temperature))
    assert torch.allclose(loss, expected, atol=1e-5)
    assert torch.allclose(method.queue[:16], torch.cat([k2, k1]), atol=1e-6)
    assert method.queue_index[:16].tolist() == list(range(8)) * 2 and int(method.queue_pointer) == 16


# ---------------------------------------------------------------- MoCo: the momentum encoder

@pytest.mark.parametrize("momentum", [0.0, 0.9, 0.99, 1.0])
def test_momentum_update_is_an_exact_moving_average(momentum):
    method = tiny_method("moco", momentum=momentum)
    with torch.no_grad():
        for p in method.query_parameters():
            p.add_(torch.randn_like(p))
    old_keys = [p.clone() for p in method.key_parameters()]
    queries_before = [p.clone() for p in method.query_parameters()]
    update_key_encoder(method.key_encoder(), method.query_encoder(), momentum)
    for key, old, query, query_before in zip(method.key_parameters(), old_keys, method.query_parameters(),
                                             queries_before):
        assert torch.allclose(key, momentum * old + (1 - momentum) * query, rtol=1e-6, atol=1e-7)
        assert torch.equal(query, query_before)
    if momentum == 0.0:
        assert all(torch.equal(k, q) for k, q in zip(method.key_parameters(), method.query_parameters()))
    if momentum == 1.0:
        assert all(torch.equal(k, old) for k, old in zip(method.key_parameters(), old_keys))


def test_key_encoder_gets_no_gradient_and_is_not_optimised(images):
    method = tiny_method("moco")
    method.training_step(noisy_batch(method, images, torch.arange(8))).loss.backward()
    assert all(not p.requires_grad and p.grad is None for p in method.key_parameters())
    assert all(p.grad is not None for p in method.query_parameters())
    # momentum = 1: the key encoder never moves, so nothing but the EMA may touch it (no SGD, no weight decay).
    frozen = tiny_method("moco", momentum=1.0)
    keys_before = [p.clone() for p in frozen.key_parameters()]
    queries_before = [p.clone() for p in frozen.query_parameters()]
    train_briefly(frozen, images, epochs=1)
    assert all(torch.equal(p, before) for p, before in zip(frozen.key_parameters(), keys_before))
    assert not all(torch.equal(p, before) for p, before in zip(frozen.query_parameters(), queries_before))


# ---------------------------------------------------------------- MoCHi

def test_mochi_loss_adds_the_synthetic_negatives_once_mixing_starts():
    method = tiny_method("mochi", queue_size=16, mixing_warmup_epochs=1)
    method.enqueue(random_unit(16, 0), torch.arange(16) % 6)
    index = torch.tensor([0, 1, 2, 3])
    q, k = random_unit(4, 1), random_unit(4, 2)
    mask = index[:, None] == method.queue_index[None, :]
    assert not method.mixing
    assert torch.allclose(method.query_loss(q, k, index),
                          reference_moco_loss(q, k, method.queue, method.temperature, mask), atol=1e-6)
    method.on_epoch_start(1)
    assert method.mixing
    torch.manual_seed(7)
    loss = method.query_loss(q, k, index)
    torch.manual_seed(7)
    extra = mochi_negatives(q, method.queue, 4, 3, 2, queue_mask=mask)
    assert torch.allclose(loss, reference_moco_loss(q, k, method.queue, method.temperature, mask, extra), atol=1e-6)
    assert loss > reference_moco_loss(q, k, method.queue, method.temperature, mask)  # more negatives, higher loss


def test_mixing_starts_after_the_warmup_epochs_in_training(images):
    method = tiny_method("mochi", mixing_warmup_epochs=2)
    seen = []
    step = method.training_step

    def spy(batch):
        seen.append(method.mixing)
        return step(batch)
    method.training_step = spy
    train_briefly(method, images, epochs=3, batch_size=16)
    assert seen == [False] * 6 + [True] * 3
    assert tiny_method("mochi").mixing  # no warm-up: mixing from the first step


@pytest.mark.parametrize("queue_size, symmetric, largest", [(32, False, 31), (32, True, 30), (64, False, 62)])
def test_mochi_checks_once_that_masking_leaves_n_hardest_entries(images, queue_size, symmetric, largest):
    # 48 images in batches of 8. When a query comes, the queue holds keys of its own image from at most
    # ceil(K / 48) earlier epochs, per direction: n_hardest may be K minus that, and not one more.
    options = dict(queue_size=queue_size, symmetric=symmetric)
    with pytest.raises(ValueError, match=f"n_hardest must be at most {largest}.*got {largest + 1}"):
        train_briefly(tiny_method("mochi", n_hardest=largest + 1, **options), images, epochs=1)

    method = tiny_method("mochi", n_hardest=largest, **options)
    most_masked, checked = [], []
    query_loss = method.query_loss

    def spy(q, k, index):
        most_masked.append(int(method.same_image_mask(index).sum(1).max()))
        checked.append(not method.enough_unmasked_entries)
        return query_loss(q, k, index)
    method.query_loss = spy
    train_briefly(method, images, epochs=4)
    assert max(most_masked) == queue_size - largest    # the bound is reached, and never exceeded
    assert not any(checked)                            # no per-step host synchronisation in training


def test_mochi_never_enqueues_synthetic_negatives(images):
    method = tiny_method("mochi", queue_size=32).eval()
    method.enqueue(random_unit(32, 0), torch.arange(32) + 100)
    queue_before = method.queue.clone()
    batch = noisy_batch(method, images, torch.arange(8))
    output = method.training_step(batch)
    with torch.no_grad():
        k = F.normalize(method.key_projector(method.key_backbone(batch.views[1])), dim=1)
    method.on_step_end(batch, output)
    assert int(method.queue_pointer) == 8
    assert torch.allclose(method.queue[:8], k, atol=1e-6)
    assert torch.equal(method.queue[8:], queue_before[8:])
    assert method.queue_index.tolist() == list(range(8)) + list(range(108, 132))


# ---------------------------------------------------------------- DCL and HCL

@pytest.mark.parametrize("name, loss", [
    ("simclr", lambda m, z1, z2: info_nce(z1, z2, m.temperature)),
    ("dcl", lambda m, z1, z2: dcl(z1, z2, m.temperature, m.tau_plus)),
    ("hcl", lambda m, z1, z2: hcl(z1, z2, m.temperature, m.tau_plus, m.beta)),
])
def test_simclr_family_uses_its_loss(images, name, loss):
    options = {"dcl": dict(tau_plus=0.2), "hcl": dict(tau_plus=0.2, beta=2.0)}.get(name, {})
    method = tiny_method(name, **options)
    batch = noisy_batch(method, images, torch.arange(8))
    value = method.training_step(batch).loss
    with torch.no_grad():  # both views in one batch of 2B, as SimCLR's BN sees them
        z1, z2 = method.projector(method.backbone(torch.cat(batch.views))).chunk(2)
    assert torch.allclose(value, loss(method, z1, z2), atol=1e-6)
    if name != "simclr":
        assert not torch.allclose(value, info_nce(z1, z2, method.temperature), atol=1e-3)


def test_build_method_passes_options_and_rejects_unknown_names():
    assert isinstance(tiny_method("hcl", beta=0.5), HCL) and tiny_method("hcl", beta=0.5).beta == 0.5
    assert isinstance(tiny_method("dcl"), DCL) and isinstance(tiny_method("simclr"), SimCLR)
    assert isinstance(tiny_method("mochi"), MoCHi) and isinstance(tiny_method("moco"), MoCo)
    with pytest.raises(ValueError, match="method name"):
        build_method("byol", Backbone(SmallCNN(width=4)))


# ---------------------------------------------------------------- the training loop

@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_in_the_shared_loop(images, name):
    history = train_briefly(tiny_method(name), images, epochs=1, batch_size=16)
    assert len(history.epochs) == 1 and math.isfinite(history.epochs[0]["loss"])
    monitor = "train_accuracy" if name == "supervised" else "positive_similarity"
    assert all(math.isfinite(r["loss"]) and monitor in r for r in history.steps)


@pytest.mark.parametrize("name, options", [("moco", dict(symmetric=True)), ("mochi", dict(mixing_warmup_epochs=1)),
                                           ("sce", dict())])
def test_moco_resumes_exactly_with_its_queue_and_key_encoder(images, tmp_path, name, options):
    reference_method = tiny_method(name, **options)
    reference = train_briefly(reference_method, images, epochs=3, checkpoint_dir=tmp_path / "reference")

    interrupted = tiny_method(name, **options)
    steps_done = {"n": 0}
    ema = interrupted.on_step_end

    def crash_in_third_epoch(batch, output):
        ema(batch, output)
        steps_done["n"] += 1
        if steps_done["n"] == 13:  # 6 steps per epoch: epoch 3 has started
            raise KeyboardInterrupt
    interrupted.on_step_end = crash_in_third_epoch
    with pytest.raises(KeyboardInterrupt):
        train_briefly(interrupted, images, epochs=3, checkpoint_dir=tmp_path / "resumed")
    assert len(list_checkpoints(tmp_path / "resumed")) == 2

    resumed_method = tiny_method(name, seed=123, **options)  # other weights and queue: the checkpoint must replace them
    resumed = train_briefly(resumed_method, images, epochs=3, checkpoint_dir=tmp_path / "resumed", resume=True)
    assert [r["loss"] for r in resumed.steps] == [r["loss"] for r in reference.steps]
    state = resumed_method.state_dict()
    assert {"queue", "queue_index", "queue_pointer"} <= set(state)
    assert any(key.startswith("key_backbone.") for key in state)
    for key, value in reference_method.state_dict().items():
        assert torch.equal(value, state[key]), key


# ---------------------------------------------------------------- bad arguments

@pytest.mark.parametrize("name, options, argument", [
    ("moco", dict(momentum=-0.1), "momentum"),
    ("moco", dict(momentum=1.01), "momentum"),
    ("moco", dict(temperature=0.0), "temperature"),
    ("moco", dict(queue_size=0), "queue_size"),
    ("moco", dict(bn_splits=0), "bn_splits"),
    ("mochi", dict(queue_size=32, n_hardest=33), "n_hardest"),
    ("mochi", dict(n_hardest=0), "n_hardest"),
    ("mochi", dict(n_mix_negatives=-1), "n_mix_negatives"),
    ("mochi", dict(n_mix_query=-1), "n_mix_query"),
    ("mochi", dict(mixing_warmup_epochs=-1), "mixing_warmup_epochs"),
    ("dcl", dict(tau_plus=1.0), "tau_plus"),
    ("dcl", dict(tau_plus=-0.1), "tau_plus"),
    ("hcl", dict(tau_plus=1.0), "tau_plus"),
    ("hcl", dict(tau_plus=-0.01), "tau_plus"),
    ("hcl", dict(beta=-1.0), "beta"),
    ("hcl", dict(beta=float("inf")), "beta"),
])
def test_bad_arguments_name_the_argument_and_the_range(name, options, argument):
    with pytest.raises(ValueError, match=argument):
        tiny_method(name, **options)


def test_momentum_error_gives_the_allowed_range():
    with pytest.raises(ValueError, match=r"momentum must be in \[0.0, 1.0\], got 1.5"):
        tiny_method("moco", momentum=1.5)


def test_queue_as_large_as_the_dataset_needs_same_image_masking(images):
    with pytest.raises(ValueError, match="queue_size must be smaller than the training set"):
        train_briefly(tiny_method("moco", queue_size=48, mask_same_image=False), images, epochs=1)
    train_briefly(tiny_method("moco", queue_size=40, mask_same_image=False), images, epochs=1)
    train_briefly(tiny_method("moco", queue_size=64, mask_same_image=True), images, epochs=1)


def test_batch_must_divide_into_bn_splits(images):
    with pytest.raises(ValueError, match="bn_splits"):
        train_briefly(tiny_method("moco", bn_splits=4), images, epochs=1, batch_size=6)


def test_queue_smaller_than_a_batch_is_refused(images):
    with pytest.raises(ValueError, match="queue_size"):
        train_briefly(tiny_method("moco", queue_size=4), images, epochs=1, batch_size=8)


@pytest.mark.parametrize("name", ["simclr", "moco", "mochi"])
def test_compiled_step_gives_the_eager_numbers(images, name, monkeypatch):
    # aot_eager runs TorchDynamo's graph capture and AOTAutograd (where a side effect such as a queue write
    # or a pending key would be lost or replayed wrongly) without generating code, so it is fast on a CPU
    # and must reproduce eager exactly.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    runs = []
    for compile in (False, True):
        method = tiny_method(name)
        history = train_briefly(method, images, epochs=2, batch_size=16, compile=compile, log_every=1)
        runs.append((method, [r["loss"] for r in history.steps]))
    (eager, eager_losses), (compiled, compiled_losses) = runs
    assert compiled_losses == eager_losses
    for (key, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        assert torch.equal(a, b), key


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_under_bf16_autocast(images, name, monkeypatch):
    # The GPU path (autocast_dtype gives bf16 on an A100/H100), run on the CPU, which autocasts to bf16 too.
    import clcourse.train
    losses = {}
    for dtype in (None, torch.bfloat16):
        monkeypatch.setattr(clcourse.train, "autocast_dtype", lambda device, dtype=dtype: dtype)
        method = tiny_method(name)
        losses[dtype] = [r["loss"] for r in train_briefly(method, images, epochs=1, batch_size=16, log_every=1).steps]
        if isinstance(method, MoCo):
            assert method.queue.dtype == torch.float32      # keys from bf16 activations are stored in float32
    assert all(math.isfinite(loss) for loss in losses[torch.bfloat16])
    assert losses[torch.bfloat16] != losses[None]          # the bf16 path really ran...
    assert abs(losses[torch.bfloat16][0] - losses[None][0]) < 0.02   # ...and agrees with float32 at the first step


# ---------------------------------------------------------------- views, embeddings, configuration

def test_views_sharing_a_recipe_are_made_in_one_call():
    calls = []

    def recipe(images, generator=None):
        calls.append(len(images))
        return noisy_views(images, generator)

    def other(images, generator=None):
        calls.append(-len(images))
        return images.float() / 255

    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    method = SimCLR(Backbone(SmallCNN(width=4)), projector_hidden=16, projector_out=DIM, augment=recipe)
    method.view_recipes = (recipe, other, recipe, recipe)
    views = method.make_views(images, torch.Generator().manual_seed(0))
    assert calls == [12, -4]                      # three views of one recipe in one call of 3 x 4 images
    assert len(views) == 4 and all(v.shape == (4, 3, 8, 8) for v in views)
    assert torch.equal(views[1], images.float() / 255)
    for view in (views[0], views[2], views[3]):   # each a noisy copy of the same 4 images, in order
        assert (view - images.float() / 255).abs().max() < 0.3
    assert not torch.equal(views[0], views[2])    # independent draws


def test_a_method_needs_at_least_one_view_recipe():
    with pytest.raises(ValueError, match="view_recipes"):
        from clcourse.methods import Method
        Method(Backbone(SmallCNN(width=4)), ())


def test_embed_gives_unit_embeddings_or_backbone_features(images):
    from clcourse.evaluate import extract_features
    for name in ("simclr", "moco"):
        method = tiny_method(name)
        method.train()
        z = method.embed(images[:10])
        h = method.embed(images[:10], projected=False)
        with torch.no_grad():
            method.eval()
            x = images[:10].float() / 255
            assert torch.allclose(z, F.normalize(method.projector(method.backbone(x)), dim=1), atol=1e-6)
            assert torch.allclose(h, method.backbone(x), atol=1e-6)
            method.train()
        assert torch.allclose(z.norm(dim=1), torch.ones(10)) and method.training   # modes restored
        assert torch.equal(h, extract_features(method.backbone, images[:10]))


def test_config_holds_the_hyperparameters_and_stable_descriptions():
    config = tiny_method("mochi", n_hardest=3).config()
    assert config["name"] == "MoCHi" and config["n_hardest"] == 3 and config["queue_size"] == 32
    assert config["temperature"] == 0.1 and config["bn_splits"] == 2 and config["symmetric"] is False
    assert config["views"] == ["helpers.noisy_views"] * 2
    assert config["functions"] == {"logits": "clcourse.losses.moco_logits",
                                   "momentum_update": "clcourse.methods.moco.update_key_encoder",
                                   "enqueue": "clcourse.methods.moco.ring_buffer_enqueue",
                                   "step": "clcourse.methods.moco.moco_step"}
    assert config["architecture"].startswith("Backbone(SmallCNN), ")
    from clcourse.augment import simclr_cifar
    described = SimCLR(Backbone(SmallCNN(width=4)), augment=simclr_cifar()).config()["views"][0]
    assert described == repr(simclr_cifar()) and "0x" not in described
    assert tiny_method("hcl", beta=2.0).config()["beta"] == 2.0 and tiny_method("dcl").config()["functions"]["loss"] == \
        "clcourse.losses.dcl"


def test_every_method_returns_a_step_output(images):
    from clcourse.methods import StepOutput
    for name in sorted(METHODS):
        method = tiny_method(name)
        output = method.training_step(noisy_batch(method, images, torch.arange(8)))
        assert isinstance(output, StepOutput) and output.loss.dim() == 0 and output.loss.requires_grad
        assert all(value.dim() == 0 for value in output.logs.values())


# ---------------------------------------------------------------- a student's functions train the method

def test_simclr_trains_with_the_loss_it_is_given_in_float32(images, monkeypatch):
    import clcourse.train
    seen = []

    def my_loss(z1, z2, temperature):
        seen.append((z1.dtype, torch.is_autocast_enabled("cpu"), temperature))
        return info_nce(z1, z2, temperature) * 2

    method = tiny_method("simclr", loss=my_loss, temperature=0.3)
    batch = noisy_batch(method, images, torch.arange(8))
    with torch.no_grad():
        z1, z2 = method.projector(method.backbone(torch.cat(batch.views))).chunk(2)
    assert torch.allclose(method.training_step(batch).loss, 2 * info_nce(z1, z2, 0.3), atol=1e-6)
    monkeypatch.setattr(clcourse.train, "autocast_dtype", lambda device: torch.bfloat16)
    train_briefly(method, images, epochs=1, batch_size=16)
    assert seen[-1] == (torch.float32, False, 0.3)      # no half precision inside the loss


@pytest.mark.parametrize("name, loss", [("dcl", dcl), ("hcl", hcl)])
def test_dcl_and_hcl_pass_their_hyperparameters_to_the_given_loss(images, name, loss):
    calls = []

    def my_loss(*args):
        calls.append(args[2:])
        return loss(*args)
    method = tiny_method(name, loss=my_loss, tau_plus=0.05, **({"beta": 0.5} if name == "hcl" else {}))
    method.training_step(noisy_batch(method, images, torch.arange(8)))
    assert calls == [(0.5, 0.05, 0.5) if name == "hcl" else (0.5, 0.05)]


def student_logits(q, k, queue, temperature):
    positive = (q * k.detach()).sum(dim=1, keepdim=True)
    return torch.cat([positive, q @ queue.detach().T], dim=1) / temperature


def student_momentum_update(key_encoder, query_encoder, momentum):
    with torch.no_grad():
        for key, query in zip(key_encoder.parameters(), query_encoder.parameters()):
            key.mul_(momentum).add_(query, alpha=1 - momentum)


def student_enqueue(queue, pointer, keys):
    queue = queue.clone()                       # not in place: the method must copy the result back
    slots = (pointer + torch.arange(len(keys))) % len(queue)
    queue[slots] = keys
    return queue, (pointer + len(keys)) % len(queue)


def test_moco_trains_with_a_students_logits_momentum_update_and_enqueue(images):
    students = dict(logits=student_logits, momentum_update=student_momentum_update, enqueue=student_enqueue)
    library, student = tiny_method("moco", queue_size=24), tiny_method("moco", queue_size=24, **students)
    histories = [train_briefly(method, images, epochs=2, batch_size=16, log_every=1) for method in (library, student)]
    losses = [[r["loss"] for r in history.steps] for history in histories]
    assert losses[0] == pytest.approx(losses[1], abs=1e-4)
    assert int(student.queue_pointer) == (2 * 48) % 24 == int(library.queue_pointer)
    assert torch.equal(student.queue_index, library.queue_index)
    assert torch.allclose(student.queue, library.queue, atol=1e-4)
    for a, b in zip(student.key_parameters(), library.key_parameters()):
        assert torch.allclose(a, b, atol=1e-4)
    assert student.config()["functions"]["enqueue"] == f"{__name__}.student_enqueue"


def student_step(moco, query_views, key_views, index):
    """Notebook 03's exercise, written plainly: queries, shuffled momentum keys, own-image mask, InfoNCE."""
    q = F.normalize(moco.projector(moco.backbone(query_views)).float(), dim=1)
    with torch.no_grad():
        shuffle = torch.randperm(len(key_views))
        k = F.normalize(moco.key_projector(moco.key_backbone(key_views[shuffle])).float(), dim=1)[torch.argsort(shuffle)]
    logits = student_logits(q, k, moco.queue, moco.temperature)
    own_image = index[:, None] == moco.queue_index[None, :]
    logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(own_image, float("-inf"))], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long)), q, k


@pytest.mark.parametrize("symmetric", [False, True])
def test_moco_trains_with_a_students_step(images, symmetric):
    library = tiny_method("moco", queue_size=24, symmetric=symmetric)
    student = tiny_method("moco", queue_size=24, symmetric=symmetric, step=student_step, enqueue=student_enqueue)
    histories = [train_briefly(method, images, epochs=2, batch_size=16, log_every=1) for method in (library, student)]
    for key in ("loss", "positive_similarity", "queue_similarity"):
        assert [r[key] for r in histories[0].steps] == pytest.approx([r[key] for r in histories[1].steps], abs=1e-4)
    assert torch.equal(student.queue_index, library.queue_index)
    assert torch.allclose(student.queue, library.queue, atol=1e-4)
    assert student.config()["functions"]["step"] == f"{__name__}.student_step"
    assert library.config()["functions"]["step"] == "clcourse.methods.moco.moco_step"


def test_a_wrong_students_logits_changes_the_loss(images):
    def no_temperature(q, k, queue, temperature):
        return student_logits(q, k, queue, 1.0)
    method = tiny_method("moco", logits=no_temperature).eval()
    reference = tiny_method("moco").eval()
    reference.load_state_dict(method.state_dict())
    q, k, index = random_unit(4, 1), random_unit(4, 2), torch.arange(4)
    assert not torch.allclose(method.query_loss(q, k, index), reference.query_loss(q, k, index))


@pytest.mark.parametrize("option", ["loss"])
def test_a_loss_that_is_not_a_function_is_refused(option):
    with pytest.raises(ValueError, match=option):
        tiny_method("simclr", **{option: 0.5})


@pytest.mark.parametrize("option", ["logits", "momentum_update", "enqueue", "step"])
def test_moco_parts_that_are_not_functions_are_refused(option):
    with pytest.raises(ValueError, match=option):
        tiny_method("moco", **{option: "nope"})
