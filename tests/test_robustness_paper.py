"""The paper definition of CL-Robustness' attacks (clcourse/robustness.py,
clcourse/methods/supervised.py) against the authors' attack code, restated in
tests/cl_robustness_reference.py: threat model I (SupConLoss at tau = 0.07, with labels for SCL,
without for CL), threat model II (cross-entropy of the normalised logits), the attacks of
adversarial pretraining (training mode, clean and adversarial images in separate passes) and of
adversarial fine-tuning, all from delta = 0 in steps of 0.01, agree to 1e-6 on random networks; the
course definition is a different attack."""
import copy

import cl_robustness_reference as authors
import pytest
import torch
import torch.nn.functional as F
from helpers import identity_views, pixels, tiny_encoder

from clcourse import robustness as R
from clcourse.methods import AdversarialPretraining, Batch
from clcourse.models import Backbone, SmallCNN

LABELS = torch.tensor([0, 1, 0, 1, 2, 2, 0, 1, 2, 0, 1, 2])


def batch_of(x):
    return Batch((x, x), (x * 255).round().byte(), LABELS[:len(x)], torch.arange(len(x)))


def largest_difference(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("scheme", ["cl", "scl"])
def test_threat_model_1_is_the_authors_pgd_linf(scheme):
    encoder = tiny_encoder(scheme).eval()
    x = pixels(12, seed=3)
    ours = R.threat_model_1(encoder.encode, 4 / 255, 6, scheme=scheme)(x, LABELS)
    theirs = authors.pgd_linf(authors.normalised(encoder.encode), x, 4 / 255, 0.01, 6,
                              LABELS if scheme == "scl" else None)
    assert largest_difference(ours, theirs) <= 1e-6
    # it attacked, to the ball's edge
    assert largest_difference(ours, x) == pytest.approx(4 / 255, abs=1e-6)
    other = R.threat_model_1(encoder.encode, 4 / 255, 6, scheme="cl" if scheme == "scl"
                             else "scl")(x, LABELS)
    # the labels change the attack
    assert largest_difference(other, ours) > 1e-3
    course = R.threat_model_1(encoder.encode, 4 / 255, 6, definition="course")(x, LABELS)
    assert largest_difference(course, ours) > 1e-3


@pytest.mark.parametrize("scheme", ["cl", "scl", "sl"])
def test_threat_model_2_is_the_authors_pgd_linf_end2end(scheme):
    model = R.FineTune(tiny_encoder(scheme), "standard", num_classes=3).eval()
    x = pixels(12, seed=4)
    ours = R.threat_model_2(model.classify, 4 / 255, 6)(x, LABELS)
    theirs = authors.pgd_linf_end2end(authors.normalised(model.classify), x, LABELS, 4 / 255, 0.01,
                                      6)
    assert largest_difference(ours, theirs) <= 1e-6
    raw_logits = R.threat_model_2(model.classify, 4 / 255, 6, step_size=0.01, random_start=False,
                                  definition="course")(x, LABELS)
    # normalising changes it
    assert largest_difference(raw_logits, ours) > 1e-3


def recording(attack):
    """`attack`, with every result kept."""
    results = []

    def run(*args, **kwargs):
        results.append(attack(*args, **kwargs))
        return results[-1]
    return run, results


@pytest.mark.parametrize("scheme", ["cl", "scl", "sl"])
def test_adversarial_pretraining_attacks_and_trains_as_the_authors_code(scheme):
    torch.manual_seed(0)
    options = (dict(num_classes=3) if scheme == "sl"
               else dict(projector_hidden=16, projector_out=8, temperature=0.3))
    method = AdversarialPretraining(Backbone(SmallCNN(width=4)), scheme,
                                    augment=identity_views, **options).train()
    # their attack moves batch-norm's running averages; ours does not
    reference = copy.deepcopy(method)
    method.attack_fn, results = recording(method.attack_fn)
    x, views = pixels(12, seed=5), (pixels(12, seed=6), pixels(12, seed=7))
    output = method.training_step(Batch(views, (x * 255).round().byte(), LABELS, torch.arange(12)))
    clean = (x * 255).round() / 255
    ours, = results

    # in training mode, as theirs: each pass normalised by its batch
    encode = reference.encode
    if scheme == "sl":
        theirs = authors.pgd_linf_end2end(authors.normalised(encode), clean, LABELS, 8 / 255, 0.01,
                                          5)
        expected = F.cross_entropy(encode(ours), LABELS) + F.cross_entropy(encode(views[0]), LABELS)
    else:
        theirs = authors.pgd_linf(authors.normalised(encode), clean, 8 / 255, 0.01, 5,
                                  LABELS if scheme == "scl" else None)
        labels = LABELS if scheme == "scl" else None

        # SupConLoss at the scheme's temperature, as its own loss
        def loss(z1, z2):
            return authors.supcon_loss(
                torch.stack([F.normalize(z1, dim=1), F.normalize(z2, dim=1)], dim=1),
                labels, 0.3, base_temperature=0.3)
        # the scheme's views: one pass, as ours
        z1, z2 = encode(torch.cat(views)).chunk(2)
        # the adversarial pair: two passes
        expected = loss(encode(clean), encode(ours)) + loss(z1, z2)
    assert largest_difference(ours, theirs) <= 1e-6
    assert largest_difference(ours, clean) > 4 / 255
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("mode", ["partial", "full"])
def test_adversarial_fine_tuning_attacks_as_the_authors_code(mode):
    model = R.FineTune(tiny_encoder("scl"), mode, num_classes=3)
    reference = copy.deepcopy(model)
    model.attack_fn, results = recording(model.attack_fn)
    x = pixels(12, seed=8)
    model.training_step(Batch((x,), (x * 255).round().byte(), LABELS, torch.arange(12)))
    theirs = authors.pgd_linf_end2end(authors.normalised(reference.classify), x, LABELS, 8 / 255,
                                      0.01, 5)
    ours, = results
    assert largest_difference(ours, theirs) <= 1e-6 and largest_difference(ours, x) > 4 / 255


def test_the_reference_supcon_loss_is_supcontrasts():
    # With tau = base_tau it is the course's SupCon (and InfoNCE without labels); away from it,
    # scaled by tau / 0.07.
    from clcourse.losses import info_nce, supcon
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(12, 5, generator=g), torch.randn(12, 5, generator=g)
    features = torch.stack([F.normalize(z1, dim=1), F.normalize(z2, dim=1)], dim=1)
    assert (authors.supcon_loss(features, LABELS).item()
            == pytest.approx(supcon(z1, z2, LABELS, 0.07).item(), rel=1e-5))
    assert (authors.supcon_loss(features).item()
            == pytest.approx(info_nce(z1, z2, 0.07).item(), rel=1e-5))
    assert authors.supcon_loss(features, LABELS, 0.1).item() == pytest.approx(
        0.1 / 0.07 * supcon(z1, z2, LABELS, 0.1).item(), rel=1e-5)


@pytest.mark.parametrize("call, says", [
    (lambda: R.threat_model_1(lambda x: x, definition="authors"),
     r"definition must be one of \['paper', 'course'\]"),
    (lambda: R.threat_model_1(lambda x: x, scheme="ssl"),
     r"scheme must be one of \['cl', 'scl', 'sl'\]"),
    (lambda: R.threat_model_2(lambda x: x, definition=""), "definition must be one of"),
    (lambda: R.FineTune(tiny_encoder(), "full", definition="Paper"), "got 'Paper'"),
    (lambda: R.encoder_run_name("cl", True, None, definition="ours"), "definition must be one of"),
])
def test_a_definition_that_is_neither_is_refused(call, says):
    with pytest.raises(ValueError, match=says):
        call()


def test_run_names_say_the_course_definition():
    from clcourse.presets import get_preset
    budget = get_preset("smoke").robustness
    assert R.encoder_run_name("scl", True, budget) == "nb08_scl_at_eps8_steps2"
    assert R.encoder_run_name("scl", True, budget,
                              definition="course") == "nb08_scl_at_eps8_steps2_course"
    assert R.encoder_run_name("scl", False, budget, definition="course") == "nb08_scl_st"
    assert get_preset("full").robustness.finetune_epochs == 200                     # the paper's
