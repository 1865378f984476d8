"""The oversight report: one section (or more) per measurement, in the order they ran."""

from __future__ import annotations

from typing import Any

import yaml

from superalign.report.html import Section, Table, register_report


def _fmt(d: dict | None, pct: bool = False) -> str:
    from superalign.metrics import Interval

    return "n/a" if not d else Interval(d["value"], d["low"], d["high"]).fmt(pct=pct)


def _sections(name: str, r: dict[str, Any]) -> list[Section]:
    from superalign.oversight.pipeline import summary_lines

    text = "\n".join(summary_lines(name, r))
    if name == "easy_to_hard":
        from superalign.oversight.easy_to_hard import easy_to_hard_plot

        a = r["accuracy"]
        sec = Section("Easy-to-hard generalization", pre=text, table=Table(
            ["trained on", "easy test %", "hard test %"],
            [[c, _fmt(a[c]["easy"], True), _fmt(a[c]["hard"], True)] for c in ("easy", "all", "hard")]))
        sec.notes.append(f"difficulty = {r['difficulty']}; {r['n_train']} training examples per condition; "
                         f"sizes {r['sizes']}")
        if not r["gap_recovered"]["reliable"]:
            sec.warnings.append(f"gap recovered unreliable: {r['gap_recovered']['note']}")
        return [sec.image(easy_to_hard_plot(r))]
    if name == "w2s_reward":
        return [Section("Weak-to-strong reward modeling", pre=text, table=Table(
            ["model", "pairwise accuracy % [95% CI]"],
            [["weak", _fmt(r["weak"], True)], ["weak-to-strong", _fmt(r["w2s"], True)],
             ["ceiling", _fmt(r["ceiling"], True)], ["PGR", _fmt(r["pgr"])]]),
            warnings=[] if r["reliable"] else [f"PGR unreliable: {r['reason']}"])]
    if name == "critique_gap":
        from superalign.oversight.critique import critique_gap_plot

        sec = Section("Discriminator–critique gap", pre=text, notes=list(r.get("notes", [])))
        return [sec.image(critique_gap_plot(r))]
    if name == "perturbation_trial":
        from superalign.oversight.critique import perturbation_trial_plot

        sec = Section("Targeted-perturbation trial", pre=text, notes=list(r.get("notes", [])))
        return [sec.image(perturbation_trial_plot(r))]
    if name == "overoptimization":
        from superalign.oversight.overopt import overopt_plot

        sec = Section("Reward over-optimization (chess; Stockfish gold)", pre=text)
        if r["overoptimized"]:
            sec.warnings.append(f"the gold reward peaks at KL {r['peak_kl']:.2f} and falls while the proxy keeps rising")
        return [sec.image(overopt_plot(r))]
    if name == "autointerp":
        from superalign.oversight.autointerp import layer_report_sections

        return [Section("Automated interpretability", pre=text),
                *[s for entry in r["layers"] for s in layer_report_sections(entry)]]
    if name == "misaligned":
        rows = []
        for flag in ("flag_perturbation", "flag_overoptimization", "flag_w2s_inherits"):
            rows.append([flag.removeprefix("flag_"), "yes" if r["models"]["honest"][flag] else "no",
                         "yes" if r["models"]["misaligned"][flag] else "no",
                         "works" if r["measurement_works"][flag] else "fails"])
        return [Section(f"Planted misalignment (prefers answers containing '{r['trigger']}')", pre=text,
                        table=Table(["measurement", "flags honest PM", "flags misaligned PM", "verdict"], rows))]
    return [Section(name, pre=text)]


@register_report("oversight")
def oversight_report(results: dict[str, Any]) -> tuple[str, str, list[Section]]:
    cfg, summary = results["config"], results["summary"]
    sections: list[Section] = []
    for name in cfg["run"]:
        sections += _sections(name, results["results"][name])
    sections.append(Section("Config", pre=yaml.safe_dump(cfg, sort_keys=False)))
    subtitle = f"{', '.join(cfg['run'])}; {summary['stages']}; {summary['seconds']} s"
    return "Oversight measurements", subtitle, sections
