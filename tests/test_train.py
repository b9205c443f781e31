import json
import math

import pytest
import torch

import clcourse.train
from clcourse.losses import info_nce
from clcourse.methods import DCL, SimCLR
from clcourse.models import Backbone, SmallCNN
from clcourse.presets import autocast_dtype
from clcourse.runs import list_checkpoints, load_weights, run_dir, save_atomically, snapshots_by_epoch
from clcourse.train import KnnData, NonFiniteLossError, learning_rate
from helpers import fit, noisy_views, short_run, step_losses, tiny_simclr


def test_same_seed_gives_same_numbers(images):
    assert step_losses(short_run(images)) == step_losses(short_run(images))
    assert step_losses(short_run(images, seed=1)) != step_losses(short_run(images))


def test_loss_decreases_on_a_learnable_problem(images):
    history = short_run(images, epochs=6, lr=0.3)
    first, last = history.epochs[0]["loss"], history.epochs[-1]["loss"]
    assert last < first - 0.1


def test_snapshots_every_few_epochs_and_at_the_end(images, tmp_path):
    method = tiny_simclr()
    short_run(images, method, epochs=5, checkpoint_dir=tmp_path, checkpoint_every=2)
    snapshots = snapshots_by_epoch(tmp_path)
    assert sorted(snapshots) == [2, 4, 5] and (tmp_path / "last.pt").is_file()
    final = tiny_simclr(seed=123)
    assert load_weights(final, snapshots[5])["epoch"] == 5
    for (name, a), b in zip(method.state_dict().items(), final.state_dict().values()):
        assert torch.equal(a, b), name
    assert snapshots_by_epoch(tmp_path / "missing") == {}


@pytest.mark.parametrize("amp_dtype", [None, torch.bfloat16, torch.float16])
def test_resume_continues_the_same_run(images, tmp_path, amp_dtype, monkeypatch):
    # bf16 and fp16 are the GPU paths (fp16 with its gradient scaler, as on a T4), run here on the CPU.
    monkeypatch.setattr(clcourse.train, "autocast_dtype", lambda device: amp_dtype)
    reference_method = tiny_simclr()
    reference = short_run(images, reference_method, checkpoint_dir=tmp_path / "reference")

    interrupted = tiny_simclr()
    steps_done = {"n": 0}

    def crash_in_third_epoch(batch, output):
        steps_done["n"] += 1
        if steps_done["n"] == 7:  # 3 steps per epoch: epoch 3 has started
            raise KeyboardInterrupt
    interrupted.on_step_end = crash_in_third_epoch
    with pytest.raises(KeyboardInterrupt):
        short_run(images, interrupted, checkpoint_dir=tmp_path / "resumed")
    assert [p.name for p in list_checkpoints(tmp_path / "resumed")] == ["epoch_0001.pt", "epoch_0002.pt"]

    resumed_method = tiny_simclr(seed=123)  # different initial weights: the checkpoint must replace them
    resumed = short_run(images, resumed_method, checkpoint_dir=tmp_path / "resumed", resume=True)
    assert step_losses(resumed) == step_losses(reference)
    for (name, a), b in zip(reference_method.state_dict().items(), resumed_method.state_dict().values()):
        assert torch.equal(a, b), name
    scaler_state = torch.load(tmp_path / "resumed" / "last.pt", weights_only=False)["scaler"]
    assert bool(scaler_state) == (amp_dtype == torch.float16)   # the scaler's scale is saved, and only for fp16


def test_resume_of_a_finished_run_returns_its_history(images, tmp_path):
    first = short_run(images, checkpoint_dir=tmp_path)
    method = tiny_simclr(seed=5)
    again = short_run(images, method, checkpoint_dir=tmp_path, resume=True)
    assert again.epochs == first.epochs
    reloaded = tiny_simclr(seed=9)
    load_weights(reloaded, tmp_path / "last.pt")
    for a, b in zip(method.state_dict().values(), reloaded.state_dict().values()):
        assert torch.equal(a, b)


def test_resume_rejects_a_different_schedule(images, tmp_path):
    short_run(images, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"schedule\.epochs: 3 \(now: 5\)"):
        short_run(images, checkpoint_dir=tmp_path, resume=True, epochs=5)


def test_nan_loss_stops_with_the_step_and_keeps_the_checkpoint(images, tmp_path):
    method = tiny_simclr()
    calls = {"n": 0}
    original_loss = method.contrastive_loss

    def loss_that_explodes(views, labels=None):
        calls["n"] += 1
        loss = original_loss(views, labels)
        return loss * float("nan") if calls["n"] == 5 else loss
    method.contrastive_loss = loss_that_explodes
    with pytest.raises(NonFiniteLossError, match="step 4"):
        short_run(images, method, checkpoint_dir=tmp_path)
    saved = torch.load(tmp_path / "last.pt", weights_only=False)
    assert saved["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in saved["method"].values() if v.is_floating_point())


def test_max_epochs_caps_explicit_epochs_and_the_stored_configuration(images, tmp_path, monkeypatch):
    monkeypatch.setenv("CLCOURSE_MAX_EPOCHS", "2")
    history = short_run(images, epochs=5, checkpoint_dir=tmp_path)
    assert [r["epoch"] for r in history.epochs] == [1, 2] and sorted(snapshots_by_epoch(tmp_path)) == [1, 2]
    assert short_run(images, epochs=1).epochs[-1]["epoch"] == 1               # a cap above the epochs changes nothing
    assert step_losses(short_run(images, epochs=7)) == step_losses(history)              # the same run as epochs=2
    monkeypatch.delenv("CLCOURSE_MAX_EPOCHS")
    with pytest.raises(ValueError, match="epochs"):                      # the capped run was a 2-epoch run
        short_run(images, epochs=5, checkpoint_dir=tmp_path)


def test_knn_is_evaluated_every_n_epochs_and_at_the_end(images):
    labels = torch.arange(48) % 4
    knn = KnnData(images, labels, images[:16], labels[:16])
    history = short_run(images, epochs=3, knn_data=knn, knn_every=2, knn_k=5)
    evaluated = [r["epoch"] for r in history.epochs if "knn_accuracy" in r]
    assert evaluated == [2, 3]
    assert 0.0 <= history.final_knn_accuracy <= 1.0


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_atomically({"value": 1}, path)

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"half a file")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_atomically({"value": 2}, path)
    monkeypatch.undo()
    assert torch.load(path)["value"] == 1


def test_learning_rate_schedule():
    peak, total, warmup = 0.4, 100, 10
    assert learning_rate(0, total, warmup, peak) == pytest.approx(0.04)
    assert learning_rate(9, total, warmup, peak) == pytest.approx(peak)
    assert learning_rate(10, total, warmup, peak) == pytest.approx(peak)
    assert learning_rate(55, total, warmup, peak) == pytest.approx(peak * 0.5)
    assert learning_rate(99, total, warmup, peak) == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert learning_rate(0, total, 0, peak) == pytest.approx(peak)


def test_cpu_runs_in_float32():
    assert autocast_dtype(torch.device("cpu")) is None


@pytest.mark.parametrize("kwargs, name", [
    (dict(epochs=0), "epochs"), (dict(batch_size=0), "batch_size"), (dict(batch_size=100), "batch_size"),
    (dict(lr=-1.0), "lr"), (dict(knn_every=0), "knn_every"), (dict(epochs=None), "epochs"),
    (dict(momentum=1.0), "momentum"), (dict(weight_decay=-1e-4), "weight_decay"), (dict(seed=-1), "seed"),
    (dict(log_every=0), "log_every"), (dict(checkpoint_every=0), "checkpoint_every"),
    (dict(run="a/b"), "run"), (dict(run="x", checkpoint_dir="y"), "run"),
])
def test_bad_arguments(images, kwargs, name):
    with pytest.raises(ValueError, match=name):
        short_run(images, **kwargs)


def test_mismatched_labels(images):
    with pytest.raises(ValueError, match="labels"):
        short_run(images, labels=torch.zeros(3, dtype=torch.long))


def test_run_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("CLCOURSE_RUNS", str(tmp_path))
    monkeypatch.setenv("CLCOURSE_PRESET", "smoke")
    assert run_dir("simclr") == tmp_path / "smoke" / "simclr"
    assert run_dir("simclr", preset="full") == tmp_path / "full" / "simclr"


# ---------------------------------------------------------------- presets, run names, defaults

def test_a_preset_supplies_the_budget_and_arguments_override_it(images, monkeypatch, tmp_path):
    from clcourse.presets import PRESETS
    monkeypatch.setenv("CLCOURSE_RUNS", str(tmp_path))
    preset = PRESETS["smoke"].with_overrides(epochs=2, batch_size=16, warmup_epochs=0, checkpoint_every=5)
    method = tiny_simclr()
    history = fit(method, images, preset=preset, run="tiny", progress=False, log_every=100)
    assert [r["epoch"] for r in history.epochs] == [1, 2]
    assert [r["step"] for r in history.steps] == [3, 6]                 # 48 images / 16 per batch, per epoch
    folder = tmp_path / "smoke" / "tiny"
    assert sorted(snapshots_by_epoch(folder)) == [2]                    # only at the end: every 5th epoch
    saved = json.loads((folder / "config.json").read_text())
    assert saved["schedule"] == {"epochs": 2, "batch_size": 16, "warmup_epochs": 0}
    assert saved["preset"] == "smoke" and saved["optimiser"]["lr_per_256_images"] == SimCLR.lr
    shorter = fit(tiny_simclr(), images, preset=preset, run="other", epochs=1, progress=False)
    assert len(shorter.epochs) == 1


def test_the_learning_rate_defaults_to_the_methods_own(images):
    class SlowSimCLR(SimCLR):
        lr = 0.05
    torch.manual_seed(0)
    method = SlowSimCLR(Backbone(SmallCNN(width=4)), projector_hidden=16, projector_out=8, augment=noisy_views)
    history = fit(method, images, epochs=1, batch_size=16, progress=False, log_every=1)
    assert history.steps[-1]["lr"] == pytest.approx(0.05 * 16 / 256 * 0.5 * (1 + math.cos(math.pi * 2 / 3)))


def test_step_records_hold_the_interval_means(images):
    history = short_run(images, epochs=2, log_every=2)
    assert [r["step"] for r in history.steps] == [2, 3, 4, 6]          # every 2nd step and at each epoch's end
    assert [r["epoch"] for r in history.steps] == pytest.approx([2 / 3, 1, 4 / 3, 2])
    first_epoch = history.epochs[0]["loss"]
    assert (2 * history.steps[0]["loss"] + history.steps[1]["loss"]) / 3 == pytest.approx(first_epoch, rel=1e-6)
    assert all(r["images_per_sec"] > 0 for r in history.steps)
    elapsed = [r["elapsed"] for r in history.steps]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0


# ---------------------------------------------------------------- a run's configuration

def test_a_run_stores_its_configuration(images, tmp_path):
    short_run(images, checkpoint_dir=tmp_path, epochs=1)
    saved = torch.load(tmp_path / "last.pt", weights_only=False)["config"]
    assert saved == json.loads((tmp_path / "config.json").read_text())
    assert saved["method"]["name"] == "SimCLR" and saved["method"]["temperature"] == 0.5
    assert saved["optimiser"] == {"name": "SGD", "lr_per_256_images": 0.1, "momentum": 0.9, "weight_decay": 5e-4}
    assert saved["data"]["images"] == [48, 3, 16, 16] and saved["seed"] == 0 and saved["preset"] == "test"


@pytest.mark.parametrize("change, field", [
    (dict(method=lambda: tiny_simclr(temperature=0.2)), "method.temperature: 0.5 (now: 0.2)"),
    (dict(method=lambda: DCL(Backbone(SmallCNN(width=4)), projector_hidden=16, projector_out=8,
                             augment=noisy_views)), "method.name: 'SimCLR' (now: 'DCL')"),
    (dict(lr=0.2), "optimiser.lr_per_256_images: 0.1 (now: 0.2)"),
    (dict(weight_decay=1e-4), "optimiser.weight_decay"),
    (dict(images=lambda images: images[:32]), "data.images: [48, 3, 16, 16] (now: [32, 3, 16, 16])"),
    (dict(images=lambda images: images.flip(0)), "data.fingerprint"),
    (dict(seed=3), "seed: 0 (now: 3)"),
    (dict(batch_size=8), "schedule.batch_size: 16 (now: 8)"),
])
def test_resuming_with_another_configuration_is_refused(images, tmp_path, change, field):
    short_run(images, checkpoint_dir=tmp_path, epochs=1)
    options = dict(change)
    method = options.pop("method", tiny_simclr)()
    data = options.pop("images", lambda x: x)(images)
    with pytest.raises(ValueError, match="another configuration") as error:
        short_run(data, method, checkpoint_dir=tmp_path, epochs=1, **options)
    assert field in str(error.value)
    assert "another run name" in str(error.value)


def test_the_same_configuration_with_another_loss_function_resumes(images, tmp_path):
    # A student's checked loss (notebook 01) and the library's are the same loss: notebook 02 reuses the run.
    first = short_run(images, checkpoint_dir=tmp_path, epochs=1, method=tiny_simclr(loss=info_nce))
    again = short_run(images, checkpoint_dir=tmp_path, epochs=1)
    assert again.epochs == first.epochs


def test_a_fresh_start_over_an_existing_run_is_refused(images, tmp_path):
    short_run(images, checkpoint_dir=tmp_path, epochs=1)
    with pytest.raises(ValueError, match="resume=False would mix"):
        short_run(images, checkpoint_dir=tmp_path, epochs=1, resume=False)
    short_run(images, checkpoint_dir=tmp_path / "new", epochs=1, resume=False)   # an empty folder is fine


def test_a_checkpoint_without_configuration_is_refused(images, tmp_path):
    short_run(images, checkpoint_dir=tmp_path, epochs=1)
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    del state["config"]
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(ValueError, match="older version"):
        short_run(images, checkpoint_dir=tmp_path, epochs=1)


def test_stale_temporary_files_are_removed_at_start(images, tmp_path):
    (tmp_path / "epoch_0001.pt.tmp").write_bytes(b"half")
    short_run(images, checkpoint_dir=tmp_path, epochs=1)
    assert not list(tmp_path.glob("*.tmp"))


# ---------------------------------------------------------------- what a method asks of the loop

def test_a_method_that_needs_labels_refuses_to_start_without_them(images):
    class Supervised(SimCLR):
        requires_labels = True
    torch.manual_seed(0)
    method = Supervised(Backbone(SmallCNN(width=4)), projector_hidden=16, projector_out=8, augment=noisy_views)
    with pytest.raises(ValueError, match="Supervised learns from class labels: pass labels"):
        short_run(images, method)
    seen = []
    step = method.training_step
    method.training_step = lambda batch: (seen.append(batch.labels.clone()), step(batch))[1]
    labels = torch.arange(48) % 3
    short_run(images, method, labels=labels, epochs=1)
    assert all(y.shape == (16,) for y in seen)
    assert torch.equal(torch.cat(seen).sort().values, labels.sort().values)   # every label once per epoch


def test_knn_k_larger_than_the_knn_training_set_is_refused_at_start(images):
    labels = torch.arange(48) % 4
    knn = KnnData(images[:10], labels[:10], images[10:20], labels[10:20])
    with pytest.raises(ValueError, match="knn_k must be at most the number of kNN training images \\(10\\), got 50"):
        short_run(images, knn_data=knn, knn_k=50)
