"""The W2S sweep report: accuracy and PGR against strong-model size, one line per weak supervisor.

Like the main figures of Burns et al. (2023): for each task and method, the left panel shows test
accuracy of the weak-to-strong student (solid, one colour per weak supervisor), the weak
supervisor itself (dashed, same colour) and the strong ceiling (black) against the strong
student's size; the right panel shows PGR. Points are the seed-pooled groups of the sweep, with
their 95% bootstrap CIs (over test examples, seed-averaged) as error bars.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import yaml

from superalign.metrics import fmt_interval
from superalign.report.html import Section, Table, register_report
from superalign.report.plots import plt, to_png
from superalign.report.tables import format_rows


def _iv(d: dict | None, pct: bool = True) -> str:
    """:func:`~superalign.metrics.fmt_interval` (percent by default), ``-`` for a missing value."""
    return fmt_interval(d, pct=pct) if d else "-"


def _size(m: float | None) -> str:
    return "?" if m is None else f"{m:g}M"


def _panels(groups: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Groups with a pooled row, by (task, method)."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for g in groups:
        if g.get("row"):
            out.setdefault((g["coords"]["task"], g["coords"]["method"]), []).append(g)
    return out


def _task_label(task: str) -> str:
    from pathlib import Path

    return Path(task).stem if Path(task).suffix else task


# -- plots -------------------------------------------------------------------------------------

def _x_positions(groups: list[dict[str, Any]]) -> tuple[dict[str, float], bool]:
    """x of each strong model: its size (log axis) when every size is known, else its rank."""
    sizes: dict[str, float | None] = {}
    for g in groups:
        sizes[g["coords"]["strong"]] = g.get("strong_params_m")
    if sizes and all(s is not None and s > 0 for s in sizes.values()):
        return {k: float(v) for k, v in sizes.items()}, True  # type: ignore[arg-type]
    names = sorted(sizes, key=lambda n: (sizes[n] is None, sizes[n] or 0.0, n))
    return {n: float(i) for i, n in enumerate(names)}, False


def _err(d: dict, scale: float) -> tuple[float, float, float]:
    v = d["value"] * scale
    return v, max(0.0, v - d["low"] * scale), max(0.0, d["high"] * scale - v)


def scaling_plot(groups: list[dict[str, Any]], title: str = "") -> bytes:
    """Accuracy (weak, w2s, ceiling) and PGR against strong-model size, one line per weak model.

    ``groups``: entries of ``sweep_results.json``'s ``groups`` for one task and method.
    """
    groups = [g for g in groups if g.get("row")]
    xs, by_size = _x_positions(groups)
    weaks = sorted({g["coords"]["weak"] for g in groups},
                   key=lambda w: (next(g.get("weak_params_m") for g in groups if g["coords"]["weak"] == w) is None,
                                  next(g.get("weak_params_m") or 0 for g in groups if g["coords"]["weak"] == w), w))
    cmap = plt.get_cmap("viridis")
    colours = {w: cmap(0.15 + 0.7 * i / max(1, len(weaks) - 1)) for i, w in enumerate(weaks)}
    fig, (acc_ax, pgr_ax) = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    drawn_unreliable = False
    # strong ceiling: does not depend on the weak supervisor; one point per strong model
    ceiling: dict[str, dict] = {}
    for g in groups:
        ceiling.setdefault(g["coords"]["strong"], g["row"]["ceiling"])
    cs = sorted(ceiling, key=lambda s: xs[s])
    vals = [_err(ceiling[s], 100) for s in cs]
    acc_ax.errorbar([xs[s] for s in cs], [v for v, _, _ in vals], yerr=np.array([[lo for _, lo, _ in vals],
                                                                                 [hi for _, _, hi in vals]]),
                    color="black", marker="s", capsize=3, label="strong ceiling")
    for i, w in enumerate(weaks):
        mine = sorted((g for g in groups if g["coords"]["weak"] == w), key=lambda g: xs[g["coords"]["strong"]])
        shift = 0.035 * (i - (len(weaks) - 1) / 2)  # side by side, so that the error bars stay apart
        x = [xs[g["coords"]["strong"]] * (1 + shift) if by_size else xs[g["coords"]["strong"]] + shift
             for g in mine]
        size = mine[0].get("weak_params_m")
        label = f"weak {w} ({_size(size)})"
        vals = [_err(g["row"]["w2s"], 100) for g in mine]
        acc_ax.errorbar(x, [v for v, _, _ in vals], yerr=np.array([[lo for _, lo, _ in vals], [hi for _, _, hi in vals]]),
                        color=colours[w], marker="o", capsize=3, label=f"w2s from {label}")
        weak_acc = 100 * mine[0]["row"]["weak"]["value"]
        acc_ax.axhline(weak_acc, color=colours[w], ls="--", lw=1, alpha=0.8)
        pts = [(xi, g["row"]["pgr"], g["row"].get("pgr_reliable", True)) for xi, g in zip(x, mine)
               if np.isfinite(g["row"]["pgr"]["value"])]
        if pts:
            pv = [p["value"] for _, p, _ in pts]
            lo = [max(0.0, p["value"] - p["low"]) if np.isfinite(p["low"]) else 0.0 for _, p, _ in pts]
            hi = [max(0.0, p["high"] - p["value"]) if np.isfinite(p["high"]) else 0.0 for _, p, _ in pts]
            pgr_ax.errorbar([p[0] for p in pts], pv, yerr=np.array([lo, hi]), color=colours[w], marker="o",
                            capsize=3, label=label)
            unreliable = [(xi, p["value"]) for xi, p, ok in pts if not ok]
            if unreliable:
                pgr_ax.scatter(*zip(*unreliable), s=90, facecolors="none", edgecolors="#c0392b", zorder=3)
                drawn_unreliable = True
    acc_ax.plot([], [], color="grey", ls="--", lw=1, label="weak supervisor (dashed)")
    pgr_ax.axhline(0, color="grey", lw=0.8)
    pgr_ax.axhline(1, color="grey", lw=0.8, ls="--")
    if drawn_unreliable:
        pgr_ax.scatter([], [], s=90, facecolors="none", edgecolors="#c0392b", label="PGR unreliable")
    if not any(np.isfinite(g["row"]["pgr"]["value"]) for g in groups):
        pgr_ax.text(0.5, 0.5, "PGR n/a: no strong ceiling beats its weak supervisor", transform=pgr_ax.transAxes,
                    ha="center", va="center", fontsize=9, color="#c0392b")
    for ax in (acc_ax, pgr_ax):
        if by_size:
            ax.set_xscale("log")
            ax.set_xlabel("strong student size (M parameters, log scale)")
            ticks = sorted(set(xs.values()))
            ax.set_xticks(ticks)
            ax.set_xticklabels([f"{t:g}" for t in ticks])
            ax.minorticks_off()
        else:
            ax.set_xlabel("strong student")
            ax.set_xticks(sorted(xs.values()))
            ax.set_xticklabels([n for n, _ in sorted(xs.items(), key=lambda kv: kv[1])], rotation=20, ha="right")
        ax.grid(alpha=0.3)
    acc_ax.set_ylabel("test accuracy (%)")
    acc_ax.set_title("accuracy (95% CI)")
    pgr_ax.set_ylabel("performance gap recovered")
    pgr_ax.set_title("PGR (95% CI; 0 = weak, 1 = ceiling)")
    acc_ax.legend(fontsize=7, loc="best")
    if pgr_ax.get_legend_handles_labels()[0]:
        pgr_ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    return to_png(fig)


# -- tables ------------------------------------------------------------------------------------

GROUP_HEADER = ["task", "method", "weak", "strong", "seeds", "weak %", "w2s %", "ceiling %", "PGR [95% CI]"]


def _group_rows(groups: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for g in groups:
        c, r = g["coords"], g.get("row")
        pgr = "-" if r is None else _iv(r["pgr"], pct=False) + ("" if r.get("pgr_reliable", True) else " (unreliable)")
        rows.append([_task_label(c["task"]), c["method"], f"{c['weak']} ({_size(g.get('weak_params_m'))})",
                     f"{c['strong']} ({_size(g.get('strong_params_m'))})", ",".join(map(str, g.get("seeds", []))),
                     _iv(r and r["weak"]), _iv(r and r["w2s"]), _iv(r and r["ceiling"]),
                     pgr if r is not None else g.get("error", "no finished cell")])
    return rows


CELL_HEADER = ["cell", "seed", "status", "w2s %", "PGR", "computed", "cached", "s"]


def _cell_rows(cells: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for c in cells:
        r = c["rows"][0] if c.get("rows") else None
        st = c.get("stages") or {}
        rows.append([c["id"], str(c["coords"]["seed"]), c["status"], _iv(r and r["w2s"]),
                     _iv(r and r["pgr"], pct=False) if r else (c.get("error") or "")[:60],
                     str(st.get("computed", "-")), str(st.get("cached", "-")), str(c.get("seconds") or "-")])
    return rows


def _stage_line(summary: dict[str, Any]) -> str:
    st = summary.get("stages", {})
    dup = st.get("computed", 0) - st.get("distinct_computed", 0)
    line = (f"stages over all cells: {st.get('computed', 0)} computed, {st.get('cached', 0)} found cached "
            f"(computed by another cell or an earlier run)")
    line += "; no stage computed twice" if dup == 0 else f"; {dup} computed more than once"
    if summary.get("groups_stages_computed"):
        line += f"; pooling the groups computed {summary['groups_stages_computed']} stage(s)"
    return line


def sweep_table(results: dict[str, Any]) -> str:
    """The plain-text sweep table: one line per seed-pooled group, then stage sharing and failures."""
    s = results["summary"]
    head = (f"sweep {s.get('name', '')}: {s['cells']} cells ({s['ok']} ok, {s['failed']} failed, {s['skipped']} "
            f"skipped) on {s['executor']} × {s['workers']}; accuracy % [95% CI], pooled over seeds")
    out = [head]
    if results.get("groups"):
        out.append(format_rows(GROUP_HEADER, _group_rows(results["groups"])))
    else:
        out.append(format_rows(CELL_HEADER, _cell_rows(results["cells"])))
    out.append(_stage_line(s) + f"; {s.get('seconds', '?')} s")
    for c in results["cells"]:
        if c["status"] != "ok":
            out.append(f"FAILED {c['id']}: {c.get('error')}")
    for k in results.get("skipped", [])[:10]:
        out.append(f"skipped {k['weak']} -> {k['strong']} ({k['method']}, seed {k['seed']}): {k['reason']}")
    if len(results.get("skipped", [])) > 10:
        out.append(f"... and {len(results['skipped']) - 10} more skipped")
    return "\n".join(out)


# -- the page ----------------------------------------------------------------------------------

@register_report("sweep")
def sweep_report(results: dict[str, Any]) -> tuple[str, str, list[Section]]:
    s = results["summary"]
    title = f"W2S sweep: {s.get('name', results.get('sweep', {}).get('name', ''))}"
    subtitle = (f"{s['cells']} cells ({s['ok']} ok, {s['failed']} failed, {s['skipped']} skipped); "
                f"{s['executor']} executor × {s['workers']} worker(s); {_stage_line(s)}; {s.get('seconds', '?')} s")
    sections = []
    for (task, method), groups in _panels(results.get("groups", [])).items():
        sec = Section(f"{_task_label(task)} — method {method}: accuracy and PGR against strong-model size")
        sec.image(scaling_plot(groups, f"{_task_label(task)}, {method}"))
        sec.notes.append("Points pool each (weak, strong) pair over its seeds; error bars are 95% bootstrap CIs over "
                         "test examples. Dashed lines: the weak supervisor's own accuracy.")
        warn = sorted({f"{g['coords']['weak']} → {g['coords']['strong']}: {g['row']['pgr_note']}"
                       for g in groups if not g["row"].get("pgr_reliable", True)})
        sec.warnings.extend(f"PGR unreliable for {w}" for w in warn)
        sections.append(sec)
    if results.get("groups"):
        sections.append(Section("Results per (weak, strong, method), pooled over seeds (accuracy %, 95% CI)",
                                table=Table(GROUP_HEADER, _group_rows(results["groups"]))))
    cells = Section("Cells (one seed each) and the stages each computed or found cached",
                    table=Table(CELL_HEADER, _cell_rows(results["cells"])))
    cells.notes.append(_stage_line(s))
    cells.warnings.extend(f"{c['id']}: {c.get('error')}" for c in results["cells"] if c["status"] != "ok")
    sections.append(cells)
    if results.get("skipped"):
        sections.append(Section("Skipped grid points", table=Table(
            ["task", "weak", "strong", "method", "seed", "reason"],
            [[_task_label(k["task"]), k["weak"], k["strong"], k["method"], str(k["seed"]), k["reason"]]
             for k in results["skipped"]])))
    sections.append(Section("Sweep config", pre=yaml.safe_dump(results.get("sweep", {}), sort_keys=False)))
    return title, subtitle, sections
