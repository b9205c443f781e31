"""Multi-view SimCLR and CACR: M + 1 views made in one call and encoded in one batch, the loss they
train with (a student's included), their settings and the shared loop (eager, compiled and bf16
paths)."""
import functools

import pytest
import torch
import torch.nn as nn
from helpers import fit, function_names, noisy_views, tiny_method

from clcourse.losses import cacr, multiview_info_nce
from clcourse.methods import CACR, Batch, MultiViewSimCLR, SimCLR


def batch_of(method, images, size=8):
    index = torch.arange(size)
    views = method.make_views(images[index], torch.Generator().manual_seed(1))
    return Batch(views, images[index], None, index)


def run(method, images, **kwargs):
    options = dict(epochs=1, batch_size=16, lr=0.1, warmup_epochs=0, progress=False, log_every=1)
    return fit(method, images, **{**options, **kwargs})


def projected(method, views):
    """The embeddings of all views computed as one batch, without gradient."""
    with torch.no_grad():
        return method.projector(method.backbone(torch.cat(views))).chunk(len(views))


@pytest.mark.parametrize("name", ["simclr_multiview", "cacr"])
def test_views_are_made_in_one_call_and_encoded_in_one_batch(images, name):
    calls = []

    def recipe(batch_images, generator=None):
        calls.append(len(batch_images))
        return noisy_views(batch_images, generator)

    method = tiny_method(name, num_views=4, augment=recipe)
    assert method.view_recipes == (recipe,) * 4
    batch = batch_of(method, images, size=6)
    assert calls == [24] and len(batch.views) == 4
    forwards = []
    method.backbone.register_forward_hook(
        lambda module, inputs, output: forwards.append(inputs[0].shape[0]))
    method.training_step(batch)
    assert forwards == [24]                        # one forward of (M + 1) B images


def test_cacr_trains_with_cacr_and_its_variant(images):
    for options in ({}, dict(tau_pos=2.0, tau_neg=0.5, alpha=0.5, beta=2.0),
                    dict(weights="repulsion_only", detach_weights=True)):
        method = tiny_method("cacr", **options)
        batch = batch_of(method, images)
        output = method.training_step(batch)
        settings = {"tau_pos": 1.0, "tau_neg": 0.9, "alpha": 1.0, "beta": 1.0, **options}
        assert torch.allclose(output.loss, cacr(projected(method, batch.views), **settings),
                              atol=1e-6)
        assert output.loss.requires_grad and set(output.logs) == {"positive_similarity"}
    unweighted = tiny_method("cacr", weights="none")
    batch = batch_of(unweighted, images)
    assert not torch.allclose(unweighted.training_step(batch).loss,
                              cacr(projected(unweighted, batch.views)), atol=1e-4)


def test_positive_similarity_is_the_mean_cosine_of_two_views_of_an_image(images):
    method = tiny_method("cacr", num_views=3)
    batch = batch_of(method, images)
    z = [nn.functional.normalize(e, dim=1) for e in projected(method, batch.views)]
    pairs = [(z[a] * z[b]).sum(dim=1).mean() for a in range(3) for b in range(3) if a != b]
    assert torch.allclose(method.training_step(batch).logs["positive_similarity"],
                          torch.stack(pairs).mean(), atol=1e-6)


def test_multiview_simclr_trains_with_multiview_info_nce_and_with_two_views_is_simclr(images):
    method = tiny_method("simclr_multiview", temperature=0.3)
    batch = batch_of(method, images)
    assert torch.allclose(method.training_step(batch).loss,
                          multiview_info_nce(projected(method, batch.views), 0.3), atol=1e-6)
    two_views, simclr = tiny_method("simclr_multiview", num_views=2), tiny_method("simclr")
    assert isinstance(simclr, SimCLR) and not isinstance(simclr, MultiViewSimCLR)
    simclr.load_state_dict(two_views.state_dict())
    batch = batch_of(simclr, images)
    assert torch.allclose(two_views.training_step(batch).loss, simclr.training_step(batch).loss,
                          atol=1e-6)


def test_a_students_loss_is_what_trains_in_float32(images, monkeypatch):
    import clcourse.train
    seen = []

    def my_cacr(views, tau_pos, tau_neg, alpha, beta):
        seen.append(([z.dtype for z in views], torch.is_autocast_enabled("cpu"),
                     (tau_pos, tau_neg, alpha, beta)))
        return 2 * cacr(views, tau_pos, tau_neg, alpha, beta)

    method = tiny_method("cacr", loss=my_cacr, tau_neg=2.0)
    batch = batch_of(method, images)
    assert torch.allclose(method.training_step(batch).loss,
                          2 * cacr(projected(method, batch.views), tau_neg=2.0), atol=1e-6)
    assert function_names(method.config())["loss"].endswith("<locals>.my_cacr")
    monkeypatch.setattr(clcourse.train, "autocast_dtype", lambda device: torch.bfloat16)
    run(method, images)
    assert seen[-1] == ([torch.float32] * 5, False, (1.0, 2.0, 1.0, 1.0))

    def my_info_nce(views, temperature):
        seen.append(len(views))
        return multiview_info_nce(views, temperature)

    run(tiny_method("simclr_multiview", loss=my_info_nce, num_views=3), images)
    assert seen[-1] == 3


def test_config_records_the_settings_and_the_default_loss():
    config = tiny_method("cacr", num_views=3, tau_neg=2.0, weights="attraction_only").config()
    assert config["name"] == "CACR" and config["num_views"] == 3 and config["tau_neg"] == 2.0
    assert config["weights"] == "attraction_only" and config["detach_weights"] is False
    assert config["views"] == ["helpers.noisy_views"] * 3
    assert function_names(config) == {"loss": "clcourse.methods.cacr.CACR.default_loss"}
    multiview = tiny_method("simclr_multiview").config()
    assert (multiview["num_views"] == 5
            and function_names(multiview) == {"loss": "clcourse.losses.multiview_info_nce"})
    assert CACR.lr == 0.12


@pytest.mark.parametrize("name, options, message", [
    ("cacr", dict(num_views=1), r"num_views must be an integer >= 2, got 1"),
    ("simclr_multiview", dict(num_views=1), r"num_views must be an integer >= 2, got 1"),
    ("cacr", dict(num_views=2.5), r"num_views must be an integer >= 2, got 2.5"),
    ("cacr", dict(tau_pos=-1.0), r"tau_pos must be in \[0.0, inf\), got -1.0"),
    ("cacr", dict(tau_neg=-0.1), r"tau_neg must be in \[0.0, inf\), got -0.1"),
    ("cacr", dict(alpha=0.0), r"alpha must be a finite number > 0, got 0.0"),
    ("cacr", dict(beta=-2), r"beta must be a finite number > 0, got -2"),
    ("cacr", dict(weights="without_w1"),
     r"weights must be one of 'both', 'none', .* got 'without_w1'"),
    ("cacr", dict(loss="cacr"), r"loss must be a function"),
    ("cacr", dict(loss=cacr, weights="none"),
     r"a loss given as loss= decides its own weights.*weights='none'"),
    ("cacr", dict(loss=cacr, detach_weights=True), r"detach_weights=True"),
])
def test_bad_settings_name_the_argument_the_value_and_what_is_allowed(name, options, message):
    with pytest.raises(ValueError, match=message):
        tiny_method(name, **options)


@pytest.mark.parametrize("name", ["simclr_multiview", "cacr"])
def test_compiled_step_gives_the_eager_numbers(images, name, monkeypatch):
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    losses = []
    for compile in (False, True):
        method = tiny_method(name, num_views=3)
        losses.append([r["loss"] for r in run(method, images, epochs=2, compile=compile).steps])
    assert losses[0] == losses[1]
