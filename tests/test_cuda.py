"""What only a GPU can show: the CUDA kernels and layouts the training loop uses there (bf16 autocast,
channels_last, cuDNN batch-norm) give the numbers the CPU tests check. Marked `cuda`: skipped without a
GPU, run by `pytest -m cuda` (bench/suite.py's phase 4)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from clcourse.evaluate import knn_accuracy
from clcourse.methods import MoCo, SimCLR
from clcourse.models import SplitBatchNorm2d, build_backbone
from clcourse.presets import autocast_dtype
from clcourse.train import KnnData
from helpers import fit

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def cifar_sized_images():
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8, generator=generator)


def test_split_batchnorm_in_bf16_channels_last_matches_each_group_in_float32():
    # The MoCo training path on a GPU: bf16 activations in channels_last through cuDNN's batch-norm, after
    # the reshape that copies a channels_last tensor.
    torch.manual_seed(0)
    splits, channels = 8, 16
    bn = SplitBatchNorm2d(channels, splits).cuda()
    nn.init.normal_(bn.weight)
    nn.init.normal_(bn.bias)
    x = (torch.randn(64, channels, 8, 8, device="cuda") * 3 + 1).to(torch.bfloat16)
    out = bn(x.contiguous(memory_format=torch.channels_last))
    assert out.shape == x.shape and out.dtype == torch.bfloat16
    for s in range(splits):
        expected = F.batch_norm(x[s::splits].float(), None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
        assert torch.allclose(out[s::splits].float(), expected, atol=0.05, rtol=0.02)
    group_means = torch.stack([x[s::splits].float().mean((0, 2, 3)) for s in range(splits)]).mean(0)
    assert torch.allclose(bn.running_mean, 0.1 * group_means, atol=1e-3)


@pytest.mark.parametrize("make_method", [SimCLR, MoCo], ids=["simclr", "moco"])
def test_training_loop_on_the_gpu(cifar_sized_images, make_method):
    torch.manual_seed(0)
    method = make_method(build_backbone("small_cnn"))
    labels = torch.arange(len(cifar_sized_images)) % 10
    knn = KnnData(cifar_sized_images[:192], labels[:192], cifar_sized_images[192:], labels[192:])
    history = fit(method, cifar_sized_images, epochs=2, batch_size=64, lr=0.1, knn_data=knn, knn_k=20, progress=False,
                    log_every=2, device="cuda")
    assert autocast_dtype(torch.device("cuda")) == (torch.bfloat16 if torch.cuda.get_device_capability()[0] >= 8
                                                    else torch.float16)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in history.steps)
    assert 0 <= history.final_knn_accuracy <= 1
    convolution = next(m for m in method.backbone.modules() if isinstance(m, nn.Conv2d))
    assert convolution.weight.is_cuda and convolution.weight.is_contiguous(memory_format=torch.channels_last)
    if isinstance(method, MoCo):   # 2 epochs x 4 steps x 64 keys enqueued, on the GPU, after the optimiser steps
        assert method.queue.is_cuda and int((method.queue_index >= 0).sum()) == 2 * 4 * 64


def test_knn_accuracy_on_the_gpu_matches_the_cpu():
    generator = torch.Generator().manual_seed(0)
    train_features = torch.randn(2000, 64, generator=generator)
    test_features = torch.randn(300, 64, generator=generator)
    train_labels = torch.randint(0, 10, (2000,), generator=generator)
    test_labels = torch.randint(0, 10, (300,), generator=generator)
    on_cpu = knn_accuracy(train_features, train_labels, test_features, test_labels, k=50)
    on_gpu = knn_accuracy(train_features.cuda(), train_labels.cuda(), test_features.cuda(), test_labels.cuda(), k=50)
    assert abs(on_gpu - on_cpu) <= 1 / 300   # a near-tie vote may fall the other way in another summation order
