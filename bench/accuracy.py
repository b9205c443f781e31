"""Train a method on CIFAR-10 and report its kNN accuracy and wall time.

    python bench/accuracy.py --method simclr --epochs 200 --compile
    python bench/accuracy.py --method all --epochs 200 --compile    # every method in turn, same seed and budget
    python bench/accuracy.py --method moco,mochi --epochs 200       # a few of them
    python bench/accuracy.py --method simclr --smoke                # quick CPU check of the script
    python bench/accuracy.py --method simclr,simclr_multiview,cacr --epochs 200 --linear-probe --imbalanced

kNN: k=200, temperature 0.1, on L2-normalised backbone features (before the projector), training set as
memory, test set as queries, evaluated every --knn-every epochs; the figure reported is the LAST epoch's
(not the maximum over epochs). Wall time counts training and the periodic kNN evaluations.

--imbalanced trains on CACR's class-imbalanced CIFAR-10 (class c keeps (c + 1)/10 of its images, 27,500 in
all) and evaluates as the CACR authors do, on the balanced training set (kNN memory, linear probe) and the
test set, reporting the linear probe's accuracy on each class with --linear-probe.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe_device  # noqa: E402

from clcourse.data import load_dataset  # noqa: E402
from clcourse.evaluate import extract_features, linear_probe, per_class_accuracy  # noqa: E402
from clcourse.methods import METHODS, build_method  # noqa: E402
from clcourse.models import build_backbone  # noqa: E402
from clcourse.presets import get_device  # noqa: E402
from clcourse.train import KnnData, train  # noqa: E402


def parse_options(pairs: list[str]) -> dict:
    """`--option queue_size=4096 --option temperature=0.2` -> {"queue_size": 4096, "temperature": 0.2}."""
    options = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        options[key] = json.loads(value)
    return options


def train_and_evaluate(name: str, args, data: KnnData, train_images: torch.Tensor, train_labels: torch.Tensor) -> dict:
    """Train one method on `train_images` with the budget in `args`; its kNN accuracy on `data`, epoch times and
    wall time."""
    options = parse_options(args.option)
    if name == "mochi":  # plain MoCo first while the queue fills with meaningful keys (SynCo: 10 of 200 epochs)
        options.setdefault("mixing_warmup_epochs", args.epochs // 20)
    torch.manual_seed(args.seed)
    method = build_method(name, build_backbone(args.backbone), **options)
    lr = args.lr if args.lr is not None else method.lr      # each method's own recipe unless --lr says otherwise
    print(f"\n{name} {options} on {args.backbone}, {len(train_images)} images, {args.epochs} epochs, batch "
          f"{args.batch_size}, lr {lr}/256, compile={args.compile}")
    start = time.perf_counter()
    history = train(method, train_images, labels=train_labels, epochs=args.epochs,
                    batch_size=args.batch_size, lr=lr, warmup_epochs=args.warmup_epochs, seed=args.seed,
                    compile=args.compile, knn_data=data, knn_every=args.knn_every, device=data.train_images.device)
    wall = time.perf_counter() - start
    for record in history.epochs:
        if "knn_accuracy" in record:
            print(f"epoch {record['epoch']:>4}  loss {record['loss']:.4f}  kNN {100 * record['knn_accuracy']:.2f}%")
    epoch_seconds = sorted(r["seconds"] for r in history.epochs)
    result = {"method": name, "history": history, "knn": history.final_knn_accuracy, "wall_minutes": wall / 60,
              "median_epoch_seconds": epoch_seconds[len(epoch_seconds) // 2], "linear": None, "per_class": None}
    print(f"final kNN top-1: {100 * result['knn']:.2f}%  (last epoch, k=200, t=0.1)")
    print(f"wall time: {result['wall_minutes']:.2f} min; median epoch {result['median_epoch_seconds']:.2f} s "
          f"(kNN evaluations included in the wall time)")
    if args.linear_probe:
        test_features = extract_features(method.backbone, data.test_images)
        probe = linear_probe(extract_features(method.backbone, data.train_images), data.train_labels,
                             test_features, data.test_labels)
        result["linear"] = probe.test_accuracy
        print(f"linear probe top-1: {100 * probe.test_accuracy:.2f}%")
        if args.imbalanced:
            predictions = probe.classifier(test_features).argmax(dim=1)
            result["per_class"] = per_class_accuracy(predictions, data.test_labels, num_classes=10).tolist()
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
        print(f"{r['method']:<{width}} {100 * r['knn']:>9.2f}% {linear:>8} {r['median_epoch_seconds']:>8.2f} "
              f"{r['wall_minutes']:>9.2f}" + (f" {100 * sum(r['per_class'][:3]) / 3:>28.2f}%" if rare else ""))
    seconds = {r["method"]: r["median_epoch_seconds"] for r in results}
    if "moco" in seconds and "mochi" in seconds:
        print(f"MoCHi's extra time per epoch over MoCo v2: {100 * (seconds['mochi'] / seconds['moco'] - 1):+.1f}%")
    for name in ("simclr_multiview", "cacr"):
        if "simclr" in seconds and name in seconds:   # 5 views are 2.5x the images of SimCLR's 2
            print(f"{name}'s epoch over SimCLR's: {seconds[name] / seconds['simclr']:.2f}x (target: at most 2.5x)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="simclr",
                        help=f"a method ({', '.join(METHODS)}), several separated by commas, or all: one after "
                             "another with the same seed and budget")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=None,
                        help="peak SGD learning rate per 256 images (default: the method's own, Method.lr)")
    parser.add_argument("--warmup-epochs", type=int, default=10)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--knn-every", type=int, default=10)
    parser.add_argument("--option", action="append", default=[], help="method option as key=json_value")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--linear-probe", action="store_true", help="also report a linear probe at the end")
    parser.add_argument("--imbalanced", action="store_true",
                        help="train on class-imbalanced CIFAR-10 (class c keeps (c + 1)/10 of its images, as CACR)")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run to check the script")
    args = parser.parse_args(argv)
    train_subset = test_subset = None
    if args.smoke:
        args.backbone, args.epochs, args.batch_size, args.warmup_epochs, args.knn_every = "small_cnn", 2, 128, 0, 1
        train_subset, test_subset = 1024, 500
    names = list(METHODS) if args.method == "all" else args.method.split(",")
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        parser.error(f"--method must be 'all' or names from {', '.join(METHODS)} separated by commas, got {unknown}")
    if len(names) > 1 and args.option:
        parser.error(f"--option applies to one method, not to {len(names)} (got --option {' '.join(args.option)})")

    device = get_device()
    torch.backends.cudnn.benchmark = True
    # Accuracy needs the real images: a missing CIFAR-10 stops here with load_dataset's message.
    train_images, train_labels = load_dataset("cifar10", train=True, subset=train_subset, device=device, download=False)
    test_images, test_labels = load_dataset("cifar10", train=False, subset=test_subset, device=device, download=False)
    data = KnnData(train_images, train_labels, test_images, test_labels)
    if args.imbalanced:   # evaluated on the balanced training set, as the CACR authors' linear evaluation
        train_images, train_labels = load_dataset("cifar10", train=True, subset=train_subset, device=device,
                                                  download=False, imbalanced=True)
    print(f"device: {describe_device(device)}")
    results = [train_and_evaluate(name, args, data, train_images, train_labels) for name in names]
    print_summary(results)
    return results


if __name__ == "__main__":
    main()
