"""Notebook 09's checkers accept correct solutions (also unusual but equivalent ones), name each
usual mistake, and report a bare stub as unfinished."""
import pytest
import torch

from clcourse.checks import ExerciseError, check_hsic_unbiased, check_linear_cka


def cka(x, y, *, centre_x=True, centre_y=True, rows=False, square=True, norms="gram", root=False):
    """Linear CKA as a student writes it; the keyword switches reproduce the usual mistakes."""
    dim, keep = (1, True) if rows else (0, False)
    if centre_x:
        x = x - x.mean(dim, keepdim=keep)
    if centre_y:
        y = y - y.mean(dim, keepdim=keep)
    numerator = torch.linalg.matrix_norm(y.T @ x) ** (2 if square else 1)
    if norms == "gram":
        denominator = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    else:
        denominator = torch.linalg.matrix_norm(x) ** 2 * torch.linalg.matrix_norm(y) ** 2
    value = numerator / denominator
    return value.sqrt() if root else value


def cka_one_sided_grams(x, y):
    """The Gram form with each Gram matrix centred on one side only (J X Xᵀ, not J X Xᵀ J)."""
    k, l = x @ x.T, y @ y.T
    k, l = k - k.mean(0), l - l.mean(0)
    return (k * l).sum() / (k.norm() * l.norm())


def cka_through_grams(x, y):
    """The same number from centred n x n Gram matrices: tr(K L) / (||K|| ||L||)."""
    n = x.shape[0]
    h = torch.eye(n, dtype=x.dtype) - 1 / n
    k, l = h @ x @ x.T @ h, h @ y @ y.T @ h
    return torch.trace(k @ l) / (k.norm() * l.norm())


@pytest.mark.parametrize("solution",
                         [cka, cka_through_grams, lambda x, y: cka(x.float(), y.float()).double()])
def test_correct_linear_cka_passes(solution, capsys):
    check_linear_cka(solution)
    shown = solution.__name__ if solution.__name__.isidentifier() else "linear_cka"
    assert f"✓ {shown}: " in capsys.readouterr().out


@pytest.mark.parametrize("mistake, message", [
    (dict(centre_x=False, centre_y=False), "Centre the columns first"),
    (dict(centre_y=False), "Centre y too"),
    (dict(centre_x=False), "Centre x too"),
    (dict(rows=True), "not the rows"),
    (dict(square=False), "Square the numerator"),
    (dict(norms="features"), "not by \\|\\|X\\|\\|_F²"),
    (dict(root=True), "square root"),
])
def test_linear_cka_mistakes_are_named(mistake, message):
    with pytest.raises(ExerciseError, match=message):
        check_linear_cka(lambda x, y: cka(x, y, **mistake))


def test_linear_cka_one_sided_gram_centring_is_named():
    with pytest.raises(ExerciseError, match="Centre each Gram matrix on both sides"):
        check_linear_cka(cka_one_sided_grams)


def test_linear_cka_other_errors():
    with pytest.raises(ExerciseError, match="not implemented"):
        check_linear_cka(lambda x, y: (_ for _ in ()).throw(NotImplementedError()))
    with pytest.raises(ExerciseError, match="must return a scalar"):
        check_linear_cka(lambda x, y: cka(x, y).reshape(1))
    with pytest.raises(ExerciseError, match="torch.Tensor"):
        check_linear_cka(lambda x, y: float(cka(x, y)))
    with pytest.raises(ExerciseError, match="does not match"):
        check_linear_cka(lambda x, y: cka(x, y) * 0.9)


def hsic(k, l, *, zero_k=True, zero_l=True, cross_sign=-1.0, total_divisor=True,
         normaliser="n(n-3)", in_place=False):
    """The unbiased HSIC as a student writes it (loops-free, with ones vectors);
    switches reproduce mistakes."""
    n = k.shape[0]
    if in_place:
        k.fill_diagonal_(0)
        l.fill_diagonal_(0)
    else:
        k, l = k.clone(), l.clone()
        if zero_k:
            k.fill_diagonal_(0)
        if zero_l:
            l.fill_diagonal_(0)
    ones = torch.ones(n, 1, dtype=k.dtype)
    totals = (ones.T @ k @ ones) * (ones.T @ l @ ones) / ((n - 1) * (n - 2) if total_divisor else 1)
    bracket = torch.trace(k @ l) + totals + cross_sign * 2 / (n - 2) * (ones.T @ k @ l @ ones)
    divisor = {"n(n-3)": n * (n - 3), "n(n-1)": n * (n - 1), "none": 1}[normaliser]
    return (bracket / divisor).squeeze()


def hsic_by_sums(k, l):
    """The same estimator with elementwise sums instead of ones vectors."""
    n = k.shape[0]
    mask = 1 - torch.eye(n, dtype=k.dtype)
    kt, lt = k * mask, l * mask
    return ((kt * lt).sum() + kt.sum() * lt.sum() / ((n - 1) * (n - 2))
            - 2 / (n - 2) * (kt.sum(0) @ lt.sum(1))) / (n * (n - 3))


@pytest.mark.parametrize("solution", [hsic, hsic_by_sums])
def test_correct_hsic_passes(solution, capsys):
    check_hsic_unbiased(solution)
    assert f"✓ {solution.__name__}: " in capsys.readouterr().out


@pytest.mark.parametrize("mistake, message", [
    (dict(zero_k=False, zero_l=False), "Set the diagonals of K and L to zero"),
    (dict(zero_l=False), "Zero the diagonal of both"),
    (dict(cross_sign=1.0), "The last term is subtracted"),
    (dict(total_divisor=False), "by \\(n-1\\)\\(n-2\\)"),
    (dict(normaliser="none"), "Divide the whole bracket by n \\(n - 3\\)\\."),
    (dict(normaliser="n(n-1)"), "not by n \\(n - 1\\)"),
    (dict(in_place=True), "changed its input K in place"),
])
def test_hsic_mistakes_are_named(mistake, message):
    with pytest.raises(ExerciseError, match=message):
        check_hsic_unbiased(lambda k, l: hsic(k, l, **mistake))


def test_biased_hsic_is_recognised_and_stub_is_unfinished():
    def biased(k, l):
        n = k.shape[0]
        h = torch.eye(n, dtype=k.dtype) - 1 / n
        return torch.trace(k @ h @ l @ h) / (n - 1) ** 2

    with pytest.raises(ExerciseError, match="biased estimator"):
        check_hsic_unbiased(biased)
    with pytest.raises(ExerciseError, match="not implemented"):
        check_hsic_unbiased(lambda k, l: (_ for _ in ()).throw(NotImplementedError()))
