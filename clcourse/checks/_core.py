"""The machinery every exercise checker uses: run the student's function and the reference on seeded
inputs, and when they disagree, find which known mistake the student's output matches."""
from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["ExerciseError", "seeded", "call_student", "as_tensor", "same", "diagnose", "passed"]


class ExerciseError(AssertionError):
    """The student's function disagrees with the reference; the message says where to look."""


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def call_student(fn: Callable, *args, name: str):
    try:
        return fn(*args)
    except NotImplementedError:
        raise ExerciseError(f"{name} is not implemented yet: replace `raise "
                            "NotImplementedError` with your code.") from None


def as_tensor(value, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ExerciseError(f"{name} must return a torch.Tensor, got {type(value).__name__}.")
    return value


def same(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    return a.shape == b.shape and torch.allclose(a.detach().double(), b.detach().double(),
                                                 atol=atol, rtol=rtol)


def diagnose(name: str, student: torch.Tensor, reference: torch.Tensor,
             mistakes: dict[str, torch.Tensor], context: str = "") -> None:
    """Raise an ExerciseError that names the first known mistake the student's output matches,
    else a generic message with both values. `mistakes` maps a hint to the output that mistake
    would produce."""
    if same(student, reference):
        return
    where = f" ({context})" if context else ""
    if student.shape != reference.shape:
        raise ExerciseError(f"{name}{where} returned shape {tuple(student.shape)}, expected "
                            f"{tuple(reference.shape)}.")
    for hint, wrong_output in mistakes.items():
        if same(student, wrong_output):
            raise ExerciseError(f"{name}{where} is not right yet. {hint}")
    shown = (f"got {student.item():.6f}, expected {reference.item():.6f}" if student.numel() == 1
             else "largest difference "
                  f"{(student.detach().double() - reference.double()).abs().max().item():.3g}")
    raise ExerciseError(f"{name}{where} does not match the reference: {shown}.")


def passed(name: str, what: str) -> None:
    print(f"✓ {name}: {what}")
