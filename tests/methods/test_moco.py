"""MoCo and MoCHi (clcourse/methods/moco.py): the queue, a ring buffer that never shows a query its
own image; the momentum encoder and split batch-norm; MoCHi's mixing schedule; exact resume with the
queue; bad arguments; a student's logits, momentum update, enqueue and step training the method."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import (
    function_names,
    noisy_batch,
    random_unit,
    short_run,
    tiny_method,
    train_briefly,
    views_of,
)

from clcourse.losses import mochi_draws, mochi_negatives
from clcourse.methods import update_key_encoder
from clcourse.models import SplitBatchNorm2d
from clcourse.runs import list_checkpoints

DIM = 8


def reference_moco_loss(q, k, queue, temperature, excluded=None, extra=None):
    """Loop over queries: -log softmax of the positive among [k_b, allowed queue entries,
    extra_b]."""
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
    for step, expected_slots, expected_pointer in [(0, [0, 1, 2], 3), (1, [3, 4, 5], 6),
                                                   (2, [6, 7, 0], 1)]:
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
    assert (method.queue_index.roll(-int(method.queue_pointer)).tolist()
            == torch.cat(enqueued_index)[-8:].tolist())
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
    # eval: BN uses running statistics, keys are deterministic
    method = tiny_method("moco", queue_size=32).eval()
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
    assert torch.allclose(
        loss, reference_moco_loss(q, k, queue_before, method.temperature, excluded), atol=1e-5)
    assert torch.allclose(logs["positive_similarity"], (q * k).sum(1).mean(), atol=1e-6)
    # not yet: backward needs it
    assert torch.equal(method.queue, queue_before) and int(method.queue_pointer) == 0
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
        expected = F.normalize(method.key_projector(method.key_backbone(views[shuffle])),
                               dim=1)[torch.argsort(shuffle)]
        unshuffled = F.normalize(method.key_projector(method.key_backbone(views)), dim=1)
    assert torch.allclose(keys, expected, atol=1e-6)
    # With split BN the batch statistics a key sees depend on its group, so the shuffle changes the
    # keys.
    assert not torch.allclose(keys, unshuffled, atol=1e-4)
    assert not keys.requires_grad


def test_split_batchnorm_in_both_encoders_which_are_separate_copies():
    method = tiny_method("moco", bn_splits=4)
    for encoder in (method.backbone, method.key_backbone):
        norms = [m for m in encoder.modules() if isinstance(m, nn.BatchNorm2d)]
        assert norms and all(isinstance(m, SplitBatchNorm2d) and m.num_splits == 4 for m in norms)
    # MoCo v2 head: no BN
    assert not any(isinstance(m, nn.BatchNorm1d) for m in method.projector.modules())
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
        k1, k2 = (F.normalize(method.key_projector(method.key_backbone(v)), dim=1)
                  for v in batch.views)
    method.on_step_end(batch, output)
    # summed, as in the demo
    expected = (reference_moco_loss(q1, k2, queue_before, method.temperature)
                + reference_moco_loss(q2, k1, queue_before, method.temperature))
    assert torch.allclose(loss, expected, atol=1e-5)
    assert torch.allclose(method.queue[:16], torch.cat([k2, k1]), atol=1e-6)
    assert (method.queue_index[:16].tolist() == list(range(8)) * 2
            and int(method.queue_pointer) == 16)


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
    for key, old, query, query_before in zip(method.key_parameters(), old_keys,
                                             method.query_parameters(), queries_before):
        assert torch.allclose(key, momentum * old + (1 - momentum) * query, rtol=1e-6, atol=1e-7)
        assert torch.equal(query, query_before)
    if momentum == 0.0:
        assert all(torch.equal(k, q)
                   for k, q in zip(method.key_parameters(), method.query_parameters()))
    if momentum == 1.0:
        assert all(torch.equal(k, old) for k, old in zip(method.key_parameters(), old_keys))


def test_key_encoder_gets_no_gradient_and_is_not_optimised(images):
    method = tiny_method("moco")
    method.training_step(noisy_batch(method, images, torch.arange(8))).loss.backward()
    assert all(not p.requires_grad and p.grad is None for p in method.key_parameters())
    assert all(p.grad is not None for p in method.query_parameters())
    # momentum = 1: the key encoder never moves, so nothing but the EMA may touch it (no SGD, no
    # weight decay).
    frozen = tiny_method("moco", momentum=1.0)
    keys_before = [p.clone() for p in frozen.key_parameters()]
    queries_before = [p.clone() for p in frozen.query_parameters()]
    train_briefly(frozen, images, epochs=1)
    assert all(torch.equal(p, before) for p, before in zip(frozen.key_parameters(), keys_before))
    assert not all(torch.equal(p, before)
                   for p, before in zip(frozen.query_parameters(), queries_before))


# ---------------------------------------------------------------- MoCHi

def test_mochi_loss_adds_the_synthetic_negatives_once_mixing_starts():
    method = tiny_method("mochi", queue_size=16, mixing_warmup_epochs=1)
    method.enqueue(random_unit(16, 0), torch.arange(16) % 6)
    index = torch.tensor([0, 1, 2, 3])
    q, k = random_unit(4, 1), random_unit(4, 2)
    mask = index[:, None] == method.queue_index[None, :]
    assert not method.mixing
    assert torch.allclose(method.query_loss(q, k, index),
                          reference_moco_loss(q, k, method.queue, method.temperature, mask),
                          atol=1e-6)
    method.on_epoch_start(1)
    assert method.mixing
    torch.manual_seed(7)
    loss = method.query_loss(q, k, index)
    torch.manual_seed(7)
    extra = mochi_negatives(q, method.queue, 4, 3, 2, queue_mask=mask)
    assert torch.allclose(
        loss, reference_moco_loss(q, k, method.queue, method.temperature, mask, extra), atol=1e-6)
    # more negatives, higher loss
    assert loss > reference_moco_loss(q, k, method.queue, method.temperature, mask)


def looped_mochi_logits(q, k, queue, temperature, n_hardest, first, second, alpha, pick, beta_mix):
    """notebook 04's exercise, one query and one mix at a time: [q.k, q.queue, q.type 1, q.type 2] /
    t."""
    rows = []
    for b in range(len(q)):
        hardest = sorted(range(len(queue)),
                         key=lambda j: -float(q[b].detach() @ queue[j]))[:n_hardest]
        type1 = [F.normalize(alpha[b, m] * queue[hardest[first[b, m]]]
                             + (1 - alpha[b, m]) * queue[hardest[second[b, m]]], dim=0)
                 for m in range(first.shape[1])]
        type2 = [F.normalize(beta_mix[b, m] * q[b].detach()
                             + (1 - beta_mix[b, m]) * queue[hardest[pick[b, m]]], dim=0)
                 for m in range(pick.shape[1])]
        candidates = [k[b].detach()] + list(queue) + [n.detach() for n in type1 + type2]
        rows.append(torch.stack([q[b] @ c for c in candidates]) / temperature)
    return torch.stack(rows)


def test_mochi_trains_with_a_given_mochi_logits():
    calls = []

    def students(*args):
        calls.append(args[4:])
        return looped_mochi_logits(*args)

    library, given = (tiny_method("mochi", queue_size=16, **options)
                      for options in ({}, {"mochi_logits": students}))
    for method in (library, given):
        # keys of other images: nothing masked
        method.enqueue(random_unit(16, 0), torch.arange(16) + 100)
    q, k, index = random_unit(4, 1).requires_grad_(), random_unit(4, 2), torch.arange(4)
    torch.manual_seed(7)
    expected = library.query_loss(q, k, index)
    torch.manual_seed(7)
    loss = given.query_loss(q, k, index)
    assert (len(calls) == 1 and calls[0][0] == 4 and calls[0][1].shape == (4, 3)
            and calls[0][4].shape == (4, 2))
    assert torch.allclose(loss, expected, atol=1e-5)
    gradient, = torch.autograd.grad(loss, q)
    assert torch.allclose(gradient, torch.autograd.grad(expected, q)[0], atol=1e-5)
    assert given.config()["functions"]["mochi_logits"]["name"].endswith("students")

    # the function's own logits are what trains: another function gives another loss
    doubled = tiny_method("mochi", queue_size=16,
                          mochi_logits=lambda *args: 2 * looped_mochi_logits(*args))
    doubled.enqueue(random_unit(16, 0), torch.arange(16) + 100)
    torch.manual_seed(7)
    assert not torch.allclose(doubled.query_loss(q, k, index), expected, atol=1e-3)


def test_a_given_mochi_logits_has_the_keys_of_the_querys_own_image_masked():
    method = tiny_method("mochi", queue_size=16, mochi_logits=looped_mochi_logits)
    method.enqueue(random_unit(16, 0), torch.arange(16) % 6)
    q, k, index = random_unit(4, 1), random_unit(4, 2), torch.tensor([0, 1, 2, 3])
    mask = index[:, None] == method.queue_index[None, :]
    torch.manual_seed(7)
    loss = method.query_loss(q, k, index)
    torch.manual_seed(7)
    draws = mochi_draws(4, 4, 3, 2)
    logits = looped_mochi_logits(q, k, method.queue, method.temperature, 4, *draws)
    logits[:, 1:17][mask] = float("-inf")
    assert torch.allclose(loss, F.cross_entropy(logits, torch.zeros(4, dtype=torch.long)),
                          atol=1e-6)


def test_mochi_logits_must_be_a_function():
    with pytest.raises(ValueError, match="mochi_logits"):
        tiny_method("mochi", mochi_logits="mine")


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


@pytest.mark.parametrize("queue_size, symmetric, largest",
                         [(32, False, 31), (32, True, 30), (64, False, 62)])
def test_mochi_checks_once_that_masking_leaves_n_hardest_entries(
        images, queue_size, symmetric, largest):
    # 48 images in batches of 8. When a query comes, the queue holds keys of its own image from at
    # most ceil(K / 48) earlier epochs, per direction: n_hardest may be K minus that, and not one
    # more.
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
    # no per-step host synchronisation in training
    assert not any(checked)


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


# ---------------------------------------------------------------- resume

@pytest.mark.parametrize("name, options",
                         [("moco", dict(symmetric=True)), ("mochi", dict(mixing_warmup_epochs=1)),
                          ("sce", dict())])
def test_moco_resumes_exactly_with_its_queue_and_key_encoder(images, tmp_path, name, options):
    reference_method = tiny_method(name, **options)
    reference = train_briefly(reference_method, images, epochs=3,
                              checkpoint_dir=tmp_path / "reference")

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

    # other weights and queue: the checkpoint must replace them
    resumed_method = tiny_method(name, seed=123, **options)
    resumed = train_briefly(resumed_method, images, epochs=3, checkpoint_dir=tmp_path / "resumed",
                            resume=True)
    assert [r["loss"] for r in resumed.steps] == [r["loss"] for r in reference.steps]
    state = resumed_method.state_dict()
    assert {"queue", "queue_index", "queue_pointer"} <= set(state)
    assert any(key.startswith("key_backbone.") for key in state)
    for key, value in reference_method.state_dict().items():
        assert torch.equal(value, state[key]), key


# ---------------------------------------------------------------- bad arguments

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


def test_moco_proves_once_that_every_query_keeps_a_negative(images, monkeypatch):
    import clcourse.methods.moco
    with pytest.raises(ValueError, match="queue_size must be larger than 1"):
        short_run(images, tiny_method("moco", queue_size=1), batch_size=8)
    checked = []
    real_loss = clcourse.methods.moco.moco_info_nce

    def spy(*args, check_mask=True, **kwargs):
        checked.append(check_mask)
        return real_loss(*args, check_mask=check_mask, **kwargs)
    monkeypatch.setattr(clcourse.methods.moco, "moco_info_nce", spy)
    short_run(images, tiny_method("moco"), batch_size=8, epochs=2)
    assert len(checked) == 12 and not any(checked)      # no host sync per step for the check


# ----------------------------------------------------------- a student's functions train the method

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
    students = dict(logits=student_logits, momentum_update=student_momentum_update,
                    enqueue=student_enqueue)
    library, student = (tiny_method("moco", queue_size=24),
                        tiny_method("moco", queue_size=24, **students))
    histories = [train_briefly(method, images, epochs=2, batch_size=16, log_every=1)
                 for method in (library, student)]
    losses = [[r["loss"] for r in history.steps] for history in histories]
    assert losses[0] == pytest.approx(losses[1], abs=1e-4)
    assert int(student.queue_pointer) == (2 * 48) % 24 == int(library.queue_pointer)
    assert torch.equal(student.queue_index, library.queue_index)
    assert torch.allclose(student.queue, library.queue, atol=1e-4)
    for a, b in zip(student.key_parameters(), library.key_parameters()):
        assert torch.allclose(a, b, atol=1e-4)
    assert function_names(student.config())["enqueue"] == f"{__name__}.student_enqueue"


def student_step(moco, query_views, key_views, index):
    """Notebook 03's exercise, written plainly: queries, shuffled momentum keys, own-image mask,
    InfoNCE."""
    q = F.normalize(moco.projector(moco.backbone(query_views)).float(), dim=1)
    with torch.no_grad():
        shuffle = torch.randperm(len(key_views))
        k = F.normalize(moco.key_projector(moco.key_backbone(key_views[shuffle])).float(),
                        dim=1)[torch.argsort(shuffle)]
    logits = student_logits(q, k, moco.queue, moco.temperature)
    own_image = index[:, None] == moco.queue_index[None, :]
    logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(own_image, float("-inf"))], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long)), q, k


@pytest.mark.parametrize("symmetric", [False, True])
def test_moco_trains_with_a_students_step(images, symmetric):
    library = tiny_method("moco", queue_size=24, symmetric=symmetric)
    student = tiny_method("moco", queue_size=24, symmetric=symmetric, step=student_step,
                          enqueue=student_enqueue)
    histories = [train_briefly(method, images, epochs=2, batch_size=16, log_every=1)
                 for method in (library, student)]
    for key in ("loss", "positive_similarity", "queue_similarity"):
        assert ([r[key] for r in histories[0].steps]
                == pytest.approx([r[key] for r in histories[1].steps], abs=1e-4))
    assert torch.equal(student.queue_index, library.queue_index)
    assert torch.allclose(student.queue, library.queue, atol=1e-4)
    assert function_names(student.config())["step"] == f"{__name__}.student_step"
    assert function_names(library.config())["step"] == "clcourse.methods.moco.moco_step"


def test_a_wrong_students_logits_changes_the_loss(images):
    def no_temperature(q, k, queue, temperature):
        return student_logits(q, k, queue, 1.0)
    method = tiny_method("moco", logits=no_temperature).eval()
    reference = tiny_method("moco").eval()
    reference.load_state_dict(method.state_dict())
    q, k, index = random_unit(4, 1), random_unit(4, 2), torch.arange(4)
    assert not torch.allclose(method.query_loss(q, k, index), reference.query_loss(q, k, index))


@pytest.mark.parametrize("option", ["logits", "momentum_update", "enqueue", "step"])
def test_moco_parts_that_are_not_functions_are_refused(option):
    with pytest.raises(ValueError, match=option):
        tiny_method("moco", **{option: "nope"})
