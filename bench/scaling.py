"""Scaling over processes: the training loop's images/s and s/epoch in 1 process and in N
(torchrun, DistributedDataParallel), and the efficiency N-process throughput / (N x 1-process
throughput).

    python bench/scaling.py                   # SimCLR, ResNet-18, global batch 4,096 on every GPU
    python bench/scaling.py --processes 4 --batch-size 2048 --compile
    python bench/scaling.py --smoke           # 1 vs 2 gloo processes on the CPU, a small CNN

Weak scaling: every process trains on the same batch of B / N images, so the 1-process run's batch
is B / N and the N-process run's (global) batch B. Each run is `clcourse.train.train` under
`torchrun --standalone` on CIFAR-10 (random images of its shape where it is missing: the speed does
not depend on the pixels), for `--epochs` epochs without kNN or checkpoints; its throughput is the
fastest epoch after the first (which pays for compilation and cuDNN's autotuning). Images/s count
every view (two per image for SimCLR), as `bench/throughput.py` does; s/epoch is for the 50,000
CIFAR-10 training images.

Target (`targets.py`): at least 90% efficiency on 8 GPUs for SimCLR on ResNet-18 at a global batch
of 4,096. Pending: not measured yet, for want of a machine with 8 GPUs.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cifar10_or_synthetic, device_summary, sizes_from_args  # noqa: E402
from targets import SCALING_EFFICIENCY_8_GPUS, SCALING_TARGET_STATUS  # noqa: E402

from clcourse import distributed  # noqa: E402
from clcourse.methods import METHODS, build_method  # noqa: E402
from clcourse.models import build_backbone  # noqa: E402
from clcourse.presets import PRESETS  # noqa: E402
from clcourse.train import train  # noqa: E402

EPOCH_IMAGES = 50_000


@dataclass(frozen=True)
class Sizes:
    """What each run trains."""
    method: str = "simclr"
    backbone: str = "resnet18"
    batch_size: int = 4096           # the N-process run's global batch (the 1-process run's: B / N)
    processes: int = max(2, torch.cuda.device_count())
    epochs: int = 3                  # the fastest after the first counts
    images: int | None = None        # training images (None: all 50,000)
    compile: bool = False


SMOKE = Sizes(backbone="small_cnn", batch_size=64, processes=2, epochs=2, images=512)


def run_processes(sizes: Sizes, processes: int, batch_size: int) -> dict:
    """One training run in `processes` processes under torchrun; what process 0 measured."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={processes}", str(Path(__file__).resolve()), "--worker",
                   "--out", str(out), "--method", sizes.method, "--backbone", sizes.backbone,
                   "--batch-size", str(batch_size), "--epochs", str(sizes.epochs),
                   *(["--images", str(sizes.images)] if sizes.images else []),
                   *(["--compile"] if sizes.compile else [])]
        # On CPUs each process takes one thread, so N processes use N cores.
        env = {**os.environ, **({} if torch.cuda.is_available() else {"OMP_NUM_THREADS": "1"})}
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0 or not out.is_file():
            raise RuntimeError(f"the run in {processes} processes failed (exit "
                               f"{done.returncode}):\n{done.stderr[-4000:]}")
        return json.loads(out.read_text())


def worker(sizes: Sizes, out: Path) -> None:
    """Under torchrun: train, then process 0 writes what it measured to `out`."""
    device = distributed.setup()
    rank, processes = distributed.world()
    images, _ = cifar10_or_synthetic(torch.device("cpu"), sizes.images)
    torch.manual_seed(0)
    method = build_method(sizes.method, build_backbone(sizes.backbone))
    budget = PRESETS["full"].with_overrides(backbone=sizes.backbone, epochs=sizes.epochs,
                                            batch_size=sizes.batch_size, warmup_epochs=0,
                                            compile=sizes.compile, log_every=10)
    history = train(method, images, preset=budget, device=device, progress=False)
    if rank == 0:
        per_process = sizes.batch_size // processes
        images_per_epoch = (len(images) // processes) // per_process * sizes.batch_size
        out.write_text(json.dumps({
            "processes": processes, "batch_size": sizes.batch_size, "per_process": per_process,
            "views": len(method.view_recipes), "images_per_epoch": images_per_epoch,
            "epoch_seconds": [record["seconds"] for record in history.epochs],
            "backend": torch.distributed.get_backend() if processes > 1 else None,
            "device": device_summary(device)}))
    distributed.teardown()


def measure(run: dict) -> dict:
    """A run's throughput: views/s of its fastest epoch after the first, and s per epoch of
    50,000 images."""
    seconds = min(run["epoch_seconds"][1:] or run["epoch_seconds"])
    views_per_s = run["views"] * run["images_per_epoch"] / seconds
    return {**run, "views_per_s": views_per_s,
            "s_per_epoch": run["views"] * EPOCH_IMAGES / views_per_s}


def efficiency(one: dict, many: dict) -> float:
    """N-process throughput / (N x 1-process throughput)."""
    return many["views_per_s"] / (many["processes"] * one["views_per_s"])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=sorted(METHODS))
    parser.add_argument("--backbone", choices=("resnet18", "small_cnn"))
    parser.add_argument("--batch-size", type=int, help="the global batch of the N-process run")
    parser.add_argument("--processes", type=int, help="N (default: the GPUs, at least 2)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--images", type=int, help="training images (default: all)")
    parser.add_argument("--compile", action="store_true", default=None)
    parser.add_argument("--smoke", action="store_true",
                        help="1 vs 2 gloo processes on the CPU, a small CNN: a check of the script")
    parser.add_argument("--results", type=Path, help="write the results as JSON to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = sizes_from_args(SMOKE if args.smoke else Sizes(), args)
    if args.worker:
        worker(sizes, args.out)
        return {}
    if sizes.processes < 2 or sizes.batch_size % sizes.processes:
        parser.error(f"--processes must be at least 2 and divide --batch-size, got "
                     f"{sizes.processes} and {sizes.batch_size}")
    print(f"{sizes.method}, {sizes.backbone}: 1 process with batch "
          f"{sizes.batch_size // sizes.processes} vs {sizes.processes} with a global batch of "
          f"{sizes.batch_size}, {sizes.epochs} epochs"
          + (f" on {sizes.images:,} images" if sizes.images else "")
          + (", compiled" if sizes.compile else ""), flush=True)
    one = measure(run_processes(sizes, 1, sizes.batch_size // sizes.processes))
    many = measure(run_processes(sizes, sizes.processes, sizes.batch_size))
    results = {"sizes": dataclasses.asdict(sizes), "one": one, "many": many,
               "efficiency": efficiency(one, many)}
    for run in (one, many):
        print(f"{run['processes']} process{'es' if run['processes'] > 1 else ''}, batch "
              f"{run['batch_size']:>5}: {run['views_per_s']:>10,.0f} images/s (every view), "
              f"{run['s_per_epoch']:.2f} s per 50,000-image epoch")
    print(f"efficiency: {100 * results['efficiency']:.1f}% (target on 8 GPUs, SimCLR, ResNet-18, "
          f"global batch 4,096: at least {100 * SCALING_EFFICIENCY_8_GPUS:.0f}%; "
          f"{SCALING_TARGET_STATUS})")
    if args.results:
        args.results.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
