"""SimCLR training throughput, three ways, in one run:

1. the model step alone, on views made once in advance (the ceiling for this model and precision):
   `clcourse.train.optimisation_step`, exactly what the training loop calls each step;
2. clcourse end to end: the shared training loop with views made on the device every step;
3. the usual pipeline: torchvision PIL transforms in a DataLoader with all CPU workers,
   then the same step.

    python bench/throughput.py                     # ResNet-18, batch 512, bf16 on a GPU
    python bench/throughput.py --compile           # with torch.compile
    python bench/throughput.py --smoke             # a quick CPU check of the script itself

Images/s count both views (2 x batch per step); s/epoch is for the 50,000 CIFAR-10 training images.
`bench/suite.py` runs this eager and compiled as its first phase.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    available_cpus,
    cifar10_or_synthetic,
    describe_device,
    sizes_from_args,
    timed,
)

from clcourse.methods import Batch, SimCLR  # noqa: E402
from clcourse.models import build_backbone  # noqa: E402
from clcourse.presets import PRESETS, autocast_dtype, get_device  # noqa: E402
from clcourse.train import optimisation_step, train  # noqa: E402

EPOCH_IMAGES = 50_000


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does."""
    backbone: str = "resnet18"
    batch_size: int = 512
    steps: int = 50                  # timed steps of the model step alone
    warmup_steps: int = 15
    epochs: int = 3                  # end-to-end epochs: the fastest after the first counts
    images: int | None = None        # training images (None: all 50,000)
    workers: int = available_cpus()  # DataLoader processes of the PIL pipeline


SMOKE = Sizes(backbone="small_cnn", batch_size=64, steps=3, warmup_steps=1, epochs=2, images=256,
              workers=min(2, available_cpus()))

PIPELINES = {"model_step": "model step alone (pre-made views)",
             "end_to_end": "clcourse end to end (device augmentation)",
             "pil": "torchvision PIL + DataLoader ({workers} workers)"}


def make_method(backbone: str, device: torch.device) -> SimCLR:
    torch.manual_seed(0)
    method = SimCLR(build_backbone(backbone)).to(device)
    if device.type == "cuda":
        method.to(memory_format=torch.channels_last)
    return method


class StepRunner:
    """One SimCLR method, its optimiser and scaler, and `run(batch)`: `optimisation_step` with the
    method's `training_step`, compiled or not, shared by the model-step and PIL measurements."""

    def __init__(self, sizes: Sizes, device: torch.device, compile: bool):
        self.device = device
        self.method = make_method(sizes.backbone, device)
        self.optimizer = torch.optim.SGD(self.method.parameters(), lr=0.1, momentum=0.9,
                                         fused=device.type == "cuda")
        self.amp_dtype = autocast_dtype(device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
        self.step_fn = (torch.compile(self.method.training_step) if compile
                        else self.method.training_step)

    def run(self, views: tuple[torch.Tensor, ...], images: torch.Tensor,
            index: torch.Tensor) -> None:
        views = tuple(
            v.to(self.device, non_blocking=True).contiguous(memory_format=self.layout)
            for v in views)
        optimisation_step(self.method, self.step_fn, Batch(views, images, None, index),
                          self.optimizer, self.scaler, self.amp_dtype)


def model_step_alone(runner: StepRunner, sizes: Sizes) -> float:
    """Images/s of `optimisation_step` (forward, backward, SGD step) on fixed, pre-made views."""
    device = runner.device
    # Already on the device and in the step's layout, so `run` adds no copy to `optimisation_step`.
    views = tuple(
        torch.rand(sizes.batch_size, 3, 32, 32, device=device).contiguous(
            memory_format=runner.layout
        )
        for _ in range(2)
    )
    images = torch.zeros(sizes.batch_size, 3, 32, 32, dtype=torch.uint8, device=device)
    index = torch.arange(sizes.batch_size, device=device)

    def steps(n):
        for _ in range(n):
            runner.run(views, images, index)

    timed(lambda: steps(sizes.warmup_steps), device)
    seconds = timed(lambda: steps(sizes.steps), device)
    return 2 * sizes.batch_size * sizes.steps / seconds


def clcourse_end_to_end(sizes: Sizes, device: torch.device, compile: bool,
                        images: torch.Tensor) -> float:
    """Images/s of the shared training loop (device-side augmentation included), from
    its second epoch."""
    method = make_method(sizes.backbone, device)
    budget = PRESETS["full"].with_overrides(epochs=sizes.epochs, batch_size=sizes.batch_size,
                                            lr=0.1, warmup_epochs=0, compile=compile, log_every=50)
    history = train(method, images, preset=budget, device=device, progress=False)
    seconds = min(record["seconds"] for record in history.epochs[1:] or history.epochs)
    steps_per_epoch = images.shape[0] // sizes.batch_size
    return 2 * sizes.batch_size * steps_per_epoch / seconds


class TwoViews:
    """The torchvision way: the SimCLR CIFAR recipe as PIL transforms, applied per
    image in workers."""

    def __init__(self, images):
        import torchvision.transforms as T
        self.images = images  # uint8 [N, H, W, 3] numpy
        self.transform = T.Compose(
            [
                T.RandomResizedCrop(32, scale=(0.08, 1.0)),
                T.RandomHorizontalFlip(),
                T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                T.RandomGrayscale(p=0.2),
                T.ToTensor(),
            ]
        )

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image
        image = Image.fromarray(self.images[i])
        return self.transform(image), self.transform(image)


def pil_dataloader(runner: StepRunner, sizes: Sizes, images: torch.Tensor) -> float:
    """Images/s of the same step fed by a DataLoader with PIL transforms on
    `sizes.workers` CPU processes."""
    device = runner.device
    dataset = TwoViews(images.cpu().permute(0, 2, 3, 1).numpy())
    loader = torch.utils.data.DataLoader(dataset, batch_size=sizes.batch_size, shuffle=True,
                                         drop_last=True, num_workers=sizes.workers,
                                         pin_memory=device.type == "cuda",
                                         persistent_workers=sizes.workers > 0)
    dummy = torch.zeros(sizes.batch_size, 3, 32, 32, dtype=torch.uint8, device=device)
    index = torch.arange(sizes.batch_size, device=device)

    def epoch():
        for views in loader:
            runner.run(views, dummy, index)

    timed(epoch, device)  # workers start, caches warm
    seconds = timed(epoch, device)
    return 2 * sizes.batch_size * len(loader) / seconds


def measure(sizes: Sizes, device: torch.device, compile: bool, images: torch.Tensor,
            pil: bool = True, into: dict | None = None) -> dict[str, float]:
    """Images/s of each pipeline (keys of PIPELINES) on `images` (uint8 [N, 3, 32, 32], on
    `device`), written into `into` as each finishes, so a caller that stops this part-way keeps what
    was measured."""
    results = into if into is not None else {}
    runner = StepRunner(sizes, device, compile)
    results["model_step"] = model_step_alone(runner, sizes)
    results["end_to_end"] = clcourse_end_to_end(sizes, device, compile, images)
    if pil:
        results["pil"] = pil_dataloader(runner, sizes, images)
    return results


def seconds_per_epoch(images_per_second: float) -> float:
    """Seconds for one SimCLR epoch of the 50,000 CIFAR-10 training images (two views each)."""
    return 2 * EPOCH_IMAGES / images_per_second


def print_table(results: dict[str, float], workers: int) -> None:
    print(f"\n{'pipeline':<48} {'images/s':>10} {'s/epoch':>9}")
    for key, images_per_second in results.items():
        name = PIPELINES[key].format(workers=workers)
        print(f"{name:<48} {images_per_second:>10.0f} {seconds_per_epoch(images_per_second):>9.2f}")
    print("\nend to end / model step alone: "
          f"{results['end_to_end'] / results['model_step']:.2f} (target >= 0.90)")
    if "pil" in results:
        print("end to end / PIL pipeline: "
              f"{results['end_to_end'] / results['pil']:.1f}x (target >= 3x)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default=Sizes.backbone)
    parser.add_argument("--batch-size", type=int, default=Sizes.batch_size)
    parser.add_argument("--steps", type=int, default=Sizes.steps,
                        help="timed steps for the model-step-alone figure")
    parser.add_argument("--warmup-steps", type=int, default=Sizes.warmup_steps)
    parser.add_argument("--epochs", type=int, default=Sizes.epochs,
                        help="epochs of the end-to-end run (the fastest after the first counts)")
    parser.add_argument("--images", type=int, default=None,
                        help="training images (default: all 50,000)")
    parser.add_argument("--workers", type=int, default=Sizes.workers)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--skip-pil", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run to check the script")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else sizes_from_args(Sizes(), args)

    device = get_device()
    torch.backends.cudnn.benchmark = True
    print(f"device: {describe_device(device)}; backbone {sizes.backbone}, batch "
          f"{sizes.batch_size}, precision {autocast_dtype(device) or torch.float32}, "
          f"compile={args.compile}")
    images, _ = cifar10_or_synthetic(device, sizes.images)
    results = measure(sizes, device, args.compile, images, pil=not args.skip_pil)
    print_table(results, sizes.workers)
    return {PIPELINES[key].format(workers=sizes.workers): value for key, value in results.items()}


if __name__ == "__main__":
    main()
