"""Edges of the evaluation that a wrong line would slip past (found by tools/mutate.py): the probe's
standardisation where it decides the result, its cosine schedule's length, autocast in feature extraction,
the minimum of each argument and the documented defaults."""
import inspect
import math

import pytest
import torch
import torch.nn as nn

import clcourse.evaluate as evaluate
from clcourse.evaluate import alignment, extract_features, knn_accuracy, knn_predict, linear_probe, uniformity


def signal_beside_noise(seed, n=200):
    """Two classes told apart only by the last dimension (1e-3 +- 1e-4); the 4 others are noise of spread 100
    around 50. Standardised, (x - mean) / std, the signal is at the scale of the noise; scaled by std instead,
    its gradient falls below Adam's epsilon and the probe cannot learn it."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    noise = 50 + 100 * torch.randn(n, 4, generator=g)
    signal = 1e-3 + 1e-4 * (2 * labels - 1 + 0.2 * torch.randn(n, generator=g))
    return torch.cat([noise, signal[:, None]], dim=1), labels


def test_probe_finds_a_low_variance_signal_beside_high_variance_noise():
    train_x, train_y = signal_beside_noise(0)
    test_x, test_y = signal_beside_noise(1)
    result = linear_probe(train_x, train_y, test_x, test_y, epochs=10, batch_size=32)
    assert result.train_accuracy > 0.97 and result.test_accuracy > 0.97


def test_probe_lr_follows_one_cosine_over_all_steps(monkeypatch):
    used = []
    step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    train_x, train_y = signal_beside_noise(0, n=10)
    linear_probe(train_x, train_y, train_x, train_y, epochs=3, lr=0.1, batch_size=4)    # 3 x ceil(10 / 4) = 9 steps
    expected = [0.05 * (1 + math.cos(math.pi * t / 9)) for t in range(9)]
    assert used == pytest.approx(expected)


def test_probe_argument_minimums_are_accepted_and_infinite_weight_decay_is_not():
    x, y = signal_beside_noise(0, n=6)
    result = linear_probe(x, y, x, y, epochs=1, batch_size=1, weight_decay=0.0, seed=0)
    assert 0 <= result.test_accuracy <= 1
    with pytest.raises(ValueError, match=r"weight_decay must be in \[0.0, inf\), got inf"):
        linear_probe(x, y, x, y, weight_decay=math.inf)


class Recorder(nn.Module):
    """A backbone that records the dtype its layer computes in (autocast's choice) and the batch sizes."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3 * 2 * 2, 4)
        self.dtypes, self.sizes = [], []

    def forward(self, x):
        out = self.layer(x.flatten(1))
        self.dtypes.append(out.dtype)
        self.sizes.append(len(x))
        return out


@pytest.mark.parametrize("amp_dtype", [None, torch.bfloat16])
def test_extract_features_autocasts_exactly_when_the_device_has_an_autocast_type(monkeypatch, amp_dtype):
    monkeypatch.setattr(evaluate, "autocast_dtype", lambda device: amp_dtype)      # a GPU's answer, on the CPU
    backbone = Recorder()
    images = torch.randint(0, 256, (5, 3, 2, 2), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    features = extract_features(backbone, images, batch_size=1)
    assert backbone.dtypes == [amp_dtype or torch.float32] * 5 and backbone.sizes == [1] * 5
    assert features.dtype == torch.float32 and features.shape == (5, 4)


def test_documented_defaults():
    def defaults(function):
        return {name: p.default for name, p in inspect.signature(function).parameters.items()
                if p.default is not inspect.Parameter.empty}

    assert defaults(extract_features) == dict(batch_size=1024)
    assert defaults(knn_predict) == defaults(knn_accuracy) == dict(k=200, temperature=0.1, chunk_size=1024)
    assert defaults(linear_probe) == dict(epochs=100, lr=3e-2, weight_decay=1e-5, batch_size=1024, seed=0)
    assert defaults(alignment) == dict(alpha=2) and defaults(uniformity) == dict(t=2, chunk_size=1024)
