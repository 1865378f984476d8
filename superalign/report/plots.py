"""Matplotlib figures for reports, returned as PNG bytes (no display needed)."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def to_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _err(d: dict, scale: float = 100.0) -> tuple[float, list[float]]:
    v = d["value"] * scale
    return v, [max(0.0, v - d["low"] * scale), max(0.0, d["high"] * scale - v)]


def accuracy_bars(rows: list[dict[str, Any]]) -> bytes:
    """Weak, W2S and ceiling test accuracy per method, with 95% CIs; prompting baselines beside them."""
    w2s = [r for r in rows if r["kind"] == "w2s"]
    prompt = [r for r in rows if r["kind"] == "prompt"]
    fig, ax = plt.subplots(figsize=(max(5.5, 1.6 * (len(w2s) + len(prompt)) + 2), 3.8))
    x = np.arange(len(w2s))
    for j, (key, colour, label) in enumerate([("weak", "#9aa5b1", "weak supervisor"), ("w2s", "#2f7ed8", "weak-to-strong"),
                                              ("ceiling", "#1b4f72", "strong ceiling")]):
        vals = [_err(r[key]) for r in w2s]
        ax.bar(x + (j - 1) * 0.27, [v for v, _ in vals], 0.27, yerr=np.array([e for _, e in vals]).T if vals else None,
               color=colour, label=label, capsize=3)
    if prompt:
        px = len(w2s) + np.arange(len(prompt)) * 0.6
        vals = [_err(r["accuracy"]) for r in prompt]
        ax.bar(px, [v for v, _ in vals], 0.4, yerr=np.array([e for _, e in vals]).T, color="#e8a33d", label="prompting",
               capsize=3)
        x = np.concatenate([x, px])
    ax.set_xticks(x)
    ax.set_xticklabels([r["method"] for r in w2s] + [r["method"] for r in prompt], rotation=20, ha="right")
    ax.set_ylabel("test accuracy (%)")
    lows = [r[k]["low"] for r in w2s for k in ("weak", "w2s", "ceiling")] + [r["accuracy"]["low"] for r in prompt]
    ax.set_ylim(max(0, 100 * min(lows) - 8) if lows else 0, 100)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return to_png(fig)


def pgr_plot(rows: list[dict[str, Any]]) -> bytes:
    """PGR per method with its 95% CI; 0 = no better than the supervisor, 1 = matches the ceiling."""
    w2s = [r for r in rows if r["kind"] == "w2s"]
    fig, ax = plt.subplots(figsize=(5.5, 0.55 * len(w2s) + 1.4))
    for i, r in enumerate(w2s):
        p = r["pgr"]
        if not np.isfinite(p["value"]):
            ax.text(0.5, i, "n/a (ceiling does not beat weak)", va="center", fontsize=8)
            continue
        colour = "#2f7ed8" if r["pgr_reliable"] else "#c0392b"
        ax.errorbar(p["value"], i, xerr=[[p["value"] - p["low"]], [p["high"] - p["value"]]], fmt="o", color=colour,
                    capsize=4)
        for s in r.get("pgr_per_seed", []):
            if np.isfinite(s):
                ax.plot(s, i, "|", color=colour, alpha=0.5, markersize=10)
    ax.axvline(0, color="grey", lw=0.8)
    ax.axvline(1, color="grey", lw=0.8, ls="--")
    ax.set_yticks(range(len(w2s)))
    ax.set_yticklabels([r["method"] + ("" if r["pgr_reliable"] else " (unreliable)") for r in w2s])
    ax.set_xlabel("performance gap recovered (95% CI; ticks: single seeds)")
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    return to_png(fig)


def training_curves(curves: dict[str, list[dict]], seed_prefix: str = "seed") -> bytes:
    """Training loss and validation accuracy per stage (first seed)."""
    first = sorted({k.split("/")[0] for k in curves})[:1]
    items = [(k.split("/", 1)[1], v) for k, v in curves.items() if k.split("/")[0] in first and v]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for name, points in items:
        steps = [p["step"] for p in points]
        axes[0].plot(steps, [p["loss"] for p in points], marker=".", label=name)
        if any("val_acc" in p for p in points):
            axes[1].plot(steps, [100 * p.get("val_acc", np.nan) for p in points], marker=".", label=f"{name} (ground truth)")
        if any("val_acc_weak" in p for p in points):
            axes[1].plot(steps, [100 * p.get("val_acc_weak", np.nan) for p in points], ls=":", marker=".",
                         label=f"{name} (vs weak labels)")
    axes[0].set_title("training loss")
    axes[1].set_title("validation accuracy (%)")
    for ax in axes:
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if axes[1].lines:
        axes[1].legend(fontsize=6)
    fig.suptitle(f"training curves ({first[0] if first else ''})", fontsize=9)
    return to_png(fig)
