"""Edges of the losses that a wrong line would slip past (found by tools/mutate.py): MoCHi's pairs and
coefficients drawn as the paper says, the boundaries of its arguments, extra negatives normalised, the open
ends of HCL's ranges, and each default tied to its documented value."""
import math

import pytest
import torch

from clcourse.losses import dcl, hcl, info_nce, mochi_mix, moco_info_nce, sce, sce_in_batch, sce_target
from helpers import randn


Q, K, SMALL_QUEUE = randn(0, 3, 6), randn(1, 3, 6), randn(2, 5, 6)


def test_mochi_with_two_hardest_never_pairs_an_entry_with_itself():
    mix = mochi_mix(Q, SMALL_QUEUE, n_hardest=2, n_mix_negatives=40, n_mix_query=0,
                    generator=torch.Generator().manual_seed(0))
    assert (mix.pair_index[..., 0] != mix.pair_index[..., 1]).all()


def test_mochi_draws_every_ordered_pair_of_the_hardest_set():
    mix = mochi_mix(Q, SMALL_QUEUE, n_hardest=3, n_mix_negatives=200, n_mix_query=0,
                    generator=torch.Generator().manual_seed(0))
    for b in range(len(Q)):
        position = {int(j): p for p, j in enumerate(mix.hardest_index[b])}
        pairs = [(position[int(i)], position[int(j)]) for i, j in mix.pair_index[b]]
        counts = {pair: pairs.count(pair) for pair in set(pairs)}
        assert set(counts) == {(a, c) for a in range(3) for c in range(3) if a != c}
        assert min(counts.values()) > 200 / 6 / 2          # about evenly: 33 each expected


def test_mochi_coefficients_cover_their_whole_ranges():
    mix = mochi_mix(Q, SMALL_QUEUE, n_hardest=3, n_mix_negatives=100, n_mix_query=100,
                    generator=torch.Generator().manual_seed(0))
    assert 0 <= mix.alpha.min() < 0.05 and 0.95 < mix.alpha.max() <= 1           # alpha ~ U(0, 1)
    assert 0 <= mix.beta.min() < 0.03 and 0.47 < mix.beta.max() < 0.5            # beta ~ U(0, 0.5)


def test_mochi_n_hardest_may_be_the_whole_queue_or_all_the_mask_leaves():
    assert mochi_mix(Q, SMALL_QUEUE, n_hardest=5, n_mix_negatives=2, n_mix_query=2).hardest_index.shape == (3, 5)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[:, :2] = True                                                            # 3 entries left to each query
    mix = mochi_mix(Q, SMALL_QUEUE, n_hardest=3, n_mix_negatives=2, n_mix_query=2, queue_mask=mask)
    assert sorted(mix.hardest_index[0].tolist()) == [2, 3, 4]
    with pytest.raises(ValueError, match="n_hardest"):
        mochi_mix(Q, SMALL_QUEUE, n_hardest=4, n_mix_negatives=2, n_mix_query=2, queue_mask=mask)
    with pytest.raises(ValueError, match="n_hardest"):
        mochi_mix(Q, SMALL_QUEUE, n_hardest=6, n_mix_negatives=2, n_mix_query=2)


def test_moco_extra_negatives_are_normalised():
    extra = randn(3, 3, 4, 6)
    unit = extra / extra.norm(dim=2, keepdim=True)
    assert torch.allclose(moco_info_nce(Q, K, SMALL_QUEUE, extra_negatives=5 * extra),
                          moco_info_nce(Q, K, SMALL_QUEUE, extra_negatives=unit), atol=1e-6)


def test_moco_mask_check_counts_extra_negatives_as_negatives():
    everything = torch.ones(3, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="queue_mask"):
        moco_info_nce(Q, K, SMALL_QUEUE, queue_mask=everything)
    with pytest.raises(ValueError, match="queue_mask"):
        moco_info_nce(Q, K, SMALL_QUEUE, queue_mask=everything, extra_negatives=Q.new_zeros(3, 0, 6))
    loss = moco_info_nce(Q, K, SMALL_QUEUE, queue_mask=everything, extra_negatives=randn(3, 3, 2, 6))
    assert torch.isfinite(loss) and loss > 0


@pytest.mark.parametrize("loss", [dcl, hcl])
def test_tau_plus_one_divides_by_zero_and_is_refused(loss):
    with pytest.raises(ValueError, match=r"tau_plus must be in \[0.0, 1.0\), got 1.0"):
        loss(Q, K, tau_plus=1.0)
    assert torch.isfinite(loss(Q, K, tau_plus=0.999))
    assert torch.isfinite(loss(Q, K, tau_plus=0.0))


def test_hcl_beta_range_is_zero_to_infinity_open():
    with pytest.raises(ValueError, match=r"beta must be in \[0.0, inf\), got inf"):
        hcl(Q, K, beta=math.inf)
    assert torch.allclose(hcl(Q, K, beta=0.0), dcl(Q, K))
    with pytest.raises(ValueError, match="beta"):
        hcl(Q, K, beta=-1e-9)


@pytest.mark.parametrize("loss,documented,other", [
    (info_nce, dict(temperature=0.5), dict(temperature=0.2)),
    (dcl, dict(temperature=0.5, tau_plus=0.1), dict(temperature=0.2, tau_plus=0.2)),
    (hcl, dict(temperature=0.5, tau_plus=0.1, beta=1.0), dict(temperature=0.2, tau_plus=0.2, beta=2.0)),
    (sce_in_batch, dict(temperature=0.1, temperature_momentum=0.05, lam=0.5),
     dict(temperature=0.2, temperature_momentum=0.1, lam=0.25)),
])
def test_pair_loss_defaults_are_the_documented_values(loss, documented, other):
    assert torch.equal(loss(Q, K), loss(Q, K, **documented))
    for name, value in other.items():                       # each default matters on these inputs
        assert not torch.allclose(loss(Q, K, **documented), loss(Q, K, **{**documented, name: value}))


@pytest.mark.parametrize("loss,documented,other", [
    (moco_info_nce, dict(temperature=0.2), dict(temperature=0.1)),
    (sce, dict(temperature=0.1, temperature_momentum=0.05, lam=0.5),
     dict(temperature=0.2, temperature_momentum=0.1, lam=0.25)),
    (lambda q, k, queue, **kw: sce_target(k, queue, **kw), dict(temperature_momentum=0.05, lam=0.5),
     dict(temperature_momentum=0.1, lam=0.25)),
])
def test_queue_loss_defaults_are_the_documented_values(loss, documented, other):
    assert torch.equal(loss(Q, K, SMALL_QUEUE), loss(Q, K, SMALL_QUEUE, **documented))
    for name, value in other.items():
        assert not torch.allclose(loss(Q, K, SMALL_QUEUE, **documented), loss(Q, K, SMALL_QUEUE, **{**documented, name: value}))


def test_mochi_mixes_in_float32_whatever_the_input_precision():
    mix = mochi_mix(Q.bfloat16(), SMALL_QUEUE.bfloat16(), n_hardest=3, n_mix_negatives=2, n_mix_query=2,
                    generator=torch.Generator().manual_seed(0))
    reference = mochi_mix(Q.bfloat16().float(), SMALL_QUEUE.bfloat16().float(), n_hardest=3, n_mix_negatives=2,
                          n_mix_query=2, generator=torch.Generator().manual_seed(0))
    assert mix.negatives.dtype == torch.float32 and torch.equal(mix.negatives, reference.negatives)
