"""Scoring text with a causal LM: log-probabilities of continuations, batched.

Shared by prompting baselines (class verbalizers) and the AI-feedback labeller (" (A)" vs " (B)").
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm


@torch.inference_mode()
def verbalizer_logprobs(model, tok, prompts: list[str], verbalizers: list[str], *, max_length: int,
                        batch_size: int, desc: str = "prompting") -> np.ndarray:
    """(n, K) log-probabilities of each verbalizer continuing each prompt.

    Single-token verbalizers take one forward pass per prompt (only the last position's logits);
    multi-token ones take one pass per (prompt, verbalizer) and sum their token log-probabilities.
    """
    option_ids = [tok(v, add_special_tokens=False)["input_ids"] for v in verbalizers]
    single = all(len(o) == 1 for o in option_ids) and len({o[0] for o in option_ids}) == len(option_ids)
    if not single:
        return continuation_logprobs(model, tok, prompts, verbalizers, max_length=max_length, batch_size=batch_size,
                                     desc=desc)
    return choice_logprobs(model, tok, prompts, verbalizers, max_length=max_length, batch_size=batch_size, desc=desc)


def _forward_last(model, seqs: list[list[int]], pad: int, keep: int) -> torch.Tensor:
    """Left-padded forward pass returning logits of the last ``keep`` positions."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s)
        mask[i, width - len(s):] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
    device = next(model.parameters()).device
    return model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=position_ids.to(device),
                 logits_to_keep=keep, use_cache=False).logits


def continuation_logprobs(model, tok, prompts: list[str], options: list[str], *, max_length: int, batch_size: int,
                          desc: str = "scoring") -> np.ndarray:
    """(n, K) summed log-probabilities of every token of each option: one pass per (prompt, option)."""
    option_ids = [tok(v, add_special_tokens=False)["input_ids"] for v in options]
    enc = tok(prompts, add_special_tokens=True)["input_ids"]
    out = np.zeros((len(prompts), len(options)), dtype=np.float64)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    order = np.argsort([len(e) for e in enc])
    with torch.inference_mode():
        for start in tqdm(range(0, len(prompts), batch_size), desc=desc, leave=False):
            rows = order[start : start + batch_size]
            for k, opt in enumerate(option_ids):
                seqs = [(enc[i] + opt)[-max_length:] for i in rows]
                logits = _forward_last(model, seqs, pad, keep=len(opt) + 1)
                logp = torch.log_softmax(logits[:, :-1].float(), -1)
                target = torch.tensor(opt, device=logp.device).expand(len(rows), -1)
                out[rows, k] = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(-1).cpu().numpy()
    return out


def choice_logprobs(model, tok, prompts: list[str], options: list[str], *, max_length: int, batch_size: int,
                    desc: str = "scoring") -> np.ndarray:
    """(n, K) log-probabilities of options such as " (A)" / " (B)" in ONE forward pass per prompt.

    The options' shared leading tokens (e.g. " (") are appended to the prompt, and the logits at
    the last position give the first token where the options differ ("A" vs "B"). Tokens after
    that one (e.g. ")") are not scored: they follow almost surely and would cost a pass each.
    Falls back to :func:`continuation_logprobs` when the options do not split on one token.
    """
    option_ids = [tok(v, add_special_tokens=False)["input_ids"] for v in options]
    common = 0
    while all(len(o) > common for o in option_ids) and len({o[common] for o in option_ids}) == 1:
        common += 1
    heads = [o[common] if len(o) > common else None for o in option_ids]
    if None in heads or len(set(heads)) != len(heads):
        return continuation_logprobs(model, tok, prompts, options, max_length=max_length, batch_size=batch_size,
                                     desc=desc)
    shared = option_ids[0][:common]
    enc = tok(prompts, add_special_tokens=True)["input_ids"]
    out = np.zeros((len(prompts), len(options)), dtype=np.float64)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    order = np.argsort([len(e) for e in enc])
    with torch.inference_mode():
        for start in tqdm(range(0, len(prompts), batch_size), desc=desc, leave=False):
            rows = order[start : start + batch_size]
            seqs = [(enc[i] + shared)[-max_length:] for i in rows]
            logp = torch.log_softmax(_forward_last(model, seqs, pad, keep=1)[:, -1].float(), -1)
            out[rows] = logp[:, heads].cpu().numpy()
    return out
