"""Metrics shared by every experiment: accuracy, calibration, agreement, bootstrap CIs and PGR.

PGR (performance gap recovered, Burns et al. 2023) is ``(w2s - weak) / (ceiling - weak)``: 0 when
the student does no better than its supervisor, 1 when it matches a student trained on ground
truth. Its confidence interval resamples test examples (the same resample for all three models,
so their correlation is kept) and recomputes the seed-averaged accuracies and the ratio.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def accuracy(probs_or_pred: np.ndarray, labels: np.ndarray) -> float:
    pred = probs_or_pred.argmax(-1) if probs_or_pred.ndim == 2 else probs_or_pred
    return float((pred == labels).mean())


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """ECE with equal-width confidence bins: sum_b |acc_b - conf_b| * n_b / n."""
    conf = probs.max(-1)
    correct = (probs.argmax(-1) == labels).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += abs(correct[m].mean() - conf[m].mean()) * m.sum()
    return float(total / len(labels))


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of examples on which two models predict the same class."""
    pa = a.argmax(-1) if a.ndim == 2 else a
    pb = b.argmax(-1) if b.ndim == 2 else b
    return float((pa == pb).mean())


def pgr(weak: float, w2s: float, ceiling: float) -> float:
    """Performance gap recovered; NaN when the ceiling does not beat the weak model."""
    gap = ceiling - weak
    return float((w2s - weak) / gap) if gap > 0 else float("nan")


@dataclass
class Interval:
    """A point estimate with a confidence interval (``low``, ``high``)."""

    value: float
    low: float
    high: float

    def fmt(self, pct: bool = False, digits: int = 3) -> str:
        """``value [low, high]``; ``pct`` prints percentages with one decimal; ``n/a`` when undefined."""
        if not np.isfinite(self.value):
            return "n/a"
        f = (lambda x: f"{100 * x:.1f}") if pct else (lambda x: f"{x:.{digits}f}")
        return f"{f(self.value)} [{f(self.low)}, {f(self.high)}]"

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Interval":
        return cls(float(d["value"]), float(d["low"]), float(d["high"]))

    def excludes(self, null: float) -> bool:
        """Whether the interval lies entirely on one side of ``null`` (the CI decides, not the point)."""
        return bool(np.isfinite(self.low) and np.isfinite(self.high) and (self.low > null or self.high < null))


def fmt_interval(d: "Interval | dict | None", pct: bool = False, digits: int = 3) -> str:
    """The one interval formatter: an :class:`Interval` or its ``as_dict()`` form, ``n/a`` for None/empty."""
    if not d:
        return "n/a"
    iv = d if isinstance(d, Interval) else Interval.from_dict(d)
    return iv.fmt(pct=pct, digits=digits)


def interval_from_boots(point: float, boots: np.ndarray, level: float = 0.95) -> Interval:
    """Percentile interval of the finite bootstrap replicates around ``point`` (NaN bounds if none are finite)."""
    finite = np.asarray(boots, dtype=float)
    finite = finite[np.isfinite(finite)]
    if len(finite) == 0 or not np.isfinite(point):
        return Interval(float(point), float("nan"), float("nan"))
    a = (1 - level) / 2
    return Interval(float(point), float(np.quantile(finite, a)), float(np.quantile(finite, 1 - a)))


def bootstrap_ci(stat, n: int, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                 point: float | None = None) -> Interval:
    """The one bootstrap CI helper: ``stat(idx) -> float`` on ``n_boot`` resamples of indices ``0..n-1``.

    The same index set is passed for every array ``stat`` reads, so paired quantities (two models
    scored on the same examples, both members of a pair) move together. ``point`` defaults to
    ``stat(arange(n))``.
    """
    if n <= 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    idx = bootstrap_indices(n, n_boot, seed)
    boots = np.array([stat(i) for i in idx], dtype=float)
    value = float(stat(np.arange(n))) if point is None else float(point)
    return interval_from_boots(value, boots, level)


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def mean_ci(correct: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> Interval:
    """Accuracy (mean of a 0/1 array, averaged over seeds on axis 0 if 2-D) with a bootstrap CI."""
    c = np.atleast_2d(correct).astype(float)
    per_example = c.mean(0)
    idx = bootstrap_indices(len(per_example), n_boot, seed)
    boots = per_example[idx].mean(1)
    a = (1 - level) / 2
    return Interval(float(per_example.mean()), float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a)))


@dataclass
class PGRResult:
    pgr: Interval
    gap: Interval  # ceiling - weak
    weak: Interval
    w2s: Interval
    ceiling: Interval
    per_seed: list[float]
    reliable: bool
    reason: str

    def as_dict(self) -> dict:
        d = asdict(self)
        return d


def pgr_bootstrap(
    weak_correct: np.ndarray,
    w2s_correct: np.ndarray,
    ceiling_correct: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    min_gap: float = 0.05,
) -> PGRResult:
    """PGR with a percentile bootstrap CI over test examples.

    Each argument is (seeds, n_test) of 0/1 correctness (or (n_test,) for one seed). Each resample
    draws test indices once and applies them to all three models; accuracies are averaged over
    seeds before the ratio. PGR is flagged unreliable when the ceiling-weak gap is below
    ``min_gap`` or its CI reaches zero, since the ratio is then dominated by noise.
    """
    w, s, c = (np.atleast_2d(x).astype(float) for x in (weak_correct, w2s_correct, ceiling_correct))
    if not (w.shape[1] == s.shape[1] == c.shape[1]):
        raise ValueError("weak, w2s and ceiling must be scored on the same test examples")
    wm, sm, cm = w.mean(0), s.mean(0), c.mean(0)
    idx = bootstrap_indices(len(wm), n_boot, seed)
    bw, bs, bc = wm[idx].mean(1), sm[idx].mean(1), cm[idx].mean(1)
    gaps = bc - bw
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(gaps > 0, (bs - bw) / gaps, np.nan)
    a = (1 - level) / 2

    def interval(point: float, boots: np.ndarray) -> Interval:
        finite = boots[np.isfinite(boots)]
        if len(finite) == 0:
            return Interval(point, float("nan"), float("nan"))
        return Interval(point, float(np.quantile(finite, a)), float(np.quantile(finite, 1 - a)))

    gap = interval(float(cm.mean() - wm.mean()), gaps)
    point = pgr(float(wm.mean()), float(sm.mean()), float(cm.mean()))
    per_seed = [pgr(float(w[i].mean()), float(s[i].mean()), float(c[i].mean()))
                for i in range(min(len(w), len(s), len(c)))] if len(w) == len(s) == len(c) else []
    reliable, reason = True, ""
    if not np.isfinite(point) or gap.value < min_gap:
        reliable = False
        if round(100 * gap.value, 1) < 0:
            reason = (f"the weak model beats the ceiling by {-100 * gap.value:.1f} points: there is no gap to "
                      "recover, so PGR would be noise")
        else:
            reason = (f"the ceiling beats the weak model by {100 * gap.value:.1f} points, under the "
                      f"{100 * min_gap:.0f}-point minimum: PGR would be noise")
    elif not gap.low > 0:
        reliable = False
        reason = f"the ceiling-weak gap's {int(level * 100)}% CI reaches zero ({gap.fmt(pct=True)} points)"
    elif np.isnan(ratios).mean() > 0.05:
        reliable = False
        reason = "in over 5% of bootstrap resamples the ceiling does not beat the weak model"
    return PGRResult(
        pgr=interval(point, ratios), gap=gap, weak=interval(float(wm.mean()), bw),
        w2s=interval(float(sm.mean()), bs), ceiling=interval(float(cm.mean()), bc),
        per_seed=per_seed, reliable=reliable, reason=reason,
    )
