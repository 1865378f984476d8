"""Plain-text results tables (what the CLI prints)."""

from __future__ import annotations

from typing import Any

from superalign.metrics import fmt_interval


def format_rows(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def results_table(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """The W2S table: accuracies (%) with 95% bootstrap CIs, PGR with CI, agreement and ECE."""
    task = summary.get("task", {})
    head = (f"task {task.get('name', '?')} (n_test={summary.get('n_test')}), weak {summary['weak']['model']} -> "
            f"strong {summary['strong']}, seeds {summary['seeds']}; accuracy % [95% CI]")
    w2s = [r for r in rows if r["kind"] == "w2s"]
    table = format_rows(
        ["method", "regime", "weak", "w2s", "ceiling", "PGR [95% CI]", "agree", "ECE", "misfit", "gain"],
        [[r["method"], r["regime"], *(fmt_interval(r[k], pct=True) for k in ("weak", "w2s", "ceiling")),
          fmt_interval(r["pgr"]) + ("" if r["pgr_reliable"] else " (unreliable)"),
          f"{100 * r['agreement']:.1f}", f"{r['ece_w2s']:.3f}", fmt_interval(r.get("misfit")),
          fmt_interval(r.get("gain"))] for r in w2s],
    )
    out = [head, table]
    notes = {r["pgr_note"] for r in w2s if not r["pgr_reliable"]}
    for n in sorted(notes):
        out.append(f"PGR unreliable: {n}")
    for r in w2s:
        if r.get("weak_ensemble"):
            out.append(f"{r['method']}: weak ensemble accuracy {fmt_interval(r['weak_ensemble'], pct=True)}")
        if r.get("label_filter"):
            f = r["label_filter"]
            out.append(f"{r['method']}: {f['name']} filter dropped {f['n_dropped']:.0f} of {f['n_before']:.0f} weak "
                       f"labels (label accuracy kept {100 * f['label_acc_kept']:.1f}%, dropped "
                       f"{100 * f['label_acc_dropped']:.1f}%)")
    if any("misfit" in r for r in w2s):
        out.append("misfit = |p_student - p_supervisor|^2, gain = supervisor sq. error - student sq. error on test "
                   "(Charikar et al. 2024: gain >= misfit for a least-squares student)")
    boot = [r for r in w2s if r["intermediates"]]
    for r in boot:
        mids = ", ".join(fmt_interval(m, pct=True) for m in r["intermediates"])
        out.append(f"{r['method']}: intermediate model accuracy {mids}")
    prompt = [r for r in rows if r["kind"] == "prompt"]
    if prompt:
        out.append("")
        out.append(format_rows(["prompting baseline", "accuracy % [95% CI]", "n_test", "ECE"],
                               [[r["method"], fmt_interval(r["accuracy"], pct=True), str(r["n_test"]),
                                 f"{r['ece']:.3f}"]
                                for r in prompt]))
    if "stages" in summary:
        out.append(f"{summary['stages']}; {summary.get('seconds', '?')} s")
    return "\n".join(out)
