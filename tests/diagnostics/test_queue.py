"""Queue diagnostics (clcourse/diagnostics/queue.py): queries and keys, hardest queue negatives and
their class-oracle false-negative rate, over training too, and MoCHi's synthetic negatives against
the real ones, each against a brute-force loop."""
import pytest
import torch
import torch.nn.functional as F
from helpers import fit

from clcourse.diagnostics import (
    keys,
    queries,
    queue_false_negative_rate,
    queue_false_negative_rate_over_training,
    queue_hardest_negatives,
    synthetic_negative_similarities,
)
from clcourse.methods import build_method
from clcourse.models import Backbone, SmallCNN

DIM = 8


def make(name="moco", **options):
    torch.manual_seed(0)
    options = {"projector_hidden": 16, "projector_out": DIM, "augment":
        lambda x, g=None: x.float() / 255, "queue_size": 12, "bn_splits": 2, **options}
    if name == "mochi":
        options = {"n_hardest": 3, "n_mix_negatives": 4, "n_mix_query": 2, **options}
    return build_method(name, Backbone(SmallCNN(width=4)), **options)


@pytest.fixture(scope="module")
def twenty_images():
    return torch.randint(0, 256, (20, 3, 16, 16), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))


def fill(method, entries=10):
    """Keys of images 0..entries-1 (two slots keep their initial random
    vectors when entries < 12)."""
    keys = F.normalize(torch.randn(entries, DIM, generator=torch.Generator().manual_seed(1)), dim=1)
    method.enqueue(keys, torch.arange(entries))
    return keys


def test_queries_are_the_unit_query_embeddings_in_eval_mode(twenty_images):
    method = make()
    q = queries(method, twenty_images, batch_size=7)
    with torch.no_grad():
        expected = F.normalize(method.eval().projector(method.backbone(
            twenty_images.float() / 255)), dim=1)
    assert torch.allclose(q, expected, atol=1e-5)


def test_hardest_queue_negatives_against_a_loop(twenty_images):
    method = make()
    keys = fill(method)
    index = torch.tensor([0, 3, 15, 4])
    similarities, key_index = queue_hardest_negatives(method, twenty_images[:4], k=3, index=index)
    q = queries(method, twenty_images[:4])
    for a in range(4):
        # no random slots, no own image
        candidates = [(float(q[a] @ keys[j]), j) for j in range(10) if j != index[a]]
        expected = sorted(candidates, reverse=True)[:3]
        assert key_index[a].tolist() == [j for _, j in expected]
        assert torch.allclose(similarities[a], torch.tensor([s for s, _ in expected]), atol=1e-5)


def test_false_negative_rate_counts_same_class_keys(twenty_images):
    method = make()
    fill(method)
    train_labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 0, 1] + [2] * 10)
    labels = torch.tensor([0, 1, 2, 0])
    rates = queue_false_negative_rate(method, twenty_images[:4], labels, train_labels, ks=[1, 5])
    _, key_index = queue_hardest_negatives(method, twenty_images[:4], k=5)
    same_class = (train_labels[key_index] == labels[:, None]).float()
    assert torch.allclose(rates, torch.stack([same_class[:, :1].mean(), same_class.mean()]))
    # Every key of a class-2 query's negatives is of another class
    # (class 2 never entered the queue).
    assert queue_false_negative_rate(method, twenty_images[2:3], labels[2:3], train_labels,
                                     ks=5).item() == 0.0


def test_false_negative_rate_over_training_reads_every_snapshot(twenty_images, tmp_path):
    method = make(queue_size=8)
    labels = torch.arange(20) % 3
    fit(method, twenty_images, labels=labels, epochs=2, batch_size=4, lr=0.05, progress=False,
        checkpoint_dir=tmp_path)
    queue_before = method.queue.clone()
    epochs, rates = queue_false_negative_rate_over_training(method, tmp_path, twenty_images[:6],
                                                            labels[:6], labels, ks=[1, 3],
                                                            index=torch.arange(6))
    assert epochs == [1, 2] and rates.shape == (2, 2) and ((rates >= 0) & (rates <= 1)).all()
    assert torch.equal(rates[-1], queue_false_negative_rate(method, twenty_images[:6], labels[:6],
                                                            labels, [1, 3], torch.arange(6)))
    assert torch.equal(method.queue, queue_before)


def test_synthetic_negative_similarities(twenty_images):
    method = make("mochi")
    fill(method, entries=12)
    index = torch.arange(5)
    result = synthetic_negative_similarities(method, twenty_images[:5], index=index,
                                             generator=torch.Generator().manual_seed(0))
    assert result["queue"].numel() == 5 * 11          # each query's own key is left out
    assert result["hardest"].numel() == 5 * 3
    assert result["mixed negatives"].numel() == 5 * 4 and result["mixed with query"].numel() == \
        5 * 2
    # Mixes of hard negatives are harder than the average queue entry; mixing in the query itself
    # makes a negative harder than the hard negatives it was mixed into.
    assert result["mixed negatives"].mean() > result["queue"].mean()
    assert result["mixed with query"].mean() > result["hardest"].mean()


def test_bad_input(twenty_images):
    simclr = build_method("simclr", Backbone(SmallCNN(width=4)), projector_hidden=16,
                          projector_out=DIM)
    with pytest.raises(ValueError, match="method"):
        queue_hardest_negatives(simclr, twenty_images, k=1)
    with pytest.raises(ValueError, match="method must be a MoCHi"):
        synthetic_negative_similarities(make(), twenty_images)
    with pytest.raises(ValueError, match="queue holds no key"):
        queue_hardest_negatives(make(), twenty_images, k=1)
    method = make()
    fill(method)
    with pytest.raises(ValueError, match="k must be"):
        queue_hardest_negatives(method, twenty_images, k=11)
    with pytest.raises(ValueError, match="labels"):
        queue_false_negative_rate(method, twenty_images[:4], torch.zeros(3, dtype=torch.long),
                                  torch.zeros(20), ks=1)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        queue_false_negative_rate_over_training(method, "/nonexistent", twenty_images,
                                                torch.zeros(20, dtype=torch.long),
                                                torch.zeros(20, dtype=torch.long), ks=1)


def test_keys_are_the_momentum_encoders_unit_embeddings_in_eval_mode(trained_sce, images):
    k = keys(trained_sce, images[:10], batch_size=3)
    trained_sce.eval()
    with torch.no_grad():
        expected = F.normalize(trained_sce.key_projector(trained_sce.key_backbone(
            images[:10].float() / 255)), dim=1)
    trained_sce.train()
    assert torch.allclose(k, expected, atol=1e-5) and trained_sce.training
