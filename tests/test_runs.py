"""Faults and bad input (issue 16): every probe of a hostile user is a test here, so that none gives a silent
wrong result or loses a run, and every error names the file or argument and says what to do.

Training faults happen for real where they can: a training subprocess killed with SIGKILL mid-epoch and
mid-write, files corrupted on disk, a full disk as a writer that fails. A read-only folder is mocked through
os.access (tests may run as root, for whom permissions do not bite) and tried with chmod where they do."""
import errno
import json
import os
import pickle
import select
import signal
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

import clcourse.data as data
import clcourse.runs
from clcourse.augment import simclr_cifar
from clcourse.data import load_dataset
from clcourse.evaluate import extract_features, knn_accuracy, linear_probe
from clcourse.losses import info_nce, moco_info_nce
from clcourse.methods import METHODS, SimCLR
from clcourse.models import Backbone, SmallCNN
from clcourse.negatives import effective_negatives, hardest_negatives
from clcourse.runs import load_weights, snapshots_by_epoch
from clcourse.train import KnnData, NonFiniteLossError
from helpers import notebook_with, noisy_views, short_run, step_losses, tiny_method, tiny_simclr
from repository import REPO, load_script

tool = load_script(REPO / "tools" / "notebooks.py")


def assert_same_weights(a, b):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x.cpu(), y.cpu()), name


# ================================================================ silent wrong results and data loss

# ---------------------------------------------------------------- a resumed run with another configuration
# (temperature, lr, weight decay, data, seed and batch size: tests/test_train.py
# test_resuming_with_another_configuration_is_refused)

@pytest.mark.parametrize("first, then, field", [
    ("simclr", "dcl", "method.name: 'SimCLR' (now: 'DCL')"),
    ("simclr", "hcl", "method.name: 'SimCLR' (now: 'HCL')"),
    ("dcl", "simclr", "method.name: 'DCL' (now: 'SimCLR')"),
])
def test_build_method_with_another_name_over_a_finished_run_is_refused(images, tmp_path, first, then, field):
    finished = short_run(images, tiny_method(first), checkpoint_dir=tmp_path, epochs=1)
    with pytest.raises(ValueError, match="another configuration") as error:
        short_run(images, tiny_method(then), checkpoint_dir=tmp_path, epochs=1)
    assert field in str(error.value) and "another run name" in str(error.value)
    assert short_run(images, tiny_method(first), checkpoint_dir=tmp_path, epochs=1).epochs == finished.epochs


def test_another_training_subset_is_refused(cifar_root, tmp_path):
    subset_10, _ = load_dataset("cifar10", root=cifar_root, subset=10)
    subset_12, _ = load_dataset("cifar10", root=cifar_root, subset=12)
    short_run(subset_10, checkpoint_dir=tmp_path / "run", epochs=1, batch_size=4)
    with pytest.raises(ValueError, match=r"data.images: \[10, 3, 32, 32\] \(now: \[12, 3, 32, 32\]\)"):
        short_run(subset_12, checkpoint_dir=tmp_path / "run", epochs=1, batch_size=4)


# ---------------------------------------------------------------- starting afresh over an existing run
# (resume=False over a run: tests/test_train.py test_a_fresh_start_over_an_existing_run_is_refused)

def test_a_refused_fresh_start_leaves_the_old_run_untouched(images, tmp_path):
    short_run(images, checkpoint_dir=tmp_path, epochs=2, checkpoint_every=1)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match="resume=False would mix"):
        short_run(images, checkpoint_dir=tmp_path, epochs=1, resume=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_snapshots_without_last_pt_are_not_mixed_with_a_new_run(images, tmp_path):
    short_run(images, checkpoint_dir=tmp_path, epochs=2)
    (tmp_path / "last.pt").unlink()
    with pytest.raises(ValueError, match=r"holds snapshots \(epoch_0001.pt, epoch_0002.pt\) but no last.pt"):
        short_run(images, checkpoint_dir=tmp_path, epochs=2)
    assert sorted(snapshots_by_epoch(tmp_path)) == [1, 2]


# ---------------------------------------------------------------- a training process killed for real

def kill_at(folder: Path, moment: str) -> None:
    """Run tests/interrupted_run.py until `moment`, then SIGKILL it."""
    command = [sys.executable, "-c", "import sys, interrupted_run; interrupted_run.main(*sys.argv[1:])", str(folder),
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
    ("mid-write-last", ["last.pt.tmp"]),            # the epoch-2 checkpoint half written: epoch 1 stays
    ("mid-write-snapshot", ["epoch_0002.pt.tmp"]),  # last.pt of epoch 2 written, its snapshot half written
])
def test_a_run_killed_mid_epoch_or_mid_write_resumes_exactly(images, tmp_path, reference, moment, left_behind):
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

def test_the_snapshot_of_the_checkpoints_epoch_is_recreated_and_older_losses_are_reported(images, tmp_path):
    method = tiny_simclr()
    short_run(images, method, checkpoint_dir=tmp_path)
    (tmp_path / "epoch_0003.pt").unlink()           # its write was interrupted: last.pt holds those weights
    short_run(images, checkpoint_dir=tmp_path)            # a finished run, returned at once
    recreated = tiny_simclr(seed=7)
    assert load_weights(recreated, tmp_path / "epoch_0003.pt")["epoch"] == 3
    assert_same_weights(recreated, method)

    (tmp_path / "epoch_0001.pt").unlink()           # an older epoch's weights are gone for good
    with pytest.warns(UserWarning, match=r"snapshots of epochs \[1\] are missing .* cannot be re-created"):
        short_run(images, checkpoint_dir=tmp_path)
    assert sorted(snapshots_by_epoch(tmp_path)) == [2, 3]


# ---------------------------------------------------------------- a full disk

def failing_writer(fail_on: str, error: BaseException):
    """torch.save that writes half a file and then fails, for files whose name ends with `fail_on`."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if str(f).endswith(fail_on):
            with open(f, "wb") as handle:
                handle.write(b"half a checkpoint")
            raise error
        return real_save(obj, f, *args, **kwargs)
    return save


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 84736 "
                                                "vs 84632")])
def test_a_full_disk_names_the_file_and_leaves_no_partial_file(images, tmp_path, monkeypatch, error):
    calls = {"n": 0}
    real_save = torch.save
    fail = failing_writer("last.pt.tmp", error)

    def save_then_fill_the_disk(obj, f, *args, **kwargs):
        calls["n"] += str(f).endswith("last.pt.tmp")
        return fail(obj, f) if calls["n"] == 2 else real_save(obj, f, *args, **kwargs)   # epoch 2's checkpoint
    monkeypatch.setattr(torch, "save", save_then_fill_the_disk)
    with pytest.raises(OSError, match=f"could not write {tmp_path / 'last.pt'} .*intact.*writable"):
        short_run(images, checkpoint_dir=tmp_path)
    monkeypatch.undo()
    assert not list(tmp_path.glob("*.tmp"))
    assert torch.load(tmp_path / "last.pt", weights_only=False)["epoch"] == 1
    assert len(short_run(images, checkpoint_dir=tmp_path).epochs) == 3     # space again: the run continues


# ---------------------------------------------------------------- image ranges and dtypes

def test_float_pixels_in_0_255_are_refused_where_images_enter(images):
    pixels_0_255 = images.float()
    hint = "look like 0..255 pixel values"
    with pytest.raises(ValueError, match=f"images holds float pixels in \\[0, 255\\].*{hint}"):
        simclr_cifar(16)(pixels_0_255)
    with pytest.raises(ValueError, match=f"images holds float pixels in \\[0, 255\\].*{hint}"):
        extract_features(Backbone(SmallCNN(width=4)), pixels_0_255)
    with pytest.raises(ValueError, match="images must be uint8 pixels 0..255.*to_uint8_images"):
        short_run(images.float() / 255)
    with pytest.raises(ValueError, match="knn_data.test_images holds float pixels"):
        short_run(images, knn_data=KnnData(images, torch.zeros(48), pixels_0_255, torch.zeros(48)), knn_k=5)
    with pytest.raises(ValueError, match=r"holds float pixels in \[nan, nan\]"):
        simclr_cifar(16)(torch.full((2, 3, 16, 16), float("nan")))


def test_float_pixels_in_the_unit_range_are_what_uint8_means(images):
    backbone = Backbone(SmallCNN(width=4))
    assert torch.equal(extract_features(backbone, images), extract_features(backbone, images.float() / 255))
    generator = torch.Generator().manual_seed(0)
    views = simclr_cifar(16)(images.float() / 255, generator)
    assert torch.allclose(views, simclr_cifar(16)(images, torch.Generator().manual_seed(0)))


def test_uint8_images_straight_into_a_backbone_are_refused(images):
    with pytest.raises(ValueError, match="takes float pixels in \\[0, 1\\], got torch.uint8.*to_float_images"):
        Backbone(SmallCNN(width=4))(images)


# ---------------------------------------------------------------- booleans

@pytest.mark.parametrize("argument", ["train", "download"])
def test_load_dataset_takes_booleans_only(cifar_root, argument):
    with pytest.raises(ValueError, match=f"{argument} must be True or False, got 'no'"):
        load_dataset("cifar10", root=cifar_root, **{argument: "no"})
    assert len(load_dataset("cifar10", root=cifar_root, train=np.bool_(False))[0]) == 4     # the test split


@pytest.mark.parametrize("argument", ["resume", "progress", "compile"])
def test_train_takes_booleans_only(images, argument):
    with pytest.raises(ValueError, match=f"{argument} must be True or False, got 'no'"):
        short_run(images, **{argument: "no"})


# ---------------------------------------------------------------- losses with nothing to contrast

def test_simclr_with_a_batch_of_one_image_is_refused_before_training(images):
    method = tiny_simclr()
    steps = []
    step = method.training_step
    method.training_step = lambda batch: (steps.append(1), step(batch))[1]
    with pytest.raises(ValueError, match="batch_size must be at least 2 for SimCLR"):
        short_run(images, method, batch_size=1)
    assert not steps
    with pytest.raises(ValueError, match="info_nce needs at least 2 images"):
        info_nce(torch.randn(1, 8), torch.randn(1, 8))


def test_moco_info_nce_with_every_queue_entry_masked_is_refused():
    q, k, queue = torch.randn(4, 8), torch.randn(4, 8), torch.randn(6, 8)
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[1] = True
    with pytest.raises(ValueError, match="queue_mask masks every queue entry of some query"):
        moco_info_nce(q, k, queue, queue_mask=mask)
    extra = torch.randn(4, 2, 8)            # synthetic negatives are negatives too
    assert moco_info_nce(q, k, queue, queue_mask=mask, extra_negatives=extra) > 0


def test_moco_proves_once_that_every_query_keeps_a_negative(images, monkeypatch):
    import clcourse.methods.moco
    with pytest.raises(ValueError, match="queue_size must be larger than 1"):
        short_run(images, tiny_method("moco", queue_size=1), batch_size=8)
    checked = []
    real_loss = clcourse.methods.moco.moco_info_nce

    def spy(*args, check_mask=True, **kwargs):
        checked.append(check_mask)
        return real_loss(*args, check_mask=check_mask, **kwargs)
    monkeypatch.setattr(clcourse.methods.moco, "moco_info_nce", spy)
    short_run(images, tiny_method("moco"), batch_size=8, epochs=2)
    assert len(checked) == 12 and not any(checked)      # no host sync per step for the check


def test_effective_negatives_of_zero_weights_is_refused():
    with pytest.raises(ValueError, match="weights must have a positive sum .* row of zeros"):
        effective_negatives(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="weights must be finite"):
        effective_negatives(torch.tensor([1.0, float("nan")]))
    assert effective_negatives(torch.ones(2, 5)).tolist() == pytest.approx([5.0, 5.0])


# ---------------------------------------------------------------- non-finite features

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_are_refused(bad):
    features, labels = torch.randn(20, 4), torch.arange(20) % 2
    broken = features.clone()
    broken[3, 1] = bad
    with pytest.raises(ValueError, match="train_features holds 1 NaN or infinite values"):
        knn_accuracy(broken, labels, features, labels, k=3)
    with pytest.raises(ValueError, match="test_features holds 1 NaN or infinite values"):
        knn_accuracy(features, labels, broken, labels, k=3)
    with pytest.raises(ValueError, match="train_features holds 1 NaN or infinite values"):
        linear_probe(broken, labels, features, labels, epochs=1)
    with pytest.raises(ValueError, match="anchors holds 1 NaN or infinite values"):
        hardest_negatives(broken, features, k=2)
    with pytest.raises(ValueError, match="candidates holds 1 NaN or infinite values"):
        hardest_negatives(features, broken, k=2)


# ---------------------------------------------------------------- solution markers students would receive

@pytest.mark.parametrize("marker", ["### begin solution", "### Begin Solution", "### BEGIN  SOLUTION",
                                    "## BEGIN SOLUTION", "#### BEGIN SOLUTION", "#BEGIN SOLUTION",
                                    "BEGIN SOLUTION", "### BEGIN_SOLUTION", "### BEGINSOLUTION", "### end solution"])
def test_near_miss_solution_markers_are_errors_naming_notebook_cell_and_line(tmp_path, capsys, marker):
    bad, good = tmp_path / "bad.ipynb", tmp_path / "good.ipynb"
    nbformat.write(notebook_with(f"y = 0\n{marker}\nsecret = 42\n### END SOLUTION"), bad)
    nbformat.write(notebook_with(f"{tool.SOLUTION_BEGIN}\nsecret = 42\n{tool.SOLUTION_END}"), good)
    out = tmp_path / "student"
    assert tool.main(["student", str(bad), str(good), "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert f"{bad}: cell 2 (y = 0), line 2: malformed marker {marker!r}" in printed
    assert not (out / "bad.ipynb").exists()
    assert "secret" not in (out / "good.ipynb").read_text()        # the rest of the batch is still written


# ================================================================ unclear errors and tracebacks

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
def test_a_damaged_or_foreign_last_pt_is_one_error_naming_the_file(images, tmp_path, other_runs, how, says):
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
    with pytest.raises(ValueError, match=f"the weights in {other_runs / 'moco' / 'epoch_0001.pt'} do not fit this "
                                         "SimCLR"):
        load_weights(tiny_simclr(), other_runs / "moco" / "epoch_0001.pt")


# ---------------------------------------------------------------- a folder that cannot be written

def test_a_read_only_folder_fails_before_the_first_epoch(images, tmp_path, monkeypatch):
    folder = tmp_path / "run"
    folder.mkdir()
    real_access = os.access
    monkeypatch.setattr(clcourse.runs.os, "access",
                        lambda path, mode: False if Path(path) == folder else real_access(path, mode))
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
                        lambda path, mode: False if Path(path).parent == tmp_path else real_access(path, mode))
    assert short_run(images, checkpoint_dir=finished).epochs == first.epochs      # only read: returned as it is
    with pytest.raises(PermissionError, match=f"the run folder {unfinished} is not writable"):
        short_run(images, checkpoint_dir=unfinished)                               # would train: refused at once


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="permissions do not bind root")
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
    with pytest.raises(OSError, match=f"cannot create the run folder {tmp_path / 'a_file' / 'run'}"):
        short_run(images, checkpoint_dir=tmp_path / "a_file" / "run")


# ---------------------------------------------------------------- damaged dataset files

def test_a_truncated_cifar_batch_names_the_file_and_how_to_recreate_it(cifar_root):
    batch = cifar_root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:1000])
    with pytest.raises(ValueError, match=f"{batch} is damaged .*delete .*load_dataset\\('cifar10', download=True\\)"):
        load_dataset("cifar10", root=cifar_root)
    assert len(load_dataset("cifar10", root=cifar_root, train=False)[0]) == 4     # the other split still loads


def test_a_cifar_batch_of_the_wrong_shape_names_the_file(cifar_root):
    batch = cifar_root / "cifar-10-batches-py" / "test_batch"
    with open(batch, "wb") as f:
        pickle.dump({"data": np.zeros((4, 100), dtype=np.uint8), "labels": [0, 1, 2, 3]}, f)
    with pytest.raises(ValueError, match=f"{batch} is damaged .*not N rows of 3072 pixels"):
        load_dataset("cifar10", root=cifar_root, train=False)


def test_a_truncated_stl10_file_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_CACHE", {})
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    (folder / "test_X.bin").write_bytes(bytes(3 * 96 * 96 + 10))
    (folder / "test_y.bin").write_bytes(bytes([1]))
    with pytest.raises(ValueError, match=f"{folder / 'test_X.bin'} is damaged .*not a whole number"):
        load_dataset("stl10", root=tmp_path, train=False, download=False)


# ---------------------------------------------------------------- notebooks that cannot be read

@pytest.mark.parametrize("command", ["student", "check", "strip"])
def test_unreadable_notebooks_are_one_line_each_and_the_rest_is_processed(tmp_path, capsys, command):
    missing, empty, not_json = tmp_path / "missing.ipynb", tmp_path / "empty.ipynb", tmp_path / "not_json.ipynb"
    empty.write_text("")
    not_json.write_text("{ not json")
    good = tmp_path / "good.ipynb"
    nbformat.write(tool.strip_notebook(notebook_with("x = 2")), good)
    out = ["--out", str(tmp_path / "student")] if command == "student" else []
    assert tool.main([command, str(missing), str(empty), str(good), str(not_json), *out]) == 1
    printed = capsys.readouterr().out.splitlines()
    for path in (missing, empty, not_json):
        lines = [line for line in printed if line.startswith(f"{path}: cannot read this notebook")]
        assert len(lines) == 1, printed
    if command == "student":
        assert (tmp_path / "student" / "good.ipynb").is_file()
    assert not any(line.startswith(str(good)) for line in printed)   # read, clean, processed


# ---------------------------------------------------------------- numbers and labels in other types

@pytest.mark.parametrize("temperature", [np.float32(0.3), np.float64(0.3), torch.tensor(0.3), np.array(0.3)])
def test_numpy_scalars_and_0d_tensors_are_numbers(images, tmp_path, temperature):
    method = SimCLR(Backbone(SmallCNN(width=4)), temperature=temperature, projector_hidden=16, projector_out=8,
                    augment=noisy_views)
    assert type(method.temperature) is float and method.temperature == pytest.approx(0.3)
    z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    assert torch.allclose(info_nce(z1, z2, temperature), info_nce(z1, z2, float(temperature)))
    history = short_run(images, method, checkpoint_dir=tmp_path, epochs=np.int64(1), batch_size=torch.tensor(16),
                  lr=np.float32(0.1), seed=np.int32(0))
    assert len(history.epochs) == 1
    json.loads((tmp_path / "config.json").read_text())        # stored as plain numbers


def test_numpy_and_tensor_subsets_are_integers(cifar_root):
    expected, _ = load_dataset("cifar10", root=cifar_root, subset=10)
    for subset in (np.int64(10), torch.tensor(10), np.array(10)):
        assert torch.equal(load_dataset("cifar10", root=cifar_root, subset=subset)[0], expected)
    for bad in (np.float64(2.5), torch.tensor([10]), np.bool_(True)):
        with pytest.raises(ValueError, match=r"subset must be an integer in \[1, 20\]"):
            load_dataset("cifar10", root=cifar_root, subset=bad)


def test_labels_as_lists_tuples_and_small_integer_types_are_accepted(images):
    labels = torch.arange(48) % 4
    seen = []
    method = tiny_simclr()
    step = method.training_step
    method.training_step = lambda batch: (seen.append(batch.labels), step(batch))[1]
    knn = (images, labels.to(torch.uint8), images[:16], labels[:16].tolist())        # a plain tuple
    history = short_run(images, method, labels=labels.tolist(), knn_data=knn, knn_k=5, epochs=1)
    assert 0 <= history.final_knn_accuracy <= 1
    assert all(y.dtype == torch.int64 for y in seen)

    features = torch.randn(48, 4)
    expected = knn_accuracy(features, labels, features[:16], labels[:16], k=5)
    for dtype in (torch.uint8, torch.int32):
        assert knn_accuracy(features, labels.to(dtype), features[:16], labels[:16].to(dtype), k=5) == expected
    probe = linear_probe(features, labels.to(torch.int32), features[:16], labels[:16].numpy().astype(np.uint8),
                         epochs=2)
    assert probe.test_accuracy == linear_probe(features, labels, features[:16], labels[:16], epochs=2).test_accuracy


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
# (knn_k larger than the kNN set is refused at start: tests/test_train.py
# test_knn_k_larger_than_the_knn_training_set_is_refused_at_start)

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
        short_run(images, exploding_method(at_call=2), checkpoint_dir=tmp_path / "early")   # in epoch 1: no checkpoint
    assert "step 1" in str(error.value) and "intact" not in str(error.value)
    assert not (tmp_path / "early" / "last.pt").exists()
    with pytest.raises(NonFiniteLossError) as error:
        short_run(images, exploding_method(at_call=2))                                     # no checkpoints at all
    assert "intact" not in str(error.value)
    with pytest.raises(NonFiniteLossError) as error:
        short_run(images, exploding_method(at_call=5), checkpoint_dir=tmp_path / "later")   # in epoch 2
    assert f"the last checkpoint ({tmp_path / 'later' / 'last.pt'}) is intact" in str(error.value)


# ---------------------------------------------------------------- the checks stay out of the training step

@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_training_step_reads_nothing_on_the_host(images, monkeypatch, name):
    """The checks above run where data enters, once; inside a step (views, loss, after-step update) no value
    is read on the host, which on a GPU would stall every step. Seen here as a Tensor that refuses to become a
    Python value while a step runs."""
    method = tiny_method(name, augment=simclr_cifar(16))
    in_step = {"now": False}

    def refuse(original):
        def guarded(self, *args, **kwargs):
            assert not in_step["now"], "a training step read a tensor's value on the host"
            return original(self, *args, **kwargs)
        return guarded
    for attribute in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, attribute, refuse(getattr(torch.Tensor, attribute)))

    def inside_step(function):
        def wrapped(*args, **kwargs):
            in_step["now"] = True
            try:
                return function(*args, **kwargs)
            finally:
                in_step["now"] = False
        return wrapped
    method.make_views = inside_step(method.make_views)
    method.training_step = inside_step(method.training_step)
    method.on_step_end = inside_step(method.on_step_end)
    labels = torch.arange(len(images)) % 4 if method.requires_labels else None
    short_run(images, method, epochs=2, batch_size=8, log_every=100, labels=labels)
