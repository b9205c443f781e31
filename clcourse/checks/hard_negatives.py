"""Checkers for notebook 04 (hard negatives): the DCL and HCL losses, and MoCHi's two kinds of synthetic
negatives (type 1: two hard negatives mixed; type 2: the query mixed into a hard negative)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..losses import positive_index
from ._core import ExerciseError, as_tensor, call_student, diagnose, passed, same, seeded


# ---------------------------------------------------------------- DCL and HCL

def debiased_loss_variant(z1: torch.Tensor, z2: torch.Tensor, temperature: float, tau_plus: float, beta: float | None,
                          *, normalise: bool = True, use_temperature: bool = True, floor: str = "N e^(-1/t)",
                          divide_by_one_minus_tau: bool = True, n_in_correction: bool = True,
                          keep_positive: bool = True, all_anchors: bool = True, reduce: str = "mean",
                          extra_negatives: int = 0, weights: str = "exp(beta s/t)", normalise_weights: str = "imp",
                          detach_weights: bool = False) -> torch.Tensor:
    """DCL (beta=None) or HCL written out term by term, with switches that reproduce the usual mistakes.

    With the defaults this is the correct loss (the authors' code); each switch changes one term."""
    batch_size = z1.shape[0]
    u = torch.cat([z1, z2])
    if normalise:
        u = F.normalize(u, dim=1)
    similarity = u @ u.T
    scaled = similarity / temperature if use_temperature else similarity
    anchors = torch.arange(2 * batch_size)
    partner = positive_index(batch_size)
    is_negative = ~torch.eye(2 * batch_size, dtype=torch.bool)
    is_negative[anchors, partner] = False
    pos = torch.exp(scaled[anchors, partner])
    neg = torch.exp(scaled[is_negative].view(2 * batch_size, -1))
    n = 2 * batch_size - 2 + extra_negatives
    if beta is None:
        mass = neg.sum(dim=1)
    else:
        if weights == "exp(beta s/t)":
            imp = torch.exp(beta * scaled[is_negative].view(2 * batch_size, -1))
        elif weights == "exp(beta s)":
            imp = torch.exp(beta * similarity[is_negative].view(2 * batch_size, -1))
        else:                                                    # "exp(s/t)": beta left out
            imp = neg
        if detach_weights:
            imp = imp.detach()
        weighted = (imp * neg).sum(dim=1)
        if normalise_weights == "imp":
            mass = weighted / imp.mean(dim=1)
        elif normalise_weights == "neg":
            mass = weighted / neg.mean(dim=1)
        elif normalise_weights == "mean":
            mass = (imp * neg).mean(dim=1) / imp.mean(dim=1)
        else:
            mass = weighted
    correction = tau_plus * (n if n_in_correction else 1) * pos
    estimate = (mass - correction) / ((1 - tau_plus) if divide_by_one_minus_tau else 1)
    if floor == "N e^(-1/t)":
        estimate = torch.clamp(estimate, min=n * math.exp(-1 / temperature))
    elif floor == "e^(-1/t)":
        estimate = torch.clamp(estimate, min=math.exp(-1 / temperature))
    per_anchor = -torch.log(pos / ((pos + estimate) if keep_positive else estimate))
    if not all_anchors:
        per_anchor = per_anchor[:batch_size]
    return per_anchor.sum() if reduce == "sum" else per_anchor.mean()


def _pairs(seed: int, batch_size: int, dim: int, close: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views of embeddings with rows of very different norms; with close=True the positives nearly
    coincide while the negatives stay near-orthogonal, so DCL's corrected mass falls below its floor."""
    g = seeded(seed)
    scale = lambda: torch.rand(batch_size, 1, generator=g, dtype=torch.float64) * 3 + 0.5  # noqa: E731
    z1 = torch.randn(batch_size, dim, generator=g, dtype=torch.float64)
    noise = torch.randn(batch_size, dim, generator=g, dtype=torch.float64)
    z2 = F.normalize(z1, dim=1) + 0.05 * F.normalize(noise, dim=1) if close else noise
    return z1 * scale(), z2 * scale()


def _common_mistakes(z1, z2, temperature, tau_plus, beta) -> dict[str, torch.Tensor]:
    loss = lambda **wrong: debiased_loss_variant(z1, z2, temperature, tau_plus, beta, **wrong)  # noqa: E731
    return {
        "Normalise the embeddings to unit length before the dot products.": loss(normalise=False),
        "Divide the similarities by the temperature t: pos = exp(s+/t), neg = exp(s/t).": loss(use_temperature=False),
        "Keep pos in the denominator: ℓ = −log pos / (pos + N_g). Dropping it is *Decoupled* Contrastive Learning "
        "(Yeh et al. 2021, lightly's DCLLoss): a different method with the same acronym.": loss(keep_positive=False),
        "Divide the corrected negative mass by (1 − τ⁺).": loss(divide_by_one_minus_tau=False),
        "Subtract τ⁺ · N · pos: the positive stands for the N τ⁺ false negatives expected among N negatives.":
            loss(n_in_correction=False),
        "N counts the negatives of one anchor: 2B − 2 (every view except the anchor itself and its positive).":
            loss(extra_negatives=1),
        "N counts the negatives of one anchor: 2B − 2, not 2B.": loss(extra_negatives=2),
        "The floor is N e^{−1/t} (N negatives, each at cosine −1), not e^{−1/t}.": loss(floor="e^(-1/t)"),
        "Average over all 2B anchors: the views of the second half are anchors too.": loss(all_anchors=False),
        "Average over the anchors (mean), not a sum.": loss(reduce="sum"),
    }


def _check_debiased(fn, name: str, cases, hcl_mistakes: bool) -> None:
    for seed, (batch_size, dim, temperature, tau_plus, beta, close) in enumerate(cases):
        z1, z2 = _pairs(seed, batch_size, dim, close)
        args = (temperature, tau_plus) if beta is None else (temperature, tau_plus, beta)
        context = f"B={batch_size}, D={dim}, t={temperature}, τ⁺={tau_plus}" + ("" if beta is None else f", β={beta}")
        student_z1, student_z2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        student = as_tensor(call_student(fn, student_z1, student_z2, *args, name=name), name)
        if student.dim() != 0:
            raise ExerciseError(f"{name} must return a scalar (the mean over anchors), got shape {tuple(student.shape)}.")
        reference_z1, reference_z2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        reference = debiased_loss_variant(reference_z1, reference_z2, temperature, tau_plus, beta)
        if torch.isnan(student):
            no_floor = debiased_loss_variant(z1, z2, temperature, tau_plus, beta, floor="none")
            hint = ("The corrected negative mass went negative (the positive is much closer than the negatives), so "
                    "the log is NaN: clamp it from below at N e^{−1/t}, e.g. torch.clamp(Ng, min=N * math.exp(-1 / t))."
                    if torch.isnan(no_floor) else "Look for a log or a division that can see a negative or zero value.")
            raise ExerciseError(f"{name} ({context}) returned NaN. {hint}")
        mistakes = _common_mistakes(z1, z2, temperature, tau_plus, beta)
        mistakes["Clamp the corrected negative mass from below at N e^{−1/t}: the estimate can go below the "
                 "smallest mass N negatives can have."] = debiased_loss_variant(z1, z2, temperature, tau_plus, beta,
                                                                                floor="none")
        mistakes["You return the plain InfoNCE: subtract the expected false negatives, τ⁺ N pos, and divide by "
                 "(1 − τ⁺)."] = debiased_loss_variant(z1, z2, temperature, 0.0, None)
        if hcl_mistakes:
            variant = lambda **wrong: debiased_loss_variant(z1, z2, temperature, tau_plus, beta, **wrong)  # noqa: E731
            mistakes.update({
                "β belongs in the exponent: imp = exp(β s / t) = neg ** β. The paper's pseudo-code leaves it out; "
                "that is a typo (HCL issues #1 and #5), the authors' code has it.": variant(weights="exp(s/t)"),
                "The importance weights are divided by the wrong mean: divide Σ imp · neg by imp.mean(), not by "
                "neg.mean() (the paper's pseudo-code typo).": variant(normalise_weights="neg"),
                "Normalise the importance weights: reweighted mass = Σ_j imp_j neg_j / mean_j(imp_j).":
                    variant(normalise_weights="none"),
                "The reweighted mass is a sum over negatives, Σ_j imp_j neg_j / mean(imp), not a mean over them.":
                    variant(normalise_weights="mean"),
                "β multiplies s / t: imp = exp(β s / t), not exp(β s).": variant(weights="exp(beta s)"),
                "You return DCL: weight each negative by its importance imp = exp(β s / t) (HCL with β = 0 is DCL).":
                    debiased_loss_variant(z1, z2, temperature, tau_plus, None),
            })
        diagnose(name, student, reference.detach(), mistakes, context)
        if not student.requires_grad:
            raise ExerciseError(f"{name} returns the right number but no gradient flows: don't detach, and don't "
                                "convert to numpy or Python floats inside the loss.")
        student.backward()
        reference.backward()
        if all(g is not None and same(g, r) for g, r in ((student_z1.grad, reference_z1.grad),
                                                          (student_z2.grad, reference_z2.grad))):
            continue
        if hcl_mistakes:
            detached_z1 = z1.clone().requires_grad_()
            debiased_loss_variant(detached_z1, z2.clone().requires_grad_(), temperature, tau_plus, beta,
                                  detach_weights=True).backward()
            if student_z1.grad is not None and same(student_z1.grad, detached_z1.grad):
                raise ExerciseError(f"{name} has the right value but the gradient of detached importance weights: "
                                    "the authors' code does not detach imp, so the gradient also flows through "
                                    "the weighting. Remove the .detach().")
        raise ExerciseError(f"{name} has the right value but the wrong gradient: is something detached?")


def check_dcl(fn, cases=((4, 8, 0.5, 0.1, False), (6, 32, 0.5, 0.3, True), (5, 3, 0.2, 0.05, False))) -> None:
    """fn(z1 [B, D], z2 [B, D], temperature, tau_plus) -> scalar Debiased Contrastive Learning loss
    (Chuang et al. 2020), compared with the reference in value and gradient."""
    _check_debiased(fn, "dcl_loss", [(b, d, t, tau_plus, None, close) for b, d, t, tau_plus, close in cases],
                    hcl_mistakes=False)
    passed("dcl_loss", "value and gradient match the reference, the floor N e^{−1/t} included")


def check_hcl(fn, cases=((4, 8, 0.5, 0.1, 3.0, False), (6, 32, 0.5, 0.3, 1.5, True),
                         (5, 3, 0.2, 0.05, 0.5, False))) -> None:
    """fn(z1 [B, D], z2 [B, D], temperature, tau_plus, beta) -> scalar HCL loss (Robinson et al. 2021, as in the
    authors' code), compared with the reference in value and gradient."""
    _check_debiased(fn, "hcl_loss", cases, hcl_mistakes=True)
    passed("hcl_loss", "value and gradient match the reference (β in the exponent, weights normalised by their mean)")


# ---------------------------------------------------------------- MoCHi

def _mochi_inputs(seed: int, batch_size: int = 4, queue_size: int = 20, dim: int = 6, n_hardest: int = 5,
                  mixes: int = 7):
    g = seeded(seed)
    unit = lambda n: F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=1)  # noqa: E731
    q, queue = unit(batch_size), unit(queue_size)
    hardest = (q @ queue.T).topk(n_hardest, dim=1).indices
    first = torch.randint(n_hardest, (batch_size, mixes), generator=g)
    second = (first + 1 + torch.randint(n_hardest - 1, (batch_size, mixes), generator=g)) % n_hardest
    weight = torch.rand(batch_size, mixes, generator=g, dtype=torch.float64)
    return q, queue, hardest, first, second, weight


def _query_zero_rows(queue: torch.Tensor, hardest: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The bug found in a reimplementation: [B, N, D] flattened to [B*N, D], indexed by positions in [0, N)."""
    return queue[hardest].reshape(-1, queue.shape[1])[positions]


def _call_mix(fn, name: str, *args, shape: tuple[int, ...], context: str) -> torch.Tensor:
    try:
        result = call_student(fn, *args, name=name)
    except (RuntimeError, IndexError) as error:
        raise ExerciseError(f"{name} failed ({context}): {error}. Pick each query's own rows: "
                            "hardest.gather(1, positions) gives queue rows [B, s], and queue[rows] is [B, s, D].") from None
    result = as_tensor(result, name)
    if result.shape != shape:
        raise ExerciseError(f"{name} ({context}) returned shape {tuple(result.shape)}, expected {shape} = [B, s, D]: "
                            "one mix per query and per draw. hardest.gather(1, positions) gives the queue rows [B, s].")
    return result


def reference_mix_negatives(queue, hardest, first, second, alpha) -> torch.Tensor:
    a = alpha.unsqueeze(2)
    return F.normalize(a * queue[hardest.gather(1, first)] + (1 - a) * queue[hardest.gather(1, second)], dim=2)


def check_mix_negatives(fn, cases=(0, 1, 2)) -> None:
    """fn(queue [K, D], hardest [B, N], first [B, s], second [B, s], alpha [B, s]) -> [B, s, D]: MoCHi's type-1
    negatives, normalize(alpha n_a + (1 - alpha) n_b) with n_a, n_b the queue rows at positions `first`,
    `second` of each query's hardest list."""
    for seed in cases:
        q, queue, hardest, first, second, alpha = _mochi_inputs(seed, batch_size=3 + seed)
        batch_size, mixes = first.shape
        context = f"B={batch_size}, N={hardest.shape[1]}, s={mixes}"
        student = _call_mix(fn, "mix_negatives", queue.clone(), hardest.clone(), first.clone(), second.clone(),
                            alpha.clone(), shape=(batch_size, mixes, queue.shape[1]), context=context)
        a = alpha.unsqueeze(2)
        rows_a, rows_b = queue[hardest.gather(1, first)], queue[hardest.gather(1, second)]
        diagnose("mix_negatives", student, reference_mix_negatives(queue, hardest, first, second, alpha), {
            "Every query mixes the hardest negatives of query 0: flattening queue[hardest] to [B·N, D] and indexing "
            "it with positions in [0, N) only ever reaches query 0's rows. Gather per query: "
            "hardest.gather(1, first).": F.normalize(a * _query_zero_rows(queue, hardest, first)
                                                     + (1 - a) * _query_zero_rows(queue, hardest, second), dim=2),
            "first and second are positions in each query's hardest list, not queue rows: the rows are "
            "hardest.gather(1, first).": F.normalize(a * queue[first] + (1 - a) * queue[second], dim=2),
            "Normalise the mixes back onto the unit sphere (F.normalize(..., dim=-1)): a mix of two unit vectors "
            "is shorter than 1.": a * rows_a + (1 - a) * rows_b,
            "Normalise each D-dimensional mix (dim=-1), not along the draws.":
                F.normalize(a * rows_a + (1 - a) * rows_b, dim=1),
            "α weighs the first negative: α n_a + (1 − α) n_b.": F.normalize((1 - a) * rows_a + a * rows_b, dim=2),
        }, context)
    passed("mix_negatives", "type-1 negatives: each query mixes two of its own hardest negatives, back on the sphere")


def reference_mix_query(q, queue, hardest, pick, beta) -> torch.Tensor:
    b = beta.unsqueeze(2)
    return F.normalize(b * q.detach().unsqueeze(1) + (1 - b) * queue[hardest.gather(1, pick)], dim=2)


def check_mix_query(fn, cases=(0, 1, 2)) -> None:
    """fn(q [B, D], queue [K, D], hardest [B, N], pick [B, s'], beta [B, s']) -> [B, s', D]: MoCHi's type-2
    negatives, normalize(beta q + (1 - beta) n) with n the queue row at position `pick` of the query's hardest
    list and beta in (0, 0.5); detached from q."""
    for seed in cases:
        q, queue, hardest, pick, _, beta = _mochi_inputs(10 + seed, batch_size=3 + seed)
        beta = 0.5 * beta
        batch_size, mixes = pick.shape
        context = f"B={batch_size}, N={hardest.shape[1]}, s'={mixes}"
        student_q = q.clone().requires_grad_()
        student = _call_mix(fn, "mix_query", student_q, queue.clone(), hardest.clone(), pick.clone(), beta.clone(),
                            shape=(batch_size, mixes, queue.shape[1]), context=context)
        b = beta.unsqueeze(2)
        rows = queue[hardest.gather(1, pick)]
        query = q.unsqueeze(1)
        diagnose("mix_query", student, reference_mix_query(q, queue, hardest, pick, beta), {
            "Every query is mixed with the hardest negatives of query 0: flattening queue[hardest] to [B·N, D] and "
            "indexing it with positions in [0, N) only ever reaches query 0's rows. Gather per query: "
            "hardest.gather(1, pick).": F.normalize(b * query + (1 - b) * _query_zero_rows(queue, hardest, pick), dim=2),
            "pick holds positions in each query's hardest list, not queue rows: the rows are hardest.gather(1, pick).":
                F.normalize(b * query + (1 - b) * queue[pick], dim=2),
            "Normalise the mixes back onto the unit sphere (F.normalize(..., dim=-1)).": b * query + (1 - b) * rows,
            "β (below 0.5) weighs the query so that the negative dominates: β q + (1 − β) n.":
                F.normalize((1 - b) * query + b * rows, dim=2),
            "Mix each query with its own hardest negatives: q[:, None] (one query per row), not query 0.":
                F.normalize(b * q[:1].unsqueeze(1) + (1 - b) * rows, dim=2),
        }, context)
        if student.requires_grad:
            raise ExerciseError("The synthetic negatives carry a gradient back into q: they are constants of the loss, "
                                "as in every reimplementation. Mix q.detach(), or build them under torch.no_grad().")
    passed("mix_query", "type-2 negatives: the query mixed into its own hard negatives, detached, on the sphere")
