"""Shared set-up for the benchmarks: data on the device, a backbone, timing that waits for the GPU."""
from __future__ import annotations

import time

import torch

from clcourse.data import load_dataset


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    """Seconds `fn()` takes, with the GPU's queue drained before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def cifar10_or_synthetic(device: torch.device, subset: int | None, train: bool = True):
    """CIFAR-10 from $CLCOURSE_DATA / data/ when it is there, else random images of the same shape
    (throughput does not depend on the pixels)."""
    try:
        return load_dataset("cifar10", train=train, subset=subset, device=device, download=False)
    except FileNotFoundError:
        n = subset or (50_000 if train else 10_000)
        generator = torch.Generator().manual_seed(0)
        print(f"CIFAR-10 not found: using {n} random images for timing")
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
        return images.to(device), (torch.arange(n) % 10).to(device)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return f"CPU, {torch.get_num_threads()} threads (torch {torch.__version__})"
