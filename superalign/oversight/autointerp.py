"""Automated interpretability (Bills et al. 2023): explain neurons with an LM, score by simulation.

For one layer of a model the pipeline is:

1. **Record** (:func:`record_activations`): run a text corpus through the model, hooking either the
   MLP hidden units of block ``k`` (the input of the MLP's down projection, i.e. the activation
   function's output, times the up projection in gated MLPs) or the block's output. Each example's
   activation is its maximum over (non-special) tokens. Memory stays at ``O(top_k * units * tokens)``:
   per unit, a top-k "heap" (merged with ``torch.topk`` per batch) keeps the best examples and their
   per-token activations; running sums give each unit's mean and spread; a seeded random pool of
   examples keeps all units' activations (the random half of the held-out sets). The forward pass
   stops at the hooked block.
2. **Select** (:func:`select_neurons`): a seeded random subset of live units (the unbiased default,
   as in Bills et al.) or the most variable ones.
3. **Explain** (:class:`LMExplainer`): a chat LM sees a unit's top examples (interleaved ranks
   0, 2, 4, ...) with its strongest tokens marked ``[[like this]]`` and completes
   "These texts all ...". Generation is batched across units.
4. **Simulate and score** (:class:`Simulator`): a simulator predicts each held-out example's
   activation from the explanation alone; the score is the Pearson correlation between predicted and
   true activations over held-out top examples (ranks 1, 3, 5, ...) mixed with random ones. The
   default :class:`LMSimulator` reads P(" Yes") for "Does the text match the explanation?" in one
   forward pass per (unit, text) via :func:`~superalign.models.scoring.choice_logprobs`;
   :class:`KeywordSimulator` counts the explanation's quoted strings / content words in the text.
   The baseline scores each unit with another unit's explanation (explanations shuffled by a
   derangement), so a mean score means something; CIs bootstrap over units.

Activations, explanations and simulations are :class:`~superalign.store.Store` stages keyed by the
model's identity, layer, site, corpus fingerprint, sizes and seeds. :func:`run_autointerp` runs the
pipeline for the layers of an :class:`AutoInterpConfig`; :func:`layer_report_sections` renders one
layer's page (ranked table, score histogram vs the shuffled baseline, top examples).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn
from tqdm.auto import tqdm

from superalign.config import YamlConfig
from superalign.errors import ConfigError, DataError
from superalign.metrics import Interval, bootstrap_indices
from superalign.models.classifier import collate, hidden_size, length_batches
from superalign.store.store import Store, write_json_atomic

log = logging.getLogger("superalign.autointerp")

__all__ = [
    "AutoInterpConfig",
    "Explainer",
    "KeywordSimulator",
    "LMExplainer",
    "LMSimulator",
    "LayerActivations",
    "ModelCache",
    "NeuronExamples",
    "Simulator",
    "autointerp_text",
    "layer_report_sections",
    "mark_tokens",
    "mlp_down_projection",
    "neuron_examples",
    "pearson",
    "record_activations",
    "run_autointerp",
    "score_summary",
    "select_neurons",
    "shuffled_baseline_permutation",
    "write_layer_reports",
]

Site = Literal["mlp", "block"]
LayerSpec = int | Literal["middle"]

EXPLAIN_PREFIX = "These texts all"
EXPLAIN_INSTRUCTION = (
    "Below are texts on which one neuron of a language model fires strongly. The tokens where it fires "
    "most are marked with [[double brackets]].\n\n{examples}\n\n"
    "What do these texts or their marked tokens have in common? Answer in one short sentence."
)
SIMULATE_PROMPT = "Explanation: {explanation}\nText: {text}\nDoes the text match the explanation? Answer:"
SIMULATE_OPTIONS = (" Yes", " No")
PROMPT_VERSION = 2  # bump when a prompt or the marking rule changes (part of stage keys)


# --- config -----------------------------------------------------------------------------------

class AutoInterpConfig(YamlConfig):
    """What :func:`run_autointerp` does; every field is part of some stage key.

    Strict (unknown fields are errors); ``AutoInterpConfig.parse(dict)`` / ``from_yaml(path)`` turn
    validation errors into a :class:`ConfigError` naming the field. The defaults are sized for a
    2-core CPU (a few minutes): smollm2-135m explaining 16 random MLP units of its middle block
    from 1,000 Rotten Tomatoes sentences.
    """

    model: str = Field("smollm2-135m", description="model whose units are studied (zoo name, hub id or directory)")
    layer: LayerSpec | list[LayerSpec] = Field(
        "middle", description="block index (negative counts from the end), 'middle', or a list of them")
    site: Site = Field("mlp", description="mlp: the MLP's hidden units (input of its down projection); "
                                          "block: the block's output (residual stream) dimensions")
    corpus: str = Field("rotten_tomatoes", description="task name or file whose texts form the corpus")
    corpus_size: int = Field(1000, ge=4, description="texts taken from the corpus (class-balanced, seeded)")
    corpus_seed: int = 0
    max_length: int = Field(64, ge=2, description="tokens kept per text")
    batch_size: int = Field(32, ge=1)
    random_pool: int = Field(64, ge=1, description="seeded random texts whose activations are kept for all units")
    n_neurons: int = Field(16, ge=2, description="units studied per layer (>= 2 for the shuffled baseline)")
    select: Literal["random", "variance"] = Field("random", description="random live units, or the most variable")
    neuron_seed: int = 0
    top_k: int = Field(10, ge=2, description="top-activating texts per unit: even ranks explain, odd ranks are held out")
    n_random: int = Field(5, ge=0, description="random held-out texts per unit (scored with the odd-rank top texts)")
    holdout_seed: int = 0
    explainer: str = Field("smollm2-135m", description="chat LM that writes explanations")
    explain_max_new_tokens: int = Field(24, ge=1, le=256)
    explain_temperature: float = Field(0.0, ge=0, description="0 = greedy")
    explain_seed: int = 0
    explain_chars: int = Field(240, ge=20, description="characters shown per example to the explainer")
    simulator: Literal["lm", "keyword"] = Field("lm", description="lm: P(Yes) from simulator_model; keyword: matches")
    simulator_model: str = "smollm2-135m"
    simulator_batch_size: int = Field(16, ge=1)
    simulator_calibrate: bool = Field(False, description="lm: subtract each text's log-odds under a content-free "
                                                         "explanation (one more pass per distinct text)")
    baseline_seed: int = 0
    n_boot: int = Field(1000, ge=10)
    boot_seed: int = 0

    @field_validator("layer")
    @classmethod
    def _layer(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("give at least one layer")
        return v

    def layers(self) -> list[LayerSpec]:
        """The configured layers as a list (as written: resolved against the model at run time)."""
        return list(self.layer) if isinstance(self.layer, list) else [self.layer]


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


# --- explainers -------------------------------------------------------------------------------

@runtime_checkable
class Explainer(Protocol):
    """Writes one explanation per unit from its marked top examples."""

    def identity(self) -> dict[str, Any]:
        """What determines the explanations (part of the stage key)."""

    def explain(self, examples: Sequence[Sequence[str]]) -> list[str]:
        """``examples[i]`` are unit i's marked texts; returns one explanation per unit."""


def explain_prompt(examples: Sequence[str]) -> str:
    """The user message showing one unit's marked examples."""
    body = "\n".join(f"{i + 1}. {x}" for i, x in enumerate(examples))
    return EXPLAIN_INSTRUCTION.format(examples=body)


_FLUFF = re.compile(r"^(?:share|have) (?:a|one) (?:common|similar|shared) (?:thread|trait|theme|feature|pattern|element|"
                    r"characteristic)s?\s*(?P<of>of\b)?\s*[:,]?\s*", re.IGNORECASE)


def clean_explanation(completion: str, prefix: str = EXPLAIN_PREFIX) -> str:
    """``prefix`` plus the completion's first sentence, on one line, without filler.

    Small explainers like to open with "share a common thread: they all ..."; that filler is
    dropped ("These texts all share a common thread: they all contain X" -> "These texts all contain X"),
    which also keeps the simulator's prompts short.
    """
    text = completion.strip().split("\n")[0].strip()
    m = _FLUFF.match(text)
    if m:
        text = ("have " if m.group("of") else "") + text[m.end():]
        text = re.sub(r"^(?:they(?:'re| are) all |they(?:'re| are) )", "are ", text, flags=re.IGNORECASE)
        text = re.sub(r"^they all ", "", text, flags=re.IGNORECASE)
    cut = re.search(r"(?<=[a-z0-9\)\]\"'])[.!?](\s|$)", text)
    if cut:
        text = text[: cut.start()]
    text = text.strip(" .,:;-")
    if text.lower() in _DANGLING:
        text = ""
    while True:  # a completion cut at max_new_tokens can end on a dangling word ("... voice and")
        words = text.rsplit(" ", 1)
        if len(words) == 2 and words[1].lower() in _DANGLING:
            text = words[0].rstrip(" ,:;-")
        else:
            break
    if not text:
        return f"{prefix} (no explanation)."
    if prefix == EXPLAIN_PREFIX and text.lower().startswith("are "):
        return f"These texts are all {text[4:]}."
    return f"{prefix} {text}."


_DANGLING = frozenset("and or a an the of to with that which is are but in on for as by from its their".split())


class LMExplainer:
    """A causal LM (chat-templated when it has a template) completing "These texts all ..."."""

    def __init__(self, model: str = "smollm2-135m", *, max_new_tokens: int = 24, temperature: float = 0.0,
                 seed: int = 0, batch_size: int = 16, models: "ModelCache | None" = None):
        self.model, self.max_new_tokens, self.temperature = model, max_new_tokens, temperature
        self.seed, self.batch_size, self.models = seed, batch_size, models or ModelCache()

    def identity(self) -> dict[str, Any]:
        from superalign.models.loading import model_identity

        return {"kind": "lm", "model": model_identity(self.model), "max_new_tokens": self.max_new_tokens,
                "temperature": self.temperature, "seed": self.seed, "prompt": PROMPT_VERSION,
                "instruction": EXPLAIN_INSTRUCTION, "prefix": EXPLAIN_PREFIX}

    def prompts(self, examples: Sequence[Sequence[str]]) -> list[str]:
        _, tok = self.models.causal(self.model)
        users = [explain_prompt(ex) for ex in examples]
        if getattr(tok, "chat_template", None):
            from superalign.rlaif.generation import render_chat

            rendered = render_chat(tok, [[{"role": "user", "content": u}] for u in users], field="explainer")
            return [r + EXPLAIN_PREFIX for r in rendered]
        return [f"{u}\nAnswer: {EXPLAIN_PREFIX}" for u in users]

    def explain(self, examples: Sequence[Sequence[str]]) -> list[str]:
        from superalign.rlaif.generation import GenerationConfig, generate

        model, tok = self.models.causal(self.model)
        gen = GenerationConfig(max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                               batch_size=self.batch_size)
        outs = generate(model, tok, self.prompts(examples), gen, seed=self.seed, desc="explaining", field="explainer")
        return [clean_explanation(o[0].text, EXPLAIN_PREFIX) for o in outs]


# --- simulators -------------------------------------------------------------------------------

@runtime_checkable
class Simulator(Protocol):
    """Predicts activations of texts from an explanation alone (higher = more active)."""

    def identity(self) -> dict[str, Any]:
        """What determines the predictions (part of the stage key)."""

    def predict(self, explanations: Sequence[str], texts: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """``texts[i]`` are scored against ``explanations[i]``; one array per explanation."""


STOPWORDS = frozenset("""a an the these those this that texts text all are is be been being to of in on at by for with
and or not no from as it its their they them there which who whom what when where why how about into onto over under
than then so such like some any each every many much more most other another also only just very both either neither
mention mentions mentioning contain contains containing include includes including describe describes describing
refer refers referring word words phrase phrases sentence sentences token tokens marked share shares common have has
having use uses using talk talks talking something things thing related seem seems appear appears often usually
focus focuses""".split())


def explanation_keywords(explanation: str) -> list[str]:
    """Quoted strings if the explanation quotes any (used verbatim), else its content words."""
    quoted = re.findall(r"\"([^\"]+)\"|“([^”]+)”|`([^`]+)`|(?<![A-Za-z])'([^']+)'(?![A-Za-z])", explanation)
    found = [next(g for g in groups if g) for groups in quoted]
    if found:
        return list(dict.fromkeys(q.lower() for q in found))
    words = re.findall(r"[a-z][a-z'-]+", explanation.lower())
    return list(dict.fromkeys(w for w in words if len(w) >= 3 and w not in STOPWORDS))


class KeywordSimulator:
    """Predicted activation = how many of the explanation's keywords a text contains.

    Quoted keywords match as case-insensitive substrings; content words match at a word start,
    with a trailing "s" optional (so "dog" finds "dogs"). Cheap and deterministic: a floor for LM
    simulators and the simulator of the planted-neuron tests.
    """

    def identity(self) -> dict[str, Any]:
        return {"kind": "keyword", "version": 1}

    def predict(self, explanations: Sequence[str], texts: Sequence[Sequence[str]]) -> list[np.ndarray]:
        out = []
        for expl, batch in zip(explanations, texts):
            quoted = bool(re.search(r"[\"“`]|(?<![A-Za-z])'", expl))
            pats = []
            for kw in explanation_keywords(expl):
                if quoted:
                    pats.append(re.compile(re.escape(kw), re.IGNORECASE))
                else:
                    stem = kw[:-1] if kw.endswith("s") and len(kw) > 3 else kw
                    pats.append(re.compile(r"\b" + re.escape(stem), re.IGNORECASE))
            out.append(np.array([sum(bool(p.search(t)) for p in pats) for t in batch], dtype=np.float64))
        return out


class LMSimulator:
    """P(" Yes") for "Explanation: …\nText: …\nDoes the text match the explanation? Answer:".

    One forward pass per (explanation, text) through :func:`choice_logprobs`, batched across units;
    the prediction is P(Yes) / (P(Yes) + P(No)). With ``calibrate``, the prediction is instead the
    log-odds of Yes minus their value for the same text under a content-free explanation (one more
    pass per distinct text), which removes the simulator's explanation-independent prior about a
    text (e.g. saying Yes to longer texts), a confound the shuffled baseline otherwise exposes.
    """

    NEUTRAL = "(no explanation given)"

    def __init__(self, model: str = "smollm2-135m", *, batch_size: int = 16, max_length: int = 512,
                 calibrate: bool = False, models: "ModelCache | None" = None):
        self.model, self.batch_size, self.max_length = model, batch_size, max_length
        self.calibrate = calibrate
        self.models = models or ModelCache()

    def identity(self) -> dict[str, Any]:
        from superalign.models.loading import model_identity

        ident = {"kind": "lm", "model": model_identity(self.model), "prompt": SIMULATE_PROMPT,
                 "options": list(SIMULATE_OPTIONS), "max_length": self.max_length}
        if self.calibrate:
            ident["calibrate"] = self.NEUTRAL
        return ident

    def _log_odds(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        from superalign.models.scoring import choice_logprobs

        model, tok = self.models.causal(self.model)
        prompts = [SIMULATE_PROMPT.format(explanation=e, text=t) for e, t in pairs]
        lp = choice_logprobs(model, tok, prompts, list(SIMULATE_OPTIONS), max_length=self.max_length,
                             batch_size=self.batch_size, desc="simulating")
        return lp[:, 0] - lp[:, 1]

    def predict(self, explanations: Sequence[str], texts: Sequence[Sequence[str]]) -> list[np.ndarray]:
        pairs = [(e, t) for e, batch in zip(explanations, texts) for t in batch]
        if not pairs:
            return [np.zeros(0) for _ in explanations]
        odds = self._log_odds(pairs)
        if self.calibrate:
            distinct = list(dict.fromkeys(t for _, t in pairs))
            prior = dict(zip(distinct, self._log_odds([(self.NEUTRAL, t) for t in distinct])))
            pred = odds - np.array([prior[t] for _, t in pairs])
        else:
            pred = 1.0 / (1.0 + np.exp(-odds))
        out, start = [], 0
        for batch in texts:
            out.append(pred[start : start + len(batch)])
            start += len(batch)
        return out


# --- scoring ----------------------------------------------------------------------------------

def pearson(pred: Sequence[float], true: Sequence[float]) -> float:
    """Pearson correlation; 0.0 when either side is constant (the explanation predicts nothing)."""
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if len(p) < 2 or p.std() < 1e-12 or t.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(p, t)[0, 1])


def shuffled_baseline_permutation(n: int, seed: int = 0) -> np.ndarray:
    """A seeded derangement of ``range(n)``: unit i is scored with unit perm[i]'s explanation."""
    if n < 2:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    shift = rng.integers(1, n)
    order = rng.permutation(n)  # a random cycle structure with no fixed points
    perm = np.empty(n, dtype=np.int64)
    perm[order] = order[(np.arange(n) + shift) % n]
    return perm


def _interval(values: np.ndarray, idx: np.ndarray, level: float = 0.95) -> dict[str, float]:
    boots = values[idx].mean(1)
    a = (1 - level) / 2
    return Interval(float(values.mean()), float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))).as_dict()


def score_summary(scores: Sequence[float], baseline: Sequence[float], *, n_boot: int = 1000,
                  seed: int = 0) -> dict[str, Any]:
    """Mean score, mean shuffled-baseline score and their paired difference, with bootstrap CIs
    over units (one resample of units applied to all three)."""
    s, b = np.asarray(scores, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    idx = bootstrap_indices(len(s), n_boot, seed)
    return {"n": int(len(s)), "mean_score": _interval(s, idx), "mean_baseline": _interval(b, idx),
            "difference": _interval(s - b, idx), "median_score": float(np.median(s)),
            "share_above_0.3": float((s > 0.3).mean())}


# --- models -----------------------------------------------------------------------------------

class ModelCache:
    """Loads each model once per run, so a model that is studied, explains and simulates loads once."""

    def __init__(self) -> None:
        self.loaded: dict[str, tuple[nn.Module, Any]] = {}

    def causal(self, name: str) -> tuple[nn.Module, Any]:
        if name not in self.loaded:
            from superalign.models.loading import load_causal_lm

            log.info("loading %s", name)
            model, tok, _ = load_causal_lm(name)
            model.requires_grad_(False)
            self.loaded[name] = (model, tok)
        return self.loaded[name]

    def any(self, name: str) -> tuple[nn.Module, Any]:
        """The causal LM when ``name`` is a decoder (shared with explaining), else the encoder."""
        from superalign.models.loading import load_backbone, resolve

        if name in self.loaded:
            return self.loaded[name]
        _, spec = resolve(name)
        if spec is None or spec.arch == "decoder":
            try:
                return self.causal(name)
            except (ValueError, OSError):
                if spec is not None:
                    raise
        model, tok, _ = load_backbone(name)
        model.requires_grad_(False)
        self.loaded[name] = (model, tok)
        return self.loaded[name]

    def tokenizer(self, name: str):
        if name in self.loaded:
            return self.loaded[name][1]
        from superalign.models.loading import load_tokenizer

        return load_tokenizer(name)


# --- the pipeline -----------------------------------------------------------------------------

def _corpus(cfg: AutoInterpConfig) -> tuple[list[str], str]:
    from superalign.data import load_task

    task = load_task(cfg.corpus, max_examples=cfg.corpus_size, seed=cfg.corpus_seed)
    texts = [t for t in task.inputs() if t.strip()]
    need = cfg.top_k + cfg.n_random
    if len(texts) < need:
        raise ConfigError("corpus_size", f"the corpus has {len(texts)} non-empty texts, fewer than top_k + n_random = "
                          f"{need}", "use a larger corpus/corpus_size or lower top_k and n_random")
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\x1e")
    return texts, h.hexdigest()[:20]


def _check(cfg: AutoInterpConfig) -> None:
    if cfg.random_pool < cfg.n_random + cfg.top_k and cfg.n_random > 0:
        raise ConfigError("random_pool", f"{cfg.random_pool} is below n_random + top_k = {cfg.n_random + cfg.top_k}, so "
                          "some units could lack random held-out texts", "raise random_pool or lower n_random")
    if cfg.n_neurons < 2:
        raise ConfigError("n_neurons", "the shuffled-explanation baseline needs at least 2 units", "use n_neurons >= 2")


def _simulator(cfg: AutoInterpConfig, models: ModelCache) -> Simulator:
    if cfg.simulator == "keyword":
        return KeywordSimulator()
    return LMSimulator(cfg.simulator_model, batch_size=cfg.simulator_batch_size, calibrate=cfg.simulator_calibrate,
                        models=models)


def run_autointerp(cfg: AutoInterpConfig, store: Store, *, explainer: Explainer | None = None,
                   simulator: Simulator | None = None, models: ModelCache | None = None) -> dict[str, Any]:
    """Record, explain, simulate and score ``cfg.n_neurons`` units per layer; JSON-serialisable.

    ``explainer`` / ``simulator`` replace the ones the config names (their ``identity()`` keys the
    stages). Returns ``{"experiment": "autointerp", "config", "layers": [per-layer result], "timings",
    "stages", "notes"}``; a layer result holds its summary (mean score vs shuffled baseline with CIs)
    and the units ranked by score, each with its explanation, scores and examples.
    """
    from superalign.models.loading import model_identity, model_notes

    _check(cfg)
    models = models or ModelCache()
    explainer = explainer or LMExplainer(cfg.explainer, max_new_tokens=cfg.explain_max_new_tokens,
                                         temperature=cfg.explain_temperature, seed=cfg.explain_seed, models=models)
    simulator = simulator or _simulator(cfg, models)
    start_all = time.perf_counter()
    texts, corpus_fp = _corpus(cfg)
    ident = model_identity(cfg.model)
    layers = []
    timings: dict[str, float] = {}
    n_events = len(store.events)
    for spec in cfg.layers():
        lt: dict[str, float] = {}
        t0 = time.perf_counter()
        acts_inputs = {"model": ident, "layer": spec, "site": cfg.site, "corpus": corpus_fp, "n_texts": len(texts),
                       "max_length": cfg.max_length, "top_k": cfg.top_k, "random_pool": cfg.random_pool,
                       "pool_seed": cfg.corpus_seed}

        def compute_acts(tmp: Path, spec=spec) -> dict:
            model, tok = models.any(cfg.model)
            acts = record_activations(model, tok, texts, layer=spec, site=cfg.site, top_k=cfg.top_k,
                                      max_length=cfg.max_length, batch_size=cfg.batch_size,
                                      random_pool=cfg.random_pool, pool_seed=cfg.corpus_seed,
                                      desc=f"activations (layer {spec})")
            acts.save(tmp)
            return {"layer": acts.layer, "n_units": acts.n_units, "n_blocks": acts.n_blocks}

        acts_stage = store.run("autointerp-acts", acts_inputs, compute_acts, label=f"autointerp acts {spec}")
        acts = LayerActivations.load(acts_stage.path)
        lt["record_s"] = time.perf_counter() - t0

        neurons = select_neurons(acts, cfg.n_neurons, method=cfg.select, seed=cfg.neuron_seed)
        if len(neurons) < 2:
            raise ConfigError("layer", f"only {len(neurons)} unit(s) of layer {acts.layer} vary over the corpus",
                              "pick another layer, site or a larger corpus")
        ex = [neuron_examples(acts, u, n_random=cfg.n_random, seed=cfg.holdout_seed) for u in neurons]
        tok = models.tokenizer(cfg.model)
        needed = sorted({i for e in ex for i in (*e.explain_index, *e.holdout_index)})
        enc = _tokenize(tok, [texts[i] for i in needed], cfg.max_length)
        offsets = {i: (enc["offset_mapping"][j] if "offset_mapping" in enc else None) for j, i in enumerate(needed)}
        n_tok = {i: len(enc["input_ids"][j]) for j, i in enumerate(needed)}
        marked = [[_mark(texts[i], offsets[i], toks, cfg.explain_chars) for i, toks in zip(e.explain_index, e.explain_tokens)]
                  for e in ex]
        shown = {i: visible_text(texts[i], offsets[i], n_tok[i], 10**9)[0] for i in needed}

        t0 = time.perf_counter()
        exp_inputs = {"acts": acts_stage.key, "neurons": neurons, "explainer": explainer.identity(),
                      "explain_chars": cfg.explain_chars, "prompt": PROMPT_VERSION}

        def compute_explain(tmp: Path) -> dict:
            expl = explainer.explain(marked)
            write_json_atomic(tmp / "explanations.json", {"neurons": neurons, "explanations": expl})
            return {"n": len(expl)}

        exp_stage = store.run("autointerp-explain", exp_inputs, compute_explain, label=f"autointerp explain {spec}")
        explanations = json.loads(exp_stage.file("explanations.json").read_text())["explanations"]
        lt["explain_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        perm = shuffled_baseline_permutation(len(neurons), cfg.baseline_seed)
        sim_inputs = {"explain": exp_stage.key, "simulator": simulator.identity(), "n_random": cfg.n_random,
                      "holdout_seed": cfg.holdout_seed, "baseline_perm": perm.tolist()}
        held_texts = [[shown[i] for i in e.holdout_index] for e in ex]

        def compute_sim(tmp: Path) -> dict:
            pred = simulator.predict(explanations, held_texts)
            base = simulator.predict([explanations[j] for j in perm], held_texts)
            write_json_atomic(tmp / "simulation.json", {"predictions": [p.tolist() for p in pred],
                                                        "baseline": [b.tolist() for b in base]})
            return {"n_prompts": 2 * sum(len(h) for h in held_texts)}

        sim_stage = store.run("autointerp-simulate", sim_inputs, compute_sim, label=f"autointerp simulate {spec}")
        sim = json.loads(sim_stage.file("simulation.json").read_text())
        lt["simulate_s"] = time.perf_counter() - t0

        rows = []
        for k, e in enumerate(ex):
            score = pearson(sim["predictions"][k], e.holdout_values)
            base = pearson(sim["baseline"][k], e.holdout_values)
            rows.append({
                "neuron": e.neuron, "explanation": explanations[k], "score": score, "baseline_score": base,
                "baseline_explanation_of": neurons[int(perm[k])],
                "max_activation": float(acts.max[e.neuron]), "mean_activation": float(acts.mean[e.neuron]),
                "std_activation": float(acts.std[e.neuron]), "frac_active": float(acts.frac_active[e.neuron]),
                "top_examples": [{"index": i, "activation": v, "marked": m}
                                 for i, v, m in zip(e.explain_index, e.explain_values, marked[k])],
                "holdout": [{"index": i, "activation": v, "top": t, "prediction": float(p), "text": shown[i][:240]}
                            for i, v, t, p in zip(e.holdout_index, e.holdout_values, e.holdout_is_top,
                                                  sim["predictions"][k])],
            })
        rows.sort(key=lambda r: (-r["score"], r["neuron"]))
        for rank, r in enumerate(rows, 1):
            r["rank"] = rank
        summary = score_summary([r["score"] for r in rows], [r["baseline_score"] for r in rows],
                                n_boot=cfg.n_boot, seed=cfg.boot_seed)
        layers.append({
            "layer": acts.layer, "layer_spec": spec, "n_blocks": acts.n_blocks, "site": cfg.site,
            "n_units": acts.n_units, "n_live_units": int((acts.std > 1e-6).sum()), "n_texts": acts.n_examples,
            "neurons_selected": neurons, "summary": summary, "neurons": rows,
            "explainer_prompt_example": _prompt_example(explainer, marked[0]),
            "stages": {"acts": acts_stage.key, "explain": exp_stage.key, "simulate": sim_stage.key},
            "timings": {k: round(v, 2) for k, v in lt.items()},
        })
        for k, v in lt.items():
            timings[f"layer{acts.layer}.{k}"] = round(v, 2)
    timings["total_s"] = round(time.perf_counter() - start_all, 2)
    ev = store.events[n_events:]
    names = [cfg.model] + ([cfg.explainer] if isinstance(explainer, LMExplainer) else []) + (
        [cfg.simulator_model] if isinstance(simulator, LMSimulator) else [])
    return {
        "experiment": "autointerp",
        "config": cfg.model_dump(mode="json"),
        "corpus_fingerprint": corpus_fp,
        "explainer": explainer.identity(),
        "simulator": simulator.identity(),
        "layers": layers,
        "timings": timings,
        "stages": {"cached": sum(e.cached for e in ev), "computed": sum(not e.cached for e in ev)},
        "notes": model_notes(names),
    }


def _mark(text: str, offsets, token_acts: np.ndarray, limit: int) -> str:
    if offsets is None:  # slow tokenizers give no offsets: show the text unmarked
        return visible_text(text, None, 0, limit)[0]
    return mark_tokens(text, offsets, token_acts, limit=limit)


def _prompt_example(explainer: Explainer, examples: list[str]) -> str:
    if isinstance(explainer, LMExplainer):
        return explain_prompt(examples) + f"\n[assistant] {EXPLAIN_PREFIX} …"
    return ""


# --- report -----------------------------------------------------------------------------------

def _fmt_iv(d: dict[str, float]) -> str:
    return Interval(d["value"], d["low"], d["high"]).fmt()


def _layer_entry(result: dict[str, Any], layer: int | None) -> dict[str, Any]:
    if "layers" not in result:
        return result  # already one layer's entry
    entries = result["layers"]
    if layer is None:
        return entries[0]
    for entry in entries:
        if entry["layer"] == layer:
            return entry
    raise ConfigError("layer", f"the result has no layer {layer}", f"use one of {[e['layer'] for e in entries]}")


def score_histogram(scores: Sequence[float], baseline: Sequence[float]) -> bytes:
    """PNG: histogram of explanation scores vs the shuffled-explanation baseline."""
    from superalign.report.plots import plt, to_png

    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = np.linspace(-1, 1, 21)
    ax.hist(baseline, bins=bins, alpha=0.55, color="#9aa5b1", label=f"shuffled explanations (mean {np.mean(baseline):.2f})")
    ax.hist(scores, bins=bins, alpha=0.75, color="#2f7ed8", label=f"own explanation (mean {np.mean(scores):.2f})")
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("score: correlation of simulated with true activation")
    ax.set_ylabel("units")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return to_png(fig)


def layer_report_sections(result: dict[str, Any], layer: int | None = None) -> list:
    """Report sections for one layer (``result`` from :func:`run_autointerp`, or one of its layers).

    Summary table, score histogram vs the shuffled baseline, units ranked by score with their
    explanations, and each unit's marked top examples and held-out predictions.
    """
    from superalign.report.html import Section, Table

    entry = _layer_entry(result, layer)
    s = entry["summary"]
    rows = entry["neurons"]
    summary = Section(
        f"Layer {entry['layer']} ({entry['site']}): summary",
        table=Table(["metric", "value"], [
            ["units studied / live / total", f"{s['n']} / {entry['n_live_units']} / {entry['n_units']}"],
            ["mean score (95% CI over units)", _fmt_iv(s["mean_score"])],
            ["mean score, shuffled explanations", _fmt_iv(s["mean_baseline"])],
            ["difference (paired)", _fmt_iv(s["difference"])],
            ["median score", f"{s['median_score']:.3f}"],
            ["share of units scoring > 0.3", f"{100 * s['share_above_0.3']:.0f}%"],
            ["corpus texts", str(entry["n_texts"])],
        ]),
        notes=["Score = Pearson correlation between the simulator's predictions from the explanation alone and the "
               "unit's true activations (max over tokens), over held-out top-activating texts (odd ranks) mixed with "
               "random texts. The baseline scores each unit with another unit's explanation."],
    )
    if s["difference"]["low"] <= 0:
        summary.warnings.append("The difference from the shuffled baseline's CI reaches zero: these explanations are "
                                "not shown to beat explanations of other units.")
    hist = Section("Scores vs shuffled baseline").image(
        score_histogram([r["score"] for r in rows], [r["baseline_score"] for r in rows]))
    ranked = Section("Units ranked by score", table=Table(
        ["explanation", "rank", "unit", "score", "shuffled", "max act", "active"],
        [[r["explanation"], str(r["rank"]), str(r["neuron"]), f"{r['score']:.3f}", f"{r['baseline_score']:.3f}",
          f"{r['max_activation']:.2f}", f"{100 * r['frac_active']:.0f}%"] for r in rows]))
    lines = []
    for r in rows:
        lines.append(f"#{r['rank']} unit {r['neuron']}  score {r['score']:.3f}  {r['explanation']}")
        for e in r["top_examples"]:
            lines.append(f"   {e['activation']:8.3f}  {e['marked']}")
        lines.append("   held out (true activation -> simulated):")
        for h in r["holdout"]:
            tag = "top" if h["top"] else "rnd"
            lines.append(f"   {tag} {h['activation']:8.3f} -> {h['prediction']:.3f}  {h['text'][:120]}")
        lines.append("")
    examples = Section("Top examples ([[marked]] = strongest tokens) and held-out predictions", pre="\n".join(lines))
    out = [summary, hist, ranked, examples]
    if entry.get("explainer_prompt_example"):
        out.append(Section("Explainer prompt (first unit)", pre=entry["explainer_prompt_example"]))
    return out


def _subtitle(result: dict[str, Any]) -> str:
    cfg = result.get("config", {})
    return (f"model {cfg.get('model')}, corpus {cfg.get('corpus')} ({cfg.get('corpus_size')} texts), explainer "
            f"{cfg.get('explainer')}, simulator {result.get('simulator', {}).get('kind')}")


def write_layer_reports(result: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """One self-contained HTML page per layer: ``out_dir/autointerp_layer{L}.html``."""
    from superalign.report.html import render_page
    from superalign.store.store import write_bytes_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for entry in result["layers"]:
        path = out_dir / f"autointerp_layer{entry['layer']}.html"
        page = render_page(f"Automated interpretability: layer {entry['layer']}", _subtitle(result),
                           layer_report_sections(entry))
        write_bytes_atomic(path, page.encode())
        paths.append(path)
    return paths


def autointerp_text(result: dict[str, Any], top: int = 5) -> str:
    """A plain-text summary: per layer, mean score vs baseline and the best units."""
    out = []
    for entry in result["layers"]:
        s = entry["summary"]
        out.append(f"layer {entry['layer']} ({entry['site']}): mean score {_fmt_iv(s['mean_score'])}, shuffled "
                   f"baseline {_fmt_iv(s['mean_baseline'])}, difference {_fmt_iv(s['difference'])} over {s['n']} units")
        for r in entry["neurons"][:top]:
            out.append(f"  #{r['rank']} unit {r['neuron']:5d} score {r['score']:+.3f} (shuffled {r['baseline_score']:+.3f})"
                       f"  {r['explanation']}")
    return "\n".join(out)


def _register() -> None:
    from superalign.report.html import register_report

    @register_report("autointerp")
    def _build(result: dict[str, Any]):
        sections = [s for entry in result["layers"] for s in layer_report_sections(entry)]
        return "Automated interpretability", _subtitle(result), sections


_register()
