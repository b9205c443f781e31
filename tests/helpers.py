"""What many test modules share: a training budget with the loop's historical defaults, and `fit`, which
trains with one."""
from __future__ import annotations

from dataclasses import fields

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
