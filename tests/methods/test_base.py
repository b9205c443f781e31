"""What every method shares (clcourse/methods/base.py and the registry): build_method, views made in
one call per recipe, embed, config, a StepOutput from each step, bad arguments named; every
registered method in the shared loop, compiled, under bf16 autocast, and without reading a value on
the host inside a step."""
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    function_names,
    noisy_batch,
    noisy_views,
    refuse_host_reads,
    short_run,
    tiny_method,
    train_briefly,
)

from clcourse.augment import simclr_cifar
from clcourse.methods import DCL, HCL, METHODS, MoCHi, MoCo, SimCLR, build_method
from clcourse.models import Backbone, SmallCNN

DIM = 8


def test_build_method_passes_options_and_rejects_unknown_names():
    assert (isinstance(tiny_method("hcl", beta=0.5), HCL)
            and tiny_method("hcl", beta=0.5).beta == 0.5)
    assert isinstance(tiny_method("dcl"), DCL) and isinstance(tiny_method("simclr"), SimCLR)
    assert isinstance(tiny_method("mochi"), MoCHi) and isinstance(tiny_method("moco"), MoCo)
    with pytest.raises(ValueError, match="method name"):
        build_method("byol", Backbone(SmallCNN(width=4)))


@pytest.mark.parametrize("name, options, argument", [
    ("moco", dict(momentum=-0.1), "momentum"),
    ("moco", dict(momentum=1.01), "momentum"),
    ("moco", dict(temperature=0.0), "temperature"),
    ("moco", dict(queue_size=0), "queue_size"),
    ("moco", dict(bn_splits=0), "bn_splits"),
    ("mochi", dict(queue_size=32, n_hardest=33), "n_hardest"),
    ("mochi", dict(n_hardest=0), "n_hardest"),
    ("mochi", dict(n_mix_negatives=-1), "n_mix_negatives"),
    ("mochi", dict(n_mix_query=-1), "n_mix_query"),
    ("mochi", dict(mixing_warmup_epochs=-1), "mixing_warmup_epochs"),
    ("dcl", dict(tau_plus=1.0), "tau_plus"),
    ("dcl", dict(tau_plus=-0.1), "tau_plus"),
    ("hcl", dict(tau_plus=1.0), "tau_plus"),
    ("hcl", dict(tau_plus=-0.01), "tau_plus"),
    ("hcl", dict(beta=-1.0), "beta"),
    ("hcl", dict(beta=float("inf")), "beta"),
])
def test_bad_arguments_name_the_argument_and_the_range(name, options, argument):
    with pytest.raises(ValueError, match=argument):
        tiny_method(name, **options)


# ---------------------------------------------------------------- views, embeddings, configuration

def test_views_sharing_a_recipe_are_made_in_one_call():
    calls = []

    def recipe(images, generator=None):
        calls.append(len(images))
        return noisy_views(images, generator)

    def other(images, generator=None):
        calls.append(-len(images))
        return images.float() / 255

    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    method = SimCLR(Backbone(SmallCNN(width=4)), projector_hidden=16, projector_out=DIM,
                    augment=recipe)
    method.view_recipes = (recipe, other, recipe, recipe)
    views = method.make_views(images, torch.Generator().manual_seed(0))
    # three views of one recipe in one call of 3 x 4 images
    assert calls == [12, -4]
    assert len(views) == 4 and all(v.shape == (4, 3, 8, 8) for v in views)
    assert torch.equal(views[1], images.float() / 255)
    for view in (views[0], views[2], views[3]):   # each a noisy copy of the same 4 images, in order
        assert (view - images.float() / 255).abs().max() < 0.3
    assert not torch.equal(views[0], views[2])    # independent draws


def test_a_method_needs_at_least_one_view_recipe():
    with pytest.raises(ValueError, match="view_recipes"):
        from clcourse.methods import Method
        Method(Backbone(SmallCNN(width=4)), ())


def test_embed_gives_unit_embeddings_or_backbone_features(images):
    from clcourse.evaluate import extract_features
    for name in ("simclr", "moco"):
        method = tiny_method(name)
        method.train()
        z = method.embed(images[:10])
        h = method.embed(images[:10], projected=False)
        with torch.no_grad():
            method.eval()
            x = images[:10].float() / 255
            assert torch.allclose(z, F.normalize(method.projector(method.backbone(x)), dim=1),
                                  atol=1e-6)
            assert torch.allclose(h, method.backbone(x), atol=1e-6)
            method.train()
        assert torch.allclose(z.norm(dim=1), torch.ones(10)) and method.training   # modes restored
        assert torch.equal(h, extract_features(method.backbone, images[:10]))


def test_config_holds_the_hyperparameters_and_stable_descriptions():
    config = tiny_method("mochi", n_hardest=3).config()
    assert config["name"] == "MoCHi" and config["n_hardest"] == 3 and config["queue_size"] == 32
    assert (config["temperature"] == 0.1 and config["bn_splits"] == 2
            and config["symmetric"] is False)
    assert config["views"] == ["helpers.noisy_views"] * 2
    assert function_names(config) == {"logits": "clcourse.losses.moco_logits",
                                   "momentum_update": "clcourse.methods.moco.update_key_encoder",
                                   "enqueue": "clcourse.methods.moco.ring_buffer_enqueue",
                                   "step": "clcourse.methods.moco.moco_step"}
    assert config["architecture"].startswith("Backbone(SmallCNN), ")
    from clcourse.augment import simclr_cifar
    described = SimCLR(Backbone(SmallCNN(width=4)), augment=simclr_cifar()).config()["views"][0]
    assert described == repr(simclr_cifar()) and "0x" not in described
    assert tiny_method("hcl", beta=2.0).config()["beta"] == 2.0 and \
        function_names(tiny_method("dcl").config())["loss"] == "clcourse.losses.dcl"


def test_every_method_returns_a_step_output(images):
    from clcourse.methods import StepOutput
    for name in sorted(METHODS):
        method = tiny_method(name)
        output = method.training_step(noisy_batch(method, images, torch.arange(8)))
        assert (isinstance(output, StepOutput) and output.loss.dim() == 0
                and output.loss.requires_grad)
        assert all(value.dim() == 0 for value in output.logs.values())


# ---------------------------------------------------------------- the training loop

@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_in_the_shared_loop(images, name):
    history = train_briefly(tiny_method(name), images, epochs=1, batch_size=16)
    assert len(history.epochs) == 1 and math.isfinite(history.epochs[0]["loss"])
    monitor = "train_accuracy" if name == "supervised" else "positive_similarity"
    assert all(math.isfinite(r["loss"]) and monitor in r for r in history.steps)


@pytest.mark.parametrize("name", ["simclr", "moco", "mochi"])
def test_compiled_step_gives_the_eager_numbers(images, name, monkeypatch):
    # aot_eager runs TorchDynamo's graph capture and AOTAutograd (where a side effect such as a
    # queue write or a pending key would be lost or replayed wrongly) without generating code, so it
    # is fast on a CPU and must reproduce eager exactly.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    runs = []
    for compile in (False, True):
        method = tiny_method(name)
        history = train_briefly(method, images, epochs=2, batch_size=16, compile=compile,
                                log_every=1)
        runs.append((method, [r["loss"] for r in history.steps]))
    (eager, eager_losses), (compiled, compiled_losses) = runs
    assert compiled_losses == eager_losses
    for (key, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        assert torch.equal(a, b), key


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_under_bf16_autocast(images, name, monkeypatch):
    # The GPU path (autocast_dtype gives bf16 on an A100/H100), run on the CPU, which autocasts to
    # bf16 too.
    import clcourse.train
    losses = {}
    for dtype in (None, torch.bfloat16):
        monkeypatch.setattr(clcourse.train, "autocast_dtype", lambda device, dtype=dtype: dtype)
        method = tiny_method(name)
        losses[dtype] = [r["loss"] for r in train_briefly(method, images, epochs=1, batch_size=16,
                                                          log_every=1).steps]
        if isinstance(method, MoCo):
            # keys from bf16 activations are stored in float32
            assert method.queue.dtype == torch.float32
    assert all(math.isfinite(loss) for loss in losses[torch.bfloat16])
    assert losses[torch.bfloat16] != losses[None]          # the bf16 path really ran...
    # ...and agrees with float32 at the first step
    assert abs(losses[torch.bfloat16][0] - losses[None][0]) < 0.02


# ---------------------------------------------------------------- no host reads inside a step

@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_training_step_reads_nothing_on_the_host(images, monkeypatch, name):
    """The checks above run where data enters, once; inside a step (views, loss, after-step update)
    no value is read on the host, which on a GPU would stall every step. Seen here as a Tensor that
    refuses to become a Python value while a step runs."""
    method = tiny_method(name, augment=simclr_cifar(16))
    in_step = {"now": False}
    refuse_host_reads(monkeypatch, in_step, "a training step")

    def inside_step(function):
        def wrapped(*args, **kwargs):
            in_step["now"] = True
            try:
                return function(*args, **kwargs)
            finally:
                in_step["now"] = False
        return wrapped
    method.make_views = inside_step(method.make_views)
    method.training_step = inside_step(method.training_step)
    method.on_step_end = inside_step(method.on_step_end)
    labels = torch.arange(len(images)) % 4 if method.requires_labels else None
    short_run(images, method, epochs=2, batch_size=8, log_every=100, labels=labels)
