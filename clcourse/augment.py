"""Batched image augmentation on the training device, with independent random parameters per image.

Contrastive learning compares two random "views" of every image, so the augmentation runs twice per
image per step. Done image by image on the CPU (torchvision + DataLoader workers) it is usually the
bottleneck of CIFAR training; here a whole batch [N, 3, H, W] is augmented at once with tensor
operations, on whatever device the images live on (a GPU during training).

Every operation comes in two parts, so that each can be used, tested and plotted on its own:

- a *sampler* draws the random parameters of N images from a `torch.Generator`
  (`sample_crop_boxes`, `sample_apply`, `sample_color_jitter`);
- a deterministic *op* applies given per-image parameters to a batch
  (`resized_crop`, `horizontal_flip`, `adjust_brightness`, `adjust_contrast`, `adjust_saturation`,
  `adjust_hue`, `color_jitter`, `grayscale`, `gaussian_blur`, `solarize`).

`Augment` chains them into a recipe (SimCLR's: crop, flip, colour jitter, grayscale, optional blur
and solarisation); `simclr_cifar`, `simclr_stl10` and `weak` build the recipes the course uses.
`Augment.sample` draws all the random parameters of a batch and `Augment.apply` applies them; there
is no Python loop over images and no device-to-host sync, and `apply` compiles as one graph.

The random parameters follow torchvision's transforms (`RandomResizedCrop`, `RandomHorizontalFlip`,
`RandomApply(ColorJitter)`, `RandomGrayscale`, `GaussianBlur`, `RandomSolarize`), and the colour
formulas are those of `torchvision.transforms.v2.functional` on float images; the tests check both.
Images are float32 in [0, 1] inside every op. Nothing here needs gradients: views are inputs.

Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020
(the recipe and its appendix on data augmentation).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .presets import no_autocast
from .validation import (
    require_images,
    require_in_range,
    require_int_at_least,
    require_probability,
    require_unit_range,
)

__all__ = ["LUMA_WEIGHTS", "BRIGHTNESS", "CONTRAST", "SATURATION", "HUE", "to_float_images",
           "to_uint8_images", "sample_apply", "CropBoxes", "sample_crop_boxes", "resized_crop",
           "horizontal_flip", "rgb_to_grayscale", "adjust_brightness", "adjust_contrast",
           "adjust_saturation", "rgb_to_hsv", "hsv_to_rgb", "adjust_hue", "ColorJitterParams",
           "sample_color_jitter", "color_jitter", "grayscale", "gaussian_kernels", "gaussian_blur",
           "solarize", "default_blur_kernel_size", "AugmentParams", "Augment", "simclr_cifar",
           "simclr_stl10", "weak", "sce_strong", "clae_simclr"]

# Luma weights of ITU-R BT.601 as torchvision's tensor ops write them (0.2989, not 0.299), so that
# our grayscale, contrast and saturation agree with torchvision's to float precision.
LUMA_WEIGHTS = (0.2989, 0.587, 0.114)

# Colour-jitter operations, as numbered in ColorJitterParams.order.
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)


# --------------------------------------------------------------------------------------------------
# Inputs and random draws
# --------------------------------------------------------------------------------------------------

def to_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels 0..255 -> float32 in [0, 1]; float images (assumed in [0, 1]) -> float32.

    The range of float images is not checked here, a device-to-host sync every call: it is checked
    once where images enter (`require_unit_range`)."""
    require_images("images", images)
    if images.dtype == torch.uint8:
        return images.to(torch.float32) / 255
    return images.to(torch.float32)


def to_uint8_images(images: torch.Tensor) -> torch.Tensor:
    """float pixels in [0, 1] -> uint8 0..255 (rounded, clamped); uint8 images are
    returned as they are."""
    return (images if images.dtype == torch.uint8
            else (images.clamp(0, 1) * 255).round().to(torch.uint8))


def _require_interval(name: str, value, low: float,
                      high: float | None = None) -> tuple[float, float]:
    """A pair (a, b) with low < a <= b (<= high when given); returned as a tuple of floats."""
    allowed = f"{low} < low <= high" + (f" <= {high}" if high is not None else "")
    ok = (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))
    if ok:
        a, b = value
        ok = low < a <= b and math.isfinite(b) and (high is None or b <= high)
    if not ok:
        raise ValueError(f"{name} must be a pair (low, high) with {allowed}, got {value!r}")
    return float(value[0]), float(value[1])


def _uniform(n: int, low: float, high: float, generator, device) -> torch.Tensor:
    """n independent draws from U(low, high), float32."""
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def sample_apply(n: int, p: float, generator: torch.Generator | None = None,
                 device=None) -> torch.Tensor:
    """Which of n images an op with probability p touches: bool [n], each True
    with probability p."""
    return torch.rand(n, generator=generator, device=device) < p


def _per_image(value, images: torch.Tensor) -> torch.Tensor:
    """A float or a per-image tensor [N] -> a tensor [N or 1, 1, 1, 1] that
    broadcasts over images."""
    return torch.as_tensor(value, dtype=images.dtype, device=images.device).reshape(-1, 1, 1, 1)


# --------------------------------------------------------------------------------------------------
# Geometry: random resized crop and horizontal flip
# --------------------------------------------------------------------------------------------------

class CropBoxes(NamedTuple):
    """Crop boxes in pixels, one per image, each a float32 tensor [N] holding whole numbers."""
    top: torch.Tensor
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor


def sample_crop_boxes(n: int, height: int, width: int, scale: tuple[float, float] = (0.08, 1.0),
                      ratio: tuple[float, float] = (3 / 4, 4 / 3),
                      generator: torch.Generator | None = None, device=None,
                      attempts: int = 10) -> CropBoxes:
    r"""Random crop boxes with the distribution of torchvision's `RandomResizedCrop.get_params`.

    For each image, up to `attempts` candidate boxes are drawn with

        area fraction a ~ U(scale),   log aspect ratio \log r ~ U(\log ratio),
        w = round(\sqrt{a H W r}),    h = round(\sqrt{a H W / r}),

    and the first candidate that fits inside the H x W image is kept, at a uniformly random integer
    position. All attempts of all images are drawn at once (no loop, no host sync); an image whose
    attempts all fail gets torchvision's fallback: the largest central crop whose aspect ratio is
    clamped to `ratio`.

    Args:
        n: number of boxes (images).
        height, width: size of the images the boxes crop.
        scale: (low, high) range of the crop area as a fraction of the image area.
        ratio: (low, high) range of the crop aspect ratio width / height.
        generator: source of randomness (on `device`); None uses torch's default generator.
        device: where the boxes are created.
        attempts: candidate boxes per image (torchvision: 10).

    Returns:
        CropBoxes(top, left, height, width), float32 tensors [n] of whole pixels.
    """
    scale = _require_interval("scale", scale, 0.0, 1.0)
    ratio = _require_interval("ratio", ratio, 0.0)
    uniforms = torch.rand(n, attempts, 4, generator=generator, device=device)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * uniforms[..., 0])
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_low + (log_high - log_low) * uniforms[..., 1])
    crop_w = torch.round(torch.sqrt(area * aspect))   # round half to even, like Python's round()
    crop_h = torch.round(torch.sqrt(area / aspect))
    fits = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)

    # argmax of a 0/1 tensor returns the first maximum: the first attempt that fits
    # (0 if none does).
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)
    crop_h, crop_w = crop_h.gather(1, first).squeeze(1), crop_w.gather(1, first).squeeze(1)
    u_top, u_left = (uniforms[..., 2].gather(1, first).squeeze(1),
                     uniforms[..., 3].gather(1, first).squeeze(1))
    # Uniform integer offset in 0..(H - h), as torch.randint; the clamp keeps a draw of exactly 1
    # (from a generator that includes it) inside the image.
    top = torch.minimum(torch.floor(u_top * (height - crop_h + 1)), height - crop_h)
    left = torch.minimum(torch.floor(u_left * (width - crop_w + 1)), width - crop_w)

    fallback_top, fallback_left, fallback_h, fallback_w = _fallback_box(height, width, ratio)
    found = fits.any(dim=1)
    return CropBoxes(top.where(found, fallback_top), left.where(found, fallback_left),
                     crop_h.where(found, fallback_h), crop_w.where(found, fallback_w))


def _fallback_box(height: int, width: int,
                  ratio: tuple[float, float]) -> tuple[float, float, float, float]:
    """torchvision's box when no attempt fits: the whole image, cut to the nearest allowed aspect
    ratio and centred."""
    image_ratio = width / height
    if image_ratio < min(ratio):
        crop_w, crop_h = width, int(round(width / min(ratio)))
    elif image_ratio > max(ratio):
        crop_w, crop_h = int(round(height * max(ratio))), height
    else:
        crop_w, crop_h = width, height
    return float((height - crop_h) // 2), float((width - crop_w) // 2), float(crop_h), float(crop_w)


def resized_crop(images: torch.Tensor, boxes: CropBoxes, size: int,
                 flip: torch.Tensor | None = None) -> torch.Tensor:
    """Cut box i out of image i and resize it to size x size (bilinear), optionally mirrored.

    Each crop-and-resize is an affine map from output to input coordinates. In the normalised
    coordinates of `F.affine_grid` (align_corners=False: the image spans [-1, 1] edge to edge), the
    box (top, left, h, w) of an H x W image is

        x_in = (w / W) x_out + (2 left + w) / W - 1,     y_in = (h / H) y_out + (2 top + h) / H - 1,

    so one `affine_grid` + `grid_sample` resamples the whole batch. A horizontal flip is the same
    map with the sign of w / W reversed, so it costs nothing extra here.

    Two small differences from torchvision's crop-then-resize: when a box is enlarged, the
    outermost output pixels interpolate with the image pixels just outside the box (torchvision
    repeats the box's own edge pixels; at the image border both repeat the edge,
    padding_mode="border"); and there is no antialiasing, so shrinking a box
    (larger than the output) aliases. Neither matters in the course's recipes, where the output
    size is the image size, so boxes are only ever enlarged.

    Args:
        images: float [N, C, H, W].
        boxes: CropBoxes with tensors [N] (see `sample_crop_boxes`).
        size: output height and width.
        flip: optional bool [N]; True mirrors that image's crop left-right.

    Returns:
        float [N, C, size, size].
    """
    n, channels, height, width = images.shape
    scale_x, scale_y = boxes.width / width, boxes.height / height
    if flip is not None:
        scale_x = torch.where(flip, -scale_x, scale_x)
    centre_x = (2 * boxes.left + boxes.width) / width - 1
    centre_y = (2 * boxes.top + boxes.height) / height - 1
    zeros = torch.zeros_like(scale_x)
    theta = torch.stack([scale_x, zeros, centre_x, zeros, scale_y, centre_y], dim=1).view(n, 2, 3)
    grid = F.affine_grid(theta.to(images.dtype), [n, channels, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def horizontal_flip(images: torch.Tensor, apply: torch.Tensor | None = None) -> torch.Tensor:
    """Mirror images left-right; `apply` (bool [N], None = all) selects which."""
    if apply is None:
        return images.flip(-1)
    return torch.where(apply.view(-1, 1, 1, 1), images.flip(-1), images)


# --------------------------------------------------------------------------------------------------
# Colour
# --------------------------------------------------------------------------------------------------

def rgb_to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """Luma L = 0.2989 R + 0.587 G + 0.114 B of float images [N, 3, H, W] -> [N, 1, H, W]."""
    red_weight, green_weight, blue_weight = LUMA_WEIGHTS
    return (red_weight * images[:, 0:1] + green_weight * images[:, 1:2]
            + blue_weight * images[:, 2:3])


def _blend(images: torch.Tensor, reference: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    r"""clip(f x + (1 - f) ref, 0, 1): interpolate towards `reference` (f < 1) or extrapolate away
    from it (f > 1), the image-enhancement scheme of Haeberli & Voorhies (1994) that PIL and
    torchvision use for brightness (ref = black), contrast (ref = mean luma) and saturation
    (ref = the pixel's luma). `factor` broadcasts as [N, 1, 1, 1]."""
    return (images * factor + reference * (1 - factor)).clamp(0, 1)


def adjust_brightness(images: torch.Tensor, factor) -> torch.Tensor:
    """x -> clip(f x, 0, 1) per image; f = 1 leaves the image unchanged, 0 makes it black.

    `factor`: a float or a tensor [N] of per-image factors >= 0 (torchvision's
    adjust_brightness)."""
    return _blend(images, torch.zeros_like(images[:, :1]), _per_image(factor, images))


def adjust_contrast(images: torch.Tensor, factor) -> torch.Tensor:
    """x -> clip(f x + (1 - f) m, 0, 1), with m the image's mean luma; f = 0 gives flat grey m.

    `factor`: a float or a tensor [N] of per-image factors >= 0 (torchvision's adjust_contrast)."""
    mean_luma = rgb_to_grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(images, mean_luma, _per_image(factor, images))


def adjust_saturation(images: torch.Tensor, factor) -> torch.Tensor:
    """x -> clip(f x + (1 - f) L(x), 0, 1), with L(x) each pixel's luma; f = 0 gives grayscale.

    `factor`: a float or a tensor [N] of per-image factors >= 0 (torchvision's
    adjust_saturation)."""
    return _blend(images, rgb_to_grayscale(images), _per_image(factor, images))


def _hue_value_chroma(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Hue in sixths of a turn (not yet reduced mod 6), value V = max(R, G, B) and chroma
    C = V - min(R, G, B) of float images [N, 3, H, W], each [N, 1, H, W]:

        6 H = (G - B) / C        if V = R,
              (B - R) / C + 2    else if V = G,
              (R - G) / C + 4    otherwise.

    Grey pixels (C = 0) get 6 H = 0, as in torchvision and PIL: every difference is then 0, so any
    nonzero divisor will do. The three cases are picked with 0/1 float masks rather than
    torch.where: the same numbers, and many times faster on CPU for full-size masks."""
    red, green, blue = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    value = images.amax(dim=1, keepdim=True)
    chroma = value - images.amin(dim=1, keepdim=True)
    is_red = (value == red).to(images.dtype)
    is_green = (value == green).to(images.dtype) * (1 - is_red)
    is_blue = 1 - is_red - is_green
    differences = is_red * (green - blue) + is_green * (blue - red) + is_blue * (red - green)
    hue_sixths = (differences / chroma.clamp_min(torch.finfo(images.dtype).tiny)
                  + 2 * is_green + 4 * is_blue)
    return hue_sixths, value, chroma


def _rgb_from_hue(hue_sixths: torch.Tensor, value: torch.Tensor,
                  chroma: torch.Tensor) -> torch.Tensor:
    r"""RGB [N, 3, H, W] from hue (in sixths of a turn, any real), value V and chroma C = V S:
    channel n in (R, G, B) = (5, 3, 1) is, with k_n = (n + 6 H) mod 6,

        c_n = V - C clip(min(k_n, 4 - k_n), 0, 1),

    a closed form of the six-sector table of torchvision and PIL (Wikipedia, "HSL and HSV")."""
    # arange, not a tensor built from a list: that would be a host-to-device copy on every call.
    channel_offset = torch.arange(5.0, 0.0, -2.0, dtype=value.dtype,
                                  device=value.device).view(1, 3, 1, 1)
    k = torch.remainder(channel_offset + hue_sixths, 6.0)
    return value - chroma * torch.minimum(k, 4 - k).clamp(0, 1)


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    r"""RGB float images [N, 3, H, W] in [0, 1] -> HSV, each channel in [0, 1] (hue in turns).

    V = max(R, G, B), S = C / V with chroma C = V - min(R, G, B), and H as in `_hue_value_chroma`.
    Grey pixels get H = 0 and black ones S = 0, as in torchvision and PIL."""
    hue_sixths, value, chroma = _hue_value_chroma(images)
    hue = torch.remainder(hue_sixths / 6, 1.0)
    saturation = chroma / value.clamp_min(torch.finfo(images.dtype).tiny)
    return torch.cat([hue, saturation, value], dim=1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """HSV [N, 3, H, W] (hue in turns) -> RGB, the inverse of `rgb_to_hsv`."""
    hue, saturation, value = hsv[:, 0:1], hsv[:, 1:2], hsv[:, 2:3]
    return _rgb_from_hue(6 * hue, value, value * saturation)


def adjust_hue(images: torch.Tensor, shift) -> torch.Tensor:
    """Rotate the hue of each image by `shift` turns (a float or a tensor [N], each in [-0.5, 0.5]);
    saturation and value are kept. shift = 0 returns the image up to float rounding.

    torchvision's adjust_hue on float images goes RGB -> HSV -> H + shift -> RGB; this is the same
    map with the round trip through S = C / V and back (V S = C) cancelled out."""
    hue_sixths, value, chroma = _hue_value_chroma(images)
    return _rgb_from_hue(hue_sixths + 6 * _per_image(shift, images), value, chroma)


def _require_jitter_strengths(brightness: float, contrast: float, saturation: float,
                              hue: float) -> None:
    for name, strength in (("brightness", brightness), ("contrast", contrast),
                           ("saturation", saturation)):
        require_in_range(name, strength, 0.0, math.inf, high_inclusive=False)
    require_in_range("hue", hue, 0.0, 0.5)


class ColorJitterParams(NamedTuple):
    """Per-image colour-jitter parameters for N images (see `sample_color_jitter`)."""
    brightness: torch.Tensor     # [N] factors, 1 = unchanged
    contrast: torch.Tensor       # [N] factors, 1 = unchanged
    saturation: torch.Tensor     # [N] factors, 1 = unchanged
    hue: torch.Tensor | None     # [N] shifts in turns, 0 = unchanged; None: hue jitter switched off
    order: torch.Tensor          # [N, 4] int64, each row a permutation of BRIGHTNESS, CONTRAST,
                                 # SATURATION, HUE


def sample_color_jitter(n: int, brightness: float, contrast: float, saturation: float, hue: float,
                        p: float = 1.0, generator: torch.Generator | None = None,
                        device=None) -> ColorJitterParams:
    """Random parameters of `RandomApply([ColorJitter(brightness, contrast, saturation, hue)], p)`.

    As torchvision: factors ~ U(max(0, 1 - s), 1 + s) for strength s of brightness, contrast and
    saturation, hue shift ~ U(-hue, hue), and the four ops in a uniformly random order (a random
    permutation per image, here the argsort of 4 uniforms). An image left alone (probability 1 - p),
    and every op of strength 0, gets the identity parameters (factor 1, shift 0). hue = 0 switches
    the hue op off altogether (hue=None in the result), which saves its HSV round trip."""
    _require_jitter_strengths(brightness, contrast, saturation, hue)
    require_probability("p", p)

    def factors(strength: float) -> torch.Tensor:
        return _uniform(n, max(0.0, 1 - strength), 1 + strength, generator, device)

    applied = sample_apply(n, p, generator, device)
    b, c, s = (torch.where(applied, factors(strength), 1.0)
               for strength in (brightness, contrast, saturation))
    h = torch.where(applied, _uniform(n, -hue, hue, generator, device), 0.0) if hue > 0 else None
    order = torch.rand(n, 4, generator=generator, device=device).argsort(dim=1)
    return ColorJitterParams(b, c, s, h, order)


def color_jitter(images: torch.Tensor, params: ColorJitterParams) -> torch.Tensor:
    """Brightness, contrast, saturation and hue changes, each image with its own factors and order.

    Vectorised over a per-image order in 4 stages: at stage t, image i gets the op order[i, t] with
    its factor. Brightness, contrast and saturation are all `_blend`s (towards black, the mean luma,
    the pixel luma), so one blend per stage does whichever of the three each image picked; the hue
    op runs at every stage with shift 0 for the images that did not pick it. The result equals
    applying torchvision's adjust_* one image at a time in each image's order
    (up to float rounding).

    Args:
        images: float [N, 3, H, W] in [0, 1].
        params: ColorJitterParams for N images.

    Returns:
        float [N, 3, H, W] in [0, 1].
    """
    ones = torch.ones_like(params.brightness)
    blend_factors = torch.stack([params.brightness, params.contrast, params.saturation, ones],
                                dim=1)
    for stage in range(4):
        op = params.order[:, stage]
        luma = rgb_to_grayscale(images)
        # Blend towards the pixel's luma (saturation), the image's mean luma (contrast) or black
        # (brightness; also the hue images, whose factor is 1), chosen by 0/1 masks.
        picks_saturation = (op == SATURATION).to(images.dtype).view(-1, 1, 1, 1)
        picks_contrast = (op == CONTRAST).to(images.dtype).view(-1, 1, 1, 1)
        reference = picks_saturation * luma + picks_contrast * luma.mean(dim=(2, 3), keepdim=True)
        factor = blend_factors.gather(1, op.view(-1, 1)).view(-1, 1, 1, 1)
        images = _blend(images, reference, factor)      # the HUE images get factor 1: unchanged
        if params.hue is not None:
            images = adjust_hue(images, torch.where(op == HUE, params.hue, 0.0))
    return images


def grayscale(images: torch.Tensor, apply: torch.Tensor | None = None) -> torch.Tensor:
    """Replace the selected images (bool [N], None = all) by their luma, repeated on 3 channels."""
    gray = rgb_to_grayscale(images).expand_as(images)
    if apply is None:
        return gray.contiguous()
    return torch.where(apply.view(-1, 1, 1, 1), gray, images)


# --------------------------------------------------------------------------------------------------
# Blur and solarisation
# --------------------------------------------------------------------------------------------------

def gaussian_kernels(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    r"""1-D Gaussian kernels, one per sigma: [N] -> [N, kernel_size], each row summing to 1.

        k_i(t) \propto \exp(-t^2 / (2 \sigma_i^2)),   t = -(K-1)/2, ..., (K-1)/2   (K odd)

    The 2-D Gaussian is separable: blurring rows then columns with k equals the 2-D blur."""
    taps = torch.arange(kernel_size, dtype=sigma.dtype, device=sigma.device) - (kernel_size - 1) / 2
    weights = torch.exp(-0.5 * (taps / sigma.view(-1, 1)) ** 2)
    return weights / weights.sum(dim=1, keepdim=True)


def gaussian_blur(images: torch.Tensor, sigma, kernel_size: int,
                  apply: torch.Tensor | None = None) -> torch.Tensor:
    """Gaussian blur with a per-image sigma, as torchvision's gaussian_blur (reflect padding).

    All N x C channels are blurred by one grouped convolution per direction (groups = N * C: every
    channel has its own image's kernel), vertical then horizontal.

    Args:
        images: float [N, C, H, W].
        sigma: a float or a tensor [N] of standard deviations in pixels (> 0).
        kernel_size: odd number of taps K, with K // 2 < H and W (reflect padding).
        apply: optional bool [N]; images not selected are returned unchanged.
    """
    n, channels, height, width = images.shape
    sigma = torch.as_tensor(sigma, dtype=images.dtype, device=images.device).expand(n)
    kernels = gaussian_kernels(sigma, kernel_size).repeat_interleave(channels, dim=0)   # [N*C, K]
    pad = kernel_size // 2
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect").reshape(
        1, n * channels, height + 2 * pad, width + 2 * pad)
    blurred = F.conv2d(padded, kernels.view(n * channels, 1, kernel_size, 1), groups=n * channels)
    blurred = F.conv2d(blurred, kernels.view(n * channels, 1, 1, kernel_size), groups=n * channels)
    blurred = blurred.view(n, channels, height, width)
    if apply is None:
        return blurred
    return torch.where(apply.view(-1, 1, 1, 1), blurred, images)


def solarize(images: torch.Tensor, threshold: float = 0.5,
             apply: torch.Tensor | None = None) -> torch.Tensor:
    """Invert every pixel value >= threshold: x -> 1 - x if x >= threshold else x (torchvision's
    solarize); `apply` (bool [N], None = all) selects the images."""
    solarized = torch.where(images >= threshold, 1 - images, images)
    if apply is None:
        return solarized
    return torch.where(apply.view(-1, 1, 1, 1), solarized, images)


# --------------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------------

def default_blur_kernel_size(size: int) -> int:
    """SimCLR's blur kernel: 10% of the image side, made odd (23 at 224 px, 9 at 96
    px, 3 at 32 px)."""
    kernel_size = int(0.1 * size)
    return kernel_size + 1 if kernel_size % 2 == 0 else kernel_size


class AugmentParams(NamedTuple):
    """The random parameters of N views (see `Augment.sample`); None where the
    recipe skips the op."""
    boxes: CropBoxes                     # crop boxes in pixels
    flip: torch.Tensor | None            # bool [N]
    jitter: ColorJitterParams | None
    grayscale: torch.Tensor | None       # bool [N]
    blur_sigma: torch.Tensor | None      # float [N], pixels
    blur: torch.Tensor | None            # bool [N]
    solarize: torch.Tensor | None        # bool [N]


class Augment:
    """A random augmentation recipe, applied to a whole batch with independent parameters per image.

    In order (SimCLR's pipeline, with BYOL's solarisation as an option):
    random resized crop -> horizontal flip -> colour jitter (with probability jitter_p) ->
    grayscale (grayscale_p) -> Gaussian blur (blur_p) -> solarisation (solarize_p).

    Defaults are SimCLR's CIFAR recipe (see `simclr_cifar`). Call it as
    `augment(images, generator)`: images uint8 [N, 3, H, W] (0..255) or float in [0, 1] (float
    images have their range checked, one host sync; the training loop passes uint8); returns float32
    [N, 3, size, size] in [0, 1]. The generator must live on the images' device; None uses torch's
    default generator. Two calls give two independent views. Autocast is switched off inside
    (views stay float32). A call is `apply(images, sample(...))`: the random parameters of every
    view are drawn first, then applied by deterministic tensor code.

    Args:
        size: output height and width in pixels.
        crop_scale: range of the crop area as a fraction of the image area, 0 < low <= high <= 1.
        crop_ratio: range of the crop aspect ratio width / height, 0 < low <= high.
        flip_p: probability of a horizontal flip.
        brightness, contrast, saturation: jitter strengths s >= 0 (factor ~ U(max(0,
            1 - s), 1 + s)).
        hue: hue jitter strength in [0, 0.5] (shift ~ U(-hue, hue) turns).
        jitter_p: probability that an image is colour-jittered at all.
        grayscale_p: probability of converting to grayscale.
        blur_p: probability of a Gaussian blur (0 switches blur off).
        blur_sigma: range of the blur's standard deviation in pixels, 0 < low <= high.
        blur_kernel_size: odd number of taps; None: 10% of `size`, made odd (SimCLR).
        solarize_p: probability of solarisation (0 switches it off).
        solarize_threshold: pixel values >= threshold are inverted, in [0, 1].
    """

    def __init__(self, size: int = 32, crop_scale: tuple[float, float] = (0.08, 1.0),
                 crop_ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_p: float = 0.5,
                 brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                 hue: float = 0.1, jitter_p: float = 0.8, grayscale_p: float = 0.2,
                 blur_p: float = 0.0, blur_sigma: tuple[float, float] = (0.1, 2.0),
                 blur_kernel_size: int | None = None, solarize_p: float = 0.0,
                 solarize_threshold: float = 0.5):
        require_int_at_least("size", size, 1)
        self.size = size
        self.crop_scale = _require_interval("crop_scale", crop_scale, 0.0, 1.0)
        self.crop_ratio = _require_interval("crop_ratio", crop_ratio, 0.0)
        _require_jitter_strengths(brightness, contrast, saturation, hue)
        self.brightness, self.contrast = brightness, contrast
        self.saturation, self.hue = saturation, hue
        for name, p in (("flip_p", flip_p), ("jitter_p", jitter_p), ("grayscale_p", grayscale_p),
                        ("blur_p", blur_p), ("solarize_p", solarize_p)):
            require_probability(name, p)
        self.flip_p, self.jitter_p, self.grayscale_p = flip_p, jitter_p, grayscale_p
        self.blur_p, self.solarize_p = blur_p, solarize_p
        self.blur_sigma = _require_interval("blur_sigma", blur_sigma, 0.0)
        if blur_kernel_size is None:
            blur_kernel_size = default_blur_kernel_size(size)
        require_int_at_least("blur_kernel_size", blur_kernel_size, 1)
        if blur_kernel_size % 2 == 0 or blur_kernel_size // 2 >= size:
            raise ValueError(f"blur_kernel_size must be odd and smaller than 2 * size = {2 * size} "
                             f"(reflect padding), got {blur_kernel_size!r}")
        self.blur_kernel_size = blur_kernel_size
        require_in_range("solarize_threshold", solarize_threshold, 0.0, 1.0)
        self.solarize_threshold = solarize_threshold

    @property
    def _jitters(self) -> bool:
        return (self.jitter_p > 0
                and max(self.brightness, self.contrast, self.saturation, self.hue) > 0)

    def __call__(self, images: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        require_images("images", images)
        require_unit_range("images", images)    # a no-op for uint8, what the training loop passes:
                                                # no sync per step
        images = to_float_images(images)
        if generator is not None and generator.device.type != images.device.type:
            raise ValueError(f"generator must be on the images' device ({images.device}), "
                             f"got a generator on {generator.device}")
        n, _, height, width = images.shape
        return self._apply(images, self.sample(n, height, width, generator, images.device))

    @property
    def _apply(self):
        return getattr(self, "_compiled_apply", self.apply)

    def compile(self) -> Augment:
        """Compile `apply` with torch.compile (one graph: a few fused kernels instead of ~250
        small ones per call); `sample` stays eager, since generator arguments break graphs.
        Returns self."""
        self._compiled_apply = torch.compile(self.apply, dynamic=False)
        return self

    def sample(self, n: int, height: int, width: int, generator: torch.Generator | None = None,
               device=None) -> AugmentParams:
        """Draw the random parameters of n views of height x width images (ops the recipe switches
        off get None). Which ops run depends only on the recipe, never on the data: no host sync."""
        if device is None and generator is not None:
            device = generator.device

        def maybe_apply(p: float) -> torch.Tensor | None:
            return sample_apply(n, p, generator, device) if p > 0 else None

        boxes = sample_crop_boxes(n, height, width, self.crop_scale, self.crop_ratio, generator,
                                  device)
        flip = maybe_apply(self.flip_p)
        jitter = (sample_color_jitter(n, self.brightness, self.contrast, self.saturation, self.hue,
                                      self.jitter_p, generator, device)
                  if self._jitters else None)
        grayscale_apply = maybe_apply(self.grayscale_p)
        blur_sigma = _uniform(n, *self.blur_sigma, generator, device) if self.blur_p > 0 else None
        blur_apply = maybe_apply(self.blur_p)
        solarize_apply = maybe_apply(self.solarize_p)
        return AugmentParams(boxes, flip, jitter, grayscale_apply, blur_sigma, blur_apply,
                             solarize_apply)

    def apply(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Views of images [N, 3, H, W] (uint8, or float in [0, 1]) with the given parameters: pure
        tensor code without randomness, so `torch.compile(augment.apply)` traces it as one graph."""
        images = to_float_images(images)
        # Views stay float32 under autocast (conv2d and the blends would otherwise run in
        # half precision).
        with no_autocast(images.device):
            views = resized_crop(images, params.boxes, self.size, params.flip)
            if params.jitter is not None:
                views = color_jitter(views, params.jitter)
            if params.grayscale is not None:
                views = grayscale(views, params.grayscale)
            if params.blur is not None:
                views = gaussian_blur(views, params.blur_sigma, self.blur_kernel_size, params.blur)
            if params.solarize is not None:
                views = solarize(views, self.solarize_threshold, params.solarize)
        return views

    def __repr__(self) -> str:
        def pair(values: tuple[float, float]) -> str:
            return f"({values[0]:g}, {values[1]:g})"
        return (f"Augment(size={self.size},\n"
                f"        crop_scale={pair(self.crop_scale)}, crop_ratio={pair(self.crop_ratio)}, "
                f"flip_p={self.flip_p:g},\n"
                f"        brightness={self.brightness:g}, contrast={self.contrast:g}, "
                f"saturation={self.saturation:g}, hue={self.hue:g}, jitter_p={self.jitter_p:g},\n"
                f"        grayscale_p={self.grayscale_p:g},\n"
                f"        blur_p={self.blur_p:g}, blur_sigma={pair(self.blur_sigma)}, "
                f"blur_kernel_size={self.blur_kernel_size},\n"
                f"        solarize_p={self.solarize_p:g}, "
                f"solarize_threshold={self.solarize_threshold:g})")


def simclr_cifar(size: int = 32) -> Augment:
    """SimCLR's CIFAR-10 views: crop of 8-100% of the area (aspect 3/4..4/3), flip p=0.5, colour
    jitter (0.4, 0.4, 0.4, 0.1) with p=0.8, grayscale p=0.2, no blur (SimCLR drops blur at 32 px;
    lightly's CIFAR benchmarks do too)."""
    return Augment(size=size, crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_p=0.5,
                   brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, jitter_p=0.8,
                   grayscale_p=0.2, blur_p=0.0)


def simclr_stl10(size: int = 96) -> Augment:
    """SimCLR's views for larger images such as STL-10's 96 px: the CIFAR recipe plus a Gaussian
    blur with p=0.5, sigma ~ U(0.1, 2) px and a kernel of 10% of the side (9 taps at 96 px)."""
    return Augment(size=size, crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_p=0.5,
                   brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, jitter_p=0.8,
                   grayscale_p=0.2, blur_p=0.5, blur_sigma=(0.1, 2.0))


def weak(size: int = 32) -> Augment:
    """Weak views: crop of 20-100% of the area (aspect 3/4..4/3) and flip p=0.5, no colour change.

    This is the weak (momentum-encoder) view of SCE's CIFAR-10 recipe (Denize et al., WACV 2023):
    RandomResizedCrop(32, scale=(0.2, 1)) + flip. The 0.2 lower bound keeps at least a fifth of the
    image, a milder crop than SimCLR's 0.08."""
    return Augment(size=size, crop_scale=(0.2, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_p=0.5,
                   brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, jitter_p=0.0,
                   grayscale_p=0.0, blur_p=0.0)


def sce_strong(size: int = 32) -> Augment:
    """The strong (online) view of SCE's CIFAR-10 recipe (Denize et al., WACV 2023): crop of 20-100%
    of the area (aspect 3/4..4/3), flip p=0.5, colour jitter (0.4, 0.4, 0.4, 0.1) with p=0.8,
    grayscale p=0.2 and a Gaussian blur with p=0.5, sigma ~ U(0.1, 2) px. The course's SCE uses
    `simclr_cifar` (crop 8-100%, no blur) unless given ``augment=sce_strong()``, so that it differs
    from the course's MoCo v2 only in the loss, the key's view and where BN is split."""
    return Augment(size=size, crop_scale=(0.2, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_p=0.5,
                   brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, jitter_p=0.8,
                   grayscale_p=0.2, blur_p=0.5, blur_sigma=(0.1, 2.0))


def clae_simclr(size: int = 32) -> Augment:
    """The views of CLAE's SimCLR code (Ho & Vasconcelos, NeurIPS 2020): crop of 8-100% of the area,
    flip p=0.5, colour jitter (0.8, 0.8, 0.8, 0.2) with p=0.8 (twice the course's strength, and
    hue 0.2), grayscale p=0.2, no blur. The course's CLAE uses its base method's views
    (`simclr_cifar`, jitter 0.4) unless given ``augment=clae_simclr()``."""
    return Augment(size=size, crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_p=0.5,
                   brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2, jitter_p=0.8,
                   grayscale_p=0.2, blur_p=0.0)
