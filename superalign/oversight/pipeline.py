"""Run several oversight measurements as one experiment with one report.

``superalign oversight run`` (the offline default) runs the measurements registered with
``default=True`` (easy-to-hard generalization, the discriminator–critique gap, the reward
over-optimization curve on chess and automated interpretability); ``run: [...]`` in the config
picks any registered ones (:mod:`superalign.oversight.registry`). Each measurement caches its own
stages in the shared store, so a rerun recomputes nothing that finished.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from superalign.config import YamlConfig
from superalign.io import write_json_atomic, write_text_atomic
from superalign.oversight.registry import MEASUREMENTS, default_run, get_measurement, list_measurements
from superalign.store.store import Store, default_store_root

log = logging.getLogger("superalign.oversight")


def _unknown(name: Any) -> PydanticCustomError:
    valid = ", ".join(m.name for m in list_measurements())
    return PydanticCustomError("unknown_measurement", "'{name}' is not a registered oversight measurement; "
                               "valid names: {valid}", {"name": str(name), "valid": valid})


class OversightConfig(YamlConfig):
    """Which measurements to run (``run``), and each registered measurement's settings under its name.

    The per-measurement keys come from the registry: ``easy_to_hard: {...}`` parses into the
    config class registered for ``easy_to_hard``; a measurement not given gets its defaults
    (``cfg.easy_to_hard`` always exists). Unknown keys and names are errors that list the valid names.
    """

    model_config = ConfigDict(extra="allow")  # the measurement keys; _measurements admits registered ones only

    name: str = "oversight"
    run: list[str] = Field(default_factory=default_run, min_length=1)

    @model_validator(mode="wrap")
    @classmethod
    def _measurements(cls, data: Any, handler):
        if not isinstance(data, dict):
            return handler(data)
        specs = list_measurements()
        out: dict[str, Any] = {k: data[k] for k in ("name", "run") if k in data}
        errors: list[dict[str, Any]] = []
        for key, value in data.items():
            if key not in out and key not in MEASUREMENTS:
                errors.append({"type": _unknown(key), "loc": (key,), "input": value})
        for spec in specs:
            name, value = spec.name, data.get(spec.name)
            try:
                if isinstance(value, spec.config):
                    out[name] = value
                elif value is None:
                    out[name] = spec.config()
                else:
                    out[name] = spec.config.model_validate(value)
            except ValidationError as exc:
                errors += [{"type": PydanticCustomError(e["type"], "{msg}", {"msg": e["msg"]}),
                            "loc": (name, *e["loc"]), "input": e.get("input")} for e in exc.errors()]
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return handler(out)

    @field_validator("run")
    @classmethod
    def _known_names(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in MEASUREMENTS:
                raise _unknown(name)
        if len(set(v)) != len(v):
            raise ValueError(f"names a measurement twice: {v}; list each once")
        return v

    def measurement(self, name: str) -> Any:
        """The settings of measurement ``name`` (its registered config class)."""
        get_measurement(name)
        return getattr(self, name)


def summary_lines(name: str, r: dict[str, Any]) -> list[str]:
    """One or two printed lines per measurement, from its result dict (the registered ``summary``)."""
    return get_measurement(name).summary_lines(r)


@dataclass
class OversightResult:
    config: OversightConfig
    results: dict[str, dict[str, Any]]
    summary: dict[str, Any]
    out_dir: Path | None = None

    def table(self) -> str:
        lines = []
        for name in self.config.run:
            lines += summary_lines(name, self.results[name])
        lines.append(f"{self.summary['stages']}; {self.summary['seconds']} s")
        return "\n".join(lines)


def run_oversight(cfg: OversightConfig, *, out_dir: str | Path | None = None, store: Store | None = None) -> OversightResult:
    """Run every measurement in ``cfg.run`` (each cached and resumable), in that order."""
    from superalign.models.cache import model_scope

    t0 = time.perf_counter()
    store = store or Store(default_store_root())
    results, seconds = {}, {}
    with model_scope(name="oversight"):  # models shared by measurements load once and are released at the end
        for name in cfg.run:
            start = time.perf_counter()
            log.info("oversight: %s", name)
            results[name] = get_measurement(name).run(cfg.measurement(name), store)
            seconds[name] = round(time.perf_counter() - start, 1)
    summary = {"seconds": round(time.perf_counter() - t0, 1), "per_measurement_seconds": seconds,
               "stages": store.summary()}
    result = OversightResult(cfg, results, summary)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.yaml", cfg.to_yaml())
        write_json_atomic(out / "results.json", {"experiment": "oversight", "config": cfg.model_dump(mode="json"),
                                                 "results": results, "summary": summary})
        write_text_atomic(out / "summary.txt", result.table() + "\n")
        result.out_dir = out
    log.info(store.summary(detail=True))
    return result
