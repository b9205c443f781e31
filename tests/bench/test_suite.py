"""The benchmark scripts keep working: each runs its --smoke configuration on the CPU.
(Speeds are reported by running the scripts on a GPU, never by these tests.) Also the suite's parts: its
schedule, its phases' bookkeeping, the notebook runner and the JPEG pack, and the suite itself at toy size."""
import json
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import write_notebook
from repository import REPO, load_bench


def test_throughput_smoke(capsys):
    results = load_bench("throughput").main(["--smoke", "--skip-pil"])
    assert len(results) == 2 and all(v > 0 for v in results.values())
    assert "end to end / model step alone" in capsys.readouterr().out


@pytest.mark.parametrize("method, options", [("simclr", []), ("moco", ["--option", "queue_size=256"])])
def test_accuracy_smoke(method, options, capsys):
    result, = load_bench("accuracy").main(["--smoke", "--method", method, *options])
    assert result["method"] == method and [r["epoch"] for r in result["history"].epochs] == [1, 2]
    assert 0 <= result["knn"] <= 1 and result["median_epoch_seconds"] > 0
    assert "final kNN top-1" in capsys.readouterr().out


@pytest.mark.heavy     # make test-heavy; make test runs test_accuracy_smoke's two methods
def test_accuracy_runs_every_method_with_the_same_budget(capsys):
    results = load_bench("accuracy").main(["--smoke", "--method", "all"])
    assert [r["method"] for r in results] == ["simclr", "dcl", "hcl", "moco", "mochi", "sce", "clae", "simclr_multiview",
                                              "cacr", "supcon", "supervised", "adversarial"]
    assert all(len(r["history"].epochs) == 2 and 0 <= r["knn"] <= 1 for r in results)
    out = capsys.readouterr().out
    assert "lr 0.12/256" in out and "lr 0.03/256" in out           # each method's own default rate
    assert "MoCHi's extra time per epoch over MoCo v2" in out
    assert "SCE's extra time per epoch over MoCo v2" in out and "lr 0.06/256" in out
    assert "CLAE's time per epoch over SimCLR: " in out
    assert "Adversarial SimCLR's time per epoch over SimCLR: " in out
    with pytest.raises(SystemExit):
        load_bench("accuracy").main(["--smoke", "--method", "all", "--option", "queue_size=256"])
    with pytest.raises(SystemExit):
        load_bench("accuracy").main(["--smoke", "--method", "simclr,byol"])


def test_accuracy_compares_many_views_on_imbalanced_data(capsys):
    results = load_bench("accuracy").main(["--smoke", "--method", "simclr,cacr", "--imbalanced", "--linear-probe"])
    assert [r["method"] for r in results] == ["simclr", "cacr"]
    assert all(0 <= r["linear"] <= 1 and len(r["per_class"]) == 10 for r in results)
    out = capsys.readouterr().out
    assert "simclr {} on small_cnn, 558 images" in out       # (c + 1)/10 of each class's 102 or 103 of 1,024
    assert "cacr's epoch over SimCLR's" in out and "linear probe per class" in out


def test_accuracy_stops_without_the_data(monkeypatch, tmp_path):
    # Random images would give ~10% "accuracy" that looks like a result: the script must stop instead.
    monkeypatch.setenv("CLCOURSE_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="CIFAR-10 train split not found"):
        load_bench("accuracy").main(["--smoke", "--method", "simclr"])


# ---------------------------------------------------------------- bench/suite.py

@pytest.fixture(scope="module")
def suite():
    return load_bench("suite")


def test_phase_caps_trim_the_method_costs_first(suite):
    caps = {"throughput": 180, "simclr_200": 390, "method_costs": 120, "cuda_tests_and_notebook": 75}
    assert [suite.phase_cap(caps, name, 3600) for name in caps] == [180, 390, 120, 75]
    # Phase 3 leaves phase 4's cap: with 100 s left it gets 25 s, with 60 s none, while phase 4 gets its own.
    assert suite.phase_cap(caps, "method_costs", 100) == 25
    assert suite.phase_cap(caps, "method_costs", 60) == 0
    assert suite.phase_cap(caps, "cuda_tests_and_notebook", 60) == 60
    assert suite.phase_cap(caps, "simclr_200", 200) == 200 and suite.phase_cap(caps, "throughput", -5) == 0
    assert list(suite.GPU.caps) == list(suite.PHASES) == list(suite.SMOKE.caps)


def test_methods_are_measured_references_first_then_those_with_a_target(suite):
    names = ["simclr", "dcl", "hcl", "moco", "mochi", "brand_new", "sce"]
    assert suite.method_order(names) == ["simclr", "moco", "mochi", "sce", "dcl", "hcl", "brand_new"]
    assert suite.method_order(["dcl", "mochi"]) == ["mochi", "dcl"]      # references not registered: no reorder
    targets = load_bench("targets")
    assert targets.method_cost("brand_new") == ("simclr", None)          # no line: against SimCLR, no target
    assert targets.method_cost("mochi") == ("moco", 1.10)


def test_each_method_gets_its_cost_relative_to_its_reference(suite):
    methods = {"simclr": {"reference": "simclr", "target": None, "seconds_per_epoch": 2.0},
               "moco": {"reference": "simclr", "target": None, "seconds_per_epoch": 1.5},
               "mochi": {"reference": "moco", "target": 1.10, "seconds_per_epoch": 1.8},
               "sce": {"reference": "moco", "target": 1.05, "seconds_per_epoch": 1.56},
               "hcl": {"reference": "simclr", "target": None, "status": "error"}}
    suite.fill_ratios(methods)
    assert methods["simclr"]["ratio"] == 1.0 and methods["moco"]["ratio"] == 0.75
    assert methods["mochi"]["ratio"] == 1.2 and methods["mochi"]["meets_target"] is False
    assert methods["sce"]["ratio"] == 1.04 and methods["sce"]["meets_target"] is True
    assert "ratio" not in methods["hcl"] and "meets_target" not in methods["moco"]


def test_smoke_results_go_outside_the_committed_results_folder(suite):
    assert suite.default_results_dir(smoke=False) == REPO / "bench" / "results"
    smoke = suite.default_results_dir(smoke=True)
    ignored = subprocess.run(["git", "check-ignore", "-q", str(smoke / "x.json")], cwd=REPO)
    assert not smoke.is_relative_to(REPO / "bench" / "results") and ignored.returncode == 0


def test_results_file_names_carry_the_date_and_the_gpu(suite, tmp_path):
    first = suite.results_path(tmp_path, "2026-12-01", "NVIDIA H200", smoke=False)
    assert first.name == "2026-12-01_nvidia-h200.json"
    first.write_text("{}")
    second = suite.results_path(tmp_path, "2026-12-01", "NVIDIA H200", smoke=False)
    assert second.name == "2026-12-01_nvidia-h200_2.json"
    assert suite.results_path(tmp_path, "2026-12-01", "CPU", smoke=True).name == "2026-12-01_cpu-smoke.json"


def test_a_phase_keeps_its_results_when_it_stops_at_its_cap_or_fails(suite, monkeypatch, tmp_path):
    import time

    def slow(ctx, results, ends_at):
        results["first"] = 1
        time.sleep(5)
        results["second"] = 2

    def broken(ctx, results, ends_at):
        results["first"] = 1
        raise ValueError("boom")

    def terminated(ctx, results, ends_at):
        raise suite.Terminated()

    monkeypatch.setattr(suite, "MIN_CAP_SECONDS", 0.05)
    monkeypatch.setattr(suite, "PHASE_FUNCTIONS", {"slow": slow, "broken": broken, "terminated": terminated})
    ctx = suite.Context(torch.device("cpu"), suite.SMOKE, None, tmp_path, tmp_path, {})
    record = {}
    suite.run_phase("slow", ctx, record, cap=0.3)
    assert record["status"] == "stopped at cap" and record["results"] == {"first": 1}
    assert 0.3 <= record["seconds"] < 2 and record["cap_seconds"] == 0.3 and record["peak_memory_gb"] is None
    suite.run_phase("broken", ctx, record, cap=10)
    assert record["status"] == "error" and record["error"] == "ValueError: boom" and record["results"] == {"first": 1}
    suite.run_phase("slow", ctx, record, cap=0.01)
    assert record["status"] == "skipped" and record["results"] == {}
    with pytest.raises(suite.Terminated):
        suite.run_phase("terminated", ctx, record, cap=10)
    assert record["status"] == "interrupted"


def test_notebooks_run_without_jupyter(tmp_path, capsys):
    runner = load_bench("notebook")
    install = 'import sys\nif "google.colab" in sys.modules:\n    !pip install -q clcourse\n%matplotlib inline'
    notebook = write_notebook(tmp_path / "n.ipynb", install, "x = 6 * 7\nprint('answer', x)")
    assert runner.code_cells(notebook) == [
        'import sys\nif "google.colab" in sys.modules:\n    pass\npass', "x = 6 * 7\nprint('answer', x)"]
    assert runner.main([str(notebook)]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.splitlines()[-1].removeprefix(runner.RESULT_PREFIX))
    assert "answer 42" in out and len(result["cell_seconds"]) == 2 and result["peak_memory_gb"] is None
    write_notebook(notebook, "x = 1", "raise KeyError('missing')", "x = 3")
    assert runner.main([str(notebook)]) == 1
    assert "code cell 2 of" in capsys.readouterr().err
    assert runner.main([str(tmp_path / "absent.ipynb")]) == 2


def make_pack(path, n_train, n_test):
    """A CIFAR-10 JPEG pack in the layout of ../shared/data/cifar10-jpeg.npz, with smooth random images."""
    import io

    import numpy as np
    from PIL import Image
    generator = np.random.default_rng(0)
    pack, originals = {"classes": np.array(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                            "ship", "truck"])}, {}
    for split, n in (("train", n_train), ("test", n_test)):
        coarse = generator.integers(0, 256, (n, 4, 4, 3)).astype(np.uint8)
        images = np.stack([np.asarray(Image.fromarray(image).resize((32, 32), Image.BILINEAR)) for image in coarse])
        encoded = []
        for image in images:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="JPEG", quality=95)
            encoded.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
        pack[f"{split}_bytes"] = np.concatenate(encoded)
        pack[f"{split}_offsets"] = np.cumsum([0] + [len(e) for e in encoded])
        pack[f"{split}_labels"] = generator.integers(0, 10, n).astype(np.uint8)
        originals[split] = images
    np.savez(path, **pack)
    return pack, originals


def test_the_jpeg_pack_is_unpacked_in_the_build_machines_layout(tmp_path):
    import numpy as np
    from clcourse.data import load_dataset
    common = load_bench("common")
    pack, originals = make_pack(tmp_path / "pack.npz", 13, 4)
    root = common.unpack_cifar10(tmp_path / "pack.npz", tmp_path / "ours")
    images, labels = load_dataset("cifar10", root=root, train=True, download=False)
    order = np.random.default_rng(0).permutation(13)         # the training images in a fixed shuffle, seed 0
    assert labels.tolist() == pack["train_labels"][order].tolist()
    assert (images.permute(0, 2, 3, 1).float() - torch.from_numpy(originals["train"][order]).float()).abs().mean() < 4
    test_images, test_labels = load_dataset("cifar10", root=root, train=False, download=False)
    assert test_images.shape == (4, 3, 32, 32) and test_labels.tolist() == pack["test_labels"].tolist()
    with pytest.raises(FileNotFoundError, match="pack"):
        common.unpack_cifar10(tmp_path / "absent.npz", tmp_path / "other")


def test_the_real_pack_decodes_to_the_build_machines_cifar10(tmp_path):
    # The data root that ../shared/tools/cifar10_unpack.py wrote (CI unpacks it before the tests) against the
    # same pack decoded here: the first training images after the fixed shuffle, and the first test images.
    import os

    import numpy as np
    from clcourse.data import load_dataset
    common = load_bench("common")
    pack = Path(os.environ.get("CLCOURSE_SHARED", REPO.parent / "shared")) / "data" / "cifar10-jpeg.npz"
    try:
        train_images, train_labels = load_dataset("cifar10", train=True, download=False)
        test_images, _ = load_dataset("cifar10", train=False, subset=None, download=False)
    except FileNotFoundError:
        pytest.skip("no CIFAR-10 in the data root")
    if not pack.is_file():
        pytest.skip(f"no {pack}")
    with np.load(pack) as data:
        order = np.random.default_rng(0).permutation(len(data["train_offsets"]) - 1)[:32]
        raw, offsets = data["train_bytes"], data["train_offsets"]
        ours = common._decode_jpegs([raw[offsets[i]:offsets[i + 1]].tobytes() for i in order])
        assert data["train_labels"][order].tolist() == train_labels[:32].tolist()
        raw, offsets = data["test_bytes"], data["test_offsets"]
        ours_test = common._decode_jpegs([raw[offsets[i]:offsets[i + 1]].tobytes() for i in range(32)])
    assert torch.equal(torch.from_numpy(ours).permute(0, 3, 1, 2), train_images[:32])
    assert torch.equal(torch.from_numpy(ours_test).permute(0, 3, 1, 2), test_images[:32])


@pytest.mark.slow
def test_suite_smoke_runs_every_phase_on_the_cpu(tmp_path):
    # The whole suite at toy size in its own process, as `python bench/suite.py --smoke` (a phase that stopped
    # at its cap or failed would say so in the results file). The notebook is a small one of our own:
    # whether the course's notebooks run is for the notebook tests to say.
    import sys

    from clcourse.methods import METHODS
    notebook = write_notebook(tmp_path / "tiny.ipynb", "import sys\nif 'google.colab' in sys.modules:\n    !pip x",
                              "from clcourse.presets import get_preset\nprint(get_preset().name)")
    done = subprocess.run([sys.executable, str(REPO / "bench" / "suite.py"), "--smoke", "--results-dir",
                           str(tmp_path / "results"), "--notebook", str(notebook)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    path, = (tmp_path / "results").glob("*.json")
    results = json.loads(path.read_text())
    assert path.name.endswith("_cpu-smoke.json") and results["smoke"] is True and results["device"]["type"] == "cpu"
    phases = results["phases"]
    assert {name: phase["status"] for name, phase in phases.items()} == dict.fromkeys(
        ["throughput", "simclr_200", "method_costs", "cuda_tests_and_notebook"], "done")
    assert all(phase["peak_memory_gb"] is None and phase["seconds"] <= phase["cap_seconds"]
               for phase in phases.values())

    rates = phases["throughput"]["results"]
    assert all(rates[mode][key] > 0 for mode in ("eager", "compile") for key in ("model_step", "end_to_end", "pil"))
    simclr = phases["simclr_200"]["results"]
    assert simclr["epochs_done"] == 2 and [epoch for epoch, _ in simclr["knn"]] == [1, 2]
    assert 0 <= simclr["final_knn"] <= 1 and simclr["wall_seconds"] > 0
    costs = phases["method_costs"]["results"]
    assert set(costs["methods"]) == set(METHODS)                 # every registered method, none forgotten
    assert all(entry["status"] == "done" and entry["seconds_per_epoch"] > 0 and "ratio" in entry
               for entry in costs["methods"].values())
    assert costs["methods"]["simclr"]["ratio"] == 1.0 and costs["methods"]["mochi"]["reference"] == "moco"
    bn = costs["split_batchnorm"]
    assert bn["reshape_copies_channels_last"] is True and len(bn["per_stage"]) == 4
    tests, notebook_run = (phases["cuda_tests_and_notebook"]["results"][key] for key in ("tests", "notebook"))
    assert tests["status"] == "done" and tests["skipped"] >= 1 and "failed" not in tests   # no GPU: skipped
    assert notebook_run["status"] == "done" and notebook_run["preset"] == "smoke"
    assert len(notebook_run["cell_seconds"]) == 2

    assert "| 2 | SimCLR kNN top-1 after 2 epochs (last epoch, k=200) |" in done.stdout
    assert f"results: {path}" in done.stdout


# ---------------------------------------------------------------- bench/cka.py

def test_cka_smoke(capsys):
    result = load_bench("cka").main(["--smoke"])
    assert result["images"] == 32 and result["seconds"] > 0 and result["meets_target"] is None
    pairs = result["results"]
    assert len(pairs) == 10                               # 4 representations: every pair, each with itself
    for (a, b), cka in pairs.items():
        assert cka.matrix.shape == (4, 4) and cka.num_batches == 2
        if a == b:
            assert torch.allclose(cka.matrix.diagonal(), torch.ones(4, dtype=torch.float64))
    out = capsys.readouterr().out
    assert "10 pairs of representations x 4 x 4 layers, 2 minibatches" in out
    assert "CKA of network A's clean and PGD-1 layers" in out
