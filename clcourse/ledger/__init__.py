"""The results ledger: every method trained on one budget over several seeds,
measured, with intervals.

    from clcourse import ledger
    print(ledger.summary_table("cpu"))                     # mean and 95% interval per method
    ledger.plot("knn", "cpu", student={"simclr": my_knn})  # the ledger beside your own run
    encoder = ledger.load_encoder("hcl", "cpu")            # the long run's weights, to evaluate

`bench/ledger.py` writes one JSON file per scale into this folder (`cpu.json`, later `colab.json`,
`full.json`): per method, one record per seed (kNN, linear probes on 1%, 10% and 100% of the labels,
alignment, uniformity, the share of the loss's push on same-class negatives, seconds per epoch,
where and when it was measured), the mean and 95% t-interval of each measure over the seeds, and the
paired difference to the method's baseline (`BASELINES`: the same seed, so the same initial backbone
and the same image order) with its interval. Where that interval contains 0, the verdict is "no
effect detected at this scale". Seed 0's encoders of the `cpu` scale ship in `encoders/cpu/`, their
sha256 checksums in `cpu.json`.

`data.py` holds the images of a scale (`scale_data`), which `bench/ledger.py` trains and
measures on; `compare.py` what the notebooks need to set their own runs beside the ledger
(`comparison`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean, stdev

import torch

__all__ = ["SCHEMA", "LEDGER_DIR", "NO_EFFECT", "BASELINES", "Measure", "MEASURES", "STATUSES",
           "t_quantile", "interval", "paired_difference", "summarise", "VIEW_SEED", "SUBSET_SEED",
           "PROBE_SEED", "KNN_TEMPERATURE", "REFERENCE_TEMPERATURE", "labelled_subset",
           "push_weights", "measure", "problems", "ledger_path", "retrain_command", "load_ledger",
           "format_interval", "summary_table", "plot", "sha256_of", "encoder_dir", "encoder_file",
           "load_encoder", "ScaleData", "scale_data", "GPU_SCALES", "LABEL_FRACTIONS", "scale_for",
           "difference_sentence", "supervised_preset", "Comparison", "comparison",
           "SCALE_IMAGES", "unmeasured_ledger"]

SCHEMA = 1
LEDGER_DIR = Path(__file__).resolve().parent
NO_EFFECT = "no effect detected at this scale"
# Each method is compared with the method it changes, seed by seed.
BASELINES = {"dcl": "simclr", "hcl": "simclr", "simclr_multiview": "simclr", "clae": "simclr",
             "supcon": "simclr", "supervised": "simclr", "adversarial": "simclr", "mochi": "moco",
             "sce": "moco", "cacr": "simclr_multiview"}


@dataclass(frozen=True)
class Measure:
    title: str
    percent: bool = False          # a fraction shown as a percentage
    higher_is_better: bool | None = True


MEASURES = {
    "knn": Measure("kNN top-1", percent=True),
    "linear": Measure("linear probe, 100% of labels", percent=True),
    "linear_10": Measure("linear probe, 10% of labels", percent=True),
    "linear_1": Measure("linear probe, 1% of labels", percent=True),
    "alignment": Measure("alignment", higher_is_better=False),
    "uniformity": Measure("uniformity", higher_is_better=False),
    "same_class_share":
        Measure("push on same-class negatives", percent=True, higher_is_better=False),
    "same_class_chance": Measure("same-class share at chance", percent=True, higher_is_better=None),
    "seconds_per_epoch": Measure("seconds per epoch", higher_is_better=False),
}
STATUSES = ("done", "incomplete", "pending", "not run")


# ---------------------------------------------------------------- statistics

def t_quantile(p: float, df: int) -> float:
    r"""The p-quantile (p in (0.5, 1)) of Student's t distribution with `df` >= 1
    degrees of freedom.

    Bisection on the exact CDF for integer df (Abramowitz & Stegun 26.7.3-4): with
    theta = atan(t / sqrt(df)), P(|T| < t) = 2/pi (theta + sin theta cos theta sum_{k<(df-1)/2} c_k
    cos^{2k} theta) for odd df and sin theta sum_{k<df/2} d_k cos^{2k} theta for even df, where
    c_0 = 1, c_k = c_{k-1} 2k / (2k + 1) and d_0 = 1, d_k = d_{k-1} (2k - 1) / (2k)."""
    if not 0.5 < p < 1 or isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError("t_quantile needs p in (0.5, 1) and an integer df >= 1, "
                         f"got p={p!r}, df={df!r}")

    def two_sided(t: float) -> float:
        theta = math.atan(t / math.sqrt(df))
        cos2 = math.cos(theta) ** 2
        total, term = 0.0, 1.0
        if df % 2:
            for k in range(1, (df - 1) // 2 + 1):
                total += term
                term *= cos2 * 2 * k / (2 * k + 1)
            return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
        for k in range(1, df // 2 + 1):
            total += term
            term *= cos2 * (2 * k - 1) / (2 * k)
        return math.sin(theta) * total

    low, high = 0.0, 1.0
    while two_sided(high) < 2 * p - 1:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if two_sided(middle) < 2 * p - 1 else (low, middle)
    return (low + high) / 2


def interval(values: list[float], confidence: float = 0.95) -> dict:
    """n, mean, sample standard deviation and the t-interval mean -/+ t_{(1+c)/2, n-1} s / sqrt(n)
    of `values` (low and high are None for a single value)."""
    n = len(values)
    if n == 0:
        raise ValueError("interval needs at least one value, got none")
    mean = fmean(values)
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "low": None, "high": None}
    std = stdev(values)
    half_width = t_quantile((1 + confidence) / 2, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "low": mean - half_width, "high": mean + half_width}


def paired_difference(values: dict[int, float], baseline: dict[int, float],
                      baseline_name: str) -> dict | None:
    """The method's value minus its baseline's, seed by seed, over the seeds both have: its interval
    and a verdict, "no effect detected at this scale" when the interval contains 0. None when no
    seed is shared."""
    seeds = sorted(set(values) & set(baseline))
    if not seeds:
        return None
    result = interval([values[s] - baseline[s] for s in seeds])
    if result["low"] is None:
        verdict = "one seed: no interval"
    elif result["low"] <= 0 <= result["high"]:
        verdict = NO_EFFECT
    else:
        verdict = f"{'higher' if result['low'] > 0 else 'lower'} than {baseline_name}"
    return {**result, "seeds": seeds, "baseline": baseline_name, "verdict": verdict}


def summarise(methods: dict) -> dict:
    """`methods` ({name: entry with "runs"}) with every entry's "summary" (interval per measure)
    and, for a method with a baseline, "difference" (paired difference per measure) recomputed
    from its runs."""
    by_seed = {name: {measure: {run["seed"]: run["measures"][measure]
                                for run in entry.get("runs", [])}
                      for measure in MEASURES}
               for name, entry in methods.items()}
    summarised = {}
    for name, entry in methods.items():
        entry = {key: value for key, value in entry.items() if key not in ("summary", "difference")}
        if entry.get("runs"):
            entry["summary"] = {measure: interval(list(by_seed[name][measure].values()))
                                for measure in MEASURES}
            baseline = BASELINES.get(name)
            if baseline in by_seed and by_seed[baseline]["knn"]:
                differences = {measure: paired_difference(by_seed[name][measure],
                                                          by_seed[baseline][measure], baseline)
                               for measure in MEASURES}
                if all(differences.values()):
                    entry["difference"] = differences
        summarised[name] = entry
    return summarised


# ---------------------------------------------------------------- measuring one encoder

VIEW_SEED = 0    # the two test views of alignment, uniformity and the push on same-class negatives
SUBSET_SEED = 0  # the few-label subsets of the labelled pool
PROBE_SEED = 0   # the linear probes' minibatch order
KNN_TEMPERATURE = 0.1
REFERENCE_TEMPERATURE = 0.5   # SimCLR's, for the push of a method without a contrastive temperature


def labelled_subset(labels: torch.Tensor, fraction: float, seed: int = SUBSET_SEED) -> torch.Tensor:
    """Indices (sorted) of a class-balanced subset holding `fraction` of each class's examples
    (at least one), drawn with a generator seeded by `seed`: the same subset for every method."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    generator = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    chosen = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        count = max(1, round(fraction * len(members)))
        chosen.append(members[torch.randperm(len(members), generator=generator)[:count]])
    return torch.cat(chosen).sort().values


def push_weights(method_name: str, config: dict) -> dict:
    """Which weights `clcourse.negatives.same_class_gradient_share` gives each negative for this
    method (its run configuration's hyperparameters): DCL's and HCL's own estimator; CACR's
    repulsion softmax(2 tau- s), which is InfoNCE's at temperature 1 / (2 tau-); InfoNCE's at the
    method's temperature for the others (for MoCo, MoCHi and SCE on the batch's negatives, not the
    queue; SCE's soft targets are not modelled), and at SimCLR's 0.5 for a method with no
    contrastive temperature (supervised)."""
    if method_name in ("dcl", "hcl"):
        return {"loss": method_name, "temperature": config["temperature"],
                "tau_plus": config["tau_plus"],
                "beta": config.get("beta", 0.0) if method_name == "hcl" else 0.0}
    if method_name == "cacr":
        return {"loss": "infonce", "temperature": 1 / (2 * config["tau_neg"]), "tau_plus": 0.0,
                "beta": 0.0, "note": "CACR's repulsion weights softmax(2 tau- s)"}
    if "temperature" not in config:
        return {"loss": "infonce", "temperature": REFERENCE_TEMPERATURE, "tau_plus": 0.0,
                "beta": 0.0, "note": "no contrastive temperature: SimCLR's"}
    return {"loss": "infonce", "temperature": config["temperature"], "tau_plus": 0.0, "beta": 0.0}


def measure(method, method_name: str, pool: tuple[torch.Tensor, torch.Tensor],
            test: tuple[torch.Tensor, torch.Tensor], knn_k: int = 200,
            batch_size: int = 256) -> dict:
    """The ledger's measures of a trained method, deterministic given its weights
    (every draw is seeded):

    - on the backbone's features h of the labelled `pool` (images, labels) and the `test` set: kNN
      top-1 (bank: the pool, k = `knn_k`, T = 0.1); linear probes (`clcourse.evaluate.linear_probe`,
      its defaults) trained on 100%, 10% and 1% of the pool (class-balanced subsets,
      `labelled_subset`);
    - on the projected unit embeddings z of two views of every test image
      (`clcourse.augment.simclr_cifar`, a generator seeded with VIEW_SEED): alignment of the two
      views, uniformity of the first, and the share of the loss's push on same-class negatives with
      its chance level (`same_class_gradient_share` in batches of `batch_size`, with the weights of
      `push_weights`).

    Returns {"measures": {...}, "push_weights": {...}}; accuracies and shares are fractions."""
    from ..augment import simclr_cifar
    from ..evaluate import alignment, knn_accuracy, linear_probe, uniformity
    from ..negatives import same_class_gradient_share

    (pool_images, pool_labels), (test_images, test_labels) = pool, test
    device = next(method.parameters()).device
    pool_h, test_h = (method.embed(pool_images, projected=False),
                      method.embed(test_images, projected=False))
    pool_y, test_y = pool_labels.to(device), test_labels.to(device)
    measures = {"knn": knn_accuracy(pool_h, pool_y, test_h, test_y, k=knn_k,
                                    temperature=KNN_TEMPERATURE),
                "linear": linear_probe(pool_h, pool_y, test_h, test_y,
                                       seed=PROBE_SEED).test_accuracy}
    for key, fraction in (("linear_10", 0.1), ("linear_1", 0.01)):
        subset = labelled_subset(pool_labels, fraction).to(device)
        measures[key] = linear_probe(pool_h[subset], pool_y[subset], test_h, test_y,
                                     seed=PROBE_SEED).test_accuracy
    augment, generator = simclr_cifar(), torch.Generator().manual_seed(VIEW_SEED)
    views = augment(test_images.cpu(), generator), augment(test_images.cpu(), generator)
    z1, z2 = (method.embed(view) for view in views)
    weights = push_weights(method_name, method.config())
    share, chance = same_class_gradient_share(z1, z2, test_y, weights["temperature"],
                                              weights["tau_plus"], weights["beta"],
                                              batch_size=min(batch_size, len(z1)))
    measures.update(alignment=alignment(z1, z2).item(), uniformity=uniformity(z1).item(),
                    same_class_share=share.item(), same_class_chance=chance.item())
    return {"measures": measures, "push_weights": weights}


# ---------------------------------------------------------------- validation

def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _close(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[key], b[key]) for key in a)
    if _number(a) and _number(b):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def problems(ledger, registered: list[str] | None = None, complete: bool = True) -> list[str]:
    """What is wrong with a ledger (the parsed JSON of one scale), one sentence each; empty
    when nothing is.

    Checked: the schema; every registered method (default `clcourse.methods.METHODS`) present;
    each record with its seed and every measure, a finite number; summaries and paired
    differences that agree with the records; encoder entries with a file name and a sha256. With
    `complete`, also that every method has a record for every seed of the ledger, or is marked
    "not run" with the reason."""
    if not isinstance(ledger, dict):
        return [f"the ledger must be a JSON object, got {type(ledger).__name__}"]
    if ledger.get("schema") != SCHEMA:
        return [f"schema must be {SCHEMA}, got {ledger.get('schema')!r}"]
    found = []
    for key, kind in (("scale", dict), ("seeds", list), ("methods", dict), ("encoders", dict)):
        if not isinstance(ledger.get(key), kind):
            found.append(f"{key!r} must be a JSON {'object' if kind is dict else 'array'}, "
                         f"got {ledger.get(key)!r}")
    if found:
        return found
    seeds = ledger["seeds"]
    if (not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds)
            or len(set(seeds)) != len(seeds)):
        found.append(f"seeds must be distinct integers >= 0, got {seeds!r}")
    if registered is None:
        from ..methods import METHODS
        registered = list(METHODS)
    found += [f"method {name!r} is missing (every registered method must be present, or marked "
              "\"not run\" with a reason)" for name in registered if name not in ledger["methods"]]
    for name, entry in ledger["methods"].items():
        found += _method_problems(name, entry, seeds, complete)
    if not found:
        recomputed = summarise(ledger["methods"])
        for name, entry in ledger["methods"].items():
            for key in ("summary", "difference"):
                if not _close(entry.get(key), recomputed[name].get(key)):
                    found.append(f"{name}: its {key} does not match its runs (recompute "
                                 "it with bench/ledger.py)")
    for name, seeds_entry in ledger["encoders"].items():
        for seed, encoder in (seeds_entry.items() if isinstance(seeds_entry, dict)
                              else [(None, seeds_entry)]):
            if not (isinstance(encoder, dict) and isinstance(encoder.get("file"), str)
                    and isinstance(encoder.get("sha256"), str) and len(encoder["sha256"]) == 64):
                found.append(f"encoders.{name}.{seed}: needs a file name and a sha256 "
                             f"(64 hex digits), got {encoder!r}")
    fingerprints = {run.get("data") for entry in ledger["methods"].values()
                    if isinstance(entry, dict)
                    for run in entry.get("runs", []) if isinstance(run, dict)}
    if len(fingerprints) > 1:
        found.append("the runs were trained on different data (fingerprints "
                     f"{sorted(map(str, fingerprints))}): a ledger's runs must "
                     "all see the same images")
    return found


def _method_problems(name: str, entry, seeds: list[int], complete: bool) -> list[str]:
    if (not isinstance(entry, dict) or entry.get("status") not in STATUSES
            or not isinstance(entry.get("runs"), list)):
        return [f"{name}: needs a status (one of {', '.join(STATUSES)}) and a list of runs, "
                f"got {entry!r}"]
    found, run_seeds = [], []
    for run in entry["runs"]:
        if (not isinstance(run, dict) or not isinstance(run.get("seed"), int)
                or not isinstance(run.get("measures"), dict)):
            found.append(f"{name}: a run needs a seed and its measures, got {run!r}")
            continue
        run_seeds.append(run["seed"])
        bad = [m for m in MEASURES if not _number(run["measures"].get(m))]
        if bad:
            found.append(f"{name} seed {run['seed']}: {', '.join(bad)} must be finite numbers")
        if run["seed"] not in seeds:
            found.append(f"{name}: a run of seed {run['seed']}, which is not among the "
                         f"ledger's seeds {seeds}")
    if len(set(run_seeds)) != len(run_seeds):
        found.append(f"{name}: a seed appears twice among its runs {run_seeds}")
    if entry["status"] == "not run":
        if entry["runs"] or not str(entry.get("reason", "")).strip():
            found.append(f"{name}: marked \"not run\", which needs a reason and no runs")
        return found
    missing = [s for s in seeds if s not in run_seeds]
    if complete and missing:
        reason = f" ({entry['reason']})" if entry.get("reason") else ""
        found.append(f"{name}: no run of seed{'s' * (len(missing) > 1)} "
                     f"{', '.join(map(str, missing))}{reason}; run "
                     f"{'them' if len(missing) > 1 else 'it'}, or mark the method "
                     "\"not run\" with the reason")
    return found


# ---------------------------------------------------------------- reading

def ledger_path(scale: str) -> Path:
    return LEDGER_DIR / f"{scale}.json"


def retrain_command(scale: str, methods: str | None = None, seed: int | None = None) -> str:
    """The command (from a clone of the course) that (re)makes a scale's ledger, or
    some of its runs."""
    parts = ["python bench/ledger.py", f"--scale {scale}"]
    parts += [f"--methods {methods}"] if methods else []
    parts += [f"--seeds {seed}"] if seed is not None else []
    return " ".join(parts)


def load_ledger(scale: str = "cpu", path: str | os.PathLike | None = None) -> dict:
    """The ledger of `scale` (or the file at `path`), parsed and checked. A missing file raises
    FileNotFoundError and an invalid one ValueError, each naming the file and how to make it."""
    path = Path(path) if path is not None else ledger_path(scale)
    if not path.is_file():
        known = sorted(p.stem for p in LEDGER_DIR.glob("*.json"))
        raise FileNotFoundError(f"no ledger at {path}: the {scale!r} scale has not been measured "
                                f"(ledgers here: {', '.join(known) or 'none'}); make it with "
                                f"`{retrain_command(scale)}`")
    try:
        ledger = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable ledger ({type(error).__name__}: {error}); "
                         "restore it from the repository or remake it with "
                         f"`{retrain_command(scale)}`") from error
    found = problems(ledger, registered=list(ledger.get("methods", {})) if isinstance(ledger, dict)
                     else [], complete=False)
    if found:
        raise ValueError(f"{path} is not a valid ledger: " + "; ".join(found))
    return ledger


def _ledger(scale_or_ledger) -> dict:
    return scale_or_ledger if isinstance(scale_or_ledger, dict) else load_ledger(scale_or_ledger)


def _format(value: float, measure: str) -> str:
    return (f"{100 * value:.1f}" if MEASURES[measure].percent
            else f"{value:.2f}" if abs(value) >= 10 else f"{value:.3f}")


def format_interval(summary: dict | None, measure: str, signed: bool = False) -> str:
    """"63.1 (62.0 to 64.2)": a mean and its 95% interval (percentages for accuracies),
    "-" without runs."""
    if not summary:
        return "-"
    sign = "+" if signed and summary["mean"] > 0 else ""
    text = sign + _format(summary["mean"], measure)
    if summary["low"] is not None:
        text += f" ({_format(summary['low'], measure)} to {_format(summary['high'], measure)})"
    return text


def summary_table(scale_or_ledger="cpu",
                  measures=("knn", "linear", "linear_10", "linear_1", "same_class_share"),
                  difference: str = "knn", methods=None) -> str:
    """A markdown table: per method (every method of the ledger, or those of `methods`, in that
    order), the mean (95% interval) of each measure, n seeds, and the paired difference in
    `difference` to its baseline with the verdict."""
    ledger = _ledger(scale_or_ledger)
    unknown = [name for name in methods or () if name not in ledger["methods"]]
    if unknown:
        raise ValueError(f"methods must be among the ledger's {sorted(ledger['methods'])}, "
                         f"got {unknown}")
    title = MEASURES[difference].title
    header = ["method", "seeds", *(MEASURES[m].title for m in measures),
              f"{title} vs baseline (paired)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in methods or ledger["methods"]:
        entry = ledger["methods"][name]
        if entry["status"] == "not run":
            lines.append(f"| {name} | not run: {entry['reason']} |" + " |" * (len(header) - 2))
            continue
        summary = entry.get("summary", {})
        cells = [name, str(len(entry["runs"])),
                 *(format_interval(summary.get(m), m) for m in measures)]
        diff = entry.get("difference", {}).get(difference)
        cells.append(f"{format_interval(diff, difference, signed=True)} vs "
                     f"{diff['baseline']}: {diff['verdict']}"
                     if diff else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(measure: str = "knn", scale_or_ledger="cpu", methods=None, student: dict | None = None,
         ax=None, student_label: str = "your run"):
    """Each method's mean and 95% interval of `measure` (a bar with whiskers), every seed a dot, and
    your own values, `student` = {method or label: value} in the ledger's units (fractions for
    accuracies), as red stars (labelled `student_label` in the legend). Returns the matplotlib
    axes."""
    import matplotlib.pyplot as plt

    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {sorted(MEASURES)}, got {measure!r}")
    ledger = _ledger(scale_or_ledger)
    names = [n for n in (methods or ledger["methods"]) if ledger["methods"].get(n, {}).get("runs")]
    names += [n for n in (student or {}) if n not in names]
    scale = 100 if MEASURES[measure].percent else 1
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.4 * len(names) + 1.2))
    shown = []        # every value drawn, for the axis' range
    for row, name in enumerate(names):
        entry = ledger["methods"].get(name, {})
        if entry.get("runs"):
            summary = entry["summary"][measure]
            mean = scale * summary["mean"]
            error = None if summary["low"] is None else [[mean - scale * summary["low"]],
                                                         [scale * summary["high"] - mean]]
            ax.barh(row, mean, xerr=error, color="tab:blue", alpha=0.35, capsize=3)
            seeds = [scale * run["measures"][measure] for run in entry["runs"]]
            ax.plot(seeds, [row] * len(seeds), "o", color="tab:blue", markersize=3)
            shown += [mean, *seeds] + ([mean - error[0][0]] if error else [])
        if student and student.get(name) is not None:
            first = not any(line.get_label() == student_label for line in ax.lines)
            ax.plot(scale * student[name], row, "*", color="tab:red", markersize=12,
                    label=student_label if first else None)
            shown.append(scale * student[name])
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    unit = " (%)" if MEASURES[measure].percent else ""
    ax.set_xlabel(f"{MEASURES[measure].title}{unit}")
    ax.set_title(f"{ledger['scale']['name']} scale: mean and 95% interval over seeds "
                 f"{', '.join(map(str, ledger['seeds']))}")
    if student:
        ax.legend(loc="best")
    low = min(shown, default=0)
    if MEASURES[measure].percent and low > 20:   # accuracies: start below the lowest value drawn
        ax.set_xlim(left=max(0, low - 15))
    return ax


# ---------------------------------------------------------------- encoders

def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def encoder_dir(scale: str) -> Path:
    """Where a scale's committed encoders live: this folder's encoders/<scale>/."""
    return LEDGER_DIR / "encoders" / scale


def _download(url: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as file:
        shutil.copyfileobj(response, file)
    os.replace(partial, target)


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME")
                or Path.home() / ".cache") / "clcourse" / "encoders"


def encoder_file(method_name: str, scale: str = "cpu", seed: int = 0,
                 source: str | os.PathLike | None = None, ledger: dict | None = None) -> Path:
    """The checked file of the encoder of (method, seed) at `scale`: from this package
    (source None), a folder, or an http(s) URL (a folder URL; downloaded once into
    ~/.cache/clcourse/encoders/<scale>/). Its sha256 must be the ledger's."""
    ledger = ledger or load_ledger(scale)
    command = retrain_command(scale, method_name, seed)
    entry = ledger["encoders"].get(method_name, {}).get(str(seed))
    if entry is None:
        raise FileNotFoundError(f"the {scale} ledger ({ledger_path(scale)}) "
                                f"holds no encoder of {method_name!r} seed "
                                f"{seed} (encoders: "
                                f"{sorted(ledger['encoders']) or 'none'}); "
                                f"train it with `{command}`")
    source = str(source) if source is not None else None
    if source is None:
        path = encoder_dir(scale) / entry["file"]
    elif source.startswith(("https://", "http://", "file://")):
        path = _cache_dir() / scale / entry["file"]
        if not path.is_file() or sha256_of(path) != entry["sha256"]:
            url = source.rstrip("/") + "/" + entry["file"]
            try:
                _download(url, path)
            except OSError as error:
                raise FileNotFoundError(f"could not download the encoder {url} "
                                        f"({type(error).__name__}: {error}); check the address, "
                                        f"or train it with `{command}`") from error
    else:
        path = Path(source) / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(f"the encoder file {path} is missing; restore it (git checkout "
                                f"-- {path.name}, or the folder or address it came from) or "
                                f"retrain it with `{command}`")
    actual = sha256_of(path)
    if actual != entry["sha256"]:
        raise ValueError(f"the encoder file {path} is corrupt or not the ledger's: its sha256 "
                         f"is {actual}, the ledger's {entry['sha256']}; restore it, or "
                         f"retrain it with `{command}`")
    return path


def load_encoder(method_name: str, scale: str = "cpu", seed: int = 0,
                 source: str | os.PathLike | None = None, device: str | torch.device | None = None):
    """The method `method_name` as the ledger of `scale` trained it with `seed` (its backbone,
    options and weights), in eval mode, on `device` (default CPU):
    `encoder.embed(images, projected=False)` gives the features that the ledger's kNN and
    linear probes read.

    The weights come from this package (the `cpu` scale's seed-0 encoders are committed), or from
    `source`, a folder or an http(s) address of a folder holding the files the ledger names. A
    missing or corrupt file (its sha256 is checked) raises an error naming the file and the command
    that retrains it."""
    from ..methods import build_method
    from ..models import build_backbone

    ledger = load_ledger(scale)
    if method_name not in ledger["methods"]:
        raise ValueError(f"method_name must be one of the {scale} ledger's methods "
                         f"{sorted(ledger['methods'])}, got {method_name!r}")
    path = encoder_file(method_name, scale, seed, source, ledger)
    options = ledger["scale"]["method_options"].get(method_name, {})
    method = build_method(method_name, build_backbone(ledger["scale"]["preset"]["backbone"]),
                          **options)
    state = torch.load(path, map_location="cpu", weights_only=True)
    method.load_state_dict(state)
    return method.to(device or "cpu").eval()


from .compare import (  # noqa: E402
    GPU_SCALES,
    LABEL_FRACTIONS,
    SCALE_IMAGES,
    Comparison,
    comparison,
    difference_sentence,
    scale_for,
    supervised_preset,
    unmeasured_ledger,
)
from .data import ScaleData, scale_data  # noqa: E402
