"""Pooled hidden-state features, computed once per (model, data, pooling, layer) and cached.

Linear probes and small heads then train on these arrays in seconds instead of running the
backbone every epoch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from superalign.models.classifier import INFERENCE_TOKENS, collate, encode, length_batches, pool
from superalign.models.packing import can_pack, packed_batches, packed_forward


@torch.inference_mode()
def extract_features(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    pooling: str,
    layers: Sequence[int] = (-1,),
    max_length: int = 128,
    batch_size: int = 32,
    desc: str = "features",
    device: torch.device | str | None = None,
    max_tokens: int | None = INFERENCE_TOKENS,
    packing: bool = True,
    share_prefix: bool = True,
) -> dict[int, np.ndarray]:
    """Return ``{layer: (N, D) float32}`` in the order of ``texts``.

    With ``packing`` and a model that passes :func:`~superalign.models.packing.supports_packing`
    (decoders), texts go padding-free, several to a row (:mod:`superalign.models.packing`), with the
    prefix all texts share computed once per row (``share_prefix``).
    Otherwise batches hold texts of similar length, so short texts are not padded to the longest one, and
    at least ``batch_size`` texts, more while the padded batch stays within ``max_tokens`` tokens
    (``None``: exactly ``batch_size``).
    """
    enc = encode(tokenizer, texts, max_length)
    lengths = enc.lengths()
    want_all = any(layer != -1 for layer in layers)
    out: dict[int, np.ndarray] = {}
    device = device or next(model.parameters()).device
    model.to(device)

    def passes():
        """(example indices, model output, pooling of one hidden-state tensor) per forward."""
        if packing and can_pack(model, enc.ids):
            for batch in packed_batches(enc.ids, tokenizer.pad_token_id, share_prefix=share_prefix):
                res = packed_forward(model, batch, output_hidden_states=want_all)
                yield batch.examples, res, lambda h, b=batch: b.gather(h.float().cpu(), pooling)
            return
        for idx in length_batches(lengths, batch_size, max_tokens):
            ids, mask = collate([enc.ids[i] for i in idx], tokenizer.pad_token_id)
            ids, mask = ids.to(device), mask.to(device)
            res = model(input_ids=ids, attention_mask=mask, output_hidden_states=want_all)
            yield idx, res, lambda h, m=mask: pool(h, m, pooling).float().cpu()

    with tqdm(total=len(texts), desc=desc, unit="ex", leave=False) as bar:
        for idx, res, pooled in passes():
            for layer in layers:
                feats = pooled(res.hidden_states[layer] if want_all else res.last_hidden_state).numpy()
                if layer not in out:
                    out[layer] = np.zeros((len(texts), feats.shape[1]), dtype=np.float32)
                out[layer][idx] = feats
            bar.update(len(idx))
    return out
