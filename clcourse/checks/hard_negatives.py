"""Checkers for notebook 04 (hard negatives): the DCL and HCL losses, and MoCHi's two kinds
of synthetic negatives (type 1: two hard negatives mixed; type 2: the query mixed into a
hard negative)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..losses import dcl, hcl, positive_index
from ._core import ExerciseError, as_tensor, call_student, diagnose, exercise, passed, same, seeded

__all__ = ["debiased_loss_variant", "check_dcl", "check_hcl", "mochi_logits_variant",
           "check_mochi_logits"]


# ---------------------------------------------------------------- DCL and HCL

def debiased_loss_variant(z1: torch.Tensor, z2: torch.Tensor, temperature: float, tau_plus: float,
                          beta: float | None, *, normalise: bool = True,
                          use_temperature: bool = True, floor: str = "N e^(-1/t)",
                          divide_by_one_minus_tau: bool = True, n_in_correction: bool = True,
                          keep_positive: bool = True, all_anchors: bool = True,
                          reduce: str = "mean", extra_negatives: int = 0,
                          weights: str = "exp(beta s/t)", normalise_weights: str = "imp",
                          detach_weights: bool = False) -> torch.Tensor:
    """DCL (beta=None) or HCL written out term by term, with switches that reproduce
    the usual mistakes.

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


def _pairs(seed: int, batch_size: int, dim: int,
           close: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views of embeddings with rows of very different norms; with close=True the positives
    nearly coincide while the negatives stay near-orthogonal, so DCL's corrected mass falls
    below its floor."""
    g = seeded(seed)
    scale = lambda: torch.rand(batch_size, 1, generator=g, dtype=torch.float64) * 3 + 0.5
    z1 = torch.randn(batch_size, dim, generator=g, dtype=torch.float64)
    noise = torch.randn(batch_size, dim, generator=g, dtype=torch.float64)
    z2 = F.normalize(z1, dim=1) + 0.05 * F.normalize(noise, dim=1) if close else noise
    return z1 * scale(), z2 * scale()


def _common_mistakes(z1, z2, temperature, tau_plus, beta) -> dict[str, torch.Tensor]:
    loss = lambda **wrong: debiased_loss_variant(z1, z2, temperature, tau_plus, beta, **wrong)
    return {
        "Normalise the embeddings to unit length before the dot products.": loss(normalise=False),
        "Divide the similarities by the temperature t: pos = exp(s+/t), neg = exp(s/t).":
            loss(use_temperature=False),
        "Keep pos in the denominator: ℓ = −log pos / (pos + N_g). Dropping it is "
        "*Decoupled* Contrastive Learning (Yeh et al. 2021, lightly's DCLLoss): a different "
        "method with the same acronym.": loss(keep_positive=False),
        "Divide the corrected negative mass by (1 − τ⁺).": loss(divide_by_one_minus_tau=False),
        "Subtract τ⁺ · N · pos: the positive stands for the N τ⁺ false negatives "
        "expected among N negatives.":
            loss(n_in_correction=False),
        "N counts the negatives of one anchor: 2B − 2 (every view except the anchor "
        "itself and its positive).":
            loss(extra_negatives=1),
        "N counts the negatives of one anchor: 2B − 2, not 2B.": loss(extra_negatives=2),
        "The floor is N e^{−1/t} (N negatives, each at cosine −1), not e^{−1/t}.":
            loss(floor="e^(-1/t)"),
        "Average over all 2B anchors: the views of the second half are anchors too.":
            loss(all_anchors=False),
        "Average over the anchors (mean), not a sum.": loss(reduce="sum"),
    }


def _check_debiased(fn, name: str, cases, hcl_mistakes: bool) -> None:
    for seed, (batch_size, dim, temperature, tau_plus, beta, close) in enumerate(cases):
        z1, z2 = _pairs(seed, batch_size, dim, close)
        args = (temperature, tau_plus) if beta is None else (temperature, tau_plus, beta)
        context = (f"B={batch_size}, D={dim}, t={temperature}, τ⁺={tau_plus}"
                   + ("" if beta is None else f", β={beta}"))
        student_z1, student_z2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        student = as_tensor(call_student(fn, student_z1, student_z2, *args, name=name), name)
        if student.dim() != 0:
            raise ExerciseError(f"{name} must return a scalar (the mean over anchors), got shape "
                                f"{tuple(student.shape)}.")
        reference_z1, reference_z2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        reference = debiased_loss_variant(reference_z1, reference_z2, temperature, tau_plus, beta)
        if torch.isnan(student):
            no_floor = debiased_loss_variant(z1, z2, temperature, tau_plus, beta, floor="none")
            hint = ("The corrected negative mass went negative (the positive is much closer than "
                    "the negatives), so the log is NaN: clamp it from below at N e^{−1/t}, e.g. "
                    "torch.clamp(Ng, min=N * math.exp(-1 / t))."
                    if torch.isnan(no_floor)
                    else "Look for a log or a division that can see a negative or zero value.")
            raise ExerciseError(f"{name} ({context}) returned NaN. {hint}")
        mistakes = _common_mistakes(z1, z2, temperature, tau_plus, beta)
        mistakes[
            "Clamp the corrected negative mass from below at N e^{−1/t}: the estimate can go "
            "below the smallest mass N negatives can have."
        ] = debiased_loss_variant(z1, z2, temperature, tau_plus, beta, floor="none")
        mistakes[
            "You return the plain InfoNCE: subtract the expected false negatives, τ⁺ N pos, "
            "and divide by (1 − τ⁺)."
        ] = debiased_loss_variant(z1, z2, temperature, 0.0, None)
        if hcl_mistakes:
            variant = lambda **wrong: debiased_loss_variant(z1, z2, temperature, tau_plus, beta,
                                                            **wrong)
            mistakes.update({
                "β belongs in the exponent: imp = exp(β s / t) = neg ** β. The "
                "paper's pseudo-code leaves it out; that is a typo "
                "(HCL issues #1 and #5), the authors' code has it.": variant(weights="exp(s/t)"),
                "The importance weights are divided by the wrong mean: "
                "divide Σ imp · neg by imp.mean(), not by neg.mean() (the "
                "paper's pseudo-code typo).": variant(normalise_weights="neg"),
                "Normalise the importance weights: reweighted mass = Σ_j imp_j "
                "neg_j / mean_j(imp_j).":
                    variant(normalise_weights="none"),
                "The reweighted mass is a sum over negatives, Σ_j imp_j "
                "neg_j / mean(imp), not a mean over them.":
                    variant(normalise_weights="mean"),
                "β multiplies s / t: imp = exp(β s / t), not exp(β s).":
                    variant(weights="exp(beta s)"),
                "You return DCL: weight each negative by its importance imp = exp(β s / t) "
                "(HCL with β = 0 is DCL).":
                    debiased_loss_variant(z1, z2, temperature, tau_plus, None),
            })
        diagnose(name, student, reference.detach(), mistakes, context)
        if not student.requires_grad:
            raise ExerciseError(f"{name} returns the right number but no gradient flows: "
                                "don't detach, and don't convert to numpy or Python "
                                "floats inside the loss.")
        student.backward()
        reference.backward()
        if all(g is not None and same(g, r) for g, r in ((student_z1.grad, reference_z1.grad),
                                                          (student_z2.grad, reference_z2.grad))):
            continue
        if hcl_mistakes:
            detached_z1 = z1.clone().requires_grad_()
            debiased_loss_variant(detached_z1, z2.clone().requires_grad_(), temperature, tau_plus,
                                  beta, detach_weights=True).backward()
            if student_z1.grad is not None and same(student_z1.grad, detached_z1.grad):
                raise ExerciseError(f"{name} has the right value but the gradient of "
                                    "detached importance weights: the authors' code does "
                                    "not detach imp, so the gradient also flows through the "
                                    "weighting. Remove the .detach().")
        raise ExerciseError(f"{name} has the right value but the wrong gradient: "
                            "is something detached?")


@exercise(stands_for=dcl)
def check_dcl(fn,
              cases=((4, 8, 0.5, 0.1, False), (6, 32, 0.5, 0.3, True),
                     (5, 3, 0.2, 0.05, False))) -> None:
    """fn(z1 [B, D], z2 [B, D], temperature, tau_plus) -> scalar Debiased Contrastive Learning loss
    (Chuang et al. 2020), compared with the reference in value and gradient."""
    _check_debiased(fn, "dcl_loss",
                    [(b, d, t, tau_plus, None, close) for b, d, t, tau_plus, close in cases],
                    hcl_mistakes=False)
    passed("dcl_loss", "value and gradient match the reference, the floor N e^{−1/t} included")


@exercise(stands_for=hcl)
def check_hcl(fn, cases=((4, 8, 0.5, 0.1, 3.0, False), (6, 32, 0.5, 0.3, 1.5, True),
                         (5, 3, 0.2, 0.05, 0.5, False))) -> None:
    """fn(z1 [B, D], z2 [B, D], temperature, tau_plus, beta) -> scalar HCL loss (Robinson et al.
    2021, as in the authors' code), compared with the reference in value and gradient."""
    _check_debiased(fn, "hcl_loss", cases, hcl_mistakes=True)
    passed("hcl_loss", "value and gradient match the reference (β in the exponent, weights "
                       "normalised by their mean)")


# ---------------------------------------------------------------- MoCHi

def _mochi_inputs(seed: int, batch_size: int, queue_size: int = 20, dim: int = 6,
                  n_hardest: int = 5, n_mix_negatives: int = 7, n_mix_query: int = 4):
    """Unit queries, keys and queue, and MoCHi's random draws as positions in each
    query's hardest list."""
    g = seeded(seed)
    unit = lambda n: F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=1)
    q, k, queue = unit(batch_size), unit(batch_size), unit(queue_size)
    first = torch.randint(n_hardest, (batch_size, n_mix_negatives), generator=g)
    second = (first + 1 + torch.randint(n_hardest - 1,
                                        (batch_size, n_mix_negatives), generator=g)) % n_hardest
    alpha = torch.rand(batch_size, n_mix_negatives, generator=g, dtype=torch.float64)
    pick = torch.randint(n_hardest, (batch_size, n_mix_query), generator=g)
    beta_mix = 0.5 * torch.rand(batch_size, n_mix_query, generator=g, dtype=torch.float64)
    return q, k, queue, n_hardest, first, second, alpha, pick, beta_mix


def mochi_logits_variant(q, k, queue, temperature, n_hardest, first, second, alpha, pick, beta_mix,
                         *, query_zero: bool = False, positions_as_rows: bool = False,
                         easiest: bool = False, normalise: bool = True, alpha_swapped: bool = False,
                         beta_swapped: bool = False, first_query: bool = False, detach: bool = True,
                         synthetic_temperature: bool = True,
                         synthetic_first: bool = False) -> torch.Tensor:
    """MoCHi's logits [B, 1 + K + s + s'] written out, with switches for the usual mistakes;
    with the defaults this is the reference:
    [q.k, q.n_1..q.n_K, q.h_1..q.h_s, q.h'_1..q.h'_s'] / temperature."""
    hardest = (q @ queue.T).topk(n_hardest, dim=1, largest=not easiest).indices  # [B, N]

    def rows(positions):
        if positions_as_rows:
            return queue[positions]
        if query_zero:      # [B, N, D] flattened to [B*N, D], indexed by positions in [0, N): query
                            # 0's rows
            return queue[hardest].reshape(-1, queue.shape[1])[positions]
        return queue[hardest.gather(1, positions)]

    def unit(x):
        return F.normalize(x, dim=-1) if normalise else x

    a = alpha.unsqueeze(-1)
    b = beta_mix.unsqueeze(-1)
    if alpha_swapped:
        a = 1 - a
    if beta_swapped:
        b = 1 - b
    query = q[:1] if first_query else q
    query = query.detach() if detach else query
    type1 = unit(a * rows(first) + (1 - a) * rows(second))
    type2 = unit(b * query.unsqueeze(1) + (1 - b) * rows(pick))
    synthetic = torch.cat([type1, type2], dim=1)
    if detach:
        synthetic = synthetic.detach()
    synthetic_logits = torch.einsum("bd,bmd->bm", q, synthetic)
    real = torch.cat([(q * k.detach()).sum(dim=1, keepdim=True), q @ queue.detach().T],
                     dim=1) / temperature
    synthetic_logits = synthetic_logits / temperature if synthetic_temperature else synthetic_logits
    if synthetic_first:
        return torch.cat([real[:, :1], synthetic_logits, real[:, 1:]], dim=1)
    return torch.cat([real, synthetic_logits], dim=1)


@exercise()
def check_mochi_logits(fn, cases=((4, 0.2), (3, 0.1), (5, 0.5))) -> None:
    """fn(q [B, D], k [B, D], queue [K, D], temperature, n_hardest, first [B, s], second [B, s],
    alpha [B, s], pick [B, s'], beta_mix [B, s']) -> logits [B, 1 + K + s + s']: MoCo's logits, then
    the logits of MoCHi's synthetic negatives. Each query's N = n_hardest hardest queue entries
    (largest q . n); type 1: normalize(alpha n_a + (1 - alpha) n_b) with n_a, n_b at positions
    first, second of that query's list; type 2: normalize(beta_mix q + (1 - beta_mix) n_c) with n_c
    at position pick; synthetic negatives detached, all logits divided by the temperature."""
    for seed, (batch_size, temperature) in enumerate(cases):
        inputs = _mochi_inputs(seed, batch_size)
        q, k, queue, n_hardest, first, second, alpha, pick, beta_mix = inputs
        s, s_query = first.shape[1], pick.shape[1]
        width = 1 + len(queue) + s + s_query
        context = (f"B={batch_size}, K={len(queue)}, N={n_hardest}, s={s}, s'={s_query}, "
                   f"temperature={temperature}")
        student_q, student_k = q.clone().requires_grad_(), k.clone().requires_grad_()
        arguments = (student_q, student_k, queue.clone(), temperature, n_hardest, first.clone(),
                     second.clone(), alpha.clone(), pick.clone(), beta_mix.clone())
        try:
            logits = call_student(fn, *arguments, name="mochi_logits",
                                  raising=(RuntimeError, IndexError))
        except (RuntimeError, IndexError) as error:
            raise ExerciseError(f"mochi_logits failed ({context}): {error}. Pick each query's own "
                                "rows: hardest.gather(1, positions) gives queue rows [B, s], "
                                "queue[rows] is [B, s, D].") from None
        logits = as_tensor(logits, "mochi_logits")
        shapes = {
            (batch_size, 1 + len(queue)):
                "only MoCo's logits: append the s + s' logits of the synthetic negatives, "
                "q · h / τ, after the queue's.",
            (batch_size, 1 + len(queue) + s):
                "no type-2 logits: append the s' mixes of the query with its hard negatives "
                "after the s type-1 mixes.",
            (batch_size, 1 + len(queue) + s_query):
                "no type-1 logits: the s mixes of two hard negatives come first, then the s' "
                "mixes with the query.",
        }
        if logits.shape != (batch_size, width):
            hint = shapes.get(tuple(logits.shape), "expected [B, 1 + K + s + s'] = "
                                                   f"[{batch_size}, {width}].")
            raise ExerciseError(f"mochi_logits ({context}) returned shape "
                                f"{tuple(logits.shape)}: {hint}")
        variant = lambda **wrong: mochi_logits_variant(*inputs[:3], temperature, *inputs[3:],
                                                       **wrong)
        diagnose("mochi_logits", logits, variant(), {
            "Every query mixes the hardest negatives of query 0: flattening "
            "queue[hardest] to [B·N, D] and indexing it with positions in [0, N) only "
            "ever reaches query 0's rows. Gather per query: hardest.gather(1, first) are "
            "the queue rows of each query's picks.": variant(query_zero=True),
            "first, second and pick are positions in each query's list of "
            "hardest negatives, not queue rows: the rows are "
            "hardest.gather(1, positions).": variant(positions_as_rows=True),
            "The hardest negatives are the queue entries MOST similar to the query: topk of q @ "
            "queue.T with largest=True (the default).": variant(easiest=True),
            "Normalise the mixes back onto the unit sphere (F.normalize(..., dim=-1)): a mix of "
            "two unit vectors is shorter than 1.": variant(normalise=False),
            "α weighs the first negative: α n_a + (1 − α) n_b.": variant(alpha_swapped=True),
            "β_mix (below 0.5) weighs the query, so that the negative dominates: "
            "β_mix q + (1 − β_mix) n.":
                variant(beta_swapped=True),
            "Mix each query with its own hard negatives: q[:, None] "
            "(one query per row), not query 0.":
                variant(first_query=True),
            "Divide the synthetic negatives' logits by the temperature too.":
                variant(synthetic_temperature=False),
            "Put the synthetic logits after the queue's: [q·k, q·queue, q·h] (the "
            "positive stays in column 0).":
                variant(synthetic_first=True),
        }, context)
        logits.sum().backward()
        if student_k.grad is not None and student_k.grad.abs().sum() > 0:
            raise ExerciseError("Gradient flows into the keys k: they come from the momentum "
                                "encoder. Use k.detach().")
        detached_q = q.clone().requires_grad_()
        variant_arguments = (detached_q, k, queue, temperature, *inputs[3:])
        mochi_logits_variant(*variant_arguments).sum().backward()
        if student_q.grad is None or not same(student_q.grad, detached_q.grad):
            not_detached_q = q.clone().requires_grad_()
            mochi_logits_variant(not_detached_q, k, queue, temperature, *inputs[3:],
                                 detach=False).sum().backward()
            if student_q.grad is not None and same(student_q.grad, not_detached_q.grad):
                raise ExerciseError("The synthetic negatives carry a gradient back into q "
                                    "(type 2 contains q): they are constants of the loss. Mix "
                                    "q.detach(), or detach the mixes.")
            raise ExerciseError("mochi_logits has the right values but the wrong gradient into "
                                "q: only q itself (in q·k, q·n and q·h) gets one.")
    passed("mochi_logits", "each query's own hardest negatives, both mixes on the sphere "
                           "and detached, logits / τ")
