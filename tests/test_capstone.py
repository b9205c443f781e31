"""Notebook 10's helpers (clcourse/capstone.py): what the ledger holds, the five hard-negative
encoders (the ledger's when it has them all, short runs otherwise), a capstone run measured as the
ledger measures, and the table that puts it beside the ledger."""
import json

import pytest
import torch

from clcourse import capstone
from clcourse import ledger as results
from clcourse.methods import METHODS
from clcourse.models import build_backbone
from clcourse.presets import PRESETS, CapstoneBudget, HardNegativesBudget, MocoBudget, SceBudget

# A budget small enough for a test: 64 images, batches of 32, one epoch; MoCo-family queues of 64.
TINY = PRESETS["smoke"].with_overrides(
    name="capstone-test", batch_size=32, warmup_epochs=0, knn_k=8,
    capstone=CapstoneBudget(train_subset=64, epochs=1, test_subset=32, ledger_scale="cpu"),
    moco=MocoBudget(queue_size=64, momentum=0.99, queue_sizes=(64,), momenta=(0.99,)),
    hard_negatives=HardNegativesBudget(n_hardest=8, n_mix_negatives=4, n_mix_query=2,
                                       mixing_warmup_epochs=0),
    sce=SceBudget(queue_size=64, lams=(0.5,), temperature_momenta=(0.05,)))


def images(n, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)


def ledger_file(tmp_path, runs):
    """A valid ledger file with `runs` = {method: [(seed, knn), ...]}; every other measure 0.5."""
    methods = {}
    for name in METHODS:
        records = [{"seed": seed,
                    "measures": {m: (knn if m == "knn" else 0.5) for m in results.MEASURES}}
                   for seed, knn in runs.get(name, [])]
        status = "done" if len(records) == 2 else "incomplete" if records else "pending"
        methods[name] = {"status": status, "runs": records, **({"reason": "seeds not run yet"}
                                                               if status != "done" else {})}
    ledger = {"schema": results.SCHEMA, "scale": {"name": "cpu", "description": "a test scale"},
              "seeds": [0, 1], "methods": results.summarise(methods), "encoders": {},
              "updated": "2026-12-06"}
    path = tmp_path / "cpu.json"
    path.write_text(json.dumps(ledger))
    return path


def test_without_a_ledger_file_every_method_is_pending_and_the_command_is_named(tmp_path):
    progress = capstone.ledger_progress("cpu", tmp_path / "cpu.json")
    assert progress.ledger is None and progress.pending == tuple(METHODS)
    assert progress.done == progress.incomplete == ()
    assert "python bench/ledger.py --scale cpu" in progress.report()


def test_a_partial_ledger_sorts_its_methods_by_status(tmp_path):
    path = ledger_file(tmp_path, {"simclr": [(0, 0.60), (1, 0.62)], "hcl": [(0, 0.61)]})
    progress = capstone.ledger_progress("cpu", path)
    assert progress.done == ("simclr",) and progress.incomplete == ("hcl",)
    assert set(progress.pending) == set(METHODS) - {"simclr", "hcl"}
    report = progress.report()
    assert "done: simclr (2/2 seeds)" in report and "incomplete: hcl (1/2 seeds)" in report
    assert "pending: " in report and "python bench/ledger.py --scale cpu" in report


def test_an_invalid_ledger_is_refused(tmp_path):
    (tmp_path / "cpu.json").write_text("{}")
    with pytest.raises(ValueError, match="not a valid ledger"):
        capstone.ledger_progress("cpu", tmp_path / "cpu.json")


def test_the_comparison_puts_the_ledgers_interval_or_pending_beside_each_run(tmp_path):
    ledger = json.loads(ledger_file(tmp_path, {"simclr": [(0, 0.60), (1, 0.62)]}).read_text())
    mine = {m: 0.25 for m in results.MEASURES}
    table = capstone.comparison_table({"mine": ("simclr", mine), "other": ("hcl", mine)}, ledger,
                                      measures=("knn", "uniformity"))
    rows = table.splitlines()
    assert rows[0] == "| run | method | kNN top-1 | uniformity |"
    assert rows[2] == "| mine | simclr | 25.0 | 0.250 |"
    interval = results.interval([0.60, 0.62])
    low, high = 100 * interval["low"], 100 * interval["high"]
    assert rows[3] == (f"| ledger (cpu) | simclr | 61.0 ({low:.1f} to {high:.1f})"
                       " | 0.500 (0.500 to 0.500) |")
    assert rows[5] == "| ledger (cpu) | hcl | pending | pending |"
    assert "| ledger (not measured) | simclr | pending | pending |" in capstone.comparison_table(
        {"mine": ("simclr", mine)}, None, measures=("knn", "uniformity"))
    with pytest.raises(ValueError, match="measures must be among"):
        capstone.comparison_table({"mine": ("simclr", mine)}, None, measures=("accuracy",))


def test_method_options_are_the_notebooks_own():
    smoke = PRESETS["smoke"]
    mochi = capstone.method_options("mochi", smoke)
    assert mochi["queue_size"] == smoke.moco.queue_size
    assert mochi["n_hardest"] == smoke.hard_negatives.n_hardest
    # the mixing starts within the capstone's short runs
    assert mochi["mixing_warmup_epochs"] < smoke.capstone.epochs
    assert capstone.method_options("sce", smoke) == {"queue_size": smoke.sce.queue_size}
    assert capstone.method_options("hcl", smoke) == {}
    with pytest.raises(ValueError, match="name must be one of"):
        capstone.method_options("hlc", smoke)


def test_without_the_ledgers_encoders_five_methods_train_from_one_backbone(tmp_path, monkeypatch):
    monkeypatch.setenv("CLCOURSE_RUNS", str(tmp_path / "runs"))
    train_images = images(64, 0)
    encoders = capstone.hard_negative_encoders(train_images, TINY, device="cpu")
    assert list(encoders.methods) == list(capstone.HARD_NEGATIVE_METHODS)
    assert "trained here: 1 epochs on 64 images" in encoders.source
    torch.manual_seed(0)
    initial = build_backbone(TINY.backbone).state_dict()
    for name, method in encoders.methods.items():
        assert (tmp_path / "runs" / TINY.name / f"nb10_{name}" / "last.pt").is_file()
        trained = method.backbone.state_dict()
        assert any(not torch.equal(trained[key], initial[key])
                   for key in initial if key.endswith("weight")), name
    # a second call reads the finished runs back: the same weights
    again = capstone.hard_negative_encoders(train_images, TINY, methods=("simclr",), device="cpu")
    first, second = encoders.methods["simclr"].state_dict(), again.methods["simclr"].state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_the_ledgers_encoders_are_used_only_when_it_holds_every_method(tmp_path, monkeypatch):
    loaded = []
    monkeypatch.setattr(results, "load_encoder", lambda name, scale, seed, device=None:
                        loaded.append(name) or torch.nn.Linear(1, 1))
    ledger = {"scale": {"name": "cpu", "description": "a test scale"},
              "encoders": {name: {"0": {}} for name in ("simclr", "hcl")}}
    encoders = capstone.hard_negative_encoders(images(64, 0), TINY, methods=("simclr", "hcl"),
                                               ledger=ledger)
    assert loaded == ["simclr", "hcl"]
    assert encoders.source.startswith("the cpu ledger's encoders (seed 0")
    monkeypatch.setenv("CLCOURSE_RUNS", str(tmp_path / "runs"))
    encoders = capstone.hard_negative_encoders(images(64, 0), TINY, methods=("simclr", "sce"),
                                               ledger=ledger)
    assert loaded == ["simclr", "hcl"] and "trained here" in encoders.source


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="methods must be names from"):
        capstone.hard_negative_encoders(images(64, 0), TINY, methods=("simclr", "nope"))
    with pytest.raises(ValueError, match="has no capstone budget"):
        capstone.hard_negative_encoders(images(64, 0), TINY.with_overrides(capstone=None))
    with pytest.raises(ValueError, match="options must be a dict"):
        capstone.capstone_run("hcl", 2.0, images(64, 0), (images(64, 1), torch.arange(64) % 4),
                              (images(32, 2), torch.arange(32) % 4), TINY)


def test_a_capstone_run_is_measured_as_the_ledger_measures(tmp_path, monkeypatch):
    monkeypatch.setenv("CLCOURSE_RUNS", str(tmp_path / "runs"))
    pool = (images(64, 1), torch.arange(64) % 4)
    test = (images(32, 2), torch.arange(32) % 4)
    measures = capstone.capstone_run("hcl", {"beta": 2.0}, images(64, 0), pool, test, TINY,
                                     run="nb10_hcl_beta2")
    # every measure of a ledger record but the time per epoch, which the ledger takes of its runs
    assert set(measures) == set(results.MEASURES) - {"seconds_per_epoch"}
    assert 0 <= measures["knn"] <= 1
    assert measures["same_class_chance"] == pytest.approx(0.25, abs=0.1)
    folder = tmp_path / "runs" / TINY.name / "nb10_hcl_beta2"
    config = json.loads((folder / "config.json").read_text())
    assert config["method"]["beta"] == 2.0 and config["seed"] == 0
