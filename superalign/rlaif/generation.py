"""Batched chat generation with Hugging Face ``generate`` (left padding, length-sorted batches)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

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
    batch_size: int = Field(16, ge=1)

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


@torch.inference_mode()
def generate(model, tok, prompts: Sequence[str], cfg: GenerationConfig, *, seed: int = 0,
             num_return_sequences: int = 1, desc: str = "generating", field: str = "prompts") -> list[list[Completion]]:
    """``num_return_sequences`` completions per already-templated prompt, in prompt order.

    Prompts are tokenised once; batches hold prompts of similar length; each batch is sampled with
    its own seed, so the same inputs and seed give the same text.
    """
    enc = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    limit = context_limit(model)
    for i, ids in enumerate(enc):
        if len(ids) + cfg.max_new_tokens > limit:
            raise ConfigError(f"{field}[{i}]", f"is {len(ids)} tokens; with max_new_tokens={cfg.max_new_tokens} that "
                              f"exceeds the model's context of {limit}", "shorten the prompt or lower max_new_tokens")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    eos = eos_ids(model, tok)
    device = next(model.parameters()).device
    out: list[list[Completion]] = [[] for _ in prompts]
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
