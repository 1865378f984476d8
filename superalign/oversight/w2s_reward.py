"""Weak-to-strong reward modeling: a weak preference model labels comparisons for a strong one.

Split the comparisons (with ground truth) into A, B and test. The weak PM trains on A's ground
truth and gives soft labels P(a better) on B; the strong PM trains on those soft (or hardened)
labels; the ceiling is the strong PM trained on B's ground truth. All are scored by pairwise
accuracy on test, and PGR = (w2s − weak) / (ceiling − weak) gets a bootstrap CI over test pairs
(seed-averaged), exactly as for classification.

Comparison sources: ``wordnet_living`` (offline default: asked for a living thing, an animal or
plant noun beats an artifact noun; MiniLM and Gemma differ by about 9 points of pairwise accuracy
here), ``wordnet`` (offline: "What does X mean?" with X's definition preferred over a sibling
concept's or an unrelated one; too hard for these small models' features), ``chess`` (offline: two
moves ranked by Stockfish), or a ``prompt/chosen/rejected`` file / ``hf:NAME`` data set.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from superalign import metrics
from superalign.errors import ConfigError
from superalign.metrics import fmt_interval
from superalign.models.loading import load_backbone, model_identity
from superalign.oversight.registry import register_measurement
from superalign.rlaif.pm import Pairs, PMConfig, PreferenceModel
from superalign.store.store import Store
from superalign.w2s.config import GenerativeFinetuneConfig, _generative_shorthand


class StrongPMConfig(PMConfig):
    """The strong preference model, optionally generatively fine-tuned first (Burns et al. 2023, sec. 4.3.2):
    the causal-LM loss on the unlabelled comparison texts of B and test (template-formatted responses)."""

    generative_finetune: GenerativeFinetuneConfig | None = Field(
        None, description="causal-LM finetuning on the comparisons' texts first (true: defaults)")

    @field_validator("generative_finetune", mode="before")
    @classmethod
    def _gen_shorthand(cls, v: Any) -> Any:
        return _generative_shorthand(v)


class W2SRewardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: str = Field("wordnet_living", description="wordnet_living (offline default) | wordnet | chess | a "
                                                     "prompt/chosen/rejected file | hf:NAME")
    n_pairs: int = Field(1200, ge=12)
    weak: PMConfig = Field(default_factory=lambda: PMConfig(model="minilm-l6", max_length=96))
    strong: StrongPMConfig = Field(default_factory=lambda: StrongPMConfig(model="gemma3-270m", max_length=96))
    weak_train: int = Field(300, ge=4)
    strong_train: int = Field(500, ge=4)
    test: int = Field(400, ge=4)
    labels: Literal["soft", "hard"] = "soft"
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    seed: int = 0
    min_gap: float = Field(0.03, ge=0)
    n_boot: int = Field(1000, ge=100)


LIVING_PROMPT = "Name a living thing: an animal or a plant."


def living_thing_pairs(n: int, seed: int) -> Pairs:
    """Comparisons with exact ground truth from WordNet: asked for a living thing, a noun whose first
    sense is an animal or plant beats one whose first sense is an artifact (the words of the
    ``wordnet_living`` task, each used once; rare Latin genus names make it reward knowledge)."""
    from superalign.data import load_task

    task = load_task("wordnet_living")
    living = [t for t, y in zip(task.texts, task.labels) if y == 1]
    artifact = [t for t, y in zip(task.texts, task.labels) if y == 0]
    rng = np.random.default_rng(seed)
    living = [living[i] for i in rng.permutation(len(living))]
    artifact = [artifact[i] for i in rng.permutation(len(artifact))]
    n = min(n, len(living), len(artifact))
    first_living = rng.random(n) < 0.5
    a = [living[i] if f else artifact[i] for i, f in enumerate(first_living)]
    b = [artifact[i] if f else living[i] for i, f in enumerate(first_living)]
    return Pairs([LIVING_PROMPT] * n, a, b, first_living.astype(float))


def comparison_pairs(source: str, n: int, seed: int) -> Pairs:
    """Ground-truth comparisons from an offline generator or a file / hub data set."""
    from superalign.data.preferences import load_preference_rows, pairs_from_rows

    if source == "wordnet":
        from superalign.rlaif.pmp import ranked_pairs, wordnet_ranked_answers

        return ranked_pairs(wordnet_ranked_answers(n, seed), max_pairs_per_question=1, seed=seed)
    if source == "wordnet_living":
        return living_thing_pairs(n, seed)
    if source == "chess":
        from superalign.data.chess import cached_move_preference_pairs

        return pairs_from_rows(cached_move_preference_pairs(n, seed=seed), seed)
    if source.startswith("hf:"):
        return pairs_from_rows(load_preference_rows(source[3:], hub=True)[:n], seed)
    if Path(source).exists():
        return pairs_from_rows(load_preference_rows(source)[:n], seed)
    raise ConfigError("data", f"'{source}' is not wordnet_living, wordnet, chess, a file or hf:NAME",
                      "use data: wordnet_living (offline default) or point at a prompt/chosen/rejected file")


def _correct(pm: PreferenceModel, pairs: Pairs) -> np.ndarray:
    ra, rb = pm.score(pairs.prompts, pairs.a), pm.score(pairs.prompts, pairs.b)
    return ((ra > rb) == (pairs.p > 0.5)).astype(float)


def summary_lines(r: dict[str, Any]) -> list[str]:
    """The printed line of a W2S reward-modeling result."""
    return [f"W2S reward modeling ({r['data']}, {r['weak_model']} -> {r['strong_model']}): pairwise accuracy % weak "
            f"{fmt_interval(r['weak'], True)}, w2s {fmt_interval(r['w2s'], True)}, ceiling "
            f"{fmt_interval(r['ceiling'], True)}; PGR {fmt_interval(r['pgr'])}"
            + ("" if r["reliable"] else f" (unreliable: {r['reason']})")]


def report_sections(r: dict[str, Any]) -> list:
    """The report section: pairwise accuracy of weak, weak-to-strong and ceiling PMs, and PGR."""
    from superalign.report.html import Section, Table

    return [Section("Weak-to-strong reward modeling", pre="\n".join(summary_lines(r)), table=Table(
        ["model", "pairwise accuracy % [95% CI]"],
        [["weak", fmt_interval(r["weak"], True)], ["weak-to-strong", fmt_interval(r["w2s"], True)],
         ["ceiling", fmt_interval(r["ceiling"], True)], ["PGR", fmt_interval(r["pgr"])]]),
        warnings=[] if r["reliable"] else [f"PGR unreliable: {r['reason']}"])]


@register_measurement("w2s_reward", config=W2SRewardConfig, summary=summary_lines, report=report_sections,
                      help="a weak preference model labels comparisons for a strong one (PGR)")
def run_w2s_reward(cfg: W2SRewardConfig, store: Store) -> dict[str, Any]:
    """Weak PM → labels → strong PM, with ceiling and PGR (a cached stage)."""
    gen = cfg.strong.generative_finetune
    inputs = {"cfg": cfg.model_dump(exclude={"strong": {"generative_finetune"}}), "weak": model_identity(cfg.weak.model),
              "strong": model_identity(cfg.strong.model)}
    if gen is not None:  # unset keeps the stage key of before
        inputs["generative"] = gen.model_dump()

    def compute(tmp: Path) -> dict:
        t0 = time.perf_counter()
        pairs = comparison_pairs(cfg.data, cfg.n_pairs, cfg.seed)
        need = cfg.weak_train + cfg.strong_train + cfg.test
        if need > len(pairs):
            raise ConfigError("weak_train + strong_train + test", f"need {need} pairs but '{cfg.data}' gave {len(pairs)}",
                              "raise n_pairs or lower the split sizes")
        perm = np.random.default_rng(cfg.seed).permutation(len(pairs))
        A = perm[: cfg.weak_train]
        B = perm[cfg.weak_train: cfg.weak_train + cfg.strong_train]
        T = perm[cfg.weak_train + cfg.strong_train: need]
        test = pairs.subset(T)
        backbones = {}
        for c in (cfg.weak, cfg.strong):
            if c.model not in backbones:
                model, tok, info = load_backbone(c.model)
                model.requires_grad_(False)
                backbones[c.model] = (model, tok, info)

        def make(c: PMConfig) -> PreferenceModel:
            model, tok, info = backbones[c.model]
            return PreferenceModel(model, tok, info.arch, c)

        weak_pm, strong_pm = make(cfg.weak), make(cfg.strong)  # feature caches persist across seeds
        generative = None
        if gen is not None:  # unlabelled texts of B and test: what the strong PM reads, without preferences
            from superalign.training.generative import adapted_backbone, select_texts

            model, tok, info = backbones[cfg.strong.model]
            seen = pairs.subset(np.concatenate([B, T]))
            texts = list(dict.fromkeys(strong_pm.texts([*seen.prompts, *seen.prompts], [*seen.a, *seen.b])))
            texts = select_texts(texts, gen.max_texts, gen.seed)
            adapted, gen_key = adapted_backbone(store, model_name=cfg.strong.model,
                                                identity=model_identity(cfg.strong.model), backbone=model,
                                                tokenizer=tok, arch=info.arch, texts=texts, cfg=gen,
                                                field="strong.generative_finetune")
            strong_pm = PreferenceModel(adapted, tok, info.arch, cfg.strong)
            generative = {"key": gen_key, "n_texts": len(texts)}
        rows = {"weak": [], "w2s": [], "ceiling": []}
        label_acc = []
        for seed in cfg.seeds:
            weak_pm.fit(pairs.subset(A), seed=seed, init_from_scratch=True)
            b = pairs.subset(B)
            ra, rb = weak_pm.score(b.prompts, b.a), weak_pm.score(b.prompts, b.b)
            soft = 1.0 / (1.0 + np.exp(-(ra - rb)))
            label_acc.append(float(((soft > 0.5) == (b.p > 0.5)).mean()))
            weak_labels = Pairs(b.prompts, b.a, b.b, soft if cfg.labels == "soft" else (soft > 0.5).astype(float))
            rows["weak"].append(_correct(weak_pm, test))
            strong_pm.fit(weak_labels, seed=seed, init_from_scratch=True)
            rows["w2s"].append(_correct(strong_pm, test))
            strong_pm.fit(b, seed=seed, init_from_scratch=True)
            rows["ceiling"].append(_correct(strong_pm, test))
        res = metrics.pgr_bootstrap(np.stack(rows["weak"]), np.stack(rows["w2s"]), np.stack(rows["ceiling"]),
                                    n_boot=cfg.n_boot, min_gap=cfg.min_gap)
        return {"data": cfg.data, "weak_model": cfg.weak.model, "strong_model": cfg.strong.model, "labels": cfg.labels,
                "n": {"weak_train": len(A), "strong_train": len(B), "test": len(T)},
                "weak_label_accuracy": float(np.mean(label_acc)), **res.as_dict(), "generative_finetune": generative,
                "seconds": round(time.perf_counter() - t0, 1)}

    return store.run("w2s-reward", inputs, compute, label="W2S reward modeling", version=2).meta["result"]
