"""The training loop (clcourse/train.py): the same seed gives the same numbers and a learnable
problem is learnt; NaN losses stop it with the step named; the learning-rate schedule, kNN every few
epochs, a preset's budget with overrides, step records of interval means on a fake clock, autocast
exactly where the device has it, a progress bar that resumes; bad arguments named, what a method
asks of the loop; on a GPU, bf16 and channels_last. (Checkpoints and resume: tests/test_runs.py.)"""
import json
import math
import types
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from helpers import fit, noisy_views, refuse_host_reads, short_run, step_losses, tiny_simclr

import clcourse.train
from clcourse.methods import MoCo, SimCLR
from clcourse.models import Backbone, SmallCNN, build_backbone
from clcourse.presets import autocast_dtype
from clcourse.runs import snapshots_by_epoch
from clcourse.train import KnnData, NonFiniteLossError, learning_rate


def test_same_seed_gives_same_numbers(images):
    assert step_losses(short_run(images)) == step_losses(short_run(images))
    assert step_losses(short_run(images, seed=1)) != step_losses(short_run(images))


def test_loss_decreases_on_a_learnable_problem(images):
    history = short_run(images, epochs=6, lr=0.3)
    first, last = history.epochs[0]["loss"], history.epochs[-1]["loss"]
    assert last < first - 0.1


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


def test_max_epochs_caps_explicit_epochs_and_the_stored_configuration(
        images, tmp_path, monkeypatch):
    monkeypatch.setenv("CLCOURSE_MAX_EPOCHS", "2")
    history = short_run(images, epochs=5, checkpoint_dir=tmp_path)
    assert ([r["epoch"] for r in history.epochs] == [1, 2]
            and sorted(snapshots_by_epoch(tmp_path)) == [1, 2])
    assert short_run(images, epochs=1).epochs[-1]["epoch"] == 1     # a cap above: no change
    assert step_losses(short_run(images, epochs=7)) == step_losses(history)   # as epochs=2
    monkeypatch.delenv("CLCOURSE_MAX_EPOCHS")
    # the capped run was a 2-epoch run
    with pytest.raises(ValueError, match="epochs"):
        short_run(images, epochs=5, checkpoint_dir=tmp_path)


@pytest.mark.parametrize("epochs, knn_every, evaluated", [(3, 2, [2, 3]), (4, 3, [3, 4])])
def test_knn_is_evaluated_every_n_epochs_and_at_the_end(images, epochs, knn_every, evaluated):
    labels = torch.arange(48) % 4
    knn = KnnData(images, labels, images[:16], labels[:16])
    history = short_run(images, epochs=epochs, knn_data=knn, knn_every=knn_every, knn_k=5)
    assert [r["epoch"] for r in history.epochs if "knn_accuracy" in r] == evaluated
    assert 0.0 <= history.final_knn_accuracy <= 1.0


def test_a_run_follows_the_warmup_then_cosine_schedule_step_by_step(images):
    history = short_run(images, epochs=2, warmup_epochs=1, lr=0.1, log_every=1)
    peak = 0.1 * 16 / 256                                    # 3 steps an epoch, 3 of warm-up
    assert [r["lr"] for r in history.steps] == pytest.approx(
        [learning_rate(step, 6, 3, peak) for step in range(6)])


def test_the_views_the_order_and_a_methods_own_draws_come_from_different_streams(small_images):
    method = tiny_simclr()
    first_draws = {}
    make_views, training_step = method.make_views, method.training_step

    def recording_views(images, generator):
        first_draws.setdefault("views", torch.rand(4, generator=generator))
        return make_views(images, generator)

    def recording_step(batch):
        first_draws.setdefault("method", torch.rand(4))
        return training_step(batch)
    method.make_views, method.training_step = recording_views, recording_step
    short_run(small_images, method, epochs=1, batch_size=8, seed=3)
    order = torch.rand(4, generator=torch.Generator().manual_seed(3))   # the image order's seed
    assert not torch.equal(first_draws["views"], first_draws["method"])
    assert not torch.equal(first_draws["views"], order)
    assert not torch.equal(first_draws["method"], order)


def test_the_image_order_does_not_depend_on_how_many_draws_the_views_take(small_images):
    """The order has its own generator: a recipe that draws more (one more augmentation) trains on
    the same batches in every epoch."""
    batches = {}
    for extra_draws in (0, 100):
        method = tiny_simclr()
        make_views, training_step = method.make_views, method.training_step

        def views_drawing_more(images, generator, make_views=make_views, extra_draws=extra_draws):
            torch.rand(extra_draws, generator=generator)
            return make_views(images, generator)

        seen = batches.setdefault(extra_draws, [])

        def recording_step(batch, training_step=training_step, seen=seen):
            seen.append(batch.index.clone())
            return training_step(batch)
        method.make_views, method.training_step = views_drawing_more, recording_step
        short_run(small_images, method, epochs=2, batch_size=8)
    assert len(batches[0]) == 8
    assert all(torch.equal(a, b) for a, b in zip(batches[0], batches[100]))


def test_between_records_the_loop_reads_nothing_on_the_host_and_keeps_no_graph(
        small_images, monkeypatch):
    """From a step's end to its log entry: a host read would stall every step on a GPU, a loss
    with its graph would keep every step's graph alive until the record."""
    between = {"now": False}
    logged_with_graph = []
    refuse_host_reads(monkeypatch, between, "the loop, after a step,")
    add = clcourse.train._IntervalLog.add

    def add_and_end(self, loss, logs):
        logged_with_graph.append(loss.requires_grad)
        add(self, loss, logs)
        between["now"] = False
    monkeypatch.setattr(clcourse.train._IntervalLog, "add", add_and_end)
    method = tiny_simclr()
    on_step_end = method.on_step_end

    def step_end_then_watch(batch, output):
        on_step_end(batch, output)
        between["now"] = True
    method.on_step_end = step_end_then_watch
    short_run(small_images, method, epochs=1, batch_size=8)
    assert logged_with_graph == [False] * 4


def test_a_parameter_that_a_step_does_not_use_is_not_moved_by_it(small_images):
    """Its gradient is None, not zero: SGD skips it, no weight decay and no momentum (a head used
    only in some steps keeps its weights in the others)."""
    method = tiny_simclr()
    method.extra = nn.Parameter(torch.ones(3))
    training_step, values = method.training_step, []

    def step_using_extra_once(batch):
        output = training_step(batch)
        if not values:
            output = output._replace(loss=output.loss + method.extra.square().sum())
        return output

    def record(batch, output):
        values.append(method.extra.detach().clone())
    method.training_step, method.on_step_end = step_using_extra_once, record
    short_run(small_images, method, epochs=1, batch_size=8, weight_decay=0.1)
    assert len(values) == 4 and not torch.equal(values[0], torch.ones(3))   # moved by its step
    assert all(torch.equal(value, values[0]) for value in values[1:])       # and by no other


def test_learning_rate_schedule():
    peak, total, warmup = 0.4, 100, 10
    assert learning_rate(0, total, warmup, peak) == pytest.approx(0.04)
    assert learning_rate(9, total, warmup, peak) == pytest.approx(peak)
    assert learning_rate(10, total, warmup, peak) == pytest.approx(peak)
    assert learning_rate(55, total, warmup, peak) == pytest.approx(peak * 0.5)
    assert (learning_rate(99, total, warmup, peak)
            == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * 89 / 90))))
    assert learning_rate(0, total, 0, peak) == pytest.approx(peak)


@pytest.mark.parametrize("kwargs, name", [
    (dict(epochs=0), "epochs"), (dict(batch_size=0), "batch_size"),
    (dict(batch_size=100), "batch_size"),
    (dict(lr=-1.0), "lr"), (dict(knn_every=0), "knn_every"), (dict(epochs=None), "epochs"),
    (dict(momentum=1.0), "momentum"), (dict(weight_decay=-1e-4), "weight_decay"),
    (dict(seed=-1), "seed"),
    (dict(log_every=0), "log_every"), (dict(checkpoint_every=0), "checkpoint_every"),
    (dict(run="a/b"), "run"), (dict(run="x", checkpoint_dir="y"), "run"),
])
def test_bad_arguments(images, kwargs, name):
    with pytest.raises(ValueError, match=name):
        short_run(images, **kwargs)


def test_mismatched_labels(images):
    with pytest.raises(ValueError, match="labels"):
        short_run(images, labels=torch.zeros(3, dtype=torch.long))


# ---------------------------------------------------------------- presets and defaults

def test_a_preset_supplies_the_budget_and_arguments_override_it(images, monkeypatch, tmp_path):
    from clcourse.presets import PRESETS
    monkeypatch.setenv("CLCOURSE_RUNS", str(tmp_path))
    preset = PRESETS["smoke"].with_overrides(epochs=2, batch_size=16, warmup_epochs=0,
                                             checkpoint_every=5)
    method = tiny_simclr()
    history = fit(method, images, preset=preset, run="tiny", progress=False, log_every=100)
    assert [r["epoch"] for r in history.epochs] == [1, 2]
    # 48 images / 16 per batch, per epoch
    assert [r["step"] for r in history.steps] == [3, 6]
    folder = tmp_path / "smoke" / "tiny"
    # only at the end: every 5th epoch
    assert sorted(snapshots_by_epoch(folder)) == [2]
    saved = json.loads((folder / "config.json").read_text())
    assert saved["schedule"] == {"epochs": 2, "batch_size": 16, "warmup_epochs": 0}
    assert saved["preset"] == "smoke" and saved["optimiser"]["lr_per_256_images"] == SimCLR.lr
    shorter = fit(tiny_simclr(), images, preset=preset, run="other", epochs=1, progress=False)
    assert len(shorter.epochs) == 1


def test_the_learning_rate_defaults_to_the_methods_own(images):
    class SlowSimCLR(SimCLR):
        lr = 0.05
    torch.manual_seed(0)
    method = SlowSimCLR(Backbone(SmallCNN(width=4)), projector_hidden=16, projector_out=8,
                        augment=noisy_views)
    history = fit(method, images, epochs=1, batch_size=16, progress=False, log_every=1)
    assert (history.steps[-1]["lr"]
            == pytest.approx(0.05 * 16 / 256 * 0.5 * (1 + math.cos(math.pi * 2 / 3))))


def test_step_records_hold_the_interval_means(images):
    history = short_run(images, epochs=2, log_every=2)
    # every 2nd step and at each epoch's end
    assert [r["step"] for r in history.steps] == [2, 3, 4, 6]
    assert [r["epoch"] for r in history.steps] == pytest.approx([2 / 3, 1, 4 / 3, 2])
    first_epoch = history.epochs[0]["loss"]
    assert ((2 * history.steps[0]["loss"] + history.steps[1]["loss"]) / 3
            == pytest.approx(first_epoch, rel=1e-6))
    assert all(r["images_per_sec"] > 0 for r in history.steps)
    elapsed = [r["elapsed"] for r in history.steps]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0


# ---------------------------------------------------------------- what a method asks of the loop

def test_a_method_that_needs_labels_refuses_to_start_without_them(images):
    class Supervised(SimCLR):
        requires_labels = True
    torch.manual_seed(0)
    method = Supervised(Backbone(SmallCNN(width=4)), projector_hidden=16, projector_out=8,
                        augment=noisy_views)
    with pytest.raises(ValueError, match="Supervised learns from class labels: pass labels"):
        short_run(images, method)
    seen = []
    step = method.training_step
    method.training_step = lambda batch: (seen.append(batch.labels.clone()), step(batch))[1]
    labels = torch.arange(48) % 3
    short_run(images, method, labels=labels, epochs=1)
    assert all(y.shape == (16,) for y in seen)
    # every label once per epoch
    assert torch.equal(torch.cat(seen).sort().values, labels.sort().values)


def test_knn_k_larger_than_the_knn_training_set_is_refused_at_start(images):
    labels = torch.arange(48) % 4
    knn = KnnData(images[:10], labels[:10], images[10:20], labels[10:20])
    with pytest.raises(ValueError,
                       match="knn_k must be at most the number of kNN training images "
                             "\\(10\\), got 50"):
        short_run(images, knn_data=knn, knn_k=50)
    # at the bounds: k = every kNN training image, a single test image
    knn = KnnData(images[:10], labels[:10], images[10:11], labels[10:11])
    accuracy = short_run(images, epochs=1, knn_data=knn, knn_k=10).final_knn_accuracy
    assert accuracy in (0.0, 1.0)


def test_a_batch_of_every_image_is_one_step_an_epoch(images):
    history = short_run(images, epochs=2, batch_size=len(images), log_every=1)
    assert [r["step"] for r in history.steps] == [1, 2]


# ---------------------------------------------------------------- records, autocast, progress bar
# (edges a wrong line would slip past, found by tools/mutate.py)

def recording(method, clock=None):
    """Wrap the method's step: remember each step's loss and logs; each step takes 1 s on
    `clock`."""
    seen = []
    step = method.training_step

    def training_step(batch):
        output = step(batch)
        seen.append((float(output.loss.detach()), {k: float(v) for k, v in output.logs.items()}))
        if clock is not None:
            clock.now += 1.0
        return output
    method.training_step = training_step
    return seen


def test_step_records_hold_interval_means_and_rates_on_a_fake_clock(small_images, monkeypatch):
    clock = types.SimpleNamespace(now=100.0)
    monkeypatch.setattr(clcourse.train, "time",
                        types.SimpleNamespace(perf_counter=lambda: clock.now))
    method = tiny_simclr()
    seen = recording(method, clock)
    # 4 steps per epoch
    history = short_run(small_images, method, epochs=2, batch_size=8, log_every=3, warmup_epochs=0)
    assert [r["step"] for r in history.steps] == [3, 4, 6, 8]      # every 3rd and each epoch's last
    assert [r["epoch"] for r in history.steps] == pytest.approx([0.75, 1, 1.5, 2])
    bounds = [0, 3, 4, 6, 8]
    for record, start, end in zip(history.steps, bounds, bounds[1:]):
        interval = seen[start:end]
        assert record["loss"] == pytest.approx(sum(loss for loss, _ in interval) / len(interval),
                                               rel=1e-5)
        assert record["positive_similarity"] == pytest.approx(
            sum(logs["positive_similarity"] for _, logs in interval) / len(interval), rel=1e-5)
        # 8 images a step, 1 s a step
        assert record["images_per_sec"] == pytest.approx(8.0)
        assert record["elapsed"] == pytest.approx(end)
    assert [r["seconds"] for r in history.epochs] == pytest.approx([4.0, 4.0])
    assert [r["loss"] for r in history.epochs] == pytest.approx(
        [sum(loss for loss, _ in seen[e * 4:(e + 1) * 4]) / 4 for e in range(2)], rel=1e-5)


@pytest.mark.parametrize("amp_dtype", [None, torch.bfloat16])
def test_the_step_runs_under_autocast_exactly_when_the_device_has_an_autocast_type(
        small_images, monkeypatch, amp_dtype):
    # a GPU's answer, on the CPU
    monkeypatch.setattr(clcourse.train, "autocast_dtype", lambda device: amp_dtype)
    method = tiny_simclr()
    dtypes = []
    method.projector.register_forward_hook(lambda module, args, output: dtypes.append(output.dtype))
    short_run(small_images, method, epochs=1, batch_size=16)
    assert dtypes == [amp_dtype or torch.float32] * 2


def test_no_step_runs_after_the_first_nan_loss_on_the_cpu(small_images):
    """On the CPU the loss is checked after every step (free there); on a GPU only when a record is
    made, so up to log_every - 1 more steps may run there before the error."""
    method = tiny_simclr()
    calls = {"n": 0}
    original_loss = method.contrastive_loss

    def loss_that_explodes(views, labels=None):
        calls["n"] += 1
        return original_loss(views, labels) * (float("nan") if calls["n"] >= 2 else 1.0)
    method.contrastive_loss = loss_that_explodes
    with pytest.raises(NonFiniteLossError, match="step 1 "):
        short_run(small_images, method, epochs=2, batch_size=8, log_every=10)
    assert calls["n"] == 2


def test_a_nan_loss_at_the_very_first_step_is_step_0(small_images):
    method = tiny_simclr()
    method.contrastive_loss = lambda views, labels=None: (views[0] * views[1]).sum() * float("nan")
    with pytest.raises(NonFiniteLossError, match="step 0 "):
        short_run(small_images, method, epochs=1, batch_size=8)


@pytest.mark.parametrize("kwargs, says", [
    (dict(weight_decay=float("inf")), r"weight_decay must be in \[0.0, inf\), got inf"),
    (dict(momentum=1.0), r"momentum must be in \[0.0, 1.0\), got 1.0"),
])
def test_the_open_ends_of_the_optimiser_settings_are_refused(small_images, kwargs, says):
    with pytest.raises(ValueError, match=says):
        short_run(small_images, epochs=1, batch_size=8, **kwargs)


class FakeBar:
    """Stands in for tqdm: remembers where the bar starts and how far it is moved."""
    made = []

    def __init__(self, total, initial, disable, desc, unit):
        self.total, self.initial, self.n, self.disable = total, initial, initial, disable
        FakeBar.made.append(self)

    def update(self, count):
        self.n += count

    def set_postfix(self, **values):
        pass

    def close(self):
        pass


def test_the_progress_bar_starts_where_a_resumed_run_left_off_and_ends_full(
        small_images, tmp_path, monkeypatch):
    monkeypatch.setattr(clcourse.train, "tqdm", FakeBar)
    FakeBar.made = []
    method = tiny_simclr()
    calls = {"n": 0}

    def crash_in_second_epoch(batch, output):
        calls["n"] += 1
        if calls["n"] == 6:                        # 4 steps per epoch: the second epoch has started
            raise KeyboardInterrupt
    method.on_step_end = crash_in_second_epoch
    with pytest.raises(KeyboardInterrupt):
        short_run(small_images, method, epochs=2, batch_size=8, log_every=3,
                  checkpoint_dir=tmp_path)
    short_run(small_images, tiny_simclr(), epochs=2, batch_size=8, log_every=3,
              checkpoint_dir=tmp_path)
    (first, resumed) = FakeBar.made
    assert (first.total, first.initial) == (8, 0)
    assert (resumed.total, resumed.initial, resumed.n) == (8, 4, 8)


@pytest.mark.parametrize("progress", [True, False])
def test_the_progress_bar_shows_exactly_when_asked_in_one_process(small_images, monkeypatch,
                                                                  progress):
    monkeypatch.setattr(clcourse.train, "tqdm", FakeBar)
    FakeBar.made = []
    short_run(small_images, epochs=1, batch_size=8, progress=progress)
    (bar,) = FakeBar.made
    assert bar.disable is not progress


def test_the_progress_bar_shows_by_default(small_images, monkeypatch):
    monkeypatch.setattr(clcourse.train, "tqdm", FakeBar)
    FakeBar.made = []
    fit(tiny_simclr(), small_images, epochs=1, batch_size=8, warmup_epochs=0)
    (bar,) = FakeBar.made
    assert not bar.disable


def test_the_interval_log_sums_in_float32_and_keeps_no_graph():
    """bf16 logs summed in bf16 would stall at 256 (8 bits of mantissa); a log that carries a graph
    would keep every step's graph alive until the record."""
    log = clcourse.train._IntervalLog(torch.device("cpu"), start=0.0)
    weight = torch.ones((), requires_grad=True)
    for _ in range(300):
        log.add(torch.zeros(()), {"bf16": torch.ones((), dtype=torch.bfloat16),
                                  "with_graph": weight * 2})
    assert not log.logs["with_graph"].requires_grad
    record = log.record(step=300, epoch=1.0, lr=0.1, batch_size=8)
    assert record["bf16"] == 1.0 and record["with_graph"] == 2.0


def test_on_the_cpu_the_weights_keep_their_memory_format(small_images):
    """channels_last is for GPUs (tensor-core convolutions); on CPUs the default layout is kept."""
    method = tiny_simclr()
    short_run(small_images, method, epochs=1, batch_size=8)
    convolution = next(m for m in method.backbone.modules() if isinstance(m, nn.Conv2d))
    assert convolution.weight.is_contiguous()
    assert not convolution.weight.is_contiguous(memory_format=torch.channels_last)


def test_a_loss_beyond_float32_stops_the_run_at_its_step(small_images):
    """The loss is checked in float32, the precision it is logged in: a float64 loss too large for
    float32 is as infinite as the record would show it."""
    method = tiny_simclr()
    original_loss = method.contrastive_loss
    def loss_in_float64(views, labels=None):
        return original_loss(views, labels).double() * 1e300
    method.contrastive_loss = loss_in_float64
    with pytest.raises(NonFiniteLossError, match="step 0 "):
        short_run(small_images, method, epochs=1, batch_size=8)


@pytest.mark.parametrize("message", ["a bug in the method", "gloo: connection closed"])
def test_in_one_process_an_error_is_raised_as_it_is(small_images, message):
    """Only with several processes does a failed collective become a ProcessFailure (another
    process died); alone, an error (even one that names a backend) is the run's own."""
    method = tiny_simclr()

    def failing_step(batch):
        raise RuntimeError(message)
    method.training_step = failing_step
    with pytest.raises(RuntimeError) as error:
        short_run(small_images, method, epochs=1, batch_size=8)
    assert type(error.value) is RuntimeError and str(error.value) == message


@pytest.mark.parametrize("checkpoint, snapshots, says", [
    (None, [], "no checkpoint was written"),
    ("runs/x/last.pt", [], "no checkpoint was written"),
    ("runs/x/last.pt", [2], "the last checkpoint (runs/x/last.pt, epoch 2) is intact"),
])
def test_a_process_failure_says_whether_a_checkpoint_was_kept(checkpoint, snapshots, says):
    message = clcourse.train._failure_message(
        1, 2, 0, RuntimeError("gloo: connection closed\nmore"),
        None if checkpoint is None else Path(checkpoint), snapshots)
    assert message.startswith("process 1 of 2 stopped in epoch 1: a collective operation with the "
                              "other processes failed (gloo: connection closed).")
    assert says in message


# ---------------------------------------------------------------- sync batch-norm

def test_sync_batchnorm_in_one_process_changes_nothing(small_images, tmp_path):
    """Its global batch is the process's own batch: nothing to synchronise, so the run, its
    configuration and its batch-norm layers are those of a run without it."""
    runs = {}
    for flag in (True, False):
        method = tiny_simclr()
        short_run(small_images, method, epochs=1, batch_size=8, sync_batchnorm=flag,
                  checkpoint_dir=tmp_path / str(flag))
        runs[flag] = torch.load(next((tmp_path / str(flag)).rglob("last.pt")), weights_only=False)
        assert not any(isinstance(m, nn.SyncBatchNorm) for m in method.modules())
    assert runs[True]["config"] == runs[False]["config"]
    for name, value in runs[True]["method"].items():
        assert torch.equal(value, runs[False]["method"][name]), name


def test_sync_batchnorm_in_several_processes_on_cpus_is_refused_before_training(small_images,
                                                                                monkeypatch):
    monkeypatch.setattr(clcourse.train, "world", lambda: (0, 2))   # as process 0 of 2 would see
    method = tiny_simclr()
    with pytest.raises(ValueError, match="sync_batchnorm needs GPUs .* got processes on cpu"):
        short_run(small_images, method, epochs=1, batch_size=8, sync_batchnorm=True)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in method.modules())


# ---------------------------------------------------------------- arguments of other types

@pytest.mark.parametrize("argument", ["resume", "progress", "compile"])
def test_train_takes_booleans_only(images, argument):
    with pytest.raises(ValueError, match=f"{argument} must be True or False, got 'no'"):
        short_run(images, **{argument: "no"})


@pytest.mark.parametrize("bad, says", [
    (torch.zeros(48), "labels must be a 1-D integer tensor"),
    (["a"] * 48, "labels must be a 1-D integer tensor"),
    ([0, 1], "labels has 2 entries but images has 48 rows"),
])
def test_labels_that_are_not_integers_are_a_clear_error(images, bad, says):
    with pytest.raises(ValueError, match=says):
        short_run(images, labels=bad)


def test_knn_data_that_is_not_four_fields_is_a_clear_error(images):
    with pytest.raises(ValueError, match="knn_data must be KnnData"):
        short_run(images, knn_data=(images, torch.zeros(48)))


# ---------------------------------------------------------------- after a NaN stop

def exploding_method(at_call: int):
    method = tiny_simclr()
    calls = {"n": 0}
    original_loss = method.contrastive_loss

    def loss(views, labels=None):
        calls["n"] += 1
        value = original_loss(views, labels)
        return value * float("nan") if calls["n"] == at_call else value
    method.contrastive_loss = loss
    return method


def test_the_nan_message_says_intact_only_when_a_checkpoint_exists(images, tmp_path):
    with pytest.raises(NonFiniteLossError) as error:
        # in epoch 1: no checkpoint
        short_run(images, exploding_method(at_call=2), checkpoint_dir=tmp_path / "early")
    assert "step 1" in str(error.value) and "intact" not in str(error.value)
    assert not (tmp_path / "early" / "last.pt").exists()
    with pytest.raises(NonFiniteLossError) as error:
        short_run(images, exploding_method(at_call=2))                 # no checkpoints at all
    assert "intact" not in str(error.value)
    with pytest.raises(NonFiniteLossError) as error:
        short_run(images, exploding_method(at_call=5), checkpoint_dir=tmp_path / "later")  # epoch 2
    assert f"the last checkpoint ({tmp_path / 'later' / 'last.pt'}) is intact" in str(error.value)


# ---------------------------------------------------------------- on a GPU

@pytest.fixture(scope="module")
def cifar_sized_images():
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8, generator=generator)


@pytest.mark.cuda
@pytest.mark.parametrize("make_method", [SimCLR, MoCo], ids=["simclr", "moco"])
def test_training_loop_on_the_gpu(cifar_sized_images, make_method):
    torch.manual_seed(0)
    method = make_method(build_backbone("small_cnn"))
    convolution = next(m for m in method.backbone.modules() if isinstance(m, nn.Conv2d))
    view_layouts = []
    convolution.register_forward_pre_hook(                # training views, not the kNN monitor's
        lambda module, args: module.training and view_layouts.append(
            args[0].is_contiguous(memory_format=torch.channels_last)))
    labels = torch.arange(len(cifar_sized_images)) % 10
    knn = KnnData(cifar_sized_images[:192], labels[:192], cifar_sized_images[192:], labels[192:])
    history = fit(method, cifar_sized_images, epochs=2, batch_size=64, lr=0.1, knn_data=knn,
                  knn_k=20, progress=False, log_every=2, device="cuda")
    assert autocast_dtype(torch.device("cuda")) == (torch.bfloat16
                                                    if torch.cuda.get_device_capability()[0] >= 8
                                                    else torch.float16)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in history.steps)
    assert 0 <= history.final_knn_accuracy <= 1
    assert (convolution.weight.is_cuda
            and convolution.weight.is_contiguous(memory_format=torch.channels_last))
    assert view_layouts and all(view_layouts)          # the training views too
    assert torch.backends.cudnn.benchmark     # every step has the same shapes
    # 2 epochs x 4 steps x 64 keys enqueued, on the GPU, after the optimiser steps
    if isinstance(method, MoCo):
        assert method.queue.is_cuda and int((method.queue_index >= 0).sum()) == 2 * 4 * 64


@pytest.mark.cuda
def test_on_a_gpu_the_first_of_several_nan_steps_between_checks_is_named(small_images):
    """A GPU checks the loss only when it records (every log_every steps): the error still names
    the first bad step, not the last one before the check."""
    method = tiny_simclr()
    method.contrastive_loss = lambda views, labels=None: (views[0] * views[1]).sum() * float("nan")
    with pytest.raises(NonFiniteLossError, match="step 0 "):
        short_run(small_images, method, epochs=1, batch_size=8, log_every=10, device="cuda")


def test_a_batch_larger_than_the_capped_training_set_names_the_cap(images, monkeypatch):
    """nbgrader's grading caps the training images (CLCOURSE_MAX_TRAIN_IMAGES): a batch larger than
    that says so."""
    with pytest.raises(ValueError,
                       match=r"batch_size must be at most the number of images \(3\), got 16"):
        short_run(images[:3])
    monkeypatch.setenv("CLCOURSE_MAX_TRAIN_IMAGES", "3")
    with pytest.raises(ValueError, match=r"batch_size must be at most the number of images \(3; "
                                         r"\$CLCOURSE_MAX_TRAIN_IMAGES=3 caps how many training "
                                         r"images load_dataset and the presets give\), got 16"):
        short_run(images[:3])


def test_a_steps_attacks_skip_the_pixel_check_that_a_call_from_outside_makes(images, monkeypatch):
    """Views of the training loop lie in [0, 1]: the attacks inside a step do not read them on the
    host."""
    import clcourse.attacks as attacks
    seen = []
    monkeypatch.setattr(attacks, "require_unit_range", lambda name, x: seen.append(name))
    method = tiny_simclr()
    method.training_step = lambda batch, step=method.training_step: (
        attacks.fgsm(lambda v: v.sum(), batch.views[0], 0.01), step(batch))[1]
    short_run(images, method, epochs=1)
    assert seen == []
    attacks.fgsm(lambda v: v.sum(), images[:2].float() / 255, 0.01)
    assert seen == ["x"]
