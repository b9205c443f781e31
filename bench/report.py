"""The benchmark suite's results as markdown, and bench/README.md's Performance figures written from
them.

    python bench/report.py          # rewrite the block between the markers in bench/README.md
    python bench/report.py --check  # exit 1 if that block differs from what the results files give

The GPU table comes from the newest results file of a GPU run in bench/results/ (by its start time),
the CPU table from the newest `--smoke` run. Every figure has a fixed row, so an unmeasured one
reads "not measured" instead of disappearing, and every measured one has the device's name and the
date beside it. `bench/suite.py` prints the same table at the end of a run.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from targets import (  # noqa: E402
    END_TO_END_OVER_MODEL_STEP,
    END_TO_END_OVER_PIL,
    SIMCLR_KNN_ACCURACY,
    SIMCLR_WALL_MINUTES,
    method_cost,
)

RESULTS_DIR = REPO / "bench" / "results"
README = REPO / "bench" / "README.md"
BEGIN = "<!-- BEGIN bench/report.py: generated from bench/results/, do not edit by hand -->"
END = "<!-- END bench/report.py -->"
EPOCH_VIEWS = 2 * 50_000
NOT_MEASURED = "not measured"
PIPELINES = {"model_step": "model step alone", "end_to_end": "clcourse end to end",
             "pil": "torchvision PIL + DataLoader ({workers})"}
MODES = {"eager": "eager", "compile": "torch.compile"}
PHASE_TITLES = {"throughput": "1 throughput", "simclr_200": "2 SimCLR 200 epochs",
                "method_costs": "3 method costs",
                "cuda_tests_and_notebook": "4 CUDA tests, notebook"}


class Row(NamedTuple):
    phase: str
    figure: str
    value: str | None      # None: not measured
    target: str = ""


def _phase(results: dict | None, name: str) -> tuple[dict, str | None]:
    """(the phase's results, why it has none: its status when not done) for phase `name`."""
    phase = (results or {}).get("phases", {}).get(name, {})
    status = phase.get("status")
    return phase.get("results", {}), (None if status == "done" else status)


def _registered_methods() -> list[str]:
    from clcourse.methods import METHODS
    return list(METHODS)


def throughput_rows(results: dict | None) -> list[Row]:
    measured, _ = _phase(results, "throughput")
    workers = measured.get("sizes", {}).get("workers")
    workers = f"{workers} workers" if workers else "a worker per core"
    rows = []
    for mode, mode_name in MODES.items():
        rates = measured.get(mode, {})
        for key, name in PIPELINES.items():
            rate = rates.get(key)
            value = f"{rate:,.0f} images/s, {EPOCH_VIEWS / rate:.2f} s/epoch" if rate else None
            rows.append(Row("1", f"{name.format(workers=workers)}, {mode_name}", value))
        model_step, end_to_end, pil = (rates.get(key) for key in PIPELINES)
        rows.append(Row("1", f"end to end / model step alone, {mode_name}",
                        f"{end_to_end / model_step:.2f}" if end_to_end and model_step else None,
                        f"≥ {END_TO_END_OVER_MODEL_STEP:.2f}"))
        rows.append(Row("1", f"end to end / PIL pipeline, {mode_name}",
                        f"{end_to_end / pil:.1f}x" if end_to_end and pil else None,
                        f"≥ {END_TO_END_OVER_PIL:.0f}x"))
    return rows


def simclr_rows(results: dict | None) -> list[Row]:
    measured, _ = _phase(results, "simclr_200")
    epochs = measured.get("budget", {}).get("epochs", 200)
    curve = measured.get("knn", [])
    final = measured.get("final_knn")
    if final is not None:
        knn = f"{100 * final:.1f}%"
    elif curve:   # stopped before the end: say how far it got
        knn = f"stopped after epoch {measured.get('epochs_done')}: {100 * curve[-1][1]:.1f}% then"
    else:
        knn = None
    wall = measured.get("wall_seconds")
    return [
        Row("2", f"SimCLR kNN top-1 after {epochs} epochs (last epoch, k=200)", knn,
            f"≥ {100 * SIMCLR_KNN_ACCURACY:.0f}%"),
        Row("2", f"wall time of {epochs} epochs, kNN evaluations included",
            (f"{wall / 60:.1f} min ({measured['median_epoch_seconds']:.2f} s/epoch, median)"
             if wall else None),
            f"≤ {SIMCLR_WALL_MINUTES:.0f} min"),
        Row("2", "kNN top-1 along the way (epoch: %)",
            ", ".join(f"{epoch}: {100 * accuracy:.1f}" for epoch, accuracy in curve) or None),
    ]


def method_rows(results: dict | None, registered: list[str]) -> list[Row]:
    measured, _ = _phase(results, "method_costs")
    methods = measured.get("methods", {})
    rows = []
    for name in dict.fromkeys([*registered, *methods]):
        entry = methods.get(name, {})
        reference, target = (entry["reference"], entry["target"]) if entry else method_cost(name)
        if "ratio" in entry:
            value = f"{entry['ratio']:.2f}x ({entry['seconds_per_epoch']:.2f} s/epoch)"
        elif "seconds_per_epoch" in entry:
            value = f"{entry['seconds_per_epoch']:.2f} s/epoch ({reference} not measured)"
        elif entry.get("status") == "error":
            value = f"error: {entry['error'][:80]}"
        else:
            value = None
        rows.append(Row("3", f"{name}: time per epoch / {reference}'s", value,
                        f"≤ {target:.2f}x" if target is not None else ""))
    bn = measured.get("split_batchnorm")
    value = None
    if bn:
        ms = bn["resnet18_ms"]
        value = (f"{ms['split_channels_last']:.1f} ms vs {ms['batchnorm']:.1f} ms for BatchNorm2d "
                 f"({ms['split_contiguous']:.1f} ms on NCHW input); the reshape copies: "
                 f"{'yes' if bn['reshape_copies_channels_last'] else 'no'}")
    batch = bn["batch"] if bn else 512
    rows.append(Row("3", f"SplitBatchNorm2d (8 splits) on channels_last, ResNet-18's 20 BN layers, "
                         f"forward + backward of {batch} images", value))
    return rows


def phase4_rows(results: dict | None) -> list[Row]:
    measured, _ = _phase(results, "cuda_tests_and_notebook")
    tests, notebook = measured.get("tests"), measured.get("notebook")
    tests_value = None
    if tests and tests.get("status") in ("done", "failed"):
        counts = ", ".join(f"{tests[word]} {word}"
                           for word in ("passed", "failed", "skipped", "error", "errors")
                           if tests.get(word))
        tests_value = f"{counts or 'no tests'} in {tests['seconds']:.0f} s"
    notebook_value, notebook_name = None, "a notebook, colab preset"
    if notebook:
        notebook_name = f"notebook {Path(notebook['path']).stem}, {notebook['preset']} preset"
        if notebook["status"] == "done":
            notebook_value = f"{notebook['seconds']:.0f} s"
        elif notebook["status"] == "failed":
            notebook_value = f"failed after {notebook['seconds']:.0f} s"
    return [Row("4", "`pytest -m cuda`", tests_value),
            Row("4", f"{notebook_name}, start to end", notebook_value)]


def memory_rows(results: dict | None) -> list[Row]:
    rows = []
    for name, title in PHASE_TITLES.items():
        phase = (results or {}).get("phases", {}).get(name, {})
        peak = (phase.get("peak_memory_gb") if phase.get("status") in ("done", "stopped at cap")
                else None)
        rows.append(Row("5", f"peak GPU memory, phase {title}",
                        f"{peak:.1f} GB" if peak is not None else None))
    return rows


def rows(results: dict | None, registered: list[str] | None = None) -> list[Row]:
    """Every figure of the suite, in a fixed order; `value` is None where `results`
    (None: no run) has none."""
    registered = _registered_methods() if registered is None else registered
    return [*throughput_rows(results), *simclr_rows(results), *method_rows(results, registered),
            *phase4_rows(results), *memory_rows(results)]


def measured_on(results: dict) -> str:
    return f"{results['device']['name']}, {results['date']}"


def markdown_table(results: dict | None, registered: list[str] | None = None,
                   targets: bool = True) -> str:
    """The figures as a markdown table: phase, figure, measured value, where and when, target."""
    on = measured_on(results) if results else ""
    header = ["phase", "figure", "measured", "on"] + (["target"] if targets else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows(results, registered):
        cells = [row.phase, row.figure, row.value or NOT_MEASURED, on if row.value else ""]
        cells = [cell.replace("|", "\\|") for cell in cells + ([row.target] if targets else [])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe_run(results: dict) -> str:
    """One line on a run: the machine, when, which code, the command, how long,
    what did not finish."""
    device = results["device"]
    threads = device.get("threads")
    where = device["name"] if device["type"] == "cuda" else (f"CPU, {threads} "
                                                             f"thread{'s' * (threads != 1)}")
    parts = [f"{where} (torch {device['torch']})", results["started"],
             f"commit {results.get('commit') or 'unknown'}", f"`{results['command']}`",
             f"{results.get('total_seconds', 0) / 60:.1f} min"]
    load = results.get("load_average")
    if load and "end" in load:   # other work on the machine slows every figure: timings under load
                                 # are upper bounds
        parts.append(f"load average {load['start']:.1f} at the start, {load['end']:.1f} at the end")
    not_done = [f"{name} {phase['status']}" for name, phase in results["phases"].items()
                if phase.get("status") != "done"]
    if not_done:
        parts.append("not done: " + ", ".join(not_done))
    return ", ".join(parts)


def newest(results_dir: Path, smoke: bool) -> dict | None:
    """The newest results file (by start time) of a GPU run (smoke=False) or of a --smoke run."""
    runs = [json.loads(path.read_text()) for path in sorted(Path(results_dir).glob("*.json"))]
    runs = [r for r in runs if r.get("smoke") is smoke and (smoke or r["device"]["type"] == "cuda")]
    return max(runs, key=lambda r: r["started"], default=None)


def performance_block(gpu: dict | None, smoke: dict | None,
                      registered: list[str] | None = None) -> str:
    """bench/README.md's generated figures: the GPU table (every row, measured or not) and the
    CPU smoke table."""
    parts = [BEGIN, ""]
    if gpu:
        parts.append(f"**Measured on a GPU** ({describe_run(gpu)}):")
    else:
        parts.append("**Measured on a GPU: not yet.** No GPU run's results file is in "
                     "`bench/results/`; the targets stand until one is.")
    parts += ["", markdown_table(gpu, registered), "",
              "Images/s count both views; s/epoch is one pass over CIFAR-10's 50,000 training "
              "images. Method costs: eager, the fastest of the epochs after the first, each "
              "method's defaults, same data and batch.", ""]
    if smoke:
        parts += ["<details><summary>The CPU smoke run (<code>python bench/suite.py "
                  "--smoke</code>): every phase at toy size, which checks that the suite runs "
                  "and says nothing about GPU speed</summary>", "",
                  f"{describe_run(smoke)}; a small CNN on a few hundred images.", "",
                  markdown_table(smoke, registered, targets=False), "", "</details>", ""]
    parts.append(END)
    return "\n".join(parts)


def replace_block(text: str, block: str) -> str:
    """`text` with everything from BEGIN to END (the markers included) replaced by `block`."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"the README must hold the markers {BEGIN!r} and {END!r} "
                         "once each, in that order")
    return text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the README's block is not up to date")
    args = parser.parse_args(argv)
    block = performance_block(newest(args.results_dir, smoke=False),
                              newest(args.results_dir, smoke=True))
    text = args.readme.read_text()
    updated = replace_block(text, block)
    if args.check:
        if updated != text:
            print(f"{args.readme}: the Performance figures differ from {args.results_dir}; run "
                  "python bench/report.py",
                  file=sys.stderr)
            return 1
        return 0
    args.readme.write_text(updated)
    print(f"{args.readme}: Performance figures written from {args.results_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
