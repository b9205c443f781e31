"""Edges of the augmentations that a wrong line would slip past (found by tools/mutate.py): the crop fallback
with an aspect-ratio range that excludes the image's own, and every default of the recipes, stated once."""
import pytest
import torch

from clcourse.augment import Augment, sample_crop_boxes, simclr_cifar, simclr_stl10, weak
from test_augment import generator, torchvision_boxes


@pytest.mark.parametrize("height, width, ratio, expected", [
    (10, 100, (2.0, 3.0), (0, 35, 10, 30)),       # too wide: cut to ratio 3, centred
    (100, 10, (2.0, 3.0), (47, 0, 5, 10)),        # too tall for ratio >= 2: cut to ratio 2
    (10, 10, (2.0, 3.0), (2, 0, 5, 10)),
    (10, 10, (1 / 3, 1 / 2), (0, 2, 10, 5)),      # square, ratio at most 1/2: narrowed
])
def test_crop_fallback_with_a_ratio_range_that_excludes_the_image(height, width, ratio, expected):
    scale = (0.9, 1.0)                            # no box of 90% of the area with that ratio fits
    boxes = torch.stack(sample_crop_boxes(4, height, width, scale, ratio, generator(0)), dim=1)
    assert torch.equal(boxes, torch.tensor([expected] * 4, dtype=torch.float32))
    assert torch.equal(boxes, torchvision_boxes(4, height, width, scale, ratio).float())


def test_crop_box_defaults_are_torchvisions():
    explicit = sample_crop_boxes(50, 12, 20, (0.08, 1.0), (3 / 4, 4 / 3), generator(1), attempts=10)
    assert all(torch.equal(a, b) for a, b in zip(sample_crop_boxes(50, 12, 20, generator=generator(1)), explicit))


CIFAR = """Augment(size=32,
        crop_scale=(0.08, 1), crop_ratio=(0.75, 1.33333), flip_p=0.5,
        brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, jitter_p=0.8,
        grayscale_p=0.2,
        blur_p=0, blur_sigma=(0.1, 2), blur_kernel_size=3,
        solarize_p=0, solarize_threshold=0.5)"""


def test_every_default_of_the_recipes():
    assert repr(Augment()) == repr(simclr_cifar()) == CIFAR
    stl = CIFAR.replace("size=32", "size=96").replace("blur_p=0,", "blur_p=0.5,").replace("size=3,", "size=9,")
    assert repr(simclr_stl10()) == stl
    assert repr(weak()) == (CIFAR.replace("(0.08, 1)", "(0.2, 1)").replace("0.4", "0").replace("hue=0.1", "hue=0")
                            .replace("jitter_p=0.8", "jitter_p=0").replace("grayscale_p=0.2", "grayscale_p=0"))
