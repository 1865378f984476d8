"""Zero- and few-shot prompting baselines: a causal LM scores each class's verbalizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from superalign.data.task import TaskData
from superalign.models.cache import causal_lm
from superalign.models.loading import model_identity
from superalign.models.scoring import verbalizer_logprobs
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


def _lm(name: str):
    """The prompted LM through the active model cache (a run's scope, or the small process-wide cache)."""
    return causal_lm(name)


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
