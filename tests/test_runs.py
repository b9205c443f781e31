"""The run store (clcourse/runs.py) as training uses it: run folders, atomic checkpoints, snapshots,
exact resume (bf16 and fp16 included), the configuration a run stores and a resume with another one
refused; and its faults, for real where they can happen: a training subprocess killed with SIGKILL
mid-epoch and mid-write, files corrupted on disk, a full disk as a writer that fails. A read-only
folder is mocked through os.access (tests may run as root, for whom permissions do not bite) and
tried with chmod where they do."""
import errno
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import noisy_views, short_run, step_losses, tiny_method, tiny_simclr
from repository import REPO

import clcourse.runs
import clcourse.train
from clcourse.data import load_dataset
from clcourse.losses import info_nce
from clcourse.methods import DCL
from clcourse.models import Backbone, SmallCNN
from clcourse.runs import (
    list_checkpoints,
    load_weights,
    run_dir,
    save_atomically,
    snapshots_by_epoch,
)


def assert_same_weights(a, b):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x.cpu(), y.cpu()), name


# ---------------------------------------------------------------- folders, atomic writes, snapshots

def test_run_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("CLCOURSE_RUNS", str(tmp_path))
    monkeypatch.setenv("CLCOURSE_PRESET", "smoke")
    assert run_dir("simclr") == tmp_path / "smoke" / "simclr"
    assert run_dir("simclr", preset="full") == tmp_path / "full" / "simclr"


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


def test_snapshots_every_third_epoch_and_at_the_end(small_images, tmp_path):
    short_run(small_images, epochs=4, batch_size=16, checkpoint_dir=tmp_path, checkpoint_every=3)
    assert sorted(snapshots_by_epoch(tmp_path)) == [3, 4]


# ---------------------------------------------------------------- resume

@pytest.mark.parametrize("amp_dtype", [None, torch.bfloat16, torch.float16])
def test_resume_continues_the_same_run(images, tmp_path, amp_dtype, monkeypatch):
    # bf16 and fp16 are the GPU paths (fp16 with its gradient scaler, as on a T4), run here on the
    # CPU.
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
    assert [p.name
            for p in list_checkpoints(tmp_path / "resumed")] == ["epoch_0001.pt", "epoch_0002.pt"]

    resumed_method = tiny_simclr(seed=123)  # other weights: the checkpoint must replace them
    resumed = short_run(images, resumed_method, checkpoint_dir=tmp_path / "resumed", resume=True)
    assert step_losses(resumed) == step_losses(reference)
    for (name, a), b in zip(reference_method.state_dict().items(),
                            resumed_method.state_dict().values()):
        assert torch.equal(a, b), name
    scaler_state = torch.load(tmp_path / "resumed" / "last.pt", weights_only=False)["scaler"]
    # the scaler's scale is saved, and only for fp16
    assert bool(scaler_state) == (amp_dtype == torch.float16)


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


# ---------------------------------------------------------------- a run's configuration

def test_a_run_stores_its_configuration(images, tmp_path):
    short_run(images, checkpoint_dir=tmp_path, epochs=1)
    saved = torch.load(tmp_path / "last.pt", weights_only=False)["config"]
    assert saved == json.loads((tmp_path / "config.json").read_text())
    assert saved["method"]["name"] == "SimCLR" and saved["method"]["temperature"] == 0.5
    assert saved["optimiser"] == {"name": "SGD", "lr_per_256_images": 0.1, "momentum": 0.9,
                                  "weight_decay": 5e-4}
    assert (saved["data"]["images"] == [48, 3, 16, 16] and saved["seed"] == 0
            and saved["preset"] == "test")


@pytest.mark.parametrize("change, field", [
    (dict(method=lambda: tiny_simclr(temperature=0.2)), "method.temperature: 0.5 (now: 0.2)"),
    (dict(method=lambda: DCL(Backbone(SmallCNN(width=4)), projector_hidden=16, projector_out=8,
                             augment=noisy_views)), "method.name: 'SimCLR' (now: 'DCL')"),
    (dict(lr=0.2), "optimiser.lr_per_256_images: 0.1 (now: 0.2)"),
    (dict(weight_decay=1e-4), "optimiser.weight_decay"),
    (dict(images=lambda images: images[:32]),
     "data.images: [48, 3, 16, 16] (now: [32, 3, 16, 16])"),
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


@pytest.mark.parametrize("first, then, field", [
    ("simclr", "dcl", "method.name: 'SimCLR' (now: 'DCL')"),
    ("simclr", "hcl", "method.name: 'SimCLR' (now: 'HCL')"),
    ("dcl", "simclr", "method.name: 'DCL' (now: 'SimCLR')"),
])
def test_build_method_with_another_name_over_a_finished_run_is_refused(
        images, tmp_path, first, then, field):
    finished = short_run(images, tiny_method(first), checkpoint_dir=tmp_path, epochs=1)
    with pytest.raises(ValueError, match="another configuration") as error:
        short_run(images, tiny_method(then), checkpoint_dir=tmp_path, epochs=1)
    assert field in str(error.value) and "another run name" in str(error.value)
    assert short_run(images, tiny_method(first), checkpoint_dir=tmp_path,
                     epochs=1).epochs == finished.epochs


def test_another_training_subset_is_refused(cifar_root, tmp_path):
    subset_10, _ = load_dataset("cifar10", root=cifar_root, subset=10)
    subset_12, _ = load_dataset("cifar10", root=cifar_root, subset=12)
    short_run(subset_10, checkpoint_dir=tmp_path / "run", epochs=1, batch_size=4)
    with pytest.raises(ValueError,
                       match=r"data.images: \[10, 3, 32, 32\] \(now: \[12, 3, 32, 32\]\)"):
        short_run(subset_12, checkpoint_dir=tmp_path / "run", epochs=1, batch_size=4)


def test_the_same_configuration_with_another_loss_function_resumes(images, tmp_path):
    # A student's checked loss (notebook 01) and the library's are the same loss: notebook 02 reuses
    # the run.
    first = short_run(images, checkpoint_dir=tmp_path, epochs=1, method=tiny_simclr(loss=info_nce))
    again = short_run(images, checkpoint_dir=tmp_path, epochs=1)
    assert again.epochs == first.epochs


def test_a_checkpoint_without_configuration_is_refused(images, tmp_path):
    short_run(images, checkpoint_dir=tmp_path, epochs=1)
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    del state["config"]
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(ValueError, match="older version"):
        short_run(images, checkpoint_dir=tmp_path, epochs=1)


# ------------------------------------------------------------- starting afresh over an existing run

def test_a_fresh_start_over_an_existing_run_is_refused(images, tmp_path):
    short_run(images, checkpoint_dir=tmp_path, epochs=1)
    with pytest.raises(ValueError, match="resume=False would mix"):
        short_run(images, checkpoint_dir=tmp_path, epochs=1, resume=False)
    short_run(images, checkpoint_dir=tmp_path / "new", epochs=1, resume=False)   # empty: fine


def test_a_refused_fresh_start_leaves_the_old_run_untouched(images, tmp_path):
    short_run(images, checkpoint_dir=tmp_path, epochs=2, checkpoint_every=1)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match="resume=False would mix"):
        short_run(images, checkpoint_dir=tmp_path, epochs=1, resume=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_snapshots_without_last_pt_are_not_mixed_with_a_new_run(images, tmp_path):
    short_run(images, checkpoint_dir=tmp_path, epochs=2)
    (tmp_path / "last.pt").unlink()
    with pytest.raises(ValueError,
                       match=r"holds snapshots \(epoch_0001.pt, epoch_0002.pt\) but no last.pt"):
        short_run(images, checkpoint_dir=tmp_path, epochs=2)
    assert sorted(snapshots_by_epoch(tmp_path)) == [1, 2]


def test_stale_temporary_files_are_removed_at_start(images, tmp_path):
    (tmp_path / "epoch_0001.pt.tmp").write_bytes(b"half")
    short_run(images, checkpoint_dir=tmp_path, epochs=1)
    assert not list(tmp_path.glob("*.tmp"))


# --------------------------------------------------------------- a training process killed for real

def kill_at(folder: Path, moment: str) -> None:
    """Run tests/interrupted_run.py until `moment`, then SIGKILL it."""
    command = [sys.executable, "-c",
               "import sys, interrupted_run; interrupted_run.main(*sys.argv[1:])", str(folder),
               moment, str(torch.get_num_threads())]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 120)
        line = process.stdout.readline() if ready else b""
        assert line.strip() == b"ready", process.stderr.read1().decode() if line else "no answer"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        process.stdout.close()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory):
    """The uninterrupted run: its losses, its final weights and its snapshot of epoch 2."""
    folder = tmp_path_factory.mktemp("reference")
    method = tiny_simclr()
    history = short_run(images, method, checkpoint_dir=folder)
    return step_losses(history), method, folder / "epoch_0002.pt"


@pytest.mark.parametrize("moment, left_behind", [
    ("mid-epoch", []),
    # the epoch-2 checkpoint half written: epoch 1 stays
    ("mid-write-last", ["last.pt.tmp"]),
    # last.pt of epoch 2 written, its snapshot half written
    ("mid-write-snapshot", ["epoch_0002.pt.tmp"]),
])
def test_a_run_killed_mid_epoch_or_mid_write_resumes_exactly(images, tmp_path, reference, moment,
                                                             left_behind):
    kill_at(tmp_path, moment)
    assert sorted(p.name for p in tmp_path.glob("*.tmp")) == left_behind
    if moment == "mid-write-snapshot":
        assert not (tmp_path / "epoch_0002.pt").exists()

    resumed = tiny_simclr(seed=123)
    history = short_run(images, resumed, checkpoint_dir=tmp_path)
    reference_losses, reference_method, reference_snapshot = reference
    assert step_losses(history) == reference_losses
    assert_same_weights(resumed, reference_method)
    assert not list(tmp_path.glob("*.tmp"))
    assert sorted(snapshots_by_epoch(tmp_path)) == [1, 2, 3]
    again, expected = tiny_simclr(seed=5), tiny_simclr(seed=6)
    load_weights(again, tmp_path / "epoch_0002.pt")
    load_weights(expected, reference_snapshot)
    assert_same_weights(again, expected)


# ---------------------------------------------------------------- snapshots that are missing

def test_the_snapshot_of_the_checkpoints_epoch_is_recreated_and_older_losses_are_reported(
        images, tmp_path):
    method = tiny_simclr()
    short_run(images, method, checkpoint_dir=tmp_path)
    # its write was interrupted: last.pt holds those weights
    (tmp_path / "epoch_0003.pt").unlink()
    short_run(images, checkpoint_dir=tmp_path)            # a finished run, returned at once
    recreated = tiny_simclr(seed=7)
    assert load_weights(recreated, tmp_path / "epoch_0003.pt")["epoch"] == 3
    assert_same_weights(recreated, method)

    (tmp_path / "epoch_0001.pt").unlink()           # an older epoch's weights are gone for good
    with pytest.warns(UserWarning,
                      match=r"snapshots of epochs \[1\] are missing .* cannot be re-created"):
        short_run(images, checkpoint_dir=tmp_path)
    assert sorted(snapshots_by_epoch(tmp_path)) == [2, 3]


# ---------------------------------------------------------------- a full disk

def failing_writer(fail_on: str, error: BaseException):
    """torch.save that writes half a file and then fails, for files whose name ends with
    `fail_on`."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if str(f).endswith(fail_on):
            with open(f, "wb") as handle:
                handle.write(b"half a checkpoint")
            raise error
        return real_save(obj, f, *args, **kwargs)
    return save


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 84736 vs 84632")])
def test_a_full_disk_names_the_file_and_leaves_no_partial_file(images, tmp_path, monkeypatch,
                                                               error):
    calls = {"n": 0}
    real_save = torch.save
    fail = failing_writer("last.pt.tmp", error)

    def save_then_fill_the_disk(obj, f, *args, **kwargs):
        calls["n"] += str(f).endswith("last.pt.tmp")
        # epoch 2's checkpoint
        return fail(obj, f) if calls["n"] == 2 else real_save(obj, f, *args, **kwargs)
    monkeypatch.setattr(torch, "save", save_then_fill_the_disk)
    with pytest.raises(OSError, match=f"could not write {tmp_path / 'last.pt'} .*intact.*writable"):
        short_run(images, checkpoint_dir=tmp_path)
    monkeypatch.undo()
    assert not list(tmp_path.glob("*.tmp"))
    assert torch.load(tmp_path / "last.pt", weights_only=False)["epoch"] == 1
    assert len(short_run(images, checkpoint_dir=tmp_path).epochs) == 3   # space again: it continues


# ---------------------------------------------------------------- a damaged or foreign last.pt

def damage(folder: Path, how: str, other_runs: Path) -> None:
    path = folder / "last.pt"
    if how == "empty":
        path.write_bytes(b"")
    elif how == "random bytes":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 3])
    elif how == "a snapshot":
        path.write_bytes((folder / "epoch_0001.pt").read_bytes())
    elif how == "json":
        path.write_text(json.dumps({"epoch": 1}))
    elif how == "a MoCo checkpoint":
        path.write_bytes((other_runs / "moco" / "last.pt").read_bytes())


@pytest.fixture(scope="module")
def other_runs(images, tmp_path_factory):
    folder = tmp_path_factory.mktemp("other_runs")
    short_run(images, tiny_method("moco"), checkpoint_dir=folder / "moco", epochs=1, batch_size=8)
    return folder


@pytest.mark.parametrize("how, says", [
    ("empty", "cannot be read as a checkpoint"), ("random bytes", "cannot be read as a checkpoint"),
    ("truncated", "cannot be read as a checkpoint"), ("json", "cannot be read as a checkpoint"),
    ("a snapshot", "lacks optimizer, scaler, history, rng"),
    ("a MoCo checkpoint", "trained with another configuration"),
])
def test_a_damaged_or_foreign_last_pt_is_one_error_naming_the_file(
        images, tmp_path, other_runs, how, says):
    short_run(images, checkpoint_dir=tmp_path, epochs=1)
    damage(tmp_path, how, other_runs)
    with pytest.raises(ValueError) as error:
        short_run(images, checkpoint_dir=tmp_path, epochs=1)
    message = str(error.value)
    assert says in message and str(tmp_path) in message
    assert "another run name" in message and "delete the folder" in message


def test_load_weights_names_a_damaged_or_foreign_file(tmp_path, other_runs):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=f"{tmp_path / 'empty.pt'} cannot be read as a checkpoint"):
        load_weights(tiny_simclr(), tmp_path / "empty.pt")
    with pytest.raises(ValueError,
                       match=f"the weights in {other_runs / 'moco' / 'epoch_0001.pt'} "
                             "do not fit this SimCLR"):
        load_weights(tiny_simclr(), other_runs / "moco" / "epoch_0001.pt")


# ---------------------------------------------------------------- a folder that cannot be written

def test_a_read_only_folder_fails_before_the_first_epoch(images, tmp_path, monkeypatch):
    folder = tmp_path / "run"
    folder.mkdir()
    real_access = os.access
    monkeypatch.setattr(clcourse.runs.os, "access",
                        lambda path, mode: False if Path(path) == folder
                        else real_access(path, mode))
    method = tiny_simclr()
    steps = []
    step = method.training_step
    method.training_step = lambda batch: (steps.append(1), step(batch))[1]
    with pytest.raises(PermissionError, match=f"the run folder {folder} is not writable"):
        short_run(images, method, checkpoint_dir=folder)
    assert not steps and not list(folder.iterdir())

    finished, unfinished = tmp_path / "finished", tmp_path / "unfinished"
    first = short_run(images, checkpoint_dir=finished)
    interrupted, steps_done = tiny_simclr(), {"n": 0}

    def stop_in_second_epoch(batch, output):
        steps_done["n"] += 1
        if steps_done["n"] == 5:
            raise KeyboardInterrupt
    interrupted.on_step_end = stop_in_second_epoch
    with pytest.raises(KeyboardInterrupt):
        short_run(images, interrupted, checkpoint_dir=unfinished)
    monkeypatch.setattr(clcourse.runs.os, "access",
                        lambda path, mode: False if Path(path).parent == tmp_path
                        else real_access(path, mode))
    # only read: returned as it is
    assert short_run(images, checkpoint_dir=finished).epochs == first.epochs
    with pytest.raises(PermissionError, match=f"the run folder {unfinished} is not writable"):
        short_run(images, checkpoint_dir=unfinished)             # would train: refused at once


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="permissions do not bind root")
def test_a_folder_made_read_only_fails_before_the_first_epoch(images, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match=f"the run folder {folder} is not writable"):
            short_run(images, checkpoint_dir=folder)
    finally:
        folder.chmod(0o755)


def test_a_folder_that_cannot_be_created_is_named(images, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(OSError,
                       match=f"cannot create the run folder {tmp_path / 'a_file' / 'run'}"):
        short_run(images, checkpoint_dir=tmp_path / "a_file" / "run")


# --------------------------------------------------------- the same run: what its functions compute

def student_info_nce(variant):
    """A correct InfoNCE as a notebook copy defines it, `info_nce_loss` in `__main__`-like code of
    its own: the solution notebook's (0) and the student copy's (1) compute the same loss with
    different code."""
    namespace = {"torch": torch, "F": torch.nn.functional, "__name__": "__main__"}
    body = ("    z = F.normalize(torch.cat([z1, z2]), dim=1)\n"
            "    logits = (z @ z.T / temperature).fill_diagonal_(float('-inf'))\n"
            "    n = len(z1)\n"
            + ("    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])\n"
               if variant == 0 else "    targets = (torch.arange(2 * n) + n) % (2 * n)\n")
            + "    return F.cross_entropy(logits, targets)\n")
    exec(f"def info_nce_loss(z1, z2, temperature):\n{body}", namespace)
    calls = []

    def counted(z1, z2, temperature):
        calls.append(len(z1))
        return namespace["info_nce_loss"](z1, z2, temperature)

    counted.__module__, counted.__qualname__ = "__main__", "info_nce_loss"
    return counted, calls


def test_a_run_of_another_function_is_never_returned_it_is_set_aside_and_back_when_asked_for(
        images, tmp_path, capsys):
    """The student copy's own loss trains even after the solution notebook ran with the same run
    name."""
    solution, solution_calls = student_info_nce(0)
    student, student_calls = student_info_nce(1)
    folder = tmp_path / "simclr_t0.5"
    first = short_run(images, tiny_simclr(loss=solution), checkpoint_dir=folder)
    assert solution_calls and not student_calls
    mine = short_run(images, tiny_simclr(loss=student), checkpoint_dir=folder)
    assert student_calls, "the student's loss never ran: the solution's run was returned"
    printed = capsys.readouterr().out
    aside = [path for path in tmp_path.iterdir() if path.name.startswith("simclr_t0.5.fn-")]
    assert len(aside) == 1 and f"{folder} held a run of other functions" in printed
    assert "__main__.info_nce_loss (code" in printed and f"kept aside in {aside[0].name}" in printed
    # the solution notebook again: its run comes back, finished, and is reused with a line that says
    # so
    solution_calls.clear()
    method = tiny_simclr(loss=solution)
    again = short_run(images, method, checkpoint_dir=folder)
    printed = capsys.readouterr().out
    assert not solution_calls and again.epochs == first.epochs and again.epochs != mine.epochs
    assert f"{folder}: the run of these functions, set aside in {aside[0].name}, is back" in printed
    assert (f"SimCLR: the finished run in {folder} (3 epochs, saved " in printed
            and "is reused" in printed)


def test_a_function_that_passed_its_checker_stands_for_the_librarys_and_not_the_other_way_round(
        images, tmp_path, capsys):
    """Notebook 02 analyses the run notebook 01 trained with the student's checked InfoNCE; the
    student's function never gets the library's run, and an unchecked function's run is not the
    library's."""
    from clcourse.checks import check_info_nce

    checked, _ = student_info_nce(0)
    check_info_nce(checked)
    folder = tmp_path / "checked"
    trained = short_run(images, tiny_simclr(loss=checked), checkpoint_dir=folder)
    capsys.readouterr()
    library = tiny_simclr()
    reused = short_run(images, library, checkpoint_dir=folder)
    printed = capsys.readouterr().out
    assert (reused.epochs == trained.epochs
            and "is reused, trained with loss __main__.info_nce_loss" in printed)
    assert "passed the checker of clcourse.losses.info_nce" in printed
    saved = torch.load(folder / "last.pt", weights_only=False)["method"]
    assert all(torch.equal(value, saved[key]) for key, value in library.state_dict().items())

    unchecked, _ = student_info_nce(1)
    other = tmp_path / "unchecked"
    unchecked_run = short_run(images, tiny_simclr(loss=unchecked), checkpoint_dir=other)
    capsys.readouterr()
    history = short_run(images, tiny_simclr(), checkpoint_dir=other)
    assert (history.epochs != unchecked_run.epochs
            and f"{other} held a run of other functions" in capsys.readouterr().out)
    assert any(path.name.startswith("unchecked.fn-") for path in tmp_path.iterdir())

    library_folder = tmp_path / "library"
    short_run(images, tiny_simclr(), checkpoint_dir=library_folder)
    checked_calls = []
    again, _ = student_info_nce(0)
    short_run(images, tiny_simclr(loss=lambda *args: checked_calls.append(1) or again(*args)),
              checkpoint_dir=library_folder)
    assert checked_calls, "a student's function was given the library's run"


@pytest.mark.parametrize("what",
                         ["SupCon's loss", "the adversarial attack", "a helper the loss calls"])
def test_a_run_asked_again_with_a_different_function_trains_again(images, tmp_path, what):
    """The probes: SupCon(loss=...) and AdversarialPretraining(attack=...) with another function
    returned the first function's weights; so did a loss whose helper had changed."""
    import clcourse.robustness as R
    from clcourse.losses import supcon
    from clcourse.methods import AdversarialPretraining, SupCon

    labels = torch.arange(len(images)) % 4
    calls = []

    def build(variant):
        torch.manual_seed(0)
        if what == "SupCon's loss":
            def loss(z1, z2, y, t, scale=(1.0, 1.0 + 1e-3)[variant]):
                calls.append(variant)
                return supcon(z1, z2, y, t) * scale
            return SupCon(Backbone(SmallCNN(width=4)), projector_hidden=16, projector_out=8,
                          augment=noisy_views, loss=loss)
        if what == "the adversarial attack":
            def attack(*args, steps_taken=(1, 2)[variant], **kwargs):
                calls.append(variant)
                return R.pgd(*args, **kwargs)
            return AdversarialPretraining(Backbone(SmallCNN(width=4)), "cl", augment=noisy_views,
                                          steps=1,
                                          projector_hidden=16, projector_out=8, attack=attack)
        helper = {"scale": (1.0, 2.0)[variant]}

        def scaled(z1, z2, t):
            return info_nce(z1, z2, t) * helper["scale"]

        def loss(z1, z2, t):
            calls.append(variant)
            return scaled(z1, z2, t)
        return tiny_simclr(loss=loss)

    options = dict(checkpoint_dir=tmp_path / "run", labels=labels)
    short_run(images, build(0), **options)
    calls.clear()
    short_run(images, build(1), **options)
    assert 1 in calls, f"a run asked again with another {what} returned the first one's weights"


def test_at_most_a_few_runs_are_kept_aside_per_name(images, tmp_path, capsys):
    folder = tmp_path / "run"
    for scale in range(clcourse.runs.SET_ASIDE_KEPT + 2):
        def loss(z1, z2, t, scale=1.0 + scale / 100):
            return info_nce(z1, z2, t) * scale
        short_run(images, tiny_simclr(loss=loss), checkpoint_dir=folder, epochs=1)
    kept = [path for path in tmp_path.iterdir() if path.name.startswith("run.fn-")]
    assert (len(kept) == clcourse.runs.SET_ASIDE_KEPT
            and "the oldest of the runs kept aside" in capsys.readouterr().out)


def test_an_older_run_that_recorded_its_functions_by_name_alone_is_set_aside(
        images, tmp_path, capsys):
    folder = tmp_path / "old"
    short_run(images, checkpoint_dir=folder, epochs=1)
    state = torch.load(folder / "last.pt", weights_only=False)
    state["config"]["method"]["functions"] = {"loss": "clcourse.losses.info_nce"}
    torch.save(state, folder / "last.pt")
    short_run(images, checkpoint_dir=folder, epochs=1)
    assert "clcourse.losses.info_nce (code not recorded)" in capsys.readouterr().out
