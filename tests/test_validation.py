"""Input checks at the public boundary (clcourse/validation.py), where data enters each function:
float pixels in 0..255 are refused and unit-range floats mean what uint8 means, non-finite features
are refused, NumPy scalars and 0-d tensors are numbers, labels as lists, tuples and small integer
types are labels."""
import json

import numpy as np
import pytest
import torch
from helpers import noisy_views, short_run, tiny_simclr

from clcourse.augment import simclr_cifar
from clcourse.evaluate import extract_features, knn_accuracy, linear_probe
from clcourse.losses import info_nce
from clcourse.methods import SimCLR
from clcourse.models import Backbone, SmallCNN
from clcourse.negatives import hardest_negatives
from clcourse.train import KnnData

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
    assert torch.equal(extract_features(backbone, images),
                       extract_features(backbone, images.float() / 255))
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

@pytest.mark.parametrize("temperature",
                         [np.float32(0.3), np.float64(0.3), torch.tensor(0.3), np.array(0.3)])
def test_numpy_scalars_and_0d_tensors_are_numbers(images, tmp_path, temperature):
    method = SimCLR(Backbone(SmallCNN(width=4)), temperature=temperature, projector_hidden=16,
                    projector_out=8, augment=noisy_views)
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
        narrow = knn_accuracy(features, labels.to(dtype), features[:16], labels[:16].to(dtype),
                              k=5)
        assert narrow == expected
    probe = linear_probe(features, labels.to(torch.int32), features[:16],
                         labels[:16].numpy().astype(np.uint8), epochs=2)
    int64_probe = linear_probe(features, labels, features[:16], labels[:16], epochs=2)
    assert probe.test_accuracy == int64_probe.test_accuracy


# ---------------------------------------------------------------- flags

def flag_calls():
    """Every flag of the package's public functions and methods, given the string "no" (truthy: it
    would mean yes)."""
    import torch.nn as nn

    from clcourse import attacks, cka, losses, models, negatives, robustness, runs, viz
    from clcourse.methods import CACR, CLAE, MoCo
    backbone = Backbone(SmallCNN(width=4))
    x = torch.rand(4, 3, 8, 8)
    q, queue = torch.randn(4, 8), torch.randn(6, 8)
    mask = torch.zeros(4, 6, dtype=torch.bool)
    heatmap = cka.CKAResult(a="a", b="b", layers_a=("l1", "l2"), layers_b=("l1", "l2"),
                            matrix=torch.rand(2, 2, dtype=torch.float64), num_images=8,
                            num_batches=1)
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(192, 3))
    return {
        "MoCo(symmetric)": lambda: MoCo(backbone, symmetric="no"),
        "MoCo(mask_same_image)": lambda: MoCo(backbone, mask_same_image="no"),
        "CLAE(dual_batchnorm)": lambda: CLAE(backbone, dual_batchnorm="no"),
        "CACR(detach_weights)": lambda: CACR(backbone, detach_weights="no"),
        "cacr(detach_weights)": lambda: losses.cacr([q, q], detach_weights="no"),
        "moco_info_nce(check_mask)": lambda: losses.moco_info_nce(
            q, q, queue, queue_mask=mask, check_mask="no"),
        "sce(check_mask)": lambda: losses.sce(q, q, queue, queue_mask=mask, check_mask="no"),
        "mochi_negatives(check_mask)": lambda: losses.mochi_negatives(
            q, queue, 2, 2, 1, queue_mask=mask,
                      check_mask="no"),
        "linear_cka(unbiased)": lambda: cka.linear_cka(q, q, unbiased="no"),
        "layer_cka(progress)": lambda: cka.layer_cka({"a": backbone}, x, progress="no"),
        "pooled_layer_features(progress)": lambda: cka.pooled_layer_features(
            backbone, x, progress="no"),
        "layer_probes(progress)": lambda: cka.layer_probes(backbone, x, torch.arange(4), x,
                                                           torch.arange(4), progress="no"),
        "pgd(random_start)": lambda: attacks.pgd(lambda v: v.sum(), x, 0.1, 0.1, 1,
                                                 random_start="no"),
        "threat_model_1(random_start)": lambda: robustness.threat_model_1(
            classifier, random_start="no"),
        "robust_accuracy(progress)": lambda: robustness.robust_accuracy(
            classifier, x, torch.arange(4), progress="no"),
        "build_encoder_method(adversarial)": lambda: robustness.build_encoder_method(
            "cl", "no", None),
        "projection_mlp(batch_norm)": lambda: models.projection_mlp(8, 8, 4, batch_norm="no"),
        "embed(projected)": lambda: MoCo(backbone).embed(x, projected="no"),
        "embedding_map(normalize)": lambda: negatives.embedding_map(q, normalize="no"),
        "fit_embedding_map(normalize)": lambda: negatives.fit_embedding_map(q, normalize="no"),
        "simclr_run(sweep)": lambda: runs.simclr_run(0.5, sweep="no"),
        "plot_cka_heatmap(colorbar)": lambda: viz.plot_cka_heatmap(heatmap, colorbar="no"),
        "plot_cka_heatmap(annotate)": lambda: viz.plot_cka_heatmap(heatmap, annotate="no"),
    }


FLAGS = ["MoCo(symmetric)", "MoCo(mask_same_image)", "CLAE(dual_batchnorm)", "CACR(detach_weights)",
         "cacr(detach_weights)", "moco_info_nce(check_mask)", "sce(check_mask)",
         "mochi_negatives(check_mask)",
         "linear_cka(unbiased)", "layer_cka(progress)", "pooled_layer_features(progress)",
         "layer_probes(progress)",
         "pgd(random_start)", "threat_model_1(random_start)", "robust_accuracy(progress)",
         "build_encoder_method(adversarial)", "projection_mlp(batch_norm)", "embed(projected)",
         "embedding_map(normalize)", "fit_embedding_map(normalize)", "simclr_run(sweep)",
         "plot_cka_heatmap(colorbar)", "plot_cka_heatmap(annotate)"]


def test_the_flag_list_is_complete():
    assert sorted(FLAGS) == sorted(flag_calls())


@pytest.mark.parametrize("name", FLAGS)
def test_every_flag_refuses_a_string(name):
    flag = name[name.index("(") + 1:-1]
    with pytest.raises(ValueError, match=rf"{flag} must be True or False, got 'no'"):
        flag_calls()[name]()
