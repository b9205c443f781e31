"""Test inputs that more than one test module builds. tests/ is on sys.path while pytest runs (its
conftest.py is imported from there), so a test module anywhere under tests/ imports them with
``from helpers import ...``."""
import torch

from clcourse.cka import CKAResult

CKA_LAYERS = ("net.layer1", "net.layer2", "net.pool")


def cka_result(a, b, seed, layers_a=CKA_LAYERS, layers_b=CKA_LAYERS) -> CKAResult:
    """A CKA result between representations `a` and `b`: a seeded random matrix in [0, 1), 100
    images in 2 minibatches."""
    g = torch.Generator().manual_seed(seed)
    matrix = torch.rand(len(layers_a), len(layers_b), generator=g, dtype=torch.float64)
    return CKAResult(a, b, tuple(layers_a), tuple(layers_b), matrix, 100, 2)


def cka_results() -> dict:
    """Two models, SimCLR with a clean and an adversarial input, SupCon with a clean one; three of
    the six pairs."""
    simclr, simclr_pgd, supcon = ("SimCLR", "clean"), ("SimCLR", "PGD"), ("SupCon", "clean")
    return {(simclr, simclr_pgd): cka_result(simclr, simclr_pgd, 0),
            (simclr, supcon): cka_result(simclr, supcon, 1),
            (supcon, supcon): cka_result(supcon, supcon, 2)}
