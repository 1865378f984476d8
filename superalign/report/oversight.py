"""The oversight report: each measurement's registered sections, in the order they ran."""

from __future__ import annotations

from typing import Any

import yaml

from superalign.report.html import Section, register_report


@register_report("oversight")
def oversight_report(results: dict[str, Any]) -> tuple[str, str, list[Section]]:
    from superalign.oversight.registry import get_measurement

    cfg, summary = results["config"], results["summary"]
    sections: list[Section] = []
    for name in cfg["run"]:
        sections += get_measurement(name).report_sections(results["results"][name])
    sections.append(Section("Config", pre=yaml.safe_dump(cfg, sort_keys=False)))
    subtitle = f"{', '.join(cfg['run'])}; {summary['stages']}; {summary['seconds']} s"
    return "Oversight measurements", subtitle, sections
