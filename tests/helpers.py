"""What several test modules share. tests/ is on sys.path while pytest runs (pyproject.toml's
`pythonpath`), so a test module anywhere under tests/ imports them with ``from helpers import ...``:

- a training budget with the loop's historical defaults, and `fit`, which trains with one;
- tiny methods and backbones, the views they train on and short runs of them;
- the slow SCE and SupCon references;
- small files in the formats the course reads, and CKA results built from seeded random matrices.

Nothing here imports the notebook tools or ipywidgets (a bare GPU machine runs the `cuda` tests
without them).
"""
from __future__ import annotations

import json
import math
import pickle
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from clcourse.checks import ExerciseError
from clcourse.cka import CKAResult
from clcourse.methods import CLAE, METHODS, SCE, Batch, MoCo, SimCLR, build_method
from clcourse.models import Backbone, SmallCNN
from clcourse.presets import Preset
from clcourse.robustness import SCHEMES
from clcourse.train import train

# The budget fields of a Preset that a test sets per run (the rest describe
# the course's data and sweeps).
BUDGET_FIELDS = frozenset({"epochs", "batch_size", "lr", "momentum", "weight_decay",
                           "warmup_epochs", "knn_every", "knn_k", "knn_temperature",
                           "checkpoint_every", "compile", "log_every"})
assert BUDGET_FIELDS <= {f.name for f in fields(Preset)}

TEST_PRESET = Preset(name="test", backbone="small_cnn", train_subset=None, test_subset=None,
                     batch_size=256, epochs=1, sweep_epochs=1, temperatures=(0.5,), warmup_epochs=0,
                     knn_every=1, knn_k=200, compile=False, checkpoint_every=1)


def budget(**changes) -> Preset:
    """The tests' preset (batch 256, no warm-up, kNN every epoch with k = 200, a checkpoint every
    epoch) with `changes`."""
    return TEST_PRESET.with_overrides(**changes)


def fit(method, images, preset: Preset | None = None, **options):
    """`train` with the budget fields among `options` applied to `preset` (default: the tests'
    preset); the other options go to `train` itself (labels, run, checkpoint_dir, resume, knn_data,
    seed, device, progress)."""
    changes = {key: options.pop(key) for key in list(options) if key in BUDGET_FIELDS}
    return train(method, images, preset=(preset or TEST_PRESET).with_overrides(**changes),
                 **options)


# ---------------------------------------------------------------- images, views and random inputs

def make_images():
    """48 random uint8 images of 16 x 16 (the `images` fixture of conftest.py)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (48, 3, 16, 16), dtype=torch.uint8, generator=generator)


def noisy_views(images, generator=None):
    """A cheap augmentation that still draws from the generator, so resuming must restore it."""
    x = images.float() / 255
    return (x + 0.05 * torch.randn(x.shape, generator=generator)).clamp(0, 1)


def flipped_views(images, generator=None):
    return noisy_views(images, generator).flip(-1)


def identity_views(images, generator=None):
    return images.float() / 255


def views_of(images, seed=1):
    """Two noisy views of `images`, drawn one after the other from one seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    return noisy_views(images, generator), noisy_views(images, generator)


def some_labels(count):
    """Four classes, each image's label its index modulo 4, for the methods that learn from
    labels."""
    return torch.arange(count) % 4


def randn(seed, *shape, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def random_unit(n, seed, dim=8):
    """n random unit vectors of size `dim`, seeded."""
    return F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


def pixels(n=8, seed=0, side=8):
    """Random float pixels in [0, 1)."""
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def uint8_images(n=32, side=8):
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------- tiny methods and short runs

def tiny_method(name, seed=0, **options):
    """The registered method `name` on a width-4 SmallCNN, with an 8-d projector, noisy views, a
    queue of 32 and 2 batch-norm splits (the MoCo family) and small MoCHi mixes."""
    torch.manual_seed(seed)
    options = {"projector_hidden": 16, "projector_out": 8, "augment": noisy_views, **options}
    if issubclass(METHODS[name], MoCo):
        options = {"queue_size": 32, "bn_splits": 2, **options}
    if name == "sce":
        options = {"key_augment": options["augment"], **options}
    if name == "mochi":
        options = {"n_hardest": 4, "n_mix_negatives": 3, "n_mix_query": 2, **options}
    if name == "supervised":      # a linear classifier where the others have their projector
        options = {key: value for key, value in options.items() if not key.startswith("projector_")}
    return build_method(name, Backbone(SmallCNN(width=4)), **options)


def noisy_batch(method, images, index):
    """The batch of `images[index]`: two noisy views and, for a method that learns from labels,
    labels."""
    return Batch(views_of(images[index]), images[index],
                 some_labels(len(images))[index] if method.requires_labels else None, index)


def train_briefly(method, images, **options):
    """Two epochs in batches of 8 (one of warm-up), with labels for a method that needs them."""
    settings = dict(epochs=2, batch_size=8, lr=0.1, warmup_epochs=1, progress=False, log_every=2)
    if method.requires_labels:
        settings["labels"] = some_labels(len(images))
    settings.update(options)
    return fit(method, images, **settings)


def tiny_simclr(seed=0, **options):
    torch.manual_seed(seed)
    return SimCLR(Backbone(SmallCNN(width=4)), projector_hidden=16, projector_out=8,
                  augment=noisy_views, **options)


def short_run(images, method=None, **options):
    """Three epochs in batches of 16 (one of warm-up) of `method`, a tiny SimCLR by default."""
    settings = dict(epochs=3, batch_size=16, lr=0.1, warmup_epochs=1, progress=False, log_every=2)
    return fit(method or tiny_simclr(), images, **{**settings, **options})


def step_losses(history):
    return [r["loss"] for r in history.steps]


def tiny_sce(seed=0, cls=SCE, **options):
    """SCE (or `cls`, e.g. MoCo) with a queue of 32 and 2 batch-norm splits; SCE's key view is
    flipped."""
    torch.manual_seed(seed)
    options = {"projector_hidden": 16, "projector_out": 8, "augment": noisy_views, "queue_size": 32,
               "bn_splits": 2, **options}
    if cls is SCE:
        options.setdefault("key_augment", flipped_views)
    return cls(Backbone(SmallCNN(width=4)), **options)


class TinyBatchNormBackbone(nn.Module):
    """conv -> BN -> ReLU -> average pool: small enough for finite differences over every pixel."""
    feature_dim = 4

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return F.adaptive_avg_pool2d(F.relu(self.bn(self.conv(x))), 1).flatten(1)


def tiny_clae(seed=0, **options):
    """CLAE in float64 on TinyBatchNormBackbone (epsilon 0.05, alpha 0.7)."""
    torch.manual_seed(seed)
    options = {"projector_hidden": 6, "projector_out": 5, "augment": noisy_views, "epsilon": 0.05,
               "alpha": 0.7, **options}
    return CLAE(Backbone(TinyBatchNormBackbone()), **options).double()


def tiny_views(seed=0, n=4, size=5):
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(n, 3, size, size, generator=generator, dtype=torch.float64)
                 for _ in range(2))


def batch_from_views(views):
    n = len(views[0])
    return Batch(views, torch.zeros(n, 3, 1, 1, dtype=torch.uint8), None, torch.arange(n))


class TinyBackbone(nn.Module):
    """Without batch-norm, so that the result of a batch does not depend on what else is in it."""
    feature_dim = 6

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(2),
                                 nn.Flatten(), nn.Linear(16, 6))

    def forward(self, x):
        return self.net(x)


def tiny_encoder(scheme="cl"):
    """An untrained encoder of a robustness scheme ('cl', 'scl' or 'sl') on a width-4 SmallCNN."""
    torch.manual_seed(0)
    options = dict(num_classes=3) if scheme == "sl" else dict(projector_hidden=16, projector_out=8)
    return build_method(SCHEMES[scheme], Backbone(SmallCNN(width=4)), augment=identity_views,
                        **options)


def reference_supcon(z1, z2, labels, temperature):
    """L_out of Khosla et al., one anchor at a time, in float64."""
    u = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    y = torch.cat([labels, labels]).tolist()
    total = 0.0
    for i in range(len(u)):
        others = [a for a in range(len(u)) if a != i]
        denominator = sum(torch.exp(u[i] @ u[a] / temperature) for a in others)
        positives = [p for p in others if y[p] == y[i]]
        total = total + sum(-torch.log(torch.exp(u[i] @ u[p] / temperature) / denominator)
                            for p in positives) / len(positives)
    return total / len(u)



def reference_sce(q, k, queue, temperature, temperature_momentum, lam, excluded=None):
    """One query at a time: candidates [k_b, allowed queue entries];
    target [lam, (1 - lam) relation]."""
    q, k, queue = (F.normalize(q, dim=1), F.normalize(k.detach(), dim=1),
                   F.normalize(queue.detach(), dim=1))
    losses = []
    for b in range(len(q)):
        allowed = [j for j in range(len(queue)) if excluded is None or not excluded[b][j]]
        log_p = torch.log_softmax(torch.stack([q[b] @ k[b]] + [q[b] @ queue[j]
                                                               for j in allowed]) / temperature, 0)
        weights = [math.exp(float(k[b] @ queue[j]) / temperature_momentum) for j in allowed]
        target = [lam] + [(1 - lam) * w / sum(weights) for w in weights]
        losses.append(-sum(t * lp for t, lp in zip(target, log_p)))
    return torch.stack(losses).mean()


# ---------------------------------------------------------------- checkers

def function_names(config: dict) -> dict:
    """{role: the function's name} of a method's configuration (its "functions", each recorded by
    name and code fingerprint)."""
    return {role: record["name"] if record else record
            for role, record in config["functions"].items()}


def fails_with(check, fn, hint):
    with pytest.raises(ExerciseError, match=hint):
        check(fn)


# ---------------------------------------------------------------- files

def fake_cifar10(root, per_batch=4):
    """A cifar-10-batches-py with 5 x per_batch training images in the official pickle format."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    generator = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows = generator.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rows,
                         "labels": [int(v) for v in generator.integers(0, 10, per_batch)]}, f,
                        protocol=2)
    return folder


def notebook_with(source: str):
    """A notebook of a title, `x = 1` and a code cell of `source`."""
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
    nb = new_notebook()
    nb.cells = [new_markdown_cell("# Title"), new_code_cell("x = 1"), new_code_cell(source)]
    return nb


def write_notebook(path, *cells):
    """A notebook file of a title and the code `cells`, written as plain JSON."""
    cells = [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
              "source": source}
             for source in cells]
    title = {"cell_type": "markdown", "metadata": {}, "source": "# a title"}
    path.write_text(json.dumps({"cells": [title, *cells],
                                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


# ---------------------------------------------------------------- CKA results

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


def refuse_host_reads(monkeypatch, watching: dict, what: str) -> None:
    """Make every Tensor refuse to become a Python value while `watching["now"]` is true: a host
    read there fails the test with "<what> read a tensor's value on the host"."""
    def refuse(original):
        def guarded(self, *args, **kwargs):
            assert not watching["now"], f"{what} read a tensor's value on the host"
            return original(self, *args, **kwargs)
        return guarded
    for attribute in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, attribute, refuse(getattr(torch.Tensor, attribute)))
