"""Shared test setup: a headless plotting backend, a numba cache in the repo, no grading caps, a
modest thread count, every test starting from the same random state whatever ran before it, and
tests marked `cuda` skipped on machines without a CUDA GPU. Shared fixtures: `images` (48 small
uint8 images), `small_images` (32 smaller ones), `trained_sce` (a tiny SCE trained on them),
`cifar_root` (a small CIFAR-10 folder in the official format), `torchattacks` (the oracle of the
attacks, when installed)."""
import os
import random
from pathlib import Path

# Both must be set before matplotlib or umap (numba) is imported anywhere.
os.environ["MPLBACKEND"] = "Agg"
os.environ.setdefault("NUMBA_CACHE_DIR",
                      str(Path(__file__).resolve().parent.parent / ".cache" / "numba"))

# The caps nbgrader's grading sets would shrink the training runs that the tests and the notebooks'
# recorded outputs assume; the tests that need a cap set it themselves.
for _cap in ("CLCOURSE_MAX_EPOCHS", "CLCOURSE_MAX_TRAIN_IMAGES"):
    os.environ.pop(_cap, None)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import fake_cifar10, fit, make_images, tiny_sce  # noqa: E402

import clcourse.data as data  # noqa: E402

# The tests use small tensors, for which extra threads cost more in start-up than they save; on the
# 2-core CI machine this also leaves torch at most the cores it has.
# OMP_NUM_THREADS, when set, decides.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(min(torch.get_num_threads(), 4))


@pytest.fixture(autouse=True)
def _seed_everything():
    """Seed Python, NumPy and torch before each test, so a test's numbers
    do not depend on test order."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    """Skip the tests marked `@pytest.mark.cuda` when there is no CUDA GPU."""
    if torch.cuda.is_available():
        return
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(no_gpu)


@pytest.fixture(scope="module")
def images():
    return make_images()


@pytest.fixture(scope="module")
def small_images():
    """32 random uint8 images of 8 x 8."""
    return torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def trained_sce(images):
    """A tiny SCE (queue of 24) trained for 2 epochs on `images`."""
    method = tiny_sce(queue_size=24)
    fit(method, images, epochs=2, batch_size=8, lr=0.1, progress=False)
    return method


@pytest.fixture
def cifar_root(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_CACHE", {})
    fake_cifar10(tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture
def torchattacks():
    return pytest.importorskip(
        "torchattacks", reason="torchattacks (the test oracle for clcourse.attacks) is not "
                               "installed; `make venv` installs it with pip install --no-deps "
                               "'torchattacks>=3.5'")
