"""Robustness (clcourse/robustness.py): the two threat models (L-infinity and L2) stay in the ball
and lower the accuracy, robust accuracy counted in batches, a reproducible evaluation, torchattacks
as an oracle, bad input, AutoAttack skipped without torchattacks. (The methods it trains:
tests/methods/test_supervised.py.)"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import TinyBackbone, pixels, tiny_encoder, uint8_images

from clcourse import robustness as R
from clcourse.methods import AdversarialPretraining

# ---------------------------------------------------------------- threat models and robust accuracy

def separable_toy(n=96, seed=0):
    """Images whose class is the sign of a fixed linear function of the pixels, and a linear
    classifier trained on them to high clean accuracy."""
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
    # threat model I never reads the labels
    x_adv = attack(x, None if threat == "I" else labels)
    delta = (x_adv - x).flatten(1)
    size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert size.max() <= epsilon + 1e-5 and x_adv.min() >= 0 and x_adv.max() <= 1
    robust = R.robust_accuracy(model, x, labels, attack, batch_size=32, progress=False)
    assert clean > 0.9 and robust < clean - 0.3


def test_robust_accuracy_of_an_identity_attack_is_the_clean_accuracy_counted_in_batches():
    model, x, labels = separable_toy()
    labels = labels.clone()
    # some wrong, so the count is not trivial
    labels[:20] = 1 - labels[:20]
    expected = (model(x).argmax(1) == labels).float().mean().item()
    model.train()
    unattacked = R.robust_accuracy(model, x, labels, lambda x, y: x, batch_size=7, progress=False)
    assert unattacked == pytest.approx(expected)
    clean = R.robust_accuracy(model, x, labels, None, batch_size=500, progress=False)
    assert clean == pytest.approx(expected)
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
                          objective=lambda encode, x, t: used.append(encode)
                          or (lambda x_prime: encode(x_prime).sum()))
    assert used and used[0] == model.encode


@pytest.mark.parametrize("name, norm, epsilon, step",
                         [("PGD", "linf", 4 / 255, 1 / 255), ("PGDL2", "l2", 0.5, 0.1)])
def test_threat_model_2_is_torchattacks_pgd(torchattacks, name, norm, epsilon, step):
    model, x, labels = separable_toy()
    expected = getattr(torchattacks, name)(model, eps=epsilon, alpha=step, steps=7,
                                           random_start=False)(x, labels)
    ours = R.threat_model_2(model, epsilon, 7, step, definition="course", random_start=False,
                            norm=norm)(x, labels)
    assert torch.allclose(ours, expected, atol=1e-6)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("call, says", [
    (lambda: R.threat_model_2(nn.Identity(), epsilon=-0.1), "epsilon"),
    (lambda: R.threat_model_1(nn.Identity(), steps=0), "steps must be"),
    (lambda: R.threat_model_1(nn.Identity(), norm="l1"),
     r"norm must be one of \['linf', 'l2'\].*got 'l1'"),
    (lambda: AdversarialPretraining(TinyBackbone(), "byol"), r"scheme must be one of .*got 'byol'"),
    (lambda: AdversarialPretraining(TinyBackbone(), "cl", epsilon=-1.0), "epsilon"),
    (lambda: AdversarialPretraining(TinyBackbone(), "cl", steps=0), "steps must be"),
    (lambda: R.FineTune(tiny_encoder(), "half"),
     r"mode must be one of \['standard', 'partial', 'full'\], got 'half'"),
    (lambda: R.FineTune(nn.Linear(2, 2), "full"), "encoder must be a pretrained clcourse Method"),
    (lambda: R.require_scenario("AT-full"),
     r"scenario must be one of \['ST', 'AT', 'Partial-AT', 'Full-AT'\]"),
    (lambda: R.require_scheme("ssl"), r"scheme must be one of \['cl', 'scl', 'sl'\]"),
    (lambda: R.robust_accuracy(nn.Flatten(), pixels(4), None), "labels must be given"),
    (lambda: R.robust_accuracy(nn.Linear(192, 2), pixels(4), torch.arange(3)),
     "labels has 3 entries"),
    (lambda: R.robust_accuracy(nn.Linear(192, 2), pixels(4) * 255, torch.arange(4)), "images"),
    (lambda: R.threat_model_1(nn.Identity(), random_start="no"),
     "random_start must be True or False, got 'no'"),
    (lambda: R.threat_model_2(nn.Identity(), random_start="no"),
     "random_start must be True or False, got 'no'"),
    (lambda: R.threat_model_2(nn.Sequential(nn.Flatten(), nn.Linear(192, 3)))(
        pixels(4), torch.tensor([0, 1, 2, 3])),
     r"labels must be class indices in \[0, 2\] \(the classifier has 3 outputs\), "
     r"got labels from 0 to 3"),
    (lambda: R.threat_model_2(nn.Sequential(nn.Flatten(), nn.Linear(192, 3)))(
        pixels(4), torch.tensor([0, 1])),
     "labels has 2 entries but the images attacked has 4 rows"),
    (lambda: R.threat_model_2(nn.Sequential(nn.Flatten(), nn.Linear(192, 3)))(
        pixels(4), torch.zeros(4)),
     "labels must be a 1-D integer tensor"),
    (lambda: R.encoder_run_name("cl", "no", None), "adversarial must be True or False, got 'no'"),
    (lambda: R.pretrain_encoder("cl", False, preset=3),
     "preset must be a Preset, a preset's name or None"),
    (lambda: R.pretrain_encoder("cl", False, preset="tiny"),
     r"name must be one of \['colab', 'full', 'smoke'\]"),
])
def test_bad_input_is_a_clear_error(call, says):
    with pytest.raises(ValueError, match=says):
        call()


def flat_classifier(classes=3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, classes))


@pytest.mark.parametrize("attack", [None, "threat model II"])
def test_labels_outside_the_classifiers_classes_are_refused_before_any_attack(attack):
    """Labels 5 and 7 for a classifier of 3 classes: no accuracy of 0 (none can match), no
    IndexError from the cross-entropy of threat model II."""
    model = flat_classifier()
    attack = R.threat_model_2(model, steps=1) if attack else None
    with pytest.raises(ValueError,
                       match=r"labels must be class indices in \[0, 2\] \(the classifier has 3 "
                             r"outputs\), got labels from 0 to 7"):
        R.robust_accuracy(model, pixels(4), torch.tensor([0, 1, 5, 7]), attack, progress=False)
    with pytest.raises(ValueError, match=r"got labels from -1 to 1"):
        R.robust_accuracy(model, pixels(4), torch.tensor([0, 1, -1, 1]), attack, progress=False)


def users_attack(result):
    """An attack in pgd's signature that returns `result(x)` instead of perturbed images."""
    return (lambda loss_fn, x, epsilon, step_size, steps, random_start=False, norm="linf",
            generator=None: result(x))


@pytest.mark.parametrize("result, says", [
    (lambda x: x[:2],
     r"attack must return the perturbed images: a floating-point tensor of the clean images' shape "
     r"\(4, 3, 8, 8\) on cpu, got shape \(2, 3, 8, 8\)"),
    (lambda x: x * 255,
     r"what attack returned holds float pixels in \[.*\], but float images must lie in \[0, 1\]"),
    (lambda x: x.round().to(torch.uint8), r"got shape \(4, 3, 8, 8\), dtype torch.uint8"),
])
@pytest.mark.parametrize("threat", ["I", "II"])
def test_a_users_attack_returning_other_images_is_refused(result, says, threat):
    model = flat_classifier()
    threat_model = R.threat_model_1 if threat == "I" else R.threat_model_2
    attack = threat_model(model, steps=1, attack=users_attack(result))
    with pytest.raises(ValueError, match=says):
        R.robust_accuracy(model, pixels(4), torch.tensor([0, 1, 2, 1]), attack, progress=False)


def test_threat_model_1_with_a_last_batch_of_one_image_names_the_batch_and_the_remainder():
    model = flat_classifier()
    with pytest.raises(ValueError,
                       match=r"threat model I needs batches of at least 2 images .* got a batch of "
                             r"1: with robust_accuracy, choose a batch_size that does not leave "
                             r"one image over \(len\(images\) % batch_size == 1\)"):
        R.robust_accuracy(model, pixels(5), torch.tensor([0, 1, 2, 1, 0]),
                          R.threat_model_1(model, steps=1), batch_size=2, progress=False)
    assert 0 <= R.robust_accuracy(model, pixels(5), torch.tensor([0, 1, 2, 1, 0]),
                                  R.threat_model_1(model, steps=1),
                                  batch_size=3, progress=False) <= 1


def test_a_preset_is_given_by_name_or_as_a_preset():
    from clcourse.presets import get_preset
    assert R._robustness_budget("smoke") == (get_preset("smoke"), get_preset("smoke").robustness)
    assert R._robustness_budget(get_preset("colab"))[0].name == "colab"


def test_autoattack_without_torchattacks_is_skipped_with_a_message(monkeypatch, capsys):
    import sys
    # import torchattacks now raises ImportError
    monkeypatch.setitem(sys.modules, "torchattacks", None)
    model, x, labels = separable_toy()
    assert R.autoattack_accuracy(model, x, labels, progress=False) is None
    assert "AutoAttack skipped" in capsys.readouterr().out


# ---------------------------------------------------------------- the encoders each scenario leaves

def test_scenario_encoders_are_the_runs_of_the_grid_and_load_the_second_time(tmp_path, monkeypatch):
    from helpers import budget

    from clcourse.presets import RobustnessBudget
    monkeypatch.setenv("CLCOURSE_RUNS", str(tmp_path))
    robustness = RobustnessBudget(backbone="small_cnn", train_subset=None, test_subset=None,
                                  batch_size=16,
                                  pretrain_epochs=1, finetune_batch_size=16, finetune_epochs=1,
                                  train_steps=1,
                                  train_step_size=2 / 255, test_steps=1, eval_batch_size=16)
    preset = budget(robustness=robustness, warmup_epochs=0)
    data = (uint8_images(32), torch.arange(32) % 3)
    encoders = R.scenario_encoders("scl", preset=preset, data=data, progress=False)
    assert list(encoders) == list(R.TRAININGS) == ["ST", "AT", "Full-AT"]
    assert (isinstance(encoders["AT"], AdversarialPretraining)
            and isinstance(encoders["Full-AT"], R.FineTune))
    assert encoders["Full-AT"].mode == "full" and encoders["Full-AT"].scheme == "scl"
    assert not any(model.training for model in encoders.values())
    at, full_at = encoders["AT"].backbone.state_dict(), encoders["Full-AT"].backbone.state_dict()
    # Full-AT trained the encoder further
    assert any(not torch.equal(at[name], full_at[name]) for name in at)
    runs = sorted(path.name for path in (tmp_path / preset.name).iterdir())
    assert runs == ["nb08_scl_at_eps8_steps1", "nb08_scl_at_eps8_steps1_full", "nb08_scl_st"]
    again = R.scenario_encoders("scl", preset=preset, data=data, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(again["Full-AT"].state_dict().values(),
                                                 encoders["Full-AT"].state_dict().values()))
