"""Figures of the oversight measurements, returned as PNG bytes (see :mod:`superalign.report.plots`)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from superalign.errors import DataError
from superalign.metrics import fmt_interval
from superalign.report.plots import plt, to_png


def easy_to_hard_plot(result: dict[str, Any]) -> bytes:
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    conds = ["easy", "all", "hard"]
    for j, split in enumerate(("easy", "hard")):
        vals = [result["accuracy"][c][split] for c in conds]
        x = np.arange(len(conds)) + (j - 0.5) * 0.35
        ax.bar(x, [100 * v["value"] for v in vals], 0.35, label=f"{split} test",
               yerr=[[100 * (v["value"] - v["low"]) for v in vals], [100 * (v["high"] - v["value"]) for v in vals]],
               capsize=3, color=["#9aa5b1", "#1b4f72"][j])
    ax.axhline(100 * result["baseline_hard"], color="#c0392b", ls=":", lw=1, label="majority class (hard)")
    ax.set_xticks(range(len(conds)))
    ax.set_xticklabels([f"trained on {c}" for c in conds])
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return to_png(fig)


def _bar(ax, x: float, d: dict, colour: str, label: str | None = None, width: float = 0.6) -> None:
    v = d["value"]
    lo, hi = d["low"], d["high"]
    err = None if not (np.isfinite(lo) and np.isfinite(hi)) else [[max(0.0, v - lo)], [max(0.0, hi - v)]]
    ax.bar(x, v, width, yerr=err, color=colour, capsize=4, label=label)


def critique_gap_plot(result: dict) -> bytes:
    """PNG: balanced accuracy of discriminator and critique modes (95% CIs), and detection vs false alarm."""
    modes = list(result["critique"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ax = axes[0]
    _bar(ax, 0, result["discriminator"].get("balanced_accuracy", result["discriminator"]["accuracy"]), "#1b4f72")
    for k, mode in enumerate(modes):
        _bar(ax, k + 1, result["critique"][mode]["balanced_accuracy"], "#e8a33d" if mode == "generative" else "#2f7ed8")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(modes) + 1))
    ax.set_xticklabels(["discriminator"] + [f"critique\n({m})" for m in modes])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("balanced accuracy (95% CI)")
    gaps = ", ".join(f"{m}: {fmt_interval(result['gap'][m])}" for m in modes)
    ax.set_title(f"gap {gaps}", fontsize=8)
    ax = axes[1]
    who = [("discriminator", result["discriminator"])] + [(f"critique ({m})", result["critique"][m]) for m in modes]
    for k, (name, d) in enumerate(who):
        _bar(ax, k - 0.18, d["detection"], "#27ae60", "detection (flawed)" if k == 0 else None, 0.36)
        _bar(ax, k + 0.18, d["false_alarm"], "#c0392b", "false alarm (clean)" if k == 0 else None, 0.36)
    ax.set_xticks(range(len(who)))
    ax.set_xticklabels([n.replace(" (", "\n(") for n, _ in who])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rate (95% CI)")
    ax.legend(fontsize=7)
    for a in axes:
        a.grid(axis="y", alpha=0.3)
    fig.suptitle(f"discriminator-critique gap on {result['n_test_pairs']} held-out pairs "
                 f"({result['config']['items']['family']})", fontsize=9)
    return to_png(fig)


def perturbation_trial_plot(result: dict) -> bytes:
    """PNG: the judge's detection and false-positive rates per arm (95% CIs) and the assistance effects."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ax = axes[0]
    for k, arm in enumerate(("alone", "assisted")):
        _bar(ax, k - 0.18, result["arms"][arm]["detection"], "#27ae60", "detection (perturbed)" if k == 0 else None, 0.36)
        _bar(ax, k + 0.18, result["arms"][arm]["false_positive"], "#c0392b", "false positive (clean)" if k == 0 else None,
             0.36)
    t = result["randomisation"]["table"]
    ax.set_xticks([0, 1])
    ax.set_xticklabels([f"judge alone\n(n={t['alone']['perturbed']}+{t['alone']['clean']})",
                        f"judge + critique\n(n={t['assisted']['perturbed']}+{t['assisted']['clean']})"])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rate (95% CI)")
    ax.legend(fontsize=7)
    ax = axes[1]
    names = ["detection", "false_positive", "balanced_accuracy", "auroc"]
    for k, name in enumerate(names):
        d = result["effect"][name]
        if np.isfinite(d["value"]):
            ax.errorbar(d["value"], k, xerr=[[max(0.0, d["value"] - d["low"])], [max(0.0, d["high"] - d["value"])]],
                        fmt="o", color="#2f7ed8", capsize=4)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels([n.replace("_", " ") for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("assistance effect: assisted - alone (95% CI)")
    for a in axes:
        a.grid(alpha=0.3)
    fig.subplots_adjust(wspace=0.45)
    fig.suptitle(f"targeted-perturbation RCT, {result['n_units']} units ({result['config']['items']['family']})",
                 fontsize=9)
    return to_png(fig)


def overopt_plot(result: dict[str, Any]) -> bytes:
    """PNG: proxy and gold gain against KL, best-of-n (left) and RL (right; closed form and trajectory).

    The proxy gain is on the left axis (proxy std units), the gold gain on the right axis
    (tanh-squashed centipawns) with its 95% CI band; the gold peak of each curve is starred, and the
    KL range where the gold falls after the peak is shaded when the curve is flagged.
    """
    try:
        curves, marks = result["curves"], result["overoptimization"]
    except (KeyError, TypeError):
        raise DataError("result", "lacks 'curves' or 'overoptimization'",
                        "pass the dict returned by run_overopt or overopt_curves") from None
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2))
    panels = [("best_of_n", "best-of-n (KL = log n - (n-1)/n)" if result.get("config", {}).get("bon_kl", "analytic")
               == "analytic" else "best-of-n (exact KL)"), ("rl", "RL with KL penalty")]
    for ax, (name, title) in zip(axes, panels):
        rows = curves[name]
        kl = [r["kl"] for r in rows]
        twin = ax.twinx()
        ax.plot(kl, [r["proxy"] for r in rows], "o-", color="#2f7ed8", ms=3, label="proxy (closed form)")
        twin.plot(kl, [r["gold"] for r in rows], "s-", color="#d9534f", ms=3, label="gold (closed form)")
        twin.fill_between(kl, [r["gold_low"] for r in rows], [r["gold_high"] for r in rows], color="#d9534f", alpha=0.15)
        if name == "rl" and curves.get("rl_trajectory"):
            tr = curves["rl_trajectory"]
            tkl = [r["kl"] for r in tr]
            ax.plot(tkl, [r["proxy"] for r in tr], "-", color="#2f7ed8", alpha=0.5, lw=1, label="proxy (policy gradient)")
            twin.plot(tkl, [r["gold"] for r in tr], "-", color="#d9534f", alpha=0.5, lw=1, label="gold (policy gradient)")
        m = marks[name]
        twin.plot([m["peak_kl"]], [m["peak_gold"]], "*", color="black", ms=13, zorder=5,
                  label=f"gold peak (KL {m['peak_kl']:.2f})")
        if name == "rl" and "rl_trajectory" in marks and curves.get("rl_trajectory"):
            mt = marks["rl_trajectory"]
            twin.plot([mt["peak_kl"]], [mt["peak_gold"]], "*", mfc="none", mec="black", ms=11, zorder=5,
                      label=f"gold peak, policy gradient (KL {mt['peak_kl']:.2f})")
        if m["overoptimized"] and m.get("range_kl"):
            ax.axvspan(*m["range_kl"], color="#f0ad4e", alpha=0.15, label="over-optimised")
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_xlabel("KL(π ‖ ref) (nats)")
        ax.set_ylabel("proxy gain over ref", color="#2f7ed8")
        twin.set_ylabel("gold gain over ref", color="#d9534f")
        flag = "over-optimised" if m["overoptimized"] else "no over-optimisation"
        ax.set_title(f"{title}: {flag}", fontsize=10)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = twin.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
        ax.grid(alpha=0.3)
    acc = result.get("proxy", {}).get("test_accuracy")
    if acc is not None:
        fig.suptitle(f"reward over-optimisation on chess: proxy held-out pair accuracy {acc:.2f}", fontsize=11)
    fig.tight_layout()
    return to_png(fig)


def score_histogram(scores: Sequence[float], baseline: Sequence[float]) -> bytes:
    """PNG: histogram of explanation scores vs the shuffled-explanation baseline."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = np.linspace(-1, 1, 21)
    ax.hist(baseline, bins=bins, alpha=0.55, color="#9aa5b1", label=f"shuffled explanations (mean {np.mean(baseline):.2f})")
    ax.hist(scores, bins=bins, alpha=0.75, color="#2f7ed8", label=f"own explanation (mean {np.mean(scores):.2f})")
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("score: correlation of simulated with true activation")
    ax.set_ylabel("units")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return to_png(fig)
