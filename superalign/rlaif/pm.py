"""Bradley-Terry preference models trained on soft (AI feedback) or hard (human) labels.

A preference model scores ``r(prompt, response) = head(pool(backbone(text)))``. For a pair (a, b)
with soft target ``p = P(a better)`` the loss is

    -[p · log σ(Δ - m) + (1 - p) · log σ(-Δ - m')],   Δ = r(a) - r(b),

where a margin ``m = margin · (2p - 1)`` asks for a gap on confident pairs (hard labels are
p ∈ {0, 1}), plus an optional reward-centring term ``center · mean((r(a) + r(b))²)`` that keeps
rewards near zero. Training goes through :func:`superalign.training.fit`: the pair module emits
``[r(a), r(b)]`` as two logits, so the soft cross-entropy over them *is* the Bradley-Terry loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from superalign.data.preferences import Pairs  # noqa: F401  (moved to data/; importable from here as before)
from superalign.metrics import expected_calibration_error
from superalign.models.classifier import resolve_pooling
from superalign.models.features import extract_features
from superalign.training.config import TrainConfig
from superalign.training.regimes import ProbeHead
from superalign.training.trainer import fit


class PMConfig(BaseModel):
    """Preference model: backbone, training, and the Bradley-Terry loss options."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("smollm2-135m", description="backbone (zoo name, HF id or directory)")
    template: str = "Human: {prompt}\n\nAssistant: {response}"
    pooling: str = "auto"
    max_length: int = Field(256, ge=8)
    epochs: int = Field(30, ge=1)
    lr: float = Field(1e-2, gt=0)
    batch_size: int = Field(32, ge=1)
    weight_decay: float = Field(1e-3, ge=0)
    margin: float = Field(0.0, ge=0)
    center: float = Field(0.0, ge=0, description="reward-centring coefficient")

    def train_config(self, epochs: int | None = None) -> TrainConfig:
        return TrainConfig(regime="probe", epochs=epochs or self.epochs, lr=self.lr, batch_size=self.batch_size,
                           weight_decay=self.weight_decay, schedule="constant")


def bt_loss(margin: float = 0.0, center: float = 0.0):
    """The soft-target Bradley-Terry loss over pair logits ``[r(a), r(b)]`` and targets ``[p, 1-p]``."""

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        delta = (logits[:, 0] - logits[:, 1]).float()
        p = targets[:, 0]
        m = margin * (2 * p - 1)
        value = -(p * F.logsigmoid(delta - m) + (1 - p) * F.logsigmoid(-delta + m)).mean()
        if center:
            value = value + center * (logits.float().sum(-1) ** 2).mean()
        return value

    return loss


class PairHead(nn.Module):
    """Scores both members of a pair with one scalar head: logits ``[r(a), r(b)]``."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.head(fa), self.head(fb)], dim=-1)


@dataclass
class PairFeatureBatcher:
    """Pairs as rows of two index arrays into one feature matrix."""

    features: torch.Tensor
    a: np.ndarray
    b: np.ndarray

    def inputs(self, idx: np.ndarray) -> tuple[torch.Tensor, ...]:
        return self.features[torch.as_tensor(self.a[idx])].float(), self.features[torch.as_tensor(self.b[idx])].float()

    def lengths(self) -> np.ndarray | None:
        return None


class PreferenceModel:
    """A frozen backbone's pooled features and a trained scalar head (the reward)."""

    def __init__(self, backbone, tok, arch: str, cfg: PMConfig, head: ProbeHead | None = None,
                 feature_cache: dict[str, np.ndarray] | None = None):
        self.backbone, self.tok, self.arch, self.cfg = backbone, tok, arch, cfg
        self.pooling = resolve_pooling(cfg.pooling, arch)
        self.head = head
        # pass one dict to every PM on the same backbone/pooling/max_length so features are computed once
        self._cache: dict[str, np.ndarray] = {} if feature_cache is None else feature_cache

    def texts(self, prompts: Sequence[str], responses: Sequence[str]) -> list[str]:
        return [self.cfg.template.format(prompt=p, response=r) for p, r in zip(prompts, responses)]

    def features(self, texts: Sequence[str], desc: str = "PM features") -> np.ndarray:
        """Pooled features, memoised per text (responses recur across stages)."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if todo:
            device = next(self.backbone.parameters()).device
            feats = extract_features(self.backbone, self.tok, todo, pooling=self.pooling, max_length=self.cfg.max_length,
                                     batch_size=16, desc=desc, device=device)[-1]
            self._cache.update(zip(todo, feats))
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 1), np.float32)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Reward for each (prompt, response)."""
        assert self.head is not None, "train the preference model first"
        f = torch.from_numpy(self.features(self.texts(prompts, responses)))
        with torch.inference_mode():
            return self.head(f.float()).squeeze(-1).numpy().astype(np.float64)

    def _pair_data(self, pairs: Pairs) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        ta, tb = self.texts(pairs.prompts, pairs.a), self.texts(pairs.prompts, pairs.b)
        uniq = list(dict.fromkeys(ta + tb))
        pos = {t: i for i, t in enumerate(uniq)}
        feats = torch.from_numpy(self.features(uniq))
        return feats, np.array([pos[t] for t in ta]), np.array([pos[t] for t in tb])

    def fit(self, pairs: Pairs, *, seed: int = 0, epochs: int | None = None,
            init_from_scratch: bool = False) -> list[dict]:
        """Train (or keep training) the head on ``pairs``; returns the training curve."""
        feats, ia, ib = self._pair_data(pairs)
        if self.head is None or init_from_scratch:
            torch.manual_seed(seed)
            mean, std = feats.mean(0), feats.std(0).clamp_min(1e-4)
            self.head = ProbeHead(feats.shape[1], 1, mean, std)
        module = PairHead(self.head)
        batcher = PairFeatureBatcher(feats, ia, ib)
        targets = np.stack([pairs.p, 1 - pairs.p], 1)
        res = fit(module, batcher, np.arange(len(pairs)), targets, self.cfg.train_config(epochs), seed=seed,
                  loss_fn=bt_loss(self.cfg.margin, self.cfg.center), desc="preference model")
        return res.curve

    def evaluate(self, pairs: Pairs) -> dict:
        """Pairwise accuracy (ties in the labels skipped), soft log-loss and calibration of σ(Δ)."""
        ra = self.score(pairs.prompts, pairs.a)
        rb = self.score(pairs.prompts, pairs.b)
        prob_a = 1.0 / (1.0 + np.exp(-(ra - rb)))
        decided = pairs.p != 0.5
        hard = (pairs.p[decided] > 0.5).astype(int)
        acc = float(((prob_a[decided] > 0.5).astype(int) == hard).mean()) if decided.any() else float("nan")
        probs2 = np.stack([1 - prob_a[decided], prob_a[decided]], 1)
        eps = 1e-7
        logloss = float(-(pairs.p * np.log(prob_a + eps) + (1 - pairs.p) * np.log(1 - prob_a + eps)).mean())
        return {"accuracy": acc, "n": int(decided.sum()), "log_loss": logloss,
                "ece": expected_calibration_error(probs2, hard) if decided.any() else float("nan"),
                "reward_mean": float(np.concatenate([ra, rb]).mean()), "reward_std": float(np.concatenate([ra, rb]).std())}

