"""Attacks: FGSM and PGD stay in the epsilon-ball and in [0, 1], raise the loss, take one
hand-computable sign-gradient step, leave weights' gradients, the model's mode and its BN statistics
alone, and agree with torchattacks (a test-only oracle); the contrastive attack CLAE uses; bad
arguments."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from clcourse.attacks import (
    contrastive_attack,
    fgsm,
    pgd,
    pixels_checked,
    project,
    random_start_point,
    require_attack_result,
)
from clcourse.losses import info_nce


def classifier(seed=0):
    """A small conv classifier with batch-norm, on 3x8x8 images."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 5))


def pixels(seed=0, n=6):
    """Images in [0, 1] with a share of pixels at 0 and 1, so that clipping to the valid range
    matters."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=generator)
    return torch.where(x < 0.15, torch.zeros_like(x), torch.where(x > 0.85, torch.ones_like(x), x))


def labels(n=6):
    return torch.arange(n) % 5


def cross_entropy_of(model, y):
    return lambda x: F.cross_entropy(model(x), y)


def attack(name, loss_fn, x, epsilon, **options):
    if name == "fgsm":
        return fgsm(loss_fn, x, epsilon)
    return pgd(loss_fn, x, epsilon, **{"step_size": epsilon / 4, "steps": 5, **options})


ATTACKS = [("fgsm", {}), ("pgd", {}), ("pgd", dict(random_start=True)),
           ("pgd", dict(norm="l2", step_size=0.3)),
           ("pgd", dict(norm="l2", step_size=0.3, random_start=True))]


@pytest.mark.parametrize("name, options", ATTACKS)
def test_adversarial_images_stay_in_the_ball_and_in_the_pixel_range_and_raise_the_loss(
        name, options):
    model, x, y = classifier().eval(), pixels(), labels()
    epsilon = 0.5 if options.get("norm") == "l2" else 0.03
    x_adv = attack(name, cross_entropy_of(model, y), x, epsilon, **options)
    delta = (x_adv - x).flatten(1)
    if options.get("norm") == "l2":
        assert (delta.norm(dim=1) <= epsilon + 1e-6).all()
    else:
        assert delta.abs().max() <= epsilon + 1e-7
        assert delta.abs().max() > 0.9 * epsilon
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y) + 1e-3


def test_fgsm_is_one_sign_gradient_step_computed_by_hand():
    # L(x) = sum(w * x): the gradient is w, so FGSM is x + eps * sign(w), clipped to [0, 1].
    x = pixels()
    w = torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(1))
    x_adv = fgsm(lambda images: (images * w).sum(), x, 0.1)
    assert torch.equal(x_adv, (x + 0.1 * torch.sign(w)).clamp(0, 1))


def test_pgd_without_random_start_takes_projected_sign_steps_computed_by_hand():
    # A linear loss climbs the same direction at every step: after 3 steps of 0.04, each pixel moved
    # by min(0.12, eps = 0.1) along sign(w), then was clipped to [0, 1].
    x = pixels()
    w = torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(2))
    x_adv = pgd(lambda images: (images * w).sum(), x, epsilon=0.1, step_size=0.04, steps=3)
    expected = x.clone()
    for _ in range(3):
        expected = (x + (expected + 0.04 * torch.sign(w) - x).clamp(-0.1, 0.1)).clamp(0, 1)
    assert torch.allclose(x_adv, expected, atol=1e-7)
    assert torch.allclose(x_adv, (x + 0.1 * torch.sign(w)).clamp(0, 1), atol=1e-7)


def test_one_pgd_step_of_size_epsilon_is_fgsm():
    model, x, y = classifier().eval(), pixels(), labels()
    loss_fn = cross_entropy_of(model, y)
    assert torch.equal(pgd(loss_fn, x, 0.03, step_size=0.03, steps=1), fgsm(loss_fn, x, 0.03))


def test_l2_projection_scales_a_long_perturbation_onto_the_sphere_and_leaves_a_short_one():
    x = torch.full((2, 4), 0.5)
    # norms 0.5 and 0.05
    x_adv = x + torch.tensor([[0.3, 0.4, 0.0, 0.0], [0.03, 0.04, 0.0, 0.0]])
    projected = project(x_adv, x, 0.1, norm="l2")
    assert torch.allclose(projected[0] - x[0], torch.tensor([0.06, 0.08, 0.0, 0.0]))
    assert torch.allclose(projected[1], x_adv[1])


@pytest.mark.parametrize("name, options", ATTACKS)
def test_attacks_leave_weight_gradients_mode_and_batchnorm_statistics_to_the_caller(name, options):
    model, x, y = classifier(), pixels(), labels()
    model.eval()
    existing = [torch.full_like(p, 0.25) for p in model.parameters()]
    for parameter, grad in zip(model.parameters(), existing):
        parameter.grad = grad.clone()
    state = copy.deepcopy(model.state_dict())
    attack(name, cross_entropy_of(model, y), x, 0.03, **options)
    assert not model.training
    # no gradient added
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), existing))
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())

    # In train mode the attack does not switch to eval: each forward pass of the closure moves the
    # running statistics, exactly as the same passes made by the caller would, and no more.
    model.train()
    for parameter in model.parameters():
        parameter.grad = None
    caller = copy.deepcopy(model)
    passes = []
    x_adv = attack(name, lambda images: passes.append(images.detach())
                   or F.cross_entropy(model(images), y), x, 0.03, **options)
    assert model.training and all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        for images in passes:
            caller(images)
    for key, value in caller.state_dict().items():
        assert torch.allclose(model.state_dict()[key], value, atol=1e-6), key
    assert len(passes) == (1 if name == "fgsm" else 5) and not torch.equal(x_adv, x)


def test_attacks_work_inside_no_grad_and_under_bf16_autocast():
    model, x, y = classifier().eval(), pixels(), labels()
    loss_fn = cross_entropy_of(model, y)
    reference = pgd(loss_fn, x, 0.03, step_size=0.01, steps=3)
    with torch.no_grad():
        assert torch.equal(pgd(loss_fn, x, 0.03, step_size=0.01, steps=3), reference)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_adv = pgd(loss_fn, x, 0.03, step_size=0.01, steps=3)
    assert x_adv.dtype == torch.float32 and (x_adv - x).abs().max() <= 0.03 + 1e-7
    # mostly the same steps
    assert (torch.sign(x_adv - x) == torch.sign(reference - x)).float().mean() > 0.9


def test_random_start_is_reproducible_with_a_generator():
    model, x, y = classifier().eval(), pixels(), labels()
    runs = [pgd(cross_entropy_of(model, y), x, 0.03, step_size=0.01, steps=2, random_start=True,
                generator=torch.Generator().manual_seed(seed)) for seed in (7, 7, 8)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_epsilon_zero_returns_the_input():
    model, x, y = classifier().eval(), pixels(), labels()
    assert torch.equal(fgsm(cross_entropy_of(model, y), x, 0.0), x)
    assert torch.equal(pgd(cross_entropy_of(model, y), x, 0.0, step_size=0.01, steps=2), x)


# ---------------------------------------------------------------- torchattacks as the oracle

@pytest.mark.parametrize("name, options", [
    ("FGSM", dict(eps=8 / 255)),
    ("PGD", dict(eps=8 / 255, alpha=2 / 255, steps=7, random_start=False)),
    ("PGD", dict(eps=8 / 255, alpha=2 / 255, steps=7, random_start=True)),
    ("PGDL2", dict(eps=0.5, alpha=0.1, steps=7, random_start=False)),
    ("PGDL2", dict(eps=0.5, alpha=0.1, steps=7, random_start=True)),
])
def test_agrees_with_torchattacks(torchattacks, name, options):
    model, x, y = classifier().eval(), pixels(n=16), torch.arange(16) % 5
    torch.manual_seed(123)
    expected = getattr(torchattacks, name)(model, **options)(x, y)
    # the random start draws from torch's global generator, as theirs
    torch.manual_seed(123)
    loss_fn = cross_entropy_of(model, y)
    if name == "FGSM":
        ours = fgsm(loss_fn, x, options["eps"])
    else:
        ours = pgd(loss_fn, x, options["eps"], options["alpha"], options["steps"],
                   options["random_start"], norm="l2" if name == "PGDL2" else "linf")
    assert torch.allclose(ours, expected, atol=1e-6), (ours - expected).abs().max()
    assert (ours - x).abs().max() > 0


# ---------------------------------------------------------------- the contrastive attack (CLAE)

def encoder(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 6))


def test_contrastive_fgsm_raises_the_loss_against_fixed_anchors_of_the_clean_views():
    encode, x = encoder().eval(), pixels(n=8)
    loss = lambda a, b: info_nce(a, b, 0.5)  # noqa: E731
    x_adv = contrastive_attack(encode, x, 0.03, loss)
    with torch.no_grad():
        anchors = encode(x)
        expected = fgsm(lambda images: loss(anchors, encode(images)), x, 0.03)
        assert torch.equal(x_adv, expected)
        assert loss(anchors, encode(x_adv)) > loss(anchors, encode(x))


def test_at_delta_zero_the_positive_term_has_no_gradient():
    # d/dx (sg[z] . z / |z|) = 0 when the anchor is the view itself: the first step sees the
    # negatives only. Holding the positive logits constant therefore leaves the input gradient
    # unchanged.
    encode, x = encoder(1).eval().double(), pixels(n=5).double()
    target = torch.cat([torch.arange(5, 10), torch.arange(5)])
    is_positive = F.one_hot(target, 10).bool()
    gradients = []
    for positives_constant in (False, True):
        images = x.clone().requires_grad_(True)
        z = F.normalize(encode(images), dim=1)
        u = torch.cat([z.detach(), z])
        logits = (u @ u.T / 0.5).masked_fill(torch.eye(10, dtype=torch.bool), float("-inf"))
        if positives_constant:
            logits = torch.where(is_positive, logits.detach(), logits)
        gradients.append(torch.autograd.grad(F.cross_entropy(logits, target), images)[0])
    assert gradients[0].abs().max() > 1e-4
    assert torch.allclose(gradients[0], gradients[1], atol=1e-12)


def test_contrastive_pgd_stays_in_the_ball_and_raises_the_loss_more_than_fgsm():
    encode, x = encoder(2).eval(), pixels(n=8)
    loss = lambda a, b: info_nce(a, b, 0.5)  # noqa: E731
    with torch.no_grad():
        anchors = encode(x)
    raised = {}
    for steps in (1, 10):
        x_adv = contrastive_attack(encode, x, 0.03, loss, steps=steps)
        assert (x_adv - x).abs().max() <= 0.03 + 1e-7 and x_adv.min() >= 0 and x_adv.max() <= 1
        with torch.no_grad():
            raised[steps] = (loss(anchors, encode(x_adv)) - loss(anchors, encode(x))).item()
    assert 0 < raised[1] < raised[10]


# ---------------------------------------------------------------- bad arguments

def ce_loss():
    model = classifier().eval()
    return cross_entropy_of(model, labels())


@pytest.mark.parametrize("call, message", [
    (lambda: fgsm(ce_loss(), pixels(), -0.1), r"epsilon must be in \[0.0, inf\), got -0.1"),
    (lambda: pgd(ce_loss(), pixels(), -1.0, 0.01, 3), r"epsilon must be in \[0.0, inf\), got -1.0"),
    (lambda: pgd(ce_loss(), pixels(), 0.03, 0.0, 3),
     r"step_size must be a finite number > 0, got 0.0"),
    (lambda: pgd(ce_loss(), pixels(), 0.03, -0.01, 3),
     r"step_size must be a finite number > 0, got -0.01"),
    (lambda: pgd(ce_loss(), pixels(), 0.03, 0.01, 0), r"steps must be an integer >= 1, got 0"),
    (lambda: pgd(ce_loss(), pixels(), 0.03, 0.01, 2.5), r"steps must be an integer >= 1, got 2.5"),
    (lambda: pgd(ce_loss(), pixels(), 0.03, 0.01, 3, norm="l1"),
     r"norm must be one of \('linf', 'l2'\), got 'l1'"),
    (lambda: fgsm(ce_loss(), pixels().to(torch.uint8), 0.03), r"x must be a floating-point tensor"),
    (lambda: fgsm("loss", pixels(), 0.03), r"loss_fn must be a function"),
    (lambda: fgsm(lambda x: x.sum(dim=1), pixels(), 0.03),
     r"loss_fn must return a scalar tensor, got shape"),
    (lambda: contrastive_attack(encoder(), pixels(), 0.03, info_nce, steps=0),
     r"steps must be an integer >= 1"),
    (lambda: contrastive_attack(encoder(), pixels(), -0.03, info_nce),
     r"epsilon must be in \[0.0, inf\)"),
    # pixels in 0..255 would give all-white images (every step clipped to 1)
    (lambda: fgsm(ce_loss(), pixels() * 255, 0.03),
     r"x holds float pixels in \[0, 255\], but float images must "
     r"lie in \[0, 1\]; these look like 0..255 pixel values"),
    (lambda: pgd(ce_loss(), pixels() * 255, 0.03, 0.01, 3), r"x holds float pixels in \[0, 255\]"),
    (lambda: pgd(ce_loss(), pixels() * 255, 0.03, 0.01, 3, random_start=True),
     r"x holds float pixels in \[0, 255\]"),
    (lambda: contrastive_attack(encoder(), pixels() * 255, 0.03, info_nce),
     r"x holds float pixels in \[0, 255\]"),
    (lambda: contrastive_attack(encoder(), pixels() * 255, 0.03, info_nce, steps=3),
     r"x holds float pixels"),
    (lambda: fgsm(ce_loss(), pixels() - 0.5, 0.03), r"x holds float pixels in \[-0.5, 0.5\]"),
    (lambda: fgsm(ce_loss(), (pixels() * 255).to(torch.uint8), 0.03), r"convert uint8 pixels with "
     r"clcourse.augment.to_float_images"),
    (lambda: project(pixels(1), pixels(), -0.1), r"epsilon must be in \[0.0, inf\), got -0.1"),
    (lambda: project(pixels(1), pixels(), 0.1, norm="bogus"),
     r"norm must be one of \('linf', 'l2'\), got 'bogus'"),
    (lambda: random_start_point(pixels(), -0.1), r"epsilon must be in \[0.0, inf\), got -0.1"),
    (lambda: random_start_point(pixels(), 0.1, norm="l1"),
     r"norm must be one of \('linf', 'l2'\), got 'l1'"),
    (lambda: random_start_point(pixels() * 255, 0.1), r"x holds float pixels in \[0, 255\]"),
])
def test_bad_arguments_name_the_argument_the_value_and_the_allowed_range(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_within_pixels_checked_the_attacks_skip_the_range_check_a_training_step_cannot_afford():
    """A training step's views lie in [0, 1] by construction; there the check (a host read) is
    skipped."""
    x = pixels() * 255
    with pixels_checked():
        assert fgsm(ce_loss(), x, 0.03).shape == x.shape
    with pytest.raises(ValueError, match="x holds float pixels"):
        fgsm(ce_loss(), x, 0.03)


@pytest.mark.parametrize("result, message", [
    (lambda x: x[:2],
     r"attack must return the perturbed images: a floating-point tensor of the clean images' shape "
     r"\(6, 3, 8, 8\) on cpu, got shape \(2, 3, 8, 8\)"),
    (lambda x: (x * 255).to(torch.uint8), r"got shape \(6, 3, 8, 8\), dtype torch.uint8"),
    (lambda x: [x], r"got list"),
    (lambda x: x * 255, r"what attack returned holds float pixels in \[0, 255\]"),
    (lambda x: x + float("nan"), r"what attack returned holds float pixels in \[nan, nan\]"),
])
def test_what_a_users_attack_returns_is_checked_for_shape_range_and_finiteness(result, message):
    x = pixels()
    with pytest.raises(ValueError, match=message):
        require_attack_result("attack", result(x), x)
    assert require_attack_result("attack", x * 0.5, x) is not None
    assert require_attack_result("attack", x * 255, x, values=False).shape == x.shape
