"""Zero- and few-shot prompting baselines: a causal LM scores each class's verbalizer."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from superalign.data.task import TaskData
from superalign.models.loading import load_causal_lm, model_identity
from superalign.store.store import Store
from superalign.w2s.config import PromptingConfig
from superalign.w2s.stages import idx_hash, load_array, save_array


def pick_demonstrations(labels: np.ndarray, pool: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``k`` examples from ``pool``, cycling through the classes, in a seeded order."""
    if k == 0:
        return np.array([], dtype=np.int64)
    rng = np.random.default_rng([seed, k, 11])
    by_class = [rng.permutation(pool[labels[pool] == c]) for c in np.unique(labels[pool])]
    picked = [by_class[i % len(by_class)][i // len(by_class)] for i in range(k)]
    return rng.permutation(np.array(picked, dtype=np.int64))


def build_prompts(task: TaskData, test: np.ndarray, demos: np.ndarray) -> list[str]:
    prefix = "".join(task.render_prompt(i) + task.verbalizers[task.labels[i]] + "\n\n" for i in demos)
    return [prefix + task.render_prompt(i) for i in test]


@functools.lru_cache(maxsize=2)
def _lm(name: str):
    return load_causal_lm(name)


@torch.inference_mode()
def verbalizer_logprobs(model, tok, prompts: list[str], verbalizers: list[str], *, max_length: int,
                        batch_size: int, desc: str = "prompting") -> np.ndarray:
    """(n, K) log-probabilities of each verbalizer continuing each prompt.

    Single-token verbalizers take one forward pass per prompt (only the last position's logits);
    multi-token ones take one pass per (prompt, verbalizer) and sum their token log-probabilities.
    """
    option_ids = [tok(v, add_special_tokens=False)["input_ids"] for v in verbalizers]
    single = all(len(o) == 1 for o in option_ids) and len({o[0] for o in option_ids}) == len(option_ids)
    enc = tok(prompts, add_special_tokens=True)["input_ids"]
    out = np.zeros((len(prompts), len(verbalizers)), dtype=np.float64)
    order = np.argsort([len(e) for e in enc])
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, leave=False):
        rows = order[start : start + batch_size]
        if single:
            seqs = [enc[i][-max_length:] for i in rows]
            logits = _forward_last(model, seqs, pad, keep=1)[:, -1]
            logp = torch.log_softmax(logits.float(), -1)
            out[rows] = logp[:, [o[0] for o in option_ids]].cpu().numpy()
        else:
            for k, opt in enumerate(option_ids):
                seqs = [(enc[i] + opt)[-max_length:] for i in rows]
                logits = _forward_last(model, seqs, pad, keep=len(opt) + 1)
                logp = torch.log_softmax(logits[:, :-1].float(), -1)
                target = torch.tensor(opt).expand(len(rows), -1)
                out[rows, k] = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(-1).cpu().numpy()
    return out


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


def score_prompting(store: Store, task: TaskData, cfg: PromptingConfig, test: np.ndarray, pool: np.ndarray,
                    shots: int, seed: int = 0) -> np.ndarray:
    """Class probabilities on ``test`` from ``shots``-shot prompting (cached stage)."""
    demos = pick_demonstrations(task.labels, pool, shots, seed)
    inputs = {"model": model_identity(cfg.model), "task": task.fingerprint(), "test": idx_hash(test),
              "demos": demos.tolist(), "prompt": task.prompt, "verbalizers": task.verbalizers,
              "max_length": cfg.max_length}

    def compute(tmp: Path) -> dict:
        model, tok, _ = _lm(cfg.model)
        logp = verbalizer_logprobs(model, tok, build_prompts(task, test, demos), task.verbalizers,
                                   max_length=cfg.max_length, batch_size=cfg.batch_size,
                                   desc=f"{shots}-shot {cfg.model}")
        probs = np.exp(logp - logp.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        save_array(tmp / "probs.npy", probs.astype(np.float32))
        return {"shots": shots, "n": int(len(test))}

    stage = store.run("prompt", inputs, compute, label=f"{shots}-shot {cfg.model}")
    return load_array(stage.file("probs.npy"))
