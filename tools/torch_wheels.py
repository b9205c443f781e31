#!/usr/bin/env python3
"""Which PyTorch wheels `make venv` installs: prints pip's index arguments for torch and torchvision
(nothing for pip's own index) and says on stderr which build it chose and why.

    python3 tools/torch_wheels.py  # as `make lab`, `make test` and `make test-oldest` call it

On Linux, `pip install torch` fetches the CUDA build (several GB of NVIDIA libraries). On a
Linux machine without an NVIDIA GPU the CPU-only wheels (about 200 MB) do the same work, so they
are chosen there, from CPU_INDEX, when that index answers; when it does not (a machine without
internet, whose pip has its own wheels or mirror), torch comes from pip's configured index, as
it would without this script. macOS and Windows wheels have no CUDA to leave out. The
environment decides first:

    TORCH_INDEX_URL=URL      that index (--index-url URL), whatever the machine
    TORCH_WHEELS=cpu         the CPU-only wheels, without asking whether their index answers
    TORCH_WHEELS=default     pip's configured index (PyPI's CUDA build on Linux)
    TORCH_WHEELS=auto        the choice above (the default)

Standard library only: it runs with the Python that makes the virtual environment.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CHOICES = ("auto", "cpu", "default")


def has_nvidia_gpu() -> bool:
    """Whether this machine has an NVIDIA GPU with its driver: the driver lists its GPUs in /proc,
    or nvidia-smi does."""
    gpus = Path("/proc/driver/nvidia/gpus")
    if gpus.is_dir() and any(gpus.iterdir()):
        return True
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return listed.returncode == 0 and "GPU" in listed.stdout


def index_answers(url: str, timeout: float = 10.0) -> bool:
    """Whether pip could read the package index at `url` (its torch page answers)."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/torch/", timeout=timeout) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def choose(environ: dict[str, str], system: str) -> tuple[list[str], str]:
    """(pip's index arguments for torch, the sentence that says what was chosen and why)."""
    url = environ.get("TORCH_INDEX_URL", "").strip()
    wheels = environ.get("TORCH_WHEELS", "").strip() or "auto"
    if wheels not in CHOICES:
        raise ValueError(f"TORCH_WHEELS must be one of {', '.join(CHOICES)}, got {wheels!r}")
    if url:
        return ["--index-url", url], f"torch from TORCH_INDEX_URL={url}"
    if wheels == "cpu":
        return ["--index-url", CPU_INDEX], ("torch: the CPU-only wheels "
                                            f"(TORCH_WHEELS=cpu), from {CPU_INDEX}")
    if wheels == "default":
        return [], "torch from pip's configured index (TORCH_WHEELS=default)"
    if system != "Linux":
        return [], (f"torch from pip's configured index: on {system} its wheels have no CUDA "
                    "libraries to leave out")
    if has_nvidia_gpu():
        return [], ("torch from pip's configured index, the build with CUDA: an NVIDIA GPU is here "
                    "(TORCH_WHEELS=cpu for the small CPU-only wheels)")
    if index_answers(CPU_INDEX):
        return ["--index-url", CPU_INDEX], ("torch: the CPU-only wheels "
                                            "(no NVIDIA GPU here), about 200 MB instead of "
                                            f"several GB, from {CPU_INDEX} "
                                            "(TORCH_WHEELS=default for PyPI's CUDA build)")
    return [], (f"torch from pip's configured index: no NVIDIA GPU here, but {CPU_INDEX} does not "
                "answer (offline?), so on PyPI this is the build with CUDA, several GB "
                "(TORCH_INDEX_URL=... names another index)")


def main() -> int:
    try:
        arguments, reason = choose(dict(os.environ), platform.system())
    except ValueError as error:
        print(f"tools/torch_wheels.py: {error}", file=sys.stderr)
        return 2
    print(reason, file=sys.stderr)
    print(" ".join(arguments))
    return 0


if __name__ == "__main__":
    sys.exit(main())
