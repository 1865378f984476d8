"""HTML reports: one self-contained page per run (plots embedded as PNG data URIs).

``superalign report RUN_DIR`` reads ``RUN_DIR/results.json`` and writes ``RUN_DIR/report.html``.
Each experiment type registers a builder that turns its results into page sections.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from jinja2 import Environment, PackageLoader, select_autoescape

from superalign.errors import ConfigError
from superalign.store.store import write_bytes_atomic


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    heading: str
    table: Table | None = None
    images: list[str] = field(default_factory=list)  # base64 PNGs
    pre: str = ""
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def image(self, png: bytes) -> "Section":
        self.images.append(base64.b64encode(png).decode())
        return self


BUILDERS: dict[str, Callable[[dict[str, Any]], tuple[str, str, list[Section]]]] = {}


def register_report(kind: str):
    def wrap(fn):
        BUILDERS[kind] = fn
        return fn

    return wrap


def render_page(title: str, subtitle: str, sections: list[Section]) -> str:
    env = Environment(loader=PackageLoader("superalign.report", "templates"), autoescape=select_autoescape(["html"]))
    return env.get_template("page.html").render(title=title, subtitle=subtitle, sections=sections)


def write_report(run_dir: str | Path) -> Path:
    """Render ``run_dir/report.html`` from ``run_dir/results.json``."""
    import superalign.oversight.autointerp  # noqa: F401  (each module registers its report builder)
    import superalign.report.oversight  # noqa: F401
    import superalign.report.reproduce  # noqa: F401
    import superalign.report.rlaif  # noqa: F401
    import superalign.report.sweep  # noqa: F401
    import superalign.report.w2s  # noqa: F401

    run_dir = Path(run_dir)
    results_file = run_dir / "results.json"
    if not results_file.exists():
        raise ConfigError("RUN_DIR", f"'{run_dir}' has no results.json", "point at a finished run's output directory")
    results = json.loads(results_file.read_text())
    kind = results.get("experiment", "w2s")
    if kind not in BUILDERS:
        raise ConfigError("results.json: experiment", f"no report for '{kind}'", f"one of {sorted(BUILDERS)}")
    title, subtitle, sections = BUILDERS[kind](results)
    out = run_dir / "report.html"
    write_bytes_atomic(out, render_page(title, subtitle, sections).encode())
    return out
