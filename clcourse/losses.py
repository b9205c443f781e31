"""Contrastive losses, each a pure function of embeddings.

Conventions shared by every loss here:
- inputs are embeddings of shape [B, D]; they are L2-normalised inside the loss, so callers may
  pass raw projector outputs;
- the loss is computed in float32 whatever the autocast dtype (a B x B logit matrix is tiny, and
  exp(s / temperature) overflows in half precision);
- the return value is the mean over anchors, a scalar tensor.

MoCo's queue loss (moco_info_nce) and MoCHi's synthetic negatives (mochi_mix / mochi_negatives)
take a query batch and a queue instead of two views; they follow the same conventions. The losses of
many views (multiview_info_nce, cacr) take a sequence of M + 1 view embeddings instead of two.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .presets import no_autocast
from .validation import (
    describe_tensor,
    require_bool,
    require_embeddings,
    require_in_range,
    require_int_at_least,
    require_labels,
    require_positive,
    require_same_shape,
)

__all__ = ["positive_index", "info_nce", "dcl", "hcl", "moco_logits", "moco_info_nce", "MochiMix",
           "mochi_draws", "mochi_mix", "mochi_negatives", "sce_target", "sce", "sce_in_batch",
           "multiview_info_nce", "CACR_WEIGHTS", "CacrTerms", "require_cacr_arguments",
           "cacr_terms", "cacr", "supcon"]


def _normalised_pair(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Check a pair of view embeddings and return the 2B unit vectors [z1; z2] in float32."""
    require_embeddings("z1", z1)
    require_embeddings("z2", z2)
    require_same_shape("z1", z1, "z2", z2)
    return F.normalize(torch.cat([z1, z2]).float(), dim=1)


def positive_index(batch_size: int, device=None) -> torch.Tensor:
    """p(i) for the 2B views [z1; z2]: view i of image k is paired with the other
    view of image k."""
    half = torch.arange(batch_size, device=device)
    return torch.cat([half + batch_size, half])


def _require_two_images(name: str, z: torch.Tensor, loss_name: str) -> None:
    if z.shape[0] < 2:
        raise ValueError(f"{loss_name} needs at least 2 images so that each anchor has "
                         f"2B - 2 >= 1 negatives; {name} has {z.shape[0]} row")


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    r"""NT-Xent / InfoNCE over the 2B anchors of two views (SimCLR).

    With u = normalize([z1; z2]) and p(i) the other view of anchor i's image,

        \ell_i = -\log \frac{\exp(u_i \cdot u_{p(i)} / \tau)}
                            {\sum_{k \ne i} \exp(u_i \cdot u_k / \tau)},
        L = \frac{1}{2B} \sum_{i=1}^{2B} \ell_i

    The denominator holds the positive and the 2B - 2 negatives (every view of every other image).
    Nothing is detached: gradients flow into both views.

    Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020.

    Args:
        z1, z2: [B, D] embeddings of the first and second view of the same B >= 2 images (with
            one image the positive is the only other entry of its row, and the loss is 0
            whatever the encoder).
        temperature: tau > 0; smaller values concentrate the loss on the hardest negatives.
    """
    temperature = require_positive("temperature", temperature)
    require_embeddings("z1", z1)
    _require_two_images("z1", z1, "info_nce")
    with no_autocast(z1.device):
        u = _normalised_pair(z1, z2)
        logits = u @ u.T / temperature
        self_pairs = torch.eye(len(u), dtype=torch.bool, device=u.device)
        logits = logits.masked_fill(self_pairs, float("-inf"))
        return F.cross_entropy(logits, positive_index(z1.shape[0], u.device))


def _require_feature_dim(name: str, t: torch.Tensor, dim: int, ref_name: str) -> None:
    if t.shape[-1] != dim:
        raise ValueError(f"{name} must have the embedding size of {ref_name} ({dim}) in its last "
                         f"dimension, got shape {tuple(t.shape)}")


def _require_queue_mask(queue_mask: torch.Tensor, batch_size: int, queue_size: int) -> None:
    """A boolean [B, K] mask, True where a queue entry is excluded from a query's negatives."""
    if (not isinstance(queue_mask, torch.Tensor) or queue_mask.dtype != torch.bool
            or tuple(queue_mask.shape) != (batch_size, queue_size)):
        raise ValueError(f"queue_mask must be a bool tensor of shape [B, K] = [{batch_size}, "
                         f"{queue_size}], got {describe_tensor(queue_mask)}")


def _require_a_negative_each(queue_mask: torch.Tensor) -> None:
    """Every query keeps at least one queue entry (one host read): a query left without a negative
    has a loss that does not depend on its embedding (InfoNCE: 0; SCE: NaN)."""
    if int((~queue_mask).sum(dim=1).min()) == 0:
        raise ValueError("queue_mask masks every queue entry of some query and there are no "
                         "extra_negatives: that query has no negative, so its loss does not "
                         "depend on its embedding (InfoNCE: 0, SCE: NaN). Mask fewer entries or "
                         "use a larger queue")


def _pair_logits(z1: torch.Tensor, z2: torch.Tensor,
                 temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits s / tau of the 2B anchors [z1; z2]: the positive [2B] and the 2B - 2 negatives
    [2B, 2B - 2] (every view except the anchor itself and its positive), in float32."""
    u = _normalised_pair(z1, z2)
    logits = u @ u.T / temperature
    n = len(u)
    anchors = torch.arange(n, device=u.device)
    partner = positive_index(z1.shape[0], u.device)
    # Column of each of the 2B - 2 negatives: 0..2B-3, shifted past the two excluded columns (the
    # anchor and its partner). A gather of fixed shape, where a boolean mask would need a host sync.
    first, second = (torch.minimum(anchors, partner)[:, None],
                     torch.maximum(anchors, partner)[:, None])
    columns = torch.arange(n - 2, device=u.device).expand(n, n - 2)
    columns = columns + (columns >= first)
    columns = columns + (columns >= second)
    return logits.gather(1, partner[:, None]).squeeze(1), logits.gather(1, columns)


def _debiased_hard_loss(positive: torch.Tensor, negatives: torch.Tensor, temperature: float,
                        tau_plus: float, beta: float) -> torch.Tensor:
    r"""Mean over anchors of -log pos / (pos + Ng), the estimator shared by DCL (beta = 0) and HCL.

    positive [A] and negatives [A, N] are logits s / t. With imp_j = exp(beta s_j / t),
    imp_j / mean_j(imp) = N softmax(beta * logits)_j, so the reweighted negative mass is
    R = N sum_j softmax(beta * logits)_j exp(logits_j), computed through its logarithm.

    Every term is divided by exp(m), m = the anchor's largest logit (a constant: the loss does not
    change, so m is detached), which keeps the exponentials in [0, 1] however small t is.
    """
    n_negatives = negatives.shape[1]
    log_n = math.log(n_negatives)
    log_mass = log_n + torch.logsumexp(negatives + torch.log_softmax(beta * negatives, dim=1),
                                       dim=1)
    shift = torch.maximum(positive, negatives.amax(dim=1)).detach()
    pos = torch.exp(positive - shift)
    mass = torch.exp(log_mass - shift)
    # N e^{-1/t}: the smallest negative mass there can be (every negative at cosine -1).
    floor = torch.exp(log_n - 1.0 / temperature - shift)
    negative_estimate = torch.maximum((mass - tau_plus * n_negatives * pos) / (1.0 - tau_plus),
                                      floor)
    return (torch.log(pos + negative_estimate) - (positive - shift)).mean()


def dcl(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5,
        tau_plus: float = 0.1) -> torch.Tensor:
    r"""Debiased Contrastive Learning loss over the 2B anchors of two views (SimCLR form).

    Some "negatives" in a batch share the anchor's class (false negatives). If a fraction tau^+ of
    all images share it, the negative mass can be corrected by subtracting tau^+ times the positive.
    With u = normalize([z1; z2]), N = 2B - 2 negatives per anchor, pos = exp(u_i . u_{p(i)} / t)
    and neg_j = exp(u_i . u_j / t) over the N views of the other images,

        N_g = \max\left( \frac{\sum_j neg_j - \tau^+ N \, pos}{1 - \tau^+},\; N e^{-1/t} \right),
        \ell_i = -\log \frac{pos}{pos + N_g},        L = \frac{1}{2B} \sum_i \ell_i

    The lower bound N e^{-1/t} is the smallest possible negative mass (all N negatives at cosine
    -1): it stops the corrected estimate from going to zero or below. Nothing is detached.

    With tau_plus = 0 this is info_nce exactly: the bound is then only reached when every negative
    sits at cosine -1, where it equals the sum anyway (up to rounding). With tau_plus > 0 the bound
    can bind (a very close positive among far negatives) and the loss then differs from the formula
    without it.

    Chuang et al., "Debiased Contrastive Learning", NeurIPS 2020; defaults t = 0.5, tau^+ = 0.1 as
    in the authors' code (chingyaoc/DCL main.py). Two traps around that name:
    - lightly's `DCLLoss` is a different method with the same acronym (Decoupled Contrastive
      Learning, Yeh et al. 2021, which drops the positive from the denominator);
    - chingyaoc/DCL's `--debiased` flag is parsed with argparse `type=bool`, so any string given on
      the command line, "False" included, turns debiasing on.

    Computed through logs, each anchor's terms divided by exp(its largest logit), so it stays finite
    for small temperatures.

    Args:
        z1, z2: [B, D] embeddings of two views of the same B >= 2 images.
        temperature: t > 0.
        tau_plus: class prior tau^+ in [0, 1): the assumed probability that a negative shares
            the anchor's class.
    """
    temperature = require_positive("temperature", temperature)
    tau_plus = require_in_range("tau_plus", tau_plus, 0.0, 1.0, high_inclusive=False)
    require_embeddings("z1", z1)
    _require_two_images("z1", z1, "dcl")
    with no_autocast(z1.device):
        positive, negatives = _pair_logits(z1, z2, temperature)
        return _debiased_hard_loss(positive, negatives, temperature, tau_plus, beta=0.0)


def hcl(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, tau_plus: float = 0.1,
        beta: float = 1.0) -> torch.Tensor:
    r"""Hard negative sampling with debiasing (HCL) over the 2B anchors of two views.

    Negatives are drawn from a distribution tilted toward those similar to the anchor, q_beta(x^-)
    \propto e^{\beta f(x) \cdot f(x^-)} p(x^-), estimated by importance weights over the batch, then
    debiased as in DCL. With the notation of `dcl` (N = 2B - 2, pos, neg_j = exp(s_j / t)):

        imp_j = \exp(\beta s_j / t) = neg_j^\beta,
        R = \frac{\sum_j imp_j \, neg_j}{\frac{1}{N} \sum_j imp_j},
        N_g = \max\left( \frac{R - \tau^+ N \, pos}{1 - \tau^+},\; N e^{-1/t} \right),
        \ell_i = -\log \frac{pos}{pos + N_g},        L = \frac{1}{2B} \sum_i \ell_i

    beta multiplies s / t, so the tilt on the raw cosine is beta / t (= 2 beta at t = 0.5).
    beta = 0 gives `dcl`; tau_plus = 0 and beta = 0 give `info_nce`.

    The importance weights imp_j are NOT detached, as in the authors' code: the gradient also flows
    through the weighting (it is part of the loss, not a sampling constant).

    Robinson et al., "Contrastive Learning with Hard Negative Samples", ICLR 2021. This follows the
    authors' code (joshr17/HCL image/main.py), defaults t = 0.5, tau^+ = 0.1, beta = 1.0. The
    paper's pseudo-code has two typos, divide by neg.mean() and no beta in the exponent; the authors
    confirm the code is right (HCL issues #1 and #5).

    Computed through logs (imp_j / mean(imp) = N softmax(beta s / t)_j), each anchor's terms divided
    by exp(its largest logit).

    Args:
        z1, z2: [B, D] embeddings of two views of the same B >= 2 images.
        temperature: t > 0.
        tau_plus: class prior tau^+ in [0, 1).
        beta: concentration beta >= 0; larger values focus on harder negatives.
    """
    temperature = require_positive("temperature", temperature)
    tau_plus = require_in_range("tau_plus", tau_plus, 0.0, 1.0, high_inclusive=False)
    beta = require_in_range("beta", beta, 0.0, math.inf, high_inclusive=False)
    require_embeddings("z1", z1)
    _require_two_images("z1", z1, "hcl")
    with no_autocast(z1.device):
        positive, negatives = _pair_logits(z1, z2, temperature)
        return _debiased_hard_loss(positive, negatives, temperature, tau_plus, beta)


def moco_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor,
                temperature: float) -> torch.Tensor:
    r"""MoCo's logits of unit queries against their keys and the queue, [B, 1 + K]:

        [q_b \cdot k_b, \; q_b \cdot n_1, \dots, q_b \cdot n_K] / \tau

    the positive in column 0. k and the queue are detached (the keys come from the momentum
    encoder, the queue holds constants). Inputs are assumed unit vectors; `moco_info_nce`
    normalises them first.
    """
    positive = (q * k.detach()).sum(dim=1, keepdim=True)
    return torch.cat([positive, q @ queue.detach().T], dim=1) / temperature


def moco_info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2,
                  queue_mask: torch.Tensor | None = None,
                  extra_negatives: torch.Tensor | None = None, logits: Callable = moco_logits,
                  check_mask: bool = True) -> torch.Tensor:
    r"""MoCo's InfoNCE: each query against its positive key and a queue of negatives.

    With q, k, queue and the extra negatives L2-normalised,

        \ell_b = -\log \frac{\exp(q_b \cdot k_b / \tau)}{\exp(q_b \cdot k_b / \tau)
                 + \sum_{n \in queue, \text{not masked}} \exp(q_b \cdot n / \tau)
                 + \sum_m \exp(q_b \cdot h_{b,m} / \tau)},        L = \frac{1}{B} \sum_b \ell_b

    i.e. cross-entropy on the logits [q.k, q.queue^T, q.h] / tau with target 0.

    Gradient flows into q only. k is detached (keys come from the momentum encoder), and so are the
    queue and the extra negatives. Enqueuing k afterwards is the caller's job.

    He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020;
    tau = 0.2 as in MoCo v2 (the CIFAR-10 demo uses 0.1).

    Args:
        q: [B, D] queries.
        k: [B, D] positive keys, one per query.
        queue: [K, D] negative keys.
        temperature: tau > 0.
        queue_mask: optional bool [B, K], True where queue entry j must not be a negative of query b
            (e.g. a stale key of the same image: a false negative). Its logit becomes -inf. A query
            left without any negative would have loss 0 whatever its embedding: checking that none
            is reads the mask on the host (one sync);
        extra_negatives: optional [B, M, D] negatives of each query alone, appended after the queue
            (MoCHi's synthetic negatives, see `mochi_negatives`).
        logits: the function that makes the [B, 1 + K] logits of unit q, k and queue (`moco_logits`,
            or a student's own in notebook 03).
        check_mask: False skips the mask check, for callers that guarantee it once (MoCo does, at
            the start of training) and must not synchronise every step.
    """
    temperature = require_positive("temperature", temperature)
    check_mask = require_bool("check_mask", check_mask)
    require_embeddings("q", q)
    require_embeddings("k", k)
    require_same_shape("q", q, "k", k)
    require_embeddings("queue", queue)
    batch_size, dim = q.shape
    _require_feature_dim("queue", queue, dim, "q")
    if queue_mask is not None:
        _require_queue_mask(queue_mask, batch_size, queue.shape[0])
    if extra_negatives is not None:
        if (not isinstance(extra_negatives, torch.Tensor) or extra_negatives.dim() != 3
                or not extra_negatives.is_floating_point()
                or extra_negatives.shape[0] != batch_size):
            raise ValueError(f"extra_negatives must be a floating-point tensor of shape [B, M, D] "
                             f"with B = {batch_size}, got {describe_tensor(extra_negatives)}")
        _require_feature_dim("extra_negatives", extra_negatives, dim, "q")
    if (queue_mask is not None and check_mask
            and (extra_negatives is None or extra_negatives.shape[1] == 0)):
        _require_a_negative_each(queue_mask)
    with no_autocast(q.device):
        q = F.normalize(q.float(), dim=1)
        scores = logits(q, F.normalize(k.detach().float(), dim=1),
                        F.normalize(queue.detach().float(), dim=1), temperature)
        if queue_mask is not None:
            scores = torch.cat(
                [scores[:, :1], scores[:, 1:].masked_fill(queue_mask, float("-inf"))], dim=1)
        if extra_negatives is not None:
            extra = F.normalize(extra_negatives.detach().float(), dim=2)
            scores = torch.cat([scores, torch.einsum("bd,bmd->bm", q, extra) / temperature], dim=1)
        target = torch.zeros(batch_size, dtype=torch.long, device=q.device)
        return F.cross_entropy(scores, target)


class MochiMix(NamedTuple):
    """MoCHi's synthetic negatives and how each was made (B queries, N hardest, s + s' mixes).

    Indices are rows of the queue. Everything is detached."""
    negatives: torch.Tensor         # [B, s + s', D] unit vectors: the s type-1 mixes, then the s'
                                    # type-2 mixes
    hardest_index: torch.Tensor     # [B, N] each query's N hardest (unmasked) queue entries,
                                    # hardest first
    pair_index: torch.Tensor        # [B, s, 2] the two queue entries of each type-1 mix
    alpha: torch.Tensor             # [B, s] weight of pair_index[..., 0] (1 - alpha on
                                    # pair_index[..., 1])
    query_pair_index: torch.Tensor  # [B, s'] the queue entry mixed with the query in each type-2
                                    # mix
    beta: torch.Tensor              # [B, s'] weight of the query (1 - beta on the queue entry)


def mochi_draws(batch_size: int, n_hardest: int, n_mix_negatives: int, n_mix_query: int,
                generator: torch.Generator | None = None, device: torch.device | str | None = None
                ) -> tuple[torch.Tensor, ...]:
    """MoCHi's random draws for B queries, as `mochi_mix` makes them: (first, second, alpha, pick,
    beta). `first`, `second` [B, s] are positions a != b in [0, N) of each query's hardest list
    (b = a + 1 + offset, mod N; a = b only when N = 1), alpha [B, s] ~ U(0, 1) the weight of
    `first`; `pick` [B, s'] the position mixed with the query, beta [B, s'] ~ U(0, 0.5) the
    query's weight. These are the arguments of notebook 04's `mochi_logits` exercise, which
    `MoCHi(..., mochi_logits=...)` trains with."""
    def draw_index(high: int, count: int) -> torch.Tensor:
        return torch.randint(high, (batch_size, count), generator=generator, device=device)

    def draw_uniform(count: int) -> torch.Tensor:
        return torch.rand(batch_size, count, generator=generator, device=device)

    first = draw_index(n_hardest, n_mix_negatives)
    second = (first + 1 + draw_index(max(n_hardest - 1, 1), n_mix_negatives)) % n_hardest
    alpha = draw_uniform(n_mix_negatives)
    pick = draw_index(n_hardest, n_mix_query)
    beta = 0.5 * draw_uniform(n_mix_query)
    return first, second, alpha, pick, beta


@torch.no_grad()
def mochi_mix(q: torch.Tensor, queue: torch.Tensor, n_hardest: int, n_mix_negatives: int,
              n_mix_query: int, generator: torch.Generator | None = None,
              queue_mask: torch.Tensor | None = None, check_mask: bool = True) -> MochiMix:
    r"""MoCHi hard negative mixing: synthetic negatives for each query, with each one's recipe.

    For query q (unit vector) let \tilde{Q}^N be its N hardest negatives: the N queue entries with
    the largest q . n, excluding entries masked by queue_mask. Then, for that query alone,

        type 1 (s = n_mix_negatives): h  = normalize(\alpha n_i + (1 - \alpha) n_j),
                                      n_i != n_j drawn uniformly from \tilde{Q}^N, \alpha ~ U(0, 1);
        type 2 (s' = n_mix_query):    h' = normalize(\beta q + (1 - \beta) n_k),
                                      n_k drawn uniformly from \tilde{Q}^N,     \beta ~ U(0, 0.5)

    (beta < 0.5 keeps the negative dominant in h'). If N = 1 the type-1 pair is that entry twice.
    The hardest set, the pairs and the coefficients are drawn per query: index tensors [B, s] select
    from each query's own row (a flattened [B*N, D] indexed by [0, N) would give every query the
    hardest negatives of query 0).

    Everything returned is detached (no gradient, also through q in type 2): the synthetic points
    are constants, as in every reimplementation. They are never enqueued: append them to the logits
    with `moco_info_nce(..., extra_negatives=...)` and enqueue only the keys.

    Kalantidis et al., "Hard Negative Mixing for Contrastive Learning", NeurIPS 2020, written
    MoCHi(N, s, s'); the paper has no CIFAR setting and no official code.

    `mochi_negatives` returns only the negatives; this function also returns the indices and
    coefficients, to inspect or test the mixing.

    Args:
        q: [B, D] queries.
        queue: [K, D] negative keys.
        n_hardest: N in [1, K], and at most the number of entries queue_mask leaves to each query.
        n_mix_negatives: s >= 0 type-1 mixes per query.
        n_mix_query: s' >= 0 type-2 mixes per query.
        generator: random source on q's device (default: torch's global one).
        queue_mask: optional bool [B, K], True where queue entry j must not be a negative of query
            b. Checking that enough entries are left reads the mask on the host (one sync);
        check_mask: False skips that check, for callers that guarantee it once (the MoCHi method
            does, at the start of training) and must not synchronise every step.

    Returns:
        MochiMix(negatives, hardest_index, pair_index, alpha, query_pair_index, beta), see MochiMix.
    """
    require_embeddings("q", q)
    require_embeddings("queue", queue)
    batch_size, dim = q.shape
    queue_size = queue.shape[0]
    _require_feature_dim("queue", queue, dim, "q")
    require_int_at_least("n_hardest", n_hardest, 1)
    if n_hardest > queue_size:
        raise ValueError("n_hardest must be at most the queue size "
                         f"K = {queue_size}, got {n_hardest}")
    require_int_at_least("n_mix_negatives", n_mix_negatives, 0)
    require_int_at_least("n_mix_query", n_mix_query, 0)
    check_mask = require_bool("check_mask", check_mask)
    if queue_mask is not None:
        _require_queue_mask(queue_mask, batch_size, queue_size)
    if queue_mask is not None and check_mask:
        fewest_left = int((~queue_mask).sum(dim=1).min())
        if n_hardest > fewest_left:
            raise ValueError(f"n_hardest = {n_hardest} but queue_mask leaves only {fewest_left} "
                             "queue entries to some query; n_hardest must be at most that")

    with no_autocast(q.device):
        q = F.normalize(q.float(), dim=1)
        queue = F.normalize(queue.float(), dim=1)
        similarity = q @ queue.T
        if queue_mask is not None:
            similarity = similarity.masked_fill(queue_mask, float("-inf"))
        hardest_index = similarity.topk(n_hardest, dim=1).indices                       # [B, N]

        first, second, alpha, pick, beta = mochi_draws(batch_size, n_hardest, n_mix_negatives,
                                                       n_mix_query, generator, q.device)
        # Type 1: the entries at positions first != second of each query's hardest list.
        pair_index = torch.stack([hardest_index.gather(1, first), hardest_index.gather(1, second)],
                                 dim=2)
        a = alpha.unsqueeze(2)
        mixed_negatives = F.normalize(
            a * queue[pair_index[..., 0]] + (1 - a) * queue[pair_index[..., 1]], dim=2)

        # Type 2: the query mixed into one of its hardest negatives.
        query_pair_index = hardest_index.gather(1, pick)
        b = beta.unsqueeze(2)
        mixed_query = F.normalize(b * q.unsqueeze(1) + (1 - b) * queue[query_pair_index], dim=2)

        negatives = torch.cat([mixed_negatives, mixed_query], dim=1)
    return MochiMix(negatives, hardest_index, pair_index, alpha, query_pair_index, beta)


def mochi_negatives(q: torch.Tensor, queue: torch.Tensor, n_hardest: int, n_mix_negatives: int,
                    n_mix_query: int, generator: torch.Generator | None = None,
                    queue_mask: torch.Tensor | None = None,
                    check_mask: bool = True) -> torch.Tensor:
    """MoCHi's synthetic negatives [B, s + s', D] (detached unit vectors, never to be enqueued).

    The same as `mochi_mix(...).negatives`; see `mochi_mix` for the equations and
    arguments. Typical use:

        extra = mochi_negatives(q, queue, n_hardest=64, n_mix_negatives=128, n_mix_query=32)
        loss = moco_info_nce(q, k, queue, extra_negatives=extra)
    """
    return mochi_mix(q, queue, n_hardest, n_mix_negatives, n_mix_query, generator, queue_mask,
                     check_mask).negatives


# ------------------------------------------------------------- SCE: soft targets instead of one-hot

def _soft_target(k: torch.Tensor, queue: torch.Tensor, temperature_momentum: float, lam: float,
                 queue_mask: torch.Tensor | None) -> torch.Tensor:
    """`sce_target` on unit float32 inputs, without checks (the public functions check once)."""
    with torch.no_grad():
        scores = k @ queue.T / temperature_momentum
        if queue_mask is not None:
            scores = scores.masked_fill(queue_mask, float("-inf"))
        relational = torch.softmax(scores, dim=1)
        return torch.cat([torch.full_like(scores[:, :1], lam), (1 - lam) * relational], dim=1)


def _require_sce_inputs(k: torch.Tensor, queue: torch.Tensor, temperature_momentum: float,
                        lam: float, queue_mask: torch.Tensor | None) -> None:
    require_positive("temperature_momentum", temperature_momentum)
    require_in_range("lam", lam, 0.0, 1.0)
    require_embeddings("k", k)
    require_embeddings("queue", queue)
    _require_feature_dim("queue", queue, k.shape[1], "k")
    if queue_mask is not None:
        _require_queue_mask(queue_mask, k.shape[0], queue.shape[0])


def sce_target(k: torch.Tensor, queue: torch.Tensor, temperature_momentum: float = 0.05,
               lam: float = 0.5, queue_mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""SCE's target distribution over each query's candidates [k_b, n_1, ..., n_K],
    shape [B, 1 + K].

    With the key k_b (momentum encoder, weak view) and the queue entries n_j, all L2-normalised,

        s_{bj} = \frac{\exp(k_b \cdot n_j / \tau_m)}{\sum_{j'} \exp(k_b \cdot n_{j'} / \tau_m)},
        \qquad w_b = \big[\, \lambda,\; (1 - \lambda)\, s_{b1},\; \dots,\;
                          (1 - \lambda)\, s_{bK} \,\big]

    Column 0 is the positive (one-hot part, weight exactly lambda); the rest is the key's
    *relation* to the queue, sharpened by the small temperature tau_m. Each row sums to 1.

    The key's own slot is left out of the relational softmax: the course's choice. The authors'
    code (CEA-LIST/SCE, and eztorch in its default queue mode, which matches it) puts the slot in
    with logit 0, so that the positive gets lambda + (1 - lambda) / (1 + \sum_j \exp(k_b \cdot n_j
    / \tau_m)) and the queue a little less. Measured on the loss at K = 4096, tau_m = 0.05,
    tau = 0.1, lambda = 0.5 (tests/test_losses.py): about 1e-7 for clustered embeddings, where
    each key resembles many queue entries, and about 2e-4 for random unit vectors with queries
    near their keys.

    Computed without gradient: the target is a constant for the loss (Denize et al., WACV 2023).

    Args:
        k: [B, D] keys of the weak views.
        queue: [K, D] negative keys.
        temperature_momentum: tau_m > 0 (CIFAR-10: 0.05).
        lam: lambda in [0, 1], the weight of the one-hot part (CIFAR-10: 0.5).
        queue_mask: optional bool [B, K], True where queue entry j is not a candidate of query
            b (a key of its own image): it gets weight 0 and the relational part is spread
            over the others.
    """
    _require_sce_inputs(k, queue, temperature_momentum, lam, queue_mask)
    with no_autocast(k.device):
        return _soft_target(F.normalize(k.detach().float(), dim=1),
                            F.normalize(queue.detach().float(), dim=1), temperature_momentum, lam,
                            queue_mask)


def _soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum_j target_j log softmax(logits)_j. Candidates with logit -inf have
    target 0 and are left out of the sum (0 * log 0 would be NaN)."""
    log_p = torch.log_softmax(logits, dim=1)
    return -(target * log_p.masked_fill(target == 0, 0.0)).sum(dim=1).mean()


def sce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.1,
        temperature_momentum: float = 0.05, lam: float = 0.5,
        queue_mask: torch.Tensor | None = None, check_mask: bool = True) -> torch.Tensor:
    r"""Similarity Contrastive Estimation (SCE) in the queue form the authors train with.

    The query q_b (online encoder, strong view) predicts a distribution over the
    candidates: its positive key k_b (momentum encoder, weak view) and the queue entries
    n_1..n_K, all L2-normalised,

        p_b = \mathrm{softmax}\big(
                  [\, q_b \cdot k_b,\; q_b \cdot n_1,\; \dots,\; q_b \cdot n_K \,] / \tau \big),

    and the loss is its cross-entropy with the target w_b of `sce_target`,

        w_b = [\, \lambda,\; (1 - \lambda)\, \mathrm{softmax}_j(k_b \cdot n_j / \tau_m) \,],
        \qquad L = -\frac{1}{B} \sum_b \sum_{c=0}^{K} w_{bc} \log p_{bc} .

    lambda = 1 gives MoCo's InfoNCE (`moco_info_nce`) exactly. lambda = 0 is a purely relational
    loss (ReSSL-like: match the query's similarity distribution to the key's; the positive keeps
    only the relational weight its slot has, 0 here). In between, a negative n_j that the key finds
    similar gets target weight (1 - lambda) s_j: the gradient on its logit is p_j - w_j, so it is
    pushed away less than by InfoNCE (p_j), or even pulled when w_j > p_j.

    Gradient flows into q only: k and the queue are detached, and the target is computed
    without gradient (the momentum encoder is not trained by gradient). Enqueuing k afterwards
    is the caller's job.

    Denize et al., "Similarity Contrastive Estimation for Self-Supervised Soft Contrastive
    Learning", WACV 2023 (arXiv 2111.14585); CIFAR-10: tau = 0.1, tau_m = 0.05, lambda = 0.5,
    K = 4096. `sce_in_batch` is the paper's in-batch equation.

    Args:
        q: [B, D] queries (strong views).
        k: [B, D] keys (weak views), one per query.
        queue: [K, D] negative keys.
        temperature: tau > 0 of the prediction.
        temperature_momentum: tau_m > 0 of the target (smaller than tau: a sharper target).
        lam: lambda in [0, 1].
        queue_mask: optional bool [B, K], True where a queue entry is not a candidate of that query
            (a stale key of its own image): logit -inf, target 0. A query must keep a candidate
            besides its key: checking that reads the mask on the host (one sync);
        check_mask: False skips that check, for callers that guarantee it once (SCE does, at the
            start of training).
    """
    require_positive("temperature", temperature)
    check_mask = require_bool("check_mask", check_mask)
    _require_sce_inputs(k, queue, temperature_momentum, lam, queue_mask)
    require_embeddings("q", q)
    require_same_shape("q", q, "k", k)
    if queue_mask is not None and check_mask:
        _require_a_negative_each(queue_mask)
    with no_autocast(q.device):
        q = F.normalize(q.float(), dim=1)
        k = F.normalize(k.detach().float(), dim=1)
        queue = F.normalize(queue.detach().float(), dim=1)
        logits = moco_logits(q, k, queue, temperature)
        if queue_mask is not None:
            logits = torch.cat(
                [logits[:, :1], logits[:, 1:].masked_fill(queue_mask, float("-inf"))], dim=1)
        return _soft_cross_entropy(logits,
                                   _soft_target(k, queue, temperature_momentum, lam, queue_mask))


def sce_in_batch(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1,
                 temperature_momentum: float = 0.05, lam: float = 0.5) -> torch.Tensor:
    r"""SCE in the paper's in-batch form: the N images of a batch are each other's candidates.

    With z^1 = normalize(online embeddings of the strong views) and z^2 = normalize(target
    embeddings of the weak views), both [N, D],

        s^2_{ik} = \frac{\mathbb{1}[i \ne k]\, \exp(z^2_i \cdot z^2_k / \tau_m)}
                        {\sum_{j} \mathbb{1}[i \ne j]\, \exp(z^2_i \cdot z^2_j / \tau_m)},
        \qquad w^2_{ik} = \lambda\, \mathbb{1}[i = k] + (1 - \lambda)\, s^2_{ik},

        p^1_{ik} = \frac{\exp(z^1_i \cdot z^2_k / \tau)}{\sum_j \exp(z^1_i \cdot z^2_j / \tau)},
        \qquad L = -\frac{1}{N} \sum_i \sum_k w^2_{ik} \log p^1_{ik} .

    For image i this is `sce` with key z^2_i and the other N - 1 target embeddings as its queue. z2
    is detached (the target branch gets no gradient). lambda = 1: InfoNCE between the two views'
    embeddings with the targets' as candidates.

    Denize et al., WACV 2023 (arXiv 2111.14585), the equation of the paper.

    Args:
        z1: [N, D] online embeddings (strong views), N >= 2.
        z2: [N, D] target embeddings (weak views) of the same images.
        temperature, temperature_momentum, lam: tau > 0, tau_m > 0, lambda in [0, 1], as in `sce`.
    """
    require_positive("temperature", temperature)
    require_positive("temperature_momentum", temperature_momentum)
    require_in_range("lam", lam, 0.0, 1.0)
    require_embeddings("z1", z1)
    require_embeddings("z2", z2)
    require_same_shape("z1", z1, "z2", z2)
    if z1.shape[0] < 2:
        raise ValueError("sce_in_batch needs at least 2 images (each image's candidates "
                         "are the batch's target embeddings, its own and the others'); z1 "
                         f"has {z1.shape[0]} row")
    with no_autocast(z1.device):
        u1 = F.normalize(z1.float(), dim=1)
        u2 = F.normalize(z2.detach().float(), dim=1)
        with torch.no_grad():
            self_pairs = torch.eye(len(u2), dtype=torch.bool, device=u2.device)
            relational = torch.softmax(
                (u2 @ u2.T / temperature_momentum).masked_fill(self_pairs, float("-inf")), dim=1)
            target = lam * self_pairs.float() + (1 - lam) * relational
        log_p = torch.log_softmax(u1 @ u2.T / temperature, dim=1)
        return -(target * log_p).sum(dim=1).mean()


# ---------------------------------------------------------- many views: multi-view InfoNCE and CACR

def _require_views(views, loss_name: str) -> None:
    """M + 1 >= 2 view embeddings of the same B >= 2 images: a sequence of [B, D] tensors, or one
    tensor [M + 1, B, D]."""
    if isinstance(views, torch.Tensor) and views.dim() != 3:
        raise ValueError("views must be a sequence of [B, D] embeddings (one per view) or a "
                         f"tensor [V, B, D], got a tensor of {describe_tensor(views)}")
    if not isinstance(views, (torch.Tensor, list, tuple)):
        raise ValueError("views must be a sequence of [B, D] embeddings (one per view), got "
                         f"{type(views).__name__}")
    if len(views) < 2:
        raise ValueError("views must hold at least 2 views of every image "
                         f"(M + 1 >= 2), got {len(views)}")
    for position, z in enumerate(views):
        require_embeddings(f"views[{position}]", z)
        require_same_shape("views[0]", views[0], f"views[{position}]", z)
    _require_two_images("views[0]", views[0], loss_name)


def _unit_views(views) -> torch.Tensor:
    """The views as unit vectors [V, B, D] in float32."""
    return F.normalize(torch.stack(list(views)).float(), dim=2)


def multiview_info_nce(views, temperature: float = 0.5) -> torch.Tensor:
    r"""InfoNCE with V = M + 1 views of every image, every pair of views of an image
    a positive pair.

    With u^a_i = normalize(z^a_i) the a-th view of image i, s the dot product of unit vectors and
    A = {(b, j) != (a, i)} all the other VB - 1 views of the batch,

        \ell^a_i = -\frac{1}{V - 1} \sum_{b \ne a} \log \frac{\exp(s(u^a_i, u^b_i) / \tau)}
                   {\sum_{(b', j) \in A} \exp(s(u^a_i, u^{b'}_j) / \tau)},
        L = \frac{1}{VB} \sum_{a, i} \ell^a_i

    Each of the VB views is an anchor, its V - 1 sibling views are its positives, and the
    denominator holds every other view of the batch (the other positives too): SupCon's L^sup_out
    with the image as the label (Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020).
    With two views this is `info_nce`. It is CACR's baseline with the same views and no weighting.
    Nothing is detached.

    Args:
        views: V >= 2 embeddings [B, D] of the same B >= 2 images (a list, or a tensor [V, B, D]).
        temperature: tau > 0.
    """
    require_positive("temperature", temperature)
    _require_views(views, "multiview_info_nce")
    with no_autocast(views[0].device):
        u = _unit_views(views)                                                # [V, B, D]
        num_views, batch_size, _ = u.shape
        flat = u.reshape(num_views * batch_size, -1)
        logits = flat @ flat.T / temperature
        self_pairs = torch.eye(len(flat), dtype=torch.bool, device=flat.device)
        log_normaliser = torch.logsumexp(logits.masked_fill(self_pairs, float("-inf")), dim=1)
        # positive logits s(u^a_i, u^b_i) / tau for all view pairs (a, b) of each image i: [B, V, V]
        positive = torch.einsum("aid,bid->iab", u, u) / temperature
        # sum over b != a: [B, V]
        other_views = positive.sum(dim=2) - positive.diagonal(dim1=1, dim2=2)
        mean_positive = other_views.T.reshape(-1) / (num_views - 1)  # [V B], view-major like flat
        return (log_normaliser - mean_positive).mean()


CACR_WEIGHTS = ("both", "none", "attraction_only", "repulsion_only")


class CacrTerms(NamedTuple):
    """CACR's two terms and the conditional weights inside them (V = M + 1 views, B images).

    `view_pairs` lists the P = V(V - 1)/2 pairs (a, b), a < b, in the order of
    `repulsion_weights`."""
    attraction: torch.Tensor           # scalar L_CA
    repulsion: torch.Tensor            # scalar L_CR (<= 0)
    attraction_weights: torch.Tensor   # [B, V, V]: w+[i, a, b] over the positives b of query view
                                       # a; 0 at b = a
    repulsion_weights: torch.Tensor    # [P, B, B]: w-[p, i, j] over the negatives j of z^a_i in
                                       # view b; 0 at j = i
    view_pairs: torch.Tensor           # [P, 2] the pairs (a, b), a < b


def require_cacr_arguments(tau_pos: float, tau_neg: float, alpha: float, beta: float, weights: str,
                           detach_weights: bool) -> None:
    """CACR's settings, checked once where they enter (the loss, the method): see `cacr`."""
    detach_weights = require_bool("detach_weights", detach_weights)
    require_in_range("tau_pos", tau_pos, 0.0, math.inf, high_inclusive=False)
    require_in_range("tau_neg", tau_neg, 0.0, math.inf, high_inclusive=False)
    require_positive("alpha", alpha)
    require_positive("beta", beta)
    if weights not in CACR_WEIGHTS:
        raise ValueError("weights must be one of "
                         f"{', '.join(map(repr, CACR_WEIGHTS))}, got {weights!r}")
    if not isinstance(detach_weights, bool):
        raise ValueError(f"detach_weights must be True or False, got {detach_weights!r}")


def _conditional_weights(logits: torch.Tensor, excluded: torch.Tensor, uniform: bool,
                         detach: bool) -> torch.Tensor:
    """softmax over the last dimension of `logits` with the `excluded` entries left out (weight 0);
    uniform over the others when `uniform`; detached when `detach`."""
    if uniform:
        logits = torch.zeros_like(logits)
    weights = torch.softmax(logits.masked_fill(excluded, float("-inf")), dim=-1)
    return weights.detach() if detach else weights


def cacr_terms(views, tau_pos: float = 1.0, tau_neg: float = 0.9, alpha: float = 1.0,
               beta: float = 1.0, weights: str = "both", detach_weights: bool = False) -> CacrTerms:
    """CACR's attraction and repulsion terms and their conditional weights; see `cacr` for the
    equations and the arguments. `cacr` returns their sum."""
    _require_views(views, "cacr")
    require_cacr_arguments(tau_pos, tau_neg, alpha, beta, weights, detach_weights)
    with no_autocast(views[0].device):
        u = _unit_views(views)                                                   # [V, B, D]
        num_views, batch_size, _ = u.shape
        device = u.device

        # Attraction: the V views of each image, every view a query, its M other
        # views the positives.
        same_view = torch.eye(num_views, dtype=torch.bool, device=device)
        positive_d2 = 2 - 2 * torch.einsum("aid,bid->iab", u, u)                      # [B, V, V]
        positive_weights = _conditional_weights(tau_pos * positive_d2, same_view,
                                                uniform=weights in ("none", "repulsion_only"),
                                                detach=detach_weights)
        attraction = alpha * (positive_weights * positive_d2).sum(dim=2).mean()

        # Repulsion: for each view pair a < b, query z^a_i against the other images'
        # views z^b_j, j != i.
        view_pairs = torch.triu_indices(num_views, num_views, offset=1, device=device).T  # [P, 2]
        same_image = torch.eye(batch_size, dtype=torch.bool, device=device)
        negative_d2 = 2 - 2 * u[view_pairs[:, 0]] @ u[view_pairs[:, 1]].transpose(1, 2)  # [P, B, B]
        negative_weights = _conditional_weights(-tau_neg * negative_d2, same_image,
                                                uniform=weights in ("none", "attraction_only"),
                                                detach=detach_weights)
        repulsion = -beta * (negative_weights * negative_d2).sum(dim=2).mean()
        return CacrTerms(attraction, repulsion, positive_weights, negative_weights, view_pairs)


def cacr(views, tau_pos: float = 1.0, tau_neg: float = 0.9, alpha: float = 1.0, beta: float = 1.0,
         weights: str = "both", detach_weights: bool = False) -> torch.Tensor:
    r"""Contrastive attraction and contrastive repulsion (CACR) over V = M + 1 views of every image.

    With z^a_i = normalize(views[a][i]) and d^2(u, v) = ||u - v||^2 the squared distance
    of unit vectors,

    attraction (every view a a query, its M other views b the positives, hardest = farthest):

        w^+_{i,ab} = \frac{\exp(\tau^+ d^2(z^a_i, z^b_i))}
                          {\sum_{b' \ne a} \exp(\tau^+ d^2(z^a_i, z^{b'}_i))},
        L_{CA} = \frac{1}{V} \sum_a \frac{1}{B} \sum_i \sum_{b \ne a}
                 w^+_{i,ab} \, \alpha \, d^2(z^a_i, z^b_i)

    repulsion (each view pair a < b, the query z^a_i, the other images' views z^b_j as negatives,
    hardest = nearest):

        w^-_{i,j} = \frac{\exp(-\tau^- d^2(z^a_i, z^b_j))}
                         {\sum_{j' \ne i} \exp(-\tau^- d^2(z^a_i, z^b_{j'}))},
        L_{CR} = \frac{1}{P} \sum_{a < b} \frac{1}{B} \sum_i \sum_{j \ne i}
                 w^-_{i,j} \, (-\beta \, d^2(z^a_i, z^b_j))

    and L = L_CA + L_CR, with P = V(V - 1)/2 pairs. The weights are "conditional distributions": a
    softmax of the cost over a query's positives, or over its negatives.

    For unit vectors d^2 = 2 - 2 s, s = u . v the cosine similarity, so the softmaxes read

        w^-_{i,j} = softmax_j(2 \tau^- s(z^a_i, z^b_j)),
        w^+_{i,ab} = softmax_b(-2 \tau^+ s(z^a_i, z^b_i)):

    the repulsion weights are HCL's exponential tilting of the negatives, q(x^-) \propto e^{\beta s}
    p(x^-), with beta_HCL = 2 tau^- on the raw cosine (`hcl`'s beta multiplies s / t, so there
    beta = 2 tau^- t), applied to a linear cost rather than inside a log-sum-exp. The attraction
    weights tilt the other way, towards the least similar positives: hard positives.

    What is detached: nothing by default, as in the authors' small-scale code (the gradient also
    flows through the softmax weights: a soft-max / soft-min objective). detach_weights=True
    computes the weights as constants, a reweighted loss, as the authors' ImageNet code does
    (there under no_grad). weights="none" (uniform weights on positives and negatives),
    "attraction_only" (uniform weights on the negatives) and "repulsion_only" (uniform weights on
    the positives) are the paper's ablations, the authors' `--choice
    none / without_w2 / without_w1`; tau = 0 also makes a softmax uniform.

    Zheng et al., "Contrastive Attraction and Contrastive Repulsion for Representation Learning",
    TMLR 2023 (JegZheng/CACR-SSL, small_scale_experiments/losses). Defaults: the README's CIFAR-10
    settings, tau^+ = 1, tau^- = 0.9, alpha = beta = 1, with M = 4 (5 views); the code's own default
    is tau^- = 1.0, and CIFAR-100 and STL-10 use tau^- = 2.

    Args:
        views: V = M + 1 >= 2 embeddings [B, D] of the same B >= 2 images (a list, or a
            tensor [V, B, D]).
        tau_pos: tau^+ >= 0, concentration of the attraction weights on the farthest positives.
        tau_neg: tau^- >= 0, concentration of the repulsion weights on the nearest negatives.
        alpha: alpha > 0, the attraction cost's scale.
        beta: beta > 0, the repulsion cost's scale.
        weights: "both" (default), "none", "attraction_only" or "repulsion_only": which conditional
            weights are used, the others being uniform.
        detach_weights: compute the weights without gradient (the ImageNet code's reweighted loss).
    """
    terms = cacr_terms(views, tau_pos, tau_neg, alpha, beta, weights, detach_weights)
    return terms.attraction + terms.repulsion


def supcon(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor,
           temperature: float = 0.1) -> torch.Tensor:
    r"""Supervised contrastive loss over the 2B anchors of two views (SupCon, the
    paper's L^{sup}_{out}).

    With u = normalize([z1; z2]), y = [labels; labels] (both views of an image carry its label) and
    P(i) = {p \ne i : y_p = y_i}, the other view of anchor i's image and both views of every other
    image of its class,

        \ell_i = -\frac{1}{|P(i)|} \sum_{p \in P(i)}
                 \log \frac{\exp(u_i \cdot u_p / \tau)}{\sum_{a \ne i} \exp(u_i \cdot u_a / \tau)},
        \qquad L = \frac{1}{2B} \sum_{i=1}^{2B} \ell_i

    The mean over the positives sits outside the log (L_out; the paper's L_in, with the mean inside,
    trains worse). The denominator is InfoNCE's: every view but the anchor itself, positives
    included. P(i) always holds the other view of the same image, so |P(i)| >= 1. With all labels
    distinct P(i) is that view alone and the loss is `info_nce`. Nothing is detached.

    Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020
    (https://arxiv.org/abs/2004.11362). The authors' code (HobbitLong/SupContrast `SupConLoss`) also
    multiplies by tau / tau_base (tau_base = 0.07). That factor leaves the minimiser alone but
    scales every gradient, so under SGD it acts on the learning rate: at the recipe's tau = 0.1 it
    is 1.43, and without it the same learning rate takes steps 0.07 / 0.1 = 0.7x as large as the
    reference recipe's (weight decay aside, which it does not scale). It is left out here, so that
    distinct labels give InfoNCE exactly; multiply the learning rate by tau / 0.07 for the
    reference recipe's steps (`clcourse.methods.SupCon`).

    Args:
        z1, z2: [B, D] embeddings of the first and second view of the same B >= 2 images.
        labels: [B] integer class labels of the images (a tensor, list or array).
        temperature: tau > 0 (SupContrast's CIFAR recipe: 0.1).
    """
    temperature = require_positive("temperature", temperature)
    require_embeddings("z1", z1)
    _require_two_images("z1", z1, "supcon")
    labels = require_labels("labels", labels, z1.shape[0], "z1")
    with no_autocast(z1.device):
        u = _normalised_pair(z1, z2)
        same_class = torch.cat([labels, labels]).to(u.device)
        self_pairs = torch.eye(len(u), dtype=torch.bool, device=u.device)
        positives = (same_class[:, None] == same_class[None, :]) & ~self_pairs
        log_probability = torch.log_softmax(
            (u @ u.T / temperature).masked_fill(self_pairs, float("-inf")), dim=1)
        per_anchor = -log_probability.masked_fill(~positives, 0.0).sum(1) / positives.sum(1)
        return per_anchor.mean()
