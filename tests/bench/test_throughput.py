"""bench/throughput.py runs its --smoke configuration on the CPU (speeds are measured on a GPU,
never here)."""
from repository import load_bench


def test_throughput_smoke(capsys):
    results = load_bench("throughput").main(["--smoke", "--skip-pil"])
    assert len(results) == 2 and all(v > 0 for v in results.values())
    assert "end to end / model step alone" in capsys.readouterr().out
