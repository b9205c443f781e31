"""One training loop for every method.

    history = train(method, images, preset=preset, run="simclr_t0.5", knn_data=knn_data)

The whole training set lives on the device as uint8; each step indexes a batch, the method makes its
views on the device, and the step runs under mixed precision (bf16 where the GPU has it, fp16 with a
gradient scaler otherwise, fp32 on the CPU) in channels_last layout, optionally compiled. The learning
rate warms up linearly, then follows a cosine. Nothing synchronises with the host inside a step: the
loss is accumulated on the device and read every `log_every` steps.

The loop has five phases: resume (or start), step, log, evaluate (kNN), checkpoint. Checkpoints
(`last.pt`, written atomically) hold everything needed to continue the same run: weights, optimiser and
scaler state, the history, the random-number generators, and the run's configuration (the method and
its hyperparameters, optimiser, schedule, preset, data). A run resumes only with the same configuration
and then gives the same numbers as an uninterrupted run with the same seed.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from .methods import Batch, Method, StepOutput
from .presets import MAX_EPOCHS_ENV_VAR, Preset, autocast_dtype, capped, get_device
from .validation import (describe_tensor, require_bool, require_images, require_in_range, require_int_at_least,
                         require_labels, require_positive, require_unit_range)

CHECKPOINT_NAME = "last.pt"
CONFIG_NAME = "config.json"
# What `last.pt` holds besides the run's configuration ("config"); a weights-only snapshot holds "method" and "epoch".
TRAINING_STATE_KEYS = ("method", "optimizer", "scaler", "history", "epoch", "rng")


class KnnData(NamedTuple):
    """Images and labels for the periodic kNN monitor (uint8 images, ideally already on the device)."""
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def _require_knn_data(knn_data) -> KnnData:
    """`knn_data` as a KnnData (a plain tuple of the four is accepted), its labels as int64, its images checked
    once here, so that a bad set fails when training starts rather than at the first evaluation."""
    if not isinstance(knn_data, (tuple, list)) or len(knn_data) != 4:
        raise ValueError("knn_data must be KnnData(train_images, train_labels, test_images, test_labels) or a tuple "
                         f"of those four, got {describe_tensor(knn_data)}")
    train_images, train_labels, test_images, test_labels = knn_data
    for name, images in (("knn_data.train_images", train_images), ("knn_data.test_images", test_images)):
        require_images(name, images)
        require_unit_range(name, images)
    return KnnData(train_images, require_labels("knn_data.train_labels", train_labels, len(train_images),
                                                "knn_data.train_images"),
                   test_images, require_labels("knn_data.test_labels", test_labels, len(test_images),
                                               "knn_data.test_images"))


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped and the last checkpoint is left as it was."""


@dataclass
class History:
    """What happened during training, for plotting: `steps` holds one record per `log_every` steps
    (step, epoch, loss, lr, images_per_sec, elapsed seconds and the method's logs); `epochs` one record
    per epoch (epoch, loss, seconds, and knn_accuracy where it was evaluated)."""
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


@dataclass(frozen=True)
class Settings:
    """The resolved arguments of one `train` call: explicit arguments, else the preset's, else defaults."""
    epochs: int
    batch_size: int
    lr: float                # peak learning rate per 256 images
    momentum: float
    weight_decay: float
    warmup_epochs: int
    knn_every: int
    knn_k: int
    knn_temperature: float
    checkpoint_every: int
    compile: bool
    seed: int
    log_every: int


def learning_rate(step: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """Linear warm-up to `peak_lr` over `warmup_steps`, then a cosine decay to 0 at `total_steps`."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def save_atomically(state, path: Path) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves a half-written file.
    A dict is saved with torch.save; a str (e.g. JSON) as text.

    A write that fails (a full disk, a folder made read-only) removes its temporary file, which on a full disk
    would only fill it further, and raises an OSError that names `path`; the previous file stays as it was.
    A process killed mid-write leaves the temporary file behind: `train` removes such files when it starts."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        if isinstance(state, str):
            tmp.write_text(state)
        else:
            torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        # torch.save reports a failed write as a RuntimeError ("unexpected pos ...", "file write failed").
        if isinstance(error, (OSError, RuntimeError)):
            raise OSError(f"could not write {path} ({type(error).__name__}: {error}); the previous {path.name}, if "
                          "any, is intact. Check that the folder is writable and its disk has room, or write the run "
                          "elsewhere (another checkpoint_dir, or CLCOURSE_RUNS)") from error
        raise


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


def _read_checkpoint(path: Path, keys: tuple[str, ...], remedy: str) -> dict:
    """The dict that `train` saved at `path`, which must hold `keys`. A file that cannot be read (empty,
    truncated, random bytes) or holds something else raises one ValueError naming the file and what to do
    (`remedy`)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)  # RNG states must stay on the CPU
    except Exception as error:   # whatever a damaged file raises, the file is unusable
        raise ValueError(f"{path} cannot be read as a checkpoint ({type(error).__name__}: {error}); it is damaged "
                         f"or not a checkpoint. {remedy}") from error
    missing = [key for key in keys if not isinstance(state, dict) or key not in state]
    if missing:
        raise ValueError(f"{path} is not the checkpoint expected here: it lacks {', '.join(missing)} (a weights-only "
                         f"snapshot, or a file written by something else?). {remedy}")
    return state


def load_weights(method: Method, path: str | Path) -> dict:
    """Load the method's weights from a snapshot or from `last.pt`; returns the checkpoint dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    remedy = "Pass a snapshot (epoch_XXXX.pt) or last.pt written by clcourse.train.train."
    checkpoint = _read_checkpoint(path, ("method",), remedy)
    try:
        method.load_state_dict(checkpoint["method"])
    except RuntimeError as error:
        raise ValueError(f"the weights in {path} do not fit this {type(method).__name__} ({error}); load a "
                         "checkpoint of a run of the same method and architecture") from error
    return checkpoint


def evaluate_knn(method: Method, knn_data: KnnData, k: int, temperature: float) -> float:
    """kNN accuracy of the method's backbone features (before the projector)."""
    from .evaluate import knn_accuracy
    train_features = method.embed(knn_data.train_images, projected=False)
    test_features = method.embed(knn_data.test_images, projected=False)
    return knn_accuracy(train_features, knn_data.train_labels.to(train_features.device),
                        test_features, knn_data.test_labels.to(test_features.device), k=k, temperature=temperature)


def optimisation_step(method: Method, step_fn, batch: Batch, optimizer: torch.optim.Optimizer,
                      scaler: torch.amp.GradScaler, amp_dtype: torch.dtype | None) -> StepOutput:
    """One training step: `step_fn(batch)` (the method's `training_step`, maybe compiled) under autocast
    to `amp_dtype` (None: float32), backward through the gradient scaler, the optimiser step, then the
    method's after-step work (`on_step_end`: a momentum update, enqueuing keys)."""
    device_type = batch.views[0].device.type
    with torch.autocast(device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        output = step_fn(batch)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(output.loss).backward()
    scaler.step(optimizer)
    scaler.update()
    method.on_step_end(batch, output)
    return output


# ---------------------------------------------------------------- configuration

def _resolve(preset: Preset | None, method: Method, **given) -> Settings:
    """Explicit arguments win, then the preset's fields, then the defaults; the learning rate defaults to the
    method's own (`method.lr`); epochs at most ``$CLCOURSE_MAX_EPOCHS``. Validates every value once."""
    defaults = dict(batch_size=256, warmup_epochs=0, knn_every=1, knn_k=200, checkpoint_every=1, compile=False)
    if preset is not None:
        defaults.update({key: getattr(preset, key) for key in ("epochs", *defaults)})
    values = {key: value if value is not None else defaults.get(key) for key, value in given.items()}
    if values["lr"] is None:
        values["lr"] = method.lr
    if values["epochs"] is None:
        raise ValueError("epochs must be given (or a preset, whose epochs are the default), got None")
    # Numpy scalars and 0-d tensors become plain numbers here, as the run's configuration stores them.
    for name in ("epochs", "batch_size", "knn_every", "knn_k", "checkpoint_every", "log_every"):
        values[name] = require_int_at_least(name, values[name], 1)
    values["epochs"] = capped(values["epochs"], MAX_EPOCHS_ENV_VAR)   # grading caps explicit epochs too
    values["warmup_epochs"] = require_int_at_least("warmup_epochs", values["warmup_epochs"], 0)
    values["seed"] = require_int_at_least("seed", values["seed"], 0)
    values["lr"] = require_positive("lr", values["lr"])
    values["knn_temperature"] = require_positive("knn_temperature", values["knn_temperature"])
    values["momentum"] = require_in_range("momentum", values["momentum"], 0.0, 1.0, high_inclusive=False)
    values["weight_decay"] = require_in_range("weight_decay", values["weight_decay"], 0.0, math.inf,
                                              high_inclusive=False)
    values["compile"] = require_bool("compile", values["compile"])
    return Settings(**values)


def _fingerprint(images: torch.Tensor) -> str:
    """A short hash of 64 images spread over the set: changes when the training data does."""
    sample = images[torch.linspace(0, len(images) - 1, min(len(images), 64)).long().to(images.device)]
    return hashlib.sha1(sample.cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def run_config(method: Method, images: torch.Tensor, labels: torch.Tensor | None, settings: Settings,
               preset: Preset | None) -> dict:
    """Everything that decides what a run computes: the method, the optimiser, the schedule, the data, the
    seed and the preset. Stored in every checkpoint and in the run's config.json."""
    return {
        "method": method.config(),
        "optimiser": {"name": "SGD", "lr_per_256_images": settings.lr, "momentum": settings.momentum,
                      "weight_decay": settings.weight_decay},
        "schedule": {"epochs": settings.epochs, "batch_size": settings.batch_size,
                     "warmup_epochs": settings.warmup_epochs},
        "data": {"images": list(images.shape), "fingerprint": _fingerprint(images), "labels": labels is not None},
        "seed": settings.seed,
        "preset": preset.name if preset is not None else None,
    }


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(saved: dict, current: dict) -> list[str]:
    """The fields in which two run configurations differ, as "field: saved value (now: current value)".

    The functions a method was given (`method.functions`) are not compared: an exercise that passed its
    checker computes the library's function, and the notebooks reuse each other's runs."""
    saved, current = _flatten(saved), _flatten(current)
    return [f"{key}: {saved.get(key, '(absent)')!r} (now: {current.get(key, '(absent)')!r})"
            for key in sorted(set(saved) | set(current))
            if not key.startswith("method.functions.") and saved.get(key) != current.get(key)]


# ---------------------------------------------------------------- phases

def _checkpoint_dir(run: str | None, checkpoint_dir: str | Path | None, preset: Preset | None) -> Path | None:
    if run is not None and checkpoint_dir is not None:
        raise ValueError(f"give run (a name under runs/) or checkpoint_dir (a folder), not both; got run={run!r} "
                         f"and checkpoint_dir={str(checkpoint_dir)!r}")
    if run is not None:
        if not isinstance(run, str) or not run or "/" in run or "\\" in run:
            raise ValueError(f"run must be a non-empty name without slashes, got {run!r}")
        return run_dir(run, preset.name if preset is not None else None)
    return Path(checkpoint_dir) if checkpoint_dir is not None else None


def _prepare_folder(folder: Path) -> None:
    """Create the run folder; remove the temporary files of writes that were interrupted."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"cannot create the run folder {folder} ({type(error).__name__}: {error}); choose another "
                      "checkpoint_dir, or set CLCOURSE_RUNS to a writable folder") from error
    for stale in folder.glob("*.tmp"):      # left by a write that was interrupted
        stale.unlink()


def _require_writable(folder: Path) -> None:
    """Called before a run trains (a finished run is only read): a folder where no checkpoint can be saved
    fails now, not after the first epoch."""
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"the run folder {folder} is not writable, so no checkpoint could be saved: make it "
                              "writable, choose another checkpoint_dir, or set CLCOURSE_RUNS to a writable folder")


def _snapshot_path(folder: Path, epoch: int) -> Path:
    return folder / f"epoch_{epoch:04d}.pt"


def _restore_snapshots(folder: Path, state: dict) -> list[int]:
    """The epochs of the run's snapshots. The snapshot of the checkpoint's own epoch is written again when its
    write was interrupted (the checkpoint holds those very weights); older snapshots that are gone cannot be
    re-created, and a warning says so."""
    epoch = state["epoch"]
    snapshot_epochs = state.get("snapshots", [epoch])
    if epoch in snapshot_epochs and not _snapshot_path(folder, epoch).is_file():
        save_atomically({"method": state["method"], "epoch": epoch}, _snapshot_path(folder, epoch))
    lost = [e for e in snapshot_epochs if not _snapshot_path(folder, e).is_file()]
    if lost:
        warnings.warn(f"the snapshots of epochs {lost} are missing from {folder} and cannot be re-created (their "
                      f"weights are gone; only the epoch of {CHECKPOINT_NAME}, {epoch}, could be); "
                      "snapshots_by_epoch will not list them", stacklevel=3)
    return snapshot_epochs


def _start_or_resume(folder: Path | None, resume: bool, config: dict, device: torch.device, method: Method,
                     optimizer, scaler, generators) -> tuple[History, int, list[int]]:
    """Resume phase: the history, first epoch and snapshot epochs of the run in `folder` (restoring weights,
    optimiser, scaler and random generators), or a fresh History, epoch 0 and no snapshots. Refuses a run of
    another configuration, a fresh start over an existing run, and a damaged or foreign checkpoint."""
    if folder is None:
        return History(), 0, []
    checkpoint_path = folder / CHECKPOINT_NAME
    existing = [p.name for p in (checkpoint_path, *list_checkpoints(folder)) if p.is_file()]
    listing = f"{', '.join(existing[:3])}{', ...' if len(existing) > 3 else ''}"
    if existing and not resume:
        raise ValueError(
            f"the run folder {folder} already holds a run ({listing}) and resume=False would mix a new run's files "
            "with it: pass resume=True to continue it, choose another run name, or delete the folder")
    if existing and not checkpoint_path.is_file():
        raise ValueError(
            f"the run folder {folder} holds snapshots ({listing}) but no {CHECKPOINT_NAME} to continue from, and a "
            "new run would mix its snapshots with them: choose another run name, or delete the folder")
    _prepare_folder(folder)
    if not checkpoint_path.is_file():
        _require_writable(folder)
        save_atomically(json.dumps(config, indent=2), folder / CONFIG_NAME)
        return History(), 0, []

    remedy = f"Choose another run name to start a new run, or delete the folder {folder} to start this one afresh."
    state = _read_checkpoint(checkpoint_path, TRAINING_STATE_KEYS, remedy)
    if "config" not in state:
        raise ValueError(f"the checkpoint {checkpoint_path} was written by an older version of clcourse and holds no "
                         "configuration, so it cannot be checked: delete the folder or choose another run name")
    differences = config_differences(state["config"], config)
    if differences:
        raise ValueError(
            f"the run in {folder} was trained with another configuration, so it is not continued. Differences: "
            + "; ".join(differences) + ". Use the same settings to continue it, another run name to start a new "
            "run, or delete the folder.")
    data_generator, augment_generator = generators
    if state["rng"]["augment"].numel() != augment_generator.get_state().numel():
        raise ValueError(f"the checkpoint in {folder} was written on another kind of device than {device}; resume "
                         "it there, or start a new run under another name")
    try:
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        if state["scaler"] and scaler.is_enabled():  # empty when the run had no fp16 scaler
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"], data_generator, augment_generator)
        history = History(**state["history"])
    except Exception as error:   # a checkpoint whose configuration matches but whose contents do not fit
        raise ValueError(f"{checkpoint_path} could not be restored ({type(error).__name__}: {error}). "
                         f"{remedy}") from error
    if state["epoch"] < config["schedule"]["epochs"]:
        _require_writable(folder)
    return history, state["epoch"], _restore_snapshots(folder, state)


def _save_checkpoint(folder: Path, epoch: int, config: dict, method: Method, optimizer, scaler, history: History,
                     generators, snapshot_epochs: list[int]) -> None:
    """Checkpoint phase: `last.pt` (everything to continue the run, and the epochs of its snapshots, this one
    included) and a weights-only `epoch_XXXX.pt`. A resume re-creates the latter if its write was interrupted."""
    state = {"method": method.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
             "history": {"steps": history.steps, "epochs": history.epochs}, "epoch": epoch, "config": config,
             "rng": _rng_state(*generators), "snapshots": snapshot_epochs}
    save_atomically(state, folder / CHECKPOINT_NAME)
    save_atomically({"method": method.state_dict(), "epoch": epoch}, _snapshot_path(folder, epoch))


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


class _IntervalLog:
    """Log phase: sums of the loss and of the method's logs since the last record, kept on the device so that
    a step never waits for the host; read (one sync) when a record is made."""

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
        now = time.perf_counter()
        count = self.steps
        record = {"step": step, "epoch": epoch, "loss": self.loss.item() / count, "lr": lr,
                  "images_per_sec": count * batch_size / (now - self.start), "elapsed": now - self.run_start}
        record.update({key: value.item() / count for key, value in self.logs.items()})
        self._reset()
        return record


def _raise_if_nonfinite(first_bad_step: torch.Tensor, checkpoint_path: Path | None) -> None:
    bad_step = int(first_bad_step)
    if bad_step >= 0:
        kept = (f"; the last checkpoint ({checkpoint_path}) is intact"
                if checkpoint_path is not None and checkpoint_path.is_file() else "")
        raise NonFiniteLossError(
            f"the loss became NaN or infinite at step {bad_step} (counting from 0); training stopped{kept}. "
            "Try a lower learning rate or a higher temperature.")


# ---------------------------------------------------------------- the loop

def train(method: Method, images: torch.Tensor, *, labels: torch.Tensor | None = None, preset: Preset | None = None,
          run: str | None = None, checkpoint_dir: str | Path | None = None, resume: bool = True,
          epochs: int | None = None, batch_size: int | None = None, lr: float | None = None, momentum: float = 0.9,
          weight_decay: float = 5e-4, warmup_epochs: int | None = None, knn_data: KnnData | None = None,
          knn_every: int | None = None, knn_k: int | None = None, knn_temperature: float = 0.1,
          checkpoint_every: int | None = None, seed: int = 0, device: str | torch.device | None = None,
          compile: bool | None = None, log_every: int = 10, progress: bool = True) -> History:
    """Train `method` on `images` (uint8 [N, 3, H, W]) and return its History.

    Budget: `preset` (a `clcourse.presets.Preset`) supplies epochs, batch_size, warmup_epochs, knn_every,
    knn_k, checkpoint_every and compile; any of them given here wins. `lr` is the peak SGD learning rate for a
    batch of 256 (scaled linearly with `batch_size`) and defaults to the method's own `method.lr`.
    Each epoch visits a fresh random permutation of the images in full batches (the last partial batch is
    dropped so every step has the same shape).

    Checkpoints: `run="simclr_t0.5"` keeps the run in `run_dir(run, preset.name)` (or give `checkpoint_dir`).
    `last.pt` is written every `checkpoint_every` epochs and at the end, with a weights-only snapshot
    `epoch_XXXX.pt` beside it. With `resume=True` (the default) an existing run in that folder is continued
    (or returned at once when complete), provided its configuration is the same; `resume=False` refuses to
    start over an existing run. A snapshot whose write was interrupted is written again on resume; a
    checkpoint folder that is not writable stops the run before its first epoch. `labels` [N] (a tensor,
    array or list of integers) reach the method in each batch as int64; methods with `requires_labels` need
    them. `knn_data` (a KnnData or a tuple of its four fields) is checked when training starts.
    """
    settings = _resolve(preset, method, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                        weight_decay=weight_decay, warmup_epochs=warmup_epochs, knn_every=knn_every, knn_k=knn_k,
                        knn_temperature=knn_temperature, checkpoint_every=checkpoint_every, compile=compile,
                        seed=seed, log_every=log_every)
    resume, progress = require_bool("resume", resume), require_bool("progress", progress)
    require_images("images", images)
    if images.dtype != torch.uint8:
        # uint8 only: float pixels in 0..255 would otherwise saturate every view, silently, and the range check of
        # float pixels would cost a host sync per step where they enter the augmentation.
        raise ValueError(f"images must be uint8 pixels 0..255 (the training set stays on the device as uint8), got "
                         f"{describe_tensor(images)}: convert float pixels in [0, 1] with "
                         "clcourse.augment.to_uint8_images(images), float pixels in 0..255 with "
                         "images.round().to(torch.uint8)")
    if images.shape[0] < settings.batch_size:
        raise ValueError(f"batch_size must be at most the number of images ({images.shape[0]}), "
                         f"got {settings.batch_size}")
    if labels is not None:
        labels = require_labels("labels", labels, images.shape[0], "images")
    if method.requires_labels and labels is None:
        raise ValueError(f"{type(method).__name__} learns from class labels: pass labels=... (one per image) to train")
    if knn_data is not None:
        knn_data = _require_knn_data(knn_data)
        if settings.knn_k > len(knn_data.train_images):
            raise ValueError(f"knn_k must be at most the number of kNN training images "
                             f"({len(knn_data.train_images)}), got {settings.knn_k}")
    folder = _checkpoint_dir(run, checkpoint_dir, preset)

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
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=settings.lr,
                                momentum=settings.momentum, weight_decay=settings.weight_decay,
                                fused=device.type == "cuda")
    steps_per_epoch = images.shape[0] // settings.batch_size
    total_steps = settings.epochs * steps_per_epoch
    warmup_steps = settings.warmup_epochs * steps_per_epoch
    peak_lr = settings.lr * settings.batch_size / 256

    generators = (torch.Generator().manual_seed(settings.seed),                    # order of the images
                  torch.Generator(device=device).manual_seed(settings.seed + 1))   # the views
    torch.manual_seed(settings.seed + 2)                                            # anything else a method draws

    # Resume (or start).
    config = run_config(method, images, labels, settings, preset)
    history, start_epoch, snapshot_epochs = _start_or_resume(folder, resume, config, device, method, optimizer, scaler,
                                                             generators)
    checkpoint_path = folder / CHECKPOINT_NAME if folder is not None else None
    step_fn = method.training_step
    if settings.compile and method.compilable:
        step_fn = torch.compile(method.training_step)
        for recipe in method.view_recipes:
            if hasattr(recipe, "compile"):
                recipe.compile()

    bar = tqdm(total=total_steps, initial=start_epoch * steps_per_epoch, disable=not progress,
               desc=type(method).__name__, unit="step")
    # First step (counted from 0) whose loss was not finite, -1 while all are; kept on the device so
    # checking it costs no host synchronisation per step.
    first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
    method.train()
    method.on_train_start(images.shape[0], settings.batch_size)
    log = _IntervalLog(device, time.perf_counter())
    for epoch in range(start_epoch, settings.epochs):
        method.on_epoch_start(epoch)
        epoch_start = time.perf_counter()
        log.epoch_loss.zero_()
        order = torch.randperm(images.shape[0], generator=generators[0]).to(device)
        for i in range(steps_per_epoch):
            # Step.
            step = epoch * steps_per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total_steps, warmup_steps, peak_lr)
            index = order[i * settings.batch_size:(i + 1) * settings.batch_size]
            views = method.make_views(images[index], generators[1])
            if channels_last:
                views = tuple(v.contiguous(memory_format=torch.channels_last) for v in views)
            batch = Batch(views, images[index], labels[index] if labels is not None else None, index)
            output = optimisation_step(method, step_fn, batch, optimizer, scaler, amp_dtype)

            # Log.
            loss = output.loss.detach().float()
            first_bad_step = torch.where(~torch.isfinite(loss) & (first_bad_step < 0),
                                         torch.full_like(first_bad_step, step), first_bad_step)
            log.add(loss, output.logs)
            last_in_epoch = i == steps_per_epoch - 1
            if device.type == "cpu" or (step + 1) % settings.log_every == 0 or last_in_epoch:
                _raise_if_nonfinite(first_bad_step, checkpoint_path)
            if (step + 1) % settings.log_every == 0 or last_in_epoch:
                record = log.record(step + 1, epoch + (i + 1) / steps_per_epoch, optimizer.param_groups[0]["lr"],
                                    settings.batch_size)
                history.steps.append(record)
                bar.set_postfix(loss=f"{record['loss']:.3f}", img_s=f"{record['images_per_sec']:.0f}")
                bar.update((step + 1) - bar.n)

        epoch_record = {"epoch": epoch + 1, "loss": log.epoch_loss.item() / steps_per_epoch,
                        "seconds": time.perf_counter() - epoch_start}
        # Evaluate.
        if knn_data is not None and ((epoch + 1) % settings.knn_every == 0 or epoch + 1 == settings.epochs):
            epoch_record["knn_accuracy"] = evaluate_knn(method, knn_data, settings.knn_k, settings.knn_temperature)
            bar.set_postfix(loss=f"{epoch_record['loss']:.3f}", knn=f"{epoch_record['knn_accuracy']:.3f}")
        history.epochs.append(epoch_record)
        # Checkpoint.
        if folder is not None and ((epoch + 1) % settings.checkpoint_every == 0 or epoch + 1 == settings.epochs):
            snapshot_epochs = [*snapshot_epochs, epoch + 1]
            _save_checkpoint(folder, epoch + 1, config, method, optimizer, scaler, history, generators, snapshot_epochs)
    bar.close()
    return history
