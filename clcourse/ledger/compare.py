"""A notebook's own runs beside the ledger: the ledger of one scale, its images, its protocol.

    comparison = ledger.comparison(preset, device)  # the cpu ledger (colab, full: once measured)
    print(comparison.describe())                # what the long run trained, on which images, seeds
    long_run = comparison.encoder("simclr")     # its seed-0 encoder, shipped with the course
    knn = comparison.knn({"yours": simclr, "long run": long_run})
    print(comparison.side_by_side(knn, "simclr"))
    comparison.plot("knn", ["simclr", "dcl"], student={"simclr": knn["yours"]})
    print(comparison.verdicts(["dcl"]))         # the paired differences, as the ledger states them

Every value here is measured with the ledger's protocol (backbone features; kNN with the scale's k
and T = 0.1 on the labelled pool; linear probes on class-balanced shares of the pool's labels), on
the preset's share of the ledger's images (`preset.ledger`: all of them, or the first few hundred of
each class on a CPU).

A ledger still being measured holds some methods as "pending" or with fewer seeds, and encoders of
some methods only; before its file exists at all, a comparison still measures your runs on the
scale's images (`SCALE_IMAGES`). Wherever the ledger has nothing yet, the text says so and names the
command that measures it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from . import (
    BASELINES,
    KNN_TEMPERATURE,
    MEASURES,
    PROBE_SEED,
    SCHEMA,
    _format,
    format_interval,
    labelled_subset,
    ledger_path,
    load_encoder,
    load_ledger,
    plot,
    retrain_command,
    summary_table,
)
from .data import ScaleData, scale_data

__all__ = ["GPU_SCALES", "LABEL_FRACTIONS", "SCALE_IMAGES", "scale_for", "difference_sentence",
           "supervised_preset", "unmeasured_ledger", "Comparison", "comparison"]

GPU_SCALES = ("colab", "full")
DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "stl10": "STL-10"}
# The linear probes of the ledger: the share of the labelled pool's labels each one is trained with.
LABEL_FRACTIONS = {0.01: "linear_1", 0.1: "linear_10", 1.0: "linear"}
# The images and kNN of each scale (bench/ledger.py's SCALES, which a test keeps equal): what a
# notebook measures on before the scale's ledger file exists.
SCALE_IMAGES = {
    "cpu": {"name": "cpu", "dataset": "cifar10", "classes": [0, 1, 2, 3, 4],
            "images_per_class": 1_000, "knn_k": 200},
    "colab": {"name": "colab", "dataset": "cifar10", "classes": list(range(10)),
              "images_per_class": None, "knn_k": 200},
    "full": {"name": "full", "dataset": "cifar10", "classes": list(range(10)),
             "images_per_class": None, "knn_k": 200},
}


def scale_for(preset) -> str:
    """The ledger a run of `preset` is compared with: the GPU ledger of the preset's name ("colab",
    "full") once it has been measured (its file exists), else "cpu"."""
    measured = preset.name in GPU_SCALES and ledger_path(preset.name).is_file()
    return preset.name if measured else "cpu"


def _status(ledger: dict, method_name: str) -> str:
    entry = ledger["methods"].get(method_name)
    if entry is None:
        return "not measured yet"
    return entry["status"] + (f": {entry['reason']}" if entry.get("reason") else "")


def _measure_command(ledger: dict, method_name: str | None = None) -> str:
    """How to measure what the ledger lacks: the whole scale, or one method's runs."""
    return f"`{retrain_command(ledger['scale']['name'], method_name)}` measures it"


def difference_sentence(ledger: dict, method_name: str, measure: str = "knn") -> str:
    """One sentence: the paired difference in `measure` between a method and its baseline
    (`BASELINES`), seed by seed, with its 95% interval and the ledger's verdict; or why the ledger
    has none yet, and the command that measures it."""
    if method_name not in BASELINES or (ledger["methods"] and method_name not in ledger["methods"]):
        raise ValueError(f"method_name must be one of the ledger's methods with a baseline "
                         f"{sorted(m for m in ledger['methods'] or BASELINES if m in BASELINES)}, "
                         f"got {method_name!r}")
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {sorted(MEASURES)}, got {measure!r}")
    baseline = BASELINES[method_name]
    difference = ledger["methods"].get(method_name, {}).get("difference", {}).get(measure)
    if difference is None:
        return (f"{method_name} vs {baseline}: no paired difference yet ({method_name} "
                f"{_status(ledger, method_name)}; {baseline} {_status(ledger, baseline)}); "
                f"{_measure_command(ledger)}.")
    unit = " points" if MEASURES[measure].percent else ""
    seeds = ", ".join(map(str, difference["seeds"]))
    if difference["low"] is None:
        return (f"{method_name} − {baseline}, {MEASURES[measure].title}: "
                f"{format_interval(difference, measure, True)}{unit} on seed {seeds} alone: no "
                f"interval and no verdict yet; {_measure_command(ledger)} on its other seeds.")
    return (f"{method_name} − {baseline}, {MEASURES[measure].title}: "
            f"{format_interval(difference, measure, True)}{unit} (mean and 95% interval of the "
            f"paired differences, seeds {seeds}): {difference['verdict']}.")


def supervised_preset(preset, num_images: int):
    """The budget of a supervised run on `num_images` labelled images:
    `preset.ledger.supervised_steps` SGD steps (rounded to whole epochs, at least one) in batches of
    the preset's size, or of all the images when there are fewer, without warm-up; a checkpoint at
    the end only."""
    if preset.ledger is None:
        raise ValueError(f"the preset {preset.name!r} has no ledger budget (preset.ledger is None)")
    batch_size = min(preset.batch_size, num_images)
    epochs = max(1, round(preset.ledger.supervised_steps / (num_images // batch_size)))
    return preset.with_overrides(epochs=epochs, batch_size=batch_size, warmup_epochs=0,
                                 checkpoint_every=epochs)


def _value(value: float | None, measure: str) -> str:
    if value is None:
        return "-"
    return _format(value, measure) + ("%" if MEASURES[measure].percent else "")


def unmeasured_ledger(scale: str) -> dict:
    """The ledger of a scale whose file does not exist yet: its images (`SCALE_IMAGES`), no seeds,
    no methods, no encoders."""
    if scale not in SCALE_IMAGES:
        raise ValueError(f"scale must be one of {sorted(SCALE_IMAGES)}, got {scale!r}")
    return {"schema": SCHEMA, "scale": dict(SCALE_IMAGES[scale]), "seeds": [], "methods": {},
            "encoders": {}}


@dataclass
class Comparison:
    """The ledger of one scale (`ledger`, parsed; empty when `measured` is False, its file not made
    yet) and the images a notebook measures on (`data`: the scale's, all of them or the first
    `pool_per_class` / `test_per_class` of each class), on `device`."""
    scale: str
    ledger: dict
    data: ScaleData
    pool_per_class: int | None
    test_per_class: int | None
    device: torch.device
    preset_name: str
    source: str | None = None   # where the encoders are, when not shipped with the course
    measured: bool = True       # whether the scale's ledger file exists

    @property
    def num_classes(self) -> int:
        return len(self.ledger["scale"]["classes"])

    @property
    def subset(self) -> bool:
        """Whether the images are fewer than the ledger's protocol uses."""
        return self.pool_per_class is not None or self.test_per_class is not None

    def _not_measured(self) -> str:
        return (f"The {self.scale} ledger has not been measured yet "
                f"({ledger_path(self.scale).name} is not there): "
                f"`{retrain_command(self.scale)}` measures it.")

    def _check_method(self, method_name: str) -> None:
        if self.measured and method_name not in self.ledger["methods"]:
            raise ValueError(f"method_name must be one of the {self.scale} ledger's methods "
                             f"{sorted(self.ledger['methods'])}, got {method_name!r}")

    def describe(self) -> str:
        """What the long run is: the scale's budget, data, seeds and protocol, read from its ledger
        file (or that there is none yet), and the images measured here."""
        scale, seeds = self.ledger["scale"], self.ledger["seeds"]
        classes = scale["classes"]
        names = ""
        if scale["dataset"] != "synthetic":
            from ..data import class_names
            names = f": {', '.join(class_names(scale['dataset'])[c] for c in classes)}"
        dataset = DATASET_NAMES.get(scale["dataset"], scale["dataset"])
        if self.measured:
            preset, per_class = scale["preset"], scale["images_per_class"]
            training = (f"{per_class * len(classes):,} images (the first {per_class:,} of each "
                        "class)" if per_class else "all of its training images")
            runs = sum(len(entry["runs"]) for entry in self.ledger["methods"].values())
            warmup = preset["warmup_epochs"]
            lines = [
                f"The long run: the {self.scale} ledger (`{retrain_command(self.scale)}`). Every "
                f"method trained for {preset['epochs']} epochs (batch {preset['batch_size']}, "
                f"{warmup} warm-up epoch{'' if warmup == 1 else 's'}) with a {preset['backbone']} "
                f"backbone on {training} of {dataset}, classes "
                f"{', '.join(map(str, classes))}{names}; seeds {', '.join(map(str, seeds))} "
                f"({runs} of {len(seeds) * len(self.ledger['methods'])} runs measured so far).",
            ]
        else:
            lines = [f"{self._not_measured()} Until then, your runs are measured here on its "
                     f"images ({dataset}, classes {', '.join(map(str, classes))}{names}), with "
                     "nothing to set them beside."]
        lines.append(f"Its measures: kNN top-1 (k = {scale['knn_k']}, T = {KNN_TEMPERATURE}) and "
                     "linear probes on the backbone's features, with every training image of those "
                     "classes as the labelled pool and every test image of them as the test set.")
        pool, test = len(self.data.pool_labels), len(self.data.test_labels)
        if self.subset:
            lines.append(f"Measured here: on {pool:,} pool and {test:,} test images (the first "
                         f"{self.pool_per_class or 'all'} and {self.test_per_class or 'all'} of "
                         "each class), to stay fast"
                         + ("; the values differ a little from the ledger's own, measured on all "
                            "of them." if self.measured else "."))
        else:
            lines.append(f"Measured here: on the ledger's {pool:,} pool and {test:,} test images.")
        if self.preset_name != self.scale and self.preset_name in GPU_SCALES:
            lines.append(f"Your {self.preset_name} preset has no ledger of its own yet "
                         f"({ledger_path(self.preset_name).name} is not there), so the long run is "
                         f"the {self.scale} one: another network, on other images.")
        return "\n".join(lines)

    # ------------------------------------------------------------ encoders and what they compute

    def encoder(self, method_name: str, seed: int = 0):
        """The ledger's encoder of (method, seed) on this comparison's device (`load_encoder`: a
        missing or corrupt file raises an error naming the file and the command that retrains it).
        None, with a line saying why and how to train it, when the ledger holds no encoder of that
        run (not run yet, or not at all)."""
        self._check_method(method_name)
        if str(seed) not in self.ledger["encoders"].get(method_name, {}):
            print(f"The {self.scale} ledger holds no encoder of {method_name} seed {seed} "
                  f"({_status(self.ledger, method_name)}); "
                  f"`{retrain_command(self.scale, method_name, seed)}` trains it.")
            return None
        return load_encoder(method_name, self.scale, seed, source=self.source, device=self.device)

    def features(self, encoder: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone features h of the pool and of the test images: `encoder` is a method (its
        backbone is used) or a backbone."""
        from ..evaluate import extract_features

        backbone = getattr(encoder, "backbone", encoder)
        if not isinstance(backbone, nn.Module):
            raise ValueError(f"encoder must be a method or a backbone (a torch.nn.Module), "
                             f"got {encoder!r}")
        return (extract_features(backbone, self.data.pool_images),
                extract_features(backbone, self.data.test_images))

    def knn(self, encoders: dict) -> dict:
        """{label: kNN top-1} of each encoder (a method or a backbone; None gives None): the
        ledger's kNN, bank the pool, k the scale's (at most the pool's size), T = 0.1."""
        from ..evaluate import knn_accuracy

        k = min(self.ledger["scale"]["knn_k"], len(self.data.pool_labels))
        values = {}
        for label, encoder in encoders.items():
            if encoder is None:
                values[label] = None
                continue
            pool, test = self.features(encoder)
            values[label] = knn_accuracy(pool, self.data.pool_labels.to(pool.device), test,
                                         self.data.test_labels.to(test.device), k=k,
                                         temperature=KNN_TEMPERATURE)
        return values

    def side_by_side(self, values: dict, method_name: str, measure: str = "knn") -> str:
        """`values` ({label: fraction or None}, measured here) as a table, then the ledger's own
        record of the method: seed 0's value and the mean and interval over its seeds, on all of
        the scale's images (or that it has none yet, and the command that measures it)."""
        self._check_method(method_name)
        if measure not in MEASURES:
            raise ValueError(f"measure must be one of {sorted(MEASURES)}, got {measure!r}")
        width = max(len(label) for label in values) + 2
        lines = [f"{'':<{width}}{MEASURES[measure].title}, measured here"]
        lines += [f"{label:<{width}}{_value(value, measure):>8}" for label, value in values.items()]
        entry = self.ledger["methods"].get(method_name, {"runs": []})
        if not self.measured:
            lines.append(self._not_measured())
        elif len(entry["runs"]) == 1:
            run = entry["runs"][0]
            value = _value(run["measures"][measure], measure)
            lines.append(f"The {self.scale} ledger's {method_name}, on all of its images: seed "
                         f"{run['seed']} {value}, its only seed so far (no interval yet; "
                         f"{_status(self.ledger, method_name)}; "
                         f"{_measure_command(self.ledger, method_name)}).")
        elif entry["runs"]:
            seed_0 = next((run["measures"][measure] for run in entry["runs"] if run["seed"] == 0),
                          None)
            unit = "%" if MEASURES[measure].percent else ""
            seeds = ", ".join(str(run["seed"]) for run in entry["runs"])
            lines.append(f"The {self.scale} ledger's {method_name}, on all of its images: seed 0 "
                         f"{_value(seed_0, measure)}; mean (95% interval) over seeds {seeds}: "
                         f"{format_interval(entry['summary'][measure], measure)}{unit}.")
        else:
            lines.append(f"The {self.scale} ledger has no run of {method_name} yet "
                         f"({_status(self.ledger, method_name)}); "
                         f"{_measure_command(self.ledger, method_name)}.")
        return "\n".join(lines)

    # ------------------------------------------------------------ the ledger's figures

    def plot(self, measure: str = "knn", methods=None, student: dict | None = None, ax=None):
        """`clcourse.ledger.plot` of this ledger: each method's seeds, mean and interval, and your
        values (`student`, {method or label: value}, measured here) as stars. Before the ledger has
        been measured: no figure (None), and a line saying so."""
        if not self.measured:
            print(f"No figure yet. {self._not_measured()}")
            return None
        label = "your run (measured on fewer images)" if self.subset else "your run"
        return plot(measure, self.ledger, methods, student, ax, student_label=label)

    def table(self, methods, measures=("knn", "linear", "linear_1", "same_class_share")) -> str:
        """The ledger's summary (`summary_table`) of `methods`: mean and interval per measure, and
        the paired difference in kNN to the baseline with its verdict. Markdown."""
        if not self.measured:
            return f"No table yet. {self._not_measured()}"
        return summary_table(self.ledger, measures, methods=methods)

    def verdicts(self, methods, measures=("knn",)) -> str:
        """`difference_sentence` for every method of `methods` that has a baseline, for each of
        `measures` (once per method when the ledger has no paired difference of it yet)."""
        if not self.measured:
            return f"No paired differences yet. {self._not_measured()}"
        sentences = [difference_sentence(self.ledger, name, measure) for name in methods
                     if name in BASELINES for measure in measures]
        return "\n".join(dict.fromkeys(sentences))

    # ------------------------------------------------------------ notebook 01: labels

    def labelled(self, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The pool's images and labels of the class-balanced share `fraction` of it
        (`labelled_subset`: the subsets of the ledger's probes)."""
        subset = labelled_subset(self.data.pool_labels, fraction).to(self.data.pool_labels.device)
        return self.data.pool_images[subset], self.data.pool_labels[subset]

    def probe_curve(self, encoder: nn.Module, fractions=tuple(LABEL_FRACTIONS)) -> dict:
        """{fraction: test accuracy} of linear probes on the encoder's backbone features, each
        trained on the labelled share `fraction` of the pool (the ledger's linear_1, linear_10 and
        linear at 0.01, 0.1, 1)."""
        from ..evaluate import linear_probe

        pool, test = self.features(encoder)
        pool_labels = self.data.pool_labels.to(pool.device)
        test_labels = self.data.test_labels.to(test.device)
        curve = {}
        for fraction in fractions:
            subset = labelled_subset(pool_labels, fraction).to(pool.device)
            curve[fraction] = linear_probe(pool[subset], pool_labels[subset], test, test_labels,
                                           seed=PROBE_SEED).test_accuracy
        return curve

    def classifier_accuracy(self, method: nn.Module) -> float:
        """Test accuracy of a classifier (a method whose projector gives one logit per class, e.g.
        `Supervised`)."""
        logits = method.embed(self.data.test_images)
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"method must output one logit per class ({self.num_classes}), got "
                             f"{logits.shape[1]}: is {type(method).__name__} a classifier of this "
                             "scale's classes?")
        labels = self.data.test_labels.to(logits.device)
        return (logits.argmax(dim=1) == labels).float().mean().item()

    def plot_label_efficiency(self, curves: dict, ax=None):
        """Test accuracy against the share of the pool's labels: each of `curves` ({label:
        {fraction: accuracy}}, measured here) as a line, the ledger's SimCLR probes (mean and
        interval over its seeds) and its supervised network's probe on all labels, once the ledger
        has them. Returns the matplotlib axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.8))
        for label, curve in curves.items():
            fractions = sorted(curve)
            ax.plot([100 * f for f in fractions], [100 * curve[f] for f in fractions], marker="o",
                    label=label)
        fractions = sorted(LABEL_FRACTIONS)
        simclr = self.ledger["methods"].get("simclr", {})
        if simclr.get("runs"):
            summaries = [simclr["summary"][LABEL_FRACTIONS[f]] for f in fractions]
            means = [100 * s["mean"] for s in summaries]
            errors = None if summaries[0]["low"] is None else [
                [100 * (s["mean"] - s["low"]) for s in summaries],
                [100 * (s["high"] - s["mean"]) for s in summaries]]
            ax.errorbar([100 * f for f in fractions], means, yerr=errors, color="black",
                        linestyle="--", capsize=3, marker="s",
                        label=f"{self.scale} ledger: SimCLR, {len(simclr['runs'])} "
                              f"seed{'s' * (len(simclr['runs']) > 1)}")
        supervised = self.ledger["methods"].get("supervised", {})
        if supervised.get("runs"):
            scale = self.ledger["scale"]
            labels = (f"{scale['images_per_class'] * len(scale['classes']):,}"
                      if scale["images_per_class"] else "all")
            ax.plot(100, 100 * supervised["summary"]["linear"]["mean"], "D", color="black",
                    label=f"{self.scale} ledger: supervised, trained on {labels} labels")
        ax.set_xscale("log")
        ax.set_xticks([100 * f for f in fractions], [f"{100 * f:g}%" for f in fractions])
        ax.set(xlabel="labels used (share of the labelled pool)", ylabel="test accuracy (%)",
               title=f"label efficiency ({self.num_classes} classes: chance "
                     f"{100 / self.num_classes:.0f}%)")
        ax.axhline(100 / self.num_classes, color="gray", linestyle=":", linewidth=0.8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        return ax


def comparison(preset=None, device: str | torch.device | None = None, scale: str | None = None,
               source: str | None = None) -> Comparison:
    """What a notebook run of `preset` (default `get_preset()`) is compared with: the ledger of
    `scale` (default `scale_for(preset)`) and its images, the share of them `preset.ledger` sets
    (all of them when it is None), on `device` (default `get_device()`). `source`: a folder or
    http(s) address holding the scale's encoders, for a scale whose encoders do not ship with the
    course (see `load_encoder`). Before the scale's ledger file exists, the comparison holds an
    empty ledger of the scale's images (`SCALE_IMAGES`) and says so wherever it is asked for the
    ledger's values."""
    from ..presets import get_device, get_preset

    preset = preset if preset is not None else get_preset()
    scale = scale or scale_for(preset)
    measured = ledger_path(scale).is_file() or scale not in SCALE_IMAGES
    ledger = load_ledger(scale) if measured else unmeasured_ledger(scale)
    budget = preset.ledger
    pool_per_class = budget.pool_per_class if budget else None
    test_per_class = budget.test_per_class if budget else None
    device = get_device(device)
    data = scale_data(ledger, pool_per_class, test_per_class, device=device)
    return Comparison(scale, ledger, data, pool_per_class, test_per_class, device, preset.name,
                      None if source is None else str(source), measured)
