"""Layer-wise CKA at test-set scale: every block output of two ResNet-18s over the 10,000
CIFAR-10 test images, clean and adversarial, in one pass (`clcourse.cka.layer_cka`: per batch,
each network sees each input once, keeps one Gram matrix per layer and adds an unbiased HSIC
estimate per pair of layers).

    python bench/cka.py             # two ResNet-18s, 10,000 test images, PGD-5, this machine's GPU
    python bench/cka.py --steps 10  # a stronger attack (the attack is most of the time)
    python bench/cka.py --smoke     # a quick CPU check of the script itself

Four representations: network A and network B (ResNet-18, seeds 0 and 1; the time does not depend
on the weights), each on the clean images and on its own adversarial images (L-inf PGD raising
the distance of its pooled features from the clean ones, epsilon 8/255, step 2/255, random
start); CKA for all 10 pairs, 9 layers each (the 8 residual blocks and the pooled output).
Targets: under 30 s on one H100/H200, and peak memory bounded by the Gram statistics, not by the
number of images: the pass also runs on a fifth of the images and both peaks are printed (they
should be about equal).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    bench_device,
    cifar10_or_synthetic,
    describe_device,
    peak_memory_gb,
    reset_peak_memory,
    sizes_from_args,
    synchronize,
)

from clcourse.cka import feature_attack, layer_cka  # noqa: E402
from clcourse.models import build_backbone  # noqa: E402

TARGET_SECONDS = 30.0


@dataclass(frozen=True)
class Sizes:
    backbone: str = "resnet18"
    images: int | None = None        # test images (None: all 10,000)
    batch_size: int = 500
    steps: int = 5                   # PGD steps of the adversarial inputs
    epsilon: float = 8 / 255


SMOKE = Sizes(backbone="small_cnn", images=32, batch_size=16, steps=1)


def representations(networks: dict[str, torch.nn.Module], sizes: Sizes) -> dict:
    reps = {}
    for seed, (name, network) in enumerate(networks.items()):
        reps[(name, "clean")] = network
        attack = feature_attack(network, sizes.epsilon, sizes.steps, 2 / 255, seed)
        reps[(name, f"PGD-{sizes.steps}")] = (network, attack)
    return reps


def timed_pass(networks, images, labels, sizes: Sizes, device: torch.device):
    reset_peak_memory(device)
    synchronize(device)
    start = time.perf_counter()
    results = layer_cka(representations(networks, sizes), images, labels,
                        batch_size=sizes.batch_size)
    synchronize(device)
    return results, time.perf_counter() - start, peak_memory_gb(device)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a small CNN and 32 images on the CPU")
    parser.add_argument("--images", type=int, help="test images (default: all 10,000)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--steps", type=int, help="PGD steps (default 5)")
    args = parser.parse_args(argv)
    sizes = sizes_from_args(SMOKE if args.smoke else Sizes(), args)
    device = bench_device(args.smoke)
    images, labels = cifar10_or_synthetic(device, sizes.images, train=False)
    networks = {}
    for seed, name in enumerate(("A", "B")):
        torch.manual_seed(seed)
        network = build_backbone(sizes.backbone).to(device)
        if device.type == "cuda":
            network.to(memory_format=torch.channels_last)
        networks[name] = network
    n = len(images)
    print(f"{describe_device(device)}: layer-wise CKA of two {sizes.backbone}s over {n} test "
          f"images, clean and PGD-{sizes.steps} (epsilon {255 * sizes.epsilon:.0f}/255), batches "
          f"of {sizes.batch_size}")

    fifth = max(4, n // 5)
    layer_cka(representations(networks, sizes), images[:sizes.batch_size],
              batch_size=sizes.batch_size)  # warm-up
    _, small_seconds, small_peak = timed_pass(networks, images[:fifth], labels[:fifth], sizes,
                                              device)
    results, seconds, peak = timed_pass(networks, images, labels, sizes, device)

    first = next(iter(results.values()))
    print(f"{len(results)} pairs of representations x {len(first.layers_a)} x "
          f"{len(first.layers_b)} layers, {first.num_batches} minibatches: {seconds:.1f} s "
          f"(target < {TARGET_SECONDS:.0f} s on an H100/H200)")
    if peak is not None:
        print(f"peak GPU memory: {small_peak:.2f} GB over {fifth} images, {peak:.2f} GB "
              f"over {n} (ratio {peak / small_peak:.2f}: bounded by a batch and the "
              "Gram statistics, not by n)")
    steps = f"PGD-{sizes.steps}"
    for name in networks:
        diagonal = results[((name, "clean"), (name, steps))].matrix.diagonal()
        print(f"CKA of network {name}'s clean and {steps} layers: " +
              " ".join(f"{v:.2f}" for v in diagonal.tolist()))
    across = results[(("A", "clean"), ("B", "clean"))].matrix.diagonal()
    print("CKA of networks A and B, clean, layer by layer: "
          + " ".join(f"{v:.2f}" for v in across.tolist()))
    return {"device": describe_device(device), "images": n, "seconds": seconds,
            "seconds_fifth": small_seconds, "peak_memory_gb": peak,
            "peak_memory_gb_fifth": small_peak, "results": results,
            "meets_target": None if device.type != "cuda" else seconds < TARGET_SECONDS}


if __name__ == "__main__":
    main()
