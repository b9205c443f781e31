"""SimCLR training throughput, three ways, in one run:

1. the model step alone, on views made once in advance (the ceiling for this model and precision);
2. clcourse end to end: the shared training loop with views made on the device every step;
3. the usual pipeline: torchvision PIL transforms in a DataLoader with all CPU workers, then the same step.

    python bench/throughput.py                     # ResNet-18, batch 512, bf16 on a GPU
    python bench/throughput.py --compile           # with torch.compile
    python bench/throughput.py --smoke             # a quick CPU check of the script itself

Images/s count both views (2 x batch per step); s/epoch is for the 50,000 CIFAR-10 training images.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cifar10_or_synthetic, describe_device, timed  # noqa: E402

from clcourse.methods import Batch, SimCLR  # noqa: E402
from clcourse.models import build_backbone  # noqa: E402
from clcourse.presets import autocast_dtype, get_device  # noqa: E402
from clcourse.train import optimisation_step, train  # noqa: E402

EPOCH_IMAGES = 50_000


def make_method(backbone: str, device: torch.device) -> SimCLR:
    torch.manual_seed(0)
    method = SimCLR(build_backbone(backbone)).to(device)
    if device.type == "cuda":
        method.to(memory_format=torch.channels_last)
    return method


def model_step_alone(args, device) -> float:
    """Images/s of forward + backward + SGD step on fixed, pre-made views."""
    method = make_method(args.backbone, device)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1, momentum=0.9, fused=device.type == "cuda")
    amp_dtype = autocast_dtype(device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    views = tuple(torch.rand(args.batch_size, 3, 32, 32, device=device).contiguous(memory_format=layout)
                  for _ in range(2))
    images = torch.zeros(args.batch_size, 3, 32, 32, dtype=torch.uint8, device=device)
    batch = Batch(views, images, None, torch.arange(args.batch_size, device=device))
    step_fn = torch.compile(method.training_step) if args.compile else method.training_step

    def steps(n):
        for _ in range(n):
            optimisation_step(method, step_fn, batch, optimizer, scaler, amp_dtype)

    timed(lambda: steps(args.warmup_steps), device)
    seconds = timed(lambda: steps(args.steps), device)
    return 2 * args.batch_size * args.steps / seconds


def clcourse_end_to_end(args, device) -> float:
    """Images/s of the shared training loop (device-side augmentation included), from its second epoch."""
    images, _ = cifar10_or_synthetic(device, args.images)
    method = make_method(args.backbone, device)
    history = train(method, images, epochs=args.epochs, batch_size=args.batch_size, lr=0.1, device=device,
                    compile=args.compile, progress=False, log_every=50)
    seconds = min(record["seconds"] for record in history.epochs[1:] or history.epochs)
    steps_per_epoch = images.shape[0] // args.batch_size
    return 2 * args.batch_size * steps_per_epoch / seconds


class TwoViews:
    """The torchvision way: the SimCLR CIFAR recipe as PIL transforms, applied per image in workers."""

    def __init__(self, images):
        import torchvision.transforms as T
        self.images = images  # uint8 [N, H, W, 3] numpy
        self.transform = T.Compose([
            T.RandomResizedCrop(32, scale=(0.08, 1.0)), T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2), T.ToTensor()])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image
        image = Image.fromarray(self.images[i])
        return self.transform(image), self.transform(image)


def pil_dataloader(args, device) -> float:
    """Images/s of the same step fed by a DataLoader with PIL transforms on `workers` CPU processes."""
    images, _ = cifar10_or_synthetic(torch.device("cpu"), args.images)
    dataset = TwoViews(images.permute(0, 2, 3, 1).numpy())
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.workers, pin_memory=device.type == "cuda",
                                         persistent_workers=args.workers > 0)
    method = make_method(args.backbone, device)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1, momentum=0.9, fused=device.type == "cuda")
    amp_dtype = autocast_dtype(device)
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    dummy = torch.zeros(args.batch_size, 3, 32, 32, dtype=torch.uint8, device=device)
    index = torch.arange(args.batch_size, device=device)

    def epoch():
        for view1, view2 in loader:
            views = tuple(v.to(device, non_blocking=True).contiguous(memory_format=layout) for v in (view1, view2))
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                loss = method.training_step(Batch(views, dummy, None, index)).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    timed(epoch, device)  # workers start, caches warm
    seconds = timed(epoch, device)
    return 2 * args.batch_size * len(loader) / seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50, help="timed steps for the model-step-alone figure")
    parser.add_argument("--warmup-steps", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the end-to-end run (the fastest after the first counts)")
    parser.add_argument("--images", type=int, default=None, help="training images (default: all 50,000)")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--skip-pil", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run to check the script")
    args = parser.parse_args(argv)
    if args.smoke:
        args.backbone, args.batch_size, args.steps, args.warmup_steps = "small_cnn", 64, 3, 1
        args.epochs, args.images, args.workers = 2, 512, min(2, os.cpu_count())

    device = get_device()
    torch.backends.cudnn.benchmark = True
    print(f"device: {describe_device(device)}; backbone {args.backbone}, batch {args.batch_size}, "
          f"precision {autocast_dtype(device) or torch.float32}, compile={args.compile}")
    results = {"model step alone (pre-made views)": model_step_alone(args, device),
               "clcourse end to end (device augmentation)": clcourse_end_to_end(args, device)}
    if not args.skip_pil:
        results[f"torchvision PIL + DataLoader ({args.workers} workers)"] = pil_dataloader(args, device)
    print(f"\n{'pipeline':<48} {'images/s':>10} {'s/epoch':>9}")
    for name, images_per_second in results.items():
        print(f"{name:<48} {images_per_second:>10.0f} {2 * EPOCH_IMAGES / images_per_second:>9.2f}")
    values = list(results.values())
    print(f"\nend to end / model step alone: {values[1] / values[0]:.2f} (target >= 0.90)")
    if len(values) > 2:
        print(f"end to end / PIL pipeline: {values[1] / values[2]:.1f}x (target >= 3x)")
    return results


if __name__ == "__main__":
    main()
