"""CLAE (clcourse/methods/clae.py): its loss and gradient against a slow reference that builds the
perturbation pixel by pixel from finite differences; dual batch-norm inside the method (which branch
moves when); its logs; the student's functions plugged in; SimCLR, DCL and HCL as bases; bad
arguments. (Its adversarial views: tests/diagnostics/test_adversarial.py; rank among negatives:
tests/test_negatives.py.)"""
import copy
import itertools
import math
import warnings
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    batch_from_views,
    fit,
    function_names,
    noisy_views,
    short_run,
    tiny_clae,
    tiny_method,
    tiny_views,
)

from clcourse.attacks import contrastive_attack
from clcourse.losses import info_nce
from clcourse.methods import CLAE, SimCLR, build_method, clae_objective
from clcourse.models import (
    Backbone,
    DualBatchNorm,
    SmallCNN,
    adversarial_batchnorm,
    dual_batchnorm_layers,
)
from clcourse.negatives import rank_among_negatives

# ---------------------------------------------------------------- the slow reference

def loop_info_nce(z1, z2, temperature):
    """NT-Xent one anchor at a time."""
    u = F.normalize(torch.cat([z1, z2]), dim=1)
    n, batch = len(u), len(z1)
    losses = []
    for i in range(n):
        positive = torch.exp(u[i] @ u[(i + batch) % n] / temperature)
        everything_else = sum(torch.exp(u[i] @ u[k] / temperature) for k in range(n) if k != i)
        losses.append(-torch.log(positive / everything_else))
    return torch.stack(losses).mean()


def loop_dcl(z1, z2, temperature, tau_plus):
    """Debiased contrastive loss (Chuang et al. 2020) one anchor at a time."""
    u = F.normalize(torch.cat([z1, z2]), dim=1)
    n, batch = len(u), len(z1)
    losses = []
    for i in range(n):
        p = (i + batch) % n
        positive = torch.exp(u[i] @ u[p] / temperature)
        negatives = sum(torch.exp(u[i] @ u[k] / temperature) for k in range(n) if k not in (i, p))
        estimate = torch.clamp((negatives - tau_plus * (n - 2) * positive) / (1 - tau_plus),
                               min=(n - 2) * math.exp(-1 / temperature))
        losses.append(-torch.log(positive / (positive + estimate)))
    return torch.stack(losses).mean()


def reference_clae(method, view1, view2, base_loss, epsilon, alpha, step=1e-6):
    """CLAE's loss computed on a copy of `method`: delta from the sign of a central finite
    difference of the attack objective, one pixel at a time, then the two terms. Returns (loss, the
    copy, x_adv)."""
    model = copy.deepcopy(method)

    def embed(x, adversarial):
        route = (adversarial_batchnorm(model) if adversarial and model.dual_batchnorm
                 else nullcontext())
        with route:
            return model.projector(model.backbone(x))

    with torch.no_grad():
        anchors = embed(view1, adversarial=True)
        delta = torch.zeros_like(view1)
        smallest = math.inf
        for pixel in itertools.product(*(range(size) for size in view1.shape)):
            up, down = view1.clone(), view1.clone()
            up[pixel] += step
            down[pixel] -= step
            slope = (base_loss(anchors, embed(up, True))
                     - base_loss(anchors, embed(down, True))) / (2 * step)
            smallest = min(smallest, abs(slope.item()))
            delta[pixel] = epsilon * torch.sign(slope)
    assert smallest > 1e-7, (
        "a pixel's slope is too close to 0 for its sign to be reliable: choose another seed")
    x_adv = (view1 + delta).clamp(0, 1)
    z1, z2 = embed(torch.cat([view1, view2]), adversarial=False).chunk(2)
    loss = base_loss(z1, z2) + alpha * base_loss(z1, embed(x_adv, adversarial=True))
    return loss, model, x_adv


@pytest.mark.parametrize("base, options, base_loss", [
    ("simclr", dict(temperature=0.5), lambda a, b: loop_info_nce(a, b, 0.5)),
    ("simclr", dict(temperature=0.2, dual_batchnorm=False), lambda a, b: loop_info_nce(a, b, 0.2)),
    ("dcl", dict(temperature=0.5, tau_plus=0.1), lambda a, b: loop_dcl(a, b, 0.5, 0.1)),
])
def test_loss_and_gradient_match_a_reference_that_builds_delta_pixel_by_pixel(
        base, options, base_loss):
    method = tiny_clae(base=base, **options)
    view1, view2 = tiny_views()
    expected, reference_model, x_adv = reference_clae(method, view1, view2, base_loss, 0.05, 0.7)
    loss = method.training_step(batch_from_views((view1, view2))).loss   # the losses run in float32
    assert torch.allclose(loss.double(), expected, atol=1e-6), (loss, expected)
    # the attack moved the pixels, a few of them clipped
    assert (x_adv - view1).abs().max() > 0.04

    loss.backward()
    expected.backward()
    for (name, parameter), reference in zip(method.named_parameters(),
                                            reference_model.parameters()):
        assert (parameter.grad is not None
                and torch.allclose(parameter.grad, reference.grad, atol=1e-6)), name


def test_the_attack_and_adversarial_term_use_the_adversarial_branch_and_move_only_its_statistics():
    method = tiny_clae()
    method.train()
    view1, view2 = tiny_views(1)
    clean_only = copy.deepcopy(method)
    with torch.no_grad():
        # the one clean pass of the step
        clean_only.projector(clean_only.backbone(torch.cat([view1, view2])))
    output = method.training_step(batch_from_views((view1, view2)))
    layers, expected_layers = dual_batchnorm_layers(method), dual_batchnorm_layers(clean_only)
    for layer, expected in zip(layers, expected_layers):
        assert torch.equal(layer.clean.running_mean, expected.clean.running_mean)
        assert torch.equal(layer.clean.running_var, expected.clean.running_var)
        # the attack's pass and the adversarial term's
        assert layer.adversarial.num_batches_tracked == 2
        assert not torch.equal(layer.adversarial.running_mean, expected.adversarial.running_mean)
    # the attack left no gradient in any weight
    assert all(p.grad is None for p in method.parameters())
    output.loss.backward()
    assert all(layer.adversarial.weight.grad is not None and layer.clean.weight.grad is not None
               for layer in layers)


def test_evaluation_uses_the_clean_branch():
    method = tiny_clae().float()
    images = torch.randint(0, 256, (6, 3, 5, 5), dtype=torch.uint8)
    before, features = method.embed(images), method.embed(images, projected=False)
    with torch.no_grad():
        for layer in dual_batchnorm_layers(method):
            layer.adversarial.weight.fill_(3.0)
            layer.adversarial.running_mean.fill_(0.7)
    assert torch.equal(method.embed(images), before)
    assert torch.equal(method.embed(images, projected=False), features)
    assert not any(layer.route_adversarial for layer in dual_batchnorm_layers(method))


def test_shared_batchnorm_ablation_has_no_second_branch():
    method = tiny_clae(dual_batchnorm=False)
    assert not any(isinstance(m, DualBatchNorm) for m in method.modules())
    assert (method.config()["dual_batchnorm"] is False
            and method.config()["adversarial_momentum"] is None)
    assert len(method.state_dict()) < len(tiny_clae().state_dict())


def test_alpha_zero_trains_exactly_like_simclr():
    images = torch.randint(0, 256, (24, 3, 8, 8), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    options = dict(epochs=2, batch_size=8, lr=0.1, warmup_epochs=1, progress=False, log_every=1)
    torch.manual_seed(0)
    simclr = SimCLR(Backbone(SmallCNN(width=4)), projector_hidden=16, projector_out=8,
                    augment=noisy_views)
    torch.manual_seed(0)
    clae = CLAE(Backbone(SmallCNN(width=4)), projector_hidden=16, projector_out=8,
                augment=noisy_views, alpha=0.0)
    simclr_history, clae_history = fit(simclr, images, **options), fit(clae, images, **options)
    assert [r["loss"] for r in clae_history.steps] == [r["loss"] for r in simclr_history.steps]
    clean_state = {key.replace(".clean.", "."): value for key, value in clae.state_dict().items()
                   if ".adversarial." not in key}
    assert clean_state.keys() == simclr.state_dict().keys()
    for key, value in simclr.state_dict().items():
        assert torch.equal(value, clean_state[key]), key


def test_pgd_attack_steps_stay_in_the_ball_and_raise_the_loss_more_than_fgsm():
    view1, _ = tiny_views(2, n=6, size=6)
    raised = {}
    for steps in (1, 5):
        method = tiny_clae(attack_steps=steps)
        with torch.no_grad():
            with adversarial_batchnorm(method):
                anchors = method.encode(view1)
        x_adv = method.perturb(method.encode_adversarial, view1)
        assert (x_adv - view1).abs().max() <= 0.05 + 1e-12 and x_adv.min() >= 0 and x_adv.max() <= 1
        with torch.no_grad():
            raised[steps] = (method.attack_loss(anchors, method.encode_adversarial(x_adv))
                             - method.attack_loss(anchors, method.encode_adversarial(view1))).item()
    assert 0 < raised[1] < raised[5]
    assert tiny_clae(attack_steps=4).config()["attack_steps"] == 4


def test_logs_are_the_diagnostics_they_name():
    method = tiny_clae()
    view1, view2 = tiny_views(3, n=6)
    probe = copy.deepcopy(method)
    output = method.training_step(batch_from_views((view1, view2)))
    with torch.no_grad():
        z1, z2 = probe.encode(torch.cat([view1, view2])).chunk(2)
        # the attack's own first pass, at delta = 0
        at_zero = probe.encode_adversarial(view1)
    z_adv = probe.encode_adversarial(probe.perturb(probe.encode_adversarial, view1)).detach()
    z1, z2, z_adv, at_zero = (z.float() for z in (z1, z2, z_adv, at_zero))
    u1, u2, u_adv = (F.normalize(z, dim=1) for z in (z1, z2, z_adv))
    logs = output.logs
    assert torch.allclose(logs["clean_loss"], info_nce(z1, z2, 0.5))
    assert torch.allclose(logs["adversarial_loss"], info_nce(z1, z_adv, 0.5))
    assert torch.allclose(output.loss.float(), logs["clean_loss"] + 0.7 * logs["adversarial_loss"])
    assert torch.allclose(logs["attack_raise"],
                          info_nce(z1, z_adv, 0.5) - info_nce(z1, at_zero, 0.5))
    assert logs["attack_raise"] > 0
    assert torch.allclose(logs["positive_similarity"], (u1 * u2).sum(1).mean())
    assert torch.allclose(logs["adversarial_similarity"], (u1 * u_adv).sum(1).mean())
    assert torch.allclose(logs["adversarial_negative_rank"],
                          rank_among_negatives(z1, (z1, z2), z_adv).mean())


def test_training_step_runs_under_bf16_autocast_with_channels_last():
    method = tiny_clae().float().to(memory_format=torch.channels_last)
    view1, view2 = (v.float().contiguous(memory_format=torch.channels_last)
                    for v in tiny_views(4, size=8))
    reference = tiny_clae().float().training_step(batch_from_views((view1.contiguous(),
                                                                    view2.contiguous()))).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = method.training_step(batch_from_views((view1, view2)))
    assert output.loss.dtype == torch.float32 and torch.isfinite(output.loss)
    assert abs(output.loss.item() - reference.item()) < 0.05
    assert all(p.grad is None for p in method.parameters())


# ---------------------------------------------------------------- the student's functions plug in

def students_fgsm(encode, x, epsilon, loss):
    x = x.detach().requires_grad_(True)
    z = encode(x)
    gradient, = torch.autograd.grad(loss(z.detach(), z), x)
    return (x + epsilon * gradient.sign()).clamp(0, 1).detach()


def students_objective(encode, encode_adversarial, attack, loss, view1, view2, alpha):
    z1, z2 = encode(torch.cat([view1, view2])).chunk(2)
    z_adv = encode_adversarial(attack(encode_adversarial, view1))
    return loss(z1, z2) + alpha * loss(z1, z_adv), z1, z2, z_adv


def test_a_students_attack_and_objective_give_the_librarys_loss_and_are_recorded_by_name():
    views = tiny_views(5)
    library = tiny_clae().training_step(batch_from_views(views)).loss
    student = tiny_clae(attack=students_fgsm, objective=students_objective)
    assert torch.allclose(student.training_step(batch_from_views(views)).loss, library, atol=1e-12)
    assert function_names(student.config()) == {"loss": "clcourse.losses.info_nce",
                                             "attack": f"{__name__}.students_fgsm",
                                             "objective": f"{__name__}.students_objective"}
    assert function_names(tiny_clae().config()) == {
        "loss": "clcourse.losses.info_nce", "attack": "clcourse.attacks.contrastive_attack",
        "objective": "clcourse.methods.clae.clae_objective"}


def test_a_wrong_objective_changes_the_loss():
    def attacks_the_second_view(encode, encode_adversarial, attack, loss, view1, view2, alpha):
        return clae_objective(encode, encode_adversarial, attack, loss, view2, view1, alpha)
    views = tiny_views(6)
    library = tiny_clae().training_step(batch_from_views(views)).loss
    wrong = tiny_clae(objective=attacks_the_second_view).training_step(batch_from_views(views)).loss
    assert not torch.allclose(wrong, library)


def test_an_objective_that_skips_the_adversarial_branch_is_refused():
    def no_adversarial_branch(encode, encode_adversarial, attack, loss, view1, view2, alpha):
        z1, z2 = encode(torch.cat([view1, view2])).chunk(2)
        return loss(z1, z2), z1, z2, z2
    with pytest.raises(ValueError, match="never called encode_adversarial"):
        tiny_clae(objective=no_adversarial_branch).training_step(batch_from_views(tiny_views()))


# ---------------------------------------------------------------- bases, configuration, arguments

def test_clae_wraps_dcl_and_hcl_with_their_hyperparameters():
    method = build_method("clae", Backbone(SmallCNN(width=4)), base="hcl", beta=2.0, tau_plus=0.05,
                          epsilon=0.01)
    config = method.config()
    assert config["name"] == "CLAE" and config["base"] == "hcl" and config["beta"] == 2.0
    assert (config["tau_plus"] == 0.05 and config["epsilon"] == 0.01
            and function_names(config)["loss"] == "clcourse.losses.hcl")
    assert method.base.beta == 2.0 and method.lr == method.base.lr
    assert method.backbone is method.base.backbone and method.projector is method.base.projector
    assert not any(key.startswith("base.") for key in method.state_dict())    # registered once
    assert method.config()["architecture"].startswith("Backbone(SmallCNN), ")


@pytest.mark.parametrize("options, message", [
    (dict(epsilon=-0.01), r"epsilon must be in \[0.0, inf\), got -0.01"),
    (dict(alpha=-1.0), r"alpha must be in \[0.0, inf\), got -1.0"),
    (dict(attack_steps=0), r"attack_steps must be an integer >= 1, got 0"),
    (dict(attack_steps=1.5), r"attack_steps must be an integer >= 1, got 1.5"),
    (dict(attack_steps=3, attack_step_size=0.0),
     r"attack_step_size must be a finite number > 0, got 0.0"),
    (dict(attack_steps=3, epsilon=0.0), r"epsilon must be > 0 for a PGD attack"),
    (dict(adversarial_momentum=1.5), r"adversarial_momentum must be in \[0.0, 1.0\], got 1.5"),
    (dict(base="moco"), r"base must be one of \['dcl', 'hcl', 'simclr'\].*got 'moco'"),
    (dict(attack="fgsm"), r"attack must be a function, got 'fgsm'"),
    (dict(objective=3), r"objective must be a function, got 3"),
    (dict(attack=students_fgsm, attack_steps=2),
     r"attack_steps must be 1 when attack is given, got 2"),
    (dict(temperature=0.0), r"temperature must be a finite number > 0"),
    (dict(dual_batchnorm="no"), r"dual_batchnorm must be True or False, got 'no'"),
])
def test_bad_arguments_name_the_argument_the_value_and_the_allowed_range(options, message):
    with pytest.raises(ValueError, match=message):
        tiny_clae(**options)


def test_a_batch_of_one_image_is_refused_before_training(images):
    method = tiny_method("clae")
    steps = []
    step = method.training_step
    method.training_step = lambda batch: (steps.append(1), step(batch))[1]
    with pytest.raises(ValueError, match="batch_size must be at least 2 for SimCLR"):
        short_run(images, method, batch_size=1)
    assert not steps


@pytest.mark.parametrize("result, message", [
    (lambda x: x[:2],
     r"attack \(.*\.<lambda>\) must return the perturbed images: a floating-point tensor of the "
     r"clean images' shape \(4, 3, 5, 5\) on cpu, got shape \(2, 3, 5, 5\)"),
    (lambda x: x * 255,
     r"what attack \(.*\) returned holds float pixels in \[.*\], but float images must "
     r"lie in \[0, 1\]"),
])
def test_a_users_attack_that_returns_other_images_is_refused(result, message):
    method = tiny_clae(attack=lambda encode, x, epsilon, loss: result(x.detach().clone()))
    with pytest.raises(ValueError, match=message):
        method.training_step(batch_from_views(tiny_views()))


def test_contrastive_attack_on_a_method_is_what_the_method_uses():
    method = tiny_clae()
    view1, _ = tiny_views(7)
    expected = contrastive_attack(copy.deepcopy(method).encode_adversarial, view1, 0.05,
                                  method.attack_loss)
    assert torch.equal(method.perturb(method.encode_adversarial, view1), expected)


# ---------------------------------------------------------------- CLAE on the debiased losses

@pytest.mark.parametrize("base", ["dcl", "hcl"])
def test_on_a_debiased_loss_at_a_low_temperature_it_warns_where_the_attack_has_no_gradient(base):
    # Embeddings whose negatives are near-orthogonal; the attack's objective at delta = 0 (the
    # perturbed embeddings equal the clean anchors). At t = 0.2 the debiasing floor binds and the
    # gradient vanishes.
    z = F.normalize(torch.randn(16, 64, generator=torch.Generator().manual_seed(0)), dim=1).double()
    with pytest.warns(UserWarning, match=rf"{base.upper()} at temperature 0.2 \(tau_plus 0.1\)"
                                         r".*debiasing floor"):
        cold = tiny_clae(base=base, temperature=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warm = tiny_clae(base=base, temperature=0.5)
    gradients = {}
    for name, method in (("cold", cold), ("warm", warm)):
        moved = z.clone().requires_grad_()
        gradients[name], = torch.autograd.grad(method.attack_loss(z, moved), moved)
    assert gradients["cold"].abs().max() < 1e-6 * gradients["warm"].abs().max()
    assert gradients["warm"].abs().max() > 0.1
