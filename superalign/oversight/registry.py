"""The oversight measurement registry: one decorator makes a measurement runnable and reportable.

A measurement is a run function ``run(cfg, store) -> dict`` (JSON-serialisable results) with a
pydantic config class, registered in its own module::

    @register_measurement("easy_to_hard", config=EasyToHardConfig, default=True, help="...",
                          summary=summary_lines, report=report_sections)
    def run_easy_to_hard(cfg: EasyToHardConfig, store: Store) -> dict: ...

Registering is all it takes: :class:`~superalign.oversight.pipeline.OversightConfig` accepts a key
with the measurement's name (parsed into ``config``) and the name in ``run: [...]``;
:func:`~superalign.oversight.pipeline.run_oversight` runs it; ``summary(result) -> list[str]`` gives
the printed lines and ``report(result) -> list[Section]`` the report page's sections (both have
defaults). ``default=True`` puts it in the default ``run`` list. In the manner of
:mod:`superalign.data.registry` (tasks) and :mod:`superalign.report.html` (report builders).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel

from superalign.errors import UnknownNameError

RunFn = Callable[[Any, Any], dict[str, Any]]
SummaryFn = Callable[[dict[str, Any]], list[str]]
ReportFn = Callable[[dict[str, Any]], list[Any]]


@dataclass(frozen=True)
class MeasurementSpec:
    """One registered measurement: its name, config class, run function, printed summary and report sections."""

    name: str
    config: type[BaseModel]
    run: RunFn
    help: str
    default: bool = False
    summary: SummaryFn | None = None
    report: ReportFn | None = None
    title: str = ""

    def summary_lines(self, result: dict[str, Any]) -> list[str]:
        """One or two printed lines from the measurement's result (the name if it registered none)."""
        return list(self.summary(result)) if self.summary is not None else [self.name]

    def report_sections(self, result: dict[str, Any]) -> list[Any]:
        """The report page's sections for this measurement (default: one section with the summary text)."""
        if self.report is not None:
            return list(self.report(result))
        from superalign.report.html import Section

        return [Section(self.title or self.name, pre="\n".join(self.summary_lines(result)))]


MEASUREMENTS: dict[str, MeasurementSpec] = {}


def register_measurement(name: str, *, config: type[BaseModel], help: str, default: bool = False,
                         summary: SummaryFn | None = None, report: ReportFn | None = None, title: str = ""):
    """Decorator: register ``run(cfg, store) -> dict`` as the oversight measurement ``name``.

    ``config`` is the pydantic class its settings parse into (its defaults must be valid: an
    ``OversightConfig`` holds one of each); ``help`` is one line for ``superalign oversight run
    --help``; ``default`` adds it to the default ``run`` list. Registering a name again replaces it.
    """
    if not name.isidentifier() or name in ("name", "run"):
        raise ValueError(f"measurement name {name!r} must be an identifier other than 'name' and 'run'")

    def wrap(fn: RunFn) -> RunFn:
        MEASUREMENTS[name] = MeasurementSpec(name, config, fn, help, default, summary, report, title)
        return fn

    return wrap


def unregister_measurement(name: str) -> None:
    """Remove ``name`` from the registry (for tests and plug-ins that register temporarily)."""
    MEASUREMENTS.pop(name, None)


def list_measurements() -> list[MeasurementSpec]:
    """Every registered measurement: the built-in ones first (in :data:`BUILTIN_ORDER`), then the rest as registered."""
    load_builtin()
    rank = {name: i for i, name in enumerate(BUILTIN_ORDER)}
    return sorted(MEASUREMENTS.values(), key=lambda m: rank.get(m.name, len(rank)))


def get_measurement(name: str) -> MeasurementSpec:
    """The registered measurement ``name``; an :class:`UnknownNameError` lists the valid names."""
    load_builtin()
    if name not in MEASUREMENTS:
        raise UnknownNameError("measurement", name, [m.name for m in list_measurements()],
                               "register it with @register_measurement or use a listed name")
    return MEASUREMENTS[name]


def default_run() -> list[str]:
    """The measurements ``superalign oversight run`` runs when ``run`` is not given."""
    return [m.name for m in list_measurements() if m.default]


def measurements_help() -> str:
    """``name: help`` for each registered measurement (the CLI's help text)."""
    return "; ".join(f"{m.name}{' (default)' if m.default else ''}: {m.help}" for m in list_measurements())


BUILTIN_ORDER = ("easy_to_hard", "w2s_reward", "critique_gap", "perturbation_trial", "overoptimization", "autointerp",
                 "misaligned")  # how configs, help and defaults list the built-in measurements
BUILTIN_MODULES = ("easy_to_hard", "w2s_reward", "critique", "perturbation_trial", "overopt", "autointerp",
                   "misaligned")
_LOADED = False


def load_builtin() -> None:
    """Import the built-in measurement modules (each registers itself), once."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        import importlib

        for mod in BUILTIN_MODULES:
            importlib.import_module(f"superalign.oversight.{mod}")
