"""clcourse: the library behind an open course on hard negatives in contrastive learning.

Every method the notebooks teach is written from scratch here, small enough to read next to the
paper and vectorised so that it runs fast on a GPU and still finishes on a CPU: SimCLR's InfoNCE and
the geometry of its embeddings (notebooks 01-02), MoCo's queue and momentum encoder (03), the losses
that change how negatives count, DCL, HCL and MoCHi (04), adversarial examples as positives, CLAE
(05), attraction and repulsion over many views, CACR (06), soft targets, SCE (07), the robustness of
contrastive, supervised-contrastive and supervised encoders (08) and what their layers represent,
CKA (09); and what the course measured, with a capstone run compared with the results ledger (10).

Import the submodules you need, for example ``from clcourse.losses import info_nce``:

| module | what is in it |
|---|---|
| `data`, `augment` | datasets as uint8 tensors on the device; per-sample augmentation there |
| `models` | ResNet-18 (CIFAR stem), a small CNN, projection heads, split and dual batch-norm |
| `losses` | every loss as a pure function with its equation |
| `methods` | one file per method family: how a batch becomes a loss (`build_method`) |
| `train`, `runs`, `presets` | the one training loop; the run store (resume); the budgets |
| `evaluate`, `negatives` | kNN, linear probe, alignment, uniformity; hard and false negatives |
| `diagnostics`, `cka` | what a queue, a soft target or an attack does; layer-wise CKA |
| `attacks`, `robustness` | FGSM and PGD; CL-Robustness' threat models and fine-tuning |
| `viz`, `widgets` | the plots and the interactive explorers |
| `checks` | the exercise checkers |
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
