"""Easy-to-hard generalization (Hase et al., 2024): train on easy examples only, test on hard ones.

Difficulty comes from one of:

- ``column``: the task's own per-example difficulty (e.g. SpamAssassin's "hard ham", WordNet rarity);
- ``length``: text length in characters;
- ``weak_confidence``: 1 − P(true label) under a smaller model, cross-fitted (two folds, each
  scored by a model trained on the other), so no example is scored by a model that saw it;
- ``small_model_solves``: 0 when that smaller model gets the example right, 1 when it does not.

The training pool and the test pool are cut at the pool's difficulty quantile into easy and hard.
The model is trained on ``n_train`` examples from (a) the easy part only, (b) the whole pool, and
(c) the hard part only (the in-distribution ceiling for hard examples), each with several seeds,
and evaluated on easy and hard test examples. The **gap recovered on hard examples** is
``(easy→hard − baseline) / (all→hard − baseline)``, where the baseline is the majority-class
accuracy on the hard test set; its CI resamples hard test examples.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from superalign import metrics
from superalign.data.registry import load_task
from superalign.data.task import TaskData
from superalign.errors import ConfigError
from superalign.metrics import fmt_interval
from superalign.oversight.registry import register_measurement
from superalign.store.store import Store
from superalign.w2s.config import ModelConfig
from superalign.w2s.stages import ModelPool, Stages, ground_truth


class EasyToHardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = "wordnet_living"
    task_options: dict[str, Any] = Field(default_factory=dict)
    max_examples: int | None = Field(6000, ge=20)
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(model="gemma3-270m", epochs=10, max_length=32))
    difficulty: Literal["column", "length", "weak_confidence", "small_model_solves"] = "weak_confidence"
    weak_model: ModelConfig = Field(default_factory=lambda: ModelConfig(model="minilm-l6", epochs=10, max_length=32),
                                    description="the smaller model for weak_confidence / small_model_solves")
    easy_quantile: float = Field(0.5, gt=0, lt=1, description="examples below this difficulty quantile are easy")
    pool: int = Field(3000, ge=10, description="training pool size (the rest of the task is the test pool)")
    n_train: int = Field(600, ge=4, description="training examples in each condition")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    split_seed: int = 0
    n_boot: int = Field(1000, ge=100)


def difficulty_scores(cfg: EasyToHardConfig, stages: Stages, task: TaskData, seed: int) -> np.ndarray:
    """One difficulty score per example (higher = harder)."""
    if cfg.difficulty == "column":
        if task.difficulty is None:
            raise ConfigError("difficulty", f"task '{task.name}' has no difficulty column",
                              "use difficulty: length, weak_confidence or small_model_solves")
        return task.difficulty.astype(float)
    if cfg.difficulty == "length":
        return np.array([len(t) for t in task.inputs()], dtype=float)
    # cross-fitted smaller model over every example
    rng = np.random.default_rng([seed, 99])
    perm = rng.permutation(len(task))
    folds = [np.sort(perm[: len(perm) // 2]), np.sort(perm[len(perm) // 2:])]
    p_true = np.zeros(len(task))
    for f in (0, 1):
        trained = stages.train(cfg.weak_model, ground_truth(task, folds[f]), seed=seed,
                               predict_on={"other": folds[1 - f]}, label=f"difficulty {cfg.weak_model.model} fold{f}")
        probs = trained.probs["other"]
        p_true[folds[1 - f]] = probs[np.arange(len(probs)), task.labels[folds[1 - f]]]
    if cfg.difficulty == "weak_confidence":
        return 1.0 - p_true
    return (p_true <= 0.5).astype(float)


def _cut(idx: np.ndarray, score: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    easy = idx[score[idx] < threshold]
    hard = idx[score[idx] >= threshold]
    return easy, hard


def summary_lines(r: dict[str, Any]) -> list[str]:
    """The printed lines of an easy-to-hard result."""
    a, g = r["accuracy"], r["gap_recovered"]
    hard = {c: fmt_interval(a[c]["hard"], True) for c in ("easy", "all", "hard")}
    return [f"easy-to-hard ({r['task']}, {r['model']}, difficulty={r['difficulty']}): accuracy on hard examples % "
            f"— trained on easy {hard['easy']}, on all {hard['all']}, on hard {hard['hard']}; "
            f"majority class {100 * r['baseline_hard']:.1f}",
            f"  gap recovered on hard examples {fmt_interval(g)}"
            + ("" if g["reliable"] else f" (unreliable: {g['note']})")]


def report_sections(r: dict[str, Any]) -> list:
    """The report section: accuracy table per training condition, notes and the bar plot."""
    from superalign.report.html import Section, Table
    from superalign.report.plots_oversight import easy_to_hard_plot

    a = r["accuracy"]
    sec = Section("Easy-to-hard generalization", pre="\n".join(summary_lines(r)), table=Table(
        ["trained on", "easy test %", "hard test %"],
        [[c, fmt_interval(a[c]["easy"], True), fmt_interval(a[c]["hard"], True)] for c in ("easy", "all", "hard")]))
    sec.notes.append(f"difficulty = {r['difficulty']}; {r['n_train']} training examples per condition; "
                     f"sizes {r['sizes']}")
    if not r["gap_recovered"]["reliable"]:
        sec.warnings.append(f"gap recovered unreliable: {r['gap_recovered']['note']}")
    return [sec.image(easy_to_hard_plot(r))]


@register_measurement("easy_to_hard", config=EasyToHardConfig, default=True, summary=summary_lines,
                      report=report_sections, help="train on easy examples only, test on hard ones")
def run_easy_to_hard(cfg: EasyToHardConfig, store: Store, pool: ModelPool | None = None) -> dict[str, Any]:
    """Train on easy / all / hard, test on easy and hard; JSON-serialisable results."""
    t0 = time.perf_counter()
    task = load_task(cfg.task, max_examples=cfg.max_examples, seed=cfg.split_seed, **cfg.task_options)
    if cfg.pool >= len(task):
        raise ConfigError("pool", f"is {cfg.pool} but task '{task.name}' has {len(task)} examples",
                          f"set pool below {len(task)} so some examples remain for testing")
    stages = Stages(store, task, pool)
    score = difficulty_scores(cfg, stages, task, cfg.split_seed)
    perm = np.random.default_rng(cfg.split_seed).permutation(len(task))
    pool_idx, test_idx = np.sort(perm[: cfg.pool]), np.sort(perm[cfg.pool:])
    threshold = float(np.quantile(score[pool_idx], cfg.easy_quantile))
    if np.all(score[pool_idx] == score[pool_idx][0]):
        raise ConfigError("difficulty", f"'{cfg.difficulty}' gives every example the same score",
                          "choose another difficulty source")
    if (score[pool_idx] < threshold).sum() == 0:  # many ties at the quantile (binary scores)
        threshold = float(np.unique(score[pool_idx])[1])
    easy_pool, hard_pool = _cut(pool_idx, score, threshold)
    easy_test, hard_test = _cut(test_idx, score, threshold)
    for name, part in (("easy training", easy_pool), ("hard training", hard_pool), ("hard test", hard_test),
                       ("easy test", easy_test)):
        if len(part) < 4 or len(np.unique(task.labels[part])) < 2:
            raise ConfigError("easy_quantile", f"the {name} set has {len(part)} examples or a single class",
                              "move easy_quantile towards 0.5 or enlarge pool / max_examples")
    n = min(cfg.n_train, len(easy_pool), len(hard_pool))
    conditions = {"easy": easy_pool, "all": pool_idx, "hard": hard_pool}
    correct: dict[str, dict[str, list[np.ndarray]]] = {c: {"hard": [], "easy": []} for c in conditions}
    for seed in cfg.seeds:
        for k, (cond, part) in enumerate(conditions.items()):
            rng = np.random.default_rng([seed, k])
            train = np.sort(rng.choice(part, size=n, replace=False))
            res = stages.train(cfg.model, ground_truth(task, train), seed=seed,
                               predict_on={"hard": hard_test, "easy": easy_test}, label=f"{cond}-trained s{seed}")
            for split, idx in (("hard", hard_test), ("easy", easy_test)):
                correct[cond][split].append((res.probs[split].argmax(1) == task.labels[idx]).astype(float))
    y_hard = task.labels[hard_test]
    majority = np.bincount(y_hard).argmax()
    baseline = (y_hard == majority).astype(float)
    acc = {cond: {split: metrics.mean_ci(np.stack(v), cfg.n_boot).as_dict() for split, v in d.items()}
           for cond, d in correct.items()}
    gap = metrics.pgr_bootstrap(baseline, np.stack(correct["easy"]["hard"]), np.stack(correct["all"]["hard"]),
                                n_boot=cfg.n_boot, min_gap=0.02)
    return {
        "task": task.name, "model": cfg.model.model, "difficulty": cfg.difficulty, "threshold": threshold,
        "n_train": int(n), "sizes": {"easy_pool": int(len(easy_pool)), "hard_pool": int(len(hard_pool)),
                                     "easy_test": int(len(easy_test)), "hard_test": int(len(hard_test))},
        "accuracy": acc, "baseline_hard": float(baseline.mean()),
        "gap_recovered": {"value": gap.pgr.value, "low": gap.pgr.low, "high": gap.pgr.high,
                          "reliable": gap.reliable, "note": gap.reason},
        "seconds": round(time.perf_counter() - t0, 1),
    }


__all__ = ["EasyToHardConfig", "difficulty_scores", "report_sections", "run_easy_to_hard", "summary_lines"]
