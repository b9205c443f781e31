r"""A tiny training run that a test kills for real (tests/test_runs.py): run as a script, it trains
until the chosen moment, prints "ready" and waits for the SIGKILL; imported, it gives the same run
to compare with.

    python -c "import sys, interrupted_run; interrupted_run.main(*sys.argv[1:])" \
        FOLDER MOMENT THREADS

(imported, not run as __main__: the run's configuration names the augmentation by its module).

MOMENT: "mid-epoch" (the first step of epoch 3), "mid-write-last" (half of the epoch-2 last.pt
written) or "mid-write-snapshot" (half of epoch_0002.pt written, after the epoch-2 last.pt)."""
import io
import time

import torch
from helpers import make_images, short_run, tiny_simclr

MOMENTS = ("mid-epoch", "mid-write-last", "mid-write-snapshot")


def wait_for_the_kill():
    print("ready", flush=True)
    time.sleep(120)
    raise SystemExit("not killed")


def main(folder: str, moment: str, threads: str) -> None:
    assert moment in MOMENTS, moment
    # the same as the test process, so the numbers are the same
    torch.set_num_threads(int(threads))
    method = tiny_simclr()
    if moment == "mid-epoch":
        steps = {"n": 0}

        def stop_in_third_epoch(batch, output):
            steps["n"] += 1
            if steps["n"] == 7:
                wait_for_the_kill()
        method.on_step_end = stop_in_third_epoch
    else:
        target = "last.pt.tmp" if moment == "mid-write-last" else "epoch_0002.pt.tmp"
        calls = {"n": 0}
        real_save = torch.save

        def save_half_then_stop(obj, f, *args, **kwargs):
            if str(f).endswith(target):
                calls["n"] += 1
                # last.pt: the epoch-2 write
                if moment == "mid-write-snapshot" or calls["n"] == 2:
                    buffer = io.BytesIO()
                    real_save(obj, buffer)
                    with open(f, "wb") as handle:
                        handle.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
                    wait_for_the_kill()
            return real_save(obj, f, *args, **kwargs)
        torch.save = save_half_then_stop
    short_run(make_images(), method, checkpoint_dir=folder)
    raise SystemExit("the run finished without reaching the moment to be killed")

