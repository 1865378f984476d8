"""Direct Preference Optimisation (Rafailov et al., 2023) on AI-labelled pairs, through TRL's ``DPOTrainer``.

The labeller gives soft preferences ``p = P(a better)``. Each pair is oriented so ``chosen`` is the
side the labeller prefers; pairs with confidence ``|p - 0.5|`` below ``min_confidence`` (ties at
least) are dropped. TRL's ``DPOTrainer`` takes one ``label_smoothing`` for all pairs (conservative
DPO, Mitchell 2023: the chosen label is wrong with probability ε); it has no per-pair soft label.
With ``label_smoothing: auto`` ε is the labeller's own mean doubt, ``mean(1 - max(p, 1 - p))``,
capped below 0.5. The policy gets LoRA adapters; the reference is the same model with the adapter
off (so no second copy), i.e. the starting (SFT) policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from superalign.errors import ConfigError


class DPOSettings(BaseModel):
    """DPO settings (small defaults fit a 2-core CPU)."""

    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.1, gt=0, description="DPO's KL strength (higher = closer to the reference policy)")
    epochs: int = Field(1, ge=1)
    lr: float = Field(5e-4, gt=0, description="LoRA learning rate")
    batch_size: int = Field(4, ge=1)
    max_length: int = Field(256, ge=16, description="prompt + response tokens")
    label_smoothing: float | Literal["auto"] = Field(
        "auto", description="conservative-DPO ε in [0, 0.5); auto: the labeller's mean doubt mean(1 - max(p, 1-p))")
    min_confidence: float = Field(0.0, ge=0, lt=0.5, description="drop pairs with |p - 0.5| at or below this")
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)


def dpo_rows(prompts: Sequence[str], a: Sequence[str], b: Sequence[str], p: np.ndarray,
             min_confidence: float = 0.0) -> tuple[list[dict], np.ndarray]:
    """Pairs oriented by the soft label: rows ``prompt``/``chosen``/``rejected`` and each kept pair's P(chosen)."""
    rows, conf = [], []
    for pr, x, y, q in zip(prompts, a, b, np.asarray(p, dtype=float)):
        if abs(q - 0.5) <= min_confidence or x.strip() == y.strip():
            continue
        chosen, rejected = (x, y) if q > 0.5 else (y, x)
        rows.append({"prompt": pr, "chosen": chosen, "rejected": rejected})
        conf.append(max(q, 1 - q))
    return rows, np.array(conf)


def smoothing_for(cfg: DPOSettings, p_chosen: np.ndarray) -> float:
    """ε for TRL's ``label_smoothing``: the configured value, or the labeller's mean doubt (capped at 0.45)."""
    if cfg.label_smoothing == "auto":
        return float(min(0.45, np.mean(1 - p_chosen))) if len(p_chosen) else 0.0
    if not 0 <= cfg.label_smoothing < 0.5:
        raise ConfigError("dpo.label_smoothing", f"is {cfg.label_smoothing}", "give a value in [0, 0.5) or 'auto'")
    return float(cfg.label_smoothing)


def train_dpo(model, tok, rows: list[dict], p_chosen: np.ndarray, cfg: DPOSettings, out_dir: Path, *,
              seed: int = 0) -> dict:
    """Train ``model`` (LoRA) with DPO on ``rows``; saves ``out_dir/adapter`` and returns the log."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    if len(rows) < 2:
        raise ConfigError("policy_opt", f"DPO has {len(rows)} usable preference pairs (needs at least 2)",
                          "collect more pairs (preferences.n_prompts) or lower dpo.min_confidence")
    eps = smoothing_for(cfg, p_chosen)
    conv = [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows]
    out_dir = Path(out_dir)
    args = DPOConfig(output_dir=str(out_dir / "trl"), num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
                     learning_rate=cfg.lr, beta=cfg.beta, label_smoothing=eps, max_length=cfg.max_length,
                     logging_steps=1, report_to=[], save_strategy="no", seed=seed,
                     use_cpu=not torch.cuda.is_available(), bf16=torch.cuda.is_available(), disable_tqdm=True)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(conv), processing_class=tok,
                         peft_config=lora)
    trainer.train()
    trainer.model.save_pretrained(str(out_dir / "adapter"))
    keep = ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")
    history = [{"step": h.get("step"), **{k: h[k] for k in keep if k in h}}
               for h in trainer.state.log_history if "loss" in h]
    return {"n_pairs": len(rows), "label_smoothing": eps, "history": history}
