"""The RLAIF report page and its plain-text summary."""

from __future__ import annotations

from typing import Any

import numpy as np
import yaml

from superalign.metrics import fmt_interval
from superalign.report.html import Section, Table, register_report
from superalign.report.plots import plt, to_png
from superalign.report.tables import format_rows


def _f(x: Any, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def win_rate_rows(ev: dict) -> list[list[str]]:
    rows = []
    for key, judges in ev["win_rates"].items():
        x, y = key.split("|")
        rows.append([f"{x} vs {y}", fmt_interval(judges["labeller"], pct=True), fmt_interval(judges["pm"], pct=True)])
    return rows


def warning_lines(ev: dict) -> list[str]:
    """Signs of reward hacking in the evaluation: judges that disagree, diversity that collapsed."""
    out = []
    beaten: dict[str, list[str]] = {}
    for key in ev.get("judge_disagreements", []):
        x, y = key.split("|")
        beaten.setdefault(x, []).append(y)
    for x, ys in beaten.items():
        out.append(f"warning: the PM prefers {x} to {', '.join(ys)} and the labeller does not share it: a sign that "
                   f"{x} exploits the preference model (reward hacking); read its examples")
    div = ev.get("distinct_2", {})
    for name, value in div.items():
        if name != "initial" and "initial" in div and value < 0.6 * div["initial"]:
            out.append(f"warning: {name}'s responses are far less diverse than the initial policy's (distinct-2 "
                       f"{value:.2f} vs {div['initial']:.2f}): it has collapsed onto a few phrasings")
    return out


def rlaif_text(s: dict[str, Any]) -> str:
    """What `superalign rlaif run` prints."""
    out = [f"RLAIF: policy {s['policy']}, feedback {s['feedback_model']}, PM {s['pm_model']}, "
           f"preferences from {s['preference_source']}"]
    pref = s["preferences"]
    if pref.get("kind") == "ai":
        line = (f"labeller: {pref['n']} pairs, position bias {_f(pref['position_bias'])} (P(A) - 0.5), "
                f"order consistency {_f(pref['order_consistency'])}")
        if "prefers_revision" in pref:
            line += f", prefers the SL-CAI revision on {100 * pref['prefers_revision']:.0f}% of pairs"
        out.append(line)
    if "labeller_vs_labelled_pairs" in s:
        a = s["labeller_vs_labelled_pairs"]
        out.append(f"labeller vs {a['n']} hand-labelled pairs: agreement {100 * a['agreement']:.1f}% "
                   f"(chance 50%), mean P(chosen) {a['p_chosen_mean']:.3f}")
    if "labeller_vs_preference_data" in s:
        a = s["labeller_vs_preference_data"]
        out.append(f"labeller vs {a['n']} labelled pairs of the preference data ({s['preference_source']}): "
                   f"agreement {100 * a['agreement']:.1f}% (chance 50%), position bias {_f(a['position_bias'])}")
    pm = s["pm"]
    out.append(f"preference model: test pairwise accuracy {_f(pm['test']['accuracy'])} on {pm['test']['n']} pairs "
               f"(train {_f(pm['train']['accuracy'])}), ECE {_f(pm['test']['ece'])}")
    if pm.get("data_efficiency"):
        rows = {}
        for r in pm["data_efficiency"]:
            rows.setdefault((r["n"], r["pmp"]), []).append(r["accuracy"])
        sizes = sorted({n for n, _ in rows})
        out.append("PM accuracy by fine-tuning pairs (mean over seeds): " + "; ".join(
            f"n={n}: {np.nanmean(rows[(n, False)]):.3f} -> {np.nanmean(rows.get((n, True), [np.nan])):.3f} with PMP"
            for n in sizes))
    bon = s["best_of_n"]["curve"]
    out.append("best-of-n PM reward: " + ", ".join(f"n={r['n']} {r['proxy']:.3f} (KL {r['kl']:.2f})" for r in bon))
    hist = s["rl"]["history"]
    if hist:
        first, last = hist[0], hist[-1]
        out.append(f"RL: {len(hist)} logged steps; reward {first['reward']:.3f} -> {last['reward']:.3f}, "
                   f"KL {last['kl']:.3f}, length {first['length']:.1f} -> {last['length']:.1f}, "
                   f"EOS rate {first['eos_rate']:.2f} -> {last['eos_rate']:.2f}")
    ev = s["eval"]
    out.append("")
    out.append(format_rows(["win rate % [95% CI]", "judged by labeller", "judged by PM"], win_rate_rows(ev)))
    out.append("Elo (labeller): " + ", ".join(f"{k} {v:.0f}" for k, v in ev["elo"]["labeller"].items())
               + "; Elo (PM): " + ", ".join(f"{k} {v:.0f}" for k, v in ev["elo"]["pm"].items()))
    if ev.get("distinct_2"):
        out.append("response diversity (distinct-2): " + ", ".join(f"{k} {v:.2f}" for k, v in ev["distinct_2"].items()))
    out += warning_lines(ev)
    out.append(f"{s.get('stages', '')}; {s.get('seconds', '?')} s")
    return "\n".join(out)


def _rl_plot(hist: list[dict]) -> bytes:
    fig, axes = plt.subplots(1, 4, figsize=(13, 2.8))
    steps = [h["step"] for h in hist]
    for ax, key, title in zip(axes, ["reward", "kl", "length", "eos_rate"],
                              ["PM reward", "KL to reference", "mean completion length", "EOS rate"]):
        values = np.array([h.get(key) if h.get(key) is not None else np.nan for h in hist], dtype=float)
        ax.plot(steps, values, marker=".", alpha=0.5)
        if len(values) >= 4:  # a running mean over 4 steps: each step sees different prompts
            smooth = np.convolve(np.nan_to_num(values), np.ones(4) / 4, mode="valid")
            ax.plot(steps[3:], smooth, color="black", lw=1.5, label="mean of 4 steps")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return to_png(fig)


def _bon_plot(curve: list[dict]) -> bytes:
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot([r["kl"] for r in curve], [r["proxy"] for r in curve], marker="o", label="PM (proxy) reward")
    if all("gold" in r for r in curve):
        ax.plot([r["kl"] for r in curve], [r["gold"] for r in curve], marker="s", label="gold reward")
    for r in curve:
        ax.annotate(f"n={r['n']}", (r["kl"], r["proxy"]), fontsize=7, textcoords="offset points", xytext=(3, 3))
    ax.set_xlabel("KL(best-of-n || policy), nats")
    ax.set_ylabel("reward")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return to_png(fig)


def _efficiency_plot(rows: list[dict]) -> bytes:
    fig, ax = plt.subplots(figsize=(4.5, 3))
    for pmp, colour in ((False, "#9aa5b1"), (True, "#2f7ed8")):
        sizes = sorted({r["n"] for r in rows if r["pmp"] == pmp})
        if not sizes:
            continue
        means = [np.nanmean([r["accuracy"] for r in rows if r["n"] == n and r["pmp"] == pmp]) for n in sizes]
        sds = [np.nanstd([r["accuracy"] for r in rows if r["n"] == n and r["pmp"] == pmp]) for n in sizes]
        ax.errorbar(sizes, means, yerr=sds, marker="o", capsize=3, color=colour, label="with PMP" if pmp else "no PMP")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("fine-tuning comparisons")
    ax.set_ylabel("PM test accuracy")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return to_png(fig)


def _labeller_plot(hist: dict | None, bias: float) -> bytes:
    """Histogram of P("(A)") per ordering: an unbiased labeller centres both on 0.5."""
    fig, ax = plt.subplots(figsize=(5, 3))
    if hist:
        edges = np.array(hist["edges"])
        centres = (edges[:-1] + edges[1:]) / 2
        width = (edges[1] - edges[0]) * 0.4
        for k, (key, colour) in enumerate((("ordering_1", "#2f7ed8"), ("ordering_2", "#e8a33d"))):
            if key in hist:
                ax.bar(centres + (k - 0.5) * width, hist[key], width, color=colour,
                       label="response 1 as (A)" if k == 0 else "response 1 as (B)")
        ax.legend(fontsize=7)
    ax.axvline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel('P("(A)")')
    ax.set_ylabel("evaluations")
    ax.set_title(f"labeller position bias: mean P(A) - 0.5 = {bias:+.3f}", fontsize=9)
    return to_png(fig)


@register_report("rlaif")
def rlaif_report(results: dict[str, Any]) -> tuple[str, str, list[Section]]:
    s, cfg = results["summary"], results["config"]
    title = f"RLAIF: {s['policy']} aligned under '{s['constitution']}'"
    subtitle = (f"feedback model {s['feedback_model']}, preference model {s['pm_model']}, preferences from "
                f"{s['preference_source']}; {s.get('stages', '')}; {s.get('seconds', '?')} s")
    sections = [Section("Summary", pre=rlaif_text(s), notes=list(s.get("notes", [])))]
    pref = s["preferences"]
    lab = Section("AI-feedback labeller")
    if pref.get("kind") == "ai":
        lab.table = Table(["pairs", "position bias", "order consistency", "mean confidence", "prefers SL-CAI revision"],
                          [[str(pref["n"]), _f(pref["position_bias"]), _f(pref["order_consistency"]),
                            _f(pref["mean_confidence"]), _f(pref.get("prefers_revision"))]])
        lab.image(_labeller_plot(pref.get("p_a_histogram"), pref["position_bias"]))
        if abs(pref["position_bias"]) > 0.1 or pref["order_consistency"] < 0.7:
            lab.warnings.append("The feedback model's preferences depend strongly on the order of the options: "
                                "small models give weak feedback; averaging both orderings cancels the bias but "
                                "leaves little signal.")
    if "labeller_vs_labelled_pairs" in s:
        a = s["labeller_vs_labelled_pairs"]
        lab.notes.append(f"On {a['n']} hand-labelled pairs shipped with the prompt set, the labeller agrees with the "
                         f"label {100 * a['agreement']:.1f}% of the time (chance 50%).")
    if "labeller_vs_preference_data" in s:
        a = s["labeller_vs_preference_data"]
        lab.notes.append(f"On {a['n']} pairs of the preference data ({s['preference_source']}), the labeller agrees "
                         f"with the data's label {100 * a['agreement']:.1f}% of the time (chance 50%).")
    sections.append(lab)
    pm = s["pm"]
    pm_sec = Section("Preference model", table=Table(
        ["split", "pairs", "pairwise accuracy", "log loss", "ECE"],
        [[k, str(pm[k]["n"]), _f(pm[k]["accuracy"]), _f(pm[k]["log_loss"]), _f(pm[k]["ece"])] for k in ("train", "test")]))
    if pm.get("data_efficiency"):
        pm_sec.image(_efficiency_plot(pm["data_efficiency"]))
        pm_sec.notes.append(f"Preference-model pre-training on {pm.get('pmp_pairs', '?')} ranked-answer pairs "
                            f"({cfg['pmp']['source']}), compared with training from scratch at each size.")
    sections.append(pm_sec)
    sections.append(Section("Best-of-n", table=Table(["n", "KL (nats)", "PM reward"],
                                                     [[str(r["n"]), f"{r['kl']:.3f}", f"{r['proxy']:.3f}"]
                                                      for r in s["best_of_n"]["curve"]])).image(_bon_plot(s["best_of_n"]["curve"])))
    if s["rl"]["history"]:
        sections.append(Section(f"RL ({cfg['rl']['algo']}) against the preference model").image(_rl_plot(s["rl"]["history"])))
    ev = s["eval"]
    win = Section(f"Win rates on {ev['n_prompts']} held-out prompts (95% bootstrap CI)",
                  table=Table(["comparison", "labeller", "preference model"], win_rate_rows(ev)))
    win.notes.append("Elo (labeller): " + ", ".join(f"{k} {v:.0f}" for k, v in ev["elo"]["labeller"].items()))
    win.notes.append("Elo (PM): " + ", ".join(f"{k} {v:.0f}" for k, v in ev["elo"]["pm"].items()))
    win.notes.append("Mean response length (tokens): " + ", ".join(f"{k} {v:.1f}" for k, v in ev["mean_length"].items()))
    if ev.get("distinct_2"):
        win.notes.append("Response diversity, distinct-2 (unique word bigrams / all bigrams): "
                         + ", ".join(f"{k} {v:.2f}" for k, v in ev["distinct_2"].items()))
    win.warnings += [w.removeprefix("warning: ") for w in warning_lines(ev)]
    sections.append(win)
    ex = "\n\n".join("PROMPT: " + e["prompt"] + "\n" + "\n".join(f"[{k}] {v}" for k, v in e.items() if k != "prompt")
                     for e in ev.get("examples", []))
    sections.append(Section("Example responses", pre=ex))
    sections.append(Section("Config", pre=yaml.safe_dump(cfg, sort_keys=False)))
    return title, subtitle, sections
