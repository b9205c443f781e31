"""SCE's soft targets as the diagnostics see them (clcourse/diagnostics/soft_targets.py): the target
and the prediction of the loss, MoCo's one-hot target, the target's spread over classes and the
same-class similarity, each against a loop."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import fit, randn, tiny_sce

from clcourse.diagnostics import (
    keys,
    queries,
    same_class_similarity,
    soft_targets,
    soft_targets_from_embeddings,
    target_spread,
)
from clcourse.losses import sce_target
from clcourse.methods import MoCo

DIM = 8


def test_soft_targets_of_the_method_are_the_losss_target_and_prediction(trained_sce, images):
    index = torch.arange(6)
    targets = soft_targets(trained_sce, images[:6], index=index)
    q, k = queries(trained_sce, images[:6]), keys(trained_sce, images[:6])
    mask = index[:, None] == trained_sce.queue_index[None, :]
    # 2 epochs of 48 images through a queue of 24: some keys are the queries' own
    assert mask.any()
    assert torch.allclose(targets.target, sce_target(k, trained_sce.queue, 0.05, 0.5, mask),
                          atol=1e-6)
    logits = torch.cat([(q * k).sum(1, keepdim=True),
                        (q @ trained_sce.queue.T).masked_fill(mask, float("-inf"))], 1) / 0.1
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
        assert torch.isclose(spread.effective_entries[i],
                             torch.exp(-(relation * relation.log()).sum()), atol=1e-4)
        assert torch.isclose(spread.same_class_push[i], (p - 0.6 * relation)[same].sum(), atol=1e-6)
        assert torch.isclose(spread.infonce_same_class_push[i], p[same].sum(), atol=1e-6)


def test_bad_soft_target_inputs_are_refused():
    generator = torch.Generator().manual_seed(0)
    q, k, queue = (F.normalize(torch.randn(n, DIM, generator=generator), dim=1) for n in (2, 2, 3))
    # weights down to 1 - lambda < 0
    with pytest.raises(ValueError, match=r"lam must be in \[0.0, 1.0\], got 2.0"):
        soft_targets_from_embeddings(q, k, queue, torch.arange(3), 0.1, 0.05, 2.0)
    targets = soft_targets_from_embeddings(q, k, queue, torch.tensor([0, 1, 2]), 0.1, 0.05, 0.5)
    with pytest.raises(ValueError, match="train_labels has 2 entries, but the queue holds a key of "
                                         "training image 2: pass the labels of the whole "
                                         "training set"):
        target_spread(targets, torch.tensor([0, 1]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="train_labels must be a 1-D integer tensor"):
        target_spread(targets, torch.tensor([0, 1]), torch.rand(3))
    assert target_spread(targets, torch.tensor([0, 1]), [0, 1, 0]).same_class_share.tolist() == \
        pytest.approx([2 / 3, 1 / 3])


def test_same_class_similarity_against_a_loop():
    z = randn(30, 7, 4, dtype=torch.float32)
    labels = torch.tensor([0, 1, 0, 1, 2, 0, 2])
    same, other = same_class_similarity(z, labels)
    u = F.normalize(z, dim=1)
    pairs = [(float(u[i] @ u[j]), bool(labels[i] == labels[j])) for i in range(7) for j in range(7)
             if i != j]
    assert math.isclose(same.item(), np.mean([s for s, flag in pairs if flag]), abs_tol=1e-6)
    assert math.isclose(other.item(), np.mean([s for s, flag in pairs if not flag]), abs_tol=1e-6)
    with pytest.raises(ValueError, match="at least 2 rows"):
        same_class_similarity(z[:1], labels[:1])
