"""A backbone plus a pooled linear head, for encoders and decoders alike.

Decoders pool on the last non-padding token (as ``AutoModelForSequenceClassification`` does);
encoders on the mean over tokens (how sentence encoders such as MiniLM were trained). Any
``transformers`` model that returns hidden states can be the backbone: pass your own object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn


def resolve_pooling(pooling: str, arch: str) -> str:
    if pooling == "auto":
        return "last" if arch == "decoder" else "mean"
    return pooling


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool ``hidden`` (B, T, D) over tokens where ``mask`` (B, T) is 1. Right padding assumed."""
    if pooling == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
    if pooling == "last":
        last = mask.long().sum(1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.clamp_min(0)]
    if pooling == "first":
        return hidden[:, 0]
    raise ValueError(f"pooling must be one of auto, last, mean, first; got '{pooling}'")


def hidden_size(config) -> int:
    for attr in ("hidden_size", "d_model", "n_embd", "dim"):
        if hasattr(config, attr):
            return int(getattr(config, attr))
    text = getattr(config, "text_config", None)
    if text is not None:
        return hidden_size(text)
    raise ValueError(f"cannot tell the hidden size of a {type(config).__name__}")


class Classifier(nn.Module):
    """``head(pool(backbone(x).hidden_states[layer]))``; the head starts at zero (uniform output)."""

    def __init__(self, backbone: nn.Module, num_classes: int, pooling: str = "last", layer: int = -1):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.layer = layer
        if hasattr(backbone.config, "use_cache"):
            backbone.config.use_cache = False  # no KV cache when classifying
        self.head = nn.Linear(hidden_size(backbone.config), num_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        want_all = self.layer != -1
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=want_all)
        hidden = out.hidden_states[self.layer] if want_all else out.last_hidden_state
        return pool(hidden, attention_mask, self.pooling)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feats = self.features(input_ids, attention_mask)
        return self.head(feats.to(self.head.weight.dtype))


# --- tokenising and batching ------------------------------------------------------------------

@dataclass
class Encoded:
    """Token ids per example (unpadded), so batches can be padded to their own longest row."""

    ids: list[list[int]]

    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.ids])


def encode(tokenizer, texts: Sequence[str], max_length: int) -> Encoded:
    """Tokenise once, truncating to ``max_length`` tokens."""
    out = tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=True)
    return Encoded([list(x) for x in out["input_ids"]])


def collate(ids: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad a batch: (input_ids, attention_mask)."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return input_ids, mask


#: Default padded-token budget of an inference batch (features, prefix states, predictions).
INFERENCE_TOKENS = 4096


def length_batches(lengths: np.ndarray, batch_size: int, max_tokens: int | None = None,
                   max_waste: float = 1.1) -> Iterator[np.ndarray]:
    """Index batches of similar length (sorted), which wastes little compute on padding.

    With ``max_tokens``, a batch holds at least ``batch_size`` examples and grows past that while
    its padded size (rows x longest row) stays within ``max_tokens`` and within ``max_waste`` times
    its real tokens: short texts go through the model in large batches (large matrix products run
    nearer the machine's peak) with little padding, long ones keep ``batch_size``.
    """
    order = np.argsort(lengths, kind="stable")
    if max_tokens is None:
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size]
        return
    sorted_len = np.maximum(lengths[order].astype(np.int64), 1)
    start = 0
    while start < len(order):
        end = min(start + batch_size, len(order))
        real = int(sorted_len[start:end].sum())
        while end < len(order):
            rows, longest = end + 1 - start, int(sorted_len[end])
            if rows * longest > max_tokens or rows * longest > max_waste * (real + longest):
                break
            real += longest
            end += 1
        yield order[start:end]
        start = end


def padding_waste(lengths: np.ndarray, batches: Sequence[np.ndarray]) -> float:
    """Padded tokens / real tokens over ``batches`` of right-padded rows (1.0 = no padding)."""
    real = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(len(b) * int(lengths[b].max()) for b in batches)
    return padded / max(1, real)
