"""bench/cka.py runs its --smoke configuration on the CPU."""
import torch
from repository import load_bench


def test_cka_smoke(capsys):
    result = load_bench("cka").main(["--smoke"])
    assert result["images"] == 32 and result["seconds"] > 0 and result["meets_target"] is None
    pairs = result["results"]
    # 4 representations: every pair, each with itself
    assert len(pairs) == 10
    for (a, b), cka in pairs.items():
        assert cka.matrix.shape == (4, 4) and cka.num_batches == 2
        if a == b:
            assert torch.allclose(cka.matrix.diagonal(), torch.ones(4, dtype=torch.float64))
    out = capsys.readouterr().out
    assert "10 pairs of representations x 4 x 4 layers, 2 minibatches" in out
    assert "CKA of network A's clean and PGD-1 layers" in out
