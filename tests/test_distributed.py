"""Training in several processes (clcourse/distributed.py and the training loop under it), for real:
two processes that the tests start, meeting through gloo on the CPU (tests/distributed_worker.py).

- one optimisation step in two processes gives the loss and the weights of one step of one process
  on the whole global batch, with the same views: SimCLR, DCL, HCL, SupCon, multi-view SimCLR, CACR,
  CLAE and adversarial SimCLR (gathered embeddings), the supervised baseline (a mean over the local
  batch), MoCo (real shuffle BN across the processes, one queue);
- MoCo's queue is the same in both processes, and the one-process queue;
- a two-process run killed mid-epoch resumes to the weights and losses of an uninterrupted one;
  its kNN monitor, over the gathered feature bank, gives what one process computes;
- a process that dies or hangs stops the other within the collective timeout, saying so;
- in one process, every distributed helper returns its input (nothing changes, nothing is paid), and
  SyncBatchNorm (for GPUs) replaces plain batch-norm only, with the same state and numbers.
"""
import copy
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from distributed_worker import (
    STEP_METHODS,
    TIMEOUT_S,
    rows_of,
    step_batch,
    step_method,
    take_step,
    tiny_moco,
)
from helpers import make_images, some_labels, step_losses, tiny_method
from repository import REPO

import clcourse
import clcourse.distributed as distributed
from clcourse.train import KnnData, evaluate_knn

PROCESSES = 2


def start(scenario, tmp_path, moment="none"):
    """The processes of `scenario`, writing into `tmp_path`."""
    port_file = tmp_path / "store-port"
    port_file.unlink(missing_ok=True)
    # The processes import the clcourse these tests import (the checkout's, or a copy under test).
    package_root = Path(clcourse.__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package_root), str(REPO / "tests")]),
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c",
               "import sys, distributed_worker; distributed_worker.main(*sys.argv[1:])", scenario]
    return [subprocess.Popen([*command, str(rank), str(PROCESSES), str(port_file), str(tmp_path),
                              moment], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            for rank in range(PROCESSES)]


def finish(processes, timeout=120):
    """Wait for every process; their (return code, stderr)."""
    results = []
    for process in processes:
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
        results.append((process.returncode, stderr.decode()))
    return results


def run(scenario, tmp_path):
    for code, stderr in finish(start(scenario, tmp_path)):
        assert code == 0, stderr[-3000:]


def assert_close_states(state, expected, atol=1e-5):
    assert state.keys() == expected.keys()
    for name, value in state.items():
        assert torch.allclose(value.double(), expected[name].double(), rtol=0, atol=atol), name


# ---------------------------------------------------------------- one step in two processes

@pytest.fixture(scope="module")
def two_process_steps(tmp_path_factory):
    """Each of STEP_METHODS, one step in two processes: {(name, rank): {"loss", "state"}}."""
    folder = tmp_path_factory.mktemp("steps")
    run("steps", folder)
    return {(name, rank): torch.load(folder / f"{name}_{rank}.pt")
            for name in STEP_METHODS for rank in range(PROCESSES)}


@pytest.mark.parametrize("name", STEP_METHODS)
def test_a_step_in_two_processes_is_one_step_of_one_process_on_the_global_batch(
        name, two_process_steps):
    method = step_method(name, bn_splits=2 * PROCESSES)   # MoCo: the splits of both processes
    loss = take_step(method, step_batch(method), method.training_step)
    results = [two_process_steps[name, rank] for rank in range(PROCESSES)]
    if name in ("moco", "supervised"):
        # each process's loss is the mean over its own images; their mean is the global one
        assert torch.stack([r["loss"] for r in results]).mean() == pytest.approx(loss.item(),
                                                                                  abs=1e-5)
    else:
        # the gathered loss is the global batch's, in every process
        for result in results:
            assert result["loss"].item() == pytest.approx(loss.item(), abs=1e-5)
    for result in results:
        assert_close_states(result["state"], method.state_dict())


def test_the_comparison_tells_a_local_loss_from_the_global_one(two_process_steps):
    """One process's loss on its own rows only is another number: the step test can fail."""
    method = step_method("simclr")
    local = rows_of(step_batch(method), 0, PROCESSES)
    with torch.no_grad():
        alone = method.contrastive_loss(method.encode_views(local.views)).item()
    assert abs(alone - two_process_steps["simclr", 0]["loss"].item()) > 1e-2


def test_moco_keeps_one_queue_the_same_in_every_process_and_as_one_process(two_process_steps):
    states = [two_process_steps["moco", rank]["state"] for rank in range(PROCESSES)]
    for key in ("queue", "queue_index", "queue_pointer"):
        assert torch.equal(states[0][key], states[1][key]), key
    method = step_method("moco", bn_splits=2 * PROCESSES)
    batch = step_batch(method)
    take_step(method, batch, method.training_step)
    assert torch.equal(states[0]["queue_index"], method.queue_index)
    assert states[0]["queue_index"][:len(batch.index)].tolist() == batch.index.tolist()
    assert torch.allclose(states[0]["queue"], method.queue, rtol=0, atol=1e-5)
    assert int(states[0]["queue_pointer"]) == len(batch.index)


# ---------------------------------------------------------------- a run killed and resumed

def kill_when_ready(processes):
    """Wait until every process prints "ready", then SIGKILL them all."""
    try:
        for process in processes:
            ready, _, _ = select.select([process.stdout], [], [], 120)
            line = process.stdout.readline() if ready else b""
            assert line.strip() == b"ready", process.stderr.read1().decode() if line else "silent"
    finally:
        for process in processes:
            os.kill(process.pid, signal.SIGKILL)
        finish(processes)


@pytest.mark.slow
def test_a_two_process_run_killed_mid_epoch_resumes_to_the_same_weights(tmp_path):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    reference.mkdir(), interrupted.mkdir()
    run("train", reference)
    kill_when_ready(start("train", interrupted, moment="mid-epoch"))
    checkpoint = torch.load(interrupted / "run" / "last.pt", weights_only=False)
    assert checkpoint["epoch"] == 2
    assert checkpoint["config"]["distributed"] == {"processes": 2, "sync_batchnorm": False}
    assert len(checkpoint["rng_by_process"]) == 2
    run("train", interrupted)

    expected = torch.load(reference / "result.pt", weights_only=False)
    resumed = torch.load(interrupted / "result.pt", weights_only=False)
    assert step_losses(resumed["history"]) == step_losses(expected["history"])
    for name, value in resumed["state"].items():
        assert torch.equal(value, expected["state"][name]), name

    # The kNN monitor of the two processes, over their gathered feature bank, is one process's.
    method = tiny_moco()
    method.load_state_dict(expected["state"])
    images = make_images()
    accuracy = evaluate_knn(method, KnnData(images, some_labels(48), images[:12], some_labels(12)),
                            k=4, temperature=0.1)
    assert expected["history"].final_knn_accuracy == pytest.approx(accuracy, abs=1e-9)


# ---------------------------------------------------------------- a process that dies or hangs

# A process that dies is the representative case; one that hangs waits out the collective timeout
# too (make test-heavy).
@pytest.mark.parametrize("scenario", ["dies", pytest.param("hangs", marks=pytest.mark.heavy)])
def test_a_process_that_dies_or_hangs_stops_the_other_with_a_clear_message(scenario, tmp_path):
    first, second = start(scenario, tmp_path)
    began = time.monotonic()
    (code, stderr), = finish([first], timeout=60)
    took = time.monotonic() - began
    second.kill()
    finish([second])
    assert code == 3, stderr[-3000:]
    assert "ProcessFailure: process 0 of 2 stopped in epoch 1: a collective operation with the " \
           "other processes failed" in stderr
    assert "Another process has died or hangs" in stderr
    assert took < 40 + (TIMEOUT_S if scenario == "hangs" else 0)


# ---------------------------------------------------------------- one process: nothing changes

def test_in_one_process_every_helper_returns_its_input_and_draws_nothing():
    x = torch.randn(4, 3, requires_grad=True)
    state = torch.get_rng_state()
    assert distributed.world() == (0, 1) and not distributed.is_distributed()
    for helper in (distributed.gather, distributed.gather_with_grad,
                   distributed.mean_over_processes, distributed.sum_over_processes,
                   distributed.max_over_processes):
        assert helper(x) is x
    assert distributed.gather_chunks(x, 4) is x and distributed.chunk(10) == slice(0, 10)
    assert distributed.shard(10, seed=0) is None
    assert distributed.gather_objects("a") == ["a"]
    assert distributed.from_first_process(lambda: 5) == 5
    assert distributed.process_seed(7, 0) == 7 and distributed.process_seed(7, 1) != 7
    assert torch.equal(torch.get_rng_state(), state)


def test_sync_batchnorm_replaces_plain_batchnorm_only_and_keeps_its_state_and_numbers():
    simclr, moco = tiny_method("simclr"), tiny_method("moco", bn_splits=2)
    images = make_images()[:8].float() / 255
    for method in (simclr, moco):
        before = {mode: method.train(mode).encode(images).detach() for mode in (True, False)}
        state = copy.deepcopy(method.state_dict())
        distributed.use_sync_batchnorm(method)
        # in one process SyncBatchNorm normalises as BatchNorm does, in training and in evaluation
        for mode in (True, False):
            method.load_state_dict(state)
            assert torch.allclose(method.train(mode).encode(images), before[mode], atol=1e-6)
        assert method.state_dict().keys() == state.keys()
    def kinds(method):
        return sorted({type(m).__name__ for m in method.modules()
                       if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)})

    assert kinds(simclr) == ["SyncBatchNorm"]
    assert kinds(moco) == ["SplitBatchNorm2d"]       # MoCo's shuffle BN stays split
