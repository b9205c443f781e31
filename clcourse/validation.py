"""Argument checks shared by the package: bad input fails early with a message that names
the argument, the value it got and what was expected."""
from __future__ import annotations

import torch


def describe_tensor(value) -> str:
    """How a bad argument looks, for an error message: shape and dtype of a tensor, else its type."""
    if isinstance(value, torch.Tensor):
        return f"shape {tuple(value.shape)}, dtype {value.dtype}"
    return type(value).__name__


def require_positive(name: str, value: float) -> None:
    """`value` must be a finite number > 0."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def require_int_at_least(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def require_in_range(name: str, value: float, low: float, high: float,
                     low_inclusive: bool = True, high_inclusive: bool = True) -> None:
    """`value` must lie in the interval from `low` to `high` (brackets as given)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value >= low if low_inclusive else value > low) and (value <= high if high_inclusive else value < high)
    if not ok:
        interval = f"{'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")


def require_probability(name: str, value: float) -> None:
    require_in_range(name, value, 0.0, 1.0)


def require_embeddings(name: str, z: torch.Tensor) -> None:
    """A batch of embeddings: a floating-point tensor of shape [N, D] with N >= 1."""
    if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[0] < 1 or not z.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of shape [N, D], got {describe_tensor(z)}")


def require_same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def require_labels(name: str, labels: torch.Tensor, count: int, count_name: str) -> None:
    """Integer class labels of shape [count], matching the rows of `count_name`."""
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(f"{name} must be a 1-D integer tensor, got {describe_tensor(labels)}")
    if labels.shape[0] != count:
        raise ValueError(f"{name} has {labels.shape[0]} entries but {count_name} has {count} rows; they must match")
