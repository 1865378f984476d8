"""Turn a backbone into a trainable module for a regime: probe, head, last_k, lora or full."""

from __future__ import annotations

import copy

import torch
from torch import nn

from superalign.errors import ConfigError
from superalign.models.classifier import Classifier, resolve_pooling
from superalign.training.config import TrainConfig


class ProbeHead(nn.Module):
    """A linear head over cached features, standardised with the training features' statistics."""

    def __init__(self, dim: int, num_classes: int, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("mean", mean if mean is not None else torch.zeros(dim))
        self.register_buffer("std", std if std is not None else torch.ones(dim))
        self.linear = nn.Linear(dim, num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.linear((feats - self.mean) / self.std)


def probe_head(train_features: torch.Tensor, num_classes: int) -> ProbeHead:
    """A zero-initialised :class:`ProbeHead` standardised on ``train_features``."""
    train_features = train_features.float()
    mean = train_features.mean(0)
    std = train_features.std(0).clamp_min(1e-4)
    return ProbeHead(train_features.shape[1], num_classes, mean, std)


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The backbone's stack of blocks: the longest ModuleList of same-typed modules."""
    best: nn.ModuleList | None = None
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            if len({type(m) for m in module}) == 1 and (best is None or len(module) > len(best)):
                best = module
    if best is None:
        raise ConfigError("regime", f"cannot find the transformer blocks of a {type(model).__name__}",
                          "use regime lora, full or probe for this model")
    return best


def _final_norms(model: nn.Module, blocks: nn.ModuleList) -> list[nn.Module]:
    """Norm layers after the blocks (e.g. ``model.norm``), trained with the last blocks."""
    block_ids = {id(m) for b in blocks for m in b.modules()}
    return [m for name, m in model.named_modules()
            if id(m) not in block_ids and name.split(".")[-1] in {"norm", "final_layernorm", "ln_f", "final_layer_norm"}]


def copy_for_regime(backbone: nn.Module, cfg: TrainConfig) -> nn.Module:
    """A copy of ``backbone`` to train under ``cfg.regime``.

    Parameters that the regime freezes are shared with the original instead of copied (the
    original is never trained), so a head or last-k run of a large model costs little memory.
    """
    if cfg.regime in ("lora", "full"):
        return copy.deepcopy(backbone)
    trained: set[int] = set()
    if cfg.regime == "last_k":
        blocks = transformer_blocks(backbone)
        for module in [*list(blocks)[-cfg.last_k:], *_final_norms(backbone, blocks)]:
            trained |= {id(p) for p in module.parameters()}
    memo = {id(p): p for p in backbone.parameters() if id(p) not in trained}
    return copy.deepcopy(backbone, memo)


def build_classifier(backbone: nn.Module, num_classes: int, cfg: TrainConfig, arch: str) -> Classifier:
    """A :class:`Classifier` whose trainable parameters match ``cfg.regime``."""
    pooling = resolve_pooling(cfg.pooling, arch)
    if cfg.regime == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules="all-linear", bias="none")
        backbone = get_peft_model(backbone, lora)
    clf = Classifier(backbone, num_classes, pooling=pooling, layer=cfg.layer if cfg.regime == "head" else -1)
    if cfg.regime in ("head", "last_k", "full"):
        for p in clf.backbone.parameters():
            p.requires_grad_(cfg.regime == "full")
    if cfg.regime == "last_k":
        blocks = transformer_blocks(clf.backbone)
        if cfg.last_k > len(blocks):
            raise ConfigError("last_k", f"is {cfg.last_k} but the model has {len(blocks)} blocks",
                              f"set last_k between 1 and {len(blocks)}")
        for block in list(blocks)[-cfg.last_k:]:
            for p in block.parameters():
                p.requires_grad_(True)
        for norm in _final_norms(clf.backbone, blocks):
            for p in norm.parameters():
                p.requires_grad_(True)
    if cfg.regime == "probe":
        raise ConfigError("regime", "'probe' trains on cached features, not through a classifier",
                          "call probe_head() for probes")
    for p in clf.head.parameters():
        p.requires_grad_(True)
    return clf


def count_trainable(module: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.parameters())
    return trainable, total
