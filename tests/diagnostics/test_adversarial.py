"""The adversarial views of notebook 05 (clcourse/diagnostics/adversarial.py): what CLAE's training
logs, measured without changing the method, and the same measurement of a SimCLR encoder."""
import copy

import pytest
import torch
from helpers import TinyBatchNormBackbone, batch_from_views, noisy_views, tiny_clae

from clcourse.methods import SimCLR, build_method
from clcourse.models import Backbone, SmallCNN


def test_adversarial_views_measures_what_training_logs_and_leaves_the_method_alone():
    from clcourse.diagnostics import adversarial_views
    method = tiny_clae().float()
    images = torch.randint(0, 256, (6, 3, 5, 5), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    state = copy.deepcopy(method.state_dict())
    report = adversarial_views(method, images, 0.05, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(value, method.state_dict()[key]) for key, value in state.items())
    logs = method.training_step(batch_from_views(method.make_views(
        images, torch.Generator().manual_seed(3)))).logs
    assert torch.allclose(report.loss_after, logs["adversarial_loss"], atol=1e-6)
    assert torch.allclose(report.attack_raise, logs["attack_raise"], atol=1e-6)
    assert torch.allclose(report.rank.mean(), logs["adversarial_negative_rank"])
    assert torch.allclose((report.z1 * report.z_adv).sum(1).mean(), logs["adversarial_similarity"],
                          atol=1e-6)
    assert (report.adversarial - report.view1).abs().max() <= 0.05 + 1e-6

    # anchor 0's negatives in the adversarial term: the other clean views
    # z1_m and adversarial views z_adv_m
    z1, z_adv = report.z1, report.z_adv
    logits = torch.cat([(z1[0] * z_adv[0]).sum()[None], z1[0] @ z1[1:].T,
                        z1[0] @ z_adv[1:].T]) / 0.5
    weights = torch.softmax(logits, 0)[1:]
    assert torch.allclose(report.adversarial_weight_share[0], weights[5:].sum() / weights.sum(),
                          atol=1e-6)


def test_adversarial_views_of_a_simclr_encoder_and_of_other_methods():
    from clcourse.diagnostics import adversarial_views
    torch.manual_seed(0)
    simclr = SimCLR(Backbone(TinyBatchNormBackbone()), projector_hidden=6, projector_out=5,
                    augment=noisy_views)
    images = torch.randint(0, 256, (5, 3, 5, 5), dtype=torch.uint8)
    report = adversarial_views(simclr, images, 0.03, steps=3)
    assert report.rank.shape == (5, 4) and report.attack_raise > 0
    with pytest.raises(ValueError, match="method must be CLAE or a SimCLR-family method"):
        adversarial_views(build_method("moco", Backbone(SmallCNN(width=4)), queue_size=8), images,
                          0.03)
