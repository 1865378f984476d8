"""Batched chat generation: Hugging Face ``generate`` (left padding, length-sorted batches), or vLLM.

``GenerationConfig.backend`` picks the engine: ``hf``; ``vllm`` (the in-memory model, adapters
merged, is exported once to safetensors and served by a ``vllm.LLM`` that is kept while the weights
stay the same); ``auto`` (the default) takes vLLM when it is installed and CUDA is there, else ``hf``.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from superalign.errors import ConfigError

Conversation = list[dict[str, str]]


class GenerationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    batch_size: int = Field(16, ge=1, description="prompts × samples per HF generate call (vLLM batches itself)")
    backend: Literal["auto", "hf", "vllm"] = Field(
        "auto", description="hf: transformers generate; vllm: a vLLM engine (pip install vllm, CUDA); "
                            "auto: vllm when installed and on CUDA, else hf")
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="GPU memory share vLLM may take "
                                               "(the HF copy of the model stays resident beside it)")

    @property
    def do_sample(self) -> bool:
        return self.temperature > 0


@dataclass
class Completion:
    text: str
    n_tokens: int
    finished: bool  # ended with EOS (not cut off at max_new_tokens)


def render_chat(tok, conversations: Sequence[Conversation], field: str = "policy") -> list[str]:
    """Chat-template each conversation with the generation prompt appended."""
    if getattr(tok, "chat_template", None) is None:
        raise ConfigError(field, "the model's tokenizer has no chat template",
                          "use an instruction-tuned model (e.g. smollm2-135m) or give the tokenizer a chat_template")
    return [tok.apply_chat_template(list(c), tokenize=False, add_generation_prompt=True) for c in conversations]


def eos_ids(model, tok) -> set[int]:
    """Token ids that end a turn: the tokenizer's EOS and the model's generation EOS ids."""
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = {tok.eos_token_id, *(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos])}
    ids.discard(None)
    return ids


def context_limit(model) -> int:
    cfg = model.config
    return int(getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", 0) or 2048)


log = logging.getLogger("superalign.generation")


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def resolve_backend(cfg: GenerationConfig, field: str = "generation.backend") -> str:
    """The engine ``cfg.backend`` means on this machine; a clear error where vLLM was asked for and cannot run."""
    if cfg.backend == "hf":
        return "hf"
    if cfg.backend == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise ConfigError(field, "is 'vllm' but vLLM is not installed", "pip install vllm on a CUDA machine, or use hf")
        if not torch.cuda.is_available():
            raise ConfigError(field, "is 'vllm' but no CUDA device is visible", "use backend: hf (or auto) on this machine")
        return "vllm"
    return "vllm" if vllm_available() else "hf"


def _check_lengths(enc: list[list[int]], model, cfg: GenerationConfig, field: str) -> None:
    limit = context_limit(model)
    for i, ids in enumerate(enc):
        if len(ids) + cfg.max_new_tokens > limit:
            raise ConfigError(f"{field}[{i}]", f"is {len(ids)} tokens; with max_new_tokens={cfg.max_new_tokens} that "
                              f"exceeds the model's context of {limit}", "shorten the prompt or lower max_new_tokens")


def generate(model, tok, prompts: Sequence[str], cfg: GenerationConfig, *, seed: int = 0,
             num_return_sequences: int = 1, desc: str = "generating", field: str = "prompts") -> list[list[Completion]]:
    """``num_return_sequences`` completions per already-templated prompt, in prompt order.

    Prompts are tokenised once and checked against the model's context. With the HF backend, batches
    hold prompts of similar length and each batch is sampled with its own seed, so the same inputs
    and seed give the same text; with vLLM each prompt gets its own sampling seed.
    """
    enc = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    _check_lengths(enc, model, cfg, field)
    if resolve_backend(cfg) == "vllm":
        return _generate_vllm(model, tok, enc, cfg, seed=seed, n=num_return_sequences)  # vLLM draws its own bar
    return _generate_hf(model, tok, enc, cfg, seed=seed, num_return_sequences=num_return_sequences, desc=desc)


@torch.inference_mode()
def _generate_hf(model, tok, enc: list[list[int]], cfg: GenerationConfig, *, seed: int, num_return_sequences: int,
                 desc: str) -> list[list[Completion]]:
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    eos = eos_ids(model, tok)
    device = next(model.parameters()).device
    out: list[list[Completion]] = [[] for _ in enc]
    order = np.argsort([len(e) for e in enc], kind="stable")
    per_batch = max(1, cfg.batch_size // num_return_sequences)
    for b, start in enumerate(tqdm(range(0, len(order), per_batch), desc=desc, leave=False)):
        rows = order[start : start + per_batch]
        width = max(len(enc[i]) for i in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, width - len(enc[i]):] = torch.tensor(enc[i])
            mask[r, width - len(enc[i]):] = 1
        torch.manual_seed(seed * 100003 + b)
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=cfg.max_new_tokens,
                             do_sample=cfg.do_sample, temperature=cfg.temperature if cfg.do_sample else None,
                             top_p=cfg.top_p if cfg.do_sample else None, num_return_sequences=num_return_sequences,
                             pad_token_id=pad)
        new = gen[:, width:].cpu()
        for k in range(new.shape[0]):
            toks = new[k].tolist()
            cut = next((j for j, t in enumerate(toks) if t in eos), None)
            body = toks if cut is None else toks[:cut]
            text = tok.decode(body, skip_special_tokens=True).strip()
            out[rows[k // num_return_sequences]].append(Completion(text, len(body), cut is not None))
    return out


# -- vLLM -----------------------------------------------------------------------------------------

_ENGINE: dict[str, Any] = {}  # one live engine: {"fingerprint": ..., "llm": vllm.LLM}


def weights_fingerprint(model) -> str:
    """A hash of the parameters' names, shapes and sums: merged adapters change it (the config is
    left out: ``save_pretrained`` itself edits it)."""
    with torch.no_grad():
        named = list(model.named_parameters())
        sums = torch.stack([p.detach().float().sum() for _, p in named]).cpu().numpy()
    h = hashlib.sha256(type(model).__name__.encode())
    h.update(repr([(n, tuple(p.shape)) for n, p in named]).encode())
    h.update(sums.tobytes())
    return h.hexdigest()[:20]


def _vllm_engine(model, tok, cfg: GenerationConfig):
    """A ``vllm.LLM`` serving ``model``'s current weights (exported once per fingerprint under
    ``superalign_home()/vllm``; the previous engine is dropped to free its GPU memory)."""
    import vllm

    from superalign.store.store import superalign_home

    fp = weights_fingerprint(model)
    if _ENGINE.get("fingerprint") == fp:
        return _ENGINE["llm"]
    _ENGINE.clear()
    gc.collect()
    torch.cuda.empty_cache()
    path = Path(superalign_home()) / "vllm" / fp
    if not (path / "config.json").exists():
        tmp = path.with_name(path.name + ".tmp")
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        tmp.replace(path)
    log.info("vLLM engine for %s (%s)", getattr(model.config, "_name_or_path", "model"), fp)
    llm = vllm.LLM(model=str(path), tokenizer=str(path), dtype="auto", seed=0,
                   gpu_memory_utilization=cfg.vllm_gpu_memory_utilization)
    _ENGINE.update(fingerprint=fp, llm=llm)
    return llm


def _generate_vllm(model, tok, enc: list[list[int]], cfg: GenerationConfig, *, seed: int, n: int) -> list[list[Completion]]:
    import vllm

    llm = _vllm_engine(model, tok, cfg)
    eos = eos_ids(model, tok)
    params = [vllm.SamplingParams(n=n, temperature=cfg.temperature, top_p=cfg.top_p if cfg.do_sample else 1.0,
                                  max_tokens=cfg.max_new_tokens, seed=seed * 100003 + i, stop_token_ids=sorted(eos))
              for i in range(len(enc))]
    results = llm.generate([{"prompt_token_ids": ids} for ids in enc], params, use_tqdm=True)
    out: list[list[Completion]] = []
    for res in results:
        row = []
        for c in res.outputs:
            toks = list(c.token_ids)
            finished = c.finish_reason == "stop"
            if toks and toks[-1] in eos:
                toks = toks[:-1]
            row.append(Completion(tok.decode(toks, skip_special_tokens=True).strip(), len(toks), finished))
        out.append(row)
    return out
