"""Padding-free ("packed") inference batches for decoders.

Short texts padded to a batch's longest row waste compute, and sorting by length only helps so
far: a batch of equal-length texts is small when the texts are short (a WordNet word is ~3.5
tokens, so 64 of them make a 220-token matrix product). Packing puts several whole texts into each
row of a fixed width, one after another, with ``position_ids`` that restart for each text and an
explicit 4-D additive mask (``transformers`` passes such a mask to every layer unchanged; the idea of
its ``DataCollatorWithFlattening``) that keeps each text to itself, so every token sees what it
would see alone and the linears (nearly all the FLOPs) run on one large matrix of real tokens. In
a causal model the tokens every text starts with (a BOS token, a prompt template) have the same
hidden states in every text: they sit once at the start of each row, and every text of the row
attends to them.

Whether a model honours that format is checked, not assumed: :func:`supports_packing` runs a few
texts both ways once per model and compares. Encoders, whose attention is bidirectional, fail the
check and keep padded batches (packing them gave MiniLM no speed-up here: its texts pad by 1-2%).
"""

from __future__ import annotations

import bisect
import weakref
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

#: Token budget (rows x width) of one packed forward. On this project's 2-core CPU, budgets of 1024,
#: 2048 and 4096 gave Gemma-3-270M's prefix pass the same speed within the machine's noise
#: (a throwaway test, 2026-12-03); 2048 keeps the activations of one forward small.
PACKED_TOKENS = 2048

#: Narrowest packed row: texts shorter than this share rows of this width (attention inside a row
#: costs width^2 per head, a few percent of the linears at 32; rows as narrow as the longest of a
#: set of 6-token words would waste a sixth of their slots).
PACK_WIDTH = 32


def pack_rows(lengths: np.ndarray, width: int) -> list[list[int]]:
    """Example indices per row: best-fit decreasing, each row filled with the longest texts that fit.

    Every length must be in ``[1, width]``. The first rows take the longest texts.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) and (lengths.min() < 1 or lengths.max() > width):
        raise ValueError(f"pack_rows: lengths must lie in [1, {width}]; got {lengths.min()}..{lengths.max()}")
    buckets: dict[int, list[int]] = {}
    for i in range(len(lengths) - 1, -1, -1):  # each bucket pops its lowest index first
        buckets.setdefault(int(lengths[i]), []).append(i)
    sizes = sorted(buckets)  # distinct lengths still holding texts
    rows: list[list[int]] = []
    while sizes:
        row: list[int] = []
        free = width
        while sizes:
            k = bisect.bisect_right(sizes, free) - 1  # the longest remaining length that fits
            if k < 0:
                break
            length = sizes[k]
            row.append(buckets[length].pop())
            free -= length
            if not buckets[length]:
                del buckets[length]
                sizes.pop(k)
        rows.append(row)
    return rows


@dataclass
class PackedBatch:
    """One packed forward: ``input_ids``/``position_ids`` (R, W), the (R, W, W) mask, where each text sits.

    Every row starts with the ``prefix`` tokens all texts share (0 or more), then the rest of each
    of its texts: ``examples[j]`` (an index into the caller's list) has its first ``prefix`` tokens
    at columns ``0 : prefix`` of ``row[j]`` and the others at ``start[j] : start[j] + length[j]``.
    ``allowed[r, q, k]``: whether token ``q`` of row ``r`` attends to token ``k``.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    allowed: torch.Tensor
    prefix: int
    examples: np.ndarray
    row: np.ndarray
    start: np.ndarray
    length: np.ndarray

    def token_index(self) -> torch.Tensor:
        """Flat indices into ``(R * W)`` of every token of every text, text after text in ``examples`` order."""
        width = self.input_ids.shape[1]
        head = np.arange(self.prefix)
        return torch.from_numpy(np.concatenate(
            [np.concatenate([r * width + head, np.arange(r * width + s, r * width + s + n)])
             for r, s, n in zip(self.row, self.start, self.length)]).astype(np.int64))

    def sizes(self) -> np.ndarray:
        """Each text's token count (shared prefix included)."""
        return self.length + self.prefix

    def gather(self, hidden: torch.Tensor, pooling: str) -> torch.Tensor:
        """Pool (R, W, D) hidden states per text: (len(examples), D), as :func:`classifier.pool` would."""
        flat = hidden.reshape(-1, hidden.shape[-1])
        base = torch.from_numpy(self.row * hidden.shape[1])
        if pooling == "last":
            return flat[base + torch.from_numpy(self.start + self.length - 1)]
        if pooling == "first":
            return flat[base + (0 if self.prefix else torch.from_numpy(self.start))]
        if pooling == "mean":
            sizes = torch.from_numpy(self.sizes())
            seg = torch.repeat_interleave(torch.arange(len(self.examples)), sizes)
            sums = torch.zeros((len(self.examples), flat.shape[1]), dtype=flat.dtype)
            sums.index_add_(0, seg, flat[self.token_index()])
            return sums / sizes.to(flat.dtype).unsqueeze(1)
        raise ValueError(f"pooling must be one of last, mean, first; got '{pooling}'")


def row_width(ids: Sequence[Sequence[int]]) -> int:
    """The default packed row width: the longest text, at least :data:`PACK_WIDTH`."""
    return max(max((len(x) for x in ids), default=1), PACK_WIDTH)


def can_pack(model: nn.Module, ids: Sequence[Sequence[int]]) -> bool:
    """Whether ``ids`` can go through ``model`` packed: it passes :func:`supports_packing` and the
    rows fit its sliding window (if any)."""
    window = getattr(getattr(model, "config", None), "sliding_window", None)
    if window and row_width(ids) > int(window):
        return False
    return supports_packing(model)


def shared_prefix(ids: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix every text shares, leaving each text at least one token of its own."""
    if not ids:
        return 0
    first = list(ids[0])
    n = min(len(x) for x in ids) - 1
    for x in ids[1:]:
        k = 0
        while k < n and x[k] == first[k]:
            k += 1
        n = k
        if n <= 0:
            return 0
    return max(n, 0)


def packed_batches(ids: Sequence[Sequence[int]], pad_id: int, max_tokens: int = PACKED_TOKENS,
                   width: int | None = None, share_prefix: bool = True) -> Iterator[PackedBatch]:
    """Pack ``ids`` (token lists) into rows of ``width`` tokens and group rows into forwards of at most
    ``max_tokens`` tokens (at least one row).

    With ``share_prefix``, the tokens every text starts with (a BOS token, a prompt template) sit
    once at the start of each row and every text of the row attends to them: in a causal model
    their hidden states are the same for every text, so computing them once per row instead of
    once per text changes nothing but the work (nothing is kept between calls). ``width`` defaults
    to the longest text, at least :data:`PACK_WIDTH`. Padding sits at row ends and attends only to
    itself.
    """
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    if not len(lengths):
        return
    prefix = shared_prefix(ids) if share_prefix else 0
    width = int(width or row_width(ids))
    rows = pack_rows(np.maximum(lengths - prefix, 1), width - prefix)
    per = max(1, max_tokens // width)
    head = torch.as_tensor(list(ids[0][:prefix]), dtype=torch.long)
    cols = torch.arange(width)
    for g in range(0, len(rows), per):
        group = rows[g : g + per]
        input_ids = torch.full((len(group), width), pad_id, dtype=torch.long)
        position_ids = torch.zeros((len(group), width), dtype=torch.long)
        segment = torch.zeros((len(group), width), dtype=torch.long)  # 0: shared prefix; k >= 1: text k; < 0: pad
        ex, rr, st, ln = [], [], [], []
        for r, row in enumerate(group):
            input_ids[r, :prefix] = head
            position_ids[r, :prefix] = torch.arange(prefix)
            col = prefix
            for k, i in enumerate(row, start=1):
                n = int(lengths[i]) - prefix
                input_ids[r, col : col + n] = torch.as_tensor(list(ids[i][prefix:]), dtype=torch.long)
                position_ids[r, col : col + n] = torch.arange(prefix, prefix + n)
                segment[r, col : col + n] = k
                ex.append(i), rr.append(r), st.append(col), ln.append(n)
                col += n
            segment[r, col:] = -1 - cols[col:]
        causal = cols[None, :, None] >= cols[None, None, :]
        same = segment[:, :, None] == segment[:, None, :]
        sees_prefix = (segment[:, None, :] == 0) & (segment[:, :, None] >= 0)
        allowed = causal & (same | sees_prefix)
        yield PackedBatch(input_ids, position_ids, allowed, prefix, np.array(ex), np.array(rr), np.array(st),
                          np.array(ln))


def packed_inputs(model: nn.Module, batch: PackedBatch) -> dict:
    """Keyword inputs of ``model`` for a packed batch: ``position_ids`` and the batch's own 4-D
    additive mask, on the model's device, no KV cache.

    ``transformers`` passes a 4-D mask through unchanged to every layer; a model with a sliding
    window narrower than the row would need it in the mask too (:func:`can_pack` refuses such rows).
    """
    param = next(model.parameters())
    dtype = param.dtype if param.dtype.is_floating_point else torch.float32
    mask = torch.zeros(batch.allowed.shape, dtype=dtype).masked_fill_(~batch.allowed, torch.finfo(dtype).min)
    return {"input_ids": batch.input_ids.to(param.device), "position_ids": batch.position_ids.to(param.device),
            "attention_mask": mask[:, None].to(param.device), "use_cache": False}


def packed_forward(model: nn.Module, batch: PackedBatch, **kwargs):
    """``model(**packed_inputs(model, batch), **kwargs)``."""
    return model(**packed_inputs(model, batch), **kwargs)


_SUPPORT: "weakref.WeakKeyDictionary[nn.Module, bool]" = weakref.WeakKeyDictionary()
_PROBE = ([5, 17, 9, 30, 2, 11], [5, 17, 3, 21], [5, 17, 4, 19, 6], [5, 17, 14])  # a shared 2-token prefix


@torch.inference_mode()
def supports_packing(model: nn.Module, rtol: float = 1e-3) -> bool:
    """Whether ``model`` gives packed texts the same hidden states as padded ones (checked once).

    Runs four short texts that share a 2-token prefix padded (with an attention mask) and packed
    into one row, and compares every token's last hidden state: max |difference| within ``rtol``
    of the largest |state|. Encoders fail it (their attention is bidirectional); so does any model
    that rejects ``position_ids`` or a 4-D mask (any exception counts as "no").
    """
    if model in _SUPPORT:
        return _SUPPORT[model]
    ok = False
    if getattr(model.config, "is_encoder_decoder", False) is False:
        try:
            vocab = int(getattr(model.config, "vocab_size", 32) or 32)
            texts = [[t % vocab for t in x] for x in _PROBE]
            dev = next(model.parameters()).device
            width = max(len(x) for x in texts)
            ids = torch.zeros((len(texts), width), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, x in enumerate(texts):
                ids[i, : len(x)], mask[i, : len(x)] = torch.tensor(x), 1
            was = model.training
            model.eval()
            try:
                padded = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).last_hidden_state.float().cpu()
                batch = next(packed_batches(texts, 0, width=sum(len(x) for x in texts)))
                packed = packed_forward(model, batch).last_hidden_state.float().cpu()
            finally:
                model.train(was)
            ends = np.cumsum(batch.sizes())
            got = packed.reshape(-1, packed.shape[-1])[batch.token_index()]
            pieces = {int(i): got[e - n : e] for i, n, e in zip(batch.examples, batch.sizes(), ends)}
            diff = max(float((padded[i, : len(x)] - pieces[i]).abs().max()) for i, x in enumerate(texts))
            ok = batch.prefix == 2 and diff <= rtol * float(padded.abs().max().clamp_min(1e-6))
        except Exception:  # noqa: BLE001 - any failure means: keep padded batches
            ok = False
    _SUPPORT[model] = ok
    return ok
