"""The results ledger: every registered method trained on one budget, several seeds, each measured.

    # all methods, seeds 0, 1, 2, one run at a time
    python bench/ledger.py --scale cpu
    python bench/ledger.py --scale cpu --methods simclr,dcl --seeds 3 --jobs 2
    # a GPU piece: stops before an epoch would not fit
    python bench/ledger.py --scale colab --budget-minutes 9
    # exit 1, naming what is wrong, unless it is valid
    python bench/ledger.py --check clcourse/ledger/cpu.json
    # README.md's Results section from the ledgers
    python bench/ledger.py --report
    # exit 1 if that section is out of date
    python bench/ledger.py --report --check
    # one committed run trained again here: exit 1 if its kNN is more than 2 points off
    python bench/ledger.py --scale cpu --reproduce simclr:0

Each (method, seed) is a resumable run in runs/ledger/<scale>/<method>_s<seed>/ (`--runs`):
rerunning the command continues where it stopped, and a run whose checkpoint is finished is measured
without training again. After every finished run its record joins the scale's JSON
(clcourse/ledger/<scale>.json, `--output`), rewritten atomically, so the file is valid at any
moment; seed 0's encoders go to clcourse/ledger/encoders/<scale>/. Runs go seed by seed, the cheap
methods first, so a ledger cut short holds whole seeds. Each run is a process of its own with one
torch thread (`--jobs N`: N side by side).

Seed s: `torch.manual_seed(s)` right before the backbone and the method are built (every method of
seed s starts from the same backbone), and `train(seed=s)` (the same order of images): a method and
its baseline are compared seed by seed (clcourse.ledger.BASELINES).

The `cpu` scale: where hard negatives can matter on a CPU. CIFAR-10's classes 0-4 (airplane,
automobile, bird, cat, deer): with 5 classes about 20% of a batch's negatives share the anchor's
class (false negatives), twice CIFAR-10's rate, the regime DCL, HCL, SCE and CACR were made for; so
DCL's and HCL's tau+ (the class prior) is 1/5, where the papers use 0.1 for 10 classes. The
self-supervised training set is the first 1,000 training images of each of the 5 classes in the
order of the data files (5,000 images); the labelled pool for kNN and the linear probes is all
25,000 training images of those classes, the test set their 5,000 test images. Small CNN, batch 256,
30 epochs (warm-up 1), each method's own learning rate, SGD with momentum 0.9 and weight decay 5e-4,
seeds 0, 1, 2: about 9.5 hours on one core, each run 8-30 minutes. A first measurement at 20 epochs
on this data found a seed-to-seed spread of about 1.5 kNN points; 30 epochs, three seeds and paired
differences (same seed, same initial backbone, same image order) narrow what can be told apart, and
the push on same-class negatives measures the mechanism itself, beside accuracy.

The `colab` and `full` scales run the same ledger on a GPU (ResNet-18, all of CIFAR-10, 50 and 200
epochs), in pieces of at most a few minutes each with `--budget-minutes`.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from clcourse import ledger as results  # noqa: E402
from clcourse.ledger.data import ScaleData, scale_data  # noqa: E402
from clcourse.methods import METHODS, build_method  # noqa: E402
from clcourse.models import build_backbone  # noqa: E402
from clcourse.presets import Preset  # noqa: E402
from clcourse.runs import load_weights  # noqa: E402
from clcourse.train import train  # noqa: E402

README = REPO / "README.md"
BEGIN = ("<!-- BEGIN bench/ledger.py --report: generated from clcourse/ledger/, "
         "do not edit by hand -->")
END = "<!-- END bench/ledger.py -->"
CAPS = ("CLCOURSE_MAX_EPOCHS", "CLCOURSE_MAX_TRAIN_IMAGES")
# Within a seed, the cheapest methods first (seconds per epoch on a CPU, small CNN).
ORDER = ("supervised", "mochi", "sce", "supcon", "moco", "simclr", "dcl", "hcl", "clae",
         "simclr_multiview", "cacr", "adversarial")
STARTUP_SECONDS = 30     # a worker's start (imports, data) before its first epoch, for the budget
EVALUATION_SECONDS = 60  # measuring a run, when no record says how long it takes
NOT_MEASURED = "not measured"
# What of a scale's Preset decides its runs (a run's configuration holds these).
BUDGET_FIELDS = ("name", "backbone", "batch_size", "epochs", "warmup_epochs")
POLL_SECONDS = 2.0          # how often the running workers are looked at
# A committed run trained again on another CPU (other floating-point kernels: a slightly different
# path through training) must land this close, in kNN top-1 points.
REPRODUCE_POINTS = 2.0


@dataclass(frozen=True)
class Scale:
    """One budget for every method: the training budget handed to `train` (`preset`), the
    data, and the options of each method. A scale's runs, measures and options are recorded in
    its ledger file."""
    name: str
    description: str
    preset: Preset
    dataset: str                       # "cifar10", or "synthetic" (coloured noise, for the tests)
    classes: tuple[int, ...]           # the classes used, relabelled 0, 1, ... in this order
    images_per_class: int | None       # self-supervised training set: the first this many of each
                                       # class (None: all)
    method_options: dict = field(default_factory=dict)   # {method: options for build_method}, every
                                                         # method
    knn_k: int = 200
    encoder_seeds: tuple[int, ...] = (0,)        # whose encoders are exported
    not_run: dict = field(default_factory=dict)  # {method: why it is left out at this scale}

    def as_dict(self) -> dict:
        """The scale as JSON (the ledger's "scale", and what a worker reads)."""
        values = dataclasses.asdict(self)
        return json.loads(json.dumps(values))      # tuples as lists, as they come back from a file

    def same_runs(self, values: dict) -> bool:
        """Whether a scale read from a file (as_dict) trains and measures as this one does: the same
        data and measures, the same budget, and the same options for every method both know. A
        Preset field added or dropped later, or a method registered later (it is simply not run
        yet), leaves the runs valid."""
        def identity(scale: dict) -> dict:
            preset = scale.get("preset") or {}
            return {**scale, "description": None, "method_options": None, "not_run": None,
                    "preset": {key: preset.get(key) for key in BUDGET_FIELDS}}
        ours, theirs = self.as_dict()["method_options"], values.get("method_options") or {}
        return (identity(values) == identity(self.as_dict())
                and all(ours[name] == theirs[name] for name in ours.keys() & theirs.keys()))

    @classmethod
    def from_dict(cls, values: dict) -> Scale:
        values = dict(values)
        preset = dict(values.pop("preset"))
        preset["temperatures"] = tuple(preset["temperatures"])
        return cls(preset=Preset(**preset), classes=tuple(values.pop("classes")),
                   encoder_seeds=tuple(values.pop("encoder_seeds")), **values)


def _preset(name: str, backbone: str, train_images: int | None, test_images: int | None,
            batch_size: int, epochs: int, warmup_epochs: int) -> Preset:
    """A scale's training budget as a Preset: no kNN during training, a checkpoint every epoch."""
    return Preset(name=name, backbone=backbone, train_subset=train_images, test_subset=test_images,
                  batch_size=batch_size, epochs=epochs, sweep_epochs=epochs, temperatures=(),
                  warmup_epochs=warmup_epochs, knn_every=epochs, knn_k=200, compile=False,
                  checkpoint_every=1)


# The options of every method on all of CIFAR-10 (10 classes): DCL's and HCL's tau+ is the
# class prior, 1/10.
GPU_OPTIONS = {"simclr": {}, "dcl": {"tau_plus": 0.1}, "hcl": {"tau_plus": 0.1, "beta": 1.0},
               "moco": {}, "mochi": {}, "sce": {}, "clae": {}, "simclr_multiview": {}, "cacr": {},
               "supcon": {}, "supervised": {"num_classes": 10}, "adversarial": {"scheme": "cl"}}
SCALES = {
    "cpu": Scale(
        "cpu", "small CNN, CIFAR-10 classes 0-4, 5,000 training images, 30 epochs",
        _preset("ledger-cpu", "small_cnn", 5_000, 5_000, batch_size=256, epochs=30,
                warmup_epochs=1),
        dataset="cifar10", classes=(0, 1, 2, 3, 4), images_per_class=1_000,
        method_options={"simclr": {}, "dcl": {"tau_plus": 0.2},
                        "hcl": {"tau_plus": 0.2, "beta": 1.0}, "moco": {}, "mochi": {}, "sce": {},
                        "clae": {}, "simclr_multiview": {}, "cacr": {}, "supcon": {},
                        "supervised": {"num_classes": 5}, "adversarial": {"scheme": "cl"}}),
    "colab": Scale(
        "colab", "ResNet-18, all of CIFAR-10, 50 epochs",
        _preset("ledger-colab", "resnet18", None, None, batch_size=512, epochs=50, warmup_epochs=2),
        dataset="cifar10", classes=tuple(range(10)), images_per_class=None,
        method_options=GPU_OPTIONS),
    "full": Scale(
        "full", "ResNet-18, all of CIFAR-10, 200 epochs",
        _preset("ledger-full", "resnet18", None, None, batch_size=512, epochs=200,
                warmup_epochs=10),
        dataset="cifar10", classes=tuple(range(10)), images_per_class=None,
        method_options=GPU_OPTIONS),
}
REPORTED = ("cpu", "colab", "full")


# ---------------------------------------------------------------- data

def load_data(scale: Scale) -> ScaleData:
    """The scale's training set, labelled pool and test set (`clcourse.ledger.scale_data`: the
    notebooks read the same images)."""
    return scale_data(scale.as_dict())


def fingerprint(images: torch.Tensor) -> str:
    """A short hash of the training images: runs on other copies of the data (re-encoded pixels,
    another order) show up as another fingerprint."""
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()[:16]


# ---------------------------------------------------------------- one run (a worker process)

def build(scale: Scale, method_name: str, seed: int):
    """The method of `method_name` at `scale`, its backbone and projector initialised
    from seed `seed`."""
    torch.manual_seed(seed)
    backbone = build_backbone(scale.preset.backbone)
    return build_method(method_name, backbone, **scale.method_options[method_name])


def run_folder(runs: Path, method_name: str, seed: int) -> Path:
    return runs / f"{method_name}_s{seed}"


def finished_epochs(folder: Path) -> int:
    """The epochs the run in `folder` has finished (0 without a checkpoint)."""
    checkpoint = folder / "last.pt"
    if not checkpoint.is_file():
        return 0
    return int(torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"])


def git_commit() -> str:
    """The commit of this checkout, "+changes" when its code differs from it (the ledger's
    own files aside)."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        changes = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain",
                                  "--untracked-files=no", "--", ".", ":(exclude)clcourse/ledger",
                                  ":(exclude)README.md"],
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+changes" if changes else "")


def machine(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        names = [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__, "gpu": gpu}


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def export_encoder(method, path: Path) -> dict:
    """The method's state dict (float32, on the CPU) saved at `path`; its file name,
    sha256 and size."""
    state = {key: value.detach().cpu().float() if value.is_floating_point()
             else value.detach().cpu() for key, value in method.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return {"file": path.name, "sha256": results.sha256_of(path), "bytes": path.stat().st_size}


def run_one(scale: Scale, method_name: str, seed: int, runs: Path, encoders: Path) -> dict:
    """Train (or resume) one run, measure it, export its encoder when its seed is one of the
    scale's, and write its record into its folder (record.json). A finished checkpoint is read, not
    trained again."""
    data = load_data(scale)
    folder = run_folder(runs, method_name, seed)
    method = build(scale, method_name, seed)
    done = finished_epochs(folder)
    if done < scale.preset.epochs:
        print(f"{method_name} seed {seed}: training from epoch {done} to {scale.preset.epochs}",
              flush=True)
        train(method, data.train_images, labels=data.train_labels, preset=scale.preset,
              checkpoint_dir=folder, seed=seed, progress=False)
    checkpoint = load_weights(method, folder / "last.pt")
    _require_same_run(checkpoint["config"], method, scale, seed, folder)
    start = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    measured = results.measure(method.to(device), method_name, (data.pool_images, data.pool_labels),
                               (data.test_images, data.test_labels), scale.knn_k,
                               scale.preset.batch_size)
    seconds = [epoch["seconds"] for epoch in checkpoint["history"]["epochs"]]
    measured["measures"]["seconds_per_epoch"] = median(seconds)
    record = {"method": method_name, "seed": seed, **measured, "epochs": checkpoint["epoch"],
              "train_seconds": sum(seconds), "evaluation_seconds": time.perf_counter() - start,
              "data": fingerprint(data.train_images), "commit": git_commit(),
              "machine": machine(device), "date": datetime.date.today().isoformat()}
    if seed in scale.encoder_seeds:
        record["encoder"] = export_encoder(method, encoders / f"{method_name}_s{seed}.pt")
    _write_atomically(folder / "record.json", json.dumps(record, indent=2))
    m = record["measures"]
    print(f"{method_name} seed {seed}: kNN {100 * m['knn']:.1f}%, linear {100 * m['linear']:.1f}%, "
          f"{m['seconds_per_epoch']:.1f} s/epoch", flush=True)
    return record


def _require_same_run(config: dict, method, scale: Scale, seed: int, folder: Path) -> None:
    """A finished checkpoint is used only if it is this scale's run: its schedule, seed and method's
    hyperparameters (the rest of its configuration `train` checked when it trained)."""
    expected = {"schedule": {"epochs": scale.preset.epochs, "batch_size": scale.preset.batch_size,
                             "warmup_epochs": scale.preset.warmup_epochs},
                "seed": seed, "preset": scale.preset.name}
    differences = [
        f"{key}: {config.get(key)!r} (expected {value!r})" for key, value in expected.items()
        if config.get(key) != value
    ]
    ours = method.config()
    differences += [
        f"method.{key}: {config['method'].get(key)!r} (expected {value!r})"
        for key, value in ours.items()
        if key not in ("functions", "architecture", "views") and config["method"].get(key) != value
    ]
    if differences:
        raise ValueError(f"the run in {folder} is not this scale's run "
                         f"({'; '.join(differences)}): move it away or "
                         "choose another --runs folder")


def worker_main(spec: str, runs: Path, encoders: Path) -> int:
    torch.set_num_threads(1)
    method_name, seed = _method_and_seed(spec, "--worker")
    scale = Scale.from_dict(json.loads((runs / "scale.json").read_text()))
    folder = run_folder(runs, method_name, seed)
    try:
        run_one(scale, method_name, seed, runs, encoders)
    except Exception as error:
        traceback.print_exc()
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomically(folder / "failure.json",
                          json.dumps({"error": f"{type(error).__name__}: {error}"}))
        return 1
    (folder / "failure.json").unlink(missing_ok=True)
    for snapshot in folder.glob("epoch_*.pt"):    # the weights stay in last.pt; a finished run is
                                                  # never resumed
        snapshot.unlink()
    return 0


# ---------------------------------------------------------------- the ledger file

def new_ledger(scale: Scale, seeds: list[int]) -> dict:
    return {"schema": results.SCHEMA, "scale": scale.as_dict(), "seeds": sorted(seeds),
            "methods": {}, "encoders": {}, "updated": None}


def read_ledger(path: Path, scale: Scale) -> dict | None:
    """The ledger at `path`, which must be of this scale as it is defined now; None
    when there is none."""
    if not path.is_file():
        return None
    ledger = json.loads(path.read_text())
    if not scale.same_runs(ledger.get("scale") or {}):
        raise ValueError(f"{path} holds a ledger of another definition of the {scale.name!r} "
                         "scale (its \"scale\" differs from bench/ledger.py's): move it away, or "
                         "write this one elsewhere (--output)")
    return ledger


def assemble(ledger: dict, scale: Scale, records: dict, failures: dict) -> dict:
    """The ledger with `records` ({(method, seed): record}) added and every method's status, reason,
    summary and paired differences recomputed. `failures` ({(method, seed): error}) explain runs
    that stopped with an error."""
    runs = {(name, run["seed"]): run
            for name, entry in ledger["methods"].items()
            for run in entry.get("runs", [])}
    encoders = ledger["encoders"]
    for (name, seed), record in records.items():
        run = {key: value for key, value in record.items() if key not in ("method", "encoder")}
        runs[(name, seed)] = run
        if "encoder" in record:
            encoders.setdefault(name, {})[str(seed)] = record["encoder"]
    methods = {}
    for name in METHODS:
        entry = {"baseline": results.BASELINES.get(name)}
        recorded = sorted((run for (n, _), run in runs.items() if n == name),
                          key=lambda run: run["seed"])
        missing = [s for s in ledger["seeds"] if s not in {run["seed"] for run in recorded}]
        failed = {seed:
            error for (n, seed), error in failures.items() if n == name and seed in missing}
        if name in scale.not_run:
            entry.update(status="not run", reason=scale.not_run[name], runs=[])
        elif not missing:
            entry.update(status="done", runs=recorded)
        else:
            reason = f"seed{'s' * (len(missing) > 1)} {', '.join(map(str, missing))} not run yet"
            reason += "".join(f"; seed {seed} stopped: {error}" for seed, error in failed.items())
            entry.update(status="incomplete" if recorded else "pending", reason=reason,
                         runs=recorded)
        methods[name] = entry
    return {**ledger, "methods": results.summarise(methods),
            "encoders": dict(sorted(encoders.items())),
            "updated": datetime.date.today().isoformat()}


def write_ledger(path: Path, ledger: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, json.dumps(ledger, indent=1) + "\n")


# ---------------------------------------------------------- running the ledger (the parent process)

def seconds_needed(epochs_done: int, epochs: int, epoch_seconds: float,
                   evaluation_seconds: float) -> float:
    """The time the next piece of work of a run takes: its next epoch, plus its measurement when
    that epoch is the last; the measurement alone when training is finished."""
    if epochs_done >= epochs:
        return evaluation_seconds
    return epoch_seconds + (evaluation_seconds if epochs_done + 1 == epochs else 0.0)


@dataclass
class Worker:
    method: str
    seed: int
    process: subprocess.Popen
    folder: Path
    checkpoint_time: float          # when the last new checkpoint was seen (at first: the start)
    epochs_done: int
    checkpoint_mtime: int | None = None
    stopped: bool = False           # stopped here for the budget


def plan(scale: Scale, methods: list[str], seeds: list[int], ledger: dict) -> list[tuple[str, int]]:
    """The (method, seed) runs still to do, seed by seed, the cheap methods first."""
    recorded = {(name, run["seed"])
                for name, entry in ledger["methods"].items()
                for run in entry.get("runs", [])}
    order = [m for m in ORDER if m in METHODS] + [m for m in METHODS if m not in ORDER]
    return [(m, s) for s in seeds for m in order
            if m in methods and m not in scale.not_run and (m, s) not in recorded]


class Ledger:
    """Runs the workers of one command and keeps the scale's JSON up to date."""

    def __init__(self, scale: Scale, runs: Path, output: Path, encoders: Path, jobs: int,
                 budget_minutes: float | None):
        self.scale, self.runs, self.output = scale, runs, output
        self.encoders, self.jobs = encoders, jobs
        self.deadline = (time.monotonic() + 60 * budget_minutes if budget_minutes is not None
                         else None)
        self.records: dict = {}
        self.failures: dict = {}
        self.ledger: dict = {}

    def save(self) -> None:
        self.ledger = assemble(self.ledger, self.scale, self.records, self.failures)
        self.records = {}
        write_ledger(self.output, self.ledger)

    def estimate(self, method: str, measure: str) -> float | None:
        """The median seconds per epoch (or of evaluation) of the method's recorded runs,
        else of any run's."""
        for names in ([method], list(self.ledger["methods"])):
            values = [run["measures"]["seconds_per_epoch"] if measure == "epoch"
                      else run["evaluation_seconds"]
                      for name in names
                      for run in self.ledger["methods"].get(name, {}).get("runs", [])]
            if values:
                return median(values)
        return None

    def fits(self, seconds: float) -> bool:
        return self.deadline is None or time.monotonic() + seconds <= self.deadline

    def collect(self, method: str, seed: int) -> bool:
        """Take in a run measured by an earlier command whose ledger was not written
        (it stopped in between)."""
        record = run_folder(self.runs, method, seed) / "record.json"
        if record.is_file():
            self.records[(method, seed)] = json.loads(record.read_text())
            self.save()
        return record.is_file()

    def start(self, method: str, seed: int) -> Worker | None:
        """A worker for the run, or None when its next piece of work would not fit in the budget."""
        folder = run_folder(self.runs, method, seed)
        done = finished_epochs(folder)
        evaluation = self.estimate(method, "evaluation") or EVALUATION_SECONDS
        needed = STARTUP_SECONDS + seconds_needed(done, self.scale.preset.epochs,
                                                  self.estimate(method, "epoch") or 0, evaluation)
        if not self.fits(needed):
            return None
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", f"{method}:{seed}",
                   "--runs", str(self.runs), "--encoders", str(self.encoders)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        now = time.monotonic()
        return Worker(method, seed, subprocess.Popen(command, env=env), folder, now, done)

    def watch(self, worker: Worker) -> None:
        """Note a new checkpoint of a running worker; stop it when its next piece of
        work would not fit."""
        checkpoint = worker.folder / "last.pt"
        mtime = checkpoint.stat().st_mtime_ns if checkpoint.is_file() else None
        if mtime != worker.checkpoint_mtime:
            worker.checkpoint_mtime = mtime
            epochs = finished_epochs(worker.folder)
            if epochs > worker.epochs_done:
                now = time.monotonic()
                epoch_seconds = (now - worker.checkpoint_time) / (epochs - worker.epochs_done)
                worker.checkpoint_time, worker.epochs_done = now, epochs
                print(f"{worker.method} seed {worker.seed}: epoch "
                      f"{epochs}/{self.scale.preset.epochs} "
                      f"({epoch_seconds:.1f} s/epoch)", flush=True)
                evaluation = self.estimate(worker.method, "evaluation") or EVALUATION_SECONDS
                if not self.fits(seconds_needed(epochs, self.scale.preset.epochs,
                                                epoch_seconds, evaluation)):
                    self.stop(worker, f"stopped after epoch {epochs}: the next "
                                      "would not fit in the budget")
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.stop(worker, "stopped: the budget is spent")

    def stop(self, worker: Worker, why: str) -> None:
        if worker.process.poll() is None:
            worker.process.terminate()
            try:
                worker.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            print(f"{worker.method} seed {worker.seed}: {why}", flush=True)
            worker.stopped = True

    def finish(self, worker: Worker) -> bool:
        """Take in a worker that has exited; False when it failed."""
        record, failure = worker.folder / "record.json", worker.folder / "failure.json"
        if worker.process.returncode == 0 and record.is_file():
            self.records[(worker.method, worker.seed)] = json.loads(record.read_text())
            self.save()
            return True
        if not worker.stopped:
            error = json.loads(failure.read_text())["error"] if failure.is_file() else \
                f"the worker exited with status {worker.process.returncode}"
            self.failures[(worker.method, worker.seed)] = error
            self.save()
            print(f"{worker.method} seed {worker.seed}: FAILED ({error})", flush=True)
            return False
        return True

    def work(self, todo: list[tuple[str, int]], running: list[Worker]) -> bool:
        """Run the workers of `todo`, `jobs` at a time, until all are done or the budget is spent;
        False when one failed. `running` holds the workers that run at any moment."""
        ok, budget_spent = True, False
        while todo or running:
            for worker in list(running):
                self.watch(worker)
                if worker.process.poll() is not None:
                    running.remove(worker)
                    ok &= self.finish(worker)
            while todo and len(running) < self.jobs and not budget_spent:
                if not self.collect(*todo[0]):
                    worker = self.start(*todo[0])
                    if worker is None:
                        print(f"ledger {self.scale.name}: the budget is spent", flush=True)
                        budget_spent = True
                        break
                    running.append(worker)
                todo.pop(0)
            if budget_spent and not running:
                break
            time.sleep(POLL_SECONDS if running else 0)
        return ok

    def run(self, methods: list[str], seeds: list[int]) -> int:
        self.runs.mkdir(parents=True, exist_ok=True)
        spec = self.runs / "scale.json"
        if spec.is_file() and not self.scale.same_runs(json.loads(spec.read_text())):
            raise ValueError(f"{self.runs} holds the runs of another definition of "
                             f"the {self.scale.name!r} scale ({spec} differs): "
                             "choose another --runs folder")
        _write_atomically(spec, json.dumps(self.scale.as_dict(), indent=2))
        self.ledger = read_ledger(self.output, self.scale) or new_ledger(self.scale, seeds)
        self.ledger["scale"] = self.scale.as_dict()
        self.ledger["seeds"] = sorted(set(self.ledger["seeds"]) | set(seeds))
        self.save()
        todo = plan(self.scale, methods, seeds, self.ledger)
        print(f"ledger {self.scale.name}: {len(todo)} runs to do, {self.jobs} at a time; runs in "
              f"{self.runs}, results in {self.output}", flush=True)
        running: list[Worker] = []
        previous = signal.signal(signal.SIGTERM, _exit)
        try:
            ok = self.work(todo, running)
        finally:     # interrupted (Ctrl-C, kill): no worker is left training on its own
            signal.signal(signal.SIGTERM, previous)
            for worker in running:
                self.stop(worker, "stopped: the ledger was interrupted")
        left = plan(self.scale, methods, seeds, self.ledger)
        print(f"ledger {self.scale.name}: {self.output} holds "
              f"{sum(len(e['runs']) for e in self.ledger['methods'].values())} runs"
              + (f"; {len(left)} left: run the same command again to continue" if left else ""),
              flush=True)
        return 0 if ok else 1


def _exit(signum, frame):
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------- a committed run, again

def _committed_run(ledger: dict, method_name: str, seed: int, path: Path) -> dict:
    runs = [run for run in ledger["methods"].get(method_name, {}).get("runs", [])
            if run["seed"] == seed]
    if not runs:
        raise SystemExit(f"--reproduce: {path} holds no run of {method_name} seed {seed} to "
                         "compare with")
    return runs[0]


def reproduce(scale: Scale, method_name: str, seed: int, runs: Path) -> int:
    """Train the committed run (method_name, seed) of `scale` again in `runs` (a ledger of its own
    there: runs/ledger.json) and compare its kNN top-1 with the committed one; 1 when they differ
    by more than REPRODUCE_POINTS."""
    committed_path = results.ledger_path(scale.name)
    if not committed_path.is_file():
        raise SystemExit(f"--reproduce: there is no committed {scale.name!r} ledger "
                         f"({committed_path}) to compare with")
    committed = _committed_run(read_ledger(committed_path, scale), method_name, seed,
                               committed_path)
    output = runs / "ledger.json"
    status = Ledger(scale, runs, output, runs / "encoders", jobs=1,
                    budget_minutes=None).run([method_name], [seed])
    if status:
        return status
    again = _committed_run(json.loads(output.read_text()), method_name, seed, output)
    points = 100 * (again["measures"]["knn"] - committed["measures"]["knn"])
    within = abs(points) <= REPRODUCE_POINTS
    for where, run in (("here", again), (str(committed_path), committed)):
        print(f"{method_name} seed {seed}, {where}: kNN {100 * run['measures']['knn']:.1f}%, "
              f"linear {100 * run['measures']['linear']:.1f}% ({run['machine']['cpu']}, "
              f"torch {run['machine']['torch']}, commit {run['commit']}, {run['date']})")
    print(f"kNN differs by {points:+.2f} points: "
          + (f"within {REPRODUCE_POINTS:g}" if within else f"more than {REPRODUCE_POINTS:g}"))
    return 0 if within else 1


# ---------------------------------------------------------------- the README's Results section

def _provenance(ledger: dict) -> dict:
    """Where, when and from which code a ledger's runs come."""
    runs = [run for entry in ledger["methods"].values() for run in entry["runs"]]
    machines = sorted(
        {
            (f"{r['machine']['gpu']}, " if r["machine"]["gpu"] else "")
            + f"{r['machine']['cpu']}, {r['machine']['threads']} thread"
            + "s" * (r["machine"]["threads"] != 1)
            + f", torch {r['machine']['torch']}"
            for r in runs
        }
    )
    dates = sorted({r["date"] for r in runs})
    return {"runs": f"{len(runs)} of {len(ledger['seeds']) * len(ledger['methods'])}",
            "seeds": ", ".join(map(str, ledger["seeds"])), "machine": "; ".join(machines),
            "date": dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}" if dates else "",
            "commit": ", ".join(sorted({r["commit"] for r in runs}))}


def results_block(ledgers: dict) -> str:
    """README.md's Results section: one row per scale (measured or not), then each
    measured scale's table."""
    header = ["scale", "budget", "runs", "seeds", "measured on", "date", "commit"]
    parts = [BEGIN, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in REPORTED:
        if name in ledgers:
            cells = _provenance(ledgers[name]).values()
        else:
            cells = [NOT_MEASURED, "", "", "", ""]
        parts.append("| " + " | ".join([f"`{name}`", SCALES[name].description, *cells]) + " |")
    for name in REPORTED:
        if name in ledgers:
            legend = (f"**`{name}` scale** ({SCALES[name].description}): mean (95% t-interval "
                      "over seeds), accuracies and shares in %; the last column is the paired "
                      "difference in kNN top-1 to the method's baseline, seed by seed.")
            parts += ["", legend, "", results.summary_table(ledgers[name])]
    return "\n".join([*parts, "", END])


def replace_block(text: str, block: str) -> str:
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"the README must hold the markers {BEGIN!r} and {END!r} "
                         "once each, in that order")
    return text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]


def report(readme: Path, check: bool) -> int:
    ledgers = {name: results.load_ledger(name) for name in REPORTED
               if results.ledger_path(name).is_file()}
    text = readme.read_text()
    updated = replace_block(text, results_block(ledgers))
    if check:
        if updated != text:
            print(f"{readme}: the Results section differs from the ledgers in "
                  f"{results.LEDGER_DIR}; run python bench/ledger.py --report", file=sys.stderr)
            return 1
        return 0
    readme.write_text(updated)
    print(f"{readme}: Results written from {results.LEDGER_DIR}")
    return 0


def check_file(path: Path) -> int:
    try:
        ledger = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        print(f"{path}: not a readable JSON file ({type(error).__name__}: {error})",
              file=sys.stderr)
        return 1
    found = results.problems(ledger)
    for problem in found:
        print(f"{path}: {problem}", file=sys.stderr)
    if not found:
        runs = sum(len(entry["runs"]) for entry in ledger["methods"].values())
        print(f"{path}: valid; {runs} runs of {len(ledger['methods'])} methods, "
              f"seeds {ledger['seeds']}")
    return 1 if found else 0


# ---------------------------------------------------------------- command line

def _names(text: str, known, what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise SystemExit(f"--{what} must be a comma-separated list of "
                         f"{', '.join(known)}; got {text!r}")
    return names


def _seeds(text: str) -> list[int]:
    try:
        seeds = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        seeds = []
    if not seeds or seeds[0] < 0:
        raise SystemExit(f"--seeds must be a comma-separated list of integers >= 0, got {text!r}")
    return seeds


def _method_and_seed(text: str, option: str) -> tuple[str, int]:
    """A run named as METHOD:SEED (`--reproduce`, and the ledger's `--worker`)."""
    method_name, _, seed = text.partition(":")
    if method_name not in METHODS or not seed.isdigit():
        raise SystemExit(f"{option} must be METHOD:SEED, METHOD one of {', '.join(METHODS)} "
                         f"and SEED an integer >= 0; got {text!r}")
    return method_name, int(seed)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", help=f"one of {', '.join(SCALES)}")
    parser.add_argument("--methods", help="comma-separated methods (default: every registered one)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs side by side, one torch thread each")
    parser.add_argument("--budget-minutes", type=float,
                        help="start no epoch that would not end within this time")
    parser.add_argument("--runs", type=Path, help="the runs' folder (default runs/ledger/<scale>)")
    parser.add_argument("--output", type=Path, help="the ledger file (default "
                                                    "clcourse/ledger/<scale>.json)")
    parser.add_argument("--encoders", type=Path, help="where encoders go (default "
                                                      "clcourse/ledger/encoders/<scale>)")
    parser.add_argument("--check", nargs="?", const="", metavar="FILE",
                        help="validate a ledger file; with --report, check "
                             "README.md's Results section")
    parser.add_argument("--report", action="store_true",
                        help="write README.md's Results section from the ledgers")
    parser.add_argument("--reproduce", metavar="METHOD:SEED",
                        help="train one committed run of --scale again (in --runs, default "
                             "runs/ledger/<scale>-reproduce) and compare its kNN with the ledger's")
    parser.add_argument("--readme", type=Path, default=README, help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)      # METHOD:SEED, started by the
                                                                 # ledger itself
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.runs, args.encoders)
    if args.report:
        return report(args.readme, check=args.check is not None)
    if args.check is not None:
        if not args.check:
            parser.error("--check needs the ledger FILE to validate (or "
                         "--report, to check README.md)")
        return check_file(Path(args.check))
    if args.scale not in SCALES:
        parser.error(f"--scale must be one of {', '.join(SCALES)}, got {args.scale!r}")
    capped = [cap for cap in CAPS if os.environ.get(cap, "").strip()]
    if capped:
        parser.error(f"unset {', '.join(capped)}: the ledger trains every run on "
                     "its scale's full budget")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    scale = SCALES[args.scale]
    if args.reproduce:
        method_name, seed = _method_and_seed(args.reproduce, "--reproduce")
        runs = args.runs or REPO / "runs" / "ledger" / f"{scale.name}-reproduce"
        return reproduce(scale, method_name, seed, runs.resolve())
    methods = _names(args.methods, list(METHODS), "methods") if args.methods else list(METHODS)
    runs = args.runs or REPO / "runs" / "ledger" / scale.name
    output = args.output or results.ledger_path(scale.name)
    encoders = args.encoders or results.encoder_dir(scale.name)
    ledger = Ledger(scale, runs.resolve(), output.resolve(), encoders.resolve(), args.jobs,
                    args.budget_minutes)
    return ledger.run(methods, _seeds(args.seeds))


if __name__ == "__main__":
    sys.exit(main())
