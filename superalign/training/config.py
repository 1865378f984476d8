"""Training configs: plain pydantic models, loadable from YAML, validated with field names."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Regime = Literal["probe", "head", "last_k", "lora", "full"]

DEFAULT_LR: dict[str, float] = {"probe": 1e-2, "head": 1e-2, "last_k": 1e-4, "lora": 5e-4, "full": 3e-5}


class TrainConfig(BaseModel):
    """How one model is trained.

    Regimes:
      - ``probe``: linear head on cached pooled features (features computed once per model/data);
      - ``head``: the same head trained through a frozen backbone (no cache; for comparison);
      - ``last_k``: the last ``last_k`` blocks, the final norm and the head are trained;
      - ``lora``: LoRA adapters (``peft``) on all linear layers, plus the head;
      - ``full``: every parameter.
    """

    model_config = ConfigDict(extra="forbid")

    regime: Regime = "probe"
    pooling: Literal["auto", "last", "mean", "first"] = "auto"
    layer: int = Field(-1, description="hidden-state layer to pool (-1 = last; probe/head regimes)")
    max_length: int = Field(128, ge=4, le=32768)
    epochs: int = Field(3, ge=1, le=10000)
    batch_size: int = Field(32, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float | None = Field(None, gt=0, description="learning rate; default depends on the regime")
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_frac: float = Field(0.0, ge=0, le=1)
    last_k: int = Field(1, ge=1)
    prefix_cache: bool = Field(True, description="last_k: run the frozen blocks once and train on cached states "
                                                 "(a stored stage); false: rerun them every epoch in large "
                                                 "length-sorted batches and store nothing")
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    eval_every: int | None = Field(None, ge=1, description="evaluate on val every N steps (default: each epoch)")
    patience: int | None = Field(None, ge=1, description="stop after N evaluations without improvement")
    checkpoint_every: int = Field(50, ge=1, description="in-stage checkpoint interval (steps) for fine-tuning")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "no", description="autocast precision on GPU; auto = bf16 where supported. Measured on an H100 "
                          "(benchmarks/results/gpu_h100.json), bf16 autocast slowed 135M-360M models down")
    features_batch_size: int = Field(32, ge=1)

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.regime]

    def precision(self) -> str:
        """The mixed-precision mode for accelerate, resolving 'auto' on this machine."""
        if self.mixed_precision != "auto":
            return self.mixed_precision
        import torch

        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"

    def uses_features(self) -> bool:
        return self.regime == "probe"


class LossConfig(BaseModel):
    """The training objective. ``logconf`` is the auxiliary confidence loss of Burns et al. (2023)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("xent", description="a registered loss (superalign.training.losses: xent, logconf, or one "
                                          "added with @register_loss)")
    aux_weight: float = Field(0.5, ge=0, le=1, description="final weight of the student's own hardened predictions")
    aux_warmup: float = Field(0.2, ge=0, le=1, description="fraction of training over which the weight warms up")

    @field_validator("name")
    @classmethod
    def _registered(cls, v: str) -> str:
        from superalign.training.losses import LOSSES

        if v not in LOSSES:
            raise ValueError(f"unknown loss '{v}'; registered losses: {', '.join(sorted(LOSSES))} "
                             "(add one with @superalign.training.losses.register_loss)")
        return v
