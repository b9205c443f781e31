"""Self-supervised (and supervised) methods, one file per family. A method is a small object that
says how a batch of images becomes a loss (`base.Method`); one training loop
(`clcourse.train.train`) serves every method.

    method = build_method("hcl", build_backbone("small_cnn"), beta=0.5)

| file | methods |
|---|---|
| `base.py` | `Method`, `ContrastiveMethod` (loss of the views' embeddings), `Batch`, `StepOutput` |
| `simclr.py` | SimCLR and its loss variants DCL and HCL; multi-view SimCLR |
| `moco.py` | MoCo v2 (momentum encoder, queue) and MoCHi (hard negative mixing) |
| `sce.py` | SCE: a soft target over the key and the queue, on MoCo v2 |
| `clae.py` | CLAE: adversarial examples as extra positives, on the SimCLR family |
| `cacr.py` | CACR: attraction and repulsion weighted over many views |
| `supervised.py` | SupCon, supervised baseline, adversarial pretraining, linear-head fine-tuning |
"""
from __future__ import annotations

import torch.nn as nn

from .base import (
    Batch,
    ContrastiveMethod,
    Method,
    StepOutput,
    describe,
    describe_module,
    mean_view_similarity,
)
from .cacr import CACR
from .clae import CLAE, ClaeOutput, clae_objective
from .moco import MoCHi, MoCo, moco_step, ring_buffer_enqueue, update_key_encoder
from .sce import SCE
from .simclr import DCL, HCL, MultiViewSimCLR, SimCLR
from .supervised import (
    DEFINITIONS,
    FINE_TUNING,
    PAPER_STEP_SIZE,
    PAPER_TEMPERATURE,
    SCHEMES,
    TRAIN_EPSILON,
    TRAIN_STEP_SIZE,
    TRAIN_STEPS,
    AdversarialPretraining,
    FineTune,
    SupCon,
    Supervised,
    paper_contrastive_loss,
    require_definition,
    scheme_of,
    unaugmented,
)

__all__ = ["METHODS", "build_method", "Batch", "StepOutput", "Method", "ContrastiveMethod",
           "describe", "describe_module", "mean_view_similarity", "SimCLR", "DCL", "HCL",
           "MultiViewSimCLR", "MoCo", "MoCHi", "SCE", "CLAE", "ClaeOutput", "clae_objective",
           "CACR", "SupCon", "Supervised", "AdversarialPretraining", "FineTune", "SCHEMES",
           "FINE_TUNING", "TRAIN_EPSILON", "TRAIN_STEPS", "TRAIN_STEP_SIZE", "DEFINITIONS",
           "PAPER_STEP_SIZE", "PAPER_TEMPERATURE", "require_definition", "scheme_of",
           "paper_contrastive_loss", "unaugmented",
           "update_key_encoder", "ring_buffer_enqueue", "moco_step"]

# Every method `build_method` and the benchmarks know, by name. (`FineTune` is not here: it is built
# on a pretrained encoder, not on a backbone.)
METHODS: dict[str, type[Method]] = {
    "simclr": SimCLR, "dcl": DCL, "hcl": HCL, "moco": MoCo, "mochi": MoCHi, "sce": SCE,
    "clae": CLAE, "simclr_multiview": MultiViewSimCLR, "cacr": CACR, "supcon": SupCon,
    "supervised": Supervised, "adversarial": AdversarialPretraining,
}


def build_method(name: str, backbone: nn.Module, **options) -> Method:
    """A method by name (see METHODS) around `backbone`, with its own defaults unless
    `options` say otherwise."""
    if name not in METHODS:
        raise ValueError(f"method name must be one of {sorted(METHODS)}, got {name!r}")
    return METHODS[name](backbone, **options)
