"""One of the training processes that tests/test_distributed.py starts (gloo, on the CPU), and what
the tests compare it with in one process:

    python -c "import sys, distributed_worker; distributed_worker.main(*sys.argv[1:])" \\
        SCENARIO RANK PROCESSES PORT_FILE OUT [MOMENT]

(imported, not run as __main__: a run's configuration names its augmentation by its module).
PORT_FILE is where process 0 writes the port of the store through which the processes meet, OUT
the folder each writes its results to.

Scenarios:
- "steps": one optimisation step of each method in STEP_METHODS on this process's rows of the
  global batch `step_batch` (rows r, r + N, ... for process r), then the batch-norm statistics
  averaged over the processes; writes `<method>_<rank>.pt` (loss, state).
- "train": `short_moco_run` into OUT/run, killed at MOMENT ("mid-epoch": process 0's first step of
  epoch 3, when every process prints "ready" and waits for the kill) or to the end ("none"); process
  0 writes OUT/result.pt (history and weights).
- "dies" / "hangs": the same run, in which process 1 exits (or sleeps) at its third step; the
  collective timeout is 3 s.
"""
from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from helpers import fit, make_images, noisy_views, some_labels, tiny_method

import clcourse.train as training
from clcourse.distributed import (
    ProcessFailure,
    average_batchnorm_statistics,
    data_parallel,
    teardown,
)
from clcourse.methods import Batch, MoCo
from clcourse.train import optimisation_step

# Methods whose step must equal one process's on the global batch. Each process normalises its own
# batch (SyncBatchNorm is for GPUs), so the others are compared without batch-norm (CLAE without its
# dual batch-norm, adversarial SimCLR's attack from delta = 0, not from a random start); MoCo keeps
# its split batch-norm, which one process reproduces with twice the splits.
STEP_METHODS = ("simclr", "dcl", "hcl", "supcon", "simclr_multiview", "cacr", "clae", "adversarial",
                "supervised", "moco")
GLOBAL_BATCH = 16
TIMEOUT_S = 3.0            # how long a collective operation waits for the other processes
MEETING_TIMEOUT_S = 60.0   # and for them to start: importing torch takes seconds on a busy machine


def without_batchnorm(module: nn.Module) -> nn.Module:
    """Every batch-norm layer of `module` replaced by the identity (in place)."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        else:
            without_batchnorm(child)
    return module


def step_method(name: str, bn_splits: int = 2):
    """The tiny method `name` (MoCo with `bn_splits` batch-norm splits: 2 in each of two processes
    are 4 in one)."""
    if name == "moco":
        return tiny_method("moco", bn_splits=bn_splits, queue_size=40)
    options = {"simclr_multiview": {"num_views": 3}, "cacr": {"num_views": 3},
               "clae": {"dual_batchnorm": False}, "adversarial": {"random_start": False}}
    return without_batchnorm(tiny_method(name, **options.get(name, {})))


def step_batch(method) -> Batch:
    """The global batch: GLOBAL_BATCH of `make_images()`, noisy views of them, labels."""
    images = make_images()[:GLOBAL_BATCH]
    generator = torch.Generator().manual_seed(3)
    views = tuple(noisy_views(images, generator) for _ in method.view_recipes)
    labels = some_labels(GLOBAL_BATCH) if method.requires_labels else None
    return Batch(views, images, labels, torch.arange(GLOBAL_BATCH) * 3)


def rows_of(batch: Batch, rank: int, processes: int) -> Batch:
    """Process `rank`'s rows of the global batch."""
    part = slice(rank, None, processes)
    return Batch(tuple(v[part] for v in batch.views), batch.images[part],
                 batch.labels[part] if batch.labels is not None else None, batch.index[part])


def take_step(method, batch: Batch, step_fn) -> torch.Tensor:
    """One step of the training loop's optimiser (SGD with momentum and weight decay) through
    `step_fn`, from a fixed random state; returns the loss."""
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5,
                                momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    method.train()
    method.on_train_start(48, GLOBAL_BATCH)
    torch.manual_seed(7)
    return optimisation_step(method, step_fn, batch, optimizer, scaler, None).loss.detach()


def tiny_moco():
    return tiny_method("moco", bn_splits=2, queue_size=32)


def short_moco_run(run_dir, method=None, **options):
    """Three epochs of a tiny MoCo on `make_images()` (48 images), global batch 16 (one epoch of
    warm-up), kNN at the end, checkpoints every epoch into `run_dir`."""
    method = method or tiny_moco()
    settings = dict(epochs=3, batch_size=16, lr=0.1, warmup_epochs=1, progress=False, log_every=2,
                    knn_every=3, knn_k=4, checkpoint_dir=run_dir, seed=5)
    images = make_images()
    knn_data = (images, some_labels(len(images)), images[:12], some_labels(12))
    return method, fit(method, images, knn_data=knn_data, **{**settings, **options})


def _stop_process_1_at_third_step(how: str) -> None:
    real_step, calls = training.optimisation_step, {"n": 0}

    def step(*args, **kwargs):
        calls["n"] += 1
        if dist.get_rank() == 1 and calls["n"] == 3:
            if how == "dies":
                os._exit(1)
            time.sleep(60)
        return real_step(*args, **kwargs)
    training.optimisation_step = step


def _wait_for_the_kill_in_epoch_3(method: MoCo) -> None:
    real_end, calls = method.on_step_end, {"n": 0}

    def on_step_end(batch, output):
        real_end(batch, output)
        calls["n"] += 1
        if calls["n"] == 7:      # 3 steps per epoch: the first step of epoch 3
            print("ready", flush=True)
            time.sleep(120)
            raise SystemExit("not killed")
    method.on_step_end = on_step_end


def meet(rank: int, processes: int, port_file: Path) -> dist.Store:
    """The store through which the processes meet, as under torchrun: a TCP store that process 0
    serves on a free port of the loopback; it writes the port into `port_file` for the others."""
    timeout = timedelta(seconds=MEETING_TIMEOUT_S)
    if rank == 0:
        store = dist.TCPStore("127.0.0.1", 0, processes, is_master=True, timeout=timeout,
                              wait_for_workers=False)
        written = port_file.with_suffix(".tmp")
        written.write_text(str(store.port))
        written.replace(port_file)       # the others never read half a number
        return store
    deadline = time.monotonic() + MEETING_TIMEOUT_S
    while not port_file.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"process 0 wrote no port into {port_file} in {MEETING_TIMEOUT_S} s")
        time.sleep(0.05)
    return dist.TCPStore("127.0.0.1", int(port_file.read_text()), processes, is_master=False,
                         timeout=timeout)


def main(scenario: str, rank: str, processes: str, port_file: str, out: str,
         moment: str = "none"):
    rank, processes, out = int(rank), int(processes), Path(out)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=meet(rank, processes, Path(port_file)), rank=rank,
                            world_size=processes, timeout=timedelta(seconds=TIMEOUT_S))
    try:
        if scenario == "steps":
            for name in STEP_METHODS:
                method = step_method(name)
                batch = rows_of(step_batch(method), rank, processes)
                loss = take_step(method, batch, data_parallel(method, torch.device("cpu")))
                average_batchnorm_statistics(method)     # as the training loop does every epoch
                torch.save({"loss": loss, "state": method.state_dict()}, out / f"{name}_{rank}.pt")
        elif scenario == "train":
            method = tiny_moco()
            if moment == "mid-epoch":
                _wait_for_the_kill_in_epoch_3(method)
            method, history = short_moco_run(out / "run", method)
            if rank == 0:
                torch.save({"history": history, "state": method.state_dict()}, out / "result.pt")
        elif scenario in ("dies", "hangs"):
            _stop_process_1_at_third_step(scenario)
            try:
                short_moco_run(None)
            except ProcessFailure as error:
                print(f"ProcessFailure: {error}", file=sys.stderr, flush=True)
                os._exit(3)      # the process group cannot be closed with a dead peer
        else:
            raise SystemExit(f"unknown scenario {scenario!r}")
    finally:
        if scenario not in ("dies", "hangs"):
            teardown()      # all processes together, as clcourse.run's processes leave

