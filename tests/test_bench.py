"""The benchmark scripts keep working: each runs its --smoke configuration on the CPU.
(Speeds are reported by running the scripts on a GPU, never by these tests.)"""
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_throughput_smoke(capsys):
    results = load("throughput").main(["--smoke", "--skip-pil"])
    assert len(results) == 2 and all(v > 0 for v in results.values())
    assert "end to end / model step alone" in capsys.readouterr().out


@pytest.mark.parametrize("method, options", [("simclr", []), ("moco", ["--option", "queue_size=256"])])
def test_accuracy_smoke(method, options, capsys):
    history = load("accuracy").main(["--smoke", "--method", method, *options])
    assert [r["epoch"] for r in history.epochs] == [1, 2]
    assert 0 <= history.final_knn_accuracy <= 1
    assert "final kNN top-1" in capsys.readouterr().out
