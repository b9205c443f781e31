"""Checkers for notebook 06 (CACR): the two conditional weight matrices, the attraction and
repulsion terms, and the InfoNCE temperature and HCL tilt whose push weights are CACR's repulsion
weights.

The exercises work on unit embeddings z [V, B, D] of V = M + 1 views of B images, with squared
distances d^2 = ||u - v||^2 = 2 - 2 u . v. Every reference below is written term by term with
switches that reproduce the usual mistakes, each paired with the hint that fixes it;
`tests/checks/test_cacr.py` checks that the references are `clcourse.losses.cacr_terms`."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..losses import cacr_terms
from ..negatives import negative_weights_from_similarities
from ._core import ExerciseError, as_tensor, call_student, diagnose, exercise, passed, same, seeded

__all__ = ["CASES", "unit_views", "squared_distances", "attraction_weights_variant",
           "repulsion_weights_variant", "check_attraction_weights", "check_repulsion_weights",
           "attraction_term_variant", "repulsion_term_variant", "check_attraction_term",
           "check_repulsion_term", "equivalent_temperature_and_beta_variant",
           "check_equivalent_temperature_and_beta"]

# (V views, B images, D, tau, scale): V, B and V(V - 1)/2 differ so that a wrong layout or
# sum shows; tau != 1 so that a temperature multiplied, divided or forgotten gives three
# different numbers.
CASES = ((4, 7, 5, 1.3, 0.7), (3, 5, 8, 0.5, 2.0), (5, 3, 4, 2.5, 1.0))


def unit_views(seed: int, num_views: int, batch: int,
               dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw vectors x [V, B, D] (float64, requiring grad) and their unit versions z = normalize(x).

    Gradients are compared with respect to x: a student may compute d^2 as ||u - v||^2 or as 2 - 2
    u . v, which agree on unit vectors but differ in their gradient along u, a direction normalize
    projects out."""
    x = torch.randn(num_views, batch, dim, generator=seeded(seed),
                    dtype=torch.float64).requires_grad_(True)
    return x, F.normalize(x, dim=2)


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||x_n - y_m||^2 = 2 - 2 x_n . y_m for unit rows: [..., N, D] x [..., M, D] -> [..., N, M]."""
    return 2 - 2 * x @ y.transpose(-1, -2)


def _excluded(size: int) -> torch.Tensor:
    return torch.eye(size, dtype=torch.bool)


def _softmax_without(logits: torch.Tensor, excluded: torch.Tensor, dim: int = -1,
                     mask: str = "before"):
    """softmax over `dim` with `excluded` entries left out ("before"), zeroed after a softmax over
    all ("after"), or kept in ("none")."""
    if mask == "before":
        return torch.softmax(logits.masked_fill(excluded, float("-inf")), dim=dim)
    weights = torch.softmax(logits, dim=dim)
    return weights.masked_fill(excluded, 0.0) if mask == "after" else weights


# ---------------------------------------------------------------- the two weight matrices

def attraction_weights_variant(z: torch.Tensor, tau: float, *, sign: float = 1.0, cost: str = "d2",
                               temperature: str = "multiply", mask: str = "before",
                               dim: int = -1) -> torch.Tensor:
    """w+ [B, V, V]: for image i and query view a, softmax over the positives b != a of
    tau d^2(z^a_i, z^b_i). With the defaults this is the reference; each switch
    reproduces one mistake."""
    per_image = z.transpose(0, 1)                                                   # [B, V, D]
    d2 = squared_distances(per_image, per_image)
    value = {"d2": d2, "d": d2.clamp_min(0).sqrt(), "s": (2 - d2) / 2}[cost]
    scaled = {"multiply": tau * value, "divide": value / tau, "none": value}[temperature]
    return _softmax_without(sign * scaled, _excluded(z.shape[0]), dim=dim, mask=mask)


def repulsion_weights_variant(za: torch.Tensor, zb: torch.Tensor, tau: float, *, sign: float = -1.0,
                              cost: str = "d2", temperature: str = "multiply", mask: str = "before",
                              dim: int = 1, pairing: str = "za,zb") -> torch.Tensor:
    """w- [B, B]: for query za_i, softmax over the negatives j != i of -tau d^2(za_i, zb_j). With
    the defaults this is the reference; each switch reproduces one mistake (`pairing`: which rows
    are the queries, which the negatives)."""
    rows, columns = {"za,zb": (za, zb), "zb,za": (zb, za), "za,za": (za, za)}[pairing]
    d2 = squared_distances(rows, columns)
    value = {"d2": d2, "d": d2.clamp_min(0).sqrt(), "s": (2 - d2) / 2}[cost]
    scaled = {"multiply": tau * value, "divide": value / tau, "none": value}[temperature]
    return _softmax_without(sign * scaled, _excluded(za.shape[0]), dim=dim, mask=mask)


def _cost_and_concentration_mistakes(wrong, tau: str) -> dict[str, torch.Tensor]:
    """The last hints of both weight matrices: the distance instead of d², and the
    sharpness `tau` (κ⁺ or κ⁻) dividing or left out; `wrong(**switches)` is the matrix with
    a mistake's switches."""
    return {
        "Use the squared distance d², not the distance d.": wrong(cost="d"),
        f"Multiply d² by {tau}: in CACR {tau} is a sharpness (larger: sharper weights), not a "
        "temperature that divides.": wrong(temperature="divide"),
        f"Scale d² by {tau} before the softmax: this looks like {tau} = 1.":
            wrong(temperature="none"),
    }


def _attraction_weight_mistakes(z: torch.Tensor, tau: float) -> dict[str, torch.Tensor]:
    wrong = lambda **switches: attraction_weights_variant(z, tau, **switches)
    return {
        "The attraction weights favour the FARTHEST positives (the hard ones): softmax "
        "of +κ⁺ d², not −κ⁺ d².":
            wrong(sign=-1.0),
        "Leave the query view out of its own positives: fill b = a with −inf BEFORE the softmax "
        "(its d² is 0, so it would take a share of the weight).": wrong(mask="none"),
        "Mask b = a before the softmax, not after: zeroing it afterwards leaves weights that no "
        "longer sum to 1 over the M positives.": wrong(mask="after"),
        "Normalise over the positives b of each query view a (the last dimension): every row "
        "w⁺[i, a, :] sums to 1.": wrong(dim=1),
        "Use the squared distance d² = 2 − 2s, not the cosine similarity s: softmax(κ⁺ s) "
        "favours the closest positives.": wrong(cost="s"),
        **_cost_and_concentration_mistakes(wrong, "κ⁺"),
    }


def _repulsion_weight_mistakes(za: torch.Tensor, zb: torch.Tensor,
                               tau: float) -> dict[str, torch.Tensor]:
    wrong = lambda **switches: repulsion_weights_variant(za, zb, tau, **switches)
    return {
        "The repulsion weights favour the NEAREST negatives (the hard ones): softmax "
        "of −κ⁻ d², not +κ⁻ d².":
            wrong(sign=1.0),
        "Leave out j = i: zb[i] is the other view of the query's own image (its positive), not a "
        "negative. Fill the diagonal with −inf BEFORE the softmax.": wrong(mask="none"),
        "Mask j = i before the softmax, not after: zeroing it afterwards leaves weights that no "
        "longer sum to 1 over the B − 1 negatives.": wrong(mask="after"),
        "Normalise over the negatives j of each query i: every row sums to 1 (softmax "
        "over dim=1, the columns).":
            wrong(dim=0),
        "The queries are the rows of za and the negatives the rows of zb: d²[i, j] = ‖za_i − "
        "zb_j‖²; this looks like zb's rows as the queries.": wrong(pairing="zb,za"),
        "The negatives come from the OTHER view: d²(za_i, zb_j), not d²(za_i, za_j).":
            wrong(pairing="za,za"),
        "Use the squared distance d² = 2 − 2s, not the cosine similarity s: softmax(−κ⁻ s) "
        "favours the farthest negatives.": wrong(cost="s"),
        **_cost_and_concentration_mistakes(wrong, "κ⁻"),
    }


def _check_weights(fn, name: str, inputs_fn, reference_fn, mistakes_fn, what: str, cases) -> None:
    """The loop both weight checkers share. For each case, `inputs_fn(seed, case)` gives the
    embeddings (a tuple), tau, the context for messages, the expected shape and the wrong shapes it
    names ({shape: what the message says after "returned"}); the student's `fn(*embeddings, tau)`,
    on copies, must match `reference_fn(*embeddings, tau)`, else `diagnose` names the mistake among
    `mistakes_fn(*embeddings, tau)` that it matches."""
    for seed, case in enumerate(cases):
        embeddings, tau, context, expected, wrong_shapes = inputs_fn(seed, case)
        student = as_tensor(call_student(fn, *(e.clone() for e in embeddings), tau, name=name),
                            name)
        shape = tuple(student.shape)
        if shape != expected and shape in wrong_shapes:
            raise ExerciseError(f"{name} ({context}) returned {wrong_shapes[shape]}")
        diagnose(name, student, reference_fn(*embeddings, tau), mistakes_fn(*embeddings, tau),
                 context)
    passed(name, what)


def _attraction_inputs(seed: int, case: tuple):
    num_views, batch, dim, tau, _ = case
    _, z = unit_views(seed, num_views, batch, dim)
    image_first = "index it as w[i, a, b], image first: [B, V, V]."
    wrong_shapes = {shape: f"shape {shape}: {image_first}"
                    for shape in ((num_views, batch, num_views), (num_views, num_views, batch))}
    return ((z.detach(),), tau, f"V={num_views} views, B={batch} images, κ⁺={tau}",
            (batch, num_views, num_views), wrong_shapes)


def _repulsion_inputs(seed: int, case: tuple):
    num_views, batch, dim, tau, _ = case
    _, z = unit_views(seed, num_views, batch + 2, dim)      # B + 2 >= 5 images, so each query has
                                                            # negatives
    size = batch + 2
    wrong_shapes = {(size, size - 1): "[B, B − 1]: keep all B columns and give the query's own "
                                      "image (j = i) weight 0, so that column j stays image j."}
    return ((z[0].detach(), z[1].detach()), tau, f"B={size} images, κ⁻={tau}", (size, size),
            wrong_shapes)


@exercise()
def check_attraction_weights(fn, cases=CASES) -> None:
    """fn(z [V, B, D] unit embeddings, tau_pos) -> w+ [B, V, V], row (i, a) the softmax over the
    positives b != a of tau_pos d^2(z^a_i, z^b_i), 0 at b = a."""
    _check_weights(fn, "attraction_weights", _attraction_inputs, attraction_weights_variant,
                   _attraction_weight_mistakes,
                   "each query view's M positives weighted by softmax(κ⁺ d²), itself left out",
                   cases)


@exercise()
def check_repulsion_weights(fn, cases=CASES) -> None:
    """fn(za [B, D], zb [B, D] unit embeddings, tau_neg) -> w- [B, B], row i the softmax over the
    negatives j != i of -tau_neg d^2(za_i, zb_j), 0 at j = i."""
    _check_weights(fn, "repulsion_weights", _repulsion_inputs, repulsion_weights_variant,
                   _repulsion_weight_mistakes,
                   "each query's B − 1 negatives weighted by softmax(−κ⁻ d²), "
                   "its own image left out", cases)


# ---------------------------------------------------------------- the two terms

def attraction_term_variant(z: torch.Tensor, tau: float, alpha: float, *,
                            weights: str = "conditional", cost: str = "d2", use_alpha: bool = True,
                            sign: float = 1.0, reduce_views: str = "mean",
                            reduce_images: str = "mean",
                            reduce_positives: str = "sum") -> torch.Tensor:
    """L_CA = alpha mean_{i, a} sum_{b != a} w+_{i,ab} d^2(z^a_i, z^b_i). Reference
    with the defaults."""
    per_image = z.transpose(0, 1)
    d2 = squared_distances(per_image, per_image)                                         # [B, V, V]
    num_views = z.shape[0]
    if weights == "uniform":
        w = (~_excluded(num_views)).to(z.dtype).expand_as(d2) / (num_views - 1)
    else:
        w = attraction_weights_variant(z, tau)
        w = w.detach() if weights == "detached" else w
    value = {"d2": d2, "d": d2.clamp_min(1e-12).sqrt(), "s": (2 - d2) / 2}[cost]
    # [B, V]
    per_query = (w * value).sum(dim=2) if reduce_positives == "sum" else (w * value).mean(dim=2)
    per_query = per_query.sum(dim=1) if reduce_views == "sum" else per_query.mean(dim=1)
    total = per_query.sum() if reduce_images == "sum" else per_query.mean()
    return sign * (alpha if use_alpha else 1.0) * total


def repulsion_term_variant(z: torch.Tensor, tau: float, beta: float, *,
                           weights: str = "conditional", pairs: str = "a<b", cost: str = "d2",
                           use_beta: bool = True, sign: float = -1.0, reduce_pairs: str = "mean",
                           reduce_images: str = "mean",
                           reduce_negatives: str = "sum") -> torch.Tensor:
    """L_CR = -beta mean_{a < b} mean_i sum_{j != i} w-_{ij} d^2(z^a_i, z^b_j). Reference
    with the defaults."""
    num_views, batch = z.shape[:2]
    view_pairs = {"a<b": [(a, b) for a in range(num_views) for b in range(a + 1, num_views)],
                  "a!=b": [(a, b) for a in range(num_views) for b in range(num_views) if a != b],
                  "a<=b": [(a, b) for a in range(num_views) for b in range(a, num_views)],
                  "first": [(0, 1)],
                  "consecutive": [(a, a + 1) for a in range(num_views - 1)]}[pairs]
    terms = []
    for a, b in view_pairs:
        d2 = squared_distances(z[a], z[b])
        if weights == "uniform":
            w = (~_excluded(batch)).to(z.dtype) / (batch - 1)
        else:
            w = repulsion_weights_variant(z[a], z[b], tau)
            w = w.detach() if weights == "detached" else w
        value = {"d2": d2, "d": d2.clamp_min(1e-12).sqrt(), "s": (2 - d2) / 2}[cost]
        per_query = (w * value).sum(dim=1) if reduce_negatives == "sum" else (w * value).mean(dim=1)
        terms.append(per_query.sum() if reduce_images == "sum" else per_query.mean())
    total = torch.stack(terms).sum() if reduce_pairs == "sum" else torch.stack(terms).mean()
    return sign * (beta if use_beta else 1.0) * total


def _attraction_term_mistakes(z, tau, alpha) -> dict[str, torch.Tensor]:
    wrong = lambda **switches: attraction_term_variant(z, tau, alpha, **switches)
    return {
        "Weight each positive's cost by its attraction weight, Σ_b w⁺ γ⁺ "
        "d²: this is the plain mean over the positives (uniform weights, "
        "the paper's ablation).": wrong(weights="uniform"),
        "Multiply by γ⁺.": wrong(use_alpha=False),
        "The attraction is a cost to minimise: +γ⁺ Σ w⁺ d² (pulling positives together lowers it).":
            wrong(sign=-1.0),
        "The cost is γ⁺ d², the squared distance, not the cosine similarity.": wrong(cost="s"),
        "The cost is the squared distance d², not the distance d.": wrong(cost="d"),
        "Sum over the positives b (the weights already average them), then average: this "
        "looks like a mean over b.": wrong(reduce_positives="mean"),
        "Average over the query views a (1/V Σ_a), don't sum them.": wrong(reduce_views="sum"),
        "Average over the images (1/B Σ_i), don't sum them.": wrong(reduce_images="sum"),
    }


def _repulsion_term_mistakes(z, tau, beta) -> dict[str, torch.Tensor]:
    wrong = lambda **switches: repulsion_term_variant(z, tau, beta, **switches)
    return {
        "Repulsion pushes the negatives away: the term is −γ⁻ Σ w⁻ d² (growing distances lower "
        "it), so mind the minus sign.": wrong(sign=1.0),
        "Weight each negative's cost by its repulsion weight, Σ_j w⁻ d²: this is the plain mean "
        "over the negatives (uniform weights, the paper's ablation).": wrong(weights="uniform"),
        "Multiply by γ⁻.": wrong(use_beta=False),
        "Use each pair of views once, a < b, with the query from the earlier view a "
        "(the authors' code): this looks like all ordered pairs a ≠ b.": wrong(pairs="a!=b"),
        "Only pairs of two different views, a < b: this looks like a ≤ b, a view "
        "paired with itself too.":
            wrong(pairs="a<=b"),
        "Use every pair a < b of the V views: this looks like the pair (0, 1) only.":
            wrong(pairs="first"),
        "Use every pair a < b of the V views, not only neighbours (a, a + 1).":
            wrong(pairs="consecutive"),
        "Average over the V(V − 1)/2 pairs of views, don't sum them.": wrong(reduce_pairs="sum"),
        "The cost is γ⁻ d², the squared distance, not the cosine similarity.": wrong(cost="s"),
        "The cost is the squared distance d², not the distance d.": wrong(cost="d"),
        "Sum over the negatives j (the weights already average them), then average: this "
        "looks like a mean over j.": wrong(reduce_negatives="mean"),
        "Average over the images (1/B Σ_i), don't sum them.": wrong(reduce_images="sum"),
    }


def _check_term(fn, name: str, reference_fn, mistakes_fn, what: str, cases) -> None:
    for seed, (num_views, batch, dim, tau, scale) in enumerate(cases):
        context = f"V={num_views} views, B={batch} images, κ={tau}, γ={scale}"
        student_x, student_z = unit_views(seed, num_views, batch, dim)
        student = as_tensor(call_student(fn, student_z, tau, scale, name=name), name)
        if student.dim() != 0:
            raise ExerciseError(f"{name} ({context}) must return a scalar (averaged over images "
                                f"and views), got shape {tuple(student.shape)}.")
        reference_x, reference_z = unit_views(seed, num_views, batch, dim)
        reference = reference_fn(reference_z, tau, scale)
        z = reference_z.detach()
        diagnose(name, student, reference.detach(), mistakes_fn(z, tau, scale), context)
        if not student.requires_grad:
            raise ExerciseError(f"{name} ({context}) has the right value but no gradient "
                                "flows: don't detach, and don't convert to numpy or Python "
                                "numbers inside the term.")
        student.backward()
        reference.backward()
        if student_x.grad is not None and same(student_x.grad, reference_x.grad):
            continue
        detached_x, detached_z = unit_views(seed, num_views, batch, dim)
        reference_fn(detached_z, tau, scale, weights="detached").backward()
        if student_x.grad is not None and same(student_x.grad, detached_x.grad):
            raise ExerciseError(f"{name} ({context}) has the right value but the gradient of "
                                "detached weights: the authors' small-scale code lets the "
                                "gradient flow through the softmax weights too. Remove the "
                                ".detach() (or torch.no_grad) around the weights.")
        raise ExerciseError(f"{name} ({context}) has the right value but the wrong gradient: "
                            "is something detached?")
    passed(name, what)


@exercise()
def check_attraction_term(fn, cases=CASES) -> None:
    """fn(z [V, B, D] unit embeddings, tau_pos, alpha) -> L_CA = alpha mean_{i, a} sum_{b != a} w+
    d^2, compared with the reference in value and gradient."""
    _check_term(fn, "attraction_term", attraction_term_variant, _attraction_term_mistakes,
                "value and gradient match the reference (γ⁺ Σ_b w⁺ d², averaged over "
                "images and query views)", cases)


@exercise()
def check_repulsion_term(fn, cases=CASES) -> None:
    """fn(z [V, B, D] unit embeddings, tau_neg, beta) -> L_CR = -beta mean_{a < b} mean_i
    sum_{j != i} w- d^2, compared with the reference in value and gradient."""
    _check_term(fn, "repulsion_term", repulsion_term_variant, _repulsion_term_mistakes,
                "value and gradient match the reference (−γ⁻ Σ_j w⁻ d², averaged over "
                "images and pairs a < b)", cases)


# ---------------------------------------------------------------- CACR's push, InfoNCE's, HCL's

# (kappa-, HCL's temperature, B images, D): kappa- and the temperature differ from 1/2, 1 and each
# other's double, so that a factor 2 forgotten, a division for a multiplication or the temperature
# left out each give another number.
EQUIVALENCE_CASES = ((0.9, 0.2, 7, 5), (2.0, 0.5, 5, 8), (0.3, 1.5, 6, 3))


def equivalent_temperature_and_beta_variant(tau_neg: float, hcl_temperature: float, *,
                                            factor: float = 2.0, temperature: str = "inverse",
                                            beta: str = "times") -> tuple[float, float]:
    """The InfoNCE temperature 1 / (2 kappa-) and the HCL beta = 2 kappa- t whose weights on the
    negatives are CACR's repulsion weights softmax(2 kappa- s): with the defaults, the reference;
    each switch reproduces one mistake."""
    tilt = factor * tau_neg                                            # on the raw cosine s
    chosen_temperature = {"inverse": 1 / tilt, "same": tilt}[temperature]
    chosen_beta = {"times": tilt * hcl_temperature, "divide": tilt / hcl_temperature,
                   "none": tilt}[beta]
    return chosen_temperature, chosen_beta


def _equivalence_mistakes(tau_neg: float, hcl_temperature: float) -> dict[str, tuple]:
    """hint -> (temperature, beta) that mistake gives."""
    wrong = lambda **switches: equivalent_temperature_and_beta_variant(tau_neg, hcl_temperature,
                                                                        **switches)
    return {
        "Mind the 2 of d² = 2 − 2s: −κ⁻ d² = −2κ⁻ + 2κ⁻ s, so the tilt on the cosine is 2κ⁻, "
        "not κ⁻.": wrong(factor=1.0),
        "A temperature divides the cosine: τ = 1 / (2κ⁻), the inverse of the tilt 2κ⁻.":
            wrong(temperature="same"),
        "HCL's importance weights are exp(β s / τ): the tilt on the cosine is β / τ, so "
        "β = 2κ⁻ τ (multiply by HCL's temperature, don't divide).": wrong(beta="divide"),
        "HCL's importance weights are exp(β s / τ): the tilt on the cosine is β / τ, not β; "
        "use HCL's temperature.": wrong(beta="none"),
    }


def _two_numbers(value, name: str) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ExerciseError(f"{name} must return two numbers, (temperature, beta), got {value!r}.")
    numbers = []
    for part in value:
        if isinstance(part, torch.Tensor) and part.numel() == 1:
            part = part.item()
        if isinstance(part, bool) or not isinstance(part, (int, float)):
            raise ExerciseError(f"{name} must return two numbers, (temperature, beta), got "
                                f"{value!r}.")
        numbers.append(float(part))
    return numbers[0], numbers[1]


def _push_weights(za: torch.Tensor, zb: torch.Tensor, temperature: float,
                  beta: float, hcl_temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """On the negatives j != i of each query za_i: InfoNCE's push weights normalised over the
    negatives (p_j / sum p, the positive s(za_i, zb_i) in the softmax), and HCL's importance
    weights exp(beta s_j / t) normalised, both [B, B - 1]."""
    similarity = za @ zb.T
    negatives = similarity[~_excluded(len(za))].view(len(za), -1)
    infonce = negative_weights_from_similarities(similarity.diagonal(), negatives, temperature)
    importance = (beta * negatives / hcl_temperature).exp()
    return (infonce / infonce.sum(dim=1, keepdim=True),
            importance / importance.sum(dim=1, keepdim=True))


@exercise()
def check_equivalent_temperature_and_beta(fn, cases=EQUIVALENCE_CASES) -> None:
    """fn(tau_neg, hcl_temperature) -> (temperature, beta): InfoNCE's push weights at `temperature`
    and HCL's importance weights at `beta` and `hcl_temperature`, both normalised over a query's
    negatives, are CACR's repulsion weights at kappa- = tau_neg (`clcourse.losses.cacr_terms`)."""
    name = "equivalent_temperature_and_beta"
    for seed, (tau_neg, hcl_temperature, batch, dim) in enumerate(cases):
        context = f"κ⁻={tau_neg}, HCL's τ={hcl_temperature}"
        temperature, beta = _two_numbers(call_student(fn, tau_neg, hcl_temperature, name=name),
                                         name)
        if temperature <= 0:
            raise ExerciseError(f"{name} ({context}) returned the temperature {temperature}: a "
                                "temperature is positive.")
        _, z = unit_views(seed, 2, batch, dim)
        za, zb = z[0].detach(), z[1].detach()
        cacr_weights = cacr_terms([za, zb], tau_neg=tau_neg).repulsion_weights[0]
        cacr_weights = cacr_weights[~_excluded(batch)].view(batch, -1)
        infonce, hcl = _push_weights(za, zb, temperature, beta, hcl_temperature)
        temperature_right, beta_right = same(infonce, cacr_weights), same(hcl, cacr_weights)
        if temperature_right and beta_right:
            continue
        which, index, got = (("beta", 1, beta) if temperature_right
                             else ("temperature", 0, temperature))
        for hint, wrong in _equivalence_mistakes(tau_neg, hcl_temperature).items():
            if math.isclose(got, wrong[index], rel_tol=1e-9):
                raise ExerciseError(f"{name} ({context}) is not right yet. {hint}")
        raise ExerciseError(f"{name} ({context}): at {which} = {got:.6g} the weights on the "
                            "negatives are not CACR's repulsion weights softmax(−κ⁻ d²). Write "
                            "−κ⁻ d² with d² = 2 − 2s and read off the factor on s.")
    passed(name, "InfoNCE's push and HCL's tilt at these values are CACR's repulsion weights")
