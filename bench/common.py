"""Shared set-up for the benchmarks: the device and the sizes a command line chooses, data on the
device, timing that waits for the GPU, peak memory, the device's description, and CIFAR-10 unpacked
from a JPEG pack."""
from __future__ import annotations

import argparse
import dataclasses
import functools
import io
import os
import pickle
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from clcourse.data import load_dataset
from clcourse.presets import get_device


def bench_device(smoke: bool) -> torch.device:
    """The CPU for a smoke run (a quick check of the script itself), else this machine's
    device (`get_device`)."""
    return torch.device("cpu") if smoke else get_device()


def sizes_from_args(sizes, args: argparse.Namespace):
    """`sizes` (a dataclass) with every field that the command line sets (an argument of that name,
    not None) replaced by its value."""
    given = {field.name: getattr(args, field.name, None) for field in dataclasses.fields(sizes)}
    return dataclasses.replace(sizes, **{name: value for name, value in given.items()
                                         if value is not None})


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


def available_cpus() -> int:
    """CPU cores this process may run on (a container's affinity mask, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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


def device_summary(device: torch.device) -> dict:
    """What a results file records about the machine: name, memory, compute
    capability, CPUs, torch."""
    summary = {"type": device.type, "torch": torch.__version__, "cpus": available_cpus()}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        summary.update(name=properties.name, memory_gb=round(properties.total_memory / 1e9, 1),
                       capability=f"{properties.major}.{properties.minor}")
    else:
        summary.update(name="CPU", threads=torch.get_num_threads())
    return summary


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device) -> float | None:
    """The most GPU memory tensors held since the last `reset_peak_memory` (None on a CPU)."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 1e9, 2)


@contextmanager
def compile_backend(backend: str | None):
    """Make `torch.compile` use `backend` inside the block (None: leave it alone). The CPU smoke run
    captures graphs with "aot_eager" (Dynamo and AOTAutograd, as on a GPU, without inductor's C++
    build, which takes about 40 s per graph on 2 cores); code that calls torch.compile itself
    (`train`) follows."""
    if backend is None:
        yield
        return
    original = torch.compile
    torch.compile = functools.partial(original, backend=backend)
    try:
        yield
    finally:
        torch.compile = original


# ---------------------------------------------------------------------- CIFAR-10 from a JPEG pack

def _decode_jpegs(chunk: list[bytes]) -> np.ndarray:
    from PIL import Image
    return np.stack([np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")) for jpeg in chunk])


def _decode_split(pack, split: str, workers: int) -> tuple[np.ndarray, np.ndarray]:
    raw, offsets = pack[f"{split}_bytes"], pack[f"{split}_offsets"]
    jpegs = [raw[offsets[i]:offsets[i + 1]].tobytes() for i in range(len(offsets) - 1)]
    chunks = [jpegs[i:i + 2000] for i in range(0, len(jpegs), 2000)]
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(min(workers, len(chunks))) as pool:
            images = np.concatenate(list(pool.map(_decode_jpegs, chunks)))
    else:
        images = np.concatenate([_decode_jpegs(chunk) for chunk in chunks])
    return images, pack[f"{split}_labels"].astype(np.int64)


def _write_batch(path: Path, name: str, images: np.ndarray, labels: np.ndarray) -> None:
    batch = {"batch_label": name, "labels": [int(label) for label in labels],
             "data": images.transpose(0, 3, 1, 2).reshape(len(images), -1),
             "filenames": [f"{name}_{i:05d}.png" for i in range(len(images))]}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=4)


def unpack_cifar10(pack: str | Path, root: str | Path, workers: int | None = None) -> Path:
    """Write CIFAR-10 from a JPEG pack (`cifar10-jpeg.npz`) into
    `root/cifar-10-batches-py/`, in the layout of the official CIFAR-10 batches (the training
    images in a fixed shuffle, seed 0, five batches of 10,000), decoding on `workers` processes
    (default: every core). Returns `root`.

    `bench/suite.py --pack PATH` calls this to make its data root from a pack the user
    provides."""
    pack, root = Path(pack), Path(root)
    if not pack.is_file():
        raise FileNotFoundError("pack must be the CIFAR-10 JPEG pack (cifar10-jpeg.npz), got "
                                f"{str(pack)!r}: no such file")
    folder = root / "cifar-10-batches-py"
    if (folder / "test_batch").is_file():
        return root
    folder.mkdir(parents=True, exist_ok=True)
    workers = workers or available_cpus()
    with np.load(pack) as data:
        train_images, train_labels = _decode_split(data, "train", workers)
        test_images, test_labels = _decode_split(data, "test", workers)
        classes = [str(name) for name in data["classes"]]
    order = np.random.default_rng(0).permutation(len(train_images))
    train_images, train_labels = train_images[order], train_labels[order]
    parts = np.array_split(np.arange(len(train_images)), 5)
    for b, part in enumerate(parts):
        _write_batch(folder / f"data_batch_{b + 1}", f"training batch {b + 1} of 5",
                     train_images[part], train_labels[part])
    meta = {"label_names": classes, "num_cases_per_batch": len(parts[0]), "num_vis": 3072}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=4)
    # Written last: marks the folder "done".
    _write_batch(folder / "test_batch", "testing batch 1 of 1", test_images, test_labels)
    return root
