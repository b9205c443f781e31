"""Every GPU figure the course claims, measured by one command in one process, within a time budget.

    # this machine's GPU, 12-minute budget (make bench)
    python bench/suite.py
    # CIFAR-10 unpacked from a JPEG pack first
    python bench/suite.py --pack data/cifar10-jpeg.npz
    # a shorter window: phase 3 is trimmed first
    python bench/suite.py --budget-minutes 9.25
    # every phase at toy size on the CPU, about a minute
    python bench/suite.py --smoke

The phases run in order of importance, each under its own time cap, and the results file is written
after every phase, so a run that is cut short still leaves the first results:

1. throughput: SimCLR on ResNet-18, batch 512: the model step alone
   (`clcourse.train.optimisation_step` on pre-made views), clcourse end to end (the training loop,
   views made on the GPU), and torchvision's PIL transforms in a DataLoader on every core; eager and
   torch.compile; images/s (both views) and s/epoch;
2. simclr_200: SimCLR for 200 epochs on CIFAR-10 (compiled), kNN every 20 epochs, wall time;
3. method_costs: the time of an epoch of every method in `clcourse.methods.METHODS` (eager, 3 epochs
   of 25,600 images, the fastest after the first, scaled to 50,000 images) as a multiple of its
   reference's (`bench/targets.py`: one line per method; SimCLR when a method has none), and what
   SplitBatchNorm2d's reshape of a channels_last tensor costs (it copies) against plain BatchNorm2d,
   per ResNet-18 stage;
4. cuda_tests_and_notebook: `pytest -m cuda` (the test files that use the marker), then one notebook
   in the `colab` preset (default notebooks/00), each in its own process, timed;
5. the peak GPU memory of each phase, recorded with the phase (for phase 4: the notebook's process).

Results: `bench/results/<date>_<gpu>.json` (`--results-dir`; a second run that day gets `_2`; a
`--smoke` run's go into the git-ignored `.cache/bench/`), then a markdown table.
`python bench/report.py` writes the newest results into bench/README.md's Performance section.

On any GPU machine: `make bench` (= `python bench/suite.py`), or `--pack path/to/cifar10-jpeg.npz`
for CIFAR-10 from a JPEG pack you provide; under a job time limit, `--budget-minutes 9.25`
(10-minute limit) and `--results-dir DIR`. Then copy the results file into bench/results/, run
`python bench/report.py`, and commit both.

Sizing for one H100/H200 (estimates from published speeds and FLOP counts; nothing here
is measured yet):
- start-up ~15 s: 60,000 JPEG decodes on every core, CIFAR-10 into GPU memory (180 MB).
- phase 1, cap 3 min: the eager figures take seconds (65 model steps of 1,024 views at >= 40k
  views/s, 3 epochs end to end, 2 PIL epochs at ~2k views/s per core); torch.compile of the
  ResNet-18 step takes about a minute cold, and the later compiles of the same graph hit
  inductor's cache.
- phase 2, cap 6.5 min: 200 epochs at 0.75-1.35 s (25-45% of bf16 peak) is 2.5-4.5 min, plus 10 kNN
  evaluations (~0.3 s each), a compile and 10 checkpoints; the target is <= 6 min, so a run still
  going at the cap has missed it, and the kNN curve up to its last checkpoint is kept.
- phase 3, cap 2 min, and it keeps back phase 4's cap: ~4 s per method (3 eager epochs of 50 steps),
  the references (SimCLR, MoCo v2) first, then the methods with a target, then the rest, as long as
  time is left; eager, because compiling every method would cost more than all its epochs.
- phase 4, cap 75 s: pytest start-up and the CUDA tests (~15 s); notebook 00 (CIFAR-10 load, one
step). Expected ~9 minutes in all; the caps add up to 13. `--budget-minutes` sets the deadline: each
phase gets its cap or what is left, whichever is less, phase 3 minus phase 4's cap, so phase 3
shrinks first. `--smoke` shrinks everything (small CNN, 256-512 images, a few steps, phase 2 eager)
and compiles with the aot_eager backend (graph capture without inductor's C++ build);
tests/bench/test_suite.py runs it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import accuracy  # noqa: E402
import report  # noqa: E402
import throughput  # noqa: E402
from common import (  # noqa: E402
    bench_device,
    compile_backend,
    device_summary,
    peak_memory_gb,
    reset_peak_memory,
    timed,
    unpack_cifar10,
)
from notebook import RESULT_PREFIX  # noqa: E402
from targets import method_cost  # noqa: E402

from clcourse.methods import METHODS, build_method  # noqa: E402
from clcourse.models import SplitBatchNorm2d, build_backbone  # noqa: E402
from clcourse.presets import PRESETS, autocast_dtype  # noqa: E402
from clcourse.runs import History  # noqa: E402
from clcourse.train import KnnData, train  # noqa: E402

RESULTS_DIR = REPO / "bench" / "results"
# A --smoke run checks that the suite runs and measures nothing worth committing: its results
# stay out of git.
SMOKE_RESULTS_DIR = REPO / ".cache" / "bench"
DEFAULT_NOTEBOOK = REPO / "notebooks" / "00_setup_and_tour.ipynb"
EPOCH_IMAGES = 50_000
PHASES = ("throughput", "simclr_200", "method_costs", "cuda_tests_and_notebook")
TRIMMED_FIRST = "method_costs"   # its cap leaves the caps of the phases after it
MIN_CAP_SECONDS = 5.0            # a phase with less time than this is skipped
# ResNet-18 with the CIFAR stem: (channels, side) of each stage's batch-norm inputs, and how many
# there are (stem + 4 in layer1; 4 + 1 shortcut in each later stage).
RESNET18_BATCHNORMS = (((64, 32), 5), ((128, 16), 5), ((256, 8), 5), ((512, 4), 5))


@dataclass(frozen=True)
class Sizes:
    """How much work each phase does, and its time cap in seconds."""
    throughput: throughput.Sizes
    simclr: accuracy.Budget
    subsets: tuple[int | None, int | None]     # CIFAR-10 training and test images (None: all)
    cost_images: int                           # phase 3: training images per epoch
    cost_epochs: int                           # phase 3: epochs per method (the first is not timed)
    cost_batch_size: int
    batchnorm_batch: int                       # phase 3: images in the SplitBatchNorm2d measurement
    preset: str                                # phase 4: the notebook's preset
    caps: dict[str, float] = field(default_factory=dict)


GPU = Sizes(throughput=throughput.Sizes(),
            simclr=accuracy.Budget(epochs=200, knn_every=20, compile=True),
            subsets=(None, None), cost_images=25_600, cost_epochs=3, cost_batch_size=512,
            batchnorm_batch=512,
            preset="colab",
            caps={"throughput": 180, "simclr_200": 390, "method_costs": 120,
                  "cuda_tests_and_notebook": 75})
# Phase 2 runs eager here: phase 1 already captures the compiled step and the
# compiled training loop.
SMOKE = Sizes(throughput=throughput.SMOKE,
              simclr=accuracy.Budget(epochs=2, batch_size=128, warmup_epochs=1,
                                     backbone="small_cnn", knn_every=1),
              subsets=(512, 250), cost_images=256, cost_epochs=2, cost_batch_size=64,
              batchnorm_batch=16,
              preset="smoke",
              caps={"throughput": 90, "simclr_200": 90, "method_costs": 150,
                    "cuda_tests_and_notebook": 90})


class PhaseTimeout(BaseException):
    """A phase ran past its cap (raised by SIGALRM). A BaseException, so that no `except Exception`
    on the way (torch.compile falls back to eager on errors) can swallow it."""


class Terminated(BaseException):
    """The process got SIGTERM (a tool's time limit): stop, keep what was measured."""


def terminate(signum, frame):
    raise Terminated()


@dataclass
class Context:
    device: torch.device
    sizes: Sizes
    data: KnnData
    scratch: Path                 # a temporary folder: checkpoints, the notebook's runs
    notebook: Path
    environment: dict[str, str]   # for the child processes of phase 4


# ---------------------------------------------------------------- schedule and caps

def phase_cap(caps: dict[str, float], name: str, seconds_left: float) -> float:
    """Seconds phase `name` may run: its cap or what is left of the budget, whichever is less; the
    phase trimmed first (TRIMMED_FIRST) also leaves the caps of the phases after it."""
    later = list(caps)[list(caps).index(name) + 1:]
    reserved = sum(caps[other] for other in later) if name == TRIMMED_FIRST else 0.0
    return max(0.0, min(caps[name], seconds_left - reserved))


@contextmanager
def time_limit(seconds: float):
    """Raise PhaseTimeout in this (main) thread after `seconds`."""
    def expire(signum, frame):
        raise PhaseTimeout(f"stopped at its cap of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_phase(name: str, ctx: Context, record: dict, cap: float) -> None:
    """Run phase `name` under `cap` seconds, filling `record`: status ("done", "stopped at cap",
    "error", "skipped", "interrupted"), seconds, peak GPU memory and the phase's results (kept when
    it stops early)."""
    record.update(status="running", cap_seconds=round(cap, 1), results={})
    if cap < MIN_CAP_SECONDS:
        record.update(status="skipped", reason=f"{cap:.0f} s left of the budget")
        return
    torch._dynamo.reset()  # fresh compile caches per phase: no phase runs into the recompile limit
    reset_peak_memory(ctx.device)
    start = time.monotonic()
    peak = None
    try:
        with time_limit(cap):
            peak = PHASE_FUNCTIONS[name](ctx, record["results"], start + cap)
        record["status"] = "done"
    except PhaseTimeout as stop:
        record.update(status="stopped at cap", reason=str(stop))
    except Terminated:
        record["status"] = "interrupted"
        raise
    except Exception as error:
        record.update(status="error", error=f"{type(error).__name__}: {error}",
                      traceback=traceback.format_exc()[-3000:])
        print(record["traceback"], file=sys.stderr)
    finally:
        record["seconds"] = round(time.monotonic() - start, 1)
        record["peak_memory_gb"] = peak if peak is not None else peak_memory_gb(ctx.device)
    if record["status"] != "done":
        torch._dynamo.reset()
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- phase 1: throughput

def run_throughput(ctx: Context, results: dict, ends_at: float) -> None:
    sizes = ctx.sizes.throughput
    results["sizes"] = asdict(sizes)
    images = ctx.data.train_images[:sizes.images] if sizes.images else ctx.data.train_images
    for mode in ("eager", "compile"):
        throughput.measure(sizes, ctx.device, mode == "compile", images,
                           into=results.setdefault(mode, {}))
        print(f"throughput, {mode} (images/s): "
              + ", ".join(f"{k} {v:,.0f}" for k, v in results[mode].items()))


# ---------------------------------------------------------------- phase 2: SimCLR, 200 epochs

def run_simclr(ctx: Context, results: dict, ends_at: float) -> None:
    budget = ctx.sizes.simclr
    results["budget"] = asdict(budget)
    folder = ctx.scratch / "simclr_200"
    history = None
    try:
        outcome = accuracy.train_and_evaluate("simclr", budget, ctx.data, checkpoint_dir=folder,
                                              progress=False)
        history = outcome["history"]
        results["wall_seconds"] = round(60 * outcome["wall_minutes"], 1)
    finally:  # also when stopped at the cap: the curve up to the last checkpoint
        if history is None and (folder / "last.pt").is_file():
            history = History(
                **torch.load(folder / "last.pt", map_location="cpu", weights_only=False)["history"])
        if history is not None:
            results["epochs_done"] = len(history.epochs)
            results["knn"] = [[r["epoch"], r["knn_accuracy"]] for r in history.epochs
                              if "knn_accuracy" in r]
            seconds = sorted(r["seconds"] for r in history.epochs)
            results["median_epoch_seconds"] = seconds[len(seconds) // 2]
            if len(history.epochs) == budget.epochs:
                results["final_knn"] = history.final_knn_accuracy


# ---------------------------------------------------------- phase 3: cost per epoch of every method

def method_order(names: list[str]) -> list[str]:
    """References first (each method's reference that is registered), then methods with a cost
    target, then the rest, each group in registry order: a trimmed phase 3 still measures what the
    targets need."""
    references = [ref for ref in dict.fromkeys(method_cost(name)[0] for name in names)
                  if ref in names]
    with_target = [n for n in names if n not in references and method_cost(n)[1] is not None]
    return references + with_target + [n for n in names if n not in references
                                       and n not in with_target]


def fill_ratios(methods: dict[str, dict]) -> None:
    """Each measured method's cost as a multiple of its reference's, and whether it
    meets its target."""
    for entry in methods.values():
        reference = methods.get(entry["reference"], {})
        if "seconds_per_epoch" in entry and "seconds_per_epoch" in reference:
            entry["ratio"] = round(entry["seconds_per_epoch"] / reference["seconds_per_epoch"], 3)
            if entry["target"] is not None:
                entry["meets_target"] = entry["ratio"] <= entry["target"]


def measure_method(name: str, ctx: Context, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Seconds per epoch of 50,000 images (the fastest epoch after the first), eager, the
    method's defaults."""
    sizes = ctx.sizes
    torch.manual_seed(0)
    method = build_method(name, build_backbone(sizes.simclr.backbone))
    budget = PRESETS["full"].with_overrides(epochs=sizes.cost_epochs,
                                            batch_size=sizes.cost_batch_size, warmup_epochs=0,
                                            compile=False, log_every=50)
    history = train(method, images, labels=labels, preset=budget, device=ctx.device, progress=False)
    seconds = [record["seconds"] for record in history.epochs]
    images_per_epoch = (len(images) // sizes.cost_batch_size) * sizes.cost_batch_size
    return {
        "seconds_per_epoch": round(
            min(seconds[1:] or seconds) * EPOCH_IMAGES / images_per_epoch, 3
        ),
        "epoch_seconds": [round(s, 3) for s in seconds],
    }


def split_batchnorm_cost(device: torch.device, batch: int, splits: int = 8,
                         repeats: int = 20) -> dict:
    """Forward + backward milliseconds of BatchNorm2d and of SplitBatchNorm2d (channels_last and
    contiguous input) at each ResNet-18 stage's shape, in the training precision, and the sums over
    ResNet-18's 20 batch-norm layers. SplitBatchNorm2d reshapes [N, C, H, W] to [N/S, S*C, H, W],
    which a channels_last tensor cannot do without a copy."""
    dtype = autocast_dtype(device) or torch.float32
    (channels, side), _ = RESNET18_BATCHNORMS[0]
    probe = torch.empty(batch, channels, side, side,
                        device=device).contiguous(memory_format=torch.channels_last)
    copies = (probe.reshape(batch // splits, splits * channels, side, side).data_ptr()
              != probe.data_ptr())
    result = {"batch": batch, "splits": splits, "dtype": str(dtype).removeprefix("torch."),
              "reshape_copies_channels_last": copies, "per_stage": [], "resnet18_ms": {}}
    variants = (("batchnorm", nn.BatchNorm2d, torch.channels_last),
                ("split_channels_last", SplitBatchNorm2d, torch.channels_last),
                ("split_contiguous", SplitBatchNorm2d, torch.contiguous_format))
    for (channels, side), layers in RESNET18_BATCHNORMS:
        stage = {"shape": [batch, channels, side, side]}
        for label, kind, layout in variants:
            module = (kind(channels)
                      if kind is nn.BatchNorm2d else kind(channels, splits)).to(device).train()
            x = torch.randn(batch, channels, side, side, device=device, dtype=dtype)
            x = x.contiguous(memory_format=layout).requires_grad_()
            grad = torch.randn_like(x)

            def steps(n):  # timed at once, in this iteration: late binding cannot bite
                for _ in range(n):
                    module(x).backward(grad)  # noqa: B023

            timed(lambda: steps(3), device)
            stage[f"{label}_ms"] = milliseconds = round(
                1000 * timed(lambda: steps(repeats), device) / repeats, 4)
            result["resnet18_ms"][label] = round(
                result["resnet18_ms"].get(label, 0.0) + layers * milliseconds, 3)
        result["per_stage"].append(stage)
    return result


def run_method_costs(ctx: Context, results: dict, ends_at: float) -> None:
    sizes = ctx.sizes
    results["sizes"] = {"images": sizes.cost_images, "epochs": sizes.cost_epochs,
                        "batch_size": sizes.cost_batch_size, "backbone": sizes.simclr.backbone,
                        "compile": False}
    results["split_batchnorm"] = split_batchnorm_cost(ctx.device, sizes.batchnorm_batch)
    images, labels = (
        ctx.data.train_images[: sizes.cost_images],
        ctx.data.train_labels[: sizes.cost_images],
    )
    methods = results["methods"] = {}
    for name in method_order(list(METHODS)):
        reference, target = method_cost(name)
        methods[name] = {"reference": reference, "target": target, "status": "pending"}
    slowest = 0.0
    try:
        for name, entry in methods.items():
            if time.monotonic() + 1.2 * slowest > ends_at:
                entry["status"] = "not measured (budget)"
                continue
            start = time.monotonic()
            entry["status"] = "running"
            try:
                entry.update(measure_method(name, ctx, images, labels), status="done")
            except Exception as error:   # one broken method must not cost the others their figures
                entry.update(status="error", error=f"{type(error).__name__}: {error}")
            slowest = max(slowest, time.monotonic() - start)
            fill_ratios(methods)
            print(f"{name}: {entry.get('seconds_per_epoch', entry['status'])} s/epoch, "
                  f"{entry.get('ratio', '-')} x {entry['reference']}")
    finally:   # stopped at the phase's cap
        for entry in methods.values():
            if entry["status"] in ("pending", "running"):
                entry["status"] = "not measured (phase stopped)"


# --------------------------------------------------------------- phase 4: CUDA tests and a notebook

def cuda_test_files() -> list[str]:
    """The test files that use the `cuda` marker (collecting every test module would need the
    notebook tools and ipywidgets, which a bare GPU image lacks)."""
    return sorted(str(path.relative_to(REPO)) for path in (REPO / "tests").rglob("test_*.py")
                  if "pytest.mark.cuda" in path.read_text())


def run_child(command: list[str], environment: dict, timeout: float) -> tuple[dict, str]:
    """Run `command` in the repository; ({"returncode", "seconds"} or a timeout
    status, its output)."""
    start = time.monotonic()
    try:
        done = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True,
                              timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired as expired:
        output = (expired.stdout or b"") + (expired.stderr or b"")
        output = output.decode(errors="replace") if isinstance(output, bytes) else output
        return {"status": "stopped at cap", "seconds": round(time.monotonic() - start, 1)}, output
    record = {"status": "done" if done.returncode == 0 else "failed", "returncode": done.returncode,
              "seconds": round(time.monotonic() - start, 1)}
    return record, done.stdout + done.stderr


def run_tests_and_notebook(ctx: Context, results: dict, ends_at: float) -> float | None:
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()      # leave the children the GPU memory this process cached
    margin = 2.0                      # seconds for a timed-out child to be killed before the
                                      # phase's own cap
    files = cuda_test_files()
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", *files]
    tests, output = run_child(command, ctx.environment, 0.5 * (ends_at - time.monotonic()) - margin)
    counts = {
        word: int(n)
        for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", output)
    }
    tests.update(command="pytest -m cuda " + " ".join(files), **counts, output_tail=output[-1500:])
    results["tests"] = tests
    print(f"pytest -m cuda: {tests['status']}, {counts}")

    preset = ctx.sizes.preset
    command = [sys.executable, str(REPO / "bench" / "notebook.py"), str(ctx.notebook)]
    environment = {**ctx.environment, "CLCOURSE_PRESET": preset}
    notebook, output = run_child(command, environment, ends_at - time.monotonic() - margin)
    shown = ctx.notebook.relative_to(REPO) if ctx.notebook.is_relative_to(REPO) else ctx.notebook
    notebook.update(path=str(shown), preset=preset)
    lines = [line for line in output.splitlines() if line.startswith(RESULT_PREFIX)]
    if lines:
        measured = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
        notebook.update(cell_seconds=measured["cell_seconds"], notebook_seconds=measured["seconds"],
                        peak_memory_gb=measured["peak_memory_gb"])
    else:
        notebook["output_tail"] = output[-1500:]
    results["notebook"] = notebook
    print(f"notebook {notebook['path']} ({preset}): {notebook['status']} in "
          f"{notebook['seconds']} s")
    return notebook.get("peak_memory_gb")


PHASE_FUNCTIONS = {"throughput": run_throughput, "simclr_200": run_simclr,
                   "method_costs": run_method_costs,
                   "cuda_tests_and_notebook": run_tests_and_notebook}


# ---------------------------------------------------------------- results

def default_results_dir(smoke: bool) -> Path:
    """bench/results/ (committed) for a measurement, .cache/bench/ (git-ignored)
    for a --smoke run."""
    return SMOKE_RESULTS_DIR if smoke else RESULTS_DIR


def results_path(folder: Path, date: str, device_name: str, smoke: bool) -> Path:
    """`<folder>/<date>_<gpu>.json` (`_2`, `_3`, ... when taken), the GPU's name in lower
    case with dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-") + ("-smoke" if smoke else "")
    path, n = folder / f"{date}_{slug}.json", 2
    while path.exists():
        path, n = folder / f"{date}_{slug}_{n}.json", n + 1
    return path


def write_results(results: dict, path: Path) -> None:
    """Write atomically: a run killed while writing leaves the previous version."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, path)


def git_commit() -> str | None:
    """The checkout's commit, with "-dirty" when tracked files have changed (None: not
    a git checkout)."""
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], cwd=REPO,
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def load_data(args, device: torch.device, sizes: Sizes,
              scratch: Path) -> tuple[KnnData, Path | None]:
    """CIFAR-10 on `device`, from the JPEG pack unpacked into `scratch` (with --pack) or from the
    data root; also the data root the child processes of phase 4 must read (None: theirs is the
    same as ours)."""
    root = unpack_cifar10(args.pack, scratch / "data") if args.pack else None
    try:
        return accuracy.load_knn_data(device, *sizes.subsets, root=root), root
    except FileNotFoundError as error:
        raise SystemExit(f"{error}\nGive the JPEG pack with --pack path/to/cifar10-jpeg.npz, or "
                         "set CLCOURSE_DATA to a folder that holds cifar-10-batches-py/.") from None


def child_environment(data_root: Path | None, scratch: Path) -> dict[str, str]:
    """The environment of phase 4's processes: this checkout importable, our data root,
    runs in `scratch`."""
    environment = {**os.environ,
                   "PYTHONPATH":
                       os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                   "CLCOURSE_RUNS": str(scratch / "runs"), "MPLBACKEND": "Agg"}
    if data_root is not None:
        environment["CLCOURSE_DATA"] = str(data_root)
    return environment


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget-minutes", type=float, default=12.0,
                        help="the whole run's deadline, start-up included (default 12); "
                             "phase 3 is trimmed first")
    parser.add_argument("--pack", type=Path, default=None,
                        help="CIFAR-10 as a JPEG pack (cifar10-jpeg.npz), unpacked "
                             "into a temporary data root (default: the data root, "
                             "$CLCOURSE_DATA or data/)")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help=f"default: {RESULTS_DIR.relative_to(REPO)}/, or "
                             f"{SMOKE_RESULTS_DIR.relative_to(REPO)}/ (git-ignored) with --smoke")
    parser.add_argument("--notebook", type=Path, default=DEFAULT_NOTEBOOK,
                        help="the notebook phase 4 runs")
    parser.add_argument("--smoke", action="store_true", help="every phase at toy size on the CPU")
    args = parser.parse_args(argv)
    args.results_dir = args.results_dir or default_results_dir(args.smoke)
    if args.budget_minutes <= 0:
        parser.error(f"--budget-minutes must be positive, got {args.budget_minutes}")
    if not args.notebook.is_file():
        parser.error("--notebook must be a notebook file, got "
                     f"{str(args.notebook)!r}: no such file")

    start = time.monotonic()
    deadline = start + 60 * args.budget_minutes
    started = datetime.datetime.now(datetime.timezone.utc)
    device = bench_device(args.smoke)
    sizes = SMOKE if args.smoke else GPU
    torch.backends.cudnn.benchmark = True
    summary = device_summary(device)
    results = {"schema": 1, "date": started.date().isoformat(),
               "started": started.isoformat(timespec="seconds"),
               "smoke": args.smoke, "device": summary,
               "load_average": {"start": os.getloadavg()[0]},
               "budget_minutes": args.budget_minutes, "caps": sizes.caps, "commit": git_commit(),
               "command":
                   " ".join(["python bench/suite.py", *(sys.argv[1:] if argv is None else argv)]),
               "phases": {name: {"status": "pending"} for name in PHASES}}
    path = results_path(args.results_dir, results["date"], summary["name"], args.smoke)
    print(f"clcourse benchmark suite on {summary['name']}, budget {args.budget_minutes} min")
    previous_sigterm = signal.signal(signal.SIGTERM, terminate)
    with tempfile.TemporaryDirectory(prefix="clcourse-bench-") as scratch, \
            compile_backend("aot_eager" if args.smoke else None):
        scratch = Path(scratch)
        try:
            data, data_root = load_data(args, device, sizes, scratch)
            ctx = Context(device, sizes, data, scratch, args.notebook.resolve(),
                          child_environment(data_root, scratch))
            results["setup_seconds"] = round(time.monotonic() - start, 1)
            write_results(results, path)
            print(f"results: {path}")
            for name in PHASES:
                cap = phase_cap(sizes.caps, name, deadline - time.monotonic())
                print(f"\n=== phase {PHASES.index(name) + 1}: {name} (cap {cap:.0f} s)", flush=True)
                run_phase(name, ctx, results["phases"][name], cap)
                write_results(results, path)
        except Terminated:
            results["interrupted"] = True
        finally:
            signal.signal(signal.SIGTERM, previous_sigterm)
            results.update(total_seconds=round(time.monotonic() - start, 1))
            results["load_average"]["end"] = os.getloadavg()[0]
            if path.exists():
                write_results(results, path)
    print(f"\n{report.markdown_table(results)}\n\nresults: {path}")
    return results

if __name__ == "__main__":
    sys.exit(1 if main().get("interrupted") else 0)
