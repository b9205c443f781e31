"""Run-size presets, so one notebook runs in CI on a CPU, on a Colab T4 and at paper scale.

- ``smoke``: CPU and CI. A small CNN on a few thousand images; each notebook takes minutes on 2 cores.
- ``colab``: one T4 (or any single GPU). ResNet-18 on all of CIFAR-10; each notebook <= 15 minutes.
- ``full``: paper-scale budgets (200 epochs) on a fast GPU.

The default is ``smoke`` without a GPU and ``colab`` with one; the environment variable
``CLCOURSE_PRESET`` overrides it.

Two caps shrink every training run without touching a notebook (the grading of nbgrader assignments sets both: the
training cells then take seconds, the exercises are unchanged): ``CLCOURSE_MAX_EPOCHS`` caps the preset's ``epochs``
and ``sweep_epochs`` and any ``epochs`` given to `clcourse.train.train`; ``CLCOURSE_MAX_TRAIN_IMAGES`` caps the
preset's ``train_subset`` and the training images `clcourse.data.load_dataset` returns.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .validation import require_int_at_least


@dataclass(frozen=True)
class Preset:
    name: str
    backbone: str               # "small_cnn" or "resnet18", see clcourse.models.build_backbone
    train_subset: int | None    # training images used for self-supervised learning (None: all)
    test_subset: int | None     # held-out images used for evaluation (None: all)
    batch_size: int             # images per step (each contributes two views)
    epochs: int                 # main SimCLR run of notebook 01
    sweep_epochs: int           # each run of a sweep (temperature, methods, queue sizes)
    temperatures: tuple[float, ...]  # temperature sweep
    warmup_epochs: int
    knn_every: int              # evaluate kNN accuracy every this many epochs
    knn_k: int
    compile: bool               # torch.compile the model step
    checkpoint_every: int       # a weight snapshot every this many epochs (ResNet-18: ~45 MB each, ~90 MB for MoCo)

    def with_overrides(self, **changes) -> "Preset":
        """A copy with some fields changed, e.g. ``preset.with_overrides(epochs=3)``."""
        return replace(self, **changes)


PRESETS = {
    "smoke": Preset(name="smoke", backbone="small_cnn", train_subset=2560, test_subset=1000,
                    batch_size=256, epochs=12, sweep_epochs=6, temperatures=(0.1, 0.5),
                    warmup_epochs=1, knn_every=2, knn_k=50, compile=False,
                    checkpoint_every=1),
    "colab": Preset(name="colab", backbone="resnet18", train_subset=None, test_subset=None,
                    batch_size=512, epochs=25, sweep_epochs=6, temperatures=(0.1, 0.2, 0.5),
                    warmup_epochs=2, knn_every=5, knn_k=200, compile=False,
                    checkpoint_every=1),
    "full": Preset(name="full", backbone="resnet18", train_subset=None, test_subset=None,
                   batch_size=512, epochs=200, sweep_epochs=200, temperatures=(0.05, 0.1, 0.2, 0.5, 1.0),
                   warmup_epochs=10, knn_every=10, knn_k=200, compile=True,
                   checkpoint_every=10),
}


def course_root() -> Path:
    """Where downloads (`data/`) and training runs (`runs/`) go by default: the repository when the package
    is installed from a checkout (`pip install -e .`), else the current folder (e.g. /content on Colab)."""
    package_parent = Path(__file__).resolve().parent.parent
    return package_parent if (package_parent / "pyproject.toml").is_file() else Path.cwd()


def get_device(device: str | torch.device | None = None) -> torch.device:
    """The given device, else CUDA when available, else Apple's MPS, else the CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on GPUs with native bf16 (compute capability >= 8: A100, H100, L4), fp16 on older GPUs such as
    Colab's T4 (where `torch.cuda.is_bf16_supported()` says yes through slow emulation), None (float32)
    elsewhere."""
    if device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def no_autocast(device: torch.device | str):
    """A context that switches autocast off on `device`: losses, similarities and measurements that compare
    numbers run in float32 even inside a bf16/fp16 training step (half precision gives cosines to about 3
    digits, which a small temperature then magnifies, and merges near-ties)."""
    return torch.autocast(torch.device(device).type, enabled=False)


MAX_EPOCHS_ENV_VAR = "CLCOURSE_MAX_EPOCHS"
MAX_TRAIN_IMAGES_ENV_VAR = "CLCOURSE_MAX_TRAIN_IMAGES"


def capped(value: int | None, env_var: str) -> int | None:
    """`value` at most the cap ``$env_var`` sets (`value` None, meaning "all", becomes the cap); `value` itself when
    the variable is unset or empty. Raises ValueError naming the variable when it is not an integer >= 1."""
    cap = os.environ.get(env_var, "").strip()
    if not cap:
        return value
    cap = require_int_at_least(env_var, int(cap) if cap.isdigit() else cap, 1)
    return cap if value is None else min(value, cap)


def get_preset(name: str | None = None) -> Preset:
    """The preset called `name`, else ``$CLCOURSE_PRESET``, else ``colab`` with a GPU and ``smoke`` without; its
    ``epochs`` and ``sweep_epochs`` at most ``$CLCOURSE_MAX_EPOCHS`` and its ``train_subset`` at most
    ``$CLCOURSE_MAX_TRAIN_IMAGES`` when those are set."""
    chosen = name or os.environ.get("CLCOURSE_PRESET") or ("colab" if torch.cuda.is_available() else "smoke")
    key = chosen.strip().lower()
    if key not in PRESETS:
        source = "name" if name else "CLCOURSE_PRESET"
        raise ValueError(f"{source} must be one of {sorted(PRESETS)}, got {chosen!r}")
    preset = PRESETS[key]
    return preset.with_overrides(epochs=capped(preset.epochs, MAX_EPOCHS_ENV_VAR),
                                 sweep_epochs=capped(preset.sweep_epochs, MAX_EPOCHS_ENV_VAR),
                                 train_subset=capped(preset.train_subset, MAX_TRAIN_IMAGES_ENV_VAR))
