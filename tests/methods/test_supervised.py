"""The supervised baseline of notebook 09: its loss is the cross-entropy of a linear classifier on the backbone
features of one view, it refuses to train without labels, and it learns a separable toy task."""
import pytest
import torch
import torch.nn.functional as F

from clcourse.methods import Batch, Supervised
from clcourse.models import Backbone, SmallCNN
from clcourse.presets import get_preset
from helpers import fit


def tiny_supervised(seed=0, **options):
    torch.manual_seed(seed)
    return Supervised(Backbone(SmallCNN(width=4)), **options)


def test_loss_is_the_cross_entropy_of_the_linear_classifier_on_the_backbone_features():
    supervised = tiny_supervised(num_classes=3)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8, generator=g)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    views = supervised.make_views(images, torch.Generator().manual_seed(1))
    assert len(views) == 1 and views[0].shape == (6, 3, 32, 32)
    out = supervised.training_step(Batch(views, images, labels, torch.arange(6)))
    logits = supervised.projector(supervised.backbone(views[0]))
    manual = -torch.stack([logits[i].log_softmax(0)[labels[i]] for i in range(6)]).mean()
    assert torch.allclose(out.loss, manual, atol=1e-6)
    assert torch.allclose(out.loss, F.cross_entropy(logits, labels), atol=1e-6)
    assert out.logs["train_accuracy"] == (logits.argmax(1) == labels).float().mean()
    assert supervised.projector.out_features == 3 and supervised.config()["num_classes"] == 3


def test_it_needs_labels_and_a_sensible_number_of_classes():
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    with pytest.raises(ValueError, match="labels"):
        fit(tiny_supervised(), images, preset=get_preset("smoke"), epochs=1, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="num_classes"):
        tiny_supervised(num_classes=1)


def test_it_learns_a_task_that_colour_separates(tmp_path):
    # Two classes, dark and bright images: a few epochs take the training accuracy well above chance.
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 2
    images = (torch.rand(64, 3, 16, 16, generator=g) * 100 + 120 * labels[:, None, None, None]).to(torch.uint8)
    history = fit(tiny_supervised(num_classes=2), images, labels=labels, preset=get_preset("smoke"), epochs=4, batch_size=16,
                    lr=0.05, progress=False, seed=0)
    accuracies = history.series("train_accuracy", per="step")[1]
    assert sum(accuracies[-4:]) / 4 > 0.8
