"""The reproduce study's findings table (CLI) and report page (findings table first, one figure per finding)."""

from __future__ import annotations

from typing import Any

import yaml

from superalign.metrics import fmt_interval
from superalign.report import plots_reproduce as P
from superalign.report.html import Section, Table, register_report
from superalign.report.tables import format_rows

# findings whose estimate is an accuracy difference or accuracy (printed in points)
_PCT = {"overfit", "early_stop", "prompting", "agreement"}


def _est(f: dict[str, Any], key: str | None = None) -> str:
    return fmt_interval(f.get("estimate"), pct=(key or f["key"]) in _PCT)


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def findings_table(findings: list[dict[str, Any]], summary: dict[str, Any] | None = None) -> str:
    """One line per finding (claim, measurement with 95% CI and n, verdict) and indented lines per case."""
    rows = []
    for f in findings:
        rows.append([f["title"], _est(f), str(f["n"]) if f["n"] else "-", f["verdict"]])
        for c in f.get("cases", []):
            est = fmt_interval(c.get("estimate"), pct=f["key"] in _PCT)
            rows.append(["  " + _short(c["label"], 58), est, str(c["n"]) if c.get("n") else "",
                         _short(str(c.get("verdict", "")), 48)])
    head = "findings of Burns et al. (2023) on the offline zoo; estimate [95% bootstrap CI over test examples]"
    if summary:
        mp = summary.get("main_pair", {})
        head += (f"\nmain pair {mp.get('weak')} -> {mp.get('strong')}; seeds {summary.get('seeds')}; "
                 "PGR differences paired; accuracy differences in points")
    out = [head, format_rows(["finding", "estimate [95% CI]", "n", "verdict"], rows)]
    claims = [f"{i + 1}. {f['title']}: {f['claim']}" + (f" [{f['note']}]" if f.get("note") else "")
              for i, f in enumerate(findings)]
    out += ["", "claims (the verdict tests the CI against the claim's null):", *claims]
    if summary and "seconds" in summary:
        out.append(f"study wall time {summary['seconds']} s; stages computed by the sweeps: "
                   f"{summary.get('stages_computed_in_sweeps')}")
    return "\n".join(out)


def _figure(f: dict[str, Any]) -> bytes | None:
    d, key = f.get("details", {}), f["key"]
    if key == "size_ratio" and d.get("points"):
        return P.size_ratio_plot(d["points"])
    if key == "misfit" and d.get("points"):
        return P.misfit_plot(d["points"])
    if key == "overfit" and d.get("per_task_curves"):
        return P.curves_plot(d["per_task_curves"])
    if key in ("reward_little", "generative_rm"):
        cases = [{"label": f"{name} reward model PGR", "estimate": r["pgr"], "verdict": ""}
                 for name, r in d.items() if isinstance(r, dict) and "pgr" in r]
        return P.interval_plot(cases, "PGR (95% CI)", 0.0) if cases else None
    cases = f.get("cases") or []
    if key == "prompting" and cases:
        return P.interval_plot([{**c, "estimate": {k: 100 * v for k, v in c["estimate"].items()}} for c in cases],
                               "test accuracy % (95% CI)", None)
    if cases:
        scale = 100 if key in _PCT else 1
        scaled = [{**c, "estimate": {k: scale * v for k, v in c["estimate"].items()}} for c in cases
                  if c.get("estimate")]
        unit = "points" if scale == 100 else "PGR"
        return P.interval_plot(scaled, f"{unit} (95% CI)", 0.0)
    return None


@register_report("reproduce")
def reproduce_report(results: dict[str, Any]) -> tuple[str, str, list[Section]]:
    findings, summary = results["findings"], results.get("summary", {})
    mp = summary.get("main_pair", {})
    title = "Weak-to-strong generalization, reproduced: the findings of Burns et al. (2023)"
    subtitle = (f"tasks {', '.join(summary.get('tasks', []))}; pairs "
                f"{', '.join(p['weak'] + ' → ' + p['strong'] for p in summary.get('pairs', []))}; main pair "
                f"{mp.get('weak')} → {mp.get('strong')}; seeds {summary.get('seeds')}; {summary.get('seconds', '?')} s")
    top = Section("Findings (verdicts decided by the 95% CI)", table=Table(
        ["finding", "claim", "measurement", "estimate [95% CI]", "n", "verdict"],
        [[f["title"], f["claim"], f["measurement"], _est(f), str(f["n"]), f["verdict"]] for f in findings]))
    top.notes.append("holds: the CI excludes the null on the claimed side; does not hold: it excludes it on the "
                     "other side; inconclusive: the CI straddles the null. Offline Gemma/SmolLM2 weights are 4-bit "
                     "GGUF dequantised to fp32.")
    sections = [top]
    for f in findings:
        sec = Section(f"{f['title']} — {f['verdict']}")
        sec.notes.append(f"Claim: {f['claim']}. Measured: {f['measurement']}: {_est(f)} (n={f['n']}).")
        if f.get("note"):
            sec.notes.append(f["note"])
        if f.get("cases"):
            sec.table = Table(["case", "estimate [95% CI]", "n", "verdict"],
                              [[c["label"], fmt_interval(c.get("estimate"), pct=f["key"] in _PCT),
                                str(c.get("n") or ""), str(c.get("verdict", ""))] for c in f["cases"]])
        d = f.get("details", {})
        if d.get("best_vs_final"):
            sec.notes.append("Training curves (test accuracy chosen on the test set itself, so optimistic): " + "; ".join(
                f"{m}: best {100 * v['best']:.1f}%, final {100 * v['final']:.1f}% over {v['runs']} runs"
                for m, v in d["best_vs_final"].items()))
        if d.get("vs_aux_conf"):
            sec.notes.append(f"Against aux-conf: PGR difference {fmt_interval(d['vs_aux_conf']['estimate'])} — "
                             f"{d['vs_aux_conf']['verdict']}.")
        try:
            png = _figure(f)
        except Exception as exc:  # noqa: BLE001 - a figure that cannot be drawn does not lose the page
            sec.warnings.append(f"figure not drawn: {type(exc).__name__}: {exc}")
            png = None
        if png:
            sec.image(png)
        sections.append(sec)
    sections.append(Section("Study", pre=yaml.safe_dump(results.get("study", {}), sort_keys=False)))
    return title, subtitle, sections
