"""The discriminator-critique gap (Saunders et al. 2022, "Self-critiquing models for assisting human
evaluators"), on targeted perturbations with real ground truth.

Can a model *tell* that an answer is flawed better than it can *say* what is wrong? The
discriminator is a linear probe on a backbone's pooled features, trained with
:func:`superalign.training.fit` on (question, answer) texts labelled clean/flawed; the critic
(:mod:`superalign.oversight.critic`) is a causal LM asked to point out mistakes, either in free
text (*generative*) or by the probability it gives " Yes" to "Does this answer contain a mistake?"
(*scored*). Both are evaluated on the same held-out pairs (each question once with its correct
answer, once with a flawed one), so the gap

    gap = balanced accuracy(discriminator) - balanced accuracy(critique)

has a paired bootstrap CI that resamples those pairs. The targeted-perturbation RCT is
:mod:`superalign.oversight.perturbation_trial`; items and flaws come from
:mod:`superalign.oversight.perturb`.

Features and the probe are cached stages of a :class:`~superalign.store.Store`; pass your own
:class:`~superalign.oversight.critic.Critic` (e.g. a planted stub) to :func:`run_critique_gap`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import Field

from superalign.config import YamlConfig
from superalign.errors import ConfigError
from superalign.metrics import Interval, bootstrap_ci, bootstrap_indices, fmt_interval, interval_from_boots
from superalign.oversight.critic import (
    Critic,
    CriticConfig,
    ItemsConfig,
    LMCritic,
    StrictSection,
    auroc,
    caveats,
    check_threshold,
    critic_scores_stage,
    critique_flags,
    critiques_stage,
    decision_threshold,
    load_array,
    mentions_flaw,
    rate_ci,
    save_array,
    stage_events,
    store_or_default,
    text_hash,
)
from superalign.oversight.perturb import ItemPair, build_pairs, resolve_perturbations
from superalign.oversight.registry import register_measurement
from superalign.store.store import Store


class DiscriminatorConfig(StrictSection):
    """A linear probe (clean vs flawed) on pooled features of a backbone."""

    model: str = Field("minilm-l6", description="backbone (zoo name, hub id or directory)")
    pooling: Literal["auto", "last", "mean", "first"] = "auto"
    layer: int = Field(-1, description="hidden-state layer to pool (-1 = last)")
    max_length: int = Field(128, ge=8)
    epochs: int = Field(30, ge=1)
    lr: float | None = Field(None, gt=0, description="default: the probe regime's learning rate")
    weight_decay: float = Field(0.01, ge=0)
    batch_size: int = Field(32, ge=1)
    features_batch_size: int = Field(16, ge=1)


class CritiqueGapConfig(YamlConfig):
    """The discriminator-critique gap experiment (YAML-loadable: ``CritiqueGapConfig.from_yaml(path)``)."""

    items: ItemsConfig = Field(default_factory=ItemsConfig)
    n_train: int = Field(300, ge=2, description="pairs (clean + flawed) the discriminator trains on")
    n_test: int = Field(48, ge=2, description="held-out pairs scored by the discriminator and the critic")
    discriminator: DiscriminatorConfig = Field(default_factory=DiscriminatorConfig)
    critic: CriticConfig = Field(default_factory=CriticConfig)
    modes: list[Literal["generative", "scored"]] = Field(default_factory=lambda: ["generative", "scored"])
    seed: int = 0
    n_boot: int = Field(1000, ge=100)
    n_examples: int = Field(6, ge=0, description="example critiques kept in the results")

    def check(self) -> None:
        """Cross-field checks: raise ConfigError naming the field and the fix."""
        resolve_perturbations(self.items.family, self.items.perturbations)
        if not self.modes:
            raise ConfigError("modes", "is empty", "list 'generative', 'scored' or both")
        if len(set(self.modes)) != len(self.modes):
            raise ConfigError("modes", f"repeats a mode: {self.modes}", "list each mode once")
        check_threshold(self.critic.scored_threshold, "critic.scored_threshold")



# --- cached stages --------------------------------------------------------------------------------

def _features_stage(store: Store, cfg: DiscriminatorConfig, texts: list[str]) -> tuple[np.ndarray, str]:
    from superalign.models.loading import model_identity

    inputs = {"model": model_identity(cfg.model), "texts": text_hash(texts), "n": len(texts),
              "pooling": cfg.pooling, "layer": cfg.layer, "max_length": cfg.max_length}

    def compute(tmp: Path) -> dict:
        from superalign.models.classifier import resolve_pooling
        from superalign.models.features import extract_features
        from superalign.models.loading import load_backbone

        backbone, tok, info = load_backbone(cfg.model)
        feats = extract_features(backbone, tok, texts, pooling=resolve_pooling(cfg.pooling, info.arch),
                                 layers=[cfg.layer], max_length=cfg.max_length, batch_size=cfg.features_batch_size,
                                 desc="discriminator features")[cfg.layer]
        save_array(tmp / "features.npy", feats)
        return {"shape": list(feats.shape), "arch": info.arch}

    stage = store.run("oversight-features", inputs, compute, label="discriminator features")
    return load_array(stage.file("features.npy")), stage.key


def _discriminator_stage(store: Store, cfg: DiscriminatorConfig, feats: np.ndarray, feats_key: str,
                         labels: np.ndarray, train_idx: np.ndarray, test_idx: np.ndarray, seed: int) -> dict:
    """Train the probe on ``train_idx`` and return P(flawed) on ``test_idx`` (+ training accuracy)."""
    inputs = {"features": feats_key, "labels": text_hash([int(x) for x in labels]),
              "train": text_hash([int(x) for x in train_idx]), "test": text_hash([int(x) for x in test_idx]),
              "epochs": cfg.epochs, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "batch_size": cfg.batch_size,
              "seed": seed}

    def compute(tmp: Path) -> dict:
        import torch

        from superalign.training.config import TrainConfig
        from superalign.training.regimes import probe_head
        from superalign.training.trainer import FeatureBatcher, fit, predict

        x = torch.from_numpy(feats)
        head = probe_head(x[torch.as_tensor(train_idx)], 2)
        tcfg = TrainConfig(regime="probe", epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay,
                           batch_size=cfg.batch_size)
        batcher = FeatureBatcher(x)
        targets = np.eye(2, dtype=np.float32)[labels[train_idx]]
        res = fit(head, batcher, train_idx, targets, tcfg, seed=seed, desc="discriminator")
        p_test = predict(head, batcher, test_idx, cfg.batch_size)[:, 1]
        p_train = predict(head, batcher, train_idx, cfg.batch_size)[:, 1]
        save_array(tmp / "p_test.npy", p_test.astype(np.float64))
        return {"train_accuracy": float(((p_train >= 0.5) == labels[train_idx]).mean()), "steps": res.steps,
                "final_loss": res.curve[-1]["loss"] if res.curve else None}

    stage = store.run("oversight-discriminator", inputs, compute, label="discriminator probe")
    return {"p_test": load_array(stage.file("p_test.npy")), **stage.meta["result"], "key": stage.key}


# --- statistics -----------------------------------------------------------------------------------

def _balanced(flag_flawed: np.ndarray, flag_clean: np.ndarray) -> float:
    """(detection rate on flawed + 1 - false-alarm rate on clean) / 2."""
    return float((np.mean(flag_flawed) + 1.0 - np.mean(flag_clean)) / 2.0)

def gap_interval(disc_flawed: np.ndarray, disc_clean: np.ndarray, crit_flawed: np.ndarray, crit_clean: np.ndarray,
                 *, n_boot: int = 1000, seed: int = 0) -> dict[str, Interval]:
    """Balanced accuracies of discriminator and critique and their gap, with a paired bootstrap.

    Each argument is a 0/1 "flagged as flawed" array over the same held-out pairs: the flawed
    member (``*_flawed``) and the clean member (``*_clean``) of pair k sit at index k. A resample
    draws pairs, so both detectors and both members of a pair move together.
    """
    arrays = [np.asarray(a, dtype=float) for a in (disc_flawed, disc_clean, crit_flawed, crit_clean)]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ConfigError("pairs", "flag arrays have different lengths", "score the same pairs with both detectors")
    df, dc, cf, cc = arrays

    def stats(idx: np.ndarray) -> tuple[float, float]:
        return _balanced(df[idx], dc[idx]), _balanced(cf[idx], cc[idx])

    boots = np.array([stats(idx) for idx in bootstrap_indices(n, n_boot, seed)])
    d, c = stats(np.arange(n))
    return {"discriminator": interval_from_boots(d, boots[:, 0]), "critique": interval_from_boots(c, boots[:, 1]),
            "gap": interval_from_boots(d - c, boots[:, 0] - boots[:, 1])}


def _paired_auroc(scores: np.ndarray, n_boot: int, seed: int) -> dict:
    """AUROC of scores laid out as pairs (index 2k clean, 2k+1 flawed), CI by resampling pairs."""
    flawed, clean = scores[1::2], scores[0::2]

    def stat(idx: np.ndarray) -> float:
        return auroc(np.r_[flawed[idx], clean[idx]], np.r_[np.ones(len(idx)), np.zeros(len(idx))])

    return bootstrap_ci(stat, len(flawed), n_boot=n_boot, seed=seed).as_dict()


def summary_lines(r: dict[str, Any]) -> list[str]:
    """The printed lines: the discriminator's balanced accuracy, then each critique mode's and its gap."""
    lines = [f"discriminator-critique gap: discriminator balanced accuracy "
             f"{fmt_interval(r['discriminator']['balanced_accuracy'])}"]
    for mode, c in r["critique"].items():
        lines.append(f"  critique ({mode}): balanced accuracy {fmt_interval(c['balanced_accuracy'])}; gap "
                     f"{fmt_interval(r['gap'][mode])}")
    return lines


def report_sections(r: dict[str, Any]) -> list:
    """The report section: the summary, notes and the balanced-accuracy / detection plot."""
    from superalign.report.html import Section
    from superalign.report.plots_oversight import critique_gap_plot

    sec = Section("Discriminator–critique gap", pre="\n".join(summary_lines(r)), notes=list(r.get("notes", [])))
    return [sec.image(critique_gap_plot(r))]


# --- the discriminator-critique gap ---------------------------------------------------------------

@register_measurement("critique_gap", config=CritiqueGapConfig, default=True, summary=summary_lines,
                      report=report_sections, help="can a model tell an answer is flawed better than it can say why?")
def run_critique_gap(cfg: CritiqueGapConfig, store: Store | None = None, *, critic: Critic | None = None) -> dict:
    """Measure the discriminator-critique gap; returns JSON-serialisable results.

    ``critic`` replaces the LM critic built from ``cfg.critic`` (e.g. a stub); it must implement
    :class:`Critic`. Keys of the result: ``discriminator``, ``critique`` (per mode), ``gap`` (per
    mode), ``by_perturbation``, ``examples``, ``stages``, ``seconds``.
    """
    t0 = time.perf_counter()
    cfg.check()
    store = store_or_default(store)
    start_events = len(store.events)
    critic = critic if critic is not None else LMCritic(cfg.critic, seed=cfg.seed)
    if not isinstance(critic, Critic):
        raise ConfigError("critic", f"a {type(critic).__name__} is not a Critic",
                          "give an object with identity(), critique(items) and p_mistake(items)")
    pairs = build_pairs(cfg.items.family, cfg.n_train + cfg.n_test, perturbations=cfg.items.perturbations,
                        seed=cfg.seed)
    test, train = pairs[: cfg.n_test], pairs[cfg.n_test:]
    t_items = time.perf_counter() - t0

    # Discriminator: items 2k (clean) and 2k+1 (flawed) of every pair; test pairs first.
    all_items = [it for p in test + train for it in (p.clean, p.flawed)]
    labels = np.array([int(it.flawed) for it in all_items])
    feats, feats_key = _features_stage(store, cfg.discriminator, [it.text() for it in all_items])
    test_idx = np.arange(2 * cfg.n_test)
    train_idx = np.arange(2 * cfg.n_test, len(all_items))
    disc = _discriminator_stage(store, cfg.discriminator, feats, feats_key, labels, train_idx, test_idx, cfg.seed)
    p_disc = disc["p_test"]
    d_flag = (p_disc >= 0.5).astype(float)
    d_flawed, d_clean = d_flag[1::2], d_flag[0::2]
    test_labels = labels[test_idx]
    boot = dict(n_boot=cfg.n_boot, seed=cfg.seed)
    result: dict[str, Any] = {
        "config": cfg.model_dump(mode="json"),
        "n_train_pairs": len(train), "n_test_pairs": len(test),
        "perturbations": {"train": _counts(train), "test": _counts(test)},
        "discriminator": {
            "model": cfg.discriminator.model,
            "accuracy": rate_ci((d_flag == test_labels).astype(float), **boot),
            "detection": rate_ci(d_flawed, **boot), "false_alarm": rate_ci(d_clean, **boot),
            "auroc": _paired_auroc(p_disc, cfg.n_boot, cfg.seed),
            "train_accuracy": disc["train_accuracy"],
        },
        "critique": {}, "gap": {},
    }

    test_flawed = [p.flawed for p in test]
    test_items = [it for p in test for it in (p.clean, p.flawed)]
    flags: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    critiques: list[str] = []
    if "generative" in cfg.modes:
        critiques = critiques_stage(store, critic, test_items, label="critiques (held-out pairs)")
        c_flag = np.array([critique_flags(t) for t in critiques], dtype=float)
        c_flawed, c_clean = c_flag[1::2], c_flag[0::2]
        mention = np.array([mentions_flaw(t, it) and critique_flags(t) for t, it in zip(critiques[1::2], test_flawed)],
                           dtype=float)
        flags["generative"] = (c_flawed, c_clean)
        result["critique"]["generative"] = {
            "detection": rate_ci(c_flawed, **boot), "false_alarm": rate_ci(c_clean, **boot),
            "localised": rate_ci(mention, **boot),
            "mean_words": float(np.mean([len(t.split()) for t in critiques])) if critiques else 0.0,
        }
    if "scored" in cfg.modes:
        p_yes = critic_scores_stage(store, critic, test_items, label="critic P(Yes) (held-out pairs)")
        thr = decision_threshold(cfg.critic.scored_threshold, p_yes)
        s_flag = (p_yes > thr).astype(float)
        flags["scored"] = (s_flag[1::2], s_flag[0::2])
        result["critique"]["scored"] = {
            "threshold": thr, "detection": rate_ci(s_flag[1::2], **boot), "false_alarm": rate_ci(s_flag[0::2], **boot),
            "auroc": _paired_auroc(p_yes, cfg.n_boot, cfg.seed), "mean_p_yes_flawed": float(p_yes[1::2].mean()),
            "mean_p_yes_clean": float(p_yes[0::2].mean()),
        }
    for mode, (f_flawed, f_clean) in flags.items():
        iv = gap_interval(d_flawed, d_clean, f_flawed, f_clean, n_boot=cfg.n_boot, seed=cfg.seed)
        result["discriminator"]["balanced_accuracy"] = iv["discriminator"].as_dict()
        result["critique"][mode]["balanced_accuracy"] = iv["critique"].as_dict()
        result["gap"][mode] = iv["gap"].as_dict()

    names = [p.flawed.flaw.perturbation for p in test]  # type: ignore[union-attr]
    by: dict[str, dict] = {}
    for name in sorted(set(names)):
        m = np.array([n == name for n in names])
        row: dict[str, Any] = {"n": int(m.sum()), "severity": next(p.flawed.flaw.severity for p, k in zip(test, m) if k),  # type: ignore[union-attr]
                               "discriminator_detection": rate_ci(d_flawed[m], **boot)}
        for mode, (f_flawed, _) in flags.items():
            row[f"{mode}_detection"] = rate_ci(f_flawed[m], **boot)
        by[name] = row
    result["by_perturbation"] = by
    result["examples"] = [{
        "question": p.clean.question, "clean_answer": p.clean.answer, "flawed_answer": p.flawed.answer,
        "flaw": p.flawed.flaw.description,  # type: ignore[union-attr]
        "perturbation": p.flawed.flaw.perturbation,  # type: ignore[union-attr]
        "discriminator_p_flawed": [float(p_disc[2 * k]), float(p_disc[2 * k + 1])],
        **({"critique_clean": critiques[2 * k], "critique_flawed": critiques[2 * k + 1]} if critiques else {}),
    } for k, p in enumerate(test[: cfg.n_examples])]
    result["stages"] = stage_events(store, start_events)
    result["seconds"] = {"total": round(time.perf_counter() - t0, 2), "items": round(t_items, 2)}
    result["notes"] = caveats([cfg.discriminator.model, cfg.critic.model], {"critic": critic}, [
        "scored-mode decisions cut P(Yes) at its median over the scored items (half are flawed by design); AUROC is "
        "the threshold-free comparison"] if cfg.critic.scored_threshold == "median" and "scored" in cfg.modes else [])
    return result


def _counts(pairs: Sequence[ItemPair]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in pairs:
        name = p.flawed.flaw.perturbation  # type: ignore[union-attr]
        out[name] = out.get(name, 0) + 1
    return dict(sorted(out.items()))
