"""Losses for training on (possibly soft, possibly weak) labels, and the loss registry.

All take logits (B, K) and target distributions (B, K) whose rows sum to one. Hard labels are
one-hot targets, so one code path serves ground truth, soft weak labels and hard weak labels.

Adding a loss is one decorated function, in any module imported before the config is validated::

    from superalign.training.losses import register_loss

    @register_loss("my-loss", description="what it does")
    def my_loss(logits, targets, cfg, step, total_steps):
        return ...  # a scalar tensor

and a W2S method selects it with ``loss: {name: my-loss}``. ``cfg`` is the
:class:`~superalign.training.config.LossConfig`; ``step`` and ``total_steps`` are the optimizer
step and the run's total (for warm-ups).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from superalign.training.config import LossConfig

LossFn = Callable[[torch.Tensor, torch.Tensor, "LossConfig", int, int], torch.Tensor]


@dataclass(frozen=True)
class LossSpec:
    name: str
    description: str
    fn: LossFn
    version: int = 1  # bump when the loss computes something different: stage keys of losses above 1 carry it


LOSSES: dict[str, LossSpec] = {}


def register_loss(name: str, *, description: str = "", version: int = 1):
    """Decorator: register ``fn(logits, targets, cfg, step, total_steps) -> scalar tensor`` under ``name``.

    ``version``: raise it when a change makes the loss compute something else, so that stages trained
    with the old code are not reused (their keys carry the version once it is above 1).
    """

    def wrap(fn: LossFn) -> LossFn:
        LOSSES[name] = LossSpec(name, description or (fn.__doc__ or "").strip().split("\n")[0], fn, version)
        return fn

    return wrap


def list_losses() -> list[LossSpec]:
    return [LOSSES[k] for k in sorted(LOSSES)]


def get_loss(name: str) -> LossSpec:
    """The registered loss ``name`` (an :class:`~superalign.errors.UnknownNameError` listing the others if absent)."""
    if name not in LOSSES:
        from superalign.errors import UnknownNameError

        raise UnknownNameError("loss.name", name, list(LOSSES),
                               "use a registered loss or register one with @register_loss")
    return LOSSES[name]


def compute_loss(cfg: "LossConfig", logits: torch.Tensor, targets: torch.Tensor, step: int,
                 total_steps: int) -> torch.Tensor:
    """The loss ``cfg.name`` on one batch, at optimizer step ``step`` of ``total_steps``."""
    return get_loss(cfg.name).fn(logits, targets, cfg, step, total_steps)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_k targets_k * log softmax(logits)_k``."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def harden_predictions(probs: torch.Tensor, target_prior: torch.Tensor | None = None) -> torch.Tensor:
    """One-hot hardened predictions.

    For two classes with ``target_prior`` (the batch's mean target), the threshold is adaptive as
    in Burns et al. (2023): the hardened batch holds exactly ``k = round(prior_1 * B)`` positives,
    the ``k`` examples with the highest P(class 1) (ties broken by position, so exactly ``k`` even
    when probabilities are equal). ``k = 0`` (weak labels with no positives) gives no positives and
    ``k = B`` gives all. Otherwise, argmax.
    """
    n_classes = probs.shape[-1]
    if n_classes == 2 and target_prior is not None:
        p1 = probs[:, 1]
        k = int(round(float(target_prior[1].clamp(0.0, 1.0)) * p1.shape[0]))
        hard = torch.zeros(p1.shape[0], dtype=torch.long, device=probs.device)
        if k > 0:
            hard[torch.argsort(p1, descending=True, stable=True)[:k]] = 1
    else:
        hard = probs.argmax(-1)
    return F.one_hot(hard, n_classes).to(probs.dtype)


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


# -- registered losses ---------------------------------------------------------------------------

@register_loss("xent", description="cross-entropy to the (soft or hard) targets")
def _xent(logits: torch.Tensor, targets: torch.Tensor, cfg: "LossConfig", step: int, total_steps: int) -> torch.Tensor:
    return soft_cross_entropy(logits, targets)


@register_loss("logconf", version=2,  # 2: the hardened batch keeps exactly round(prior * batch) positives
               description="auxiliary confidence loss (Burns et al., 2023): weak labels mixed with the "
                           "student's hardened predictions, weight aux_weight warmed up over aux_warmup")
def _logconf(logits: torch.Tensor, targets: torch.Tensor, cfg: "LossConfig", step: int,
             total_steps: int) -> torch.Tensor:
    return logconf_loss(logits, targets, aux_weight_at(step, total_steps, cfg.aux_weight, cfg.aux_warmup))
