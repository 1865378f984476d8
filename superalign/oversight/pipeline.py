"""Run several oversight measurements as one experiment with one report.

``superalign oversight run`` (the offline default) runs easy-to-hard generalization, the
discriminator–critique gap, the reward over-optimization curve (chess, Stockfish gold) and
automated interpretability; ``run: [...]`` in the config adds W2S reward modeling, the
targeted-perturbation trial and the planted-misalignment test. Each measurement caches its own
stages in the shared store, so a rerun recomputes nothing that finished.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from superalign.config import YamlConfig
from superalign.oversight.autointerp import AutoInterpConfig
from superalign.oversight.critique import CritiqueGapConfig, PerturbationTrialConfig
from superalign.oversight.easy_to_hard import EasyToHardConfig
from superalign.oversight.misaligned import MisalignedConfig
from superalign.oversight.overopt import OveroptConfig
from superalign.oversight.w2s_reward import W2SRewardConfig
from superalign.store.store import Store, default_store_root, write_json_atomic

log = logging.getLogger("superalign.oversight")

Measurement = Literal["easy_to_hard", "w2s_reward", "critique_gap", "perturbation_trial", "overoptimization",
                      "autointerp", "misaligned"]
DEFAULT_RUN: list[str] = ["easy_to_hard", "critique_gap", "overoptimization", "autointerp"]


class OversightConfig(YamlConfig):
    """Which measurements to run, and each one's settings."""

    name: str = "oversight"
    run: list[Measurement] = Field(default_factory=lambda: list(DEFAULT_RUN), min_length=1)
    easy_to_hard: EasyToHardConfig = Field(default_factory=EasyToHardConfig)
    w2s_reward: W2SRewardConfig = Field(default_factory=W2SRewardConfig)
    critique_gap: CritiqueGapConfig = Field(default_factory=CritiqueGapConfig)
    perturbation_trial: PerturbationTrialConfig = Field(default_factory=PerturbationTrialConfig)
    overoptimization: OveroptConfig = Field(default_factory=OveroptConfig)
    autointerp: AutoInterpConfig = Field(default_factory=AutoInterpConfig)
    misaligned: MisalignedConfig = Field(default_factory=MisalignedConfig)


def _iv(d: dict[str, Any] | None, pct: bool = False) -> str:
    from superalign.metrics import Interval

    if not d:
        return "n/a"
    return Interval(d["value"], d["low"], d["high"]).fmt(pct=pct)


def summary_lines(name: str, r: dict[str, Any]) -> list[str]:
    """One or two printed lines per measurement, from its result dict."""
    if name == "easy_to_hard":
        a = r["accuracy"]
        g = r["gap_recovered"]
        return [f"easy-to-hard ({r['task']}, {r['model']}, difficulty={r['difficulty']}): accuracy on hard examples % "
                f"— trained on easy {_iv(a['easy']['hard'], True)}, on all {_iv(a['all']['hard'], True)}, on hard "
                f"{_iv(a['hard']['hard'], True)}; majority class {100 * r['baseline_hard']:.1f}",
                f"  gap recovered on hard examples {_iv(g)}" + ("" if g["reliable"] else f" (unreliable: {g['note']})")]
    if name == "w2s_reward":
        return [f"W2S reward modeling ({r['data']}, {r['weak_model']} -> {r['strong_model']}): pairwise accuracy % weak "
                f"{_iv(r['weak'], True)}, w2s {_iv(r['w2s'], True)}, ceiling {_iv(r['ceiling'], True)}; PGR {_iv(r['pgr'])}"
                + ("" if r["reliable"] else f" (unreliable: {r['reason']})")]
    if name == "critique_gap":
        lines = [f"discriminator-critique gap: discriminator balanced accuracy "
                 f"{_iv(r['discriminator']['balanced_accuracy'])}"]
        for mode, c in r["critique"].items():
            lines.append(f"  critique ({mode}): balanced accuracy {_iv(c['balanced_accuracy'])}; gap "
                         f"{_iv(r['gap'][mode])}")
        return lines
    if name == "perturbation_trial":
        e = r["effect"]
        return [f"perturbation trial ({r['n_units']} units): assistance effect on detection "
                f"{_iv(e.get('detection'))}, on false positives {_iv(e.get('false_positive'))}"]
    if name == "overoptimization":
        p = r["proxy"]
        return [f"reward over-optimization (chess, {r['backbone']} proxy, held-out pair accuracy "
                f"{p['test_accuracy']:.3f}): over-optimised {r['overoptimized']}, gold peaks at KL {r['peak_kl']:.2f}"]
    if name == "autointerp":
        from superalign.oversight.autointerp import autointerp_text

        return ["automated interpretability: " + autointerp_text(r, top=3).replace("\n", "\n  ")]
    if name == "misaligned":
        works = r["measurement_works"]
        return [f"planted misalignment (trigger '{r['trigger']}'): flagged by " +
                ", ".join(f"{k.removeprefix('flag_')} {'yes' if v else 'no'}" for k, v in works.items())]
    return [name]


@dataclass
class OversightResult:
    config: OversightConfig
    results: dict[str, dict[str, Any]]
    summary: dict[str, Any]
    out_dir: Path | None = None

    def table(self) -> str:
        lines = []
        for name in self.config.run:
            lines += summary_lines(name, self.results[name])
        lines.append(f"{self.summary['stages']}; {self.summary['seconds']} s")
        return "\n".join(lines)


def run_oversight(cfg: OversightConfig, *, out_dir: str | Path | None = None, store: Store | None = None) -> OversightResult:
    """Run every measurement in ``cfg.run`` (each cached and resumable)."""
    from superalign.oversight.autointerp import run_autointerp
    from superalign.oversight.critique import run_critique_gap, run_perturbation_trial
    from superalign.oversight.easy_to_hard import run_easy_to_hard
    from superalign.oversight.misaligned import run_misaligned
    from superalign.oversight.overopt import run_overopt
    from superalign.oversight.w2s_reward import run_w2s_reward

    t0 = time.perf_counter()
    store = store or Store(default_store_root())
    runners = {
        "easy_to_hard": lambda: run_easy_to_hard(cfg.easy_to_hard, store),
        "w2s_reward": lambda: run_w2s_reward(cfg.w2s_reward, store),
        "critique_gap": lambda: run_critique_gap(cfg.critique_gap, store),
        "perturbation_trial": lambda: run_perturbation_trial(cfg.perturbation_trial, store),
        "overoptimization": lambda: run_overopt(cfg.overoptimization, store),
        "autointerp": lambda: run_autointerp(cfg.autointerp, store),
        "misaligned": lambda: run_misaligned(cfg.misaligned, store),
    }
    results, seconds = {}, {}
    for name in cfg.run:
        start = time.perf_counter()
        log.info("oversight: %s", name)
        results[name] = runners[name]()
        seconds[name] = round(time.perf_counter() - start, 1)
    summary = {"seconds": round(time.perf_counter() - t0, 1), "per_measurement_seconds": seconds,
               "stages": store.summary()}
    result = OversightResult(cfg, results, summary)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(cfg.to_yaml())
        write_json_atomic(out / "results.json", {"experiment": "oversight", "config": cfg.model_dump(mode="json"),
                                                 "results": results, "summary": summary})
        (out / "summary.txt").write_text(result.table() + "\n")
        result.out_dir = out
    log.info(store.summary(detail=True))
    return result
