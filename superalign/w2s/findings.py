"""The findings of Burns et al. (2023), each computed from stored results by a small pure function.

Every function takes plain data (:class:`GroupData`: the test-set probabilities of the weak
supervisor, the student and the ceiling for one task, model pair and method, per seed) and returns a
:class:`Finding`: the paper's claim, our measurement (an estimate with a 95% bootstrap CI over test
examples and its ``n``) and a verdict decided by one function, :func:`verdict`, from the CI alone.

Differences between methods are *paired*: both methods are scored on the same bootstrap resample of
test examples (:func:`superalign.metrics.bootstrap_ci` passes one index set to the statistic).
Pooling over tasks concatenates the tasks' test sets into one index space; a resample draws from all
of them and the statistic averages the per-task values on the examples drawn from each task.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal, Sequence

import numpy as np

from superalign.metrics import Interval, bootstrap_ci

Direction = Literal[">", "<"]

HOLDS, FAILS = "holds", "does not hold"


def verdict(interval: Interval | None, null: float, direction: Direction, n: int | None = None) -> str:
    """"holds" when the CI excludes ``null`` on the claimed side, "does not hold" when it excludes it on
    the other side, "inconclusive (n=...)" when it straddles ``null`` (or is undefined).

    ``direction`` ``">"``: the claim is that the quantity exceeds ``null``; ``"<"``: that it is below.
    """
    if direction not in (">", "<"):
        raise ValueError(f"direction must be '>' or '<', not {direction!r}")
    size = f"n={n}" if n is not None else "n=?"
    if interval is None or not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        return f"inconclusive ({size}, no CI)"
    above, below = interval.low > null, interval.high < null
    if (above and direction == ">") or (below and direction == "<"):
        return HOLDS
    if above or below:
        return FAILS
    return f"inconclusive ({size})"


def combine(verdicts: Sequence[str]) -> str:
    """One verdict over several cases (a claim about *every* task): holds only when every case holds,
    does not hold when any case does not, inconclusive otherwise."""
    if not verdicts:
        return "inconclusive (no case)"
    if any(v == FAILS for v in verdicts):
        return FAILS
    if all(v == HOLDS for v in verdicts):
        return HOLDS
    n_inc = sum(v.startswith("inconclusive") for v in verdicts)
    return f"inconclusive ({n_inc} of {len(verdicts)} cases)"


@dataclass
class Finding:
    """One row of the findings table."""

    key: str
    title: str
    claim: str
    measurement: str  # what was measured, in words (the estimate's meaning)
    estimate: Interval | None
    null: float
    direction: Direction
    n: int
    verdict: str
    cases: list[dict[str, Any]] = field(default_factory=list)  # sub-rows: {label, estimate, verdict, n}
    details: dict[str, Any] = field(default_factory=dict)  # figure data
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["estimate"] = None if self.estimate is None else self.estimate.as_dict()
        return d

    @classmethod
    def skipped(cls, key: str, title: str, claim: str, why: str) -> "Finding":
        return cls(key, title, claim, "not measured", None, 0.0, ">", 0, f"not run ({why})", note=why)


@dataclass
class GroupData:
    """Test-set outputs of one (task, weak, strong, method) group, per seed."""

    task: str
    weak: str
    strong: str
    method: str
    y: np.ndarray  # (n,) ground truth
    weak_probs: np.ndarray  # (S, n, K)
    student_probs: np.ndarray  # (S, n, K)
    ceiling_probs: np.ndarray  # (S, n, K)
    weak_params_m: float | None = None
    strong_params_m: float | None = None
    intermediate_probs: list[np.ndarray] = field(default_factory=list)  # each (S, n, K)
    curves: list[list[dict]] = field(default_factory=list)  # the student's curve per seed
    row: dict[str, Any] = field(default_factory=dict)  # the pipeline's row (seed-pooled)
    min_gap: float = 0.05
    supervisor_probs: np.ndarray | None = None  # (S, n, K) what labelled the student (ensemble, intermediate)

    @property
    def n(self) -> int:
        return int(len(self.y))

    def correct(self, which: str) -> np.ndarray:
        probs = {"weak": self.weak_probs, "student": self.student_probs, "ceiling": self.ceiling_probs}[which]
        return (probs.argmax(-1) == self.y[None, :]).astype(float)

    @property
    def ratio(self) -> float | None:
        if not self.weak_params_m or not self.strong_params_m:
            return None
        return self.strong_params_m / self.weak_params_m


# -- statistics on index sets ----------------------------------------------------------------------

def _acc(c: np.ndarray, idx: np.ndarray) -> float:
    return float(c[:, idx].mean())


def pgr_at(g: GroupData, idx: np.ndarray) -> float:
    """PGR of ``g`` on the test examples ``idx`` (seed-averaged accuracies); NaN without a gap."""
    w, s, c = _acc(g.correct("weak"), idx), _acc(g.correct("student"), idx), _acc(g.correct("ceiling"), idx)
    gap = c - w
    return (s - w) / gap if gap > 0 else float("nan")


def reliable_gap(g: GroupData, n_boot: int = 1000) -> tuple[bool, Interval]:
    """Whether the ceiling beats the weak model by at least ``min_gap`` with a CI above zero."""
    wc, cc = g.correct("weak"), g.correct("ceiling")
    gap = bootstrap_ci(lambda i: _acc(cc, i) - _acc(wc, i), g.n, n_boot=n_boot)
    return bool(gap.value >= g.min_gap and gap.low > 0), gap


class Pooled:
    """Several tasks' test sets as one index space (for statistics pooled over tasks)."""

    def __init__(self, sizes: Sequence[int]):
        self.sizes = [int(s) for s in sizes]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int)

    @property
    def n(self) -> int:
        return int(self.offsets[-1])

    def split(self, idx: np.ndarray) -> list[np.ndarray]:
        idx = np.asarray(idx)
        return [idx[(idx >= a) & (idx < b)] - a for a, b in zip(self.offsets[:-1], self.offsets[1:])]

    def mean(self, fns: Sequence[Callable[[np.ndarray], float]]) -> Callable[[np.ndarray], float]:
        """A statistic: the mean over tasks of ``fns[t]`` on the examples drawn from task ``t``."""

        def stat(idx: np.ndarray) -> float:
            vals = [fn(part) if len(part) else float("nan") for fn, part in zip(fns, self.split(idx))]
            return float(np.mean(vals)) if vals else float("nan")

        return stat


def pooled_ci(fns: Sequence[Callable[[np.ndarray], float]], sizes: Sequence[int], n_boot: int,
              seed: int = 0) -> Interval:
    pool = Pooled(sizes)
    return bootstrap_ci(pool.mean(fns), pool.n, n_boot=n_boot, seed=seed)


def _case(label: str, iv: Interval, null: float, direction: Direction, n: int, **extra: Any) -> dict[str, Any]:
    return {"label": label, "estimate": iv.as_dict(), "verdict": verdict(iv, null, direction, n), "n": n, **extra}


def _paired_pgr_diff(a: GroupData, b: GroupData) -> Callable[[np.ndarray], float]:
    return lambda i: pgr_at(a, i) - pgr_at(b, i)


# -- the findings ------------------------------------------------------------------------------------

def pgr_positive(groups: Sequence[GroupData], n_boot: int = 1000) -> Finding:
    """Strong students beat their weak supervisors (PGR > 0) on every task with a reliable gap."""
    claim = "Strong students trained on weak labels beat their weak supervisors: PGR > 0 on every task (naive)"
    cases, reliable = [], []
    for g in groups:
        ok, gap = reliable_gap(g, n_boot)
        iv = bootstrap_ci(lambda i, g=g: pgr_at(g, i), g.n, n_boot=n_boot)
        case = _case(f"{g.task} ({g.weak} -> {g.strong})", iv, 0.0, ">", g.n, gap=gap.as_dict(), reliable=ok,
                     weak_acc=_acc(g.correct("weak"), np.arange(g.n)),
                     w2s_acc=_acc(g.correct("student"), np.arange(g.n)),
                     ceiling_acc=_acc(g.correct("ceiling"), np.arange(g.n)), task=g.task)
        if not ok:
            case["verdict"] = f"excluded (gap {gap.fmt(pct=True)} pts is not reliable)"
        else:
            reliable.append(g)
        cases.append(case)
    if not reliable:
        return Finding("pgr_positive", "PGR > 0 on every task", claim, "PGR per task", None, 0.0, ">", 0,
                       "inconclusive (no task with a reliable gap)", cases, {"cases": cases})
    est = pooled_ci([lambda i, g=g: pgr_at(g, i) for g in reliable], [g.n for g in reliable], n_boot)
    v = combine([c["verdict"] for c in cases if c["reliable"]])
    n = sum(g.n for g in reliable)
    return Finding("pgr_positive", "PGR > 0 on every task", claim,
                   f"PGR per task; estimate: mean over the {len(reliable)} task(s) with a reliable gap",
                   est, 0.0, ">", n, v, cases, {"cases": cases},
                   note=f"{len(groups) - len(reliable)} task(s) excluded for an unreliable gap"
                   if len(reliable) < len(groups) else "")


def size_ratio(groups: Sequence[GroupData], n_boot: int = 1000) -> Finding:
    """PGR against log2(strong/weak size): the slope, pooled over tasks (pairs with a reliable gap)."""
    claim = "PGR grows with the strong/weak size ratio (slope of PGR on log2 size ratio > 0; naive)"
    points, by_task = [], {}
    for g in groups:
        ok, gap = reliable_gap(g, n_boot)
        iv = bootstrap_ci(lambda i, g=g: pgr_at(g, i), g.n, n_boot=n_boot)
        points.append({"task": g.task, "weak": g.weak, "strong": g.strong, "ratio": g.ratio, "pgr": iv.as_dict(),
                       "gap": gap.as_dict(), "reliable": ok})
        if ok and g.ratio:
            by_task.setdefault(g.task, []).append(g)
    usable = {t: gs for t, gs in by_task.items() if len({round(g.ratio, 6) for g in gs}) >= 2}
    cases = [{"label": f"{p['task']}: {p['weak']} -> {p['strong']} (x{p['ratio']:.1f})" if p["ratio"] else p["task"],
              "estimate": p["pgr"], "n": None,
              "verdict": "PGR" + ("" if p["reliable"] else " (gap not reliable: excluded)")} for p in points]
    if not usable:
        return Finding("size_ratio", "PGR vs size ratio", claim, "slope of PGR on log2(strong/weak params)", None,
                       0.0, ">", 0, "inconclusive (fewer than two pairs with a reliable gap on any task)", cases,
                       {"points": points})

    def slope_fn(gs: list[GroupData]) -> Callable[[np.ndarray], float]:
        x = np.log2([g.ratio for g in gs])

        def fn(i: np.ndarray) -> float:
            ys = np.array([pgr_at(g, i) for g in gs])
            if not np.all(np.isfinite(ys)):
                return float("nan")
            return float(np.polyfit(x, ys, 1)[0])

        return fn

    tasks = sorted(usable)
    est = pooled_ci([slope_fn(usable[t]) for t in tasks], [usable[t][0].n for t in tasks], n_boot)
    n = sum(usable[t][0].n for t in tasks)
    return Finding("size_ratio", "PGR vs size ratio", claim,
                   f"slope of PGR per doubling of the size ratio, {sum(len(usable[t]) for t in tasks)} pairs on "
                   f"{len(tasks)} task(s)", est, 0.0, ">", n, verdict(est, 0.0, ">", n), cases, {"points": points})


def method_gain(key: str, title: str, claim: str, pairs: Sequence[tuple[GroupData, GroupData]], n_boot: int = 1000,
                what: str = "PGR", null: float = 0.0) -> Finding:
    """Paired difference ``what(method) - what(baseline)`` pooled over tasks (pairs are (method, baseline)).

    ``what``: ``PGR`` or ``accuracy`` (of the student). Tasks whose baseline gap is not reliable are
    left out of a PGR difference.
    """
    cases, fns, sizes = [], [], []
    for m, b in pairs:
        if what == "PGR":
            ok_b, _ = reliable_gap(b, n_boot)
            ok_m, _ = reliable_gap(m, n_boot)
            fn = _paired_pgr_diff(m, b)
            if not (ok_b and ok_m):
                cases.append({"label": f"{m.task} ({m.weak} -> {m.strong})", "estimate": None, "n": m.n,
                              "verdict": "excluded (gap not reliable)"})
                continue
        else:
            mc, bc = m.correct("student"), b.correct("student")
            fn = (lambda mc, bc: lambda i: _acc(mc, i) - _acc(bc, i))(mc, bc)
        iv = bootstrap_ci(fn, m.n, n_boot=n_boot)
        cases.append(_case(f"{m.task} ({m.weak} -> {m.strong})", iv, null, ">", m.n,
                           method=pgr_or_acc(m, what), baseline=pgr_or_acc(b, what)))
        fns.append(fn)
        sizes.append(m.n)
    measurement = (f"{what} difference ({pairs[0][0].method} - {pairs[0][1].method}), paired, mean over "
                   f"{len(fns)} task(s)" if pairs else "no data")
    if not fns:
        return Finding(key, title, claim, measurement, None, null, ">", 0,
                       "inconclusive (no task with a reliable gap)", cases, {"cases": cases})
    est = pooled_ci(fns, sizes, n_boot)
    n = int(sum(sizes))
    return Finding(key, title, claim, measurement, est, null, ">", n, verdict(est, null, ">", n), cases,
                   {"cases": cases, "what": what})


def pgr_or_acc(g: GroupData, what: str) -> dict[str, Any]:
    idx = np.arange(g.n)
    if what == "PGR":
        return {"value": pgr_at(g, idx)}
    return {"value": _acc(g.correct("student"), idx)}


def gain_difference(key: str, title: str, claim: str, large: Sequence[tuple[GroupData, GroupData]],
                    small: Sequence[tuple[GroupData, GroupData]], n_boot: int = 1000) -> Finding:
    """(PGR gain of a method at the largest gap) − (its gain at smaller gaps), paired within tasks."""
    by_task: dict[str, dict[str, list]] = {}
    for tag, pairs in (("large", large), ("small", small)):
        for m, b in pairs:
            if reliable_gap(b, n_boot)[0] and reliable_gap(m, n_boot)[0]:
                by_task.setdefault(m.task, {"large": [], "small": []})[tag].append((m, b))
    tasks = [t for t, d in by_task.items() if d["large"] and d["small"]]
    cases = []
    for m, b in list(small):
        iv = bootstrap_ci(_paired_pgr_diff(m, b), m.n, n_boot=n_boot)
        ok = reliable_gap(b, n_boot)[0] and reliable_gap(m, n_boot)[0]
        cases.append({"label": f"gain at {m.task} ({m.weak} -> {m.strong})", "estimate": iv.as_dict(), "n": m.n,
                      "verdict": verdict(iv, 0.0, ">", m.n) if ok else "excluded (gap not reliable)"})
    if not tasks:
        return Finding(key, title, claim, "gain(largest gap) - gain(smaller gaps)", None, 0.0, ">", 0,
                       "inconclusive (no smaller-gap pair with a reliable gap)", cases, {"cases": cases})

    def fn_for(t: str) -> Callable[[np.ndarray], float]:
        d = by_task[t]

        def fn(i: np.ndarray) -> float:
            big = np.mean([pgr_at(m, i) - pgr_at(b, i) for m, b in d["large"]])
            sm = np.mean([pgr_at(m, i) - pgr_at(b, i) for m, b in d["small"]])
            return float(big - sm)

        return fn

    sizes = [by_task[t]["large"][0][0].n for t in tasks]
    est = pooled_ci([fn_for(t) for t in tasks], sizes, n_boot)
    n = int(sum(sizes))
    return Finding(key, title, claim, f"PGR gain at the largest gap minus the gain at smaller gaps, paired, "
                   f"{len(tasks)} task(s)", est, 0.0, ">", n, verdict(est, 0.0, ">", n), cases, {"cases": cases})


def below_threshold(key: str, title: str, claim: str, pgr: Interval, threshold: float, n: int,
                    measurement: str, details: dict[str, Any] | None = None) -> Finding:
    """A claim that a quantity is small: its CI must lie below ``threshold``."""
    return Finding(key, title, claim, measurement, pgr, threshold, "<", n, verdict(pgr, threshold, "<", n),
                   details=details or {})


def unpaired_difference(a: Interval, b: Interval) -> Interval:
    """a − b with a normal-approximation CI from two independent 95% CIs (for results stored without their
    per-example arrays; conservative when the two are positively correlated)."""
    se = math.hypot((a.high - a.low) / 3.92, (b.high - b.low) / 3.92)
    d = a.value - b.value
    return Interval(d, d - 1.96 * se, d + 1.96 * se)


def copied_mistakes(g: GroupData) -> Callable[[np.ndarray], float]:
    """Share of the test examples the weak supervisor gets wrong on which the student predicts the same
    (wrong) class, averaged over seeds."""
    wp, sp = g.weak_probs.argmax(-1), g.student_probs.argmax(-1)
    wrong = wp != g.y[None, :]
    same = (sp == wp) & wrong

    def fn(i: np.ndarray) -> float:
        denom = wrong[:, i].sum()
        return float(same[:, i].sum() / denom) if denom else float("nan")

    return fn


def agreement_finding(pairs: Sequence[tuple[GroupData, GroupData]], n_boot: int = 1000) -> Finding:
    """(copied mistakes, baseline) − (copied mistakes, method) > 0: the method imitates the supervisor's errors less.

    ``pairs``: (method, baseline) per task."""
    claim = ("With the auxiliary confidence loss the student copies its supervisor's mistakes less: on test "
             "examples the weak model gets wrong, it agrees with the weak label less often than naive training")
    cases, fns, sizes = [], [], []
    for m, b in pairs:
        fm, fb = copied_mistakes(m), copied_mistakes(b)
        fn = (lambda fm, fb: lambda i: fb(i) - fm(i))(fm, fb)
        iv = bootstrap_ci(fn, m.n, n_boot=n_boot)
        idx = np.arange(m.n)
        cases.append(_case(f"{m.task}: naive {100 * fb(idx):.1f}% vs {m.method} {100 * fm(idx):.1f}%", iv, 0.0, ">",
                           m.n, baseline=fb(idx), method=fm(idx), task=m.task))
        fns.append(fn)
        sizes.append(m.n)
    if not fns:
        return Finding.skipped("agreement", "copying the supervisor's mistakes", claim, "no data")
    est = pooled_ci(fns, sizes, n_boot)
    n = int(sum(sizes))
    return Finding("agreement", "copying the supervisor's mistakes", claim,
                   "drop in the share of weak mistakes the student copies (naive - aux-conf), paired, mean over tasks",
                   est, 0.0, ">", n, verdict(est, 0.0, ">", n), cases, {"cases": cases})


def misfit_terms(g: GroupData) -> tuple[np.ndarray, np.ndarray]:
    """Per test example, seed-averaged: misfit = ||p_student − p_sup||², gain = ||p_sup − y||² − ||p_student − y||²,
    where p_sup is what labelled the student (the weak model, or the ensemble / last intermediate)."""
    onehot = np.eye(g.weak_probs.shape[-1])[g.y][None, :, :]
    sup = g.supervisor_probs if g.supervisor_probs is not None else g.weak_probs
    misfit = ((g.student_probs - sup) ** 2).sum(-1).mean(0)
    gain = (((sup - onehot) ** 2).sum(-1) - ((g.student_probs - onehot) ** 2).sum(-1)).mean(0)
    return misfit, gain


def misfit_finding(groups: Sequence[GroupData], n_boot: int = 1000) -> Finding:
    """Charikar et al. (2024): gain ≥ misfit (squared loss). Estimate: mean over rows of gain − misfit."""
    claim = ("Charikar et al. (2024): the W2S gain (weak squared error − student squared error vs ground truth) "
             "is at least the student-supervisor misfit: gain − misfit >= 0")
    cases, fns, sizes, points = [], [], [], []
    for g in groups:
        misfit, gain = misfit_terms(g)
        diff = gain - misfit
        fn = (lambda d: lambda i: float(d[i].mean()))(diff)
        iv = bootstrap_ci(fn, g.n, n_boot=n_boot)
        cases.append(_case(f"{g.task} {g.method} ({g.weak} -> {g.strong})", iv, 0.0, ">", g.n,
                           misfit=float(misfit.mean()), gain=float(gain.mean())))
        points.append({"task": g.task, "method": g.method, "misfit": float(misfit.mean()), "gain": float(gain.mean()),
                       "pgr": pgr_at(g, np.arange(g.n))})
        fns.append(fn)
        sizes.append(g.n)
    if not fns:
        return Finding.skipped("misfit", "misfit bound", claim, "no data")
    est = pooled_ci(fns, sizes, n_boot)
    n = int(sum(sizes))
    holds = sum(c["verdict"] != FAILS for c in cases)
    return Finding("misfit", "gain >= misfit (Charikar et al.)", claim,
                   f"gain - misfit (squared error on P(y)), mean over {len(fns)} rows; the bound is not violated "
                   f"in {holds} of {len(cases)} rows", est, 0.0, ">", n, verdict(est, 0.0, ">", n), cases,
                   {"points": points})


def best_vs_final(curves_by_method: dict[str, list[list[dict]]]) -> dict[str, Any]:
    """Best and final ground-truth test accuracy of each method's training curves (mean over runs).

    Descriptive only: the best point is chosen on the test set itself, so it is optimistic; the
    findings use early stopping on validation (weak or oracle) for a fair comparison."""
    out = {}
    for method, runs in curves_by_method.items():
        best, final = [], []
        for curve in runs:
            acc = [p["test_acc"] for p in curve if p.get("test_acc") is not None]
            if acc:
                best.append(max(acc))
                final.append(acc[-1])
        if best:
            out[method] = {"best": float(np.mean(best)), "final": float(np.mean(final)), "runs": len(best)}
    return out
