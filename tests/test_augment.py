"""Batched augmentation against torchvision, one image at a time: exact formulas where the op is
deterministic, two-sample Kolmogorov-Smirnov tests where it is random; the crop fallback and every
default of the recipes (edges found by tools/mutate.py)."""
import colorsys
import contextlib
import inspect
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import RandomResizedCrop

from clcourse.augment import (
    BRIGHTNESS,
    CONTRAST,
    HUE,
    SATURATION,
    Augment,
    ColorJitterParams,
    CropBoxes,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    clae_simclr,
    color_jitter,
    default_blur_kernel_size,
    gaussian_blur,
    gaussian_kernels,
    grayscale,
    horizontal_flip,
    hsv_to_rgb,
    resized_crop,
    rgb_to_grayscale,
    rgb_to_hsv,
    sample_apply,
    sample_color_jitter,
    sample_crop_boxes,
    sce_strong,
    simclr_cifar,
    simclr_stl10,
    solarize,
    to_float_images,
    weak,
)


def generator(seed):
    return torch.Generator().manual_seed(seed)


def rand_images(seed, n, height=8, width=8):
    return torch.rand(n, 3, height, width, generator=generator(seed))


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs,
    evaluated at every observed value."""
    a, b = a.double().sort().values, b.double().sort().values
    points = torch.cat([a, b])
    cdf_a = torch.searchsorted(a, points, right=True) / len(a)
    cdf_b = torch.searchsorted(b, points, right=True) / len(b)
    return (cdf_a - cdf_b).abs().max().item()


def ks_threshold(n: int, m: int) -> float:
    """Critical value of the two-sample KS test at level 0.001 (asymptotic: c(0.001) = 1.95)."""
    return 1.95 * math.sqrt((n + m) / (n * m))


def full_boxes(n, height, width):
    return CropBoxes(torch.zeros(n), torch.zeros(n), torch.full((n,), float(height)),
                     torch.full((n,), float(width)))


def identity_augment(**overrides):
    """Every random op switched off, and the crop forced to the whole (square) image."""
    kwargs = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0,
                  grayscale_p=0.0)
    kwargs.update(overrides)
    return Augment(**kwargs)


# ---------------------------------------------------------------- random resized crop

def torchvision_boxes(n, height, width, scale, ratio):
    image = torch.zeros(3, height, width)
    return torch.tensor(
        [RandomResizedCrop.get_params(image, list(scale), list(ratio)) for _ in range(n)],
        dtype=torch.float64)


def area_and_ratio(top_left_h_w, height, width):
    h, w = top_left_h_w[:, 2].double(), top_left_h_w[:, 3].double()
    return h * w / (height * width), w / h


@pytest.mark.parametrize("height, width", [(32, 32), (24, 40)])
def test_crop_box_distribution_matches_torchvision(height, width):
    n = 4000
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    # float64 like the reference, so that equal boxes give bit-equal statistics (the atoms must
    # coincide).
    drawn = sample_crop_boxes(n, height, width, scale, ratio, generator(0))
    boxes = torch.stack(drawn, dim=1).double()
    reference = torchvision_boxes(n, height, width, scale, ratio)
    ours_area, ours_ratio = area_and_ratio(boxes, height, width)
    ref_area, ref_ratio = area_and_ratio(reference, height, width)
    threshold = ks_threshold(n, n)
    assert ks_statistic(ours_area, ref_area) < threshold
    assert ks_statistic(ours_ratio, ref_ratio) < threshold
    # Positions too: where the box's free room is used, top / (H - h) in [0, 1].
    free = boxes[:, 2] < height
    ref_free = reference[:, 2] < height
    assert ks_statistic(boxes[free, 0] / (height - boxes[free, 2]),
                        reference[ref_free, 0] / (height - reference[ref_free, 2])) < ks_threshold(
                            int(free.sum()), int(ref_free.sum()))


def test_crop_box_ks_test_detects_a_wrong_scale_range():
    """The KS test above has power: a sampler with scale (0.2, 1) fails it against torchvision's
    (0.08, 1)."""
    n = 4000
    boxes = torch.stack(sample_crop_boxes(n, 32, 32, (0.2, 1.0), (3 / 4, 4 / 3), generator(0)),
                        dim=1)
    reference = torchvision_boxes(n, 32, 32, (0.08, 1.0), (3 / 4, 4 / 3))
    assert ks_statistic(area_and_ratio(boxes, 32, 32)[0],
                        area_and_ratio(reference, 32, 32)[0]) > ks_threshold(n, n)


def test_crop_boxes_are_whole_pixels_inside_the_image():
    top, left, h, w = sample_crop_boxes(2000, 20, 30, (0.08, 1.0), (0.5, 2.0), generator(1))
    for t in (top, left, h, w):
        assert t.dtype == torch.float32 and t.shape == (2000,) and torch.equal(t, t.round())
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= 20).all() and (left + w <= 30).all()
    area = h * w / 600
    assert area.min() < 0.1 and area.max() > 0.95


@pytest.mark.parametrize("height, width", [(10, 100), (100, 10)])
def test_crop_box_fallback_matches_torchvision(height, width):
    """No attempt can fit a square of 90-100% of a 10 x 100 image: torchvision's central
    fallback."""
    scale, ratio = (0.9, 1.0), (1.0, 1.0)
    boxes = torch.stack(sample_crop_boxes(5, height, width, scale, ratio, generator(0)), dim=1)
    expected = torchvision_boxes(5, height, width, scale, ratio).float()
    assert torch.equal(boxes, expected)


def test_resized_crop_of_the_whole_image_is_the_identity():
    images = rand_images(0, 4, 16, 16)
    assert torch.allclose(resized_crop(images, full_boxes(4, 16, 16), 16), images, atol=1e-6)


def test_resized_crop_without_resizing_is_slicing():
    """Boxes of the output size: each output is exactly that image's box (mirrored where flip
    is set)."""
    images = rand_images(1, 5, 12, 14)
    top, left = torch.tensor([0.0, 4, 2, 1, 4]), torch.tensor([0.0, 6, 3, 0, 1])
    boxes = CropBoxes(top, left, torch.full((5,), 8.0), torch.full((5,), 8.0))
    flip = torch.tensor([False, True, False, True, True])
    out = resized_crop(images, boxes, 8, flip)
    for i in range(5):
        row, col = int(top[i]), int(left[i])
        expected = images[i, :, row:row + 8, col:col + 8]
        expected = expected.flip(-1) if flip[i] else expected
        assert torch.allclose(out[i], expected, atol=1e-5)


def test_resized_crop_resizes_like_bilinear_interpolation():
    images = rand_images(2, 3, 10, 10)
    out = resized_crop(images, full_boxes(3, 10, 10), 24)
    expected = F.interpolate(images, size=(24, 24), mode="bilinear", align_corners=False)
    assert torch.allclose(out, expected, atol=1e-5)


def test_horizontal_flip():
    images = rand_images(3, 4)
    apply = torch.tensor([True, False, True, False])
    out = horizontal_flip(images, apply)
    for i in range(4):
        assert torch.equal(out[i], images[i].flip(-1) if apply[i] else images[i])
    assert torch.equal(horizontal_flip(images), images.flip(-1))


# ---------------------------------------------------------------- colour: exact against torchvision

FACTORS = [0.0, 0.35, 1.0, 1.4, 2.5]


@pytest.mark.parametrize("ours, theirs", [(adjust_brightness, TF.adjust_brightness),
                                          (adjust_contrast, TF.adjust_contrast),
                                          (adjust_saturation, TF.adjust_saturation)])
def test_blend_ops_equal_torchvision(ours, theirs):
    images = rand_images(4, len(FACTORS))
    per_image = ours(images, torch.tensor(FACTORS))
    for i, factor in enumerate(FACTORS):
        expected = theirs(images[i], factor)
        assert torch.allclose(per_image[i], expected, atol=1e-6)
        assert torch.allclose(ours(images, factor)[i], expected, atol=1e-6)


def test_adjust_hue_equals_torchvision():
    shifts = [-0.5, -0.27, -0.01, 0.0, 0.1, 0.33, 0.5]
    images = rand_images(5, len(shifts))
    images[0, :, :2] = 0.5          # grey pixels: hue undefined, must stay grey
    images[1, :, :2] = 0.0          # black pixels
    out = adjust_hue(images, torch.tensor(shifts))
    for i, shift in enumerate(shifts):
        assert torch.allclose(out[i], TF.adjust_hue(images[i], shift), atol=1e-5)


def test_rgb_hsv_conversions_match_colorsys():
    images = rand_images(6, 2, 6, 6)
    # greys
    images[0, :, 0, :3] = torch.tensor([[0.2, 0.2, 0.2], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]).T
    # primaries
    images[1, :, 0, :3] = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]).T
    hsv = rgb_to_hsv(images)
    for n in range(2):
        for y in range(6):
            for x in range(6):
                expected = torch.tensor(colorsys.rgb_to_hsv(*images[n, :, y, x].tolist()))
                got = hsv[n, :, y, x]
                hue_gap = abs(got[0] - expected[0]) % 1.0
                assert (min(hue_gap, 1 - hue_gap) < 1e-5
                        and torch.allclose(got[1:], expected[1:], atol=1e-6))
                assert torch.allclose(hsv_to_rgb(hsv)[n, :, y, x],
                                      torch.tensor(colorsys.hsv_to_rgb(*expected.tolist())),
                                      atol=1e-5)
    assert ((hsv >= 0) & (hsv <= 1)).all()


def test_grayscale_equals_torchvision():
    images = rand_images(7, 4)
    assert torch.allclose(rgb_to_grayscale(images), TF.rgb_to_grayscale(images), atol=1e-6)
    apply = torch.tensor([True, False, False, True])
    out = grayscale(images, apply)
    for i in range(4):
        expected = TF.rgb_to_grayscale(images[i], num_output_channels=3) if apply[i] else images[i]
        assert out[i].shape == (3, 8, 8) and torch.allclose(out[i], expected, atol=1e-6)


# ---------------------------------------------------------------- colour jitter

def reference_color_jitter(images, params):
    """One image at a time, torchvision's functional ops in that image's order."""
    ops = {BRIGHTNESS: lambda x, i: TF.adjust_brightness(x, params.brightness[i].item()),
           CONTRAST: lambda x, i: TF.adjust_contrast(x, params.contrast[i].item()),
           SATURATION: lambda x, i: TF.adjust_saturation(x, params.saturation[i].item()),
           HUE: lambda x, i: x if params.hue is None else TF.adjust_hue(x, params.hue[i].item())}
    out = []
    for i, image in enumerate(images):
        for op in params.order[i].tolist():
            image = ops[op](image, i)
        out.append(image)
    return torch.stack(out)


@pytest.mark.parametrize("hue", [0.0, 0.1, 0.5])
def test_color_jitter_equals_torchvision_ops_in_each_images_order(hue):
    images = rand_images(8, 24)
    params = sample_color_jitter(24, 0.4, 0.8, 0.6, hue, p=0.75, generator=generator(0))
    assert (params.hue is None) == (hue == 0)
    orders = {tuple(row) for row in params.order.tolist()}
    assert len(orders) > 10 and all(sorted(row) == [0, 1, 2, 3] for row in orders)
    assert torch.allclose(color_jitter(images, params), reference_color_jitter(images, params),
                          atol=1e-5)


def test_color_jitter_parameters_follow_torchvision_ranges():
    n = 4000
    params = sample_color_jitter(n, 0.4, 1.5, 0.2, 0.1, p=0.8, generator=generator(1))
    changed = params.brightness != 1
    assert abs(changed.float().mean().item() - 0.8) < 0.03
    for factors, low, high in ((params.brightness, 0.6, 1.4), (params.contrast, 0.0, 2.5),
                               (params.saturation, 0.8, 1.2), (params.hue, -0.1, 0.1)):
        jittered = factors[changed]
        assert jittered.min() >= low and jittered.max() <= high
        expected = torch.rand(len(jittered), generator=generator(2)) * (high - low) + low
        assert ks_statistic(jittered, expected) < ks_threshold(len(jittered), len(jittered))
    identity = ~changed
    assert (params.contrast[identity] == 1).all() and (params.saturation[identity] == 1).all()
    assert (params.hue[identity] == 0).all()


def test_color_jitter_with_identity_parameters_is_the_identity():
    images = rand_images(9, 6)
    params = sample_color_jitter(6, 0.4, 0.4, 0.4, 0.1, p=0.0, generator=generator(0))
    assert torch.allclose(color_jitter(images, params), images, atol=1e-6)


@contextlib.contextmanager
def one_thread():
    """torch's CPU aminmax (inside torchvision's adjust_hue) takes ~10 ms per call on a tiny image
    with a multi-threaded pool, ~3 us with one thread: the reference loop runs single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def colour_statistics(before, after):
    """Per-image change of mean intensity, of contrast (pixel std), of colourfulness (channel range)
    and of hue (mean per-pixel hue change in turns, wrapped to [-0.5, 0.5); brightness, contrast and
    saturation keep a pixel's hue, so this is the hue shift). Hue is measured with rgb_to_hsv,
    checked against colorsys above."""
    def colourfulness(x):
        return (x.amax(dim=1) - x.amin(dim=1)).mean(dim=(1, 2))
    hue_shift = rgb_to_hsv(after)[:, 0] - rgb_to_hsv(before)[:, 0]
    hue_change = torch.remainder(hue_shift + 0.5, 1.0) - 0.5
    return {"brightness": after.mean(dim=(1, 2, 3)) - before.mean(dim=(1, 2, 3)),
            "contrast": after.std(dim=(1, 2, 3)) - before.std(dim=(1, 2, 3)),
            "colourfulness": colourfulness(after) - colourfulness(before),
            "hue": hue_change.mean(dim=(1, 2))}


def test_color_jitter_distribution_matches_torchvision_color_jitter():
    """Same images through our batched jitter and through torchvision's ColorJitter one at a time:
    the per-image colour changes have the same distribution; wrong brightness or hue strengths are
    detected."""
    n = 1200
    base = rand_images(10, 6, 6, 6) * 0.6 + 0.2
    images = base.repeat(n // 6, 1, 1, 1)
    strengths = (0.4, 0.4, 0.4, 0.1)
    torch.manual_seed(0)
    jitter = T.ColorJitter(*strengths)
    with one_thread():
        reference = colour_statistics(images, torch.stack([jitter(image) for image in images]))
    ours = colour_statistics(
        images, color_jitter(images, sample_color_jitter(n, *strengths, generator=generator(0))))
    threshold = ks_threshold(n, n)
    for name in ours:
        assert ks_statistic(ours[name], reference[name]) < threshold, name
    for name, wrong_strengths in (("brightness", (0.2, 0.4, 0.4, 0.1)),
                                  ("hue", (0.4, 0.4, 0.4, 0.2))):
        wrong = colour_statistics(images, color_jitter(
            images, sample_color_jitter(n, *wrong_strengths, generator=generator(0))))
        assert ks_statistic(wrong[name], reference[name]) > threshold, name


# ---------------------------------------------------------------- blur and solarisation

def test_gaussian_kernels_are_normalised_symmetric_gaussians():
    sigma = torch.tensor([0.1, 0.7, 2.0, 1000.0])
    kernels = gaussian_kernels(sigma, 7)
    assert kernels.shape == (4, 7)
    assert torch.allclose(kernels.sum(dim=1), torch.ones(4))
    assert torch.allclose(kernels, kernels.flip(1))
    assert torch.allclose(kernels[1, 4] / kernels[1, 3], torch.tensor(math.exp(-0.5 / 0.7 ** 2)))
    assert kernels[0, 3] > 0.999 and torch.allclose(kernels[3], torch.full((7,), 1 / 7), atol=1e-4)


def test_gaussian_blur_equals_torchvision():
    sigmas = [0.1, 0.5, 1.3, 2.0]
    images = rand_images(11, 4, 10, 12)
    apply = torch.tensor([True, True, False, True])
    out = gaussian_blur(images, torch.tensor(sigmas), 5, apply)
    for i, sigma in enumerate(sigmas):
        expected = TF.gaussian_blur(images[i], [5, 5], [sigma, sigma]) if apply[i] else images[i]
        assert torch.allclose(out[i], expected, atol=1e-6)


def test_gaussian_blur_keeps_a_constant_image():
    images = torch.full((3, 3, 9, 9), 0.37)
    out = gaussian_blur(images, torch.tensor([0.1, 1.0, 2.0]), 9)
    assert torch.allclose(out, images, atol=1e-6)


def test_solarize_inverts_pixels_above_the_threshold():
    images = rand_images(12, 3)
    images[0, 0, 0, 0] = 0.6                          # exactly at the threshold: inverted
    apply = torch.tensor([True, False, True])
    out = solarize(images, 0.6, apply)
    for i in range(3):
        for value, result in zip(images[i].flatten().tolist(), out[i].flatten().tolist()):
            expected = 1 - value if apply[i] and value >= 0.6 else value
            assert result == pytest.approx(expected, abs=1e-7)
    assert torch.allclose(solarize(images, 0.6), TF.solarize(images, 0.6))


def test_default_blur_kernel_size_is_ten_percent_and_odd():
    assert [default_blur_kernel_size(s) for s in (224, 96, 32, 5)] == [23, 9, 3, 1]


# ---------------------------------------------------------------- the Augment pipeline

def test_views_are_float32_in_unit_range_of_the_requested_size():
    images = torch.randint(0, 256, (6, 3, 20, 28), dtype=torch.uint8, generator=generator(0))
    for augment, size in ((simclr_cifar(), 32), (weak(size=16), 16), (simclr_stl10(size=24), 24),
                          (Augment(size=12, blur_p=1.0, solarize_p=1.0), 12)):
        views = augment(images, generator(1))
        assert views.dtype == torch.float32 and views.shape == (6, 3, size, size)
        assert views.min() >= 0 and views.max() <= 1


def test_every_op_switched_off_is_the_identity():
    images = rand_images(13, 4, 16, 16)
    assert torch.allclose(identity_augment(size=16)(images, generator(0)), images, atol=1e-6)


def test_flip_with_probability_one_mirrors_every_image():
    images = rand_images(14, 4, 16, 16)
    assert torch.allclose(identity_augment(size=16, flip_p=1.0)(images, generator(0)),
                          images.flip(-1), atol=1e-6)


def test_grayscale_with_probability_one_and_rate():
    images = rand_images(15, 400, 4, 4)
    views = identity_augment(size=4, grayscale_p=1.0)(images, generator(0))
    assert torch.allclose(views, TF.rgb_to_grayscale(images, num_output_channels=3), atol=1e-6)
    views = identity_augment(size=4, grayscale_p=0.2)(images.repeat(5, 1, 1, 1), generator(1))
    is_gray = (views.amax(dim=1) - views.amin(dim=1)).amax(dim=(1, 2)) < 1e-6
    assert abs(is_gray.float().mean().item() - 0.2) < 0.04      # 4 standard deviations for n = 2000


def test_identical_images_get_independent_views():
    images = rand_images(16, 1, 32, 32).repeat(8, 1, 1, 1)
    views = simclr_cifar()(images, generator(0))
    for i in range(8):
        for j in range(i):
            assert not torch.allclose(views[i], views[j], atol=1e-3)
    assert not torch.allclose(simclr_cifar()(images, generator(1)), views, atol=1e-3)


def test_same_seed_same_views_and_uint8_equals_float():
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=generator(0))
    augment = Augment(size=16, blur_p=0.5, solarize_p=0.3)
    views = augment(images, generator(3))
    assert torch.equal(augment(images, generator(3)), views)
    assert torch.equal(augment(images.float() / 255, generator(3)), views)
    torch.manual_seed(5)
    default_rng = augment(images)
    torch.manual_seed(5)
    assert torch.equal(augment(images), default_rng)


def test_views_stay_float32_under_autocast():
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=generator(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        views = simclr_stl10(size=16)(images, generator(0))
    assert views.dtype == torch.float32
    assert torch.equal(views, simclr_stl10(size=16)(images, generator(0)))


def test_recipes():
    simclr = simclr_cifar()
    assert ((simclr.size, simclr.crop_scale, simclr.flip_p, simclr.jitter_p, simclr.grayscale_p,
             simclr.blur_p) == (32, (0.08, 1.0), 0.5, 0.8, 0.2, 0.0))
    assert simclr.crop_ratio == pytest.approx((3 / 4, 4 / 3))
    jitter = (simclr.brightness, simclr.contrast, simclr.saturation, simclr.hue)
    assert jitter == (0.4, 0.4, 0.4, 0.1)
    stl = simclr_stl10()
    assert (stl.size, stl.blur_p, stl.blur_sigma, stl.blur_kernel_size) == (96, 0.5, (0.1, 2.0), 9)
    weak_view = weak()
    assert (weak_view.crop_scale, weak_view.flip_p, weak_view.jitter_p, weak_view.grayscale_p) == \
        ((0.2, 1.0), 0.5, 0.0, 0.0)


def test_call_is_apply_of_sample():
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8, generator=generator(0))
    augment = Augment(size=16, blur_p=0.5)
    params = augment.sample(6, 16, 16, generator(4))
    assert torch.equal(augment.apply(images, params), augment(images, generator(4)))
    assert (params.boxes.top.shape == (6,) and params.jitter.order.shape == (6, 4)
            and params.solarize is None)
    skipped = weak().sample(6, 16, 16, generator(4))
    assert (skipped.jitter is None and skipped.grayscale is None and skipped.blur is None
            and skipped.flip is not None)


def test_repr_names_every_argument():
    text = repr(simclr_cifar())
    assert text.startswith("Augment(") and "crop_scale=(0.08, 1)" in text and "hue=0.1" in text
    for name in inspect.signature(Augment).parameters:
        assert f"{name}=" in text, name


def test_sample_apply_rate():
    apply = sample_apply(10_000, 0.3, generator(0))
    assert apply.dtype == torch.bool and abs(apply.float().mean().item() - 0.3) < 0.02


def test_sample_apply_with_p_0_touches_no_image_even_on_a_draw_of_exactly_0(monkeypatch):
    """U[0, 1) < p is True with probability p: never at p = 0, whatever the draw."""
    monkeypatch.setattr(torch, "rand", lambda n, **options: torch.zeros(n))
    assert not sample_apply(4, 0.0).any() and sample_apply(4, 1e-9).all()


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("name, value", [
    ("size", 0), ("size", 2.5),
    ("crop_scale", (0.0, 1.0)), ("crop_scale", (0.5, 0.2)), ("crop_scale", (0.1, 1.5)),
    ("crop_scale", 0.5),
    ("crop_ratio", (0.0, 1.0)), ("crop_ratio", (2.0, 1.0)), ("crop_ratio", (1.0, math.inf)),
    ("flip_p", -0.1), ("jitter_p", 1.5), ("grayscale_p", 2), ("blur_p", -1.0), ("solarize_p", 1.1),
    ("brightness", -0.1), ("contrast", -1.0), ("saturation", math.inf), ("hue", 0.6), ("hue", -0.1),
    ("blur_sigma", (0.0, 1.0)), ("blur_sigma", (2.0, 1.0)),
    ("blur_kernel_size", 4), ("blur_kernel_size", 0), ("blur_kernel_size", 65),
    ("solarize_threshold", 1.5),
])
def test_bad_arguments_raise(name, value):
    with pytest.raises(ValueError, match=name) as error:
        Augment(**{name: value})
    assert repr(value) in str(error.value) or str(value) in str(error.value)


def test_error_message_states_the_allowed_range():
    with pytest.raises(ValueError,
                       match=r"crop_scale must be a pair \(low, high\) "
                             r"with 0.0 < low <= high <= 1.0"):
        Augment(crop_scale=(0.5, 0.2))
    with pytest.raises(ValueError, match=r"flip_p must be in \[0.0, 1.0\], got 1.5"):
        Augment(flip_p=1.5)


def test_samplers_check_their_arguments():
    with pytest.raises(ValueError, match="scale"):
        sample_crop_boxes(4, 32, 32, scale=(0.5, 0.2))
    with pytest.raises(ValueError, match=r"scale must be a pair .* high <= 1.0, got \(0.5, 1.5\)"):
        sample_crop_boxes(4, 32, 32, scale=(0.5, 1.5))
    with pytest.raises(ValueError, match="ratio"):
        sample_crop_boxes(4, 32, 32, ratio=(-1.0, 1.0))
    with pytest.raises(ValueError, match="hue"):
        sample_color_jitter(4, 0.4, 0.4, 0.4, 0.7)
    with pytest.raises(ValueError, match="brightness"):
        sample_color_jitter(4, -0.4, 0.4, 0.4, 0.1)
    with pytest.raises(ValueError, match="p must"):
        sample_color_jitter(4, 0.4, 0.4, 0.4, 0.1, p=1.5)


@pytest.mark.parametrize("images",
                         [torch.zeros(3, 8, 8), torch.zeros(2, 1, 8, 8), torch.zeros(2, 4, 8, 8),
                          torch.zeros(2, 3, 8, 8, dtype=torch.int64), [[0.0]]])
def test_bad_images_raise(images):
    with pytest.raises(ValueError, match="images"):
        simclr_cifar()(images)
    with pytest.raises(ValueError, match="images"):
        to_float_images(images)


@pytest.mark.cuda
def test_cuda_views_and_generator_device():
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, device="cuda")
    augment = simclr_stl10(size=32)
    cuda_generator = torch.Generator(device="cuda")
    views = augment(images, cuda_generator.manual_seed(0))
    assert (views.device == images.device and views.dtype == torch.float32
            and views.shape == (64, 3, 32, 32))
    assert torch.equal(augment(images, cuda_generator.manual_seed(0)), views)
    assert views.min() >= 0 and views.max() <= 1
    with pytest.raises(ValueError, match="generator"):
        augment(images, generator(0))
    params = sample_color_jitter(64, 0.4, 0.4, 0.4, 0.1, generator=cuda_generator)
    assert isinstance(params, ColorJitterParams)
    jittered = color_jitter(views, params)
    assert torch.allclose(jittered.cpu(), reference_color_jitter(views.cpu(), ColorJitterParams(
        *(t.cpu() if t is not None else None for t in params))), atol=1e-5)


# ---------------------------------------------------------------- edges found by tools/mutate.py

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


def reference_crop_boxes(n, height, width, scale, ratio, seed, attempts=10):
    """torchvision's RandomResizedCrop.get_params, attempt by attempt in a loop, on the uniforms
    that sample_crop_boxes draws from `seed` (u_area, u_ratio, u_top, u_left per attempt). The area
    and aspect ratio are the same torch expressions, so that both sides round the same float32
    values; the loop decides which attempt is taken, where it sits, and the fallback."""
    uniforms = torch.rand(n, attempts, 4, generator=generator(seed))
    area = height * width * (scale[0] + (scale[1] - scale[0]) * uniforms[..., 0])
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_low + (log_high - log_low) * uniforms[..., 1])
    widths, heights = torch.sqrt(area * aspect).tolist(), torch.sqrt(area / aspect).tolist()
    boxes = []
    for i in range(n):
        for a in range(attempts):
            w, h = round(widths[i][a]), round(heights[i][a])
            if 0 < w <= width and 0 < h <= height:
                u_top, u_left = uniforms[i, a, 2].item(), uniforms[i, a, 3].item()
                top = min(math.floor(u_top * (height - h + 1)), height - h)
                left = min(math.floor(u_left * (width - w + 1)), width - w)
                boxes.append((top, left, h, w))
                break
        else:                    # no attempt fits: the whole image, cut to the ratio range, centred
            if width / height < min(ratio):
                w, h = width, round(width / min(ratio))
            elif width / height > max(ratio):
                w, h = round(height * max(ratio)), height
            else:
                w, h = width, height
            boxes.append(((height - h) // 2, (width - w) // 2, h, w))
    return torch.tensor(boxes, dtype=torch.float32)


@pytest.mark.parametrize("height, width, scale, ratio", [
    (24, 40, (0.08, 1.0), (3 / 4, 4 / 3)),         # the usual crop
    (20, 30, (0.0005, 0.004), (0.5, 2.0)),         # boxes of 0 to 2 pixels a side: the lower edges
    # boxes of the full width or height: the upper edges
    (16, 16, (0.85, 1.0), (0.25, 4.0)),
    (10, 100, (0.6, 1.0), (1.0, 1.0)),             # most images fall back
])
def test_crop_boxes_are_torchvisions_rule_applied_to_the_same_draws(height, width, scale, ratio):
    boxes = torch.stack(sample_crop_boxes(300, height, width, scale, ratio, generator(5)), dim=1)
    expected = reference_crop_boxes(300, height, width, scale, ratio, seed=5)
    assert torch.equal(boxes, expected)
    h, w = expected[:, 2], expected[:, 3]
    if scale[1] < 0.01:          # the cases the edges decide are among the draws
        assert (h == 1).any() and (w == 1).any()
    if scale[0] > 0.8 and ratio != (1.0, 1.0):
        assert (h == height).any() and (w == width).any()


def test_a_draw_of_exactly_1_still_places_the_box_inside_the_image(monkeypatch):
    monkeypatch.setattr(torch, "rand", lambda *shape, **options: torch.ones(shape))
    top, left, h, w = sample_crop_boxes(3, 20, 30, (0.1, 0.5), (0.5, 2.0))
    assert (torch.equal(top + h, torch.full((3,), 20.0))
            and torch.equal(left + w, torch.full((3,), 30.0)))


def test_grayscale_of_every_image_is_a_tensor_of_its_own():
    """Not a view that repeats one channel three times: it can be written in place."""
    gray = grayscale(torch.rand(2, 3, 4, 4, generator=generator(0)))
    assert gray.is_contiguous() and torch.equal(gray[:, 0], gray[:, 2])
    gray[:, 0] += 1                          # on an expanded view this would change all three
    assert not torch.equal(gray[:, 0], gray[:, 1])


def test_solarize_inverts_from_half_by_default():
    pixels = torch.tensor([0.2, 0.5, 0.7]).reshape(1, 3, 1, 1)
    assert torch.allclose(solarize(pixels).flatten(), torch.tensor([0.2, 0.5, 0.3]))


def test_a_recipe_of_one_pixel_views_is_allowed():
    views = Augment(size=1)(torch.rand(2, 3, 8, 8, generator=generator(0)), generator(1))
    assert views.shape == (2, 3, 1, 1)


@pytest.mark.parametrize("switched_off, fields", [
    (dict(flip_p=0.0), ["flip"]),
    (dict(jitter_p=0.0), ["jitter"]),
    (dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0), ["jitter"]),
    (dict(grayscale_p=0.0), ["grayscale"]),
    (dict(blur_p=0.0), ["blur_sigma", "blur"]),
    (dict(solarize_p=0.0), ["solarize"]),
])
def test_an_op_the_recipe_switches_off_draws_no_parameters(switched_off, fields):
    recipe = {"blur_p": 0.5, "solarize_p": 0.5, **switched_off}     # every other op switched on
    params = Augment(**recipe).sample(4, 32, 32, generator(0))
    for name in params._fields:
        assert (getattr(params, name) is None) == (name in fields), name


def test_parameters_can_be_drawn_without_a_generator_or_a_device():
    torch.manual_seed(0)
    params = Augment().sample(4, 32, 32)
    assert params.boxes.top.device.type == "cpu" and params.flip.shape == (4,)


def test_crop_box_defaults_are_torchvisions():
    explicit = sample_crop_boxes(50, 12, 20, (0.08, 1.0), (3 / 4, 4 / 3), generator(1), attempts=10)
    assert all(torch.equal(a, b)
               for a, b in zip(sample_crop_boxes(50, 12, 20, generator=generator(1)), explicit))


CIFAR = """Augment(size=32,
        crop_scale=(0.08, 1), crop_ratio=(0.75, 1.33333), flip_p=0.5,
        brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, jitter_p=0.8,
        grayscale_p=0.2,
        blur_p=0, blur_sigma=(0.1, 2), blur_kernel_size=3,
        solarize_p=0, solarize_threshold=0.5)"""


def test_every_default_of_the_recipes():
    assert repr(Augment()) == repr(simclr_cifar()) == CIFAR
    stl = (CIFAR.replace("size=32", "size=96").replace("blur_p=0,", "blur_p=0.5,")
           .replace("size=3,", "size=9,"))
    assert repr(simclr_stl10()) == stl
    assert repr(weak()) == (
        CIFAR.replace("(0.08, 1)", "(0.2, 1)").replace("0.4", "0").replace("hue=0.1", "hue=0")
        .replace("jitter_p=0.8", "jitter_p=0").replace("grayscale_p=0.2", "grayscale_p=0"))
    # The authors' recipes the course's defaults differ from: SCE's strong view, CLAE's SimCLR
    # views.
    assert repr(sce_strong()) == CIFAR.replace("(0.08, 1)",
                                               "(0.2, 1)").replace("blur_p=0,", "blur_p=0.5,")
    assert repr(clae_simclr()) == (CIFAR.replace("0.4", "0.8").replace("hue=0.1", "hue=0.2"))


def test_to_uint8_images_rounds_and_clamps_float_pixels_and_keeps_uint8_ones():
    from clcourse.augment import to_uint8_images
    floats = torch.tensor([-0.2, 0.0, 0.5, 0.999, 1.0, 1.3]).reshape(1, 3, 1, 2)
    assert torch.equal(to_uint8_images(floats).flatten(),
                       torch.tensor([0, 0, 128, 255, 255, 255], dtype=torch.uint8))
    pixels = torch.tensor([0, 1, 7, 200, 254, 255], dtype=torch.uint8).reshape(1, 3, 1, 2)
    assert to_uint8_images(pixels) is pixels


@pytest.mark.parametrize("scale", [(True, 1.0), (0.5, False)])
def test_a_flag_is_not_a_bound_of_an_interval(scale):
    with pytest.raises(ValueError, match=r"scale must be a pair \(low, high\)"):
        sample_crop_boxes(4, 32, 32, scale=scale)
