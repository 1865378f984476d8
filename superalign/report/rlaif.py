"""The RLAIF report page and its plain-text summary."""

from __future__ import annotations

from typing import Any

import numpy as np
import yaml

from superalign.metrics import Interval, fmt_interval
from superalign.report.html import Section, Table, register_report
from superalign.report.plots import plt, to_png
from superalign.report.tables import format_rows


def _f(x: Any, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


TAG_AXIS = {"ordinary": "helpfulness", "harmful": "harmlessness"}


def _wr(d: dict) -> str:
    """A win rate with its CI, starred when the CI includes chance (50%)."""
    return fmt_interval(d, pct=True) + ("" if Interval.from_dict(d).excludes(0.5) else " *")


def win_rate_rows(ev: dict) -> list[list[str]]:
    rows = []
    for key, judges in ev["win_rates"].items():
        x, y = key.split("|")
        rows.append([f"{x} vs {y}", _wr(judges["labeller"]), _wr(judges["pm"])])
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


def frontier_text(by_tag: dict) -> str:
    """The helpfulness-harmlessness frontier as a table: per tag, each policy's labeller Elo and its
    labeller win rate against the initial policy on that tag's prompts (n in the headers)."""
    tags = [t for t in ("ordinary", "harmful") if t in by_tag] + [t for t in by_tag if t not in TAG_AXIS]
    names = list(by_tag[tags[0]]["elo"]["labeller"])
    head = ["per-tag frontier (labeller)"]
    head += [f"{TAG_AXIS.get(t, t)} Elo (n={by_tag[t]['n']})" for t in tags]
    head += [f"win % vs initial, {t} (n={by_tag[t]['n']})" for t in tags]
    rows = []
    for name in names:
        wins = [by_tag[t]["win_rates"].get(f"{name}|initial", {}).get("labeller") for t in tags]
        rows.append([name, *[f"{by_tag[t]['elo']['labeller'].get(name, float('nan')):.0f}" for t in tags],
                     *[_wr(w) if w else "-" for w in wins]])
    return format_rows(head, rows) + "\n(* = the 95% CI includes 50%)"


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
    if s.get("known_pairs"):
        kp = s["known_pairs"]
        out.append(f"on {kp['n']} held-out pairs with a known better side (shuffled / off-topic answers): PM accuracy "
                   f"{_wr(kp['pm_accuracy'])}" + "".join(
                       f"; labeller ({r['variant']}) agreement {_wr(r['agreement'])}, order consistency "
                       f"{_f(r['order_consistency'])}" for r in kp["labeller"]) + " (* = CI includes chance)")
    bon = s["best_of_n"]["curve"]
    out.append("best-of-n PM reward: " + ", ".join(f"n={r['n']} {r['proxy']:.3f} (KL {r['kl']:.2f})" for r in bon))
    for key, what in (("rl", "RL"), ("rl_direct", "d-RLAIF RL (labeller rating as reward)")):
        hist = (s.get(key) or {}).get("history")
        if hist:
            first, last = hist[0], hist[-1]
            out.append(f"{what}: {len(hist)} logged steps; reward {first['reward']:.3f} -> {last['reward']:.3f}, "
                       f"KL {_f(last['kl'])}, length {_f(first['length'], 1)} -> {_f(last['length'], 1)}, "
                       f"EOS rate {first['eos_rate']:.2f} -> {last['eos_rate']:.2f}")
    if s.get("dpo"):
        d = s["dpo"]
        loss = [h["loss"] for h in d.get("history", []) if "loss" in h]
        out.append(f"DPO: {d['n_pairs']} labelled pairs (oriented by the soft label), label smoothing "
                   f"{d['label_smoothing']:.3f}" + (f", loss {loss[0]:.3f} -> {loss[-1]:.3f}" if loss else ""))
    ev = s["eval"]
    out.append("")
    out.append(format_rows(["win rate % [95% CI]", "judged by labeller", "judged by PM"], win_rate_rows(ev)))
    out.append(f"(n = {ev['n_prompts']} prompts per comparison; * = the 95% CI includes 50%, no difference shown)")
    out.append("Elo (labeller): " + ", ".join(f"{k} {v:.0f}" for k, v in ev["elo"]["labeller"].items())
               + "; Elo (PM): " + ", ".join(f"{k} {v:.0f}" for k, v in ev["elo"]["pm"].items()))
    by_tag = ev.get("by_tag") or {}
    if by_tag:
        out.append("")
        out.append(frontier_text(by_tag))
    for row in (s.get("rounds") or {}).get("rounds", []):
        wr = ", ".join(f"{n} {fmt_interval(v, pct=True)}" for n, v in row["win_rate_vs_round0"].items() if v)
        out.append(f"round {row['round']}: PM test accuracy {_f(row['pm_test']['accuracy'])} on {row['pm_test']['n']} "
                   f"pairs ({row['n_pairs']} pairs so far); labeller win rate vs {s['rounds']['round0']}: {wr or 'n/a'}")
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


def _frontier_plot(by_tag: dict, judge: str = "labeller") -> bytes:
    """Each policy as a point (helpfulness Elo, harmlessness Elo): the CAI paper's frontier figure."""
    help_elo, harm_elo = by_tag["ordinary"]["elo"][judge], by_tag["harmful"]["elo"][judge]
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    names = [n for n in help_elo if n in harm_elo]
    ax.plot([help_elo[n] for n in names], [harm_elo[n] for n in names], marker="o", ls=":", alpha=0.7)
    for n in names:
        ax.annotate(n, (help_elo[n], harm_elo[n]), fontsize=7, textcoords="offset points", xytext=(3, 3))
    ax.set_xlabel(f"helpfulness Elo ({by_tag['ordinary']['n']} ordinary prompts)")
    ax.set_ylabel(f"harmlessness Elo ({by_tag['harmful']['n']} harmful prompts)")
    ax.set_title(f"judged by the {judge}", fontsize=9)
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
    if s.get("known_pairs"):
        kp = s["known_pairs"]
        pm_sec.notes.append(f"On {kp['n']} held-out pairs whose better side is known by construction (an answer "
                            f"against itself word-shuffled, or against an answer to another prompt): PM accuracy "
                            f"{_wr(kp['pm_accuracy'])}; by kind: " + ", ".join(
                                f"{k} {_wr(v)}" for k, v in kp["pm_accuracy_by_kind"].items())
                            + " (* = the 95% CI includes 50%).")
        lab_known = Section(f"Labeller order consistency and its remedies, on {kp['n']} known-better pairs",
                            table=Table(["variant", "n", "order consistency", "position bias",
                                         "agreement with ground truth % [95% CI]"],
                                        [[r["variant"], str(r["n"]), _f(r["order_consistency"]), _f(r["position_bias"]),
                                          _wr(r["agreement"])] for r in kp["labeller"]]))
        lab_known.notes.append("Order consistency: share of (pair, principle) where both orderings prefer the same "
                               "response (n/a with one ordering). * = the CI includes chance (50%).")
        sections.append(lab_known)
    sections.append(pm_sec)
    sections.append(Section("Best-of-n", table=Table(["n", "KL (nats)", "PM reward"],
                                                     [[str(r["n"]), f"{r['kl']:.3f}", f"{r['proxy']:.3f}"]
                                                      for r in s["best_of_n"]["curve"]])).image(_bon_plot(s["best_of_n"]["curve"])))
    for key, what in (("rl", "against the preference model"), ("rl_direct", "against the labeller's rating (d-RLAIF)")):
        if (s.get(key) or {}).get("history"):
            sections.append(Section(f"RL ({cfg['rl']['algo']}) {what}").image(_rl_plot(s[key]["history"])))
    if s.get("dpo"):
        d = s["dpo"]
        sections.append(Section("DPO on the labeller's pairs", notes=[
            f"{d['n_pairs']} pairs, each oriented towards the side the labeller prefers; TRL's label smoothing "
            f"(conservative DPO) {d['label_smoothing']:.3f} stands in for the soft labels (TRL has no per-pair label)."],
            table=Table(["step", "loss", "reward accuracy", "reward margin"],
                        [[str(h.get("step")), _f(h.get("loss")), _f(h.get("rewards/accuracies")),
                          _f(h.get("rewards/margins"))] for h in d.get("history", [])])))
    if s.get("rounds"):
        r0 = s["rounds"]["round0"]
        sections.append(Section("Iterated rounds", table=Table(
            ["round", "pairs so far", "PM test accuracy (n)", f"labeller win rate vs {r0}"],
            [[str(r["round"]), str(r["n_pairs"]), f"{_f(r['pm_test']['accuracy'])} ({r['pm_test']['n']})",
              "; ".join(f"{n} {_wr(v)}" for n, v in r["win_rate_vs_round0"].items() if v)]
             for r in s["rounds"]["rounds"]])))
    ev = s["eval"]
    win = Section(f"Win rates on {ev['n_prompts']} held-out prompts (95% bootstrap CI)",
                  table=Table(["comparison", "labeller", "preference model"], win_rate_rows(ev)))
    win.notes.append("Elo (labeller): " + ", ".join(f"{k} {v:.0f}" for k, v in ev["elo"]["labeller"].items()))
    win.notes.append("Elo (PM): " + ", ".join(f"{k} {v:.0f}" for k, v in ev["elo"]["pm"].items()))
    win.notes.append("Mean response length (tokens): " + ", ".join(f"{k} {v:.1f}" for k, v in ev["mean_length"].items()))
    if ev.get("distinct_2"):
        win.notes.append("Response diversity, distinct-2 (unique word bigrams / all bigrams): "
                         + ", ".join(f"{k} {v:.2f}" for k, v in ev["distinct_2"].items()))
    win.notes.append("* marks a 95% CI that includes 50%: no difference shown at this n.")
    win.warnings += [w.removeprefix("warning: ") for w in warning_lines(ev)]
    sections.append(win)
    by_tag = ev.get("by_tag") or {}
    if by_tag:
        tags = list(by_tag)
        tag_sec = Section("Helpfulness and harmlessness measured apart", table=Table(
            ["policy", *[f"{TAG_AXIS.get(t, t)} Elo, labeller (n={by_tag[t]['n']} {t})" for t in tags],
             *[f"{TAG_AXIS.get(t, t)} Elo, PM" for t in tags]],
            [[n, *[f"{by_tag[t]['elo']['labeller'][n]:.0f}" for t in tags],
              *[f"{by_tag[t]['elo']['pm'][n]:.0f}" for t in tags]] for n in ev["policies"]]))
        tag_sec.notes.append("Elo from the same comparisons as above, restricted to each tag's prompts (ordinary "
                             "prompts measure helpfulness, harmful ones harmlessness; Bai et al., 2022).")
        if {"ordinary", "harmful"} <= set(by_tag):
            tag_sec.image(_frontier_plot(by_tag, "labeller"))
            tag_sec.image(_frontier_plot(by_tag, "pm"))
        sections.append(tag_sec)
    ex = "\n\n".join("PROMPT: " + e["prompt"] + "\n" + "\n".join(f"[{k}] {v}" for k, v in e.items() if k != "prompt")
                     for e in ev.get("examples", []))
    sections.append(Section("Example responses", pre=ex))
    sections.append(Section("Config", pre=yaml.safe_dump(cfg, sort_keys=False)))
    return title, subtitle, sections
