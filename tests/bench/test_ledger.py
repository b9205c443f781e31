"""The ledger that bench/ledger.py writes: the scales' configuration, a toy ledger of 2 methods x 2
seeds run end to end (a killed run continues, a finished one is measured without training, the
measures are deterministic), --check on good and broken files, the budget, the workers, the encoder
loader and the README's Results section; and the notebooks' side (clcourse.ledger.compare) on the
toy ledger, which is partial (most methods pending): the scale's images, an encoder measured as the
ledger measures it, the tables, verdicts and plots a notebook prints, the label-efficiency
experiment, and a scale whose ledger file does not exist yet. (clcourse.ledger's own statistics:
tests/test_ledger.py.)"""
import copy
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from repository import NOTEBOOKS, REPO, load_script

from clcourse import ledger as results
from clcourse.data import data_root
from clcourse.ledger.data import first_per_class
from clcourse.methods import METHODS, build_method
from clcourse.models import build_backbone
from clcourse.presets import PRESETS, LedgerBudget, get_preset

bench = load_script(REPO / "bench" / "ledger.py")

TOY = bench.Scale("toy", "tests' toy scale",
                  bench._preset("ledger-toy", "small_cnn", None, None, batch_size=32,
                                epochs=2, warmup_epochs=0),
                  dataset="synthetic", classes=(0, 1), images_per_class=64,
                  method_options=bench.SCALES["cpu"].method_options, knn_k=5)


# ---------------------------------------------------------------- the scales

@pytest.mark.parametrize("name", ["cpu", "colab", "full"])
def test_every_method_builds_and_accepts_its_scale(name):
    scale = bench.SCALES[name]
    assert list(scale.method_options) == list(METHODS)
    train_images = len(scale.classes) * (scale.images_per_class or 5_000)
    for method_name in METHODS:
        method = bench.build(scale, method_name, seed=0)
        # queue, BN splits, batch checks
        method.on_train_start(train_images, scale.preset.batch_size)
    classes = len(scale.classes)
    # the class prior
    assert scale.method_options["dcl"] == {"tau_plus": 1 / classes}
    assert scale.method_options["hcl"] == {"tau_plus": 1 / classes, "beta": 1.0}
    assert scale.method_options["supervised"] == {"num_classes": classes}
    assert scale.method_options["adversarial"] == {"scheme": "cl"}
    assert scale.preset.knn_every == scale.preset.epochs and scale.preset.checkpoint_every == 1
    assert bench.Scale.from_dict(scale.as_dict()) == scale
    values = scale.as_dict()
    assert scale.same_runs({**values, "description": "reworded",
                            "preset": {**values["preset"], "new_field": 1}})
    assert not scale.same_runs({**values, "preset": {**values["preset"], "epochs": 7}})
    assert not scale.same_runs({**values, "knn_k": 7})
    options = values["method_options"]
    assert scale.same_runs({**values, "method_options": {**options, "a_later_method": {}}})
    assert scale.same_runs({**values, "method_options": {k: v for k, v in options.items()
                                                         if k != "dcl"}})
    assert not scale.same_runs({**values, "method_options": {**options, "dcl": {"tau_plus": 0.5}}})


def test_the_cpu_scale():
    cpu = bench.SCALES["cpu"]
    preset = cpu.preset
    assert (preset.backbone, preset.batch_size, preset.epochs, preset.warmup_epochs) == \
        ("small_cnn", 256, 30, 1)
    assert cpu.classes == (0, 1, 2, 3, 4) and cpu.images_per_class == 1_000 and cpu.knn_k == 200
    assert [bench.SCALES[n].preset.epochs for n in ("colab", "full")] == [50, 200]


def test_every_method_of_a_seed_starts_from_the_same_backbone():
    cpu = bench.SCALES["cpu"]
    simclr, dcl, other = (bench.build(cpu, "simclr", 0), bench.build(cpu, "dcl", 0),
                          bench.build(cpu, "simclr", 1))
    assert all(torch.equal(a, b) for a, b in zip(simclr.backbone.state_dict().values(),
                                                 dcl.backbone.state_dict().values()))
    assert not torch.equal(simclr.backbone.net.layer1[0][0].weight,
                           other.backbone.net.layer1[0][0].weight)


def test_first_per_class_keeps_the_stored_order():
    labels = torch.tensor([1, 0, 1, 2, 0, 0, 1, 2])
    assert first_per_class(labels, 2).tolist() == [0, 1, 2, 3, 4, 7]
    assert first_per_class(labels, None).tolist() == list(range(8))


@pytest.mark.skipif(not (data_root() / "cifar-10-batches-py" / "test_batch").is_file(),
                    reason="needs CIFAR-10")
def test_the_cpu_scale_data():
    data = bench.load_data(bench.SCALES["cpu"])
    assert [len(data.train_images), len(data.pool_images), len(data.test_images)] == \
        [5_000, 25_000, 5_000]
    for labels, per_class in ((data.train_labels, 1_000), (data.pool_labels, 5_000),
                              (data.test_labels, 1_000)):
        assert torch.bincount(labels).tolist() == [per_class] * 5
    first = first_per_class(data.pool_labels, 1_000)
    assert torch.equal(data.train_images, data.pool_images[first])
    # The notebooks' smaller copy: the first images of each class of the same pool and test set.
    small = results.scale_data(bench.SCALES["cpu"].as_dict(), pool_per_class=500,
                               test_per_class=200)
    assert [len(small.pool_images), len(small.test_images)] == [2_500, 1_000]
    assert torch.equal(small.pool_images, data.pool_images[first_per_class(data.pool_labels, 500)])
    assert torch.equal(small.test_labels, data.test_labels[first_per_class(data.test_labels, 200)])
    assert torch.equal(small.train_images, data.train_images)


# ---------------------------------------------------------------- the toy ledger, end to end

def _toy_main(tmp: Path, *arguments: str) -> int:
    return bench.main(["--scale", "toy", "--methods", "simclr,dcl", "--seeds", "0,1", "--runs",
                       str(tmp / "runs"), *arguments])


def _use_toy(patch, tmp: Path) -> None:
    patch.setitem(bench.SCALES, "toy", TOY)
    patch.setattr(bench, "POLL_SECONDS", 0.05)
    patch.setattr(results, "LEDGER_DIR", tmp)     # the toy ledger and its encoders live in tmp


@pytest.fixture(scope="module")
def toy_ledger(tmp_path_factory):
    """A toy ledger, simclr and dcl on seeds 0 and 1, whose first run was killed after its first
    epoch (of 2) and then continued. Returns its folder and the checkpoint the killed run left."""
    tmp = tmp_path_factory.mktemp("ledger")
    runs = tmp / "runs"
    runs.mkdir()
    (runs / "scale.json").write_text(json.dumps(TOY.as_dict()))
    worker = subprocess.Popen([sys.executable, str(REPO / "bench" / "ledger.py"), "--worker",
                               "simclr:0", "--runs",
                               str(runs), "--encoders", str(tmp / "encoders" / "toy")],
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    snapshot = runs / "simclr_s0" / "epoch_0001.pt"      # written right after last.pt
    deadline = time.monotonic() + 120
    while not snapshot.is_file() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    killed = torch.load(runs / "simclr_s0" / "last.pt", weights_only=False)
    with pytest.MonkeyPatch.context() as patch:
        _use_toy(patch, tmp)
        assert _toy_main(tmp, "--jobs", "2") == 0
    return tmp, killed


@pytest.fixture
def toy(toy_ledger, monkeypatch):
    _use_toy(monkeypatch, toy_ledger[0])
    return toy_ledger


def _ledger(tmp):
    return json.loads((tmp / "toy.json").read_text())


def test_the_toy_ledger_holds_every_run_and_its_statistics(toy):
    tmp, _ = toy
    ledger = _ledger(tmp)
    assert ledger["seeds"] == [0, 1] and ledger["scale"] == TOY.as_dict()
    assert [ledger["methods"][m]["status"] for m in METHODS] == \
        ["done", "done"] + ["pending"] * (len(METHODS) - 2)
    for name in ("simclr", "dcl"):
        runs = ledger["methods"][name]["runs"]
        assert [run["seed"] for run in runs] == [0, 1] and all(run["epochs"] == 2 for run in runs)
        for run in runs:
            measures = run["measures"]
            assert set(measures) == set(results.MEASURES)
            assert all(0 <= measures[m] <= 1
                       for m in ("knn", "linear", "linear_10", "linear_1", "same_class_share"))
            # one batch of 32 test images, 16 a class
            assert measures["same_class_chance"] == pytest.approx(30 / 62)
            assert run["machine"]["threads"] == 1 and run["date"] and run["commit"] and \
                len(run["data"]) == 16
        knn = [run["measures"]["knn"] for run in runs]
        assert ledger["methods"][name]["summary"]["knn"] == pytest.approx(results.interval(knn))
    simclr, dcl = ({run["seed"]: run["measures"]["linear"] for run in ledger["methods"][n]["runs"]}
                   for n in ("simclr", "dcl"))
    difference = ledger["methods"]["dcl"]["difference"]["linear"]
    assert difference["mean"] == pytest.approx((dcl[0] - simclr[0] + dcl[1] - simclr[1]) / 2)
    assert difference["baseline"] == "simclr" and "difference" not in ledger["methods"]["simclr"]
    assert ledger["methods"]["hcl"]["reason"] == "seeds 0, 1 not run yet"
    # a finished run keeps last.pt alone
    assert not list((tmp / "runs" / "simclr_s0").glob("epoch_*.pt"))


def test_a_killed_run_continues_from_its_checkpoint(toy):
    tmp, killed = toy
    assert killed["epoch"] == 1
    finished = torch.load(tmp / "runs" / "simclr_s0" / "last.pt", weights_only=False)
    assert finished["epoch"] == 2 and finished["history"]["epochs"][0] == \
        killed["history"]["epochs"][0]


def test_a_finished_run_is_measured_again_without_training(toy, monkeypatch):
    tmp, _ = toy
    before = _ledger(tmp)
    checkpoint = tmp / "runs" / "dcl_s1" / "last.pt"
    mtime = checkpoint.stat().st_mtime_ns
    (tmp / "runs" / "dcl_s1" / "record.json").unlink()
    edited = copy.deepcopy(before)
    edited["methods"]["dcl"]["runs"].pop()
    (tmp / "toy.json").write_text(json.dumps(edited))
    assert _toy_main(tmp) == 0
    after = _ledger(tmp)
    assert checkpoint.stat().st_mtime_ns == mtime                       # not trained again
    rerun, = [run for run in after["methods"]["dcl"]["runs"] if run["seed"] == 1]
    # the same numbers
    assert rerun["measures"] == before["methods"]["dcl"]["runs"][1]["measures"]
    # And a complete ledger starts nothing.
    monkeypatch.setattr(bench.subprocess, "Popen", None)
    assert _toy_main(tmp) == 0 and _ledger(tmp)["methods"] == after["methods"]


def test_check_names_what_is_wrong(toy, capsys):
    tmp, _ = toy
    path = tmp / "checked.json"

    def check(ledger) -> tuple[int, str]:
        path.write_text(json.dumps(ledger))
        code = bench.main(["--check", str(path)])
        return code, capsys.readouterr().err

    ledger = _ledger(tmp)
    code, err = check(ledger)
    assert code == 1 and "hcl: no run of seeds 0, 1 (seeds 0, 1 not run yet)" in err
    for name in METHODS:
        if name not in ("simclr", "dcl"):
            ledger["methods"][name] = {"status": "not run", "reason": "not part of the toy ledger",
                                       "runs": []}
    assert check(ledger) == (0, "")
    broken = {
        "method 'moco' is missing": lambda d: d["methods"].pop("moco"),
        "dcl: no run of seed 1;": lambda d: d["methods"]["dcl"]["runs"].pop(),
        "dcl: its summary does not match its runs":
            lambda d: d["methods"]["dcl"]["summary"]["knn"].update(mean=0.9),
        "dcl seed 0: knn must be finite numbers":
            lambda d: d["methods"]["dcl"]["runs"][0]["measures"].pop("knn"),
        "schema must be 1": lambda d: d.update(schema=2),
        "hcl: marked \"not run\", which needs a reason":
            lambda d: d["methods"]["hcl"].update(reason=" "),
        "different data": lambda d: d["methods"]["dcl"]["runs"][0].update(data="0" * 16),
        "encoders.simclr.0: needs a file name and a sha256":
            lambda d: d["encoders"]["simclr"]["0"].pop("sha256"),
    }
    for message, damage in broken.items():
        damaged = copy.deepcopy(ledger)
        damage(damaged)
        code, err = check(damaged)
        assert code == 1 and message in err, message
    path.write_text("{ not json")
    assert bench.main(["--check", str(path)]) == 1 and \
        "not a readable JSON file" in capsys.readouterr().err


def test_a_ledger_of_another_scale_definition_is_refused(toy, tmp_path):
    tmp, _ = toy
    other = dict(_ledger(tmp), scale={**TOY.as_dict(), "knn_k": 7})
    (tmp_path / "toy.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="another definition of the 'toy' scale"):
        bench.main(["--scale", "toy", "--runs", str(tmp_path / "runs"), "--output",
                    str(tmp_path / "toy.json")])


def test_a_budget_too_small_starts_nothing(toy, tmp_path, capsys):
    assert bench.main(["--scale", "toy", "--runs", str(tmp_path / "runs"), "--output",
                       str(tmp_path / "t.json"), "--budget-minutes", "0.01"]) == 0
    out = capsys.readouterr().out
    left = 3 * len(METHODS)                      # every method on the default seeds 0, 1, 2
    assert "the budget is spent" in out and \
        f"{left} left: run the same command again to continue" in out
    ledger = json.loads((tmp_path / "t.json").read_text())
    assert all(entry["status"] == "pending" for entry in ledger["methods"].values())
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["scale.json"]


def _reproduce(tmp_path: Path, run: str) -> int:
    return bench.main(["--scale", "toy", "--reproduce", run, "--runs", str(tmp_path / "again")])


def test_a_committed_run_trained_again_is_compared_with_the_ledger(toy, tmp_path, monkeypatch,
                                                                   capsys):
    tmp, _ = toy
    assert _reproduce(tmp_path, "dcl:1") == 0
    committed, = [run for run in _ledger(tmp)["methods"]["dcl"]["runs"] if run["seed"] == 1]
    again = json.loads((tmp_path / "again" / "ledger.json").read_text())
    rerun, = again["methods"]["dcl"]["runs"]
    # same machine, same numbers (but the time)
    assert {**rerun["measures"], "seconds_per_epoch": None} == \
        {**committed["measures"], "seconds_per_epoch": None}
    knn = f"kNN {100 * committed['measures']['knn']:.1f}%"
    out = capsys.readouterr().out
    assert f"dcl seed 1, here: {knn}" in out and f"dcl seed 1, {tmp / 'toy.json'}: {knn}" in out
    assert out.rstrip().endswith("kNN differs by +0.00 points: within 2")
    # A committed figure 3 points above the rerun's fails it; the finished rerun is measured again,
    # not trained.
    edited = copy.deepcopy(_ledger(tmp))
    edited["methods"]["dcl"]["runs"][1]["measures"]["knn"] += 0.03
    (tmp_path / "toy.json").write_text(json.dumps(edited))
    monkeypatch.setattr(results, "LEDGER_DIR", tmp_path)
    assert _reproduce(tmp_path, "dcl:1") == 1
    assert capsys.readouterr().out.rstrip().endswith("kNN differs by -3.00 points: more than 2")


@pytest.mark.parametrize(("run", "message"), [
    ("dcl", "--reproduce must be METHOD:SEED"), ("nope:0", "METHOD one of simclr"),
    ("dcl:-1", "SEED an integer >= 0; got 'dcl:-1'"),
    ("hcl:0", "holds no run of hcl seed 0 to compare with"),
])
def test_reproduce_refuses_what_it_cannot_compare(toy, tmp_path, run, message):
    with pytest.raises(SystemExit, match=re.escape(message)):
        _reproduce(tmp_path, run)
    assert not (tmp_path / "again").exists()          # refused before anything was trained


def test_seconds_needed_for_the_next_piece_of_work():
    assert bench.seconds_needed(3, 30, epoch_seconds=20, evaluation_seconds=50) == 20
    # the last epoch, measured
    assert bench.seconds_needed(29, 30, epoch_seconds=20, evaluation_seconds=50) == 70
    assert bench.seconds_needed(30, 30, epoch_seconds=20, evaluation_seconds=50) == 50


class _Process:
    def __init__(self):
        self.terminated = False

    def poll(self):
        return 0 if self.terminated else None

    def terminate(self):
        self.terminated = True

    def wait(self, timeout=None):
        return 0


def test_a_run_stops_when_its_next_epoch_would_not_fit(tmp_path):
    folder = tmp_path / "simclr_s0"
    folder.mkdir()
    torch.save({"epoch": 3}, folder / "last.pt")
    scale = dataclasses.replace(TOY, preset=TOY.preset.with_overrides(epochs=30))
    parent = bench.Ledger(scale, tmp_path, tmp_path / "t.json", tmp_path, jobs=1,
                          budget_minutes=0.5)
    parent.ledger = bench.new_ledger(TOY, [0])
    now = time.monotonic()
    # Epoch 3 came 10 s after epoch 2: another 10 s fit in the half minute left.
    worker = bench.Worker("simclr", 0, _Process(), folder, checkpoint_time=now - 10, epochs_done=2)
    parent.watch(worker)
    assert not worker.process.terminated and worker.epochs_done == 3
    # Epoch 4 came 40 s after epoch 3: another 40 s would not fit.
    torch.save({"epoch": 4}, folder / "last.pt")
    os.utime(folder / "last.pt", ns=(1, 1))
    worker.checkpoint_time = time.monotonic() - 40
    parent.watch(worker)
    assert worker.process.terminated and worker.stopped


def test_an_interrupted_ledger_leaves_no_worker_running(toy, tmp_path, monkeypatch):
    started = []
    start = bench.Ledger.start

    def interrupt(self, worker):
        raise KeyboardInterrupt
    monkeypatch.setattr(bench.Ledger, "start", lambda *args: started.append(start(*args))
                        or started[-1])
    monkeypatch.setattr(bench.Ledger, "watch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--scale", "toy", "--runs", str(tmp_path / "runs"), "--output",
                    str(tmp_path / "t.json")])
    worker, = started
    assert worker.process.returncode == -signal.SIGTERM


# ---------------------------------------------------------------- encoders

def test_load_encoder_gives_the_ledger_weights(toy):
    tmp, _ = toy
    encoder = results.load_encoder("simclr", scale="toy")
    trained = torch.load(tmp / "runs" / "simclr_s0" / "last.pt", weights_only=False)["method"]
    assert all(torch.equal(value, trained[key]) for key, value in encoder.state_dict().items())
    assert not encoder.training
    from_folder = results.load_encoder("dcl", scale="toy", source=tmp / "encoders" / "toy")
    assert type(from_folder).__name__ == "DCL" and from_folder.tau_plus == 0.2


def test_load_encoder_from_an_address(toy, tmp_path, monkeypatch):
    tmp, _ = toy
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    address = (tmp / "encoders" / "toy").as_uri()
    encoder = results.load_encoder("dcl", scale="toy", source=address)
    cached = tmp_path / "clcourse" / "encoders" / "toy" / "dcl_s0.pt"
    assert cached.is_file() and type(encoder).__name__ == "DCL"
    cached.write_bytes(b"damaged")          # a damaged copy in the cache is fetched again
    results.load_encoder("dcl", scale="toy", source=address)
    assert results.sha256_of(cached) == _ledger(tmp)["encoders"]["dcl"]["0"]["sha256"]
    with pytest.raises(FileNotFoundError, match="could not download the encoder"):
        results.load_encoder("simclr", scale="toy", source=(tmp_path / "nowhere").as_uri())


def test_a_missing_or_corrupt_encoder_names_the_file_and_the_command(toy, tmp_path):
    tmp, _ = toy
    command = "python bench/ledger.py --scale toy --methods simclr --seeds 0"
    original = tmp / "encoders" / "toy" / "simclr_s0.pt"
    (tmp_path / "simclr_s0.pt").write_bytes(original.read_bytes()[:-1] + b"x")
    with pytest.raises(ValueError, match="corrupt or not the ledger's") as error:
        results.load_encoder("simclr", scale="toy", source=tmp_path)
    assert str(tmp_path / "simclr_s0.pt") in str(error.value) and command in str(error.value)
    with pytest.raises(FileNotFoundError) as error:
        results.load_encoder("simclr", scale="toy", source=tmp_path / "elsewhere")
    assert str(tmp_path / "elsewhere" / "simclr_s0.pt") in str(error.value) and \
        command in str(error.value)
    with pytest.raises(FileNotFoundError, match="holds no encoder of 'simclr' seed 1"):
        results.load_encoder("simclr", scale="toy", seed=1)
    with pytest.raises(ValueError, match="method_name must be one of"):
        results.load_encoder("byol", scale="toy")
    with pytest.raises(FileNotFoundError, match="python bench/ledger.py --scale colab"):
        results.load_encoder("simclr", scale="colab")


# ---------------------------------------------------------------- tables, plots and the README

def test_summary_table_and_plot(toy):
    tmp, _ = toy
    ledger = _ledger(tmp)
    table = results.summary_table(ledger)
    knn = ledger["methods"]["dcl"]["summary"]["knn"]
    assert f"| dcl | 2 | {results.format_interval(knn, 'knn')} |" in table
    assert "vs simclr: " in table and "| hcl | 0 | - |" in table
    ax = results.plot("knn", ledger, student={"simclr": 0.5, "mine": 0.25})
    stars = [line for line in ax.lines if line.get_marker() == "*"]
    assert [(line.get_xdata()[0], line.get_ydata()[0]) for line in stars] == [(50.0, 0), (25.0, 2)]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["simclr", "dcl", "mine"]
    assert ax.get_xlim()[0] <= 25 <= ax.get_xlim()[1]      # every star in view, however far below
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["your run"]
    assert ax.get_title() == "toy scale: mean and 95% interval over seeds 0, 1"


def test_the_results_section_is_written_from_the_ledgers(toy, tmp_path, capsys):
    tmp, _ = toy
    # the toy ledger stands in for the cpu one
    (tmp / "cpu.json").write_text((tmp / "toy.json").read_text())
    readme = tmp_path / "README.md"
    readme.write_text(f"# Course\n\n{bench.BEGIN}\nold\n{bench.END}\n\nafter\n")
    assert bench.main(["--report", "--check", "--readme", str(readme)]) == 1
    assert bench.main(["--report", "--readme", str(readme)]) == 0
    assert bench.main(["--report", "--check", "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Course\n\n") and text.endswith("\n\nafter\n")
    machine = _ledger(tmp)["methods"]["simclr"]["runs"][0]["machine"]
    # simclr and dcl on seeds 0, 1; of every method on them
    runs = f"4 of {2 * len(METHODS)}"
    assert "| `cpu` | small CNN, CIFAR-10 classes 0-4, 5,000 training images, 30 epochs " \
           f"| {runs} | 0, 1 | {machine['cpu']}, 1 thread, torch {torch.__version__} | " in text
    assert "| `colab` | ResNet-18, all of CIFAR-10, 50 epochs | not measured |  |  |  |  |" in text
    assert results.summary_table(_ledger(tmp)) in text and "**`full` scale**" not in text
    (tmp / "cpu.json").unlink()


def test_the_readme_shows_the_committed_ledgers():
    assert bench.main(["--report", "--check"]) == 0, \
        "run python bench/ledger.py --report and commit README.md"


# ----------------------------------------------------- the notebooks' side: a run beside the ledger

def _comparison(pool_per_class=None, test_per_class=None, preset="smoke", scale="toy"):
    budget = LedgerBudget(pool_per_class, test_per_class, supervised_steps=4)
    return results.comparison(get_preset(preset).with_overrides(ledger=budget), device="cpu",
                              scale=scale)


def test_scale_data_reads_the_ledgers_scale(toy):
    tmp, _ = toy
    data = results.scale_data("toy")
    assert [len(labels)
            for labels in (data.train_labels, data.pool_labels, data.test_labels)] == [128, 128, 32]
    small = results.scale_data(_ledger(tmp)["scale"], pool_per_class=10, test_per_class=3)
    assert torch.bincount(small.pool_labels).tolist() == [10, 10] and \
        torch.bincount(small.test_labels).tolist() == [3, 3]
    assert torch.equal(small.pool_images, data.pool_images[first_per_class(data.pool_labels, 10)])
    with pytest.raises(ValueError, match="pool_per_class must be an integer >= 1, got 0"):
        results.scale_data("toy", pool_per_class=0)
    with pytest.raises(ValueError, match="scale must be a scale's name"):
        results.scale_data({"classes": [0, 1]})


def test_the_scale_a_preset_is_compared_with(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "LEDGER_DIR", tmp_path)
    assert results.scale_for(get_preset("smoke")) == "cpu"
    assert results.scale_for(get_preset("colab")) == "cpu"          # no GPU ledger measured yet
    (tmp_path / "colab.json").write_text("{}")
    assert results.scale_for(get_preset("colab")) == "colab" and \
        results.scale_for(get_preset("full")) == "cpu"


def test_every_preset_sets_the_images_beside_the_ledger():
    assert (PRESETS["smoke"].ledger.pool_per_class,
            PRESETS["smoke"].ledger.test_per_class) == (500, 200)
    for name in ("colab", "full"):       # on a GPU, the ledger's own protocol: every image
        assert (PRESETS[name].ledger.pool_per_class,
                PRESETS[name].ledger.test_per_class) == (None, None)
    with pytest.raises(ValueError, match="pool_per_class must be an integer >= 1, got 0"):
        LedgerBudget(0, None, supervised_steps=1)
    with pytest.raises(ValueError, match="supervised_steps must be an integer >= 1"):
        LedgerBudget(None, None, supervised_steps=0)


def test_a_comparison_measures_as_the_ledger_does(toy):
    comparison = _comparison()
    encoder = comparison.encoder("simclr")
    data = comparison.data
    measured = results.measure(encoder, "simclr", (data.pool_images, data.pool_labels),
                               (data.test_images, data.test_labels), knn_k=TOY.knn_k,
                               batch_size=32)["measures"]
    assert comparison.knn({"long run": encoder, "backbone": encoder.backbone, "absent": None}) == {
        "long run": measured["knn"], "backbone": measured["knn"], "absent": None}
    assert comparison.probe_curve(encoder) == {0.01: measured["linear_1"],
                                               0.1: measured["linear_10"], 1.0: measured["linear"]}
    images, labels = comparison.labelled(0.1)
    assert torch.bincount(labels).tolist() == [6, 6] and images.shape == (12, 3, 32, 32)
    with pytest.raises(ValueError, match="encoder must be a method or a backbone"):
        comparison.knn({"mine": "simclr"})


def test_a_comparison_on_fewer_images_says_so(toy):
    comparison = _comparison(pool_per_class=20, test_per_class=5)
    assert comparison.subset and len(comparison.data.pool_labels) == 40 and \
        len(comparison.data.test_labels) == 10
    text = comparison.describe()
    assert "the toy ledger (`python bench/ledger.py --scale toy`)" in text
    assert "trained for 2 epochs (batch 32, 0 warm-up epochs) with a small_cnn backbone on 128 " \
        "images (the first 64 of each class) of synthetic, classes 0, 1;" in text
    assert "seeds 0, 1 (4 of 24 runs measured so far)" in text and "k = 5, T = 0.1" in text
    assert "on 40 pool and 10 test images (the first 20 and 5 of each class)" in text
    assert "no ledger of its own" not in text
    full = _comparison(preset="colab")
    assert "on the ledger's 128 pool and 32 test images" in full.describe()
    assert "Your colab preset has no ledger of its own yet (colab.json is not there)" \
        in full.describe()
    ax = comparison.plot("knn", ["simclr", "dcl"], student={"simclr": 0.5})
    assert [text.get_text() for text in ax.get_legend().get_texts()] == \
        ["your run (measured on fewer images)"]
    assert [text.get_text()
            for text in full.plot("knn", student={"dcl": 0.5}).get_legend().get_texts()] == [
        "your run"]


def test_an_encoder_the_ledger_lacks_or_has_damaged(toy, tmp_path, monkeypatch, capsys):
    tmp, _ = toy
    comparison = _comparison()
    assert comparison.encoder("hcl") is None
    assert capsys.readouterr().out == ("The toy ledger holds no encoder of hcl seed 0 (pending: "
                                       "seeds 0, 1 not run yet); `python bench/ledger.py --scale "
                                       "toy --methods hcl --seeds 0` trains it.\n")
    with pytest.raises(ValueError, match="method_name must be one of the toy ledger's methods"):
        comparison.encoder("byol")
    elsewhere = results.comparison(get_preset("smoke"), "cpu", scale="toy",
                                   source=tmp / "encoders" / "toy")
    # a scale whose encoders are in a folder
    assert type(elsewhere.encoder("dcl")).__name__ == "DCL"
    (tmp_path / "toy.json").write_text((tmp / "toy.json").read_text())
    (tmp_path / "encoders" / "toy").mkdir(parents=True)
    (tmp_path / "encoders" / "toy" / "simclr_s0.pt").write_bytes(b"damaged")
    monkeypatch.setattr(results, "LEDGER_DIR", tmp_path)
    with pytest.raises(ValueError,
                       match="simclr_s0.pt is corrupt or not the ledger's.*--methods simclr "
                             "--seeds 0"):
        comparison.encoder("simclr")
    with pytest.raises(FileNotFoundError, match="dcl_s0.pt is missing.*--methods dcl --seeds 0"):
        comparison.encoder("dcl")


def test_side_by_side_tables_and_verdicts(toy):
    tmp, _ = toy
    ledger = _ledger(tmp)
    comparison = _comparison()
    runs = ledger["methods"]["simclr"]["runs"]
    text = comparison.side_by_side({"your SimCLR": 0.25, "the long run": 0.5, "missing": None},
                                   "simclr")
    assert text.splitlines()[:4] == ["              kNN top-1, measured here",
                                     "your SimCLR      25.0%",
                                     "the long run     50.0%", "missing              -"]
    assert text.splitlines()[4] == (
        "The toy ledger's simclr, on all of its images: seed 0 "
        f"{100 * runs[0]['measures']['knn']:.1f}%; mean (95% interval) over seeds 0, 1: "
        f"{results.format_interval(ledger['methods']['simclr']['summary']['knn'], 'knn')}%.")
    assert comparison.side_by_side({"yours": 0.5}, "hcl").splitlines()[-1] == (
        "The toy ledger has no run of hcl yet (pending: seeds 0, 1 not run yet); "
        "`python bench/ledger.py --scale toy --methods hcl` measures it.")
    table = comparison.table(["dcl", "simclr"]).splitlines()
    assert len(table) == 4 and table[2].startswith("| dcl | 2 |") and \
        table[3].startswith("| simclr | 2 |")
    with pytest.raises(ValueError, match=r"methods must be among the ledger's .* got \['byol'\]"):
        results.summary_table(ledger, methods=["byol"])
    difference = ledger["methods"]["dcl"]["difference"]["knn"]
    sentence = ("dcl − simclr, kNN top-1: "
                f"{results.format_interval(difference, 'knn', signed=True)} points (mean and 95% "
                f"interval of the paired differences, seeds 0, 1): {difference['verdict']}.")
    assert results.difference_sentence(ledger, "dcl") == sentence
    assert comparison.verdicts(["simclr", "dcl", "hcl"],
                               measures=("knn", "linear")).splitlines() == [
        sentence, results.difference_sentence(ledger, "dcl", "linear"),
        "hcl vs simclr: no paired difference yet (hcl pending: seeds 0, 1 not run yet; simclr "
        "done); `python bench/ledger.py --scale toy` measures it."]
    with pytest.raises(ValueError,
                       match="method_name must be one of the ledger's methods with a baseline"):
        results.difference_sentence(ledger, "simclr")


def test_the_label_efficiency_experiment(toy):
    comparison = _comparison()
    # batch 256
    preset = get_preset("smoke").with_overrides(ledger=LedgerBudget(500, 200, supervised_steps=20))
    few = results.supervised_preset(preset, 25)
    assert (few.batch_size, few.epochs, few.warmup_epochs, few.checkpoint_every) == (25, 20, 0, 20)
    assert (results.supervised_preset(preset, 2_500).batch_size,
            results.supervised_preset(preset, 2_500).epochs) == \
        (256, 2)                                 # 9 steps an epoch
    assert results.supervised_preset(preset, 100_000).epochs == 1
    with pytest.raises(ValueError, match="has no ledger budget"):
        results.supervised_preset(preset.with_overrides(ledger=None), 25)
    torch.manual_seed(0)
    classifier = build_method("supervised", build_backbone("small_cnn"), num_classes=2)
    logits = classifier.embed(comparison.data.test_images)
    expected = (logits.argmax(1) == comparison.data.test_labels).float().mean().item()
    assert comparison.classifier_accuracy(classifier) == expected
    with pytest.raises(ValueError, match="one logit per class"):
        comparison.classifier_accuracy(build_method("supervised", build_backbone("small_cnn"),
                                                    num_classes=3))
    ax = comparison.plot_label_efficiency({"your SimCLR": {1.0: 0.7, 0.01: 0.5, 0.1: 0.6}})
    assert [text.get_text() for text in ax.get_legend().get_texts()] == \
        ["your SimCLR", "toy ledger: SimCLR, 2 seeds"]
    assert list(ax.lines[0].get_xdata()) == [1, 10, 100] and list(ax.lines[0].get_ydata()) == \
        [50, 60, 70]


def test_the_notebooks_load_encoders_the_ledger_has():
    """Every `comparison.encoder("...")` of a notebook names a method the ledger trains."""
    sources = ["".join(cell["source"]) for path in NOTEBOOKS
               for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "code"]
    named = {name for source in sources for name in re.findall(r'\.encoder\("(\w+)"\)', source)}
    assert named == {"simclr", "moco", "hcl", "clae", "cacr", "sce", "adversarial", "supervised"} \
        and named <= set(METHODS)


def test_the_scales_images_are_bench_ledgers():
    """What a notebook measures on before a scale's ledger exists is the
    scale bench/ledger.py trains."""
    assert set(results.SCALE_IMAGES) == set(bench.REPORTED)
    for name, images in results.SCALE_IMAGES.items():
        scale = bench.SCALES[name].as_dict()
        assert images == {key: scale[key] for key in images}


def test_a_method_measured_without_its_encoder(toy, tmp_path, monkeypatch, capsys):
    tmp, _ = toy
    ledger = _ledger(tmp)
    del ledger["encoders"]["dcl"]
    (tmp_path / "toy.json").write_text(json.dumps(ledger))
    monkeypatch.setattr(results, "LEDGER_DIR", tmp_path)
    comparison = _comparison()
    assert comparison.encoder("dcl") is None
    assert capsys.readouterr().out == (
        "The toy ledger holds no encoder of dcl seed 0 (done); "
        "`python bench/ledger.py --scale toy --methods dcl --seeds 0` trains it.\n")
    knn = comparison.knn({"the long run": comparison.encoder("dcl")})
    assert knn == {"the long run": None}
    lines = comparison.side_by_side(knn, "dcl").splitlines()
    assert lines[1].endswith("-") and \
        lines[2].startswith("The toy ledger's dcl, on all of its images")
    ledger["methods"]["dcl"].update(status="incomplete", reason="seed 0 not run yet",
                                    runs=ledger["methods"]["dcl"]["runs"][1:])   # seed 1 alone
    ledger["methods"] = results.summarise(ledger["methods"])
    (tmp_path / "toy.json").write_text(json.dumps(ledger))
    seed_1 = ledger["methods"]["dcl"]["runs"][0]["measures"]["knn"]
    assert _comparison().side_by_side(knn, "dcl").splitlines()[2] == (
        f"The toy ledger's dcl, on all of its images: seed 1 {100 * seed_1:.1f}%, its only seed so "
        "far (no interval yet; incomplete: seed 0 not run yet; `python bench/ledger.py --scale toy "
        "--methods dcl` measures it).")
    difference = ledger["methods"]["dcl"]["difference"]["knn"]
    assert results.difference_sentence(ledger, "dcl") == (
        f"dcl − simclr, kNN top-1: {results.format_interval(difference, 'knn', signed=True)} "
        "points on seed 1 alone: no interval and no verdict yet; `python bench/ledger.py --scale "
        "toy` measures it on its other seeds.")


def test_a_comparison_before_the_ledger_exists(toy, tmp_path, monkeypatch, capsys):
    """No ledger file yet: your runs are still measured on the scale's images; every value of the
    ledger is replaced by the command that measures it."""
    monkeypatch.setitem(results.SCALE_IMAGES, "toy", {key: TOY.as_dict()[key] for key in (
        "name", "dataset", "classes", "images_per_class", "knn_k")})
    monkeypatch.setattr(results, "LEDGER_DIR", tmp_path)          # no toy.json there
    comparison = _comparison(pool_per_class=20, test_per_class=5)
    assert not comparison.measured and comparison.ledger["methods"] == {}
    missing = ("The toy ledger has not been measured yet (toy.json is not there): "
               "`python bench/ledger.py --scale toy` measures it.")
    text = comparison.describe().splitlines()
    assert text[0] == (f"{missing} Until then, your runs are measured here on its images "
                       "(synthetic, classes 0, 1), with nothing to set them beside.")
    assert text[2] == ("Measured here: on 40 pool and 10 test images (the first 20 and 5 of each "
                       "class), to stay fast.")
    assert comparison.encoder("simclr") is None
    assert capsys.readouterr().out == (
        "The toy ledger holds no encoder of simclr seed 0 (not measured yet); "
        "`python bench/ledger.py --scale toy --methods simclr --seeds 0` trains it.\n")
    torch.manual_seed(0)
    knn = comparison.knn({"yours": build_backbone("small_cnn"), "the long run": None})
    assert 0 <= knn["yours"] <= 1 and knn["the long run"] is None
    assert comparison.side_by_side(knn, "simclr").splitlines()[-1] == missing
    assert comparison.verdicts(["dcl", "hcl"]) == f"No paired differences yet. {missing}"
    assert comparison.table(["dcl"]) == f"No table yet. {missing}"
    assert comparison.plot("knn", ["simclr"], student={"simclr": knn["yours"]}) is None
    assert capsys.readouterr().out == f"No figure yet. {missing}\n"
    ax = comparison.plot_label_efficiency({"yours": {0.01: 0.5, 0.1: 0.6, 1.0: 0.7}})
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["yours"]
    assert torch.bincount(comparison.labelled(1.0)[1]).tolist() == [20, 20]
    assert "hcl vs simclr: no paired difference yet (hcl not measured yet; simclr not measured " \
        "yet); `python bench/ledger.py --scale toy` measures it." == \
        results.difference_sentence(comparison.ledger, "hcl")
    with pytest.raises(FileNotFoundError, match="no ledger at .*elsewhere.json"):
        _comparison(scale="elsewhere")                       # a scale whose images are not known
