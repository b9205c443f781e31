"""Checkers for notebook 09 (inside the network): linear CKA of two feature matrices,
the unbiased HSIC."""
from __future__ import annotations

import torch

from ..cka import hsic_unbiased, linear_cka
from ._core import ExerciseError, as_tensor, call_student, diagnose, exercise, passed, seeded

__all__ = ["check_linear_cka", "check_hsic_unbiased"]


def _features(seed: int, n: int, p: int, q: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [n, p] and y [n, q] sharing a few directions, with column means far from zero (so
    forgetting to centre changes every number) and columns of different scales (so a per-column
    normalisation would too)."""
    g = seeded(seed)
    shared = torch.randn(n, 3, generator=g, dtype=torch.float64)
    x = (shared @ torch.randn(3, p, generator=g, dtype=torch.float64)
         + 0.5 * torch.randn(n, p, generator=g, dtype=torch.float64))
    y = (torch.tanh(shared @ torch.randn(3, q, generator=g, dtype=torch.float64))
         + 0.5 * torch.randn(n, q, generator=g, dtype=torch.float64))
    x = x * torch.linspace(0.5, 3.0, p, dtype=torch.float64) + 2.0
    y = y * torch.linspace(2.0, 0.3, q, dtype=torch.float64) - 1.5
    return x, y


def _cka_mistakes(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """What common wrong versions of linear CKA return, each with the hint that fixes it."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    fro = torch.linalg.matrix_norm

    def cka(a, b, square=True):
        numerator = fro(b.T @ a) ** (2 if square else 1)
        return numerator / (fro(a.T @ a) * fro(b.T @ b))

    def one_sided(k, l):   # the Gram form with J G instead of J G J
        k, l = k - k.mean(0), l - l.mean(0)
        return (k * l).sum() / (fro(k) * fro(l))

    return {
        "Centre the columns first: subtract each feature's mean over the examples (x - x.mean(0)).":
            cka(x, y),
        "Centre y too: the numerator does not change, but ||Yᵀ Y||_F of an uncentred y does.":
            cka(xc, y),
        "Centre x too: the numerator does not change, but ||Xᵀ X||_F of an uncentred x does.":
            cka(x, yc),
        "Centre the columns (x.mean(0), the mean over the examples), not the rows (x.mean(1)).":
            cka(x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)),
        "Square the numerator: CKA = ||Yᵀ X||_F² / (||Xᵀ X||_F ||Yᵀ Y||_F).":
            cka(xc, yc, square=False),
        "Normalise by the Frobenius norms of XᵀX and YᵀY, not by ||X||_F² ||Y||_F².":
            fro(yc.T @ xc) ** 2 / (fro(xc) ** 2 * fro(yc) ** 2),
        "Don't take a square root of the result: CKA is a ratio of HSICs, already between 0 and 1.":
            cka(xc, yc).sqrt(),
        "Centre each Gram matrix on both sides, J G J (or build it from centred features, "
        "X̄ X̄ᵀ), not only its rows (J X Xᵀ).":
            one_sided(x @ x.T, y @ y.T),
    }


@exercise(stands_for=linear_cka)
def check_linear_cka(fn, cases=((40, 6, 9), (12, 30, 20), (25, 4, 4))) -> None:
    """fn(x [n, p], y [n, q]) -> 0-d tensor, the linear CKA of the two representations of the
    same n examples."""
    for seed, (n, p, q) in enumerate(cases):
        x, y = _features(seed, n, p, q)
        student = as_tensor(call_student(fn, x.clone(), y.clone(), name="linear_cka"), "linear_cka")
        if student.dim() != 0:
            raise ExerciseError("linear_cka must return a scalar (a 0-d tensor), got shape "
                                f"{tuple(student.shape)}.")
        diagnose("linear_cka", student, linear_cka(x, y).to(student.dtype), _cka_mistakes(x, y),
                 context=f"n={n}, p={p}, q={q}")
    x, _ = _features(7, 20, 5, 5)
    itself = as_tensor(call_student(fn, x.clone(), x.clone(), name="linear_cka"), "linear_cka")
    if not torch.allclose(itself.double(), torch.ones((), dtype=torch.float64), atol=1e-6):
        raise ExerciseError(f"linear_cka(x, x) must be 1, got {float(itself):.6f}.")
    passed("linear_cka", f"matches the reference on {len(cases)} seeded pairs "
                         "(tall and wide), and CKA(x, x) = 1")


def _gram_pair(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two linear-kernel Gram matrices of related features with non-zero means (large diagonals)."""
    x, y = _features(seed, n, 5, 7)
    return x @ x.T, y @ y.T


def _hsic_mistakes(k: torch.Tensor, l: torch.Tensor) -> dict[str, torch.Tensor]:
    """What common wrong versions of the unbiased HSIC return, each with the hint that fixes it."""
    n = k.shape[0]
    off = ~torch.eye(n, dtype=torch.bool)
    ones = torch.ones(n, dtype=k.dtype)

    def hsic(kt, lt, total_divisor=(n - 1) * (n - 2), cross_sign=-1.0, normaliser=n * (n - 3)):
        trace = torch.trace(kt @ lt)
        totals = (ones @ kt @ ones) * (ones @ lt @ ones) / total_divisor
        cross = ones @ kt @ lt @ ones
        return (trace + totals + cross_sign * 2 * cross / (n - 2)) / normaliser

    kt, lt = k * off, l * off
    centring = torch.eye(n, dtype=k.dtype) - 1.0 / n
    return {
        "Set the diagonals of K and L to zero first (K~ = K with K~_ii = 0): the unbiased "
        "estimator leaves out each example's similarity with itself.": hsic(k, l),
        "Zero the diagonal of both K and L, not only one of them.": hsic(kt, l),
        "The last term is subtracted: - 2/(n-2) 1ᵀ K~ L~ 1.": hsic(kt, lt, cross_sign=1.0),
        "Divide (1ᵀ K~ 1)(1ᵀ L~ 1) by (n-1)(n-2).": hsic(kt, lt, total_divisor=1),
        "Divide the whole bracket by n (n - 3).": hsic(kt, lt, normaliser=1),
        "Divide the whole bracket by n (n - 3), not by n (n - 1).":
            hsic(kt, lt, normaliser=n * (n - 1)),
        "This is the biased estimator tr(K H L H) / (n-1)²; the exercise "
        "asks for the unbiased one.":
            torch.trace(k @ centring @ l @ centring) / (n - 1) ** 2,
    }


@exercise(stands_for=hsic_unbiased)
def check_hsic_unbiased(fn, cases=(6, 9, 16)) -> None:
    """fn(K [n, n], L [n, n]) -> 0-d tensor, the unbiased HSIC estimator of two Gram matrices."""
    for seed, n in enumerate(cases):
        k, l = _gram_pair(seed, n)
        student = as_tensor(call_student(fn, k.clone(), l.clone(), name="hsic_unbiased"),
                            "hsic_unbiased")
        if student.dim() != 0:
            raise ExerciseError("hsic_unbiased must return a scalar (a 0-d tensor), got shape "
                                f"{tuple(student.shape)}.")
        diagnose("hsic_unbiased", student, hsic_unbiased(k, l).to(student.dtype),
                 _hsic_mistakes(k, l), context=f"n={n}")
    k, l = _gram_pair(5, 8)
    before = k.clone()
    call_student(fn, k, l, name="hsic_unbiased")
    if not torch.equal(k, before):
        raise ExerciseError("hsic_unbiased changed its input K in place (e.g. fill_diagonal_ on "
                            "K itself): work on a copy, the caller still needs K.")
    passed("hsic_unbiased", f"matches the reference on {len(cases)} seeded pairs of Gram "
                            "matrices, inputs left unchanged")
