"""Checkers for notebook 03 (MoCo: queue and momentum): the ring-buffer enqueue, the momentum (EMA)
update of the key encoder, and the logits of a query against its key and the queue."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..losses import moco_logits
from ..methods.moco import moco_step, ring_buffer_enqueue, update_key_encoder
from ._core import (
    ExerciseError,
    as_tensor,
    call_student,
    diagnose,
    exercise,
    passed,
    same,
    seeded,
    student_error,
)

__all__ = ["check_enqueue", "check_momentum_update", "reference_moco_logits", "check_moco_logits",
           "check_moco_step"]


# ---------------------------------------------------------------- enqueue

def _reference_enqueue(queue: torch.Tensor, pointer: int,
                       keys: torch.Tensor) -> tuple[torch.Tensor, int]:
    queue = queue.clone()
    slots = (pointer + torch.arange(len(keys))) % len(queue)
    queue[slots] = keys
    return queue, (pointer + len(keys)) % len(queue)


def _as_pointer(value) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ExerciseError("enqueue must return the new pointer as an int (or a one-element integer "
                        f"tensor), got {value!r}.")


def _call_enqueue(fn, queue: torch.Tensor, pointer: int,
                  keys: torch.Tensor) -> tuple[torch.Tensor, int]:
    try:
        result = call_student(fn, queue.clone(), pointer, keys.clone(), name="enqueue",
                              raising=(RuntimeError, IndexError))
    except (RuntimeError, IndexError) as error:
        raise ExerciseError(
            f"enqueue failed with K={len(queue)}, B={len(keys)}, pointer={pointer} "
            f"({type(error).__name__}: {error}). When the keys run past the end of the queue they "
            "continue at row 0: write them to the slots (pointer + arange(B)) % K.") from None
    if not isinstance(result, tuple) or len(result) != 2:
        raise ExerciseError("enqueue must return two things: (queue, pointer).")
    return as_tensor(result[0], "enqueue's queue"), _as_pointer(result[1])


@exercise(stands_for=ring_buffer_enqueue)
def check_enqueue(fn, cases=((8, 3, 0), (8, 3, 2), (8, 3, 6), (6, 3, 3), (5, 5, 1))) -> None:
    """fn(queue [K, D], pointer, keys [B, D]) -> (new queue, new pointer): a ring buffer that
    overwrites the B oldest entries, starting at `pointer`, and moves the pointer past them."""
    g = seeded(0)
    for size, batch, pointer in cases:
        queue = torch.randn(size, 4, generator=g, dtype=torch.float64)
        keys = torch.randn(batch, 4, generator=g, dtype=torch.float64)
        context = f"K={size}, B={batch}, pointer={pointer}"
        student_queue, student_pointer = _call_enqueue(fn, queue, pointer, keys)
        reference_queue, reference_pointer = _reference_enqueue(queue, pointer, keys)
        if student_queue.shape != queue.shape:
            raise ExerciseError(f"enqueue ({context}) returned a queue of shape "
                                f"{tuple(student_queue.shape)}; the queue keeps its size "
                                f"K={size}: overwrite old entries, don't append.")
        mistakes = {
            "This is a FIFO, but a shifting one that moves all K rows every "
            "step. Write the keys in place at the pointer (a ring buffer) and "
            "move only the pointer.": torch.cat([queue[batch:], keys]),
            "Append the new keys at the end, not the front (or better: write them in place at "
            "the pointer, a ring buffer that moves no data).": torch.cat([keys, queue[:-batch]]),
            "Write the keys starting at the pointer, which marks the oldest entry, not at row 0.":
                _reference_enqueue(queue, 0, keys)[0],
            "The pointer marks the oldest entry, the first one to "
            "overwrite: write the keys from the pointer on, not just before "
            "it.": _reference_enqueue(queue, (pointer - batch) % size, keys)[0],
        }
        if pointer + batch > size:
            mistakes[
                "When the keys run past the end of the queue they continue "
                "at row 0: write them to the slots (pointer + arange(B)) % "
                "K."
            ] = torch.cat([queue[:pointer], keys[: size - pointer]])
        diagnose("enqueue", student_queue, reference_queue, mistakes, context)
        if student_pointer != reference_pointer:
            if student_pointer == pointer + batch:
                hint = ("The pointer must wrap around: (pointer + B) % K, or it runs "
                        "past the end of the queue.")
            elif student_pointer == (pointer + 1) % size:
                hint = "Advance the pointer by the number of keys written (B), not by 1."
            elif student_pointer == pointer:
                hint = ("Move the pointer past the keys you wrote, or the next "
                        "batch overwrites them.")
            else:
                hint = (f"Expected {reference_pointer}: the slot after the last "
                        "key written, modulo K.")
            raise ExerciseError(f"enqueue ({context}) returned pointer {student_pointer}. {hint}")

    # Several batches in a row: the queue always holds the K newest keys, oldest at the pointer.
    queue, pointer, history = torch.zeros(8, 2, dtype=torch.float64), 0, []
    for step in range(5):
        keys = (torch.full((3, 2), float(step + 1), dtype=torch.float64)
                + torch.arange(3.0, dtype=torch.float64)[:, None])
        queue, pointer = _call_enqueue(fn, queue, pointer, keys)
        history.append(keys)
    if not same(queue.roll(-pointer, dims=0), torch.cat(history)[-8:]):
        raise ExerciseError("After 5 batches of 3 keys a queue of 8 must hold the 8 newest "
                            "keys, the oldest at the pointer: check how you chain the pointer "
                            "from one call to the next.")
    passed("enqueue", "a ring buffer: the B oldest keys are overwritten and "
                      "the pointer wraps around")


# ---------------------------------------------------------------- momentum update

def _encoders(seed: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    query = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    key = copy.deepcopy(query)
    with torch.no_grad():
        for p in key.parameters():
            p.add_(torch.randn_like(p))       # a key encoder that lags behind the query encoder
            p.requires_grad_(False)
    return key, query


def _state(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


@exercise(stands_for=update_key_encoder)
def check_momentum_update(fn, cases=(0.9, 0.99, 0.7)) -> None:
    """fn(key_encoder, query_encoder, momentum) updates the key encoder's parameters in place:
    theta_k <- m theta_k + (1 - m) theta_q, and leaves the query encoder alone."""
    for seed, momentum in enumerate(cases):
        key, query = _encoders(seed)
        old_key, old_query = _state(key), _state(query)
        context = f"momentum={momentum}"
        try:
            call_student(fn, key, query, momentum, name="momentum_update",
                         raising=(RuntimeError,))
        except RuntimeError as error:
            if "leaf Variable" in str(error) or "requires grad" in str(error):
                raise ExerciseError("momentum_update changed a parameter in place "
                                    "while autograd was watching: do the update inside "
                                    "`with torch.no_grad():`.") from None
            raise student_error("momentum_update", error) from error
        if any(p.requires_grad or p.grad_fn is not None for p in key.parameters()):
            raise ExerciseError("The key encoder's parameters now require grad: the update was "
                                "recorded by autograd. Do it inside `with torch.no_grad():` (the "
                                "key encoder is never trained by gradient).")
        new_key, new_query = _state(key), _state(query)
        if not all(torch.equal(a, b) for a, b in zip(new_query, old_query)):
            raise ExerciseError("momentum_update changed the query encoder: only the key "
                                "encoder moves, towards the query encoder (the query encoder is "
                                "trained by gradient descent).")
        reference = [momentum * k + (1 - momentum) * q for k, q in zip(old_key, old_query)]
        flat = lambda tensors: torch.cat([t.flatten() for t in tensors])
        diagnose("momentum_update", flat(new_key), flat(reference), {
            "The key encoder did not change: update its parameters in place "
            "(p_k.mul_(m).add_(p_q, alpha=1 - m), or p_k.copy_(...)); assigning a new tensor to "
            "the loop variable does not change the module.": flat(old_key),
            "You swapped m and 1 - m: the key keeps the fraction m of itself, θ_k ← m "
            "θ_k + (1 − m) θ_q, so that it changes slowly.":
                flat([(1 - momentum) * k + momentum * q for k, q in zip(old_key, old_query)]),
            "You copied the query encoder (that is m = 0): keep the fraction m of the key, θ_k "
            "← m θ_k + (1 − m) θ_q.":
                flat(old_query),
        }, context)
    passed("momentum_update", "θ_k ← m θ_k + (1 − m) θ_q in place, outside autograd, "
                              "query encoder untouched")


# ---------------------------------------------------------------- logits against the queue

def reference_moco_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor,
                          temperature: float) -> torch.Tensor:
    positive = (q * k).sum(dim=1, keepdim=True)
    return torch.cat([positive, q @ queue.T], dim=1) / temperature


@exercise(stands_for=moco_logits)
def check_moco_logits(fn, cases=((4, 10, 8, 0.2), (3, 7, 5, 0.07), (5, 6, 16, 1.0))) -> None:
    """fn(q [B, D], k [B, D], queue [K, D], temperature) -> logits [B, 1 + K]: the positive q.k
    in column 0, then q.n for every queue entry, all divided by the temperature; k and the queue
    get no gradient."""
    for seed, (batch, size, dim, temperature) in enumerate(cases):
        g = seeded(seed)
        unit = lambda n: F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=1)
        q, k, queue = unit(batch), unit(batch), unit(size)
        context = f"B={batch}, K={size}, D={dim}, temperature={temperature}"
        student_q, student_k, student_queue = (t.clone().requires_grad_() for t in (q, k, queue))
        try:
            logits = call_student(fn, student_q, student_k, student_queue, temperature,
                                  name="moco_logits", raising=(RuntimeError,))
        except RuntimeError as error:
            raise ExerciseError(f"moco_logits failed ({context}): {error}. Shapes to aim for: the "
                                "positive (q * k).sum(dim=1, keepdim=True) is [B, 1], the "
                                "negatives q @ queue.T are [B, K].") from None
        logits = as_tensor(logits, "moco_logits")
        if logits.shape == (batch, batch + size):
            raise ExerciseError(f"moco_logits ({context}) returned shape {tuple(logits.shape)}: "
                                "the positive is one logit per query, q_b · "
                                "k_b = (q * k).sum(dim=1, keepdim=True), not the matrix q @ k.T.")
        if logits.shape == (batch, size):
            raise ExerciseError(f"moco_logits ({context}) returned only the {size} queue "
                                "logits: put the positive q · k in front, "
                                "torch.cat([positive, negatives], dim=1).")
        reference = reference_moco_logits(q, k, queue, temperature)
        negatives = q @ queue.T
        positive = (q * k).sum(dim=1, keepdim=True)
        diagnose("moco_logits", logits, reference, {
            "Put the positive logit in column 0: the cross-entropy target is 0 for every query.":
                torch.cat([negatives, positive], dim=1) / temperature,
            "Divide the logits by the temperature.": reference * temperature,
            "Divide by the temperature; don't multiply.": reference * temperature ** 2,
            "Divide by the temperature once, not twice.": reference / temperature,
        }, context)
        logits.sum().backward()
        if student_k.grad is not None and student_k.grad.abs().sum() > 0:
            raise ExerciseError("Gradient flows into the keys k: they come from the momentum "
                                "encoder, which is not trained by gradient. Use k.detach().")
        if student_queue.grad is not None and student_queue.grad.abs().sum() > 0:
            raise ExerciseError("Gradient flows into the queue: its keys are "
                                "constants. Use queue.detach().")
        if student_q.grad is None:
            raise ExerciseError("No gradient reaches the queries q: don't detach q, it "
                                "is what the loss trains.")
    passed("moco_logits", "[B, 1 + K] logits, positive in column 0, divided by "
                          "τ, gradient into q only")


# ---------------------------------------------------------------- one training step

def _step_setup(seed: int):
    """A tiny MoCo (2 BN splits, 8x8 views) whose key encoder lags behind its query encoder and
    whose queue holds keys of the batch's own images, with two views and the images' indices."""
    from ..methods import MoCo
    from ..models import Backbone, SmallCNN
    torch.manual_seed(seed)
    method = MoCo(Backbone(SmallCNN(width=4)), temperature=0.2 + 0.3 * seed, queue_size=12,
                  bn_splits=2, projector_hidden=16, projector_out=6).train()
    g = seeded(100 + seed)
    with torch.no_grad():
        for parameter in method.key_parameters():
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=g))
        method.queue.copy_(F.normalize(torch.randn(method.queue.shape, generator=g), dim=1))
        index = torch.arange(8) + 40
        # keys of the images 40, 41, 44, 45 and 47 of the batch; none where a shifted mask or
        # arange(B) targets would hit it exactly
        method.queue_index.copy_(torch.tensor([3, 41, 47, 40, -1, 9, 44, 43, 12, 45, -1, 2]))
        method.queue_pointer.fill_(5)
        query_views, key_views = (torch.rand(8, 3, 8, 8, generator=g) for _ in range(2))
        # a stale key of a query's own image lies close to the query, as in training:
        # masking it matters
        q = F.normalize(method.projector(method.backbone(query_views)), dim=1)
        for slot, image in enumerate(method.queue_index.tolist()):
            if image in index.tolist():
                noise = 0.3 * F.normalize(torch.randn(q.shape[1], generator=g), dim=0)
                method.queue[slot] = F.normalize(q[image - 40] + noise, dim=0)
    return method, query_views, key_views, index


def _moco_step_variant(method, query_views, key_views, index, seed: int, *, shuffle: bool = True,
                       unshuffle: bool = True, key_encoder: bool = True, normalise: bool = True,
                       mask: str = "-inf", target: str = "zeros", temperature: float | None = None):
    """One direction of a MoCo step written out, with switches that reproduce the usual mistakes;
    with the defaults it is the reference (`clcourse.methods.moco_step`). Draws the shuffle after
    torch.manual_seed(seed)."""
    torch.manual_seed(seed)

    def encode(backbone, projector, views):
        out = projector(backbone(views))
        return F.normalize(out, dim=1) if normalise else out

    q = encode(method.backbone, method.projector, query_views)
    encoders = ((method.key_backbone, method.key_projector) if key_encoder
                else (method.backbone, method.projector))
    with torch.no_grad():
        order = torch.randperm(len(key_views)) if shuffle else torch.arange(len(key_views))
    k = encode(*encoders, key_views[order])
    if unshuffle:
        k = k[torch.argsort(order)]
    if key_encoder:
        k = k.detach()
    logits = torch.cat([(q * k.detach()).sum(1, keepdim=True), q @ method.queue.T], dim=1)
    logits = logits / (temperature or method.temperature)
    own_image = index[:, None] == method.queue_index[None, :]
    if mask == "-inf":
        logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(own_image, float("-inf"))],
                           dim=1)
    elif mask == "zero":
        logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(own_image, 0.0)], dim=1)
    elif mask == "shifted":  # the mask padded at the end, so column j + 1's entry masks column j
        padded = torch.cat([own_image, torch.zeros(len(q), 1, dtype=torch.bool)], dim=1)
        logits = logits.masked_fill(padded, float("-inf"))
    targets = torch.zeros(len(q), dtype=torch.long) if target == "zeros" else torch.arange(len(q))
    return F.cross_entropy(logits, targets), q, k


def _call_step(fn, method, query_views, key_views, index, seed: int):
    torch.manual_seed(seed)
    try:
        result = call_student(fn, method, query_views.clone(), key_views.clone(), index.clone(),
                              name="moco_step", raising=(RuntimeError,))
    except RuntimeError as error:
        raise ExerciseError(f"moco_step failed: {error}. Shapes to aim for: q and k [B, D], "
                            "the logits [B, 1 + K], the mask of the queue entries of each "
                            "query's own image [B, K].") from None
    if not isinstance(result, tuple) or len(result) != 3:
        raise ExerciseError("moco_step must return three things: (loss, q, k).")
    return tuple(as_tensor(value, f"moco_step's {name}")
                 for value, name in zip(result, ("loss", "q", "k")))


@exercise(stands_for=moco_step)
def check_moco_step(fn, cases=(0, 1)) -> None:
    """fn(moco, query_views [B, 3, H, W], key_views [B, 3, H, W], index [B]) -> (loss, q, k): one
    direction of a MoCo step. Queries from the query encoder (with gradient), keys from the momentum
    encoder on a shuffled batch (without gradient, unshuffled afterwards), both L2-normalised; the
    InfoNCE of q against k (column 0) and the queue, with the queue entries of each query's own
    image masked out. The queue and the key encoder are left alone: the loop enqueues and updates
    them after the optimiser step."""
    for seed in cases:
        method, query_views, key_views, index = _step_setup(seed)
        before = [t.clone() for t in (method.queue, method.queue_index, method.queue_pointer)]
        key_weights = _state(method.key_encoder())
        context = f"B=8, K=12, temperature={method.temperature}"
        loss, q, k = _call_step(fn, method, query_views, key_views, index, seed)
        if not all(torch.equal(a, b) for a, b
                   in zip(before, (method.queue, method.queue_index, method.queue_pointer))):
            raise ExerciseError("moco_step changed the queue. Don't enqueue inside the step: the "
                                "loss would then see this batch's own keys (its positives) among "
                                "the negatives. The training loop enqueues the keys after the "
                                "optimiser step (your `enqueue`, in on_step_end).")
        if not all(torch.equal(a, b) for a, b in zip(key_weights, _state(method.key_encoder()))):
            raise ExerciseError("moco_step changed the key encoder. Leave the momentum update to "
                                "the training loop: it runs after the optimiser step (your "
                                "`momentum_update`, in on_step_end).")
        variant = lambda **wrong: _moco_step_variant(method, query_views, key_views, index, seed,
                                                     **wrong)
        reference_loss, reference_q, reference_k = variant()
        with_query_encoder = variant(key_encoder=False)
        if k.shape == reference_k.shape and same(k, with_query_encoder[2]):
            raise ExerciseError("The keys come from the query encoder: use the momentum encoder, "
                                "moco.key_projector(moco.key_backbone(...)).")
        if k.requires_grad:
            raise ExerciseError("The keys carry a gradient: compute them under torch.no_grad() "
                                "(the key encoder is not trained by gradient, it follows the "
                                "query encoder by the momentum update).")
        diagnose("moco_step's keys k", k, reference_k, {
            "Compute the keys on a shuffled batch: with split batch-norm, a query and its key "
            "must not be normalised with the same group of samples (shuffle BN), e.g. "
            "shuffle = torch.randperm(B), keys of key_views[shuffle].": variant(shuffle=False)[2],
            "Undo the shuffle after the key encoder: k[torch.argsort(shuffle)] puts key b "
            "back in front of query b.":
                variant(unshuffle=False)[2],
            "Normalise the keys to unit length (F.normalize(..., dim=1)).":
                variant(normalise=False)[2],
        }, context)
        if not q.requires_grad:
            raise ExerciseError("The queries carry no gradient: they are what the loss trains, "
                                "don't detach q or compute it under torch.no_grad().")
        diagnose("moco_step's queries q", q, reference_q, {
            "Normalise the queries to unit length (F.normalize(..., dim=1)).":
                variant(normalise=False)[1],
        }, context)
        if not torch.isfinite(loss.detach()).all():
            raise ExerciseError("moco_step's loss is infinite: some query's positive logit got "
                                "-inf. The mask must only cover the queue columns, "
                                "logits[:, 1:] (column 0 is the positive), and the target of "
                                "every query is column 0.")
        if loss.dim() != 0:
            raise ExerciseError("moco_step's loss must be a scalar (the mean over queries), got "
                                f"shape {tuple(loss.shape)}.")
        diagnose("moco_step's loss", loss, reference_loss, {
            "Mask the queue entries that hold a key of the query's own "
            "image (index[:, None] == moco.queue_index): a stale view of "
            "the same image is no negative.": variant(mask="none")[0],
            "Mask with -inf, not 0: a logit of 0 still counts as a negative with weight e^0 = 1.":
                variant(mask="zero")[0],
            "The mask is shifted by one column: queue entry j is logit column 1 + j "
            "(column 0 is the positive). Mask logits[:, 1:], or pad the mask with a "
            "False column in FRONT.": variant(mask="shifted")[0],
            "The positive is in column 0 for every query: the targets are zeros, not arange(B).":
                variant(target="arange")[0],
            "Divide the logits by moco.temperature.": variant(temperature=1.0)[0],
        }, context)
        method.zero_grad()
        loss.backward()
        student_gradients = [p.grad for p in method.query_parameters()]
        method.zero_grad()
        reference_loss.backward()
        if not all(s is not None and same(s, r.grad)
                   for s, r in zip(student_gradients, method.query_parameters())):
            raise ExerciseError("moco_step's loss has the right value but the wrong gradient: "
                                "is q detached somewhere?")
    passed("moco_step", "queries with gradient, shuffled momentum keys without, own-image keys "
                        "masked, queue untouched")
