"""The run store: where a training run keeps its checkpoints, and how it is resumed.

A run lives in a folder, `run_dir(name)` (``$CLCOURSE_RUNS/<preset>/<name>``) or one the caller
gives: `config.json` (the run's configuration), `last.pt` (everything needed to continue the run:
weights, optimiser and scaler state, the history, the random-number generators and the
configuration) and weight snapshots `epoch_XXXX.pt`. Every file is written atomically
(`save_atomically`). A run resumes only with the same configuration (`run_config`,
`config_differences`), and a damaged or foreign checkpoint is refused by name.

Notebooks share runs by name: `simclr_run` and `moco_run` name the runs that notebooks 02 and 04
reuse from notebooks 01 and 03 (notebook 09 reuses notebook 08's encoders through
`clcourse.robustness.encoder_run_name`).

The same run: what a run computes depends on the functions its method was given (a student's loss,
the library's MoCo step...), so the configuration records each by name and by a fingerprint of its
code (`clcourse.identity`). A run in the folder is the run asked for when every other setting is the
same (else the request is refused, as above) and, role by role, its function is

- the same code (the same fingerprint: the same function, or a copy of it in another notebook), or
- a function that passed the exercise checker of the library function now asked for: notebook 01
  trains SimCLR with the student's InfoNCE, once it passed `check_info_nce`, and notebook 02, which
  asks for the library's InfoNCE, analyses that run rather than training its own. Not the other way
  round: a student's function is never given a run of the library's, nor of another student's.

A run of other functions (the solution notebook's loss when the student copy asks with its own, a
function since edited) is not continued and not returned: it is set aside, renamed
``<name>.fn-<key>`` beside the folder (the key hashes its functions' fingerprints), and the run of
the functions asked for is restored from its own such folder if it was set aside before, else
trained anew. So two notebook copies with different functions each keep their own run under the same
name, and `run_dir(name)` is always the run last asked for. At most `SET_ASIDE_KEPT` runs are kept
aside per name (the oldest goes). Each of these steps, and the reuse of a finished run, prints a
line that says so and where the run came from.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .distributed import from_first_process, gather_objects, is_distributed, world
from .methods import Method
from .presets import Preset
from .validation import require_bool

__all__ = ["History", "CHECKPOINT_NAME", "CONFIG_NAME", "SET_ASIDE_KEPT", "run_dir", "simclr_run",
           "moco_run", "run_folder", "save_atomically", "list_checkpoints", "snapshots_by_epoch",
           "load_weights", "run_config", "config_differences", "function_differences",
           "start_or_resume", "save_checkpoint"]

CHECKPOINT_NAME = "last.pt"
CONFIG_NAME = "config.json"
# What `last.pt` holds besides the run's configuration ("config"); a weights-only snapshot holds
# "method" and "epoch".
TRAINING_STATE_KEYS = ("method", "optimizer", "scaler", "history", "epoch", "rng")
# Runs of other functions kept aside per run name (see the module's docstring).
SET_ASIDE_KEPT = 3


@dataclass
class History:
    """What happened during training, for plotting: `steps` holds one record per `log_every` steps
    (step, epoch, loss, lr, images_per_sec, elapsed seconds and the method's logs); `epochs` one
    record per epoch (epoch, loss, seconds, and knn_accuracy where it was evaluated)."""
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


def save_atomically(state, path: Path) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves a
    half-written file. A dict is saved with torch.save; a str (e.g. JSON) as text.

    A write that fails (a full disk, a folder made read-only) removes its temporary file, which on a
    full disk would only fill it further, and raises an OSError that names `path`; the previous file
    stays as it was. A process killed mid-write leaves the temporary file behind: `train` removes
    such files when it starts."""
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
        # torch.save reports a failed write as a RuntimeError ("unexpected pos ...",
        # "file write failed").
        if isinstance(error, (OSError, RuntimeError)):
            raise OSError(f"could not write {path} ({type(error).__name__}: {error}); the "
                          f"previous {path.name}, if any, is intact. Check that the folder is "
                          "writable and its disk has room, or write the run elsewhere (another "
                          "checkpoint_dir, or CLCOURSE_RUNS)") from error
        raise


def run_dir(name: str, preset: str | None = None) -> Path:
    """Where the run called `name` keeps its checkpoints: ``$CLCOURSE_RUNS`` (else ``<repo>/runs``),
    then the preset, then the name (`<repo>` is the current folder when the package is not installed
    from a checkout). Notebooks share runs this way: notebook 02 reuses notebook 01's encoders."""
    from .presets import course_root, get_preset
    root = Path(os.environ.get("CLCOURSE_RUNS") or course_root() / "runs")
    return root / (preset or get_preset().name) / name


def list_checkpoints(checkpoint_dir: str | Path) -> list[Path]:
    """The weight snapshots (`epoch_0005.pt`, ...) written by `train`, oldest first."""
    return sorted(Path(checkpoint_dir).glob("epoch_*.pt"))


def snapshots_by_epoch(checkpoint_dir: str | Path) -> dict[int, Path]:
    """{epoch: snapshot path} for the weight snapshots `train` wrote (every
    `checkpoint_every` epochs)."""
    return {int(path.stem.removeprefix("epoch_")): path
            for path in list_checkpoints(checkpoint_dir)}


def _read_checkpoint(path: Path, keys: tuple[str, ...], remedy: str) -> dict:
    """The dict that `train` saved at `path`, which must hold `keys`. A file that cannot be read
    (empty, truncated, random bytes) or holds something else raises one ValueError naming the file
    and what to do (`remedy`)."""
    try:
        # RNG states must stay on the CPU
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:   # whatever a damaged file raises, the file is unusable
        raise ValueError(f"{path} cannot be read as a checkpoint ({type(error).__name__}: "
                         f"{error}); it is damaged or not a checkpoint. {remedy}") from error
    missing = [key for key in keys if not isinstance(state, dict) or key not in state]
    if missing:
        raise ValueError(f"{path} is not the checkpoint expected here: it lacks "
                         f"{', '.join(missing)} (a weights-only snapshot, or a file written by "
                         f"something else?). {remedy}")
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
        raise ValueError(f"the weights in {path} do not fit this "
                         f"{type(method).__name__} ({error}); load a checkpoint of a "
                         "run of the same method and architecture") from error
    return checkpoint


def simclr_run(temperature: float, sweep: bool = False) -> str:
    """The name of notebook 01's SimCLR run at `temperature` (the main run, or a run of its
    temperature sweep with `sweep=True`), which notebooks 02 and 04 reuse."""
    sweep = require_bool("sweep", sweep)
    return f"simclr_{'sweep_' if sweep else ''}t{temperature}"


def moco_run(queue_size: int, momentum: float) -> str:
    """The name of notebook 03's MoCo v2 run with this queue and momentum, which
    notebook 04 reuses."""
    return f"moco_k{queue_size}_m{momentum}"


def _fingerprint(images: torch.Tensor) -> str:
    """A short hash of 64 images spread over the set: changes when the training data does."""
    sample = images[torch.linspace(0, len(images) - 1,
                                   min(len(images), 64)).long().to(images.device)]
    return hashlib.sha1(sample.cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def run_config(method: Method, images: torch.Tensor, labels: torch.Tensor | None, budget: Preset,
               seed: int, processes: int = 1, sync_batchnorm: bool = False) -> dict:
    """Everything that decides what a run computes: the method, the optimiser, the schedule, the
    data, the seed and the preset (`budget`, its learning rate resolved), and, for a run in several
    processes, their number and whether batch-norm is synchronised (`images` is then the whole
    training set, of which each process holds a shard). Stored in every checkpoint and in the run's
    config.json."""
    config = {
        "method": method.config(),
        "optimiser": {"name": "SGD", "lr_per_256_images": budget.lr, "momentum": budget.momentum,
                      "weight_decay": budget.weight_decay},
        "schedule": {"epochs": budget.epochs, "batch_size": budget.batch_size,
                     "warmup_epochs": budget.warmup_epochs},
        "data": {"images": list(images.shape), "fingerprint": _fingerprint(images),
                 "labels": labels is not None},
        "seed": seed,
        "preset": budget.name,
    }
    if processes > 1:
        config["distributed"] = {"processes": processes, "sync_batchnorm": sync_batchnorm}
    return config


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(saved: dict, current: dict) -> list[str]:
    """The fields in which two run configurations differ, as "field: saved value
    (now: current value)".

    The functions a method was given (`method.functions`) are compared apart, by
    `function_differences`: a run of other functions is set aside, not refused."""
    saved, current = _flatten(saved), _flatten(current)
    return [f"{key}: {saved.get(key, '(absent)')!r} (now: {current.get(key, '(absent)')!r})"
            for key in sorted(set(saved) | set(current))
            if not key.startswith("method.functions.") and saved.get(key) != current.get(key)]


def _functions(config: dict) -> dict:
    return config.get("method", {}).get("functions", {})


def _described(record) -> str:
    """A recorded function in words: its name and code fingerprint (an older run recorded the
    name alone)."""
    if not isinstance(record, dict):
        return f"{record} (code not recorded)" if record is not None else "none"
    checked = record.get("checked")
    return (f"{record['name']} (code {record['code']}"
            + (f", passed the checker of {', '.join(checked)}" if checked else "") + ")")


def _same_function(saved, asked) -> bool:
    """Whether the run's function `saved` is the function `asked` for (function records; see the
    module's docstring): the same code, or one that passed the checker of the library function
    asked for."""
    if saved is None or asked is None:
        return saved is None and asked is None
    if not isinstance(saved, dict) or not isinstance(asked, dict):
        return False
    if saved.get("code") == asked.get("code"):
        return True
    return (asked["name"].split(".")[0] == "clcourse"
            and asked["name"] in (saved.get("checked") or ()))


def function_differences(saved: dict, current: dict) -> list[str]:
    """The roles whose function differs between two run configurations (`_same_function`), as
    "role: saved function (now: asked function)"."""
    saved, current = _functions(saved), _functions(current)
    return [f"{role}: {_described(saved.get(role))} (now: {_described(current.get(role))})"
            for role in sorted(set(saved) | set(current))
            if not _same_function(saved.get(role), current.get(role))]


def _functions_key(config: dict) -> str:
    """12 hex digits naming a run's functions, for the folder it is set aside in."""
    codes = {role: record.get("code") if isinstance(record, dict) else record
             for role, record in _functions(config).items()}
    return hashlib.sha1(json.dumps(codes, sort_keys=True).encode()).hexdigest()[:12]


def _aside(folder: Path, config: dict) -> Path:
    return folder.with_name(f"{folder.name}.fn-{_functions_key(config)}")


def _set_aside(folder: Path, saved: dict, asked: dict) -> None:
    """Rename the run in `folder` (its configuration `saved`) beside it, out of the way of the run
    of `asked`'s functions, and bring that one back if it was set aside before; print what was
    done. At most SET_ASIDE_KEPT runs stay aside per name."""
    aside = _aside(folder, saved)
    if aside.exists():
        raise ValueError(f"the run in {folder} was trained with other functions and would be set "
                         f"aside in {aside}, which already exists: move one of them away")
    differences = "; ".join(function_differences(saved, asked))
    os.replace(folder, aside)
    print(f"{folder} held a run of other functions ({differences}): kept aside in {aside.name}, "
          "and brought back when those functions are asked for again")
    kept = sorted(folder.parent.glob(f"{folder.name}.fn-*"), key=lambda path: path.stat().st_mtime)
    for old in kept[:-SET_ASIDE_KEPT]:
        shutil.rmtree(old)
        print(f"removed {old}, the oldest of the runs kept aside for {folder.name} (at most "
              f"{SET_ASIDE_KEPT} are kept)")
    mine = _aside(folder, asked)
    if mine.is_dir():
        os.replace(mine, folder)
        print(f"{folder}: the run of these functions, set aside in {mine.name}, is back")


def _reused(folder: Path, state: dict, asked: dict, name: str) -> None:
    """The line that says a finished run is reused, and where it came from."""
    saved_at = (folder / CHECKPOINT_NAME).stat().st_mtime
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(saved_at))
    saved = _functions(state["config"])
    stand_ins = [f"{role} {_described(record)} for {_described(_functions(asked).get(role))}"
                 for role, record in saved.items()
                 if isinstance(record, dict) and record.get("code")
                 != (_functions(asked).get(role) or {}).get("code")]
    print(f"{name}: the finished run in {folder} ({state['epoch']} epochs, saved {when}) is reused"
          + (f", trained with {'; '.join(stand_ins)}" if stand_ins else "")
          + ". Delete the folder, or choose another run name, to train again.")


def run_folder(run: str | None, checkpoint_dir: str | Path | None, preset: str) -> Path | None:
    """The folder of the run called `run` (under `run_dir`) or `checkpoint_dir`; None when neither
    is given (a run that keeps no checkpoint)."""
    if run is not None and checkpoint_dir is not None:
        raise ValueError("give run (a name under runs/) or checkpoint_dir (a folder), not both; "
                         f"got run={run!r} and checkpoint_dir={str(checkpoint_dir)!r}")
    if run is not None:
        if not isinstance(run, str) or not run or "/" in run or "\\" in run:
            raise ValueError(f"run must be a non-empty name without slashes, got {run!r}")
        return run_dir(run, preset)
    return Path(checkpoint_dir) if checkpoint_dir is not None else None


def _prepare_folder(folder: Path) -> None:
    """Create the run folder; remove the temporary files of writes that were interrupted."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"cannot create the run folder {folder} "
                      f"({type(error).__name__}: {error}); choose another "
                      "checkpoint_dir, or set CLCOURSE_RUNS to a writable folder") from error
    for stale in folder.glob("*.tmp"):      # left by a write that was interrupted
        stale.unlink()


def _require_writable(folder: Path) -> None:
    """Called before a run trains (a finished run is only read): a folder where no checkpoint can be
    saved fails now, not after the first epoch."""
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"the run folder {folder} is not writable, so no checkpoint could "
                              "be saved: make it writable, choose another checkpoint_dir, or set "
                              "CLCOURSE_RUNS to a writable folder")


def _snapshot_path(folder: Path, epoch: int) -> Path:
    return folder / f"epoch_{epoch:04d}.pt"


def _restore_snapshots(folder: Path, state: dict) -> tuple[list[int], list[int]]:
    """The epochs of the run's snapshots, and those of them that are lost. The snapshot of the
    checkpoint's own epoch is written again when its write was interrupted (the checkpoint holds
    those very weights); older snapshots that are gone cannot be re-created."""
    epoch = state["epoch"]
    snapshot_epochs = state.get("snapshots", [epoch])
    if epoch in snapshot_epochs and not _snapshot_path(folder, epoch).is_file():
        save_atomically({"method": state["method"], "epoch": epoch}, _snapshot_path(folder, epoch))
    lost = [e for e in snapshot_epochs if not _snapshot_path(folder, e).is_file()]
    return snapshot_epochs, lost


def _open_run(folder: Path, resume: bool, config: dict, device: torch.device,
              augment_generator: torch.Generator) -> dict | None:
    """The checkpoint of the run in `folder`, checked against `config`, or None for a new run
    (the folder made, its config.json written). Refuses a run of another configuration, a fresh
    start over an existing run, and a damaged or foreign checkpoint."""
    checkpoint_path = folder / CHECKPOINT_NAME
    existing = [p.name for p in (checkpoint_path, *list_checkpoints(folder)) if p.is_file()]
    listing = f"{', '.join(existing[:3])}{', ...' if len(existing) > 3 else ''}"
    if existing and not resume:
        raise ValueError(
            f"the run folder {folder} already holds a run ({listing}) and resume=False would mix "
            "a new run's files with it: pass resume=True to continue it, choose another run "
            "name, or delete the folder")
    if existing and not checkpoint_path.is_file():
        raise ValueError(
            f"the run folder {folder} holds snapshots ({listing}) but no {CHECKPOINT_NAME} to "
            "continue from, and a new run would mix its snapshots with them: choose another run "
            "name, or delete the folder")
    _prepare_folder(folder)
    if not checkpoint_path.is_file():
        _require_writable(folder)
        save_atomically(json.dumps(config, indent=2), folder / CONFIG_NAME)
        return None

    state = _read_checkpoint(checkpoint_path, TRAINING_STATE_KEYS, _resume_remedy(folder))
    if "config" not in state:
        raise ValueError(f"the checkpoint {checkpoint_path} was written by an older version of "
                         "clcourse and holds no configuration, so it cannot be checked: delete "
                         "the folder or choose another run name")
    differences = config_differences(state["config"], config)
    if differences:
        raise ValueError(
            f"the run in {folder} was trained with another configuration, so it is not "
            "continued. Differences: " + "; ".join(differences) + ". Use the same settings to "
            "continue it, another run name to start a new run, or delete the folder.")
    if function_differences(state["config"], config):
        _set_aside(folder, state["config"], config)
        return _open_run(folder, resume, config, device, augment_generator)
    if state["rng"]["augment"].numel() != augment_generator.get_state().numel():
        raise ValueError(f"the checkpoint in {folder} was written on another kind of device than "
                         f"{device}; resume it there, or start a new run under another name")
    return state


def _resume_remedy(folder: Path) -> str:
    return (f"Choose another run name to start a new run, or delete the folder {folder} to "
            "start this one afresh.")


def _finish_resume(folder: Path, state: dict, config: dict,
                   name: str) -> tuple[list[int], list[int]]:
    """After the training state is restored: the folder must be writable if the run is to go on,
    and a finished run that is reused says so; the snapshot epochs, and the lost ones
    (`_restore_snapshots`)."""
    if state["epoch"] < config["schedule"]["epochs"]:
        _require_writable(folder)
    else:
        _reused(folder, state, config, name)
    return _restore_snapshots(folder, state)


def start_or_resume(folder: Path | None, resume: bool, config: dict, device: torch.device,
                    method: Method, optimizer, scaler,
                    generators) -> tuple[History, int, list[int]]:
    """Resume phase: the history, first epoch and snapshot epochs of the run in `folder` (restoring
    weights, optimiser and scaler state and random generators), or a fresh History, epoch 0 and no
    snapshots. Refuses a run of another configuration, a fresh start over an existing run, and a
    damaged or foreign checkpoint.

    In several processes, process 0 alone reads and writes the folder and hands the checkpoint (or
    the error it met) to the others; each restores its own random generators."""
    if folder is None:
        return History(), 0, []
    data_generator, augment_generator = generators
    state = from_first_process(lambda: _open_run(folder, resume, config, device,
                                                 augment_generator))
    if state is None:
        return History(), 0, []
    checkpoint_path = folder / CHECKPOINT_NAME
    rng = state["rng_by_process"][world().rank] if "rng_by_process" in state else state["rng"]
    try:
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        if state["scaler"] and scaler.is_enabled():  # empty when the run had no fp16 scaler
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(rng, data_generator, augment_generator)
        history = History(**state["history"])
    except Exception as error:   # a checkpoint whose configuration matches but whose contents do
                                 # not fit
        raise ValueError(f"{checkpoint_path} could not be restored "
                         f"({type(error).__name__}: {error}). "
                         f"{_resume_remedy(folder)}") from error
    snapshot_epochs, lost = from_first_process(
        lambda: _finish_resume(folder, state, config, type(method).__name__))
    if lost and world().rank == 0:
        warnings.warn(f"the snapshots of epochs {lost} are missing from {folder} and cannot be "
                      f"re-created (their weights are gone; only the epoch of {CHECKPOINT_NAME}, "
                      f"{state['epoch']}, could be); snapshots_by_epoch will not list them",
                      stacklevel=2)
    return history, state["epoch"], snapshot_epochs


def save_checkpoint(folder: Path, epoch: int, config: dict, method: Method, optimizer, scaler,
                    history: History, generators, snapshot_epochs: list[int]) -> None:
    """Checkpoint phase: `last.pt` (everything to continue the run, and the epochs of its snapshots,
    this one included) and a weights-only `epoch_XXXX.pt`. A resume re-creates the latter if its
    write was interrupted.

    In several processes, every process hands its random generators' state to process 0, which
    writes both files; an error writing them is raised in every process."""
    rng_by_process = gather_objects(_rng_state(*generators))

    def write() -> None:
        state = {"method": method.state_dict(), "optimizer": optimizer.state_dict(),
                 "scaler": scaler.state_dict(),
                 "history": {"steps": history.steps, "epochs": history.epochs}, "epoch": epoch,
                 "config": config, "rng": rng_by_process[0], "snapshots": snapshot_epochs}
        if len(rng_by_process) > 1:
            state["rng_by_process"] = rng_by_process
        save_atomically(state, folder / CHECKPOINT_NAME)
        save_atomically({"method": method.state_dict(), "epoch": epoch},
                        _snapshot_path(folder, epoch))

    from_first_process(write)


def _rng_state(data_generator, augment_generator) -> dict:
    state = {"torch": torch.get_rng_state(), "data": data_generator.get_state(),
             "augment": augment_generator.get_state()}
    if torch.cuda.is_available():
        if is_distributed():
            # this process's own GPU: reading every GPU's state would start a CUDA context on
            # each of them in every process
            state["cuda_device"] = torch.cuda.get_rng_state()
        else:
            state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, data_generator, augment_generator) -> None:
    torch.set_rng_state(state["torch"])
    data_generator.set_state(state["data"])
    augment_generator.set_state(state["augment"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "cuda_device" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda_device"])
