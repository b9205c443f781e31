"""Issue 13 (CL-Robustness): the SupCon loss against a loop over anchors, SupCon and the supervised baseline in the
shared loop, adversarial pretraining of the three schemes against a slow reference, the fine-tuning scenarios,
the two threat models (L-infinity and L2) and robust accuracy, torchattacks as an oracle, bad input."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from clcourse import robustness as R
from clcourse.losses import info_nce, supcon
from clcourse.methods import AdversarialPretraining, Batch, Supervised, SupCon, build_method
from clcourse.models import Backbone, SmallCNN, batchnorm_statistics_frozen
from helpers import TinyBackbone, fit, identity_views, pixels, reference_supcon, tiny_encoder, uint8_images


# ---------------------------------------------------------------- the SupCon loss

@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_supcon_and_its_gradient_match_a_loop_over_anchors(temperature):
    z1, z2 = torch.randn(6, 5, requires_grad=True), torch.randn(6, 5, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    ours = supcon(z1, z2, labels, temperature)
    ours_grad = torch.autograd.grad(ours, (z1, z2))
    expected = reference_supcon(z1, z2, labels, temperature)
    expected_grad = torch.autograd.grad(expected, (z1, z2))
    assert ours.item() == pytest.approx(expected.item(), rel=1e-5)
    for a, b in zip(ours_grad, expected_grad):
        assert torch.allclose(a.double(), b.double(), atol=1e-5)


def test_supcon_with_distinct_labels_is_info_nce():
    z1, z2 = torch.randn(8, 4), torch.randn(8, 4)
    assert torch.allclose(supcon(z1, z2, torch.arange(8), 0.2), info_nce(z1, z2, 0.2), atol=1e-6)
    # ...and a shared label changes it (the positives are more than the other view)
    assert not torch.allclose(supcon(z1, z2, torch.zeros(8, dtype=torch.long), 0.2), info_nce(z1, z2, 0.2))


@pytest.mark.parametrize("labels, says", [(None, "labels"), (torch.arange(5), "labels has 5 entries"),
                                           (torch.rand(6), "integer")])
def test_supcon_refuses_bad_labels(labels, says):
    with pytest.raises(ValueError, match=says):
        supcon(torch.randn(6, 4), torch.randn(6, 4), labels, 0.1)


# ---------------------------------------------------------------- SupCon and the supervised baseline in the loop

@pytest.mark.parametrize("name, options", [("supcon", {}), ("supervised", {}), ("adversarial", {"scheme": "scl"}),
                                           ("adversarial", {"scheme": "sl"})])
def test_methods_that_learn_from_labels_refuse_to_start_without_them(name, options):
    method = build_method(name, TinyBackbone(), augment=identity_views, **options)
    assert method.requires_labels
    with pytest.raises(ValueError, match="learns from class labels: pass labels="):
        fit(method, uint8_images(), epochs=1, batch_size=8, progress=False)
    with pytest.raises(ValueError, match="labels has 31 entries but images has 32"):
        fit(method, uint8_images(), labels=torch.arange(31) % 3, epochs=1, batch_size=8, progress=False)


def test_supcon_and_supervised_steps_are_their_losses():
    images, labels = uint8_images(8), torch.tensor([0, 1, 0, 1, 2, 2, 0, 1])
    views = (identity_views(images), identity_views(images).flip(3))
    torch.manual_seed(0)
    method = SupCon(TinyBackbone(), temperature=0.3, augment=identity_views)
    loss = method.training_step(Batch(views, images, labels, torch.arange(8))).loss
    z1, z2 = method.projector(method.backbone(torch.cat(views))).chunk(2)     # one pass: the projector's BN
    assert loss.item() == pytest.approx(reference_supcon(z1, z2, labels, 0.3).item(), rel=1e-5)

    method = Supervised(TinyBackbone(), num_classes=3, augment=identity_views)
    loss = method.training_step(Batch(views[:1], images, labels, torch.arange(8))).loss
    logits = method.projector(method.backbone(views[0]))
    expected = -sum(torch.log_softmax(logits[i], 0)[labels[i]] for i in range(8)) / 8     # raw logits, no cosine
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_supcon_learns_to_group_classes():
    # Two classes of noisy images around two templates: after training, same-class embeddings are closer.
    generator = torch.Generator().manual_seed(0)
    templates = torch.rand(2, 3, 8, 8, generator=generator)
    labels = torch.arange(64) % 2
    images = ((templates[labels] + 0.3 * torch.randn(64, 3, 8, 8, generator=generator)).clamp(0, 1) * 255).byte()

    def noisy(batch, generator=None):
        x = batch.float() / 255
        return (x + 0.1 * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    torch.manual_seed(0)
    method = SupCon(TinyBackbone(), augment=noisy)
    before = method.embed(images.float() / 255)
    fit(method, images, labels=labels, epochs=8, batch_size=16, lr=0.5, warmup_epochs=0, progress=False)
    after = method.embed(images.float() / 255)

    def class_gap(z):
        similarity = z @ z.T
        same = labels[:, None] == labels[None, :]
        return (similarity[same].mean() - similarity[~same].mean()).item()
    assert class_gap(after) > class_gap(before) + 0.2


# ---------------------------------------------------------------- adversarial pretraining

def fixed_attack(delta):
    """An attack that returns clean + delta and records what it was asked."""
    calls = []

    def attack(loss_fn, x, epsilon, step_size, steps, random_start=False):
        calls.append(dict(x=x.clone(), epsilon=epsilon, step_size=step_size, steps=steps, loss_fn=loss_fn))
        return (x + delta).clamp(0, 1)
    return attack, calls


def reference_info_nce(z1, z2, temperature):
    return reference_supcon(z1, z2, torch.arange(len(z1)), temperature)


@pytest.mark.parametrize("scheme", ["cl", "scl", "sl"])
def test_adversarial_pretraining_loss_matches_a_slow_reference(scheme):
    images, labels = uint8_images(8), torch.tensor([0, 1, 0, 1, 2, 2, 0, 1])
    clean = images.float() / 255
    delta = 0.03 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(5))
    attack, calls = fixed_attack(delta)
    options = dict(num_classes=3) if scheme == "sl" else dict(temperature=0.4)
    torch.manual_seed(0)
    method = AdversarialPretraining(TinyBackbone(), scheme, epsilon=8 / 255, steps=3, step_size=1 / 255,
                                    attack=attack, augment=identity_views, **options)
    views = (pixels(8, seed=2), pixels(8, seed=3))
    output = method.training_step(Batch(views if scheme != "sl" else views[:1], images, labels, torch.arange(8)))

    call, = calls
    assert torch.equal(call["x"], clean)                           # x^0: the un-augmented images
    assert (call["epsilon"], call["step_size"], call["steps"]) == (8 / 255, 1 / 255, 3)
    adversarial = (clean + delta).clamp(0, 1)
    f, g = method.backbone, method.projector
    if scheme == "sl":
        expected = F.cross_entropy(g(f(adversarial)), labels) + F.cross_entropy(g(f(views[0])), labels)
    else:
        pair_loss = ((lambda a, b: reference_supcon(a, b, labels, 0.4)) if scheme == "scl"
                     else (lambda a, b: reference_info_nce(a, b, 0.4)))
        def embed_pair(a, b):                  # one pass of 2B, as the step (the projector has batch-norm)
            return g(f(torch.cat([a, b]))).chunk(2)
        expected = pair_loss(*embed_pair(clean, adversarial)) + pair_loss(*embed_pair(*views))
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("scheme", ["cl", "scl", "sl"])
def test_the_attack_raises_the_schemes_loss_against_constant_clean_anchors(scheme):
    labels = torch.tensor([0, 1, 0, 1, 2, 2, 0, 1])
    clean, moved = pixels(8, seed=0), pixels(8, seed=1).requires_grad_()
    options = dict(num_classes=3) if scheme == "sl" else dict(temperature=0.4)
    torch.manual_seed(0)
    method = AdversarialPretraining(TinyBackbone(), scheme, augment=identity_views, **options)
    objective = method.attack_objective(clean, labels)
    value = objective(moved)
    gradient, = torch.autograd.grad(value, moved)
    f, g = method.backbone, method.projector
    if scheme == "sl":
        expected = F.cross_entropy(g(f(moved)), labels, reduction="sum")
    else:
        anchors = g(f(clean)).detach()
        loss = reference_supcon if scheme == "scl" else (lambda a, b, y, t: reference_info_nce(a, b, t))
        expected = 16 * loss(anchors, g(f(moved)), labels, 0.4)          # summed over the 2B anchors
    expected_gradient, = torch.autograd.grad(expected, moved)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(gradient.double(), expected_gradient.double(), atol=1e-6)
    assert not any(p.grad is not None for p in method.parameters())


def test_adversarial_pretraining_really_attacks_and_keeps_batchnorm_averages_for_the_steps_own_passes():
    images = uint8_images(16)
    torch.manual_seed(0)
    method = AdversarialPretraining(Backbone(SmallCNN(width=4)), "cl", augment=identity_views, steps=3,
                                    projector_hidden=16, projector_out=8)
    seen = []
    method.attack_fn = lambda *args, **kwargs: seen.append(R.pgd(*args, **kwargs)) or seen[-1]
    before = {k: v.clone() for k, v in method.state_dict().items() if "running" in k}
    clean = images.float() / 255
    output = method.training_step(Batch((clean, clean), images, None, torch.arange(16)))
    adversarial, = seen
    assert (adversarial - clean).abs().max() <= 8 / 255 + 1e-6 and (adversarial - clean).abs().max() > 4 / 255
    assert output.loss.requires_grad and set(output.logs) >= {"standard_loss", "adversarial_loss"}
    # the running averages moved by the step's two forward passes (each momentum 0.1), not by the attack's
    layer = next(m for m in method.modules() if isinstance(m, nn.BatchNorm2d))
    assert layer.num_batches_tracked.item() == 2
    assert any(not torch.equal(before[k], v) for k, v in method.state_dict().items() if k in before)


def test_batchnorm_statistics_frozen_uses_batch_statistics_and_leaves_the_averages():
    layer = nn.BatchNorm2d(3).train()
    x = torch.randn(4, 3, 5, 5) * 3 + 1
    with batchnorm_statistics_frozen(layer):
        inside = layer(x)
    assert torch.equal(layer.running_mean, torch.zeros(3)) and layer.num_batches_tracked.item() == 0
    assert layer.momentum == 0.1
    assert torch.allclose(inside, F.batch_norm(x, None, None, layer.weight, layer.bias, training=True), atol=1e-6)


# ---------------------------------------------------------------- fine-tuning scenarios

@pytest.mark.parametrize("mode", R.FINE_TUNING)
def test_fine_tuning_trains_the_head_and_only_full_at_the_encoder(mode):
    encoder = tiny_encoder()
    images, labels = uint8_images(32), torch.arange(32) % 3
    model = R.FineTune(encoder, mode, num_classes=3, steps=2)
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = model.head.weight.clone()
    fit(model, images, labels=labels, epochs=2, batch_size=8, warmup_epochs=0, progress=False)
    unchanged = all(torch.equal(backbone_before[k], v) for k, v in model.backbone.state_dict().items())
    assert unchanged == (mode != "full")      # weights and batch-norm statistics of a frozen encoder stay
    assert not torch.equal(model.head.weight, head_before)
    assert all(torch.equal(a, b) for a, b in zip(model.projector.state_dict().values(),
                                                 encoder.projector.state_dict().values()))


def test_partial_at_trains_on_adversarial_examples_within_the_ball():
    model = R.FineTune(tiny_encoder(), "partial", num_classes=3, epsilon=8 / 255, steps=2, step_size=4 / 255)
    seen = []
    model.attack_fn = lambda *args, **kwargs: seen.append((args[1], R.pgd(*args, **kwargs))) or seen[-1][1]
    x, labels = pixels(8), torch.arange(8) % 3
    output = model.training_step(Batch((x,), (x * 255).byte(), labels, torch.arange(8)))
    (clean, adversarial), = seen
    assert 0 < (adversarial - clean).abs().max() <= 8 / 255 + 1e-6
    expected = (F.cross_entropy(model.classify(x), labels) + F.cross_entropy(model.classify(adversarial), labels))
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-5)


# ---------------------------------------------------------------- threat models and robust accuracy

def separable_toy(n=96, seed=0):
    """Images whose class is the sign of a fixed linear function of the pixels, and a linear classifier trained
    on them to high clean accuracy."""
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(3 * 8 * 8, generator=generator)
    x = torch.rand(n, 3, 8, 8, generator=generator)
    score = x.flatten(1) @ direction
    labels = (score > score.median()).long()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 2))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        optimiser.zero_grad()
        F.cross_entropy(model(x), labels).backward()
        optimiser.step()
    return model.eval(), x, labels


@pytest.mark.parametrize("norm, epsilon", [("linf", 16 / 255), ("l2", 1.0)])
@pytest.mark.parametrize("threat", ["I", "II"])
def test_threat_model_attacks_stay_in_the_ball_and_lower_accuracy(norm, epsilon, threat):
    model, x, labels = separable_toy()
    clean = R.robust_accuracy(model, x, labels, progress=False)
    if threat == "I":
        attack = R.threat_model_1(model, epsilon, steps=10, norm=norm)
    else:
        attack = R.threat_model_2(model, epsilon, steps=10, norm=norm)
    x_adv = attack(x, None if threat == "I" else labels)        # threat model I never reads the labels
    delta = (x_adv - x).flatten(1)
    size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert size.max() <= epsilon + 1e-5 and x_adv.min() >= 0 and x_adv.max() <= 1
    robust = R.robust_accuracy(model, x, labels, attack, batch_size=32, progress=False)
    assert clean > 0.9 and robust < clean - 0.3


def test_robust_accuracy_of_an_identity_attack_is_the_clean_accuracy_counted_in_batches():
    model, x, labels = separable_toy()
    labels = labels.clone()
    labels[:20] = 1 - labels[:20]                               # some wrong, so the count is not trivial
    expected = (model(x).argmax(1) == labels).float().mean().item()
    model.train()
    assert R.robust_accuracy(model, x, labels, lambda x, y: x, batch_size=7, progress=False) == pytest.approx(expected)
    assert R.robust_accuracy(model, x, labels, None, batch_size=500, progress=False) == pytest.approx(expected)
    assert model.training                                       # its mode is given back
    uint8 = (x * 255).round().byte()
    assert R.robust_accuracy(model, uint8, labels, progress=False) == pytest.approx(
        (model(uint8.float() / 255).argmax(1) == labels).float().mean().item())


def test_evaluation_is_reproducible_and_threat_model_1_uses_the_projector():
    model = R.FineTune(tiny_encoder(), "standard", num_classes=3)
    x, labels = uint8_images(16), torch.arange(16) % 3
    first = R.evaluate_robustness(model, x, labels, steps=2, progress=False)
    assert first == R.evaluate_robustness(model, x, labels, steps=2, progress=False)
    assert 0 <= first.threat_model_2 <= first.clean <= 1
    used = []
    R.evaluate_robustness(model, x, labels, steps=1, progress=False,
                          objective=lambda encode, x, t: used.append(encode) or (lambda x_prime: encode(x_prime).sum()))
    assert used and used[0] == model.encode


@pytest.mark.parametrize("name, norm, epsilon, step", [("PGD", "linf", 4 / 255, 1 / 255), ("PGDL2", "l2", 0.5, 0.1)])
def test_threat_model_2_is_torchattacks_pgd(torchattacks, name, norm, epsilon, step):
    model, x, labels = separable_toy()
    expected = getattr(torchattacks, name)(model, eps=epsilon, alpha=step, steps=7, random_start=False)(x, labels)
    ours = R.threat_model_2(model, epsilon, 7, step, random_start=False, norm=norm)(x, labels)
    assert torch.allclose(ours, expected, atol=1e-6)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("call, says", [
    (lambda: R.threat_model_2(nn.Identity(), epsilon=-0.1), "epsilon"),
    (lambda: R.threat_model_1(nn.Identity(), steps=0), "steps must be"),
    (lambda: R.threat_model_1(nn.Identity(), norm="l1"), r"norm must be one of \['linf', 'l2'\].*got 'l1'"),
    (lambda: AdversarialPretraining(TinyBackbone(), "byol"), r"scheme must be one of .*got 'byol'"),
    (lambda: AdversarialPretraining(TinyBackbone(), "cl", epsilon=-1.0), "epsilon"),
    (lambda: AdversarialPretraining(TinyBackbone(), "cl", steps=0), "steps must be"),
    (lambda: R.FineTune(tiny_encoder(), "half"), r"mode must be one of \['standard', 'partial', 'full'\], got 'half'"),
    (lambda: R.FineTune(nn.Linear(2, 2), "full"), "encoder must be a pretrained clcourse Method"),
    (lambda: R.require_scenario("AT-full"), r"scenario must be one of \['ST', 'AT', 'Partial-AT', 'Full-AT'\]"),
    (lambda: R.require_scheme("ssl"), r"scheme must be one of \['cl', 'scl', 'sl'\]"),
    (lambda: R.robust_accuracy(nn.Flatten(), pixels(4), None), "labels must be given"),
    (lambda: R.robust_accuracy(nn.Linear(192, 2), pixels(4), torch.arange(3)), "labels has 3 entries"),
    (lambda: R.robust_accuracy(nn.Linear(192, 2), pixels(4) * 255, torch.arange(4)), "images"),
])
def test_bad_input_is_a_clear_error(call, says):
    with pytest.raises(ValueError, match=says):
        call()


def test_autoattack_without_torchattacks_is_skipped_with_a_message(monkeypatch, capsys):
    import sys
    monkeypatch.setitem(sys.modules, "torchattacks", None)          # import torchattacks now raises ImportError
    model, x, labels = separable_toy()
    assert R.autoattack_accuracy(model, x, labels, progress=False) is None
    assert "AutoAttack skipped" in capsys.readouterr().out
