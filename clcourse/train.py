"""One training loop for every method.

    history = train(method, images, preset=preset, run="simclr_t0.5", knn_data=knn_data)

The whole training set lives on the device as uint8; each step indexes a batch, the method makes its
views on the device, and the step runs under mixed precision (bf16 where the GPU has it, fp16 with a
gradient scaler otherwise, fp32 on the CPU) in channels_last layout, optionally compiled. The
learning rate warms up linearly, then follows a cosine. Nothing synchronises with the host inside a
step: the loss is accumulated on the device and read every `log_every` steps.

The budget is one object, a `clcourse.presets.Preset`
(`preset.with_overrides(epochs=3)` for one run).

The same loop runs in several processes under torchrun (`python -m clcourse.run`), with
DistributedDataParallel and a global batch shared by the processes (see `train` and
`clcourse.distributed`).

The loop has five phases: resume (or start), step, log, evaluate (kNN), checkpoint. The run store
(`clcourse.runs`) keeps the checkpoints: everything needed to continue the same run, written
atomically, with the run's configuration (the method and its hyperparameters, optimiser, schedule,
preset, data). A run resumes only with the same configuration and then gives the same numbers as an
uninterrupted run with the same seed.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from .attacks import pixels_checked
from .distributed import (
    ProcessFailure,
    average_batchnorm_statistics,
    chunk,
    data_parallel,
    gather_chunks,
    is_collective_failure,
    is_distributed,
    max_over_processes,
    mean_over_processes,
    process_seed,
    shard,
    sum_over_processes,
    use_sync_batchnorm,
    world,
)
from .methods import Batch, Method, StepOutput
from .presets import (
    MAX_EPOCHS_ENV_VAR,
    MAX_TRAIN_IMAGES_ENV_VAR,
    Preset,
    autocast_dtype,
    capped,
    get_device,
    get_preset,
)
from .runs import CHECKPOINT_NAME, History, run_config, run_folder, save_checkpoint, start_or_resume
from .validation import (
    describe_tensor,
    require_bool,
    require_classes,
    require_images,
    require_int_at_least,
    require_labels,
    require_unit_range,
)

__all__ = ["train", "KnnData", "NonFiniteLossError", "learning_rate", "optimisation_step",
           "evaluate_knn", "resolve_budget"]


class KnnData(NamedTuple):
    """Images and labels for the periodic kNN monitor (uint8 images, ideally
    already on the device)."""
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def _require_knn_data(knn_data) -> KnnData:
    """`knn_data` as a KnnData (a plain tuple of the four is accepted), its labels as int64, its
    images checked once here, so that a bad set fails when training starts rather than at the
    first evaluation."""
    if not isinstance(knn_data, (tuple, list)) or len(knn_data) != 4:
        raise ValueError("knn_data must be KnnData(train_images, train_labels, test_images, "
                         f"test_labels) or a tuple of those four, got {describe_tensor(knn_data)}")
    train_images, train_labels, test_images, test_labels = knn_data
    for name, images in (("knn_data.train_images", train_images),
                         ("knn_data.test_images", test_images)):
        require_images(name, images)
        require_unit_range(name, images)
    return KnnData(train_images,
                   require_labels("knn_data.train_labels", train_labels, len(train_images),
                                  "knn_data.train_images"),
                   test_images,
                   require_labels("knn_data.test_labels", test_labels, len(test_images),
                                  "knn_data.test_images"))


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped and the last checkpoint
    is left as it was."""


def learning_rate(step: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """Linear warm-up to `peak_lr` over `warmup_steps`, then a cosine decay to 0
    at `total_steps`."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def evaluate_knn(method: Method, knn_data: KnnData, k: int, temperature: float) -> float:
    """kNN accuracy of the method's backbone features (before the projector). In several
    processes, each embeds its part of the kNN training images, the feature bank is gathered, and
    each classifies its part of the test images against the whole bank."""
    from .evaluate import knn_accuracy, knn_predict
    if not is_distributed():
        train_features = method.embed(knn_data.train_images, projected=False)
        test_features = method.embed(knn_data.test_images, projected=False)
        return knn_accuracy(train_features, knn_data.train_labels.to(train_features.device),
                            test_features, knn_data.test_labels.to(test_features.device), k=k,
                            temperature=temperature)
    train_count, test_count = len(knn_data.train_images), len(knn_data.test_images)
    train_features = gather_chunks(
        method.embed(knn_data.train_images[chunk(train_count)], projected=False), train_count)
    test_part = chunk(test_count)
    test_features = method.embed(knn_data.test_images[test_part], projected=False)
    predictions = knn_predict(train_features, knn_data.train_labels.to(train_features.device),
                              test_features, k=k, temperature=temperature)
    correct = (predictions == knn_data.test_labels[test_part].to(predictions.device)).sum()
    # in float32, as knn_accuracy's mean in one process
    return (sum_over_processes(correct).float() / test_count).item()


def optimisation_step(method: Method, step_fn, batch: Batch, optimizer: torch.optim.Optimizer,
                      scaler: torch.amp.GradScaler, amp_dtype: torch.dtype | None) -> StepOutput:
    """One training step: `step_fn(batch)` (the method's `training_step`, maybe compiled) under
    autocast to `amp_dtype` (None: float32), backward through the gradient scaler, the optimiser
    step, then the method's after-step work (`on_step_end`: a momentum update, enqueuing keys).
    The step's attacks skip their pixel range check (a host read): its views lie in [0, 1]."""
    device_type = batch.views[0].device.type
    with torch.autocast(device_type, dtype=amp_dtype or torch.float32,
                        enabled=amp_dtype is not None), pixels_checked():
        output = step_fn(batch)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(output.loss).backward()
    scaler.step(optimizer)
    scaler.update()
    method.on_step_end(batch, output)
    return output


# ---------------------------------------------------------------- phases

class _IntervalLog:
    """Log phase: sums of the loss and of the method's logs since the last record, kept on the
    device so that a step never waits for the host; read (one sync) when a record is made."""

    def __init__(self, device: torch.device, start: float):
        self.device, self.run_start = device, start
        self.epoch_loss = torch.zeros((), device=device)
        self._reset()

    def _reset(self) -> None:
        self.loss = torch.zeros((), device=self.device)
        self.logs: dict[str, torch.Tensor] = {}
        self.steps, self.start = 0, time.perf_counter()

    def add(self, loss: torch.Tensor, logs: dict[str, torch.Tensor]) -> None:
        self.loss += loss
        self.epoch_loss += loss
        for key, value in logs.items():
            self.logs[key] = self.logs.get(key, 0) + value.detach().float()
        self.steps += 1

    def record(self, step: int, epoch: float, lr: float, batch_size: int) -> dict:
        """The interval's record: mean loss and logs (over the processes too, when there are
        several), and `batch_size` (the global batch) images per step."""
        now = time.perf_counter()
        count = self.steps
        sums = mean_over_processes(torch.stack([self.loss, *self.logs.values()])).tolist()
        record = {"step": step, "epoch": epoch, "loss": sums[0] / count, "lr": lr,
                  "images_per_sec": count * batch_size / (now - self.start),
                  "elapsed": now - self.run_start}
        record.update({key: value / count for key, value in zip(self.logs, sums[1:])})
        self._reset()
        return record


def _raise_if_nonfinite(first_bad_step: torch.Tensor, checkpoint_path: Path | None) -> None:
    bad_step = int(first_bad_step)
    if bad_step >= 0:
        kept = (f"; the last checkpoint ({checkpoint_path}) is intact"
                if checkpoint_path is not None and checkpoint_path.is_file() else "")
        raise NonFiniteLossError(
            f"the loss became NaN or infinite at step {bad_step} (counting from 0); training "
            f"stopped{kept}. Try a lower learning rate or a higher temperature.")


# ---------------------------------------------------------------- the loop

def resolve_budget(preset: Preset | None, method: Method) -> Preset:
    """The budget a run trains with: `preset` (default `get_preset()`), its epochs at most
    ``$CLCOURSE_MAX_EPOCHS`` (the grading cap), its learning rate the method's own (`method.lr`)
    unless the preset sets one."""
    preset = preset if preset is not None else get_preset()
    if not isinstance(preset, Preset):
        raise ValueError("preset must be a clcourse.presets.Preset (e.g. "
                         f"get_preset().with_overrides(epochs=3)), got {preset!r}")
    return preset.with_overrides(epochs=capped(preset.epochs, MAX_EPOCHS_ENV_VAR),
                                 lr=preset.lr if preset.lr is not None else method.lr)


def train(method: Method, images: torch.Tensor, *, preset: Preset | None = None,
          labels: torch.Tensor | None = None, run: str | None = None,
          checkpoint_dir: str | Path | None = None, resume: bool = True,
          knn_data: KnnData | None = None, seed: int = 0, device: str | torch.device | None = None,
          progress: bool = True, sync_batchnorm: bool = False) -> History:
    """Train `method` on `images` (uint8 [N, 3, H, W]) and return its History.

    Budget: `preset` (a `clcourse.presets.Preset`, default `get_preset()`) gives epochs, batch_size,
    the learning rate (`lr`: the peak SGD learning rate for a batch of 256, scaled linearly with the
    batch size; None, the default, means the method's own `method.lr`), momentum, weight_decay,
    warmup_epochs, knn_every, knn_k, knn_temperature, checkpoint_every, compile and log_every;
    `preset.with_overrides(...)` changes any of them for one run. Each epoch visits a fresh random
    permutation of the images in full batches (the last partial batch is dropped so every step has
    the same shape).

    Checkpoints: `run="simclr_t0.5"` keeps the run in `clcourse.runs.run_dir(run, preset.name)` (or
    give `checkpoint_dir`). `last.pt` is written every `checkpoint_every` epochs and at the end,
    with a weights-only snapshot `epoch_XXXX.pt` beside it. With `resume=True` (the default) an
    existing run in that folder is continued (or returned at once when complete), provided its
    configuration is the same; `resume=False` refuses to start over an existing run. A snapshot
    whose write was interrupted is written again on resume; a checkpoint folder that is not writable
    stops the run before its first epoch. `labels` [N] (a tensor, array or list of integers) reach
    the method in each batch as int64; methods with `requires_labels` need them. `knn_data` (a
    KnnData or a tuple of its four fields) is checked when training starts.

    Several processes (torchrun, `clcourse.run`; see `clcourse.distributed`): called the same way in
    every process of a process group, with the same arguments. `batch_size` is then the global
    batch, of which each of the N processes holds B / N images, and the learning rate scales with
    it: the peak rate is lr x B / 256 whatever N is. Each process keeps its own shard of `images`
    on its device and draws its batches and views with generators seeded from (`seed`, its rank);
    the gradients are averaged by DistributedDataParallel, the contrastive losses see the global
    batch, MoCo shuffles its keys' batch-norm across processes, the kNN monitor gathers its
    feature bank, and only process 0 writes the run folder and shows progress. Every process
    returns the same History. The number of processes is part of the run's configuration (a run
    resumes with as many processes as it started with). `sync_batchnorm=True` normalises with the
    statistics of the global batch (torch's SyncBatchNorm, on GPUs); without it each process
    normalises its own B / N images. A process that dies or hangs stops the others with
    `clcourse.distributed.ProcessFailure` after at most the process group's timeout.
    """
    budget = resolve_budget(preset, method)
    seed = require_int_at_least("seed", seed, 0)
    resume, progress = require_bool("resume", resume), require_bool("progress", progress)
    require_images("images", images)
    if images.dtype != torch.uint8:
        # uint8 only: float pixels in 0..255 would otherwise saturate every view, silently,
        # and the range check of float pixels would cost a host sync per step where they enter
        # the augmentation.
        raise ValueError("images must be uint8 pixels 0..255 (the training set stays on the "
                         f"device as uint8), got {describe_tensor(images)}: convert float pixels "
                         "in [0, 1] with clcourse.augment.to_uint8_images(images), float pixels "
                         "in 0..255 with images.round().to(torch.uint8)")
    if images.shape[0] < budget.batch_size:
        cap = os.environ.get(MAX_TRAIN_IMAGES_ENV_VAR, "").strip()
        capped_by = (f"; ${MAX_TRAIN_IMAGES_ENV_VAR}={cap} caps how many training images "
                     "load_dataset and the presets give" if cap else "")
        raise ValueError(f"batch_size must be at most the number of images ({images.shape[0]}"
                         f"{capped_by}), got {budget.batch_size}")
    if labels is not None:
        labels = require_labels("labels", labels, images.shape[0], "images")
        if method.num_classes is not None:
            require_classes("labels", labels, method.num_classes,
                            f"{type(method).__name__} has num_classes={method.num_classes}")
    if method.requires_labels and labels is None:
        raise ValueError(f"{type(method).__name__} learns from class labels: pass labels=... "
                         "(one per image) to train")
    if knn_data is not None:
        knn_data = _require_knn_data(knn_data)
        if budget.knn_k > len(knn_data.train_images):
            raise ValueError(f"knn_k must be at most the number of kNN training images "
                             f"({len(knn_data.train_images)}), got {budget.knn_k}")
    folder = run_folder(run, checkpoint_dir, budget.name)
    rank, processes = world()
    if budget.batch_size % processes:
        raise ValueError(f"batch_size (the global batch) must be divisible by the number of "
                         f"processes ({processes}), got {budget.batch_size}")
    knn_sizes = (len(knn_data.train_images), len(knn_data.test_images)) if knn_data else ()
    if knn_sizes and min(knn_sizes) < processes:
        raise ValueError("knn_data must hold at least one training and one test image per process "
                         f"({processes}), got {knn_sizes[0]} and {knn_sizes[1]}")
    sync_batchnorm = require_bool("sync_batchnorm", sync_batchnorm) and processes > 1
    config = run_config(method, images, labels, budget, seed, processes, sync_batchnorm)

    device = get_device(device)
    # Several processes: each holds its own shard of the images, and B / N images of every batch.
    shard_positions = shard(images.shape[0], seed)
    if shard_positions is not None:
        images = images[shard_positions.to(images.device)]
        labels = labels[shard_positions.to(labels.device)] if labels is not None else None
        shard_positions = shard_positions.to(device)
    if sync_batchnorm:
        if device.type != "cuda":
            raise ValueError("sync_batchnorm needs GPUs (torch's SyncBatchNorm runs on CUDA), got "
                             f"processes on {device}: leave it False on CPUs")
        use_sync_batchnorm(method)
    images = images.to(device)
    labels = labels.to(device) if labels is not None else None
    method.to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        method.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True  # every step has the same shapes: pick the fastest
                                               # kernels once
    amp_dtype = autocast_dtype(device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=budget.lr,
                                momentum=budget.momentum, weight_decay=budget.weight_decay,
                                fused=device.type == "cuda")
    batch_size = budget.batch_size // processes       # this process's share of each batch
    steps_per_epoch = images.shape[0] // batch_size
    total_steps = budget.epochs * steps_per_epoch
    warmup_steps = budget.warmup_epochs * steps_per_epoch
    peak_lr = budget.lr * budget.batch_size / 256     # linear scaling with the global batch

    # Each process draws its own batches and views (process 0 as a single process would).
    generators = (torch.Generator().manual_seed(process_seed(seed, rank)),         # image order
                  torch.Generator(device=device).manual_seed(process_seed(seed + 1, rank)))  # views
    torch.manual_seed(process_seed(seed + 2, rank))  # anything else a method draws

    # Resume (or start).
    history, start_epoch, snapshot_epochs = start_or_resume(folder, resume, config, device, method,
                                                            optimizer, scaler, generators)
    checkpoint_path = folder / CHECKPOINT_NAME if folder is not None else None
    step_fn = method.training_step if processes == 1 else data_parallel(method, device)
    if budget.compile and method.compilable:
        step_fn = torch.compile(step_fn)
        for recipe in method.view_recipes:
            if hasattr(recipe, "compile"):
                recipe.compile()

    bar = tqdm(total=total_steps, initial=start_epoch * steps_per_epoch,
               disable=not progress or rank != 0, desc=type(method).__name__, unit="step")
    # First step (counted from 0) whose loss was not finite, -1 while all are; kept on the device so
    # checking it costs no host synchronisation per step.
    first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
    method.train()
    method.on_train_start(images.shape[0] * processes, budget.batch_size)
    log = _IntervalLog(device, time.perf_counter())
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, budget.epochs):
            method.on_epoch_start(epoch)
            epoch_start = time.perf_counter()
            log.epoch_loss.zero_()
            order = torch.randperm(images.shape[0], generator=generators[0]).to(device)
            for i in range(steps_per_epoch):
                # Step.
                step = epoch * steps_per_epoch + i
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step, total_steps, warmup_steps, peak_lr)
                index = order[i * batch_size:(i + 1) * batch_size]
                views = method.make_views(images[index], generators[1])
                if channels_last:
                    views = tuple(v.contiguous(memory_format=torch.channels_last) for v in views)
                batch = Batch(views, images[index], labels[index] if labels is not None else None,
                              index if shard_positions is None else shard_positions[index])
                output = optimisation_step(method, step_fn, batch, optimizer, scaler, amp_dtype)

                # Log.
                loss = output.loss.detach().float()
                first_bad_step = torch.where(~torch.isfinite(loss) & (first_bad_step < 0),
                                             torch.full_like(first_bad_step, step), first_bad_step)
                log.add(loss, output.logs)
                last_in_epoch = i == steps_per_epoch - 1
                if device.type == "cpu" or (step + 1) % budget.log_every == 0 or last_in_epoch:
                    _raise_if_nonfinite(max_over_processes(first_bad_step), checkpoint_path)
                if (step + 1) % budget.log_every == 0 or last_in_epoch:
                    record = log.record(step + 1, epoch + (i + 1) / steps_per_epoch,
                                        optimizer.param_groups[0]["lr"], budget.batch_size)
                    history.steps.append(record)
                    bar.set_postfix(loss=f"{record['loss']:.3f}",
                                    img_s=f"{record['images_per_sec']:.0f}")
                    bar.update((step + 1) - bar.n)

            epoch_record = {"epoch": epoch + 1,
                            "loss": mean_over_processes(log.epoch_loss).item() / steps_per_epoch,
                            "seconds": time.perf_counter() - epoch_start}
            # Each process estimated batch-norm statistics on its own batches: one estimate for
            # the evaluation and the checkpoint.
            average_batchnorm_statistics(method)
            # Evaluate.
            if knn_data is not None and ((epoch + 1) % budget.knn_every == 0
                                         or epoch + 1 == budget.epochs):
                epoch_record["knn_accuracy"] = evaluate_knn(method, knn_data, budget.knn_k,
                                                            budget.knn_temperature)
                bar.set_postfix(loss=f"{epoch_record['loss']:.3f}",
                                knn=f"{epoch_record['knn_accuracy']:.3f}")
            history.epochs.append(epoch_record)
            # Checkpoint.
            if folder is not None and ((epoch + 1) % budget.checkpoint_every == 0
                                       or epoch + 1 == budget.epochs):
                snapshot_epochs = [*snapshot_epochs, epoch + 1]
                save_checkpoint(folder, epoch + 1, config, method, optimizer, scaler, history,
                                generators, snapshot_epochs)
    except RuntimeError as error:
        if processes > 1 and not isinstance(error, NonFiniteLossError) \
                and is_collective_failure(error):
            raise ProcessFailure(_failure_message(rank, processes, epoch, error, checkpoint_path,
                                                  snapshot_epochs)) from error
        raise
    bar.close()
    return history


def _failure_message(rank: int, processes: int, epoch: int, error: RuntimeError,
                     checkpoint_path: Path | None, snapshot_epochs: list[int]) -> str:
    """What a process says when a collective operation with the others failed."""
    cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if checkpoint_path is not None and snapshot_epochs:
        kept = (f"the last checkpoint ({checkpoint_path}, epoch {snapshot_epochs[-1]}) is intact: "
                "run the same command again to resume from it")
    else:
        kept = "no checkpoint was written"
    return (f"process {rank} of {processes} stopped in epoch {epoch + 1}: a collective operation "
            f"with the other processes failed ({cause}). Another process has died or hangs (its "
            f"own output says why); {kept}.")
