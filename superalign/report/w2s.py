"""The weak-to-strong report page."""

from __future__ import annotations

from typing import Any

import yaml

from superalign.metrics import fmt_interval
from superalign.report import plots
from superalign.report.html import Section, Table, register_report


@register_report("w2s")
def w2s_report(results: dict[str, Any]) -> tuple[str, str, list[Section]]:
    rows, summary, cfg = results["rows"], results["summary"], results["config"]
    task = summary.get("task", {})
    w2s = [r for r in rows if r["kind"] == "w2s"]
    prompt = [r for r in rows if r["kind"] == "prompt"]
    title = f"Weak-to-strong: {summary['weak']['model']} → {summary['strong']} on {task.get('name', cfg['task'])}"
    subtitle = (f"{len(summary['seeds'])} seed(s) {summary['seeds']}; test n={summary['n_test']}; "
                f"splits {task.get('splits', {})}; {summary.get('stages', '')}; {summary.get('seconds', '?')} s")

    results_sec = Section(
        "Results (test accuracy %, 95% bootstrap CI over test examples)",
        table=Table(
            ["method", "regime", "weak", "weak-to-strong", "strong ceiling", "PGR [95% CI]", "PGR per seed",
             "agreement w/ weak %", "ECE w2s", "ECE ceiling", "misfit", "gain", "gain ≥ misfit"],
            [[r["method"], r["regime"], *(fmt_interval(r[k], pct=True) for k in ("weak", "w2s", "ceiling")),
              fmt_interval(r["pgr"]),
              ", ".join(f"{p:.2f}" for p in r["pgr_per_seed"]), f"{100 * r['agreement']:.1f}",
              f"{r['ece_w2s']:.3f}", f"{r['ece_ceiling']:.3f}", fmt_interval(r.get("misfit")),
              fmt_interval(r.get("gain")),
              ("yes" if r["misfit_bound_holds"] else "no") if "misfit_bound_holds" in r else "-"] for r in w2s]),
        warnings=sorted({f"PGR unreliable for {r['method']}: {r['pgr_note']}" for r in w2s if not r["pgr_reliable"]}),
    )
    weak = summary["weak"]
    results_sec.notes.append(
        f"Weak supervisor {weak['model']}: test accuracy {fmt_interval(weak['accuracy'], pct=True)}, "
        f"ECE {weak['ece']:.3f}; "
        f"its labels on split B are {100 * weak['label_accuracy_on_B']:.1f}% correct.")
    for r in w2s:
        if r.get("weak_ensemble"):
            results_sec.notes.append(
                f"{r['method']}: weak ensemble test accuracy {fmt_interval(r['weak_ensemble'], pct=True)}")
        if r.get("label_filter"):
            f = r["label_filter"]
            results_sec.notes.append(
                f"{r['method']}: {f['name']} filter dropped {f['n_dropped']:.0f} of {f['n_before']:.0f} weak labels "
                f"(accuracy of kept labels {100 * f['label_acc_kept']:.1f}%, of dropped {100 * f['label_acc_dropped']:.1f}%)")
    if any("misfit" in r for r in w2s):
        results_sec.notes.append(
            "misfit: mean squared distance between the student's and its supervisor's P(y) on test; gain: the "
            "supervisor's squared error minus the student's (Charikar et al. 2024 prove gain ≥ misfit for a "
            "least-squares student over a convex class; here a diagnostic).")
    for r in w2s:
        if r["intermediates"]:
            results_sec.notes.append(f"{r['method']}: intermediate models' test accuracy "
                                     + ", ".join(fmt_interval(m, pct=True) for m in r["intermediates"]))
    results_sec.notes.extend(summary.get("notes", []))
    sections = [results_sec]
    sections.append(Section("Accuracy per method").image(plots.accuracy_bars(rows)))
    sections.append(Section("Performance gap recovered").image(plots.pgr_plot(rows)))
    if prompt:
        sections.append(Section("Prompting baselines", table=Table(
            ["baseline", "accuracy % [95% CI]", "n_test", "ECE"],
            [[r["method"], fmt_interval(r["accuracy"], pct=True), str(r["n_test"]), f"{r['ece']:.3f}"]
             for r in prompt])))
    if results.get("curves"):
        sections.append(Section("Training curves").image(plots.training_curves(results["curves"])))
    sections.append(Section("Config", pre=yaml.safe_dump(cfg, sort_keys=False)))
    return title, subtitle, sections
