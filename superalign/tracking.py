"""Experiment tracking: log W2S runs and sweeps to MLflow.

What a run logs:

- **params**: the config, flattened (``weak.model``, ``weak.epochs``, ``methods.0.loss.name`` ...);
- **metrics**, per method: ``<method>/weak_acc``, ``<method>/w2s_acc``, ``<method>/ceiling_acc`` and
  ``<method>/pgr``, each with ``_low`` / ``_high`` (95% bootstrap CI bounds), plus agreement and ECE;
- **artifacts**: ``results.json``, ``report.html`` and ``table.txt`` of the run directory.

A sweep is one parent run (the sweep config, seed-pooled metrics per group, the sweep's files)
with one nested child run per cell (tag ``mlflow.parentRunId``).

Where: ``tracking_uri`` if given, else ``$MLFLOW_TRACKING_URI``, else a local file store
``./mlruns``; any MLflow server works by its URI (``http://host:5000``, ``databricks``, ...).

mlflow is optional (``pip install 'superalign[tracking]'``, which installs ``mlflow-skinny``, the
client without the server) and imported only when something is logged.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from pydantic import BaseModel, ConfigDict, Field

from superalign.errors import SuperalignError
from superalign.io import read_json

if TYPE_CHECKING:  # pragma: no cover
    from superalign.w2s.pipeline import W2SResult
    from superalign.w2s.sweep import SweepResult

DEFAULT_URI = "file:./mlruns"
ARTIFACTS = ("results.json", "report.html", "table.txt")
SWEEP_ARTIFACTS = ("sweep_results.json", "report.html", "table.txt", "sweep.yaml")
MAX_PARAM_LENGTH = 500  # what every MLflow server version accepts
_BATCH = 100  # MLflow's per-request limit on params (metrics: 1000)


class TrackingError(SuperalignError, RuntimeError):
    """Tracking cannot work as configured (mlflow missing, a run cannot be created)."""

    def __init__(self, field: str, problem: str, fix: str):
        self.field, self.problem, self.fix = field, problem, fix
        super().__init__(f"{field}: {problem}. Fix: {fix}")


class TrackingConfig(BaseModel):
    """Where to log a run (a ``tracking:`` block of a config)."""

    model_config = ConfigDict(extra="forbid")

    uri: str | None = Field(None, description="MLflow tracking URI (default $MLFLOW_TRACKING_URI or file:./mlruns)")
    experiment: str = Field("superalign", description="MLflow experiment name")


# -- mlflow access -----------------------------------------------------------------------------

def _mlflow():
    try:
        import mlflow  # noqa: F401
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise TrackingError("tracking", "mlflow is not installed",
                            "pip install 'superalign[tracking]' (or pip install mlflow-skinny)") from None
    return MlflowClient


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else ``file:./mlruns``; local paths become absolute
    ``file://`` URIs (so runs and artifacts land in one place wherever the process runs)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if uri.startswith("file:"):
        rest = uri[len("file:"):]
        if rest.startswith("//"):
            return uri
        return Path(rest).expanduser().resolve().as_uri()
    if "://" not in uri and ":" not in uri.split("/")[0] and uri not in ("databricks",):
        return Path(uri).expanduser().resolve().as_uri()  # a plain directory
    return uri


def client(tracking_uri: str | None = None):
    """An ``MlflowClient`` for ``tracking_uri`` (see :func:`resolve_tracking_uri`)."""
    Client = _mlflow()
    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("file:"):
        # MLflow >= 3.7 refuses the file store unless asked; it is this module's documented default.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        return Client(tracking_uri=uri)
    except Exception as exc:  # noqa: BLE001 - mlflow raises many kinds
        raise TrackingError("tracking_uri", f"cannot open MLflow tracking store '{uri}': {exc}",
                            "give a reachable MLflow URI (http://host:port, file:/path, sqlite:///mlflow.db) or "
                            "leave it unset for ./mlruns") from None


def _experiment_id(cl, name: str) -> str:
    exp = cl.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return cl.create_experiment(name)
    except Exception:  # another process created it in between
        exp = cl.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


# -- what is logged ----------------------------------------------------------------------------

def flatten_params(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested config data as ``a.b.0.c -> str(value)`` (long values cut to what MLflow accepts)."""
    out: dict[str, str] = {}
    if isinstance(obj, Mapping):
        items = list(obj.items())
        if not items and prefix:
            out[prefix] = "{}"
        for k, v in items:
            out.update(flatten_params(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        if not obj or all(not isinstance(x, (Mapping, list, tuple)) for x in obj):
            out[prefix] = json.dumps(list(obj), default=str)  # a list of scalars stays one param
        else:
            for i, v in enumerate(obj):
                out.update(flatten_params(v, f"{prefix}.{i}"))
    else:
        out[prefix] = "None" if obj is None else str(obj)
    return {_key(k): (v if len(v) <= MAX_PARAM_LENGTH else v[: MAX_PARAM_LENGTH - 3] + "...") for k, v in out.items()}


def _key(name: str) -> str:
    """A metric/param name MLflow accepts (letters, digits, _ - . / and space)."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", name)[:250]


def w2s_metrics(rows: list[dict[str, Any]], summary: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Per method: weak/w2s/ceiling accuracy and PGR with CI bounds, agreement, ECE (finite values only)."""
    out: dict[str, float] = {}
    for r in rows:
        if r.get("kind") == "prompt":
            m = _key(r["method"])
            out[f"prompt/{m}/acc"] = r["accuracy"]["value"]
            out[f"prompt/{m}/acc_low"] = r["accuracy"]["low"]
            out[f"prompt/{m}/acc_high"] = r["accuracy"]["high"]
            continue
        if r.get("kind") != "w2s":
            continue
        m = _key(r["method"])
        for src, name in (("weak", "weak_acc"), ("w2s", "w2s_acc"), ("ceiling", "ceiling_acc"), ("pgr", "pgr"),
                          ("gap", "gap")):
            iv = r[src]
            out[f"{m}/{name}"] = iv["value"]
            out[f"{m}/{name}_low"] = iv["low"]
            out[f"{m}/{name}_high"] = iv["high"]
        for name in ("agreement", "ece_w2s", "ece_ceiling"):
            if name in r:
                out[f"{m}/{name}"] = r[name]
        out[f"{m}/pgr_reliable"] = 1.0 if r.get("pgr_reliable") else 0.0
    if summary:
        weak = summary.get("weak") or {}
        if isinstance(weak, Mapping) and "ece" in weak:
            out["weak/ece"] = weak["ece"]
            out["weak/label_accuracy_on_B"] = weak.get("label_accuracy_on_B", float("nan"))
        if "seconds" in summary:
            out["seconds"] = summary["seconds"]
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


def _log(cl, run_id: str, params: Mapping[str, str], metrics: Mapping[str, float], files: list[Path],
         tags: Mapping[str, str]) -> None:
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    p = [Param(k, v) for k, v in params.items()]
    m = [Metric(k, v, now, 0) for k, v in metrics.items()]
    t = [RunTag(k, str(v)) for k, v in tags.items()]
    for i in range(0, max(len(p), len(m), len(t), 1), _BATCH):
        cl.log_batch(run_id, metrics=m[i:i + _BATCH], params=p[i:i + _BATCH], tags=t[i:i + _BATCH])
    for f in files:
        cl.log_artifact(run_id, str(f))


def _start(cl, experiment_id: str, name: str, parent: str | None, tags: Mapping[str, str]) -> str:
    all_tags = {"mlflow.runName": name, **tags}
    if parent:
        all_tags["mlflow.parentRunId"] = parent
    run = cl.create_run(experiment_id, run_name=name, tags=all_tags)
    return run.info.run_id


def _files(run_dir: Path | None, names: tuple[str, ...]) -> list[Path]:
    if run_dir is None:
        return []
    return [run_dir / n for n in names if (run_dir / n).is_file()]


# -- public API --------------------------------------------------------------------------------

def log_w2s_run(
    result: "W2SResult",
    run_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    experiment: str = "superalign",
    *,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    make_report: bool = True,
) -> str:
    """Log a W2S run (config params, per-method metrics, run-dir artifacts) as one MLflow run.

    ``run_dir`` defaults to ``result.out_dir``; with ``make_report`` a missing ``report.html`` is
    rendered there first. Returns the MLflow run id.
    """
    run_dir = Path(run_dir) if run_dir is not None else result.out_dir
    if make_report and run_dir is not None and (run_dir / "results.json").is_file() \
            and not (run_dir / "report.html").is_file():
        from superalign.report.html import write_report

        write_report(run_dir)
    return _log_run(result.config.model_dump(mode="json"), result.rows, result.summary, run_dir, tracking_uri,
                    experiment, run_name or result.config.name, parent_run_id,
                    {"superalign.experiment": "w2s", **(tags or {})})


def _log_run(config: dict, rows: list[dict], summary: Mapping[str, Any] | None, run_dir: Path | None,
             tracking_uri: str | None, experiment: str, name: str, parent: str | None,
             tags: Mapping[str, str]) -> str:
    cl = client(tracking_uri)
    run_id = _start(cl, _experiment_id(cl, experiment), name, parent, tags)
    status = "FAILED"
    try:
        _log(cl, run_id, flatten_params(config), w2s_metrics(rows, summary), _files(run_dir, ARTIFACTS),
             _note_tags(rows))
        status = "FINISHED"
    finally:
        cl.set_terminated(run_id, status)
    return run_id


def _note_tags(rows: list[dict]) -> dict[str, str]:
    """Why a PGR is missing or unreliable, as tags (metrics hold only finite numbers)."""
    return {f"{_key(r['method'])}/pgr_note": r["pgr_note"][:5000] for r in rows
            if r.get("kind") == "w2s" and r.get("pgr_note")}


def log_sweep_run(
    result: "SweepResult | dict[str, Any] | str | Path",
    out_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    experiment: str = "superalign",
    *,
    run_name: str | None = None,
    cells: bool = True,
) -> str:
    """Log a sweep: a parent run (sweep config, seed-pooled metrics per group, the sweep's files)
    with one nested run per cell (its config, metrics, coordinates as tags, its run-dir files).

    ``result``: a :class:`~superalign.w2s.sweep.SweepResult`, the ``sweep_results.json`` data, or
    a sweep output directory. Returns the parent run id.
    """
    if isinstance(result, (str, Path)):
        from superalign.w2s.sweep import load_sweep_results

        out_dir = out_dir or result
        data = load_sweep_results(result)
    elif isinstance(result, dict):
        data = result
    else:
        data = result.as_dict()
        out_dir = out_dir or result.out_dir
    out = Path(out_dir) if out_dir is not None else None
    sweep = data.get("sweep", {})
    summary = data.get("summary", {})
    cl = client(tracking_uri)
    exp_id = _experiment_id(cl, experiment)
    parent = _start(cl, exp_id, run_name or sweep.get("name", "sweep"), None, {"superalign.experiment": "sweep"})
    status = "FAILED"
    try:
        metrics: dict[str, float] = {}
        for g in data.get("groups", []):
            if not g.get("row"):
                continue
            c = g["coords"]
            prefix = _key(f"{Path(c['task']).stem if Path(c['task']).suffix else c['task']}/{c['weak']}__"
                          f"{c['strong']}")
            metrics.update({f"{prefix}/{k}": v for k, v in w2s_metrics([g["row"]]).items()})
        st = summary.get("stages", {})
        metrics.update({"stages_computed": st.get("computed", 0), "stages_cached": st.get("cached", 0),
                        "cells_ok": summary.get("ok", 0), "cells_failed": summary.get("failed", 0),
                        "seconds": summary.get("seconds", float("nan"))})
        metrics = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        params = flatten_params({k: v for k, v in sweep.items() if k != "base"})
        params.update(flatten_params(sweep.get("base", {}), "base"))
        params.update({k: str(summary.get(k)) for k in ("executor", "workers", "order") if k in summary})
        _log(cl, parent, params, metrics, _files(out, SWEEP_ARTIFACTS), {})
        if cells:
            for cell in data.get("cells", []):
                cell_dir = Path(cell["out_dir"]) if cell.get("out_dir") else None
                config = {}
                if cell_dir is not None and (cell_dir / "results.json").is_file():
                    config = read_json(cell_dir / "results.json").get("config", {})
                st = cell.get("stages") or {}
                tags = {"superalign.experiment": "sweep-cell", "superalign.cell": cell["id"],
                        "status": cell["status"], **{k: str(v) for k, v in cell["coords"].items()}}
                if cell.get("error"):
                    tags["error"] = str(cell["error"])[:5000]
                run_id = _start(cl, exp_id, cell["id"], parent, tags)
                cell_metrics = w2s_metrics(cell.get("rows") or [])
                cell_metrics.update({"stages_computed": float(st.get("computed", 0)),
                                     "stages_cached": float(st.get("cached", 0))})
                if cell.get("seconds") is not None:
                    cell_metrics["seconds"] = float(cell["seconds"])
                try:
                    _log(cl, run_id, flatten_params(config), cell_metrics, _files(cell_dir, ARTIFACTS),
                         _note_tags(cell.get("rows") or []))
                finally:
                    cl.set_terminated(run_id, "FINISHED" if cell["status"] == "ok" else "FAILED")
        status = "FINISHED" if not summary.get("failed") else "FAILED"
    finally:
        cl.set_terminated(parent, status)
    return parent
