"""SupCon, the supervised baseline, adversarial pretraining and fine-tuning
(clcourse/methods/supervised.py): the supervised loss is the cross-entropy of a linear classifier on
the backbone features of one view; the methods that learn from labels refuse to train without them;
SupCon and the supervised steps are their losses and SupCon groups classes; adversarial pretraining
of the three schemes against a slow reference; the fine-tuning scenarios train what they say."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import (
    TinyBackbone,
    fit,
    identity_views,
    pixels,
    reference_supcon,
    tiny_encoder,
    uint8_images,
)

from clcourse import robustness as R
from clcourse.methods import AdversarialPretraining, Batch, SupCon, Supervised, build_method
from clcourse.models import Backbone, SmallCNN
from clcourse.presets import get_preset

# ---------------------------------------------------------------- the supervised baseline

def tiny_supervised(seed=0, **options):
    torch.manual_seed(seed)
    return Supervised(Backbone(SmallCNN(width=4)), **options)


def test_loss_is_the_cross_entropy_of_the_linear_classifier_on_the_backbone_features():
    supervised = tiny_supervised(num_classes=3)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8, generator=g)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    views = supervised.make_views(images, torch.Generator().manual_seed(1))
    assert len(views) == 1 and views[0].shape == (6, 3, 32, 32)
    out = supervised.training_step(Batch(views, images, labels, torch.arange(6)))
    logits = supervised.projector(supervised.backbone(views[0]))
    manual = -torch.stack([logits[i].log_softmax(0)[labels[i]] for i in range(6)]).mean()
    assert torch.allclose(out.loss, manual, atol=1e-6)
    assert torch.allclose(out.loss, F.cross_entropy(logits, labels), atol=1e-6)
    assert out.logs["train_accuracy"] == (logits.argmax(1) == labels).float().mean()
    assert supervised.projector.out_features == 3 and supervised.config()["num_classes"] == 3


def test_it_needs_labels_and_a_sensible_number_of_classes():
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    with pytest.raises(ValueError, match="labels"):
        fit(tiny_supervised(), images, preset=get_preset("smoke"), epochs=1, batch_size=4,
            progress=False)
    with pytest.raises(ValueError, match="num_classes"):
        tiny_supervised(num_classes=1)


def test_it_learns_a_task_that_colour_separates(tmp_path):
    # Two classes, dark and bright images: a few epochs take the training accuracy well above
    # chance.
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 2
    images = (torch.rand(64, 3, 16, 16, generator=g) * 100
              + 120 * labels[:, None, None, None]).to(torch.uint8)
    history = fit(tiny_supervised(num_classes=2), images, labels=labels, preset=get_preset("smoke"),
                  epochs=4, batch_size=16, lr=0.05, progress=False, seed=0)
    accuracies = history.series("train_accuracy", per="step")[1]
    assert sum(accuracies[-4:]) / 4 > 0.8


# ---------------------------------------------------------------- SupCon and supervised in the loop

@pytest.mark.parametrize("name, options",
                         [("supcon", {}), ("supervised", {}), ("adversarial", {"scheme": "scl"}),
                          ("adversarial", {"scheme": "sl"})])
def test_methods_that_learn_from_labels_refuse_to_start_without_them(name, options):
    method = build_method(name, TinyBackbone(), augment=identity_views, **options)
    assert method.requires_labels
    with pytest.raises(ValueError, match="learns from class labels: pass labels="):
        fit(method, uint8_images(), epochs=1, batch_size=8, progress=False)
    with pytest.raises(ValueError, match="labels has 31 entries but images has 32"):
        fit(method, uint8_images(), labels=torch.arange(31) % 3, epochs=1, batch_size=8,
            progress=False)


def test_supcon_and_supervised_steps_are_their_losses():
    images, labels = uint8_images(8), torch.tensor([0, 1, 0, 1, 2, 2, 0, 1])
    views = (identity_views(images), identity_views(images).flip(3))
    torch.manual_seed(0)
    method = SupCon(TinyBackbone(), temperature=0.3, augment=identity_views)
    loss = method.training_step(Batch(views, images, labels, torch.arange(8))).loss
    # one pass: the projector's BN
    z1, z2 = method.projector(method.backbone(torch.cat(views))).chunk(2)
    assert loss.item() == pytest.approx(reference_supcon(z1, z2, labels, 0.3).item(), rel=1e-5)

    method = Supervised(TinyBackbone(), num_classes=3, augment=identity_views)
    loss = method.training_step(Batch(views[:1], images, labels, torch.arange(8))).loss
    logits = method.projector(method.backbone(views[0]))
    # raw logits, no cosine
    expected = -sum(torch.log_softmax(logits[i], 0)[labels[i]] for i in range(8)) / 8
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_supcon_learns_to_group_classes():
    # Two classes of noisy images around two templates: after training, same-class embeddings are
    # closer.
    generator = torch.Generator().manual_seed(0)
    templates = torch.rand(2, 3, 8, 8, generator=generator)
    labels = torch.arange(64) % 2
    images = ((templates[labels]
               + 0.3 * torch.randn(64, 3, 8, 8, generator=generator)).clamp(0, 1) * 255).byte()

    def noisy(batch, generator=None):
        x = batch.float() / 255
        return (x + 0.1 * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    torch.manual_seed(0)
    method = SupCon(TinyBackbone(), augment=noisy)
    before = method.embed(images.float() / 255)
    fit(method, images, labels=labels, epochs=8, batch_size=16, lr=0.5, warmup_epochs=0,
        progress=False)
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
        calls.append(
            dict(x=x.clone(), epsilon=epsilon, step_size=step_size, steps=steps, loss_fn=loss_fn))
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
    method = AdversarialPretraining(TinyBackbone(), scheme, epsilon=8 / 255, steps=3,
                                    step_size=1 / 255,
                                    attack=attack, augment=identity_views, definition="course",
                                    **options)
    views = (pixels(8, seed=2), pixels(8, seed=3))
    output = method.training_step(
        Batch(views if scheme != "sl" else views[:1], images, labels, torch.arange(8)))

    call, = calls
    assert torch.equal(call["x"], clean)                           # x^0: the un-augmented images
    assert (call["epsilon"], call["step_size"], call["steps"]) == (8 / 255, 1 / 255, 3)
    adversarial = (clean + delta).clamp(0, 1)
    f, g = method.backbone, method.projector
    if scheme == "sl":
        expected = (F.cross_entropy(g(f(adversarial)), labels)
                    + F.cross_entropy(g(f(views[0])), labels))
    else:
        pair_loss = ((lambda a, b: reference_supcon(a, b, labels, 0.4)) if scheme == "scl"
                     else (lambda a, b: reference_info_nce(a, b, 0.4)))
        # one pass of 2B, as the step (the projector has batch-norm)
        def embed_pair(a, b):
            return g(f(torch.cat([a, b]))).chunk(2)
        expected = pair_loss(*embed_pair(clean, adversarial)) + pair_loss(*embed_pair(*views))
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("scheme", ["cl", "scl", "sl"])
def test_the_attack_raises_the_schemes_loss_against_constant_clean_anchors(scheme):
    labels = torch.tensor([0, 1, 0, 1, 2, 2, 0, 1])
    clean, moved = pixels(8, seed=0), pixels(8, seed=1).requires_grad_()
    options = dict(num_classes=3) if scheme == "sl" else dict(temperature=0.4)
    torch.manual_seed(0)
    method = AdversarialPretraining(TinyBackbone(), scheme, augment=identity_views,
                                    definition="course", **options)
    objective = method.attack_objective(clean, labels)
    value = objective(moved)
    gradient, = torch.autograd.grad(value, moved)
    f, g = method.backbone, method.projector
    if scheme == "sl":
        expected = F.cross_entropy(g(f(moved)), labels, reduction="sum")
    else:
        anchors = g(f(clean)).detach()
        loss = (reference_supcon if scheme == "scl"
                else (lambda a, b, y, t: reference_info_nce(a, b, t)))
        # summed over the 2B anchors
        expected = 16 * loss(anchors, g(f(moved)), labels, 0.4)
    expected_gradient, = torch.autograd.grad(expected, moved)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(gradient.double(), expected_gradient.double(), atol=1e-6)
    assert not any(p.grad is not None for p in method.parameters())


@pytest.mark.parametrize("definition, passes", [("course", 2), ("paper", 3)])
def test_adversarial_pretraining_really_attacks_and_keeps_batchnorm_averages_for_the_steps_own_passes(  # noqa: E501  the name is its sentence
        definition, passes):
    images = uint8_images(16)
    torch.manual_seed(0)
    method = AdversarialPretraining(Backbone(SmallCNN(width=4)), "cl", augment=identity_views,
                                    steps=3,
                                    projector_hidden=16, projector_out=8, definition=definition)
    seen = []
    method.attack_fn = lambda *args, **kwargs: seen.append(R.pgd(*args, **kwargs)) or seen[-1]
    before = {k: v.clone() for k, v in method.state_dict().items() if "running" in k}
    clean = images.float() / 255
    output = method.training_step(Batch((clean, clean), images, None, torch.arange(16)))
    adversarial, = seen
    assert ((adversarial - clean).abs().max() <= 8 / 255 + 1e-6
            and (adversarial - clean).abs().max() > 4 / 255)
    assert output.loss.requires_grad and set(output.logs) >= {"standard_loss", "adversarial_loss"}
    # the running averages moved by the step's own forward passes (each momentum 0.1), not by the
    # attack's: the views, then the adversarial pair in one pass (course) or clean and adversarial
    # apart (paper)
    layer = next(m for m in method.modules() if isinstance(m, nn.BatchNorm2d))
    assert layer.num_batches_tracked.item() == passes
    assert any(not torch.equal(before[k], v) for k, v in method.state_dict().items() if k in before)


# ---------------------------------------------------------------- fine-tuning scenarios

@pytest.mark.parametrize("mode", R.FINE_TUNING)
def test_fine_tuning_trains_the_head_and_only_full_at_the_encoder(mode):
    encoder = tiny_encoder()
    images, labels = uint8_images(32), torch.arange(32) % 3
    model = R.FineTune(encoder, mode, num_classes=3, steps=2)
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = model.head.weight.clone()
    fit(model, images, labels=labels, epochs=2, batch_size=8, warmup_epochs=0, progress=False)
    unchanged = all(torch.equal(backbone_before[k], v)
                    for k, v in model.backbone.state_dict().items())
    # weights and batch-norm statistics of a frozen encoder stay
    assert unchanged == (mode != "full")
    assert not torch.equal(model.head.weight, head_before)
    assert all(torch.equal(a, b) for a, b in zip(model.projector.state_dict().values(),
                                                 encoder.projector.state_dict().values()))


def test_partial_at_trains_on_adversarial_examples_within_the_ball():
    model = R.FineTune(tiny_encoder(), "partial", num_classes=3, epsilon=8 / 255, steps=2,
                       step_size=4 / 255)
    seen = []
    model.attack_fn = (lambda *args, **kwargs: seen.append((args[1], R.pgd(*args, **kwargs)))
                       or seen[-1][1])
    x, labels = pixels(8), torch.arange(8) % 3
    output = model.training_step(Batch((x,), (x * 255).byte(), labels, torch.arange(8)))
    (clean, adversarial), = seen
    assert 0 < (adversarial - clean).abs().max() <= 8 / 255 + 1e-6
    expected = (F.cross_entropy(model.classify(x), labels)
                + F.cross_entropy(model.classify(adversarial), labels))
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-5)


# ---------------------------------------------------------- labels of other classes, users' attacks

@pytest.mark.parametrize("name", ["supervised", "adversarial-sl", "finetune"])
def test_labels_outside_the_classifiers_classes_are_refused_before_training(name):
    """Labels up to 4 for a classifier of 3 classes would stop the first step with the
    cross-entropy's IndexError."""
    if name == "finetune":
        method = R.FineTune(tiny_encoder(), "standard", num_classes=3)
    else:
        options = {"scheme": "sl"} if name == "adversarial-sl" else {}
        method = build_method(name.split("-")[0], TinyBackbone(), augment=identity_views,
                              num_classes=3, **options)
    steps = []
    step = method.training_step
    method.training_step = lambda batch: (steps.append(1), step(batch))[1]
    with pytest.raises(ValueError,
                       match=rf"labels must be class indices in \[0, 2\] "
                             rf"\({type(method).__name__} has num_classes=3\), "
                             r"got labels from 0 to 4"):
        fit(method, uint8_images(), labels=torch.arange(32) % 5, epochs=1, batch_size=8,
            progress=False)
    assert not steps


def attack_returning(result):
    """An attack in pgd's signature that returns `result(x)` instead of perturbed images."""
    return (lambda loss_fn, x, epsilon, step_size, steps, random_start=False:
            result(x.detach().clone()))


@pytest.mark.parametrize("result, says", [
    (lambda x: x[:2],
     r"attack \(.*<lambda>\) must return the perturbed images: a floating-point tensor of the "
     r"clean images' shape \(8, 3, 8, 8\) on cpu, got shape \(2, 3, 8, 8\)"),
    (lambda x: x * 255,
     r"what attack \(.*<lambda>\) returned holds float pixels in \[.*\], but float images must "
     r"lie in \[0, 1\]"),
])
@pytest.mark.parametrize("name", ["adversarial", "partial"])
def test_a_users_attack_returning_other_images_is_refused(result, says, name):
    attack = attack_returning(result)
    if name == "partial":
        method = R.FineTune(tiny_encoder(), "partial", num_classes=3, steps=2, attack=attack)
    else:
        method = AdversarialPretraining(TinyBackbone(), "cl", steps=2, attack=attack,
                                        augment=identity_views)
    x, labels = pixels(8), torch.arange(8) % 3
    batch = Batch((x, x) if name == "adversarial" else (x,), (x * 255).byte(), labels,
                  torch.arange(8))
    with pytest.raises(ValueError, match=says):
        method.training_step(batch)
