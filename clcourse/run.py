"""Train one method from the command line, in one process or in several (torchrun), with the loop
the notebooks use (`clcourse.train.train`):

    python -m clcourse.run --method simclr --dataset cifar10 --preset colab
    torchrun --nproc_per_node=8 -m clcourse.run --method simclr --preset full --batch-size 4096
    # two machines of 8 GPUs: the same command on each, HOST being the first machine
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \\
        -m clcourse.run --method moco --preset full --batch-size 4096

The preset (`smoke`, `colab`, `full`; default `CLCOURSE_PRESET`, else `colab` with a GPU and
`smoke` without) gives the budget and the backbone; the flags override it. `--batch-size` is the
global batch: with N processes each holds B / N images of it, and the learning rate is scaled with
B, not with B / N (peak lr x B / 256, where lr is per 256 images: the method's own unless `--lr`).
With several processes the contrastive losses see all B images' embeddings, MoCo shuffles its keys
across the processes and all of them share one queue (`clcourse.distributed`).

The run is kept in `runs/<preset>/<--run-name>` (default `<method>_<dataset>`; `$CLCOURSE_RUNS`
moves `runs/`), written by process 0 only, and the same command continues it after an interruption
(with as many processes as it started with); other settings under the same name are refused. On CPUs
the processes meet through gloo, on GPUs through NCCL, one GPU each.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from . import distributed
from .augment import simclr_stl10, weak
from .data import class_names, load_dataset
from .methods import METHODS, build_method
from .models import build_backbone
from .presets import PRESETS, get_preset
from .runs import run_dir
from .train import KnnData, resolve_budget, train

__all__ = ["main", "parse_args", "parse_options", "dataset_options", "header", "DATASETS"]

DATASETS = ("cifar10", "cifar100", "stl10")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m clcourse.run",
        description="Train one method, in one process or under torchrun (several processes, "
                    "several machines).")
    parser.add_argument("--method", required=True, choices=sorted(METHODS))
    parser.add_argument("--dataset", default="cifar10", choices=DATASETS)
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="the budget (default: $CLCOURSE_PRESET, else colab with a GPU, smoke "
                             "without)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int,
                        help="the global batch, shared by all processes")
    parser.add_argument("--lr", type=float,
                        help="peak SGD learning rate per 256 images of the global batch (default: "
                             "the method's own)")
    parser.add_argument("--warmup-epochs", type=int)
    parser.add_argument("--backbone", choices=("resnet18", "small_cnn"),
                        help="default: the preset's")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the step (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subset", type=int,
                        help="training images (a class-balanced subset; default: the preset's)")
    parser.add_argument("--test-subset", type=int,
                        help="test images of the kNN monitor (default: the preset's)")
    parser.add_argument("--no-knn", action="store_true", help="no kNN monitor")
    parser.add_argument("--data-root", help="default: $CLCOURSE_DATA, else data/")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=JSON",
                        help="a method option, e.g. --option queue_size=8192 --option "
                             "temperature=0.2")
    parser.add_argument("--run-name", help="the run's name under runs/<preset>/ (default: "
                                           "<method>_<dataset>)")
    parser.add_argument("--checkpoint-dir", help="a folder for the run instead of --run-name")
    parser.add_argument("--sync-batchnorm", action="store_true",
                        help="several processes on GPUs: batch-norm with the global batch's "
                             "statistics (SyncBatchNorm)")
    parser.add_argument("--timeout", type=float, default=distributed.DEFAULT_TIMEOUT_S,
                        help="seconds a process waits for the others before the job stops "
                             "(default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        args.options = parse_options(args.option)
    except ValueError as error:
        parser.error(str(error))
    if args.run_name is not None and args.checkpoint_dir is not None:
        parser.error("give --run-name or --checkpoint-dir, not both")
    return args


def parse_options(pairs: list[str]) -> dict:
    """["queue_size=8192", "temperature=0.2"] -> {"queue_size": 8192, "temperature": 0.2}."""
    options = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            key = ""
        if not key:
            raise ValueError("--option must be KEY=JSON_VALUE (e.g. temperature=0.2), "
                             f"got {pair!r}")
    return options


def dataset_options(method: str, dataset: str, image_size: int) -> dict:
    """The views a method needs for images of `image_size` pixels (STL-10's 96), and the classes
    of a supervised classifier."""
    options = {}
    if image_size != 32:
        options["augment"] = (weak(image_size) if method == "supervised"
                              else simclr_stl10(image_size))
        if method == "sce":
            options["key_augment"] = weak(image_size)
    if method == "supervised":
        options["num_classes"] = len(class_names(dataset))
    return options


def main(argv: list[str] | None = None):
    """Run the command line; returns the History (on every process)."""
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", 0))     # torchrun's, until the process group is up
    try:
        device = distributed.setup(args.timeout)
        rank, processes = distributed.world()
        return _train(args, device, rank, processes)
    except distributed.ProcessFailure as error:
        print(f"clcourse.run: {error}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)    # not through the process group's shutdown, which waits for the others
    except (ValueError, OSError) as error:     # the same in every process: said once
        if rank == 0:
            print(f"clcourse.run: error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    finally:
        distributed.teardown()


def _train(args: argparse.Namespace, device: torch.device, rank: int, processes: int):
    preset = get_preset(args.preset)
    changes = {name: value for name, value in (
        ("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr),
        ("warmup_epochs", args.warmup_epochs), ("compile", args.compile),
        ("backbone", args.backbone)) if value is not None}
    preset = preset.with_overrides(**changes)
    subset = args.subset if args.subset is not None else preset.train_subset
    test_subset = args.test_subset if args.test_subset is not None else preset.test_subset
    images, labels = load_dataset(args.dataset, args.data_root, train=True, subset=subset)
    knn_data = None
    if not args.no_knn:
        test_images, test_labels = load_dataset(args.dataset, args.data_root, train=False,
                                                subset=test_subset)
        # One process keeps its monitor on the device; several embed their parts of it in turn.
        where = device if processes == 1 else torch.device("cpu")
        knn_data = KnnData(images.to(where), labels.to(where), test_images.to(where),
                           test_labels.to(where))
        preset = preset.with_overrides(knn_k=min(preset.knn_k, len(images)))

    torch.manual_seed(args.seed)      # the same initial weights in every process
    options = {**dataset_options(args.method, args.dataset, images.shape[-1]), **args.options}
    method = build_method(args.method, build_backbone(preset.backbone), **options)
    budget = resolve_budget(preset, method)
    run = None if args.checkpoint_dir else args.run_name or f"{args.method}_{args.dataset}"
    if rank == 0:
        print(header(args, budget, method, processes, len(images), knn_data, device, run),
              flush=True)
    history = train(method, images, preset=budget,
                    labels=labels if method.requires_labels else None, run=run,
                    checkpoint_dir=args.checkpoint_dir, knn_data=knn_data, seed=args.seed,
                    device=device, progress=not args.no_progress,
                    sync_batchnorm=args.sync_batchnorm)
    if rank == 0:
        last = history.epochs[-1] if history.epochs else {}
        knn = (f", kNN accuracy {100 * history.final_knn_accuracy:.2f}%"
               if history.final_knn_accuracy is not None else "")
        print(f"done: epoch {last.get('epoch', 0)} of {budget.epochs}, loss "
              f"{last.get('loss', float('nan')):.4f}{knn}", flush=True)
    return history


def header(args, budget, method, processes: int, images: int, knn_data, device, run) -> str:
    """What the run will do, printed once before it starts: the data, the processes and how they
    share the batch, the learning rate and how it is scaled."""
    per_process = budget.batch_size // processes
    backend = "one process" if processes == 1 else (
        f"{processes} processes ({torch.distributed.get_backend()}), "
        f"{per_process} images of each batch per process")
    monitor = f"kNN on {len(knn_data.test_images):,} test images" if knn_data else "no kNN monitor"
    where = args.checkpoint_dir or run_dir(run, budget.name)
    steps = (images // processes) // per_process
    return "\n".join([
        f"clcourse.run: {type(method).__name__} on {args.dataset}, {images:,} training images, "
        f"{monitor}; preset {budget.name}, {budget.backbone} on {device}",
        f"batch: {budget.batch_size} images (global), {backend}",
        f"learning rate: {budget.lr:g} per 256 images, scaled linearly with the global batch: "
        f"peak {budget.lr:g} x {budget.batch_size} / 256 = {budget.lr * budget.batch_size / 256:g}"
        f", {budget.warmup_epochs} warm-up epoch{'' if budget.warmup_epochs == 1 else 's'}, "
        "then a cosine",
        f"epochs: {budget.epochs} of {steps} steps; the run's folder: {where}"])


if __name__ == "__main__":
    main()
