"""Edges of the training loop that a wrong line would slip past (found by tools/mutate.py): what each logged
record holds (interval means, step numbers, images/s and elapsed time on a fake clock), snapshots every 3rd
epoch, autocast switched on exactly when the device has an autocast type, and no step after a NaN loss."""
import types

import pytest
import torch

import clcourse.train
from clcourse.runs import snapshots_by_epoch
from clcourse.train import NonFiniteLossError
from helpers import short_run, tiny_simclr


def recording(method, clock=None):
    """Wrap the method's step: remember each step's loss and logs; each step takes 1 s on `clock`."""
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
    monkeypatch.setattr(clcourse.train, "time", types.SimpleNamespace(perf_counter=lambda: clock.now))
    method = tiny_simclr()
    seen = recording(method, clock)
    history = short_run(small_images, method, epochs=2, batch_size=8, log_every=3, warmup_epochs=0)  # 4 steps per epoch
    assert [r["step"] for r in history.steps] == [3, 4, 6, 8]      # every 3rd and each epoch's last
    assert [r["epoch"] for r in history.steps] == pytest.approx([0.75, 1, 1.5, 2])
    bounds = [0, 3, 4, 6, 8]
    for record, start, end in zip(history.steps, bounds, bounds[1:]):
        interval = seen[start:end]
        assert record["loss"] == pytest.approx(sum(loss for loss, _ in interval) / len(interval), rel=1e-5)
        assert record["positive_similarity"] == pytest.approx(
            sum(logs["positive_similarity"] for _, logs in interval) / len(interval), rel=1e-5)
        assert record["images_per_sec"] == pytest.approx(8.0)              # 8 images a step, 1 s a step
        assert record["elapsed"] == pytest.approx(end)
    assert [r["seconds"] for r in history.epochs] == pytest.approx([4.0, 4.0])
    assert [r["loss"] for r in history.epochs] == pytest.approx(
        [sum(loss for loss, _ in seen[e * 4:(e + 1) * 4]) / 4 for e in range(2)], rel=1e-5)


def test_snapshots_every_third_epoch_and_at_the_end(small_images, tmp_path):
    short_run(small_images, epochs=4, batch_size=16, checkpoint_dir=tmp_path, checkpoint_every=3)
    assert sorted(snapshots_by_epoch(tmp_path)) == [3, 4]


@pytest.mark.parametrize("amp_dtype", [None, torch.bfloat16])
def test_the_step_runs_under_autocast_exactly_when_the_device_has_an_autocast_type(small_images, monkeypatch, amp_dtype):
    monkeypatch.setattr(clcourse.train, "autocast_dtype", lambda device: amp_dtype)   # a GPU's answer, on the CPU
    method = tiny_simclr()
    dtypes = []
    method.projector.register_forward_hook(lambda module, args, output: dtypes.append(output.dtype))
    short_run(small_images, method, epochs=1, batch_size=16)
    assert dtypes == [amp_dtype or torch.float32] * 2


def test_no_step_runs_after_the_first_nan_loss_on_the_cpu(small_images):
    """On the CPU the loss is checked after every step (free there); on a GPU only when a record is made,
    so up to log_every - 1 more steps may run there before the error."""
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
        self.total, self.initial, self.n = total, initial, initial
        FakeBar.made.append(self)

    def update(self, count):
        self.n += count

    def set_postfix(self, **values):
        pass

    def close(self):
        pass


def test_the_progress_bar_starts_where_a_resumed_run_left_off_and_ends_full(small_images, tmp_path, monkeypatch):
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
        short_run(small_images, method, epochs=2, batch_size=8, log_every=3, checkpoint_dir=tmp_path)
    short_run(small_images, tiny_simclr(), epochs=2, batch_size=8, log_every=3, checkpoint_dir=tmp_path)
    (first, resumed) = FakeBar.made
    assert (first.total, first.initial) == (8, 0)
    assert (resumed.total, resumed.initial, resumed.n) == (8, 4, 8)
