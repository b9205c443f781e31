"""The attacks of CL-Robustness' code (softsys4ai/CL-Robustness, commit 0897434: `attacks.py`,
`loss.py`, the `EncoderWithHead` of its training scripts), restated as a slow test reference for the
paper definition of clcourse.robustness. Not used by the package.

What the authors' code does, and this reference with it:
- every network it attacks returns L2-normalised outputs: `normalize(head(encoder(x)))`, the
  projector's embedding (threat model I, adversarial pretraining) or the classifier's logits
  (threat model II, adversarial fine-tuning, the SL baseline);
- `SupConLoss` (SupContrast's) over `features` [B, 2, D]: the 2B anchors [view 0; view 1], each
  against every other view, positives by label (without labels: the other view of its image),
  times tau / base_tau;
- `pgd_linf`: delta from 0; each iteration forwards the clean batch and the perturbed one
  separately, raises SupConLoss([z(x), z(x + delta)]) (with the labels for SupCon), steps delta by
  alpha * sign(grad), clips it to [-epsilon, epsilon] and x + delta to [0, 1];
- `pgd_linf_end2end`: the same loop on the mean cross-entropy of the normalised logits.
"""
import torch
import torch.nn.functional as F


def supcon_loss(features, labels=None, temperature=0.07, base_temperature=0.07):
    """SupConLoss(temperature, contrast_mode='all', base_temperature)(features,
    labels), one anchor at a time."""
    batch_size, views = features.shape[:2]
    # [view 0; view 1; ...]
    contrast = torch.cat([features[:, v] for v in range(views)])
    image = torch.arange(batch_size).repeat(views)
    owner = image if labels is None else labels.to(image.device)[image]
    per_anchor = []
    for i in range(len(contrast)):
        logits = torch.stack([contrast[i] @ contrast[a]
                              for a in range(len(contrast))]) / temperature
        # their stabilisation
        logits = logits - logits.max().detach()
        others = [a for a in range(len(contrast)) if a != i]
        log_denominator = torch.log(sum(torch.exp(logits[a]) for a in others))
        positives = [p for p in others if owner[p] == owner[i]]
        mean_log_prob = sum(logits[p] - log_denominator for p in positives) / len(positives)
        per_anchor.append(-(temperature / base_temperature) * mean_log_prob)
    return torch.stack(per_anchor).mean()


def normalised(network):
    """Their `EncoderWithHead`: the network's output, L2-normalised."""
    return lambda x: F.normalize(network(x), dim=1)


def pgd_linf(model, x, epsilon, alpha, num_iter, labels=None, temperature=0.07):
    """Their contrastive attack (threat model I, adversarial pretraining): `model` returns
    normalised embeddings; `labels` given is their method 'SupCon', None their 'SimCLR'."""
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(num_iter):
        z = model(x)
        z_adv = model(x + delta)
        loss = supcon_loss(torch.stack([z, z_adv], dim=1), labels, temperature)
        gradient, = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = (delta + alpha * gradient.sign()).clamp(-epsilon, epsilon)
            delta = (x + delta).clamp(0, 1) - x
        delta.requires_grad_(True)
    return (x + delta).detach()


def pgd_linf_end2end(model, x, labels, epsilon, alpha, num_iter):
    """Their attack with labels (threat model II, adversarial fine-tuning, the SL baseline): `model`
    returns normalised logits; the loss is the batch's mean cross-entropy."""
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(num_iter):
        loss = F.cross_entropy(model(x + delta), labels)
        gradient, = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = (delta + alpha * gradient.sign()).clamp(-epsilon, epsilon)
            delta = (x + delta).clamp(0, 1) - x
        delta.requires_grad_(True)
    return (x + delta).detach()
