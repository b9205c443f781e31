"""Argument checks shared by the package: bad input fails early with a message that names
the argument, the value it got and what was expected.

Numbers may come as Python numbers, numpy scalars or 0-d tensors (a temperature read from an array,
a subset size computed with torch); the checks return them as plain Python numbers, so that what a
caller stores (a method's hyperparameters, a run's configuration) is a plain int or float."""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["describe_tensor", "as_number", "require_number", "require_positive",
           "require_int_at_least", "require_in_range", "require_probability", "require_bool",
           "require_embeddings", "require_finite", "require_same_shape", "require_labels",
           "require_classes",
           "require_images", "require_unit_range"]


def describe_tensor(value) -> str:
    """How a bad argument looks, for an error message: shape and dtype of a
    tensor, else its type."""
    if isinstance(value, torch.Tensor):
        return f"shape {tuple(value.shape)}, dtype {value.dtype}"
    return type(value).__name__


def as_number(value) -> int | float | None:
    """`value` as a Python int or float when it is a number: an int, a float, a numpy scalar or 0-d
    array, or a 0-d tensor (read on the host: a sync for a GPU tensor, so convert once, at the
    public boundary). None for anything else; a bool is not a number here."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or value.dtype == torch.bool or value.is_complex():
            return None
        value = value.item()
    elif isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def require_number(name: str, value) -> int | float:
    """`value` must be a number (see `as_number`); returned as a Python int or float."""
    number = as_number(value)
    if number is None:
        raise ValueError(f"{name} must be a number (an int or float, a numpy scalar or a 0-d "
                         f"tensor), got {value!r}")
    return number


def require_positive(name: str, value: float) -> float:
    """`value` must be a finite number > 0; returned as a Python number."""
    number = as_number(value)
    if number is None or not number > 0 or number == math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def require_int_at_least(name: str, value: int, minimum: int) -> int:
    """`value` must be an integer >= minimum (an int, a numpy integer or an integer 0-d tensor);
    returned as an int."""
    number = as_number(value)
    if not isinstance(number, int) or number < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return number


def require_in_range(name: str, value: float, low: float, high: float,
                     low_inclusive: bool = True, high_inclusive: bool = True) -> float:
    """`value` must lie in the interval from `low` to `high` (brackets as given); returned as
    a Python number."""
    number = as_number(value)
    ok = number is not None
    if ok:
        ok = ((number >= low if low_inclusive else number > low)
              and (number <= high if high_inclusive else number < high))
    if not ok:
        interval = f"{'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return number


def require_probability(name: str, value: float) -> float:
    return require_in_range(name, value, 0.0, 1.0)


def require_bool(name: str, value) -> bool:
    """`value` must be True or False (a numpy bool too): a string such as "no" is truthy
    and would mean yes."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def require_embeddings(name: str, z: torch.Tensor) -> None:
    """A batch of embeddings: a floating-point tensor of shape [N, D] with N >= 1."""
    if (not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[0] < 1
            or not z.is_floating_point()):
        raise ValueError(f"{name} must be a floating-point tensor of shape [N, D], "
                         f"got {describe_tensor(z)}")


def require_finite(name: str, values: torch.Tensor) -> None:
    """Every entry of `values` must be finite. Reads one flag on the host (a sync): for
    measurements, where a NaN would otherwise turn into a plausible-looking number, never inside a
    training step."""
    if not bool(torch.isfinite(values).all()):
        bad = int((~torch.isfinite(values)).sum())
        raise ValueError(f"{name} holds {bad} NaN or infinite values (of {values.numel()}); "
                         "features like these come from an encoder whose training diverged or "
                         "from a bad input: check where they were made")


def require_same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")


def require_labels(name: str, labels, count: int, count_name: str) -> torch.Tensor:
    """Integer class labels of shape [count], matching the rows of `count_name`: a tensor, a numpy
    array, a list or a tuple of integers of any integer dtype. Returned as an int64 tensor (on the
    device of a given tensor), the dtype indexing and cross-entropy need."""
    if isinstance(labels, (list, tuple, np.ndarray)):
        try:
            labels = torch.as_tensor(np.asarray(labels))
        except (TypeError, ValueError):
            pass      # not numbers: reported below
    if (not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point()
            or labels.is_complex() or labels.dtype == torch.bool):
        raise ValueError(f"{name} must be a 1-D integer tensor (or a list or array of integers), "
                         f"got {describe_tensor(labels)}")
    if labels.shape[0] != count:
        raise ValueError(f"{name} has {labels.shape[0]} entries but {count_name} has "
                         f"{count} rows; they must match")
    return labels.long()


def require_classes(name: str, labels: torch.Tensor, num_classes: int, why: str) -> None:
    """Every label must be a class index in [0, num_classes) (`why` says where num_classes comes
    from). Reads the smallest and largest label on the host (a sync): where labels enter."""
    if labels.numel() == 0:
        return
    low, high = torch.stack(torch.aminmax(labels)).tolist()
    if low < 0 or high >= num_classes:
        raise ValueError(f"{name} must be class indices in [0, {num_classes - 1}] ({why}), got "
                         f"labels from {low} to {high}")


# ---------------------------------------------------------------- images

def require_images(name: str, images: torch.Tensor) -> None:
    """A batch of RGB images: a uint8 or floating-point tensor of shape [N, 3, H, W] with N >= 1."""
    if (not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3
            or images.shape[0] < 1
            or not (images.dtype == torch.uint8 or images.is_floating_point())):
        raise ValueError(f"{name} must be a uint8 or floating-point tensor of shape [N, 3, H, W] "
                         f"with N >= 1, got {describe_tensor(images)}")


def require_unit_range(name: str, images: torch.Tensor) -> None:
    """Float images must hold pixels in [0, 1] (uint8 images hold 0..255 and pass unchecked).

    Reads their smallest and largest value on the host, a sync: call it where images enter (`train`,
    `extract_features`, an augmentation called on float images), never inside a training step. Float
    pixels in 0..255 would pass every later step silently: saturated augmentations, features
    hundreds of times too large."""
    if images.dtype == torch.uint8:
        return
    low, high = torch.stack(torch.aminmax(images.detach())).float().tolist()
    if 0 <= low and high <= 1:
        return
    if math.isfinite(high) and 0 <= low and high <= 255:
        hint = ("these look like 0..255 pixel values: pass them as uint8 "
                "(images.round().to(torch.uint8)) or divide them by 255")
    else:
        hint = ("pass uint8 pixels (0..255), or float pixels scaled to [0, 1] "
                "(clcourse.augment.to_float_images converts uint8 ones)")
    raise ValueError(f"{name} holds float pixels in [{low:g}, {high:g}], but float images must "
                     f"lie in [0, 1]; {hint}")
