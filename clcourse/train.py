"""One training loop for every method.

    history = train(method, images, epochs=..., batch_size=..., knn_data=..., checkpoint_dir=...)

The whole training set lives on the device as uint8; each step indexes a batch, the method makes its
views on the device, and the step runs under mixed precision (bf16 where the GPU has it, fp16 with a
gradient scaler otherwise, fp32 on the CPU) in channels_last layout, optionally compiled. The learning
rate warms up linearly, then follows a cosine. Nothing synchronises with the host inside a step: the
loss is accumulated on the device and read every `log_every` steps.

Checkpoints (`last.pt`, written atomically) hold everything needed to continue the same run: weights,
optimiser and scaler state, the history and the random-number generators. `resume=True` continues from
`last.pt` and gives the same numbers as an uninterrupted run with the same seed.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from .methods import Batch, Method
from .presets import autocast_dtype, get_device
from .validation import require_int_at_least, require_positive

CHECKPOINT_NAME = "last.pt"


class KnnData(NamedTuple):
    """Images and labels for the periodic kNN monitor (uint8 images, ideally already on the device)."""
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped and the last checkpoint is left as it was."""


@dataclass
class History:
    """What happened during training, for plotting: `steps` holds one record per `log_every` steps
    (step, epoch, loss, lr, images_per_sec and the method's logs); `epochs` one record per epoch
    (epoch, loss, seconds, and knn_accuracy where it was evaluated)."""
    steps: list[dict] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)

    def series(self, key: str, per: str = "epoch") -> tuple[list[float], list[float]]:
        """(x, y) of `key` over epochs (per="epoch") or logged steps (per="step"), skipping gaps."""
        records = self.epochs if per == "epoch" else self.steps
        x_key = "epoch" if per == "epoch" else "step"
        pairs = [(r[x_key], r[key]) for r in records if r.get(key) is not None]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    @property
    def final_knn_accuracy(self) -> float | None:
        _, accuracies = self.series("knn_accuracy")
        return accuracies[-1] if accuracies else None


def learning_rate(step: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """Linear warm-up to `peak_lr` over `warmup_steps`, then a cosine decay to 0 at `total_steps`."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def save_atomically(state: dict, path: Path) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def run_dir(name: str, preset: str | None = None) -> Path:
    """Where the run called `name` keeps its checkpoints: ``$CLCOURSE_RUNS`` (else ``<repo>/runs``), then
    the preset, then the name (`<repo>` is the current folder when the package is not installed from a
    checkout). Notebooks share runs this way: notebook 02 reuses notebook 01's encoders."""
    from .presets import course_root, get_preset
    root = Path(os.environ.get("CLCOURSE_RUNS") or course_root() / "runs")
    return root / (preset or get_preset().name) / name


def list_checkpoints(checkpoint_dir: str | Path) -> list[Path]:
    """The weight snapshots (`epoch_0005.pt`, ...) written by `train`, oldest first."""
    return sorted(Path(checkpoint_dir).glob("epoch_*.pt"))


def snapshots_by_epoch(checkpoint_dir: str | Path) -> dict[int, Path]:
    """{epoch: snapshot path} for the weight snapshots `train` wrote (every `checkpoint_every` epochs)."""
    return {int(path.stem.removeprefix("epoch_")): path for path in list_checkpoints(checkpoint_dir)}


def load_weights(method: Method, path: str | Path) -> dict:
    """Load the method's weights from a snapshot or from `last.pt`; returns the checkpoint dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    method.load_state_dict(checkpoint["method"])
    return checkpoint


def _rng_state(data_generator, augment_generator) -> dict:
    state = {"torch": torch.get_rng_state(), "data": data_generator.get_state(),
             "augment": augment_generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, data_generator, augment_generator) -> None:
    torch.set_rng_state(state["torch"])
    data_generator.set_state(state["data"])
    augment_generator.set_state(state["augment"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def evaluate_knn(method: Method, knn_data: KnnData, k: int, temperature: float) -> float:
    """kNN accuracy of the method's backbone features (before the projector)."""
    from .evaluate import extract_features, knn_accuracy
    train_features = extract_features(method.backbone, knn_data.train_images)
    test_features = extract_features(method.backbone, knn_data.test_images)
    return knn_accuracy(train_features, knn_data.train_labels.to(train_features.device),
                        test_features, knn_data.test_labels.to(test_features.device), k=k, temperature=temperature)


def optimisation_step(method: Method, step_fn, batch: Batch, optimizer: torch.optim.Optimizer,
                      scaler: torch.amp.GradScaler, amp_dtype: torch.dtype | None) -> tuple[torch.Tensor, dict]:
    """One training step: `step_fn(batch)` (the method's `training_step`, maybe compiled) under autocast
    to `amp_dtype` (None: float32), backward through the gradient scaler, the optimiser step, then the
    method's after-step work (`on_step_end`: a momentum update, enqueuing keys). Returns (loss, logs)."""
    device_type = batch.views[0].device.type
    with torch.autocast(device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        loss, logs = step_fn(batch)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    method.on_step_end()
    return loss, logs


def train(method: Method, images: torch.Tensor, *, labels: torch.Tensor | None = None, epochs: int,
          batch_size: int = 256, lr: float = 0.06, momentum: float = 0.9, weight_decay: float = 5e-4,
          warmup_epochs: int = 0, knn_data: KnnData | None = None, knn_every: int = 1, knn_k: int = 200,
          knn_temperature: float = 0.1, checkpoint_dir: str | Path | None = None, checkpoint_every: int = 1,
          resume: bool = False, seed: int = 0, device: str | torch.device | None = None,
          compile: bool = False, log_every: int = 10, progress: bool = True) -> History:
    """Train `method` on `images` (uint8 [N, 3, H, W]) for `epochs` epochs and return its History.

    SGD with momentum; `lr` is the peak learning rate for a batch of 256 and is scaled linearly with
    `batch_size`. Each epoch visits a fresh random permutation of the images in full batches (the last
    partial batch is dropped so every step has the same shape). With `checkpoint_dir`, `last.pt` is
    written every `checkpoint_every` epochs and at the end, and a weights-only snapshot `epoch_XXXX.pt`
    beside it; `resume=True` continues from `last.pt` (and returns at once if that run is complete).
    """
    require_int_at_least("epochs", epochs, 1)
    require_int_at_least("batch_size", batch_size, 1)
    require_positive("lr", lr)
    require_int_at_least("warmup_epochs", warmup_epochs, 0)
    require_int_at_least("knn_every", knn_every, 1)
    require_int_at_least("checkpoint_every", checkpoint_every, 1)
    require_int_at_least("log_every", log_every, 1)
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a tensor of shape [N, 3, H, W], got {getattr(images, 'shape', type(images))}")
    if images.shape[0] < batch_size:
        raise ValueError(f"batch_size must be at most the number of images ({images.shape[0]}), got {batch_size}")
    if labels is not None and labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} entries but images has {images.shape[0]}; they must match")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir to resume from")

    device = get_device(device)
    images = images.to(device)
    labels = labels.to(device) if labels is not None else None
    method.to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        method.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True  # every step has the same shapes: pick the fastest kernels once
    amp_dtype = autocast_dtype(device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    parameters = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay,
                                fused=device.type == "cuda")
    steps_per_epoch = images.shape[0] // batch_size
    total_steps = epochs * steps_per_epoch
    warmup_steps = warmup_epochs * steps_per_epoch
    peak_lr = lr * batch_size / 256

    data_generator = torch.Generator().manual_seed(seed)                  # order of the images
    augment_generator = torch.Generator(device=device).manual_seed(seed + 1)  # the views
    torch.manual_seed(seed + 2)                                            # anything else a method draws

    history, start_epoch = History(), 0
    checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    if checkpoint_path is not None:
        checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        if resume and checkpoint_path.is_file():
            # Load on the CPU: random-number states must stay CPU byte tensors; load_state_dict copies
            # weights and optimiser state onto the parameters' device.
            state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
            if state["rng"]["augment"].numel() != augment_generator.get_state().numel():
                raise ValueError(f"the checkpoint in {checkpoint_dir} was written on another kind of device than "
                                 f"{device}; resume it there, or start a new run in another checkpoint_dir")
            if state["epochs"] != epochs or state["batch_size"] != batch_size:
                raise ValueError(
                    f"the checkpoint in {checkpoint_dir} is from a run with epochs={state['epochs']}, "
                    f"batch_size={state['batch_size']}; got epochs={epochs}, batch_size={batch_size}")
            method.load_state_dict(state["method"])
            optimizer.load_state_dict(state["optimizer"])
            if state["scaler"] and scaler.is_enabled():  # empty when the run had no fp16 scaler
                scaler.load_state_dict(state["scaler"])
            history = History(**state["history"])
            start_epoch = state["epoch"]
            _set_rng_state(state["rng"], data_generator, augment_generator)

    step_fn = method.training_step
    if compile:
        step_fn = torch.compile(method.training_step)
        if hasattr(method.augment, "compile"):
            method.augment.compile()

    def checkpoint(epoch: int) -> None:
        state = {"method": method.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                 "history": {"steps": history.steps, "epochs": history.epochs}, "epoch": epoch, "epochs": epochs,
                 "batch_size": batch_size, "rng": _rng_state(data_generator, augment_generator)}
        save_atomically(state, checkpoint_path)
        save_atomically({"method": method.state_dict(), "epoch": epoch},
                        checkpoint_path.with_name(f"epoch_{epoch:04d}.pt"))

    bar = tqdm(total=total_steps, initial=start_epoch * steps_per_epoch, disable=not progress,
               desc=type(method).__name__, unit="step")
    # First step (counted from 0) whose loss was not finite, -1 while all are; kept on the device so
    # checking it costs no host synchronisation per step.
    first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
    method.train()
    method.on_train_start(images.shape[0], batch_size)
    for epoch in range(start_epoch, epochs):
        method.on_epoch_start(epoch)
        epoch_start = time.perf_counter()
        order = torch.randperm(images.shape[0], generator=data_generator).to(device)
        loss_sum = torch.zeros((), device=device)
        interval_loss = torch.zeros((), device=device)
        interval_logs: dict[str, torch.Tensor] = {}
        interval_steps, interval_start = 0, time.perf_counter()
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total_steps, warmup_steps, peak_lr)
            index = order[i * batch_size:(i + 1) * batch_size]
            batch_images = images[index]
            views = method.make_views(batch_images, augment_generator)
            if channels_last:
                views = tuple(v.contiguous(memory_format=torch.channels_last) for v in views)
            batch = Batch(views, batch_images, labels[index] if labels is not None else None, index)
            loss, logs = optimisation_step(method, step_fn, batch, optimizer, scaler, amp_dtype)

            loss = loss.detach().float()
            bad = ~torch.isfinite(loss) & (first_bad_step < 0)
            first_bad_step = torch.where(bad, torch.full_like(first_bad_step, step), first_bad_step)
            loss_sum += loss
            interval_loss += loss
            interval_steps += 1
            for key, value in logs.items():
                interval_logs[key] = interval_logs.get(key, 0) + value.detach().float()
            last_in_epoch = i == steps_per_epoch - 1
            if device.type == "cpu" or (step + 1) % log_every == 0 or last_in_epoch:
                _raise_if_nonfinite(first_bad_step, checkpoint_path)
            if (step + 1) % log_every == 0 or last_in_epoch:
                count, elapsed = interval_steps, time.perf_counter() - interval_start
                record = {"step": step + 1, "epoch": epoch + (i + 1) / steps_per_epoch,
                          "loss": interval_loss.item() / count, "lr": optimizer.param_groups[0]["lr"],
                          "images_per_sec": count * batch_size / elapsed}
                record.update({key: value.item() / count for key, value in interval_logs.items()})
                history.steps.append(record)
                bar.set_postfix(loss=f"{record['loss']:.3f}", img_s=f"{record['images_per_sec']:.0f}")
                bar.update(count)
                interval_loss.zero_()
                interval_logs = {}
                interval_steps, interval_start = 0, time.perf_counter()

        epoch_record = {"epoch": epoch + 1, "loss": loss_sum.item() / steps_per_epoch,
                        "seconds": time.perf_counter() - epoch_start}
        if knn_data is not None and ((epoch + 1) % knn_every == 0 or epoch + 1 == epochs):
            epoch_record["knn_accuracy"] = evaluate_knn(method, knn_data, knn_k, knn_temperature)
            bar.set_postfix(loss=f"{epoch_record['loss']:.3f}", knn=f"{epoch_record['knn_accuracy']:.3f}")
        history.epochs.append(epoch_record)
        if checkpoint_path is not None and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs):
            checkpoint(epoch + 1)
    bar.close()
    return history


def _raise_if_nonfinite(first_bad_step: torch.Tensor, checkpoint_path: Path | None) -> None:
    bad_step = int(first_bad_step)
    if bad_step >= 0:
        kept = f"; the last checkpoint ({checkpoint_path}) is intact" if checkpoint_path is not None else ""
        raise NonFiniteLossError(
            f"the loss became NaN or infinite at step {bad_step} (counting from 0); training stopped{kept}. "
            "Try a lower learning rate or a higher temperature.")
