"""Train a method on CIFAR-10 and report its kNN accuracy and wall time.

    python bench/accuracy.py --method simclr --epochs 200 --compile
    python bench/accuracy.py --method simclr --smoke          # quick CPU check of the script

kNN: k=200, temperature 0.1, on L2-normalised backbone features (before the projector), training set as
memory, test set as queries, evaluated every --knn-every epochs; the figure reported is the LAST epoch's
(not the maximum over epochs). Wall time counts training and the periodic kNN evaluations.
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

from common import cifar10_or_synthetic, describe_device  # noqa: E402

from clcourse.evaluate import extract_features, linear_probe  # noqa: E402
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="simclr", choices=sorted(METHODS))
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=0.12, help="peak SGD learning rate per 256 images")
    parser.add_argument("--warmup-epochs", type=int, default=10)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--knn-every", type=int, default=10)
    parser.add_argument("--option", action="append", default=[], help="method option as key=json_value")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--linear-probe", action="store_true", help="also report a linear probe at the end")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run to check the script")
    args = parser.parse_args(argv)
    train_subset = test_subset = None
    if args.smoke:
        args.backbone, args.epochs, args.batch_size, args.warmup_epochs, args.knn_every = "small_cnn", 2, 128, 0, 1
        train_subset, test_subset = 1024, 500

    device = get_device()
    torch.backends.cudnn.benchmark = True
    train_images, train_labels = cifar10_or_synthetic(device, train_subset, train=True)
    test_images, test_labels = cifar10_or_synthetic(device, test_subset, train=False)
    torch.manual_seed(args.seed)
    method = build_method(args.method, build_backbone(args.backbone), **parse_options(args.option))
    print(f"device: {describe_device(device)}; {args.method} {parse_options(args.option)} on {args.backbone}, "
          f"{args.epochs} epochs, batch {args.batch_size}, lr {args.lr}/256, compile={args.compile}")

    start = time.perf_counter()
    history = train(method, train_images, labels=train_labels, epochs=args.epochs, batch_size=args.batch_size,
                    lr=args.lr, warmup_epochs=args.warmup_epochs, seed=args.seed, compile=args.compile,
                    knn_data=KnnData(train_images, train_labels, test_images, test_labels), knn_every=args.knn_every,
                    device=device)
    wall = time.perf_counter() - start
    for record in history.epochs:
        if "knn_accuracy" in record:
            print(f"epoch {record['epoch']:>4}  loss {record['loss']:.4f}  kNN {100 * record['knn_accuracy']:.2f}%")
    train_seconds = sorted(r["seconds"] for r in history.epochs)
    print(f"\nfinal kNN top-1: {100 * history.final_knn_accuracy:.2f}%  (last epoch, k=200, t=0.1)")
    print(f"wall time: {wall / 60:.2f} min; median epoch {train_seconds[len(train_seconds) // 2]:.2f} s "
          f"(kNN evaluations included in the wall time)")
    if args.linear_probe:
        probe = linear_probe(extract_features(method.backbone, train_images), train_labels,
                             extract_features(method.backbone, test_images), test_labels)
        print(f"linear probe top-1: {100 * probe.test_accuracy:.2f}%")
    return history


if __name__ == "__main__":
    main()
