"""SimCLR, DCL and HCL (clcourse/methods/simclr.py): each trains with its loss, a student's loss in
float32, the hyperparameters passed on; a batch of one image is refused before training."""
import pytest
import torch
from helpers import noisy_batch, short_run, tiny_method, tiny_simclr, train_briefly

from clcourse.losses import dcl, hcl, info_nce


@pytest.mark.parametrize("name, loss", [
    ("simclr", lambda m, z1, z2: info_nce(z1, z2, m.temperature)),
    ("dcl", lambda m, z1, z2: dcl(z1, z2, m.temperature, m.tau_plus)),
    ("hcl", lambda m, z1, z2: hcl(z1, z2, m.temperature, m.tau_plus, m.beta)),
])
def test_simclr_family_uses_its_loss(images, name, loss):
    options = {"dcl": dict(tau_plus=0.2), "hcl": dict(tau_plus=0.2, beta=2.0)}.get(name, {})
    method = tiny_method(name, **options)
    batch = noisy_batch(method, images, torch.arange(8))
    value = method.training_step(batch).loss
    with torch.no_grad():  # both views in one batch of 2B, as SimCLR's BN sees them
        z1, z2 = method.projector(method.backbone(torch.cat(batch.views))).chunk(2)
    assert torch.allclose(value, loss(method, z1, z2), atol=1e-6)
    if name != "simclr":
        assert not torch.allclose(value, info_nce(z1, z2, method.temperature), atol=1e-3)


def test_simclr_trains_with_the_loss_it_is_given_in_float32(images, monkeypatch):
    import clcourse.train
    seen = []

    def my_loss(z1, z2, temperature):
        seen.append((z1.dtype, torch.is_autocast_enabled("cpu"), temperature))
        return info_nce(z1, z2, temperature) * 2

    method = tiny_method("simclr", loss=my_loss, temperature=0.3)
    batch = noisy_batch(method, images, torch.arange(8))
    with torch.no_grad():
        z1, z2 = method.projector(method.backbone(torch.cat(batch.views))).chunk(2)
    assert torch.allclose(method.training_step(batch).loss, 2 * info_nce(z1, z2, 0.3), atol=1e-6)
    monkeypatch.setattr(clcourse.train, "autocast_dtype", lambda device: torch.bfloat16)
    train_briefly(method, images, epochs=1, batch_size=16)
    assert seen[-1] == (torch.float32, False, 0.3)      # no half precision inside the loss


@pytest.mark.parametrize("name, loss", [("dcl", dcl), ("hcl", hcl)])
def test_dcl_and_hcl_pass_their_hyperparameters_to_the_given_loss(images, name, loss):
    calls = []

    def my_loss(*args):
        calls.append(args[2:])
        return loss(*args)
    method = tiny_method(name, loss=my_loss, tau_plus=0.05,
                         **({"beta": 0.5} if name == "hcl" else {}))
    method.training_step(noisy_batch(method, images, torch.arange(8)))
    assert calls == [(0.5, 0.05, 0.5) if name == "hcl" else (0.5, 0.05)]


@pytest.mark.parametrize("option", ["loss"])
def test_a_loss_that_is_not_a_function_is_refused(option):
    with pytest.raises(ValueError, match=option):
        tiny_method("simclr", **{option: 0.5})


def test_simclr_with_a_batch_of_one_image_is_refused_before_training(images):
    method = tiny_simclr()
    steps = []
    step = method.training_step
    method.training_step = lambda batch: (steps.append(1), step(batch))[1]
    with pytest.raises(ValueError, match="batch_size must be at least 2 for SimCLR"):
        short_run(images, method, batch_size=1)
    assert not steps
    with pytest.raises(ValueError, match="info_nce needs at least 2 images"):
        info_nce(torch.randn(1, 8), torch.randn(1, 8))
