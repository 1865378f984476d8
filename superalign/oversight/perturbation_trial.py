"""The targeted-perturbation randomised controlled trial: does a critique help a judge find flaws?

Each trial unit (a question) is randomly assigned, with permuted blocks of four inside
perturbation strata, to be shown perturbed or clean and to be judged alone or with the critic's
generative critique as assistance. The judge (:class:`~superalign.oversight.critic.Judge`; by
default a causal LM in scored mode) says whether the shown answer is flawed. We report its
detection rate (true positives on perturbed answers), false-positive rate and the assistance
effect (assisted minus alone) with bootstrap CIs that resample inside each randomisation cell, and
the randomisation table. Items and flaws come from :mod:`superalign.oversight.perturb`.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
from pydantic import Field

from superalign.config import YamlConfig
from superalign.errors import ConfigError
from superalign.metrics import fmt_interval, interval_from_boots
from superalign.oversight.critic import (
    Critic,
    CriticConfig,
    ItemsConfig,
    Judge,
    JudgeConfig,
    LMCritic,
    LMJudge,
    auroc,
    caveats,
    check_threshold,
    critique_flags,
    critiques_stage,
    decision_threshold,
    judge_stage,
    rate_ci,
    stage_events,
    store_or_default,
)
from superalign.oversight.perturb import build_pairs, resolve_perturbations
from superalign.oversight.registry import register_measurement
from superalign.store.store import Store


class PerturbationTrialConfig(YamlConfig):
    """The targeted-perturbation randomised controlled trial (judge alone vs judge + critique); YAML-loadable."""

    items: ItemsConfig = Field(default_factory=ItemsConfig)
    n_units: int = Field(64, ge=8, description="trial units (questions); a quarter per randomisation cell")
    critic: CriticConfig = Field(default_factory=CriticConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    seed: int = 0
    n_boot: int = Field(1000, ge=100)
    n_examples: int = Field(6, ge=0)

    def check(self) -> None:
        resolve_perturbations(self.items.family, self.items.perturbations)
        check_threshold(self.critic.scored_threshold, "critic.scored_threshold")
        check_threshold(self.judge.threshold, "judge.threshold")



CELLS = ((False, False), (False, True), (True, False), (True, True))  # (perturbed, assisted)


def randomise(strata: Sequence[str], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Assign units to (perturbed?, assisted?) with permuted blocks of four inside each stratum.

    Every full block of four units of a stratum gets the four cells in a random order; the
    leftover units of all strata are then assigned by further permuted blocks, so each cell's
    count differs from n/4 by less than one and every stratum is balanced up to three units.
    Reproducible: the same strata and seed give the same assignment.
    """
    rng = np.random.default_rng([seed, 4242])
    n = len(strata)
    cell = np.full(n, -1)
    leftovers: list[int] = []
    for s in sorted(set(strata)):
        units = np.array([i for i in range(n) if strata[i] == s])
        units = units[rng.permutation(len(units))]
        full = len(units) // 4 * 4
        for b in range(0, full, 4):
            cell[units[b:b + 4]] = rng.permutation(4)
        leftovers += units[full:].tolist()
    leftovers_arr = np.array(leftovers, dtype=int)[rng.permutation(len(leftovers))]
    for b in range(0, len(leftovers_arr), 4):
        block = leftovers_arr[b:b + 4]
        cell[block] = rng.permutation(4)[: len(block)]
    perturbed = np.array([CELLS[c][0] for c in cell], dtype=bool)
    assisted = np.array([CELLS[c][1] for c in cell], dtype=bool)
    return perturbed, assisted


def _arm_stats(p: np.ndarray, flag: np.ndarray, perturbed: np.ndarray) -> tuple[float, float, float, float]:
    det = float(flag[perturbed].mean()) if perturbed.any() else float("nan")
    fpr = float(flag[~perturbed].mean()) if (~perturbed).any() else float("nan")
    return det, fpr, (det + 1 - fpr) / 2, auroc(p, perturbed)


def summary_lines(r: dict[str, Any]) -> list[str]:
    """The printed line: the assistance effect on detection and on false positives."""
    e = r["effect"]
    return [f"perturbation trial ({r['n_units']} units): assistance effect on detection "
            f"{fmt_interval(e.get('detection'))}, on false positives {fmt_interval(e.get('false_positive'))}"]


def report_sections(r: dict[str, Any]) -> list:
    """The report section: the summary, notes and the per-arm rates and effects plot."""
    from superalign.report.html import Section
    from superalign.report.plots_oversight import perturbation_trial_plot

    sec = Section("Targeted-perturbation trial", pre="\n".join(summary_lines(r)), notes=list(r.get("notes", [])))
    return [sec.image(perturbation_trial_plot(r))]


@register_measurement("perturbation_trial", config=PerturbationTrialConfig, summary=summary_lines,
                      report=report_sections, help="RCT: a judge finds planted flaws alone or with a critique")
def run_perturbation_trial(cfg: PerturbationTrialConfig, store: Store | None = None, *, critic: Critic | None = None,
                           judge: Judge | None = None) -> dict:
    """Run the targeted-perturbation RCT; returns JSON-serialisable results.

    ``critic`` / ``judge`` replace the LMs built from ``cfg`` (e.g. planted stubs). Keys:
    ``randomisation`` (the table), ``arms`` (detection, false positives, balanced accuracy,
    AUROC per arm), ``effect`` (assisted - alone, bootstrap CIs), ``critic`` (how often its
    critiques flagged perturbed / clean answers), ``by_perturbation``, ``examples``, ``stages``.
    """
    t0 = time.perf_counter()
    cfg.check()
    store = store_or_default(store)
    start_events = len(store.events)
    critic = critic if critic is not None else LMCritic(cfg.critic, seed=cfg.seed)
    judge = judge if judge is not None else LMJudge(cfg.judge)
    if not isinstance(critic, Critic):
        raise ConfigError("critic", f"a {type(critic).__name__} is not a Critic",
                          "give an object with identity(), critique(items) and p_mistake(items)")
    if not isinstance(judge, Judge):
        raise ConfigError("judge", f"a {type(judge).__name__} is not a Judge",
                          "give an object with identity() and p_flawed(items, critiques)")
    pairs = build_pairs(cfg.items.family, cfg.n_units, perturbations=cfg.items.perturbations, seed=cfg.seed)
    strata = [p.flawed.flaw.perturbation for p in pairs]  # type: ignore[union-attr]
    perturbed, assisted = randomise(strata, cfg.seed)
    shown = [p.flawed if perturbed[k] else p.clean for k, p in enumerate(pairs)]

    helped = np.flatnonzero(assisted)
    critiques_assisted = critiques_stage(store, critic, [shown[k] for k in helped], label="assistance critiques")
    critiques: list[str | None] = [None] * len(shown)
    for k, text in zip(helped, critiques_assisted):
        critiques[k] = text
    p = judge_stage(store, judge, shown, critiques, label="judge P(Yes)")
    thr = decision_threshold(cfg.judge.threshold, p)
    flag = (p > thr).astype(float)

    table = {arm: {"clean": int(((~perturbed) & (assisted == a)).sum()), "perturbed": int((perturbed & (assisted == a)).sum())}
             for arm, a in (("alone", False), ("assisted", True))}
    by_pert_table: dict[str, dict[str, int]] = {}
    for s, pt, a in zip(strata, perturbed, assisted):
        row = by_pert_table.setdefault(s, {"alone/clean": 0, "alone/perturbed": 0, "assisted/clean": 0,
                                           "assisted/perturbed": 0})
        row[f"{'assisted' if a else 'alone'}/{'perturbed' if pt else 'clean'}"] += 1

    cells = [np.flatnonzero((perturbed == pt) & (assisted == a)) for pt, a in CELLS]
    if any(len(c) == 0 for c in cells):
        raise ConfigError("n_units", f"is {cfg.n_units}: a randomisation cell is empty", "use at least 8 units")
    rng = np.random.default_rng(cfg.seed)
    names = ("detection", "false_positive", "balanced_accuracy", "auroc")

    def arm_of(idx: np.ndarray, a: bool) -> tuple[float, ...]:
        sel = idx[assisted[idx] == a]
        return _arm_stats(p[sel], flag[sel], perturbed[sel])

    boots = []
    for _ in range(cfg.n_boot):
        idx = np.concatenate([c[rng.integers(0, len(c), len(c))] for c in cells])
        boots.append((arm_of(idx, False), arm_of(idx, True)))
    b = np.array(boots)  # (n_boot, 2 arms, 4 stats)
    all_idx = np.arange(len(shown))
    point = np.array([arm_of(all_idx, False), arm_of(all_idx, True)])
    arms = {}
    for j, arm in enumerate(("alone", "assisted")):
        sel = assisted == (arm == "assisted")
        arms[arm] = {**{name: interval_from_boots(point[j, s], b[:, j, s]).as_dict() for s, name in enumerate(names)},
                     "mean_p_perturbed": float(p[sel & perturbed].mean()), "mean_p_clean": float(p[sel & ~perturbed].mean())}
    effect = {name: interval_from_boots(point[1, s] - point[0, s], b[:, 1, s] - b[:, 0, s]).as_dict()
              for s, name in enumerate(names)}

    c_flags = np.array([critique_flags(t) for t in critiques_assisted], dtype=float)
    pert_helped = perturbed[helped]
    boot = dict(n_boot=cfg.n_boot, seed=cfg.seed)
    by_pert: dict[str, dict] = {}
    for s in sorted(set(strata)):
        m = np.array([x == s for x in strata]) & perturbed
        by_pert[s] = {arm: rate_ci(flag[m & (assisted == a)], **boot) for arm, a in (("alone", False), ("assisted", True))}
    examples = []
    for k in helped[: cfg.n_examples]:
        examples.append({"question": shown[k].question, "shown_answer": shown[k].answer, "perturbed": bool(perturbed[k]),
                         "flaw": shown[k].flaw.description if shown[k].flaw else None, "critique": critiques[k],
                         "judge_p_flawed": float(p[k])})
    return {
        "config": cfg.model_dump(mode="json"),
        "n_units": len(shown), "threshold": thr,
        "randomisation": {"table": table, "by_perturbation": by_pert_table, "seed": cfg.seed,
                          "design": "permuted blocks of 4 cells (perturbed x assisted) within perturbation strata"},
        "arms": arms, "effect": effect,
        "critic": {"detection": rate_ci(c_flags[pert_helped], **boot), "false_alarm": rate_ci(c_flags[~pert_helped], **boot)},
        "by_perturbation": by_pert,
        "examples": examples,
        "stages": stage_events(store, start_events),
        "seconds": {"total": round(time.perf_counter() - t0, 2)},
        "notes": caveats([cfg.critic.model, cfg.judge.model], {"critic": critic, "judge": judge}, [
            "judge decisions cut P(Yes) at its median over all units (one threshold for both arms); AUROC per arm "
            "is the threshold-free comparison"] if cfg.judge.threshold == "median" else []),
    }

