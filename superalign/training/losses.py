"""Losses for training on (possibly soft, possibly weak) labels.

All take logits (B, K) and target distributions (B, K) whose rows sum to one. Hard labels are
one-hot targets, so one code path serves ground truth, soft weak labels and hard weak labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_k targets_k * log softmax(logits)_k``."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def harden_predictions(probs: torch.Tensor, target_prior: torch.Tensor | None = None) -> torch.Tensor:
    """One-hot hardened predictions.

    For two classes with ``target_prior`` (the batch's mean target), the threshold is adaptive as
    in Burns et al. (2023): the ``1 - prior`` quantile of P(class 1), so the hardened batch has the
    same share of positives as the labels it learns from. Otherwise, argmax.
    """
    k = probs.shape[-1]
    if k == 2 and target_prior is not None:
        p1 = probs[:, 1]
        threshold = torch.quantile(p1, 1.0 - float(target_prior[1].clamp(0.0, 1.0)))
        hard = (p1 >= threshold).long()
    else:
        hard = probs.argmax(-1)
    return F.one_hot(hard, k).to(probs.dtype)


def aux_weight_at(step: int, total_steps: int, max_weight: float, warmup_frac: float) -> float:
    """The confidence weight, warmed up linearly from 0 to ``max_weight`` over ``warmup_frac`` of training."""
    if warmup_frac <= 0:
        return max_weight
    ramp = max(1.0, warmup_frac * total_steps)
    return max_weight * min(1.0, step / ramp)


def logconf_loss(logits: torch.Tensor, targets: torch.Tensor, aux_weight: float) -> torch.Tensor:
    """Auxiliary confidence loss (``logconf``): cross-entropy to a mix of the weak labels and the
    student's own hardened predictions, ``(1 - w) * weak + w * harden(student)``."""
    probs = F.softmax(logits.detach().float(), dim=-1)
    hardened = harden_predictions(probs, targets.mean(0))
    mixed = (1.0 - aux_weight) * targets + aux_weight * hardened
    return soft_cross_entropy(logits, mixed)
