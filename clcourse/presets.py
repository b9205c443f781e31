"""Run-size presets, so one notebook runs in CI on a CPU, on a Colab T4 and at paper scale.

- ``smoke``: CPU and CI. A small CNN on a few thousand images; each notebook takes
  minutes on 2 cores.
- ``colab``: one T4 (or any single GPU). ResNet-18 on all of CIFAR-10; each notebook <= 15 minutes.
- ``full``: paper-scale budgets (200 epochs) on a fast GPU.

The default is ``smoke`` without a GPU and ``colab`` with one; the environment variable
``CLCOURSE_PRESET`` overrides it.

Two caps shrink every training run without touching a notebook (the grading of nbgrader assignments
sets both: the training cells then take seconds, the exercises are unchanged):
``CLCOURSE_MAX_EPOCHS`` caps the preset's ``epochs`` and ``sweep_epochs`` and any ``epochs`` given
to `clcourse.train.train`; ``CLCOURSE_MAX_TRAIN_IMAGES`` caps the preset's ``train_subset`` and the
training images `clcourse.data.load_dataset` returns.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

from .validation import require_bool, require_in_range, require_int_at_least, require_positive

__all__ = ["MocoBudget", "HardNegativesBudget", "ClaeBudget", "CacrBudget", "SceBudget",
           "RobustnessBudget", "CkaBudget", "LedgerBudget", "CapstoneBudget", "Preset", "PRESETS",
           "course_root",
           "get_device", "autocast_dtype", "no_autocast", "MAX_EPOCHS_ENV_VAR",
           "MAX_TRAIN_IMAGES_ENV_VAR", "capped", "get_preset"]


@dataclass(frozen=True)
class MocoBudget:
    """Notebook 03: MoCo v2's queue and momentum, and the values its two sweeps try."""
    queue_size: int             # stays below the training set (see notebook 03, section 5)
    momentum: float
    queue_sizes: tuple[int, ...]
    momenta: tuple[float, ...]


@dataclass(frozen=True)
class HardNegativesBudget:
    """Notebook 04: MoCHi(N_hard, M_1, M_2) and its warm-up epochs (the MoCo-family runs use
    notebook 03's queue and momentum, `MocoBudget`, so that notebook 04 reuses notebook 03's
    MoCo v2 run)."""
    n_hardest: int
    n_mix_negatives: int
    n_mix_query: int
    mixing_warmup_epochs: int


@dataclass(frozen=True)
class ClaeBudget:
    """Notebook 05: training images and epochs per run, the extra alphas of the sweep, images
    measured per batch."""
    train_subset: int | None    # None: all 50,000
    epochs: int
    alphas: tuple[float, ...]
    probe_images: int


@dataclass(frozen=True)
class CacrBudget:
    """Notebook 06: every run's epochs and batch (a batch of 256 images is 1,280 views
    with five views)."""
    epochs: int
    batch_size: int


@dataclass(frozen=True)
class SceBudget:
    """Notebook 07: the queue, and the lambdas and tau_m the sweeps try around SCE's defaults."""
    queue_size: int
    lams: tuple[float, ...]
    temperature_momenta: tuple[float, ...]


@dataclass(frozen=True)
class RobustnessBudget:
    """Notebook 08 (and 09, which reuses its encoders): how much it trains and attacks."""
    backbone: str
    train_subset: int | None          # CIFAR-10 training images (None: all 50,000)
    test_subset: int | None           # held-out images attacked (None: all 10,000)
    batch_size: int                   # pretraining
    pretrain_epochs: int
    finetune_batch_size: int
    finetune_epochs: int
    train_steps: int  # PGD steps of adversarial training (pretraining and fine-tuning), 8/255
    train_step_size: float  # their step under the course's definition (the paper's: 0.01)
    test_steps: int                   # PGD steps of the test attacks, epsilon 4/255
    eval_batch_size: int              # images attacked together (threat model I: the negatives)


@dataclass(frozen=True)
class CkaBudget:
    """Notebook 09: test images compared layer by layer (None: all 10,000) and images
    per CKA minibatch."""
    cka_images: int | None
    batch_size: int


@dataclass(frozen=True)
class LedgerBudget:
    """Notebooks 01 and 03-09: the images on which a notebook's encoders meet the ledger's
    (`clcourse.ledger`), and notebook 01's supervised runs of the label-efficiency experiment."""
    pool_per_class: int | None    # labelled pool (kNN bank, probe training) per class; None: all
    test_per_class: int | None    # test images per class; None: all of them
    supervised_steps: int         # SGD steps of each supervised run, whatever its number of labels

    def __post_init__(self):
        for name in ("pool_per_class", "test_per_class"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name,
                                   require_int_at_least(name, getattr(self, name), 1))
        object.__setattr__(self, "supervised_steps",
                           require_int_at_least("supervised_steps", self.supervised_steps, 1))


@dataclass(frozen=True)
class CapstoneBudget:
    """Notebook 10: the runs of the five hard-negative methods it compares when the results ledger
    of `ledger_scale` holds no encoders of them (training images, None: all; epochs), the test
    images of its CKA and layer probes (None: all 10,000), and the ledger scale it reads."""
    train_subset: int | None
    epochs: int
    test_subset: int | None
    ledger_scale: str


@dataclass(frozen=True)
class Preset:
    """A run size: the model and data of every notebook, the training budget `clcourse.train.train`
    reads (epochs to log_every; `with_overrides` changes any of them for one run), and each
    notebook's own budget. Every field is checked when a preset is made."""
    name: str
    backbone: str               # "small_cnn" or "resnet18", see clcourse.models.build_backbone
    train_subset: int | None    # training images used for self-supervised learning (None: all)
    test_subset: int | None     # held-out images used for evaluation (None: all)
    batch_size: int             # images per step (each contributes two views)
    epochs: int                 # main SimCLR run of notebook 01; what `train` trains for
    sweep_epochs: int           # each run of a sweep (temperature, methods, queue sizes)
    temperatures: tuple[float, ...]  # temperature sweep
    warmup_epochs: int  # linear learning-rate warm-up, then a cosine decay
    knn_every: int      # evaluate kNN accuracy every this many epochs (when `train` gets knn_data)
    knn_k: int
    compile: bool               # torch.compile the model step
    checkpoint_every: int       # a weight snapshot every this many epochs (ResNet-18: ~45 MB each,
                                # ~90 MB for MoCo)
    lr: float | None = None     # peak SGD learning rate per 256 images (None: the method's own,
                                # `method.lr`)
    momentum: float = 0.9       # SGD momentum
    weight_decay: float = 5e-4  # on every parameter, as the MoCo CIFAR-10 demo
    knn_temperature: float = 0.1
    log_every: int = 10         # steps per history record
    moco: MocoBudget | None = None                     # notebook 03
    hard_negatives: HardNegativesBudget | None = None  # notebook 04
    clae: ClaeBudget | None = None                     # notebook 05
    cacr: CacrBudget | None = None                     # notebook 06
    sce: SceBudget | None = None                       # notebook 07
    robustness: RobustnessBudget | None = None         # notebooks 08 and 09
    cka: CkaBudget | None = None                       # notebook 09
    ledger: LedgerBudget | None = None                 # notebooks 01, 03-09: beside the ledger
    capstone: CapstoneBudget | None = None             # notebook 10

    def __post_init__(self):
        for name in ("batch_size", "epochs", "sweep_epochs", "knn_every", "knn_k",
                     "checkpoint_every", "log_every"):
            object.__setattr__(self, name, require_int_at_least(name, getattr(self, name), 1))
        object.__setattr__(self, "warmup_epochs",
                           require_int_at_least("warmup_epochs", self.warmup_epochs, 0))
        if self.lr is not None:
            object.__setattr__(self, "lr", require_positive("lr", self.lr))
        object.__setattr__(self, "momentum", require_in_range("momentum", self.momentum, 0.0, 1.0,
                                                              high_inclusive=False))
        object.__setattr__(self, "weight_decay",
                           require_in_range("weight_decay", self.weight_decay, 0.0, math.inf,
                                            high_inclusive=False))
        object.__setattr__(self, "knn_temperature",
                           require_positive("knn_temperature", self.knn_temperature))
        object.__setattr__(self, "compile", require_bool("compile", self.compile))

    def with_overrides(self, **changes) -> Preset:
        """A copy with some fields changed, e.g. ``preset.with_overrides(epochs=3)``; a name that is
        not a field is refused."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise ValueError(f"with_overrides got {', '.join(map(repr, unknown))}, which is not a "
                             f"field of Preset; the fields are {[f.name for f in fields(self)]}")
        return replace(self, **changes)


PRESETS = {
    "smoke": Preset(
        name="smoke", backbone="small_cnn", train_subset=2560, test_subset=1000,
        batch_size=256, epochs=12,
        sweep_epochs=6, temperatures=(0.1, 0.5), warmup_epochs=1, knn_every=2,
        knn_k=50, compile=False,
        checkpoint_every=1,
        moco=MocoBudget(queue_size=1024, momentum=0.99, queue_sizes=(256, 1024),
                        momenta=(0.0, 0.99)),
        hard_negatives=HardNegativesBudget(n_hardest=64, n_mix_negatives=128, n_mix_query=32,
                                           mixing_warmup_epochs=1),
        clae=ClaeBudget(train_subset=2048, epochs=2, alphas=(2.0,), probe_images=256),
        cacr=CacrBudget(epochs=3, batch_size=256),
        sce=SceBudget(queue_size=1024, lams=(0.0, 0.5, 1.0), temperature_momenta=(0.05,)),
        # A small CNN on 512 images, a couple of steps of everything: about two minutes for the
        # whole grid on two CPU cores. The numbers only say that the code runs; the effects appear
        # at the colab scale.
        robustness=RobustnessBudget(backbone="small_cnn", train_subset=512,
                                    test_subset=200, batch_size=128, pretrain_epochs=2,
                                    finetune_batch_size=128, finetune_epochs=1, train_steps=2,
                                    train_step_size=4 / 255, test_steps=3, eval_batch_size=200),
        cka=CkaBudget(cka_images=500, batch_size=250),
        # The ledger's images cut to 500 pool and 200 test images per class: an encoder's kNN in a
        # few seconds on a CPU (all 30,000 images take about a minute). 50 steps take a supervised
        # small CNN on 2,500 labelled images from 20% (chance) to about 50%.
        ledger=LedgerBudget(pool_per_class=500, test_per_class=200, supervised_steps=50),
        # Five methods, two epochs of 1,280 images each: about 2 minutes on two CPU cores.
        capstone=CapstoneBudget(train_subset=1280, epochs=2, test_subset=500, ledger_scale="cpu")),
    "colab": Preset(
        name="colab", backbone="resnet18", train_subset=None, test_subset=None,
        batch_size=512, epochs=25,
        sweep_epochs=6, temperatures=(0.1, 0.2, 0.5), warmup_epochs=2, knn_every=5,
        knn_k=200, compile=False,
        checkpoint_every=1,
        moco=MocoBudget(queue_size=4096, momentum=0.99, queue_sizes=(1024, 4096, 16384),
                        momenta=(0.0, 0.9, 0.99)),
        hard_negatives=HardNegativesBudget(n_hardest=256, n_mix_negatives=256, n_mix_query=64,
                                           mixing_warmup_epochs=1),
        clae=ClaeBudget(train_subset=25_000, epochs=5, alphas=(0.5, 2.0), probe_images=512),
        cacr=CacrBudget(epochs=3, batch_size=256),
        sce=SceBudget(queue_size=4096, lams=(0.0, 0.5, 1.0), temperature_momenta=(0.05, 0.2)),
        # ResNet-18 on a fifth of CIFAR-10, the paper's 5-step adversarial training, 10-step test
        # attacks: about 12 minutes on a T4 (an estimate from the work it does:
        # python bench/robustness.py --estimate colab).
        robustness=RobustnessBudget(backbone="resnet18", train_subset=10_000,
                                    test_subset=1000, batch_size=256, pretrain_epochs=6,
                                    finetune_batch_size=256, finetune_epochs=2, train_steps=5,
                                    train_step_size=2 / 255, test_steps=10, eval_batch_size=500),
        cka=CkaBudget(cka_images=2000, batch_size=500),
        ledger=LedgerBudget(pool_per_class=None, test_per_class=None, supervised_steps=200),
        # Five methods, 3 epochs of all of CIFAR-10: about 6 minutes on a T4 (estimate), 4 of them
        # left for the capstone's own run.
        capstone=CapstoneBudget(train_subset=None, epochs=3, test_subset=2000,
                                ledger_scale="colab")),
    "full": Preset(
        name="full", backbone="resnet18", train_subset=None, test_subset=None,
        batch_size=512, epochs=200, sweep_epochs=200, temperatures=(0.05, 0.1, 0.2, 0.5, 1.0),
        warmup_epochs=10, knn_every=10, knn_k=200, compile=True, checkpoint_every=10,
        moco=MocoBudget(queue_size=4096, momentum=0.99, queue_sizes=(1024, 4096, 16384),
                        momenta=(0.0, 0.9, 0.99, 0.999)),
        hard_negatives=HardNegativesBudget(n_hardest=256, n_mix_negatives=256, n_mix_query=64,
                                           mixing_warmup_epochs=10),
        clae=ClaeBudget(train_subset=None, epochs=100, alphas=(0.5, 2.0), probe_images=512),
        cacr=CacrBudget(epochs=200, batch_size=256),
        sce=SceBudget(queue_size=4096, lams=(0.0, 0.25, 0.5, 0.75, 1.0),
                      temperature_momenta=(0.02, 0.05, 0.1, 0.2)),
        # The paper's grid, epochs (200 of pretraining, 200 of fine-tuning) and attacks on
        # ResNet-18 (theirs: ResNet-50), all of CIFAR-10: hours on a fast GPU.
        robustness=RobustnessBudget(backbone="resnet18", train_subset=None,
                                    test_subset=None, batch_size=512, pretrain_epochs=200,
                                    finetune_batch_size=512, finetune_epochs=200, train_steps=5,
                                    train_step_size=2 / 255, test_steps=40, eval_batch_size=500),
        cka=CkaBudget(cka_images=None, batch_size=500),
        ledger=LedgerBudget(pool_per_class=None, test_per_class=None, supervised_steps=2000),
        capstone=CapstoneBudget(train_subset=None, epochs=200, test_subset=None,
                                ledger_scale="full")),
}


def course_root() -> Path:
    """Where downloads (`data/`) and training runs (`runs/`) go by default: the repository when the
    package is installed from a checkout (`pip install -e .`), else the current folder (e.g.
    /content on Colab)."""
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
    """bf16 on GPUs with native bf16 (compute capability >= 8: A100, H100, L4), fp16 on older GPUs
    such as Colab's T4 (where `torch.cuda.is_bf16_supported()` says yes through slow emulation),
    None (float32) elsewhere."""
    if device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def no_autocast(device: torch.device | str):
    """A context that switches autocast off on `device`: losses, similarities and measurements that
    compare numbers run in float32 even inside a bf16/fp16 training step (half precision gives
    cosines to about 3 digits, which a small temperature then magnifies, and merges near-ties)."""
    return torch.autocast(torch.device(device).type, enabled=False)


MAX_EPOCHS_ENV_VAR = "CLCOURSE_MAX_EPOCHS"
MAX_TRAIN_IMAGES_ENV_VAR = "CLCOURSE_MAX_TRAIN_IMAGES"


def capped(value: int | None, env_var: str) -> int | None:
    """`value` at most the cap ``$env_var`` sets (`value` None, meaning "all", becomes the cap);
    `value` itself when the variable is unset or empty. Raises ValueError naming the variable when
    it is not an integer >= 1."""
    cap = os.environ.get(env_var, "").strip()
    if not cap:
        return value
    cap = require_int_at_least(env_var, int(cap) if cap.isdigit() else cap, 1)
    return cap if value is None else min(value, cap)


def get_preset(name: str | None = None) -> Preset:
    """The preset called `name`, else ``$CLCOURSE_PRESET``, else ``colab`` with a GPU and ``smoke``
    without; its ``epochs`` and ``sweep_epochs`` at most ``$CLCOURSE_MAX_EPOCHS`` and its
    ``train_subset`` at most ``$CLCOURSE_MAX_TRAIN_IMAGES`` when those are set."""
    chosen = (name or os.environ.get("CLCOURSE_PRESET")
              or ("colab" if torch.cuda.is_available() else "smoke"))
    key = chosen.strip().lower()
    if key not in PRESETS:
        source = "name" if name else "CLCOURSE_PRESET"
        raise ValueError(f"{source} must be one of {sorted(PRESETS)}, got {chosen!r}")
    preset = PRESETS[key]
    return preset.with_overrides(epochs=capped(preset.epochs, MAX_EPOCHS_ENV_VAR),
                                 sweep_epochs=capped(preset.sweep_epochs, MAX_EPOCHS_ENV_VAR),
                                 train_subset=capped(preset.train_subset, MAX_TRAIN_IMAGES_ENV_VAR))
