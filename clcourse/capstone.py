"""Notebook 10: what the course measured, the five hard-negative methods side by side inside the
network, and the capstone, a run of your own compared with the course's results.

    progress = ledger_progress("cpu")              # what the results ledger holds, what is pending
    print(progress.report())
    encoders = hard_negative_encoders(images, preset, ledger=progress.ledger)
    yours = capstone_run("hcl", {"beta": 2.0}, images, (pool_x, pool_y), (test_x, test_y), preset)
    print(comparison_table({"HCL, beta = 2": ("hcl", yours)}, progress.ledger))

The encoders come from the ledger (`clcourse.ledger.load_encoder`: every method trained on one
budget, the same seed and images) when it holds all five, and otherwise from short runs trained
here on the preset's `capstone` budget (`clcourse.presets.CapstoneBudget`), each from the same
initial backbone (`torch.manual_seed(seed)` before it is built) and the same image order. The
measures of a capstone run are the ledger's own (`clcourse.ledger.measure`), so they compare with
the ledger's records measure by measure.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import ledger as results
from .methods import METHODS, Method, build_method
from .models import build_backbone
from .presets import Preset
from .train import train
from .validation import require_int_at_least

__all__ = ["HARD_NEGATIVE_METHODS", "LedgerProgress", "ledger_progress", "method_options",
           "Encoders", "hard_negative_encoders", "capstone_run", "comparison_table"]

# The methods notebooks 01-07 built around negatives, in the order the course meets them.
HARD_NEGATIVE_METHODS = ("simclr", "hcl", "mochi", "sce", "cacr")


@dataclass(frozen=True)
class LedgerProgress:
    """What the results ledger of one scale holds: the parsed ledger (None when the scale has no
    ledger file yet) and the registered methods by status."""
    scale: str
    ledger: dict | None
    done: tuple[str, ...]          # every seed measured
    incomplete: tuple[str, ...]    # some seeds measured
    pending: tuple[str, ...]       # no seed measured yet
    not_run: dict = field(default_factory=dict)   # method -> why the scale leaves it out

    @property
    def command(self) -> str:
        """The command that trains and measures what is missing (it resumes where it stopped)."""
        return results.retrain_command(self.scale)

    def report(self) -> str:
        """A few lines: which methods are measured, on how many seeds, and which are pending."""
        if self.ledger is None:
            return (f"The {self.scale} ledger has not been measured yet: all {len(self.pending)} "
                    f"methods are pending. Make it with `{self.command}`.")
        seeds = self.ledger["seeds"]
        lines = [f"The {self.scale} ledger ({self.ledger['scale']['description']}; seeds "
                 f"{', '.join(map(str, seeds))}; updated {self.ledger.get('updated') or '-'}):"]
        runs = {name: len(entry["runs"]) for name, entry in self.ledger["methods"].items()}
        for title, names in (("done", self.done), ("incomplete", self.incomplete),
                             ("pending", self.pending)):
            if names:
                counts = ", ".join(f"{name} ({runs.get(name, 0)}/{len(seeds)} seeds)"
                                   for name in names)
                lines.append(f"- {title}: {counts}")
        lines += [f"- not run: {name} ({why})" for name, why in self.not_run.items()]
        if self.incomplete or self.pending:
            lines.append(f"Still to measure: `{self.command}` (it resumes where it stopped).")
        return "\n".join(lines)


def ledger_progress(scale: str = "cpu", path=None) -> LedgerProgress:
    """The ledger of `scale` (or the file at `path`) and its methods by status; every registered
    method pending when there is no ledger file. An invalid ledger raises ValueError
    (`clcourse.ledger.load_ledger`)."""
    try:
        ledger = results.load_ledger(scale, path)
    except FileNotFoundError:
        return LedgerProgress(scale, None, (), (), tuple(METHODS))
    statuses = {name: entry["status"] for name, entry in ledger["methods"].items()}
    by_status = {status: tuple(name for name in METHODS if statuses.get(name, "pending") == status)
                 for status in ("done", "incomplete", "pending")}
    not_run = {name: entry.get("reason", "") for name, entry in ledger["methods"].items()
               if entry["status"] == "not run"}
    return LedgerProgress(ledger["scale"]["name"], ledger, by_status["done"],
                          by_status["incomplete"], by_status["pending"], not_run)


def method_options(name: str, preset: Preset) -> dict:
    """The options a method of notebooks 01-07 trains with there, for `build_method`: MoCHi and
    SCE with the preset's queue (notebooks 03, 04 and 07), MoCHi's mixing as notebook 04's, every
    other option the method's default (the papers' CIFAR-10 settings)."""
    if name not in METHODS:
        raise ValueError(f"name must be one of {sorted(METHODS)}, got {name!r}")
    if name == "mochi":
        mixing = preset.hard_negatives
        return {"queue_size": preset.moco.queue_size, "momentum": preset.moco.momentum,
                "n_hardest": mixing.n_hardest, "n_mix_negatives": mixing.n_mix_negatives,
                "n_mix_query": mixing.n_mix_query,
                "mixing_warmup_epochs": min(mixing.mixing_warmup_epochs,
                                            preset.capstone.epochs - 1)}
    if name == "sce":
        return {"queue_size": preset.sce.queue_size}
    if name == "moco":
        return {"queue_size": preset.moco.queue_size, "momentum": preset.moco.momentum}
    return {}


@dataclass(frozen=True)
class Encoders:
    """Trained methods by name, and where they come from (said in words)."""
    methods: dict[str, Method]
    source: str

    def backbones(self) -> dict:
        return {name: method.backbone for name, method in self.methods.items()}


def _trained(name: str, options: dict, images: torch.Tensor, preset: Preset, seed: int, run: str,
             progress: bool) -> Method:
    torch.manual_seed(seed)   # every method starts from the same backbone
    method = build_method(name, build_backbone(preset.backbone), **options)
    budget = preset.with_overrides(epochs=preset.capstone.epochs, knn_every=preset.capstone.epochs)
    train(method, images, preset=budget, run=run, seed=seed, progress=progress)
    return method.eval()


def hard_negative_encoders(images: torch.Tensor, preset: Preset, *,
                           methods: tuple[str, ...] = HARD_NEGATIVE_METHODS,
                           ledger: dict | None = None, seed: int = 0, device=None,
                           progress: bool = False) -> Encoders:
    """The trained `methods`: the ledger's encoders of `seed` when `ledger` holds every one of them
    (one budget, comparable), otherwise runs of the preset's `capstone` budget on `images` (uint8,
    the training images), kept under runs/<preset>/nb10_<method> and reused when they exist."""
    if preset.capstone is None:
        raise ValueError(f"preset {preset.name!r} has no capstone budget (notebook 10's); "
                         "use one of clcourse.presets.PRESETS")
    unknown = [name for name in methods if name not in METHODS]
    if not methods or unknown:
        raise ValueError(f"methods must be names from {sorted(METHODS)}, got {methods!r}")
    seed = require_int_at_least("seed", seed, 0)
    if ledger is not None and all(str(seed) in ledger["encoders"].get(name, {})
                                  for name in methods):
        scale = ledger["scale"]["name"]
        return Encoders({name: results.load_encoder(name, scale, seed, device=device)
                         for name in methods},
                        f"the {scale} ledger's encoders (seed {seed}; "
                        f"{ledger['scale']['description']})")
    trained = {name: _trained(name, method_options(name, preset), images, preset, seed,
                              f"nb10_{name}", progress) for name in methods}
    return Encoders(trained, f"runs trained here: {preset.capstone.epochs} epochs on "
                             f"{len(images):,} images, the {preset.name} preset's "
                             f"{preset.backbone}, seed {seed}")


def capstone_run(name: str, options: dict, images: torch.Tensor,
                 pool: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                 preset: Preset, *, seed: int = 0, run: str | None = None,
                 progress: bool = False) -> dict:
    """Train method `name` with `options` on the capstone budget (as `hard_negative_encoders` trains
    its runs: same seed, same initial backbone, same image order) and measure it as the ledger does
    (`clcourse.ledger.measure`: kNN, linear probes on 100%, 10% and 1% of `pool`'s labels,
    alignment, uniformity, the push on same-class negatives). Returns the measures (fractions)."""
    if preset.capstone is None:
        raise ValueError(f"preset {preset.name!r} has no capstone budget (notebook 10's); "
                         "use one of clcourse.presets.PRESETS")
    if not isinstance(options, dict):
        raise ValueError(f"options must be a dict of {name}'s options, got {options!r}")
    options = {**method_options(name, preset), **options}
    method = _trained(name, options, images, preset, seed, run, progress)
    return results.measure(method, name, pool, test, knn_k=min(200, len(pool[0])),
                           batch_size=preset.batch_size)["measures"]


def _yours(value: float, measure: str) -> str:
    return results.format_interval({"mean": value, "low": None, "high": None}, measure)


def comparison_table(yours: dict[str, tuple[str, dict]], ledger: dict | None,
                     measures=("knn", "linear", "uniformity", "same_class_share")) -> str:
    """A markdown table: each of your runs, {label: (method name, measures)}, measure by measure,
    beside the ledger's mean (95% interval) of the same method, or "pending" where the ledger has
    no run of it yet. Accuracies and shares are in percent."""
    for measure in measures:
        if measure not in results.MEASURES:
            raise ValueError(f"measures must be among {sorted(results.MEASURES)}, got {measure!r}")
    header = ["run", "method"] + [results.MEASURES[m].title for m in measures]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    scale = ledger["scale"]["name"] if ledger else None
    for label, (name, values) in yours.items():
        lines.append("| " + " | ".join([label, name] + [_yours(values[m], m) for m in measures])
                     + " |")
        entry = (ledger or {}).get("methods", {}).get(name, {})
        cells = [results.format_interval(entry["summary"][m], m) if entry.get("runs")
                 else "pending" for m in measures]
        lines.append("| " + " | ".join([f"ledger ({scale or 'not measured'})", name] + cells)
                     + " |")
    return "\n".join(lines)
