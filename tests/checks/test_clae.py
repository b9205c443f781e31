"""Notebook 05's checkers accept correct solutions (also unusual but equivalent ones), name each
usual mistake, and report a bare stub as unfinished."""
import pytest
import torch

from clcourse.checks import ExerciseError, check_clae_objective, check_fgsm_contrastive


def fgsm(encode, x, epsilon, loss, *, sign=1.0, clip=True, signed=True, scale=None,
         detach_anchor=True,
         use_backward=False, evaluate=False, returns="images", detach_result=True):
    """FGSM on a contrastive loss; the keyword switches reproduce the usual mistakes."""
    if evaluate:
        encode.eval()
    x = x.detach().requires_grad_(True)
    z = encode(x)
    objective = loss(z.detach() if detach_anchor else z, z)
    if use_backward:
        objective.backward()
        gradient = x.grad
    else:
        gradient, = torch.autograd.grad(objective, x)
    direction = gradient.sign() if signed else gradient
    delta = sign * (epsilon if scale is None else scale) * direction
    if returns == "delta":
        return delta.detach()
    x_adv = x + delta
    if clip:
        x_adv = x_adv.clamp(0, 1)
    return x_adv.detach() if detach_result else x_adv


def fgsm_two_passes(encode, x, epsilon, loss):
    with torch.no_grad():
        anchors = encode(x)
    x = x.clone().requires_grad_(True)
    gradient, = torch.autograd.grad(loss(anchors, encode(x)), x)
    return torch.clamp(x + epsilon * torch.sign(gradient), 0, 1).detach()


def fgsm_as_one_pgd_step(encode, x, epsilon, loss):
    """Notebook 05's solution: FGSM is one PGD step of size epsilon from x."""
    x = x.detach().requires_grad_(True)
    z = encode(x)
    gradient, = torch.autograd.grad(loss(z.detach(), z), x)
    delta = (x.detach() + epsilon * gradient.sign() - x.detach()).clamp(-epsilon, epsilon)
    return (x.detach() + delta).clamp(0, 1)


@pytest.mark.parametrize("solution", [
    fgsm,
    fgsm_as_one_pgd_step,
    # a symmetric loss: twice the gradient, the same signs
    lambda *args: fgsm(*args, detach_anchor=False),
    fgsm_two_passes,
])
def test_correct_fgsm_passes(solution, capsys):
    check_fgsm_contrastive(solution)
    shown = solution.__name__ if solution.__name__.isidentifier() else "fgsm_contrastive"
    assert f"✓ {shown}: " in capsys.readouterr().out


@pytest.mark.parametrize("mistake, message", [
    (dict(sign=-1.0), "Step \\*up\\* the loss"),
    (dict(clip=False), "Clip the adversarial images"),
    (dict(signed=False), "along the \\*sign\\* of the gradient"),
    (dict(scale=1.0), "The step has size epsilon"),
    (dict(scale=0.0), "The images are unchanged"),
    (dict(returns="delta"), "not the perturbation delta"),
    (dict(use_backward=True), "left gradients in the encoder's weights.*torch.autograd.grad"),
    (dict(evaluate=True), "switched the encoder to eval mode"),
    (dict(detach_result=False), "still require a gradient"),
])
def test_fgsm_mistakes_are_named(mistake, message):
    with pytest.raises(ExerciseError, match=message):
        check_fgsm_contrastive(lambda *args: fgsm(*args, **mistake))


def objective(encode, encode_adversarial, attack, loss, view1, view2, alpha, *, joint=True,
              attacked=1, attack_route="adversarial", embed_route="adversarial", anchor="z1",
              alpha_on="adversarial",
              keep_clean=True, perturb=True, detach_adversarial=False, extra_clean_pass=False,
              returns=4):
    """CLAE's objective; the keyword switches reproduce the usual mistakes."""
    routes = {"clean": encode, "adversarial": encode_adversarial}
    if joint:
        z1, z2 = encode(torch.cat([view1, view2])).chunk(2)
    else:
        z1, z2 = encode(view1), encode(view2)
    target = view1 if attacked == 1 else view2
    x_adv = attack(routes[attack_route], target) if perturb else target
    z_adv = routes[embed_route](x_adv)
    if extra_clean_pass:
        encode(x_adv)
    if detach_adversarial:
        z_adv = z_adv.detach()
    anchor_embedding = z1 if anchor == "z1" else z2
    clean_weight, adversarial_weight = (1.0, alpha) if alpha_on == "adversarial" else \
        (alpha, 1.0) if alpha_on == "clean" else (1.0, 1.0)
    total = adversarial_weight * loss(anchor_embedding, z_adv)
    if keep_clean:
        total = total + clean_weight * loss(z1, z2)
    return (total, z1, z2, z_adv)[:returns]


def test_correct_objective_passes(capsys):
    check_clae_objective(objective)
    assert "✓ objective: " in capsys.readouterr().out


@pytest.mark.parametrize("mistake, message", [
    (dict(joint=False), "Embed both views in ONE clean pass"),
    (dict(attacked=2), "Attack view1"),
    (dict(attack_route="clean"), "Run the attack through encode_adversarial"),
    (dict(embed_route="clean"), "Embed the adversarial view with encode_adversarial"),
    (dict(perturb=False), "Perturb the view before embedding it"),
    (dict(anchor="z2"), "compares z_adv with z1"),
    (dict(alpha_on="clean"), "alpha weighs the adversarial term"),
    (dict(alpha_on="none"), "Weigh the adversarial term by alpha"),
    (dict(keep_clean=False), "Keep the clean term"),
    (dict(detach_adversarial=True), "z_adv is detached"),
    (dict(extra_clean_pass=True), "the clean batch-norm branch saw other passes"),
    (dict(returns=1), "must return four things"),
])
def test_objective_mistakes_are_named(mistake, message):
    with pytest.raises(ExerciseError, match=message):
        check_clae_objective(lambda *args: objective(*args, **mistake))


def test_a_swapped_pair_of_clean_embeddings_is_named():
    def swapped(*args):
        total, z1, z2, z_adv = objective(*args)
        return total, z2, z1, z_adv
    with pytest.raises(ExerciseError, match="z1 is the embedding of view1"):
        check_clae_objective(swapped)


@pytest.mark.parametrize("checker", [check_fgsm_contrastive, check_clae_objective])
def test_a_bare_stub_is_reported_as_not_implemented(checker):
    def stub(*args):
        raise NotImplementedError()
    with pytest.raises(ExerciseError, match="not implemented yet"):
        checker(stub)
