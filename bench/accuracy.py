"""Train a method on CIFAR-10 and report its kNN accuracy and wall time.

    python bench/accuracy.py --method simclr --epochs 200 --compile
    # every method in turn, same seed and budget
    python bench/accuracy.py --method all --epochs 200 --compile
    # a few of them
    python bench/accuracy.py --method moco,mochi --epochs 200
    # MoCo v2 vs SCE (notebook 07)
    python bench/accuracy.py --method moco,sce --epochs 200 --linear-probe
    # CLAE's extra cost per epoch over SimCLR
    python bench/accuracy.py --method simclr,clae --epochs 200
    # quick CPU check of the script
    python bench/accuracy.py --method simclr --smoke
    python bench/accuracy.py --method simclr,simclr_multiview,cacr --epochs 200 --linear-probe \\
        --imbalanced

kNN: k=200, temperature 0.1, on L2-normalised backbone features (before the projector), training set
as memory, test set as queries, evaluated every --knn-every epochs; the figure reported is the LAST
epoch's (not the maximum over epochs). Wall time counts training and the periodic kNN evaluations.

--imbalanced trains on CACR's class-imbalanced CIFAR-10 (class c keeps (c + 1)/10 of its
images, 27,500 in all) and evaluates as the CACR authors do, on the balanced training set (kNN
memory, linear probe) and the test set, reporting the linear probe's accuracy on each class
with --linear-probe.

`bench/suite.py` trains SimCLR for 200 epochs this way as its second phase.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe_device  # noqa: E402

from clcourse.data import imbalanced_subset_indices, load_dataset  # noqa: E402
from clcourse.evaluate import extract_features, linear_probe, per_class_accuracy  # noqa: E402
from clcourse.methods import METHODS, build_method  # noqa: E402
from clcourse.models import build_backbone  # noqa: E402
from clcourse.presets import PRESETS, get_device  # noqa: E402
from clcourse.train import KnnData, train  # noqa: E402


@dataclass(frozen=True)
class Budget:
    """The training budget every method gets (the same seed and budget for all)."""
    epochs: int = 200
    batch_size: int = 512
    lr: float | None = None  # peak SGD learning rate per 256 images (None: the method's own)
    warmup_epochs: int = 10
    backbone: str = "resnet18"
    knn_every: int = 10
    seed: int = 0
    compile: bool = False


SMOKE = Budget(epochs=2, batch_size=128, warmup_epochs=0, backbone="small_cnn", knn_every=1)
SMOKE_SUBSETS = (1024, 500)   # training and test images of a smoke run


def parse_options(pairs: list[str]) -> dict:
    """`--option queue_size=4096 --option temperature=0.2` ->
    {"queue_size": 4096, "temperature": 0.2}."""
    options = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        options[key] = json.loads(value)
    return options


def load_knn_data(device: torch.device, train_subset: int | None = None,
                  test_subset: int | None = None, root: Path | None = None) -> KnnData:
    """CIFAR-10's training and test splits on `device` (from `root`, else the data root). Accuracy
    needs the real images: a missing CIFAR-10 stops here with load_dataset's message."""
    options = dict(device=device, download=False, root=root)
    train_images, train_labels = load_dataset("cifar10", train=True, subset=train_subset, **options)
    test_images, test_labels = load_dataset("cifar10", train=False, subset=test_subset, **options)
    return KnnData(train_images, train_labels, test_images, test_labels)


def train_and_evaluate(name: str, budget: Budget, data: KnnData, options: dict | None = None,
                       linear: bool = False, checkpoint_dir: Path | None = None,
                       progress: bool = True, imbalanced: bool = False) -> dict:
    """Train one method with `budget`; its kNN accuracy, epoch times and wall time. With
    `checkpoint_dir`, the run is checkpointed at every kNN evaluation (so a caller that stops it
    keeps the curve so far). `imbalanced`: train on CACR's class-imbalanced subset of `data`'s
    training images, evaluate on `data` as is (the balanced training set and the test set), with the
    linear probe's accuracy per class."""
    options = dict(options or {})
    if name == "mochi":  # plain MoCo first while the queue fills with meaningful keys (SynCo: 10 of
                         # 200 epochs)
        options.setdefault("mixing_warmup_epochs", budget.epochs // 20)
    torch.manual_seed(budget.seed)
    method = build_method(name, build_backbone(budget.backbone), **options)
    lr = budget.lr if budget.lr is not None else method.lr      # each method's own recipe unless
                                                                # --lr says otherwise
    run_budget = PRESETS["full"].with_overrides(backbone=budget.backbone, epochs=budget.epochs,
                                                batch_size=budget.batch_size, lr=lr,
                                                warmup_epochs=budget.warmup_epochs,
                                                compile=budget.compile, knn_every=budget.knn_every,
                                                knn_k=200, checkpoint_every=budget.knn_every)
    train_images, train_labels = data.train_images, data.train_labels
    if imbalanced:
        keep = torch.as_tensor(imbalanced_subset_indices(train_labels.cpu().numpy()),
                               device=train_labels.device)
        train_images, train_labels = train_images[keep], train_labels[keep]
    print(f"\n{name} {options} on {budget.backbone}, {len(train_images)} images, {budget.epochs} "
          f"epochs, batch {budget.batch_size}, lr {lr}/256, compile={budget.compile}")
    start = time.perf_counter()
    history = train(method, train_images, labels=train_labels, preset=run_budget, seed=budget.seed,
                    knn_data=data, checkpoint_dir=checkpoint_dir, device=data.train_images.device,
                    progress=progress)
    wall = time.perf_counter() - start
    for record in history.epochs:
        if "knn_accuracy" in record:
            print(f"epoch {record['epoch']:>4}  loss {record['loss']:.4f}  kNN "
                  f"{100 * record['knn_accuracy']:.2f}%")
    epoch_seconds = sorted(r["seconds"] for r in history.epochs)
    result = {"method": name, "history": history, "knn": history.final_knn_accuracy,
              "wall_minutes": wall / 60,
              "median_epoch_seconds": epoch_seconds[len(epoch_seconds) // 2], "linear": None,
              "per_class": None}
    print(f"final kNN top-1: {100 * result['knn']:.2f}%  (last epoch, k=200, t=0.1)")
    print(f"wall time: {result['wall_minutes']:.2f} min; median epoch "
          f"{result['median_epoch_seconds']:.2f} s (kNN evaluations included in the wall time)")
    if linear:
        test_features = extract_features(method.backbone, data.test_images)
        probe = linear_probe(extract_features(method.backbone, data.train_images),
                             data.train_labels, test_features, data.test_labels)
        result["linear"] = probe.test_accuracy
        print(f"linear probe top-1: {100 * probe.test_accuracy:.2f}%")
        if imbalanced:
            predictions = probe.classifier(test_features).argmax(dim=1)
            result["per_class"] = per_class_accuracy(predictions, data.test_labels,
                                                     num_classes=10).tolist()
            print("linear probe per class (class c kept (c + 1)/10 of its training images): "
                  + "  ".join(f"{c}: {100 * a:.1f}%" for c, a in enumerate(result["per_class"])))
    return result


def print_summary(results: list[dict]) -> None:
    width = max(8, *(len(r["method"]) for r in results))
    rare = results[0]["per_class"] is not None
    print(f"\n{'method':<{width}} {'kNN top-1':>10} {'linear':>8} {'s/epoch':>8} {'wall min':>9}"
          + (f" {'linear, classes 0-2 (rarest)':>29}" if rare else ""))
    for r in results:
        linear = f"{100 * r['linear']:.2f}%" if r["linear"] is not None else "-"
        print(f"{r['method']:<{width}} {100 * r['knn']:>9.2f}% {linear:>8} "
              f"{r['median_epoch_seconds']:>8.2f} {r['wall_minutes']:>9.2f}" +
              (f" {100 * sum(r['per_class'][:3]) / 3:>28.2f}%" if rare else ""))
    seconds = {r["method"]: r["median_epoch_seconds"] for r in results}
    if "moco" in seconds and "mochi" in seconds:
        print("MoCHi's extra time per epoch over MoCo v2: "
              f"{100 * (seconds['mochi'] / seconds['moco'] - 1):+.1f}%")
    if "moco" in seconds and "sce" in seconds:
        print("SCE's extra time per epoch over MoCo v2: "
              f"{100 * (seconds['sce'] / seconds['moco'] - 1):+.1f}%")
    if "simclr" in seconds and "clae" in seconds:
        print(f"CLAE's time per epoch over SimCLR: {seconds['clae'] / seconds['simclr']:.2f}x "
              "(target: at most 2.2x)")
    for name in ("simclr_multiview", "cacr"):
        if "simclr" in seconds and name in seconds:   # 5 views are 2.5x the images of SimCLR's 2
            print(f"{name}'s epoch over SimCLR's: {seconds[name] / seconds['simclr']:.2f}x "
                  "(target: at most 2.5x)")
    if "simclr" in seconds and "adversarial" in seconds:
        print("Adversarial SimCLR's time per epoch over SimCLR: "
              f"{seconds['adversarial'] / seconds['simclr']:.2f}x (5-step "
              "PGD; target: at most 6.5x)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="simclr",
                        help=f"a method ({', '.join(METHODS)}), several separated by commas, or "
                             "all: one after another with the same seed and budget")
    parser.add_argument("--epochs", type=int, default=Budget.epochs)
    parser.add_argument("--batch-size", type=int, default=Budget.batch_size)
    parser.add_argument("--lr", type=float, default=None,
                        help="peak SGD learning rate per 256 images (default: the "
                             "method's own, Method.lr)")
    parser.add_argument("--warmup-epochs", type=int, default=Budget.warmup_epochs)
    parser.add_argument("--backbone", default=Budget.backbone)
    parser.add_argument("--knn-every", type=int, default=Budget.knn_every)
    parser.add_argument("--option", action="append", default=[],
                        help="method option as key=json_value")
    parser.add_argument("--seed", type=int, default=Budget.seed)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--linear-probe", action="store_true",
                        help="also report a linear probe at the end")
    parser.add_argument("--imbalanced", action="store_true",
                        help="train on class-imbalanced CIFAR-10 (class c keeps (c + 1)/10 "
                             "of its images, as CACR)")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run to check the script")
    args = parser.parse_args(argv)
    budget = Budget(args.epochs, args.batch_size, args.lr, args.warmup_epochs, args.backbone,
                    args.knn_every, args.seed, args.compile)
    subsets = (None, None)
    if args.smoke:
        budget = replace(SMOKE, lr=args.lr, seed=args.seed, compile=args.compile)
        subsets = SMOKE_SUBSETS
    names = list(METHODS) if args.method == "all" else args.method.split(",")
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        parser.error(f"--method must be 'all' or names from {', '.join(METHODS)} separated by "
                     f"commas, got {unknown}")
    if len(names) > 1 and args.option:
        parser.error(f"--option applies to one method, not to {len(names)} (got --option "
                     f"{' '.join(args.option)})")

    device = get_device()
    torch.backends.cudnn.benchmark = True
    data = load_knn_data(device, *subsets)
    print(f"device: {describe_device(device)}")
    options = parse_options(args.option)
    results = [train_and_evaluate(name, budget, data, options, args.linear_probe,
                                  imbalanced=args.imbalanced)
               for name in names]
    print_summary(results)
    return results

if __name__ == "__main__":
    main()
