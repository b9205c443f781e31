"""What several test modules share. tests/ is on sys.path while pytest runs (its conftest.py is imported from
there), so a test module anywhere under tests/ imports them with ``from helpers import ...``:

- a training budget with the loop's historical defaults, and `fit`, which trains with one;
- CKA results built from seeded random matrices.
"""
from __future__ import annotations

from dataclasses import fields

import torch

from clcourse.cka import CKAResult
from clcourse.presets import Preset
from clcourse.train import train

# The budget fields of a Preset that a test sets per run (the rest describe the course's data and sweeps).
BUDGET_FIELDS = frozenset({"epochs", "batch_size", "lr", "momentum", "weight_decay", "warmup_epochs", "knn_every",
                           "knn_k", "knn_temperature", "checkpoint_every", "compile", "log_every"})
assert BUDGET_FIELDS <= {f.name for f in fields(Preset)}

TEST_PRESET = Preset(name="test", backbone="small_cnn", train_subset=None, test_subset=None, batch_size=256,
                     epochs=1, sweep_epochs=1, temperatures=(0.5,), warmup_epochs=0, knn_every=1, knn_k=200,
                     compile=False, checkpoint_every=1)


def budget(**changes) -> Preset:
    """The tests' preset (batch 256, no warm-up, kNN every epoch with k = 200, a checkpoint every epoch) with
    `changes`."""
    return TEST_PRESET.with_overrides(**changes)


def fit(method, images, preset: Preset | None = None, **options):
    """`train` with the budget fields among `options` applied to `preset` (default: the tests' preset); the
    other options go to `train` itself (labels, run, checkpoint_dir, resume, knn_data, seed, device, progress)."""
    changes = {key: options.pop(key) for key in list(options) if key in BUDGET_FIELDS}
    return train(method, images, preset=(preset or TEST_PRESET).with_overrides(**changes), **options)


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
