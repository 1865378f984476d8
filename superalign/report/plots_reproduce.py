"""Figures of the reproduce study (one per finding), from the ``details`` of each finding; PNG bytes."""

from __future__ import annotations

from typing import Any

import numpy as np

from superalign.report.plots import plt, to_png


def _ok(d: dict | None) -> bool:
    return bool(d) and d.get("value") is not None and np.isfinite(d["value"])


def interval_plot(cases: list[dict[str, Any]], xlabel: str, null: float | None = 0.0, title: str = "") -> bytes:
    """One point with its 95% CI per case (sub-row of a finding)."""
    cases = [c for c in cases if _ok(c.get("estimate"))]
    fig, ax = plt.subplots(figsize=(6.5, 0.5 * max(1, len(cases)) + 1.3))
    for i, c in enumerate(cases):
        e = c["estimate"]
        lo = e["value"] - e["low"] if np.isfinite(e["low"]) else 0
        hi = e["high"] - e["value"] if np.isfinite(e["high"]) else 0
        colour = "#2f7ed8" if c.get("verdict") == "holds" else (
            "#c0392b" if c.get("verdict") == "does not hold" else "#7f8c8d")
        ax.errorbar(e["value"], i, xerr=[[max(lo, 0)], [max(hi, 0)]], fmt="o", color=colour, capsize=4)
    if null is not None:
        ax.axvline(null, color="grey", lw=0.8)
    ax.set_yticks(range(len(cases)))
    ax.set_yticklabels([c["label"] for c in cases], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    return to_png(fig)


def size_ratio_plot(points: list[dict[str, Any]]) -> bytes:
    """PGR against the strong/weak size ratio (log axis), one series per task; hollow = unreliable gap."""
    fig, ax = plt.subplots(figsize=(6, 4))
    tasks = sorted({p["task"] for p in points})
    cmap = plt.get_cmap("tab10")
    for j, t in enumerate(tasks):
        pts = sorted([p for p in points if p["task"] == t and p.get("ratio") and _ok(p["pgr"])], key=lambda p: p["ratio"])
        for p in pts:
            e = p["pgr"]
            ax.errorbar(p["ratio"], e["value"], yerr=[[max(0, e["value"] - e["low"])], [max(0, e["high"] - e["value"])]],
                        fmt="o", color=cmap(j), mfc=cmap(j) if p["reliable"] else "white", capsize=4)
            ax.annotate(f"{p['weak']}->{p['strong']}", (p["ratio"], e["value"]), fontsize=7, xytext=(4, 4),
                        textcoords="offset points")
        ax.plot([p["ratio"] for p in pts], [p["pgr"]["value"] for p in pts], color=cmap(j), alpha=0.5, label=t)
    ax.set_xscale("log", base=2)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("strong / weak parameters")
    ax.set_ylabel("PGR (95% CI; hollow: gap not reliable)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return to_png(fig)


def curves_plot(per_task: dict[str, dict[str, list[list[dict]]]]) -> bytes:
    """Ground-truth test accuracy over training steps, naive vs aux-conf, one panel per task (mean over seeds)."""
    tasks = sorted(per_task)
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(4 * max(1, len(tasks)), 3.4), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        for name, colour in (("naive", "#2f7ed8"), ("aux", "#e67e22")):
            runs = [r for r in per_task[t].get(name, []) if r and any(p.get("test_acc") is not None for p in r)]
            if not runs:
                continue
            length = min(len(r) for r in runs)
            steps = [p["step"] for p in runs[0][:length]]
            acc = np.mean([[100 * (p.get("test_acc") or np.nan) for p in r[:length]] for r in runs], axis=0)
            ax.plot(steps, acc, marker=".", color=colour, label="naive" if name == "naive" else "aux-conf")
            best = int(np.nanargmax(acc))
            ax.plot(steps[best], acc[best], "*", color=colour, markersize=11)
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy % (ground truth; * best)")
    axes[0][0].legend(fontsize=8)
    return to_png(fig)


def misfit_plot(points: list[dict[str, Any]]) -> bytes:
    """W2S gain against misfit per row; the bound gain >= misfit is the region above the diagonal."""
    fig, ax = plt.subplots(figsize=(5, 4))
    xs = [p["misfit"] for p in points]
    ys = [p["gain"] for p in points]
    ax.scatter(xs, ys, s=18, color="#2f7ed8")
    for p in points:
        ax.annotate(f"{p['task'][:8]}/{p['method']}", (p["misfit"], p["gain"]), fontsize=6, xytext=(3, 2),
                    textcoords="offset points")
    hi = max([0.01, *xs, *ys])
    lo = min([0.0, *ys])
    ax.plot([0, hi], [0, hi], color="grey", ls="--", lw=0.8, label="gain = misfit")
    ax.set_xlim(0, hi * 1.05)
    ax.set_ylim(lo - 0.01, hi * 1.05)
    ax.set_xlabel("misfit ||p_student - p_weak||^2")
    ax.set_ylabel("gain (weak sq. error - student sq. error)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return to_png(fig)
