"""Input checks at the public boundary (clcourse/validation.py), where data enters each function:
float pixels in 0..255 are refused and unit-range floats mean what uint8 means, non-finite features
are refused, NumPy scalars and 0-d tensors are numbers, labels as lists, tuples and small integer
types are labels."""
import json

import numpy as np
import pytest
import torch

from clcourse.augment import simclr_cifar
from clcourse.evaluate import extract_features, knn_accuracy, linear_probe
from clcourse.losses import info_nce
from clcourse.methods import SimCLR
from clcourse.models import Backbone, SmallCNN
from clcourse.negatives import hardest_negatives
from clcourse.train import KnnData
from helpers import noisy_views, short_run, tiny_simclr


# ---------------------------------------------------------------- image ranges and dtypes

def test_float_pixels_in_0_255_are_refused_where_images_enter(images):
    pixels_0_255 = images.float()
    hint = "look like 0..255 pixel values"
    with pytest.raises(ValueError, match=f"images holds float pixels in \\[0, 255\\].*{hint}"):
        simclr_cifar(16)(pixels_0_255)
    with pytest.raises(ValueError, match=f"images holds float pixels in \\[0, 255\\].*{hint}"):
        extract_features(Backbone(SmallCNN(width=4)), pixels_0_255)
    with pytest.raises(ValueError, match="images must be uint8 pixels 0..255.*to_uint8_images"):
        short_run(images.float() / 255)
    with pytest.raises(ValueError, match="knn_data.test_images holds float pixels"):
        short_run(images, knn_data=KnnData(images, torch.zeros(48), pixels_0_255, torch.zeros(48)),
                  knn_k=5)
    with pytest.raises(ValueError, match=r"holds float pixels in \[nan, nan\]"):
        simclr_cifar(16)(torch.full((2, 3, 16, 16), float("nan")))


def test_float_pixels_in_the_unit_range_are_what_uint8_means(images):
    backbone = Backbone(SmallCNN(width=4))
    assert torch.equal(extract_features(backbone, images), extract_features(backbone, images.float() / 255))
    generator = torch.Generator().manual_seed(0)
    views = simclr_cifar(16)(images.float() / 255, generator)
    assert torch.allclose(views, simclr_cifar(16)(images, torch.Generator().manual_seed(0)))


# ---------------------------------------------------------------- non-finite features

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_are_refused(bad):
    features, labels = torch.randn(20, 4), torch.arange(20) % 2
    broken = features.clone()
    broken[3, 1] = bad
    with pytest.raises(ValueError, match="train_features holds 1 NaN or infinite values"):
        knn_accuracy(broken, labels, features, labels, k=3)
    with pytest.raises(ValueError, match="test_features holds 1 NaN or infinite values"):
        knn_accuracy(features, labels, broken, labels, k=3)
    with pytest.raises(ValueError, match="train_features holds 1 NaN or infinite values"):
        linear_probe(broken, labels, features, labels, epochs=1)
    with pytest.raises(ValueError, match="anchors holds 1 NaN or infinite values"):
        hardest_negatives(broken, features, k=2)
    with pytest.raises(ValueError, match="candidates holds 1 NaN or infinite values"):
        hardest_negatives(features, broken, k=2)


# ---------------------------------------------------------------- numbers and labels in other types

@pytest.mark.parametrize("temperature", [np.float32(0.3), np.float64(0.3), torch.tensor(0.3), np.array(0.3)])
def test_numpy_scalars_and_0d_tensors_are_numbers(images, tmp_path, temperature):
    method = SimCLR(Backbone(SmallCNN(width=4)), temperature=temperature, projector_hidden=16, projector_out=8,
                    augment=noisy_views)
    assert type(method.temperature) is float and method.temperature == pytest.approx(0.3)
    z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    assert torch.allclose(info_nce(z1, z2, temperature), info_nce(z1, z2, float(temperature)))
    history = short_run(images, method, checkpoint_dir=tmp_path, epochs=np.int64(1),
                        batch_size=torch.tensor(16), lr=np.float32(0.1), seed=np.int32(0))
    assert len(history.epochs) == 1
    json.loads((tmp_path / "config.json").read_text())        # stored as plain numbers


def test_labels_as_lists_tuples_and_small_integer_types_are_accepted(images):
    labels = torch.arange(48) % 4
    seen = []
    method = tiny_simclr()
    step = method.training_step
    method.training_step = lambda batch: (seen.append(batch.labels), step(batch))[1]
    knn = (images, labels.to(torch.uint8), images[:16], labels[:16].tolist())        # a plain tuple
    history = short_run(images, method, labels=labels.tolist(), knn_data=knn, knn_k=5, epochs=1)
    assert 0 <= history.final_knn_accuracy <= 1
    assert all(y.dtype == torch.int64 for y in seen)

    features = torch.randn(48, 4)
    expected = knn_accuracy(features, labels, features[:16], labels[:16], k=5)
    for dtype in (torch.uint8, torch.int32):
        assert knn_accuracy(features, labels.to(dtype), features[:16], labels[:16].to(dtype), k=5) == expected
    probe = linear_probe(features, labels.to(torch.int32), features[:16], labels[:16].numpy().astype(np.uint8),
                         epochs=2)
    assert probe.test_accuracy == linear_probe(features, labels, features[:16], labels[:16], epochs=2).test_accuracy
