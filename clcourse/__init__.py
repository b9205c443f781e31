"""clcourse: the library behind an open course on hard negatives in contrastive learning.

Every method the notebooks teach (SimCLR's InfoNCE, MoCo's queue and momentum encoder, debiased and
hard-negative losses such as DCL, HCL and MoCHi) is written from scratch here, small enough to read next
to the paper, vectorised so that it runs fast on a GPU and still finishes on a CPU.

Import the submodules you need, for example ``from clcourse.losses import info_nce``.
"""

__version__ = "0.1.0"
