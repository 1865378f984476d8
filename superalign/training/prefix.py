"""Partial fine-tuning on cached prefix states.

When only the last ``k`` blocks of a backbone train, the first ``L - k`` blocks compute the same
thing every epoch. We run them once, keep each example's hidden states at the input of block
``L - k`` (``output_hidden_states[L - k]``), and at training time replace the frozen blocks with
stubs: the first emits the cached states for the batch, the rest pass them through. The model's
own forward still builds embeddings, masks and rotary tables (cheap), so this works for any
architecture whose blocks return a tensor; :func:`check_equivalence` verifies that on a batch.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from superalign.models.classifier import INFERENCE_TOKENS, Classifier, Encoded, collate, length_batches
from superalign.models.packing import can_pack, packed_batches, packed_inputs
from superalign.training.regimes import transformer_blocks

log = logging.getLogger(__name__)


@dataclass
class PrefixStates:
    """Per-example hidden states (T_i, D) stored flat: ``flat[offsets[i]:offsets[i+1]]``."""

    flat: np.ndarray
    offsets: np.ndarray

    def get(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i] : self.offsets[i + 1]]


class _Stop(Exception):
    """Raised by a hook on block ``start`` once its input is captured: the later blocks never run."""


@torch.inference_mode()
def compute_prefix_states(backbone: nn.Module, encoded: Encoded, pad_id: int, start: int, batch_size: int = 32,
                          desc: str = "prefix states", device: torch.device | str | None = None,
                          max_tokens: int | None = INFERENCE_TOKENS, packing: bool = True,
                          share_prefix: bool = True) -> PrefixStates:
    """Hidden states at the input of block ``start`` for every example.

    Only blocks ``[0, start)`` run: a pre-hook on block ``start`` takes its input and stops the
    forward. With ``packing`` and a model that passes :func:`~superalign.models.packing.supports_packing`
    (decoders), texts go padding-free, several to a row, in forwards of ``PACKED_TOKENS`` tokens, and
    (``share_prefix``) the prefix every text shares is computed once per row; otherwise batches are
    length-sorted, at least ``batch_size`` rows and more while the padded batch stays within
    ``max_tokens`` tokens.
    """
    device = device or next(backbone.parameters()).device
    lengths = encoded.lengths()
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat: np.ndarray | None = None
    blocks = transformer_blocks(backbone)
    captured: list[torch.Tensor] = []

    def grab(_module, args, kwargs):
        captured.append(args[0] if args else kwargs["hidden_states"])
        raise _Stop

    def hidden_of(**inputs) -> torch.Tensor:
        captured.clear()
        try:
            return backbone(**inputs, output_hidden_states=True).hidden_states[start]
        except _Stop:
            return captured[0]

    def passes():
        """(example indices, their hidden states' real tokens, example after example) per forward."""
        if packing:
            for batch in packed_batches(encoded.ids, pad_id, share_prefix=share_prefix):
                hidden = hidden_of(**packed_inputs(backbone, batch))
                yield batch.examples, hidden.reshape(-1, hidden.shape[-1])[batch.token_index().to(hidden.device)]
            return
        for idx in length_batches(lengths, batch_size, max_tokens):
            ids, mask = collate([encoded.ids[i] for i in idx], pad_id)
            hidden = hidden_of(input_ids=ids.to(device), attention_mask=mask.to(device))
            yield idx, hidden[mask.to(hidden.device).bool()]  # right padding: row after row, real tokens only

    packing = packing and can_pack(backbone, encoded.ids)  # (before the hook: the check runs a full forward)
    handle = blocks[start].register_forward_pre_hook(grab, with_kwargs=True) if start < len(blocks) else None
    try:
        for idx, tokens in tqdm(passes(), desc=desc, leave=False):
            if flat is None:
                flat = np.zeros((int(offsets[-1]), tokens.shape[-1]), dtype=np.float32)
            flat[np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in idx])] = tokens.float().cpu().numpy()
    finally:
        if handle is not None:
            handle.remove()
    assert flat is not None
    return PrefixStates(flat, offsets)


class _Emit(nn.Module):
    """Stands in for the first frozen block: returns the injected states."""

    def __init__(self, holder: "PrefixClassifier"):
        super().__init__()
        object.__setattr__(self, "_holder", holder)  # not a submodule (avoid a reference cycle in modules())

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self._holder.injected.to(hidden_states.dtype)


class _Pass(nn.Module):
    """Stands in for the other frozen blocks."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states


def _last_positions(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices and each row's last real position of a right-padded (B, T) mask."""
    return torch.arange(mask.shape[0], device=mask.device), mask.long().sum(1).clamp_min(1) - 1


class _LastToken:
    """The final block of a decoder computed for each row's last real token only.

    With last-token pooling nothing reads the final block's output at other positions, so only its
    keys and values need every position: queries, the attention output, the MLP and the norms run
    on one token per row (~1/mean-length of the block's work, forward and backward). Written for
    the Llama-style layout that most decoders share (``input_layernorm``, ``self_attn.{q,k,v,o}_proj``
    with optional ``q_norm``/``k_norm``, ``post_attention_layernorm``, ``mlp``; Gemma's extra
    ``pre_/post_feedforward_layernorm``), with the layer's own rotary function. The first call
    compares it with the block's own forward on that batch; a layer that does not fit (an error, or
    a difference) keeps its own forward from then on. Installed as the block's ``forward`` (an
    instance attribute), so parameter names do not change.
    """

    def __init__(self, block: nn.Module, holder: "PrefixClassifier"):
        self.block, self.holder = block, holder
        self.checked: bool | None = None  # None: not yet compared; then whether it matched
        self.max_diff: float | None = None

    def __call__(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        mask = self.holder.mask2d
        if self.checked is False or mask is None or kwargs.get("position_embeddings") is None:
            return self.full(hidden_states, *args, **kwargs)
        if self.checked is None:
            out = self._first(hidden_states, mask, *args, **kwargs)
            return out if self.checked else self.full(hidden_states, *args, **kwargs)
        return self._forward(hidden_states, mask, kwargs["position_embeddings"])

    def _first(self, hidden_states: torch.Tensor, mask: torch.Tensor, *args, **kwargs) -> torch.Tensor | None:
        """The first call: the last-token output, compared with the block's own forward on this batch;
        sets ``checked`` (and ``max_diff``), and logs why when the layer keeps its own forward."""
        reason, out = self._unsupported(), None
        if reason is None:
            try:
                out = self._forward(hidden_states, mask, kwargs["position_embeddings"])
                with torch.no_grad():
                    ref = self.full(hidden_states, *args, **kwargs)
                rows, last = _last_positions(mask)
                want = ref[rows, last].float()
                self.max_diff = float((out[rows, last].detach().float() - want).abs().max())
                if self.max_diff > 1e-3 * float(want.abs().max()) + 1e-5:
                    reason = f"differs from the full block by {self.max_diff:.3g}"
            except Exception as err:  # noqa: BLE001 - a layer of another layout: keep its own forward
                reason = f"{type(err).__name__}: {err}"
        self.checked = reason is None
        if reason:
            log.info("last-token final block not used for %s: %s", type(self.block).__name__, reason)
        return out

    def full(self, *args, **kwargs) -> torch.Tensor:
        """The block's own forward."""
        return type(self.block).forward(self.block, *args, **kwargs)

    def _unsupported(self) -> str | None:
        """Why this layer does not fit the last-token forward, or ``None``."""
        attn = getattr(self.block, "self_attn", None)
        if attn is None:
            return "no self_attn"
        if getattr(attn, "attn_logit_softcapping", None):
            return "attention logit soft-capping"
        if getattr(attn, "attention_dropout", 0):
            return "attention dropout"
        return None

    def _forward(self, hidden: torch.Tensor, mask: torch.Tensor, position_embeddings) -> torch.Tensor:
        block, attn = self.block, self.block.self_attn
        rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb
        b, t, _ = hidden.shape
        hd = attn.head_dim
        rows, last = _last_positions(mask)
        x = block.input_layernorm(hidden)
        q = attn.q_proj(x[rows, last][:, None]).view(b, 1, -1, hd).transpose(1, 2)
        k = attn.k_proj(x).view(b, t, -1, hd).transpose(1, 2)
        v = attn.v_proj(x).view(b, t, -1, hd).transpose(1, 2)
        if hasattr(attn, "q_norm"):
            q, k = attn.q_norm(q), attn.k_norm(k)
        cos, sin = (e.expand(b, -1, -1) for e in position_embeddings)
        q, _ = rope(q, q, cos[rows, last][:, None], sin[rows, last][:, None])
        _, k = rope(k, k, cos, sin)
        pos = torch.arange(t, device=hidden.device)
        allowed = pos[None, :] <= last[:, None]  # causal for the last query (right padding)
        window = getattr(attn, "sliding_window", None)
        if window:
            allowed &= last[:, None] - pos[None, :] < window
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None, None, :], scale=attn.scaling,
                                           enable_gqa=q.shape[1] != k.shape[1])
        o = attn.o_proj(o.transpose(1, 2).reshape(b, 1, -1))
        h = hidden[rows, last][:, None]
        if hasattr(block, "pre_feedforward_layernorm"):  # Gemma: norms after attention and MLP too
            h = h + block.post_attention_layernorm(o)
            out = h + block.post_feedforward_layernorm(block.mlp(block.pre_feedforward_layernorm(h)))
        else:
            h = h + o
            out = h + block.mlp(block.post_attention_layernorm(h))
        return torch.zeros_like(hidden).index_put((rows, last), out[:, 0].to(hidden.dtype))


class PrefixClassifier(nn.Module):
    """A :class:`Classifier` whose frozen blocks ``[0, start)`` are replaced by cached states.

    ``forward(input_ids, attention_mask, prefix_states)``: the states are (B, T, D), right-padded.
    With ``last_token`` (default) and last-token pooling of the final layer, the final block runs
    for each row's last token only (:class:`_LastToken`; exact, checked on the first batch): the
    hidden states at other positions of the final layer are then zeros, not the model's.
    """

    def __init__(self, classifier: Classifier, start: int, last_token: bool = True):
        super().__init__()
        self.classifier = classifier
        self.start = start
        self.injected: torch.Tensor | None = None
        self.mask2d: torch.Tensor | None = None
        blocks = transformer_blocks(classifier.backbone)
        blocks[0] = _Emit(self)
        for i in range(1, start):
            blocks[i] = _Pass()
        self.last_token: _LastToken | None = None
        if last_token and start < len(blocks) and classifier.pooling == "last" and classifier.layer == -1:
            self.last_token = _LastToken(blocks[-1], self)
            blocks[-1].forward = self.last_token

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        self.injected, self.mask2d = states, attention_mask
        try:
            return self.classifier(input_ids, attention_mask)
        finally:
            self.injected = self.mask2d = None


@dataclass
class PrefixBatcher:
    """Token ids plus their cached prefix states, padded per batch."""

    encoded: Encoded
    pad_id: int
    states: PrefixStates

    def inputs(self, idx: Sequence[int]) -> tuple[torch.Tensor, ...]:
        ids, mask = collate([self.encoded.ids[i] for i in idx], self.pad_id)
        width = ids.shape[1]
        dim = self.states.flat.shape[1]
        states = torch.zeros((len(idx), width, dim), dtype=torch.float32)
        for row, i in enumerate(idx):
            s = self.states.get(int(i))
            states[row, : len(s)] = torch.from_numpy(np.array(s))  # copy: the cache may be a read-only memmap
        return ids, mask, states

    def lengths(self) -> np.ndarray | None:
        return self.encoded.lengths()


@torch.inference_mode()
def check_equivalence(reference: Classifier, prefixed: PrefixClassifier, batcher: PrefixBatcher,
                      idx: Sequence[int], atol: float = 1e-3) -> float:
    """Max |pooled-feature difference| between the full and the prefix-cached backbone on ``idx``.

    Raises when it exceeds ``atol`` (an architecture whose blocks do not fit the stubs).
    """
    dev = next(reference.parameters()).device
    ids, mask, states = (t.to(dev) for t in batcher.inputs(idx))
    was = reference.training, prefixed.training
    reference.eval()
    prefixed.eval()
    prefixed.injected, prefixed.mask2d = states, mask
    try:
        diff = (reference.features(ids, mask) - prefixed.classifier.features(ids, mask)).abs().max().item()
    finally:
        prefixed.injected = prefixed.mask2d = None
        reference.train(was[0])
        prefixed.train(was[1])
    if diff > atol:
        raise RuntimeError(f"prefix-cached model differs from the full model by {diff:.2e} (> {atol:g}); "
                           "set prefix_cache: false for this model")
    return diff


class StreamingPrefixBatcher:
    """Prefix states computed on the fly, a chunk of upcoming batches at a time, and then dropped.

    For last-k training without a stored cache (``prefix_cache: false``-style memory use): ``fit``
    announces each epoch's batches through :meth:`plan`; when a batch is asked for, the frozen blocks
    run once over the examples of it and the next ``chunk - 1`` planned batches, in length-sorted,
    token-budgeted batches (large matrix products; packed for decoders, see
    :func:`compute_prefix_states`), and only those states are kept. The frozen
    forward still runs for every example in every epoch, as with a plain full forward; the trained
    blocks see the same numbers (up to float rounding). Pair it with :class:`PrefixClassifier`.
    Batches not in the plan (validation, prediction) get their states computed for them alone.
    """

    def __init__(self, backbone: nn.Module, encoded: Encoded, pad_id: int, start: int, chunk: int = 16,
                 batch_size: int = 32, max_tokens: int | None = INFERENCE_TOKENS, packing: bool = True,
                 share_prefix: bool = True):
        self.backbone, self.encoded, self.pad_id, self.start = backbone, encoded, pad_id, start
        self.chunk, self.batch_size, self.max_tokens = chunk, batch_size, max_tokens
        self.packing, self.share_prefix = packing, share_prefix
        self._plan: list[np.ndarray] = []
        self._where: dict[tuple[int, int], int] = {}
        self._states: dict[int, np.ndarray] = {}
        self.frozen_passes = 0  # examples run through the frozen blocks (for tests and benchmarks)

    def plan(self, batches: Sequence[np.ndarray]) -> None:
        """The batches (example indices) of the coming epoch, in order."""
        self._plan = [np.asarray(b) for b in batches]
        self._where = {(int(b[0]), len(b)): k for k, b in enumerate(self._plan) if len(b)}
        self._states = {}

    def _compute(self, examples: np.ndarray) -> None:
        sub = Encoded([self.encoded.ids[int(i)] for i in examples])
        was = self.backbone.training
        self.backbone.eval()
        states = compute_prefix_states(self.backbone, sub, self.pad_id, self.start, self.batch_size,
                                       desc="prefix chunk", max_tokens=self.max_tokens, packing=self.packing,
                                       share_prefix=self.share_prefix)
        self.backbone.train(was)
        self.frozen_passes += len(examples)
        self._states = {int(i): states.get(j) for j, i in enumerate(examples)}

    def inputs(self, idx: Sequence[int]) -> tuple[torch.Tensor, ...]:
        idx = np.asarray(idx)
        if any(int(i) not in self._states for i in idx):
            k = self._where.get((int(idx[0]), len(idx)))
            if k is not None and np.array_equal(self._plan[k], idx):
                self._compute(np.unique(np.concatenate(self._plan[k : k + self.chunk])))
            else:
                self._compute(np.unique(idx))
        ids, mask = collate([self.encoded.ids[int(i)] for i in idx], self.pad_id)
        states = torch.zeros((len(idx), ids.shape[1], next(iter(self._states.values())).shape[1]))
        for row, i in enumerate(idx):
            s = self._states[int(i)]
            states[row, : len(s)] = torch.from_numpy(s)
        return ids, mask, states

    def lengths(self) -> np.ndarray | None:
        return self.encoded.lengths()
