"""The command line (clcourse/run.py): `python -m clcourse.run` in one process, and under torchrun
in two (gloo, on the CPU), on a small CIFAR-10 folder in the official format."""
import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import fake_cifar10
from repository import REPO

import clcourse.data as data
from clcourse.run import main, parse_options
from clcourse.runs import CHECKPOINT_NAME, CONFIG_NAME

# 80 training images, 16 test images: two epochs of global batches of 16 (5 steps each).
ARGUMENTS = ["--method", "simclr", "--dataset", "cifar10", "--preset", "smoke", "--subset", "80",
             "--test-subset", "16", "--epochs", "2", "--batch-size", "16", "--no-progress"]


@pytest.fixture
def small_cifar(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_CACHE", {})
    monkeypatch.setenv("CLCOURSE_RUNS", str(tmp_path / "runs"))
    return fake_cifar10(tmp_path / "data", per_batch=16).parent


def test_one_process_trains_and_says_how_the_batch_and_learning_rate_are_scaled(small_cifar,
                                                                                   capsys):
    history = main([*ARGUMENTS, "--data-root", str(small_cifar), "--run-name", "one"])
    out = capsys.readouterr().out
    assert "batch: 16 images (global), one process" in out
    assert "peak 0.12 x 16 / 256 = 0.0075" in out          # SimCLR's 0.12 per 256 images
    assert [r["epoch"] for r in history.epochs] == [1, 2]
    assert history.final_knn_accuracy is not None
    folder = small_cifar.parent / "runs" / "smoke" / "one"
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert "distributed" not in config and config["schedule"]["batch_size"] == 16
    assert config["data"]["images"] == [80, 3, 32, 32]
    # the same command returns the finished run
    assert main([*ARGUMENTS, "--data-root", str(small_cifar), "--run-name", "one"]).epochs \
        == history.epochs


@pytest.mark.parametrize("option, says", [
    ("temperature", "KEY=JSON_VALUE"), ("=3", "KEY=JSON_VALUE"), ("t=0.2.", "KEY=JSON_VALUE")])
def test_a_malformed_option_is_refused(option, says):
    with pytest.raises(ValueError, match=says):
        parse_options([option])
    assert parse_options(["queue_size=8192", "symmetric=true"]) == {"queue_size": 8192,
                                                                    "symmetric": True}


def test_a_bad_setting_is_one_message_and_exit_status_2(small_cifar, capsys):
    with pytest.raises(SystemExit) as stopped:
        main([*ARGUMENTS, "--data-root", str(small_cifar), "--batch-size", "1000"])
    assert stopped.value.code == 2
    assert "batch_size must be at most the number of images (80), got 1000" \
        in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_with_two_processes_trains_one_run_that_one_process_does_not_continue(
        small_cifar, capsys):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "clcourse.run", *ARGUMENTS, "--data-root", str(small_cifar),
               "--run-name", "two"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("clcourse.run: SimCLR on cifar10") == 1     # process 0 speaks
    assert "batch: 16 images (global), 2 processes (gloo), 8 images of each batch per process" \
        in done.stdout
    assert "peak 0.12 x 16 / 256 = 0.0075" in done.stdout
    assert "done: epoch 2 of 2" in done.stdout

    folder = small_cifar.parent / "runs" / "smoke" / "two"
    checkpoint = torch.load(folder / CHECKPOINT_NAME, weights_only=False)
    assert checkpoint["epoch"] == 2
    assert checkpoint["config"]["distributed"] == {"processes": 2, "sync_batchnorm": False}
    assert checkpoint["config"]["data"]["images"] == [80, 3, 32, 32]       # the whole set
    # each process: 40 images, 5 steps of 8 per epoch; one record per 5 steps, losses finite
    assert [r["step"] for r in checkpoint["history"]["steps"]] == [5, 10]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in checkpoint["history"]["steps"])
    assert len(checkpoint["rng_by_process"]) == 2
    assert not torch.equal(checkpoint["rng_by_process"][0]["augment"],
                           checkpoint["rng_by_process"][1]["augment"])
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_NAME, "epoch_0001.pt",
                                                        "epoch_0002.pt", CHECKPOINT_NAME]

    with pytest.raises(SystemExit):
        main([*ARGUMENTS, "--data-root", str(small_cifar), "--run-name", "two"])
    assert "distributed.processes: 2 (now: '(absent)')" in capsys.readouterr().err
