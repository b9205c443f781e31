"""A tiny training run that a test kills for real (tests/test_faults.py): run as a script, it trains until the
chosen moment, prints "ready" and waits for the SIGKILL; imported, it gives the same run to compare with.

    python -c "import sys, interrupted_run; interrupted_run.main(*sys.argv[1:])" FOLDER MOMENT THREADS

(imported, not run as __main__: the run's configuration names the augmentation by its module).

MOMENT: "mid-epoch" (the first step of epoch 3), "mid-write-last" (half of the epoch-2 last.pt written) or
"mid-write-snapshot" (half of epoch_0002.pt written, after the epoch-2 last.pt)."""
import io
import time

import torch

from clcourse.methods import SimCLR
from clcourse.models import Backbone, SmallCNN
from helpers import fit

OPTIONS = dict(epochs=3, batch_size=16, lr=0.1, warmup_epochs=1, progress=False, log_every=2)   # 3 steps an epoch
MOMENTS = ("mid-epoch", "mid-write-last", "mid-write-snapshot")


def noisy_views(images, generator=None):
    """A cheap augmentation that still draws from the generator, so resuming must restore it."""
    x = images.float() / 255
    return (x + 0.05 * torch.randn(x.shape, generator=generator)).clamp(0, 1)


def make_method(seed=0):
    torch.manual_seed(seed)
    return SimCLR(Backbone(SmallCNN(width=4)), projector_hidden=16, projector_out=8, augment=noisy_views)


def make_images():
    return torch.randint(0, 256, (48, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def wait_for_the_kill():
    print("ready", flush=True)
    time.sleep(120)
    raise SystemExit("not killed")


def main(folder: str, moment: str, threads: str) -> None:
    assert moment in MOMENTS, moment
    torch.set_num_threads(int(threads))     # the same as the test process, so the numbers are the same
    method = make_method()
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
                if moment == "mid-write-snapshot" or calls["n"] == 2:    # last.pt: the epoch-2 write
                    buffer = io.BytesIO()
                    real_save(obj, buffer)
                    with open(f, "wb") as handle:
                        handle.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
                    wait_for_the_kill()
            return real_save(obj, f, *args, **kwargs)
        torch.save = save_half_then_stop
    fit(method, make_images(), checkpoint_dir=folder, **OPTIONS)
    raise SystemExit("the run finished without reaching the moment to be killed")

