"""Weak-to-strong methods from after Burns et al. (2023), as pure functions the pipeline calls.

- :func:`ensemble_labels`: several weak supervisors combined — the student's soft labels are the
  mean of every supervisor's P(y) (cf. the ensembles of weak supervisors in Sang et al. 2024,
  "Improving weak-to-strong generalization with scalable oversight and ensemble learning").
- :func:`knn_inconsistency` / :func:`filter_labels`: drop the weak labels that disagree most
  with their neighbours in the strong model's feature space (the kNN/"topo" label filtering of
  EleutherAI's ``w2s`` library, github.com/EleutherAI/w2s), or the least confident ones.
- :func:`misfit_gain`: Charikar, Pabbaraju & Shiragur (2024), "Quantifying the gain in weak-to-strong
  generalization": for a student fit to weak labels by least squares over a convex function class,
  ``err(weak) - err(student) >= misfit(student, weak)`` (squared distances). Reported beside PGR
  as a diagnostic of how much the student departed from its supervisor.

See docs/METHODS.md for what each does and the source it follows.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from superalign import metrics


def ensemble_labels(probs: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of several supervisors' class probabilities (each (n, K)), renormalised."""
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in probs])
    mean = stacked.mean(0)
    return (mean / mean.sum(1, keepdims=True)).astype(np.float32)


def knn_inconsistency(features: np.ndarray, probs: np.ndarray, k: int) -> np.ndarray:
    """Per example, the total-variation distance between its weak label and the mean weak label of
    its ``k`` nearest neighbours (cosine similarity of standardised features; itself excluded)."""
    x = np.asarray(features, dtype=np.float64)
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    k = max(1, min(k, n - 1))
    p = np.asarray(probs, dtype=np.float64)
    out = np.zeros(n)
    for start in range(0, n, 1024):  # (chunk, n) similarities at a time
        sim = x[start:start + 1024] @ x.T
        rows = np.arange(sim.shape[0])
        sim[rows, start + rows] = -np.inf
        nn_idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        out[start:start + len(rows)] = 0.5 * np.abs(p[start:start + len(rows)] - p[nn_idx].mean(1)).sum(1)
    return out


def filter_labels(name: str, probs: np.ndarray, drop_frac: float, *, features: np.ndarray | None = None,
                  k: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """(positions kept, sorted; the score per example, higher = dropped first).

    Drops ``round(drop_frac * n)`` examples: by :func:`knn_inconsistency` (``knn_consistency``) or
    by low confidence (``confidence``: score = 1 - max P(y)). Ties drop the earlier position first.
    """
    n = len(probs)
    if name == "knn_consistency":
        if features is None:
            raise ValueError("knn_consistency needs the strong model's features")
        score = knn_inconsistency(features, probs, k)
    elif name == "confidence":
        score = 1.0 - np.asarray(probs, dtype=np.float64).max(1)
    else:
        raise ValueError(f"unknown label filter '{name}'")
    n_drop = int(round(drop_frac * n))
    n_drop = min(n_drop, n - 2)  # keep something to train on
    order = np.argsort(-score, kind="stable")
    keep = np.sort(order[n_drop:])
    return keep, score


def misfit_gain(student: Sequence[np.ndarray], supervisor: Sequence[np.ndarray], labels: np.ndarray, *,
                n_boot: int = 1000, tolerance: float = 0.01, seed: int = 0) -> dict[str, Any]:
    """Charikar et al. (2024)'s misfit beside the W2S gain, on test, with bootstrap CIs.

    ``student``/``supervisor``: per seed, (n, K) class probabilities on the same test examples.
    Per example, with one-hot truth ``e_y`` and squared distances summed over classes:
    ``misfit = |p_student - p_supervisor|^2`` and
    ``gain = |p_supervisor - e_y|^2 - |p_student - e_y|^2``; both are averaged over seeds, then
    over examples (CI: percentile bootstrap over test examples, paired). ``misfit_bound_holds`` is
    ``gain >= misfit - tolerance`` on the point estimates.
    """
    onehot = np.eye(np.asarray(student[0]).shape[1])[labels]
    s = np.stack([np.asarray(p, dtype=np.float64) for p in student])
    w = np.stack([np.asarray(p, dtype=np.float64) for p in supervisor])
    misfit_e = ((s - w) ** 2).sum(-1).mean(0)
    sup_err = ((w - onehot) ** 2).sum(-1).mean(0)
    stu_err = ((s - onehot) ** 2).sum(-1).mean(0)
    gain_e = sup_err - stu_err
    n = len(labels)
    misfit = metrics.bootstrap_ci(lambda i: misfit_e[i].mean(), n, n_boot=n_boot, seed=seed)
    gain = metrics.bootstrap_ci(lambda i: gain_e[i].mean(), n, n_boot=n_boot, seed=seed)
    slack = metrics.bootstrap_ci(lambda i: gain_e[i].mean() - misfit_e[i].mean(), n, n_boot=n_boot, seed=seed)
    return {"misfit": misfit.as_dict(), "gain": gain.as_dict(), "gain_minus_misfit": slack.as_dict(),
            "supervisor_sq_err": float(sup_err.mean()), "student_sq_err": float(stu_err.mean()),
            "misfit_bound_holds": bool(gain.value >= misfit.value - tolerance)}


def mean_curve(curves: Sequence[list[dict]]) -> list[dict]:
    """Seed-averaged training curve: per step, the mean of each accuracy over the seeds that reached it."""
    by_step: dict[int, list[dict]] = {}
    for curve in curves:
        for point in curve or []:
            by_step.setdefault(int(point["step"]), []).append(point)
    out = []
    for step in sorted(by_step):
        pts = by_step[step]
        row: dict[str, Any] = {"step": step, "n_seeds": len(pts)}
        for key in ("test_acc", "val_acc", "val_acc_weak"):
            vals = [p[key] for p in pts if key in p]
            if vals:
                row[key] = float(np.mean(vals))
        out.append(row)
    return out
