"""Recording for automated interpretability (:mod:`superalign.oversight.autointerp`): find the hooked
module, record per-unit top examples and summary statistics in one pass, select units and split
their examples into explanation and held-out sets, and mark a text's strongest tokens.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from superalign.errors import ConfigError, DataError
from superalign.io import write_json_atomic
from superalign.models.classifier import collate, hidden_size, length_batches

log = logging.getLogger("superalign.autointerp")

Site = Literal["mlp", "block"]
LayerSpec = int | Literal["middle"]

# --- finding the hooked module ----------------------------------------------------------------

def _linear_shape(module: nn.Module) -> tuple[int, int] | None:
    """(in, out) features of a Linear or a GPT-2 style Conv1D; None for anything else."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and weight is not None and weight.ndim == 2:
        return int(weight.shape[0]), int(weight.shape[1])
    return None


def mlp_down_projection(block: nn.Module, hidden: int) -> nn.Module:
    """The block's MLP output projection: the last linear map from a wider space to ``hidden``.

    Its input is the MLP's hidden units after the activation function (and the gate's product in
    gated MLPs such as Llama's ``down_proj(act(gate(x)) * up(x))``): these are the "neurons".
    Works for Llama/Gemma (``down_proj``), BERT (``output.dense``), GPT-2 (``mlp.c_proj``) and the like.
    """
    found = [m for _, m in block.named_modules() if (s := _linear_shape(m)) and s[1] == hidden and s[0] > hidden]
    if not found:
        raise ConfigError("site", f"cannot find an MLP down projection (a linear map from more than {hidden} features "
                          f"to {hidden}) in a {type(block).__name__}", "use site='block' for this model")
    return found[-1]


def resolve_layer(layer: LayerSpec, n_blocks: int) -> int:
    """A block index in ``range(n_blocks)`` for an int (negative from the end) or 'middle'."""
    if layer == "middle":
        return n_blocks // 2
    idx = int(layer)
    idx = idx + n_blocks if idx < 0 else idx
    if not 0 <= idx < n_blocks:
        raise ConfigError("layer", f"{layer} is outside the model's {n_blocks} blocks",
                          f"use an index in [-{n_blocks}, {n_blocks - 1}] or 'middle'")
    return idx


class _StopForward(Exception):
    """Raised by the recording hook to skip the blocks after the hooked one."""


# --- recording --------------------------------------------------------------------------------

@dataclass
class LayerActivations:
    """What :func:`record_activations` keeps about a layer's units over a corpus (memory-light).

    ``top_*`` arrays hold, per unit (column), its ``k`` most activating examples in descending order
    (an example's activation = max over its tokens); ``top_tokens[r, u, t]`` is unit ``u``'s activation
    on token ``t`` of that example (0 past its end and on special tokens). Index -1 marks an empty
    slot (corpus smaller than ``k``).
    """

    layer: int
    n_blocks: int
    site: str
    top_values: np.ndarray  # (k, D) float32
    top_index: np.ndarray  # (k, D) int64
    top_tokens: np.ndarray  # (k, D, T) float16
    mean: np.ndarray  # (D,) of per-example maxima
    std: np.ndarray  # (D,)
    max: np.ndarray  # (D,)
    frac_active: np.ndarray  # (D,) share of examples whose max is > 0
    pool_index: np.ndarray  # (R,) int64 corpus indices of the random pool
    pool_values: np.ndarray  # (R, D) float32 per-example maxima of the pool
    n_examples: int

    @property
    def n_units(self) -> int:
        return int(self.top_values.shape[1])

    ARRAYS = ("top_values", "top_index", "top_tokens", "mean", "std", "max", "frac_active", "pool_index", "pool_values")

    def save(self, directory: Path) -> None:
        for name in self.ARRAYS:
            np.save(Path(directory) / f"{name}.npy", getattr(self, name), allow_pickle=False)
        write_json_atomic(Path(directory) / "layer.json", {"layer": self.layer, "n_blocks": self.n_blocks,
                                                             "site": self.site, "n_examples": self.n_examples})

    @classmethod
    def load(cls, directory: Path) -> "LayerActivations":
        meta = json.loads((Path(directory) / "layer.json").read_text())
        arrays = {name: np.load(Path(directory) / f"{name}.npy", allow_pickle=False) for name in cls.ARRAYS}
        return cls(**meta, **arrays)


def _tokenize(tok, texts: Sequence[str], max_length: int) -> dict[str, list]:
    return tok(list(texts), truncation=True, max_length=max_length, add_special_tokens=True,
               return_special_tokens_mask=True, return_offsets_mapping=bool(getattr(tok, "is_fast", False)))


@torch.inference_mode()
def record_activations(model: nn.Module, tok, texts: Sequence[str], *, layer: LayerSpec = "middle", site: Site = "mlp",
                       top_k: int = 10, max_length: int = 64, batch_size: int = 32, random_pool: int = 64,
                       pool_seed: int = 0, desc: str = "activations") -> LayerActivations:
    """Record per-example activations (max over tokens) of one layer's units over ``texts``.

    Batches hold texts of similar length (right padding, masked out); special tokens such as BOS
    are excluded from the maxima (they often carry outsized activations). The forward pass stops
    after the hooked module, so later blocks and the LM head cost nothing.
    """
    if len(texts) == 0:
        raise DataError("corpus", "has no texts", "give a corpus with at least one non-empty text")
    from superalign.training.regimes import transformer_blocks

    blocks = transformer_blocks(model)
    idx_layer = resolve_layer(layer, len(blocks))
    block = blocks[idx_layer]
    captured: list[torch.Tensor] = []
    if site == "mlp":
        target = mlp_down_projection(block, hidden_size(model.config))

        def pre_hook(_module, args):
            captured.append(args[0])
            raise _StopForward

        handle = target.register_forward_pre_hook(pre_hook)
    elif site == "block":
        def post_hook(_module, _args, output):
            captured.append(output[0] if isinstance(output, (tuple, list)) else output)
            raise _StopForward

        handle = block.register_forward_hook(post_hook)
    else:
        raise ConfigError("site", f"unknown site '{site}'", "use 'mlp' or 'block'")

    enc = _tokenize(tok, texts, max_length)
    ids_all = [list(x) for x in enc["input_ids"]]
    special = [list(x) for x in enc["special_tokens_mask"]]
    lengths = np.array([len(x) for x in ids_all])
    width_all = int(lengths.max())
    n = len(texts)
    k = top_k
    rng = np.random.default_rng(pool_seed)
    pool_index = np.sort(rng.choice(n, size=min(random_pool, n), replace=False)).astype(np.int64)
    pool_pos = {int(i): p for p, i in enumerate(pool_index)}
    device = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0

    top_vals = top_idx = top_tok = pool_vals = None
    s1 = s2 = vmax = active = None
    try:
        with tqdm(total=n, desc=desc, unit="ex", leave=False) as bar:
            for rows in length_batches(lengths, batch_size):
                ids, mask = collate([ids_all[i] for i in rows], pad)
                valid = mask.bool().clone()
                for r, i in enumerate(rows):
                    sp = torch.tensor(special[i], dtype=torch.bool)
                    valid[r, : len(sp)] &= ~sp
                captured.clear()
                try:
                    model(input_ids=ids.to(device), attention_mask=mask.to(device))
                except _StopForward:
                    pass
                if not captured:
                    raise ConfigError("layer", f"the hooked module of block {idx_layer} did not run",
                                      "pick another layer or site='block'")
                acts = captured[0].detach().float().cpu()  # (B, w, D)
                d = acts.shape[-1]
                if top_vals is None:
                    top_vals = torch.full((k, d), -torch.inf)
                    top_idx = torch.full((k, d), -1, dtype=torch.long)
                    top_tok = torch.zeros((k, d, width_all), dtype=torch.float32)
                    pool_vals = np.zeros((len(pool_index), d), dtype=np.float32)
                    s1, s2 = torch.zeros(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)
                    vmax, active = torch.full((d,), -torch.inf), torch.zeros(d, dtype=torch.float64)
                vmask = valid.unsqueeze(-1)
                ex_max = acts.masked_fill(~vmask, -torch.inf).amax(1)  # (B, D)
                ex_max = torch.where(torch.isfinite(ex_max), ex_max, torch.zeros_like(ex_max))  # all-special rows
                s1 += ex_max.double().sum(0)
                s2 += (ex_max.double() ** 2).sum(0)
                vmax = torch.maximum(vmax, ex_max.amax(0))
                active += (ex_max > 0).double().sum(0)
                for r, i in enumerate(rows):
                    if int(i) in pool_pos:
                        pool_vals[pool_pos[int(i)]] = ex_max[r].numpy()
                per_tok = acts.masked_fill(~vmask, 0.0).transpose(1, 2)  # (B, D, w)
                per_tok = torch.nn.functional.pad(per_tok, (0, width_all - per_tok.shape[-1]))
                cat_vals = torch.cat([top_vals, ex_max])
                cat_idx = torch.cat([top_idx, torch.as_tensor(rows, dtype=torch.long).unsqueeze(1).expand(-1, d)])
                cat_tok = torch.cat([top_tok, per_tok])
                top_vals, pos = torch.topk(cat_vals, k, dim=0)
                top_idx = cat_idx.gather(0, pos)
                top_tok = cat_tok.gather(0, pos.unsqueeze(-1).expand(-1, -1, width_all))
                bar.update(len(rows))
    finally:
        handle.remove()
    mean = s1 / n
    std = (s2 / n - mean**2).clamp_min(0).sqrt()
    empty = top_idx < 0
    return LayerActivations(
        layer=idx_layer, n_blocks=len(blocks), site=site,
        top_values=top_vals.masked_fill(empty, 0.0).numpy().astype(np.float32),
        top_index=top_idx.numpy().astype(np.int64),
        top_tokens=top_tok.numpy().astype(np.float16),
        mean=mean.numpy().astype(np.float32), std=std.numpy().astype(np.float32),
        max=vmax.numpy().astype(np.float32), frac_active=(active / n).numpy().astype(np.float32),
        pool_index=pool_index, pool_values=pool_vals, n_examples=n,
    )


def select_neurons(acts: LayerActivations, n: int, *, method: str = "random", seed: int = 0) -> list[int]:
    """Units to study: ``n`` seeded random live units, or the ``n`` most variable (std of maxima).

    A unit is live when its per-example maximum varies over the corpus (a constant unit has no
    correlation to score).
    """
    live = np.flatnonzero(acts.std > 1e-6)
    if len(live) == 0:
        raise ConfigError("layer", "no unit of this layer varies over the corpus", "pick another layer, site or corpus")
    n = min(n, len(live))
    if method == "random":
        chosen = np.random.default_rng(seed).choice(live, size=n, replace=False)
    elif method == "variance":
        chosen = live[np.argsort(-acts.std[live], kind="stable")[:n]]
    else:
        raise ConfigError("select", f"unknown method '{method}'", "use 'random' or 'variance'")
    return sorted(int(u) for u in chosen)


# --- examples per neuron ----------------------------------------------------------------------

@dataclass
class NeuronExamples:
    """One unit's explanation examples (even top ranks) and held-out set (odd top ranks + random)."""

    neuron: int
    explain_index: list[int]
    explain_values: list[float]
    explain_tokens: list[np.ndarray]  # per-token activations of each explanation example
    holdout_index: list[int]
    holdout_values: list[float]
    holdout_is_top: list[bool]


def neuron_examples(acts: LayerActivations, neuron: int, *, n_random: int, seed: int = 0) -> NeuronExamples:
    """Split a unit's top-k examples by rank parity and add ``n_random`` random pool examples.

    Interleaving ranks gives the explanation and held-out sets the same activation range. Random
    examples come from the recorded random pool (seeded per unit), excluding the unit's top-k.
    """
    ranks = [r for r in range(acts.top_index.shape[0]) if acts.top_index[r, neuron] >= 0]
    exp_r, hold_r = ranks[0::2], ranks[1::2]
    top_set = {int(acts.top_index[r, neuron]) for r in ranks}
    rng = np.random.default_rng([seed, neuron])
    candidates = [p for p in rng.permutation(len(acts.pool_index)) if int(acts.pool_index[p]) not in top_set]
    rand = candidates[:n_random]
    return NeuronExamples(
        neuron=neuron,
        explain_index=[int(acts.top_index[r, neuron]) for r in exp_r],
        explain_values=[float(acts.top_values[r, neuron]) for r in exp_r],
        explain_tokens=[acts.top_tokens[r, neuron].astype(np.float32) for r in exp_r],
        holdout_index=[int(acts.top_index[r, neuron]) for r in hold_r] + [int(acts.pool_index[p]) for p in rand],
        holdout_values=[float(acts.top_values[r, neuron]) for r in hold_r]
        + [float(acts.pool_values[p, neuron]) for p in rand],
        holdout_is_top=[True] * len(hold_r) + [False] * len(rand),
    )


def visible_text(text: str, offsets: Sequence[tuple[int, int]] | None, n_tokens: int, limit: int) -> tuple[str, int]:
    """The part of ``text`` the model saw (its first ``n_tokens`` tokens), at most ``limit`` chars."""
    end = len(text)
    if offsets:
        ends = [e for _, e in offsets[:n_tokens] if e > 0]
        end = max(ends) if ends else len(text)
    end = min(end, limit)
    return text[:end] + ("…" if end < len(text) else ""), end


def mark_tokens(text: str, offsets: Sequence[tuple[int, int]], token_acts: Sequence[float], *, max_marks: int = 3,
                rel: float = 0.5, limit: int = 240) -> str:
    """``text`` with its strongest tokens wrapped in ``[[ ]]``.

    A token is marked when its activation is positive, at least ``rel`` times the example's
    maximum, and among the ``max_marks`` strongest; adjacent marked tokens merge into one span.
    The text is cut to what the model saw and to ``limit`` characters.
    """
    acts = np.asarray(token_acts, dtype=np.float64)[: len(offsets)]
    shown, end = visible_text(text, offsets, len(offsets), limit)
    if len(acts) == 0 or acts.max() <= 0:
        return shown
    order = [int(i) for i in np.argsort(-acts, kind="stable")[:max_marks] if acts[i] > 0 and acts[i] >= rel * acts.max()]
    spans = []
    for i in order:
        s, e = offsets[i]
        while s < e and text[s].isspace():
            s += 1
        if s < e and e <= end:
            spans.append([s, e])
    spans.sort()
    merged: list[list[int]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    out, last = [], 0
    for s, e in merged:
        out += [text[last:s], "[[", text[s:e], "]]"]
        last = e
    out.append(shown[last:])
    return "".join(out)
