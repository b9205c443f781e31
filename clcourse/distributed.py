"""Training in several processes (torchrun and DistributedDataParallel): what each process holds,
and how the losses and MoCo see the whole global batch.

    torchrun --nproc_per_node=8 -m clcourse.run --method simclr --dataset cifar10 --preset full

`clcourse.run` starts the process group (`setup`: NCCL with one GPU per process, gloo on CPUs) and
calls the same `clcourse.train.train` as a notebook. In a single process nothing here does anything:
every function returns its input unchanged, at no cost, so a notebook computes what it always has.

With N processes:

- data: each process holds its own shard of the training set (`shard`), draws its batches and
  views with its own generators (`process_seed`), and holds B / N images of each global batch of B;
- the global batch is the processes' batches interleaved: row k of process r is row k N + r, the
  position that split batch-norm gives its group r (every gather returns this order);
- gathered negatives: the contrastive losses (`ContrastiveMethod.contrastive_loss`) gather the
  embeddings of all N processes (`gather_with_grad`) and compute the loss of the global batch, the
  same number on every process, the loss of one process holding the global batch;
- gradients: DistributedDataParallel averages the N processes' gradients. A loss that is a mean
  over the local batch (MoCo's queries, cross-entropy) needs nothing more: the average of N local
  means is the global mean. A gathered loss is the global loss on every process; the gather's
  backward multiplies the gradient of the local rows by N, so that the average over processes is
  the sum over processes, the one-process gradient;
- MoCo's shuffle BN for real (`encode_shuffled`): the key views of the global batch are shuffled
  across processes before the key encoder sees them, then unshuffled; the keys are gathered before
  they are enqueued (`gather`), so all N processes hold the same queue;
- batch-norm: each process normalises its own batch, unless `use_sync_batchnorm` (GPUs only)
  makes it use the statistics of the global batch; running statistics are averaged over the
  processes before every evaluation and checkpoint (`average_batchnorm_statistics`);
- the run folder: only the first process writes; it reads a checkpoint and hands it, or the error
  it met, to the others (`from_first_process`);
- a process that dies or hangs stops the others at their next collective operation, after at most
  the process group's timeout (`setup`), with `ProcessFailure` naming what happened.
"""
from __future__ import annotations

import inspect
import itertools
import os
from collections.abc import Callable
from datetime import timedelta
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn as nn

from .presets import get_device

__all__ = ["World", "world", "is_distributed", "process_seed", "setup", "teardown",
           "DEFAULT_TIMEOUT_S", "gather", "gather_with_grad", "gather_chunks", "chunk",
           "encode_shuffled", "sum_over_processes", "mean_over_processes", "max_over_processes",
           "from_first_process", "gather_objects", "broadcast_module_state",
           "average_batchnorm_statistics", "use_sync_batchnorm", "data_parallel", "shard",
           "ProcessFailure", "is_collective_failure"]

# How long a collective operation waits for the other processes before it fails: long enough for a
# checkpoint that the first process writes while the others wait, short enough that a dead or stuck
# process stops the job instead of hanging it.
DEFAULT_TIMEOUT_S = 600.0


class World(NamedTuple):
    """This process's place among the training processes: `rank` in [0, `size`)."""
    rank: int
    size: int


def world() -> World:
    """(rank, size) of the process group, or (0, 1) when there is none."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World(0, 1)


def is_distributed() -> bool:
    """True when this process trains with others (a process group of two or more)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def process_seed(seed: int, rank: int) -> int:
    """The seed of process `rank`'s own generators in a run seeded with `seed`: `seed` itself for
    process 0 (so that one process draws what it always has), distinct for every other process."""
    return seed + (rank << 32)


class ProcessFailure(RuntimeError):
    """A collective operation with the other processes failed: one of them died or hangs."""


def is_collective_failure(error: BaseException) -> bool:
    """Whether `error` is a failed collective operation (a peer that closed its connection, a
    timeout): torch raises them as DistError or, from gloo and NCCL, as a RuntimeError that names
    the backend."""
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        marker in text for marker in ("gloo", "NCCL", "ProcessGroup", "c10d"))


# ---------------------------------------------------------------- the process group

def setup(timeout_s: float = DEFAULT_TIMEOUT_S) -> torch.device:
    """Join the process group that torchrun describes (its RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR and MASTER_PORT variables) and return this process's device: with CUDA, NCCL and
    GPU `LOCAL_RANK`; without, gloo and the CPU. A collective operation that waits longer than
    `timeout_s` seconds for another process fails (`ProcessFailure` in `train`).

    Without torchrun's variables (a plain `python`) or with one process, nothing is started and
    the device is `clcourse.presets.get_device()`, as in a notebook."""
    if dist.is_available() and dist.is_initialized():
        return _local_device()
    if int(os.environ.get("WORLD_SIZE", 1)) < 2:
        return get_device()
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be a number of seconds > 0, got {timeout_s!r}")
    timeout = timedelta(seconds=timeout_s)
    if torch.cuda.is_available():
        device = _local_device()
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=timeout, device_id=device)
    else:
        dist.init_process_group("gloo", timeout=timeout)
        device = torch.device("cpu")
    return device


def _local_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def teardown() -> None:
    """Leave the process group (if any), all processes together: none closes its connections
    while another still sends on them (gloo aborts the process then)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


# ---------------------------------------------------------------- gathering

# torch >= 2.13 names the gather into one tensor all_gather_single; older versions
# all_gather_into_tensor (now deprecated).
_all_gather_single = (getattr(dist, "all_gather_single", None)
                      or getattr(dist, "all_gather_into_tensor", None))


def _all_gather_stacked(x: torch.Tensor) -> torch.Tensor:
    """The tensors `x` of all processes, stacked in rank order: [N, *x.shape]."""
    size = dist.get_world_size()
    out = x.new_empty((size * x.shape[0], *x.shape[1:]))
    _all_gather_single(out, x.contiguous())
    return out.view(size, *x.shape)


def _all_gather(x: torch.Tensor) -> torch.Tensor:
    """The rows of all processes in the order of the global batch: row k of process r at k N + r
    (the positions that split batch-norm gives its group r of N)."""
    return _all_gather_stacked(x).transpose(0, 1).reshape(-1, *x.shape[1:])


def gather(x: torch.Tensor) -> torch.Tensor:
    """The tensors `x` [b, ...] of all processes as one global batch [N b, ...] (row k of process r
    at k N + r), without gradient (keys, labels, image indices). `x` itself in one process."""
    if not is_distributed():
        return x
    with torch.no_grad():
        return _all_gather(x)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward keeps the gradient of this process's rows, times N (see the
    module's docstring): no communication in the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.size = dist.get_rank(), dist.get_world_size()
        return _all_gather(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad[ctx.rank::ctx.size] * ctx.size


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """The embeddings `x` [b, ...] of all processes as one global batch [N b, ...] (row k of process
    r at k N + r), with gradient to this process's own rows. A loss of the result is the loss of the
    global batch, equal on every process; its gradient, once DistributedDataParallel has averaged it
    over the processes, is the gradient of one process holding the whole batch. `x` itself in one
    process."""
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


def chunk(count: int) -> slice:
    """This process's contiguous part of `count` items (sizes differ by at most one), for work
    that is split over the processes and then gathered with `gather_chunks`."""
    rank, size = world()
    bounds = [count * r // size for r in range(size + 1)]
    return slice(bounds[rank], bounds[rank + 1])


@torch.no_grad()
def gather_chunks(x: torch.Tensor, count: int) -> torch.Tensor:
    """The results `x` of every process's `chunk(count)`, concatenated in order: [count, ...]."""
    if not is_distributed():
        return x
    size = dist.get_world_size()
    bounds = [count * r // size for r in range(size + 1)]
    longest = max(b - a for a, b in zip(bounds, bounds[1:]))
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[:len(x)] = x
    everything = _all_gather_stacked(padded)
    return torch.cat([everything[r, :bounds[r + 1] - bounds[r]] for r in range(size)])


@torch.no_grad()
def encode_shuffled(encode: Callable[[torch.Tensor], torch.Tensor],
                    x: torch.Tensor) -> torch.Tensor:
    """MoCo's shuffle BN across processes: `encode` (the key encoder, in training mode) of this
    process's images `x` [b, ...], computed on a random b of the N b images of the global batch, so
    that a key's batch statistics come from another subset of the batch than its query's. The
    images are gathered into the global batch (row k of process r at k N + r), shuffled by one
    permutation that process 0 draws, encoded by the processes (the image at shuffled position q by
    process q mod N), gathered and put back in order; this process keeps its own images' encodings.

    One process holding the global batch, with its batch-norm split into N times as many groups,
    computes the same encodings from the same permutation (`MoCo.keys`): split batch-norm puts
    position q in group q mod (its number of groups)."""
    rank, size = dist.get_rank(), dist.get_world_size()
    everything = _all_gather(x)
    order = (torch.randperm(len(everything), device=x.device) if rank == 0
             else torch.empty(len(everything), dtype=torch.long, device=x.device))
    dist.broadcast(order, 0)
    encoded = _all_gather(encode(everything[order[rank::size]]))
    restored = torch.empty_like(encoded)
    restored[order] = encoded             # encoded[q] is the encoding of everything[order[q]]
    return restored[rank::size]


def sum_over_processes(x: torch.Tensor) -> torch.Tensor:
    """The sum of `x` over the processes (a copy); `x` itself in one process."""
    if not is_distributed():
        return x
    total = x.clone()
    dist.all_reduce(total)
    return total


def mean_over_processes(x: torch.Tensor) -> torch.Tensor:
    """The mean of `x` over the processes (a copy); `x` itself in one process."""
    if not is_distributed():
        return x
    return sum_over_processes(x) / dist.get_world_size()


def max_over_processes(x: torch.Tensor) -> torch.Tensor:
    """The largest `x` over the processes (a copy); `x` itself in one process."""
    if not is_distributed():
        return x
    largest = x.clone()
    dist.all_reduce(largest, op=dist.ReduceOp.MAX)
    return largest


def gather_objects(value) -> list:
    """`value` (any picklable object) of every process, in rank order; [value] in one process."""
    if not is_distributed():
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def from_first_process(fn: Callable):
    """`fn()` computed by process 0 only, its result given to every process; when `fn` raises,
    every process raises that error (so that none waits for the others). What reads and writes
    the run folder runs this way: the other processes need no shared file system. `fn()` in one
    process."""
    if not is_distributed():
        return fn()
    payload = [None]
    if dist.get_rank() == 0:
        try:
            payload = [(True, fn())]
        except Exception as error:    # handed to every process, raised there
            payload = [(False, error)]
    dist.broadcast_object_list(payload, src=0)
    succeeded, value = payload[0]
    if not succeeded:
        raise value
    return value


# ---------------------------------------------------------------- the model

@torch.no_grad()
def broadcast_module_state(module: nn.Module) -> None:
    """Every parameter and buffer of `module` set to process 0's (a MoCo queue drawn at random,
    batch-norm statistics), in place."""
    if not is_distributed():
        return
    for tensor in module.state_dict().values():
        sent = tensor.contiguous()        # a channels_last weight travels as a contiguous copy
        dist.broadcast(sent, 0)
        if sent is not tensor:
            tensor.copy_(sent)


@torch.no_grad()
def average_batchnorm_statistics(module: nn.Module) -> None:
    """The running mean and variance of every batch-norm layer of `module` set to their mean over
    the processes (each process estimated them on its own batches), in one all_reduce."""
    if not is_distributed():
        return
    buffers = [buffer for layer in module.modules()
               if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.track_running_stats
               for buffer in (layer.running_mean, layer.running_var)]
    if not buffers:
        return
    flat = mean_over_processes(torch.cat([buffer.flatten().float() for buffer in buffers]))
    for buffer, values in zip(buffers, flat.split([buffer.numel() for buffer in buffers])):
        buffer.copy_(values.view_as(buffer))


_PLAIN_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def use_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace (in place) every plain batch-norm layer of `module` by torch's SyncBatchNorm with the
    same parameters and statistics: each normalises with the statistics of the global batch, as
    one process would. Split batch-norm (MoCo's shuffle BN on one device) stays as it is: its point
    is statistics that are not shared. SyncBatchNorm runs on GPUs only."""
    for name, child in module.named_children():
        if type(child) in _PLAIN_BATCHNORM:
            synced = nn.SyncBatchNorm(child.num_features, eps=child.eps, momentum=child.momentum,
                                      affine=child.affine,
                                      track_running_stats=child.track_running_stats)
            synced.load_state_dict(child.state_dict())
            synced.to(next(itertools.chain(child.parameters(), child.buffers())).device)
            synced.train(child.training)
            setattr(module, name, synced)
        else:
            use_sync_batchnorm(child)
    return module


class _TrainingStep(nn.Module):
    """A method whose forward is its training step, for DistributedDataParallel (which
    synchronises gradients only for what runs through its forward)."""

    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method

    def forward(self, batch):
        return self.method.training_step(batch)


# torch >= 2.13 replaces broadcast_buffers=False (deprecated) by forward_sync_buffers=False.
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(
                       nn.parallel.DistributedDataParallel).parameters
                   else {"broadcast_buffers": False})


def data_parallel(method: nn.Module, device: torch.device) -> nn.Module:
    """`method.training_step` as a DistributedDataParallel module: `step(batch)` returns the step's
    output, and the backward pass of its loss averages the gradients over the processes.

    Buffers are not broadcast at every step: the MoCo queue is the same on every process by
    construction, and batch-norm statistics are averaged before they are read
    (`average_batchnorm_statistics`)."""
    broadcast_module_state(method)
    device_ids = [device] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(_TrainingStep(method), device_ids=device_ids,
                                               **_NO_BUFFER_SYNC)


# ---------------------------------------------------------------- data

def shard(count: int, seed: int) -> torch.Tensor | None:
    """The positions (sorted) of this process's shard of a training set of `count` images: a random
    `count // N` of them, drawn from `seed` (with a generator of its own, apart from those of the
    batches and views), disjoint from every other process's (the last `count mod N` images of the
    draw are left out). None in one process (all of them)."""
    rank, size = world()
    if size == 1:
        return None
    per_process = count // size
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed + 3))
    return order[rank * per_process:(rank + 1) * per_process].sort().values
