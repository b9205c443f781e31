#!/usr/bin/env python3
"""Gathered negatives and MoCo's shuffle BN, shown with two processes on the CPU (gloo):

    python tools/distributed_demo.py

The script starts two processes that meet through gloo, as torchrun's would on two GPUs. A global
batch of 8 images is shared between them: process r holds images r, r + 2, r + 4, r + 6 (the order
`clcourse.distributed` gives the global batch). Each part compares what the two processes compute
with what one process computes on all 8 images:

1. gathered negatives: SimCLR's InfoNCE on a process's own 4 images, and on the embeddings of both
   processes gathered with `clcourse.distributed.gather_with_grad` (more negatives per anchor, the
   one-process loss); a linear encoder trained through DistributedDataParallel gets the one-process
   gradient;
2. shuffle BN: MoCo's keys computed with `clcourse.distributed.encode_shuffled` (the global batch
   shuffled across the processes, encoded in two parts, unshuffled), which batch-norm groups each
   process normalises, and the keys of one process with split batch-norm in two groups and the same
   shuffle.
"""
from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clcourse.distributed import (  # noqa: E402
    data_parallel,
    encode_shuffled,
    gather,
    gather_objects,
    gather_with_grad,
)
from clcourse.losses import info_nce  # noqa: E402
from clcourse.models import use_split_batchnorm  # noqa: E402

PROCESSES, BATCH, TEMPERATURE = 2, 8, 0.5


class LinearEncoder(nn.Module):
    """A stand-in for backbone and projector: both views in one batch, as SimCLR's encode_views."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(6, 8)

    def training_step(self, views):
        z1, z2 = self.linear(torch.cat(views)).chunk(2)
        return info_nce(gather_with_grad(z1), gather_with_grad(z2), TEMPERATURE)


def key_encoder() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def say(*lines: str) -> None:
    if dist.get_rank() == 0:
        print(*lines, sep="\n", flush=True)


def gathered_negatives(rank: int) -> None:
    mine = slice(rank, None, PROCESSES)
    generator = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(2, BATCH, 6, generator=generator)     # features of the two views
    torch.manual_seed(0)
    encoder = LinearEncoder()
    one_process = copy.deepcopy(encoder)

    with torch.no_grad():
        z1, z2 = encoder.linear(torch.cat([x1[mine], x2[mine]])).chunk(2)
        alone = info_nce(z1, z2, TEMPERATURE)
    step = data_parallel(encoder, torch.device("cpu"))       # the training loop's DDP step
    loss = step(batch=(x1[mine], x2[mine]))
    loss.backward()
    z1, z2 = one_process.linear(torch.cat([x1, x2])).chunk(2)   # one process, no gathering
    reference = info_nce(z1, z2, TEMPERATURE)
    reference.backward()
    losses = gather_objects(loss.item())
    images = list(range(BATCH))[mine]
    gradient_gap = (encoder.linear.weight.grad - one_process.linear.weight.grad).abs().max()
    say("1. Gathered negatives (SimCLR's InfoNCE, temperature 0.5)",
        f"   process 0 holds images {images}: alone, each of its {len(images)} x 2 anchors meets "
        f"{2 * len(images) - 2} negatives, loss {alone:.4f}",
        f"   gathered from both processes: each anchor meets {2 * BATCH - 2} negatives, loss "
        f"{losses[0]:.4f} in process 0, {losses[1]:.4f} in process 1",
        f"   one process on all {BATCH} images: loss {reference:.4f}",
        f"   the encoder's gradient after DistributedDataParallel's average over the processes: "
        f"max difference from one process's {gradient_gap:.1e}")
    dist.barrier()


def shuffle_bn(rank: int) -> None:
    images = torch.rand(BATCH, 3, 5, 5, generator=torch.Generator().manual_seed(2))
    encoder = key_encoder().train()
    one_process = use_split_batchnorm(copy.deepcopy(encoder), PROCESSES)

    torch.manual_seed(3)                      # process 0 draws the shuffle
    keys = encode_shuffled(encoder, images[rank::PROCESSES])
    # Which images each process normalised together: the shuffle, as process 0 drew it.
    torch.manual_seed(3)
    order = torch.randperm(BATCH)
    groups = [sorted(order[r::PROCESSES].tolist()) for r in range(PROCESSES)]
    torch.manual_seed(3)                      # one process: the same shuffle, two split groups
    shuffle = torch.randperm(BATCH)
    expected = one_process(images[shuffle])[torch.argsort(shuffle)]
    gap = (gather(keys) - expected).abs().max()
    say("2. Shuffle BN (MoCo's keys)",
        f"   queries: process 0 normalises images {list(range(0, BATCH, 2))} together, "
        f"process 1 images {list(range(1, BATCH, 2))}",
        f"   keys: the global batch shuffled across the processes; process 0 normalises images "
        f"{groups[0]} together, process 1 images {groups[1]}",
        "   so a key is normalised with other images than its query, and every process ends with "
        "the keys of its own images",
        f"   one process with split batch-norm in {PROCESSES} groups and the same shuffle: max "
        f"difference {gap:.1e}")


def process(rank: int, store: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=PROCESSES, timeout=timedelta(seconds=60))
    say(f"Two processes (gloo), a global batch of {BATCH} images: process r holds images r, r + 2, "
        "r + 4, r + 6.", "")
    gathered_negatives(rank)
    say("")
    shuffle_bn(rank)
    dist.destroy_process_group()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rank is not None:
        process(args.rank, args.store)
        return 0
    with tempfile.TemporaryDirectory() as folder:
        store = str(Path(folder) / "store")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        processes = [subprocess.Popen([sys.executable, __file__, "--rank", str(rank), "--store",
                                       store], env=env) for rank in range(PROCESSES)]
        codes = [p.wait(timeout=300) for p in processes]
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
