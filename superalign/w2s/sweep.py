"""Weak-to-strong sweeps: a grid of weak × strong × method × seed (× task) cells over one store.

A sweep is a base :class:`~superalign.w2s.config.W2SConfig` and the axes to vary. Every *cell* of
the grid is an ordinary one-seed, one-method W2S run (``run_w2s``); all cells point at the same
content-addressed :class:`~superalign.store.Store`, so what several cells need is computed once:
one weak supervisor's labels serve all its students, a model's features are extracted once, and
a ceiling serves every weak supervisor and method with the same student regime. Two processes
that need the same stage at once serialise on the store's file lock, so nothing is ever computed
twice, whichever executor runs the cells.

Executors (no scheduler of our own; in :mod:`superalign.w2s.executors`):

- ``local``: :class:`concurrent.futures.ProcessPoolExecutor` (spawn context), ``workers`` processes;
- ``ray``: one Ray task per cell (``max_retries``: a worker killed mid-stage is retried, and what it
  had finished is read back from the store).

Work order (``order="weak_first"``): one cell per distinct weak supervisor (task, weak model, seed)
goes first, so the first wave trains every weak supervisor in parallel instead of several workers
waiting on the lock of the same one; the other cells follow in grid order and find the labels ready.

After the cells, each (task, weak, strong, method) *group* is pooled over its seeds by running
``run_w2s`` once more with all of them: every stage is in the store by then, so this computes
nothing and gives the pipeline's own seed-averaged PGR with bootstrap CIs (the report's points).

Use from Python::

    from superalign.w2s.sweep import SweepConfig, run_sweep
    result = run_sweep(SweepConfig.from_yaml("sweep.yaml"), store_root="store", out_dir="runs/sweep",
                       workers=2)
    print(result.table())

A sweep YAML::

    name: scaling
    base: configs/my_w2s.yaml        # or an inline mapping of W2SConfig fields
    weak: [minilm-l6, smollm2-135m]  # zoo names / HF ids / dirs, or mappings of model fields
    strong: [smollm2-135m, gemma3-270m]
    methods: [naive, logconf]         # names of the base config's methods (default: all)
    seeds: [0, 1, 2]                  # default: the base config's seeds
    tasks: [wordnet_living]           # optional (default: the base config's task)
    skip_not_larger: true             # drop cells whose strong model is not larger than the weak one
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from superalign.config import config_error, deep_merge
from superalign.errors import ConfigError, SuperalignError
from superalign.io import read_json, write_json_atomic, write_text_atomic
from superalign.store.store import Store, canonical_json, default_store_root
from superalign.tracking import TrackingConfig, log_sweep_run
from superalign.w2s.config import W2SConfig
from superalign.w2s.executors import (  # noqa: F401  (WORKER_ENV, run_cell_job: importable from here as before)
    WORKER_ENV,
    _plain,
    cores,
    run_cell_job,
    run_local,
    run_ray,
    stage_counts,
)

log = logging.getLogger("superalign.w2s.sweep")

Executor = Literal["local", "ray"]
Order = Literal["weak_first", "grid"]

RESULTS_FILE = "sweep_results.json"
PROGRESS_WRITE_S = 5.0  # how often sweep_results.json is rewritten while cells finish


class SweepError(SuperalignError, RuntimeError):
    """Cells of a sweep failed (the others' results are written all the same)."""

    def __init__(self, field: str, problem: str, fix: str):
        self.field, self.problem, self.fix = field, problem, fix
        super().__init__(f"{field}: {problem}. Fix: {fix}")


# -- config --------------------------------------------------------------------------------------

ModelAxisEntry = str | dict[str, Any]


class SweepConfig(BaseModel):
    """A grid of W2S runs: a base config and the axes to vary (empty axis = the base's value)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "sweep"
    base: W2SConfig = Field(..., description="the W2S config every cell starts from: a mapping or a YAML path")
    weak: list[ModelAxisEntry] = Field(default_factory=list,
                                       description="weak supervisors: model names, or mappings of model fields "
                                                   "merged over base.weak (default: base.weak)")
    strong: list[ModelAxisEntry] = Field(default_factory=list,
                                         description="strong students, as for weak (default: base.strong)")
    methods: list[str] = Field(default_factory=list, description="names of base.methods (default: all of them)")
    seeds: list[int] = Field(default_factory=list, description="default: base.seeds")
    tasks: list[str] = Field(default_factory=list, description="default: [base.task]")
    skip_not_larger: bool = Field(True, description="skip cells whose strong model is not larger than the weak "
                                                    "one (zoo sizes; a model of unknown size is kept)")
    tracking: Optional[TrackingConfig] = Field(
        None, description="log the sweep to MLflow when it ends: {uri: ..., experiment: ...} (both optional)")

    @field_validator("base", mode="before")
    @classmethod
    def _base_from_path(cls, v: Any) -> Any:
        if isinstance(v, (str, Path)):
            return W2SConfig.from_yaml(v)
        return v

    @field_validator("weak", "strong")
    @classmethod
    def _model_entries(cls, v: list[ModelAxisEntry]) -> list[ModelAxisEntry]:
        names = []
        for entry in v:
            if isinstance(entry, dict) and not isinstance(entry.get("model"), str):
                raise ValueError(f"entry {entry!r} has no 'model' name; write {{model: NAME, ...}} or just NAME")
            names.append(entry if isinstance(entry, str) else entry["model"])
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"model(s) {dup} appear more than once; give each model once (run another sweep "
                             "for other training settings)")
        return v

    @field_validator("methods", "seeds", "tasks")
    @classmethod
    def _unique(cls, v: list) -> list:
        dup = sorted({str(x) for x in v if v.count(x) > 1})
        if dup:
            raise ValueError(f"repeated value(s) {dup}; list each once")
        return v

    @model_validator(mode="after")
    def _check_methods(self) -> "SweepConfig":
        known = [m.name for m in self.base.methods]
        missing = [m for m in self.methods if m not in known]
        if missing:
            raise ValueError(f"methods {missing} are not in the base config's methods {known}")
        return self

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> "SweepConfig":
        """Load a sweep YAML; a ``base:`` path is read relative to the sweep file's folder first."""
        path = Path(path)
        if not path.exists():
            raise ConfigError("sweep", f"file '{path}' does not exist", "give the path of a sweep YAML")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError("sweep", f"'{path}' is not a mapping of fields", "write 'field: value' lines")
        return cls.parse(deep_merge(data, overrides or {}), where=str(path), base_dir=path.parent)

    @classmethod
    def parse(cls, data: dict[str, Any], where: str = "sweep", base_dir: str | Path | None = None) -> "SweepConfig":
        """Validate, turning pydantic's errors into one that names the field and the fix.

        Relative paths (``base``, a task file) are tried against ``base_dir`` and then the working
        directory; task files are made absolute so that workers started elsewhere (Ray) find them.
        """
        data = dict(data)
        base = data.get("base")
        if base is None:
            raise ConfigError(f"{where}: base", "field required",
                              "add 'base:' (a path to a W2S YAML or an inline mapping of its fields)")
        if isinstance(base, (str, Path)):
            data["base"] = W2SConfig.from_yaml(_find(base, base_dir))
        elif isinstance(base, dict):
            data["base"] = W2SConfig.parse(base, where=f"{where}: base")
        elif not isinstance(base, W2SConfig):
            raise ConfigError(f"{where}: base", f"{type(base).__name__} given",
                              "give a path to a W2S YAML or a mapping of its fields")
        cfg: W2SConfig = data["base"]
        data["base"] = cfg.model_copy(update={"task": _task_path(cfg.task, base_dir)})
        if isinstance(data.get("tasks"), list):
            data["tasks"] = [_task_path(t, base_dir) if isinstance(t, str) else t for t in data["tasks"]]
        try:
            sweep = cls.model_validate(data)
        except ValidationError as exc:
            raise config_error(exc, where) from None
        expand(sweep)  # every cell's config must validate too: fail here, before anything runs
        return sweep

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _find(path: str | Path, base_dir: str | Path | None) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None and (Path(base_dir) / p).exists():
        return Path(base_dir) / p
    return p


def _task_path(task: str, base_dir: str | Path | None) -> str:
    """A task that names an existing file, as an absolute path (registered names stay as they are)."""
    p = _find(task, base_dir)
    return str(p.resolve()) if p.is_file() else task


def model_size(name: str) -> float | None:
    """Parameters (millions) of a zoo model; None for a model the zoo does not know."""
    from superalign.models.zoo import ZOO

    spec = ZOO.get(name)
    return spec.params_m if spec is not None else None


# -- the grid ------------------------------------------------------------------------------------

@dataclass
class Cell:
    """One W2S run of the grid: its config (one method, one seed) and its coordinates."""

    config: W2SConfig
    task: str
    weak: str
    strong: str
    method: str
    seed: int
    index: int = 0  # position in grid order

    @property
    def coords(self) -> dict[str, Any]:
        return {"task": self.task, "weak": self.weak, "strong": self.strong, "method": self.method,
                "seed": self.seed}

    @property
    def id(self) -> str:
        """Readable and unique: coordinates plus a hash of the whole cell config."""
        return f"{_slug(_task_name(self.task))}__{_slug(self.weak)}__{_slug(self.strong)}__{_slug(self.method)}" \
               f"__s{self.seed}-{config_digest(self.config)}"

    @property
    def group(self) -> tuple[str, str, str, str]:
        """The cells that differ only in seed form a group (pooled over seeds for the report)."""
        return (self.task, self.weak, self.strong, self.method)

    @property
    def weak_key(self) -> str:
        """What identifies the cell's weak supervisor (its stages are shared by all its students)."""
        return canonical_json({"task": self.config.task, "task_options": self.config.task_options,
                               "max_examples": self.config.max_examples, "splits": self.config.splits,
                               "split_seed": self.config.split_seed, "weak": self.config.weak,
                               "seed": self.seed})


def config_digest(cfg: W2SConfig) -> str:
    """Six hex digits over everything in a W2S config that shapes its results (not its name or tracking)."""
    data = cfg.model_dump(mode="json", exclude={"name", "tracking"})
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()[:6]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def _task_name(task: str) -> str:
    return Path(task).stem if Path(task).suffix else task


def _grid(sweep: SweepConfig) -> Iterator[tuple[Cell | None, dict[str, Any], str]]:
    """Every grid point in order (task, weak, strong, method, seed): (cell or None, coords, skip reason)."""
    base = sweep.base
    base_data = base.model_dump(mode="json")
    base_data.pop("tracking", None)  # tracking is the sweep's business, not each cell's
    tasks = sweep.tasks or [base.task]
    weaks = sweep.weak or [base.weak.model]
    strongs = sweep.strong or [base.strong.model]
    methods = sweep.methods or [m.name for m in base.methods]
    seeds = sweep.seeds or list(base.seeds)
    by_name = {m.name: m for m in base.methods}
    index = 0
    for task in tasks:
        for weak in weaks:
            weak_name, weak_over = _axis_entry(weak)
            for strong in strongs:
                strong_name, strong_over = _axis_entry(strong)
                for method in methods:
                    for seed in seeds:
                        coords = {"task": task, "weak": weak_name, "strong": strong_name, "method": method,
                                  "seed": seed}
                        ws, ss = model_size(weak_name), model_size(strong_name)
                        if sweep.skip_not_larger and ws is not None and ss is not None and ss <= ws:
                            yield None, coords, (f"strong {strong_name} ({ss}M) is not larger than weak "
                                                 f"{weak_name} ({ws}M)")
                            continue
                        data = dict(base_data)
                        data.update(task=task, seeds=[seed], prompting=[],
                                    methods=[by_name[method].model_dump(mode="json")],
                                    weak=deep_merge(base_data["weak"], weak_over),
                                    strong=deep_merge(base_data["strong"], strong_over))
                        cell = Cell(W2SConfig.parse(data, where=f"sweep cell {coords}"), task, weak_name,
                                    strong_name, method, seed, index)
                        cell.config = cell.config.model_copy(update={"name": cell.id})
                        index += 1
                        yield cell, coords, ""


def _axis_entry(entry: ModelAxisEntry) -> tuple[str, dict[str, Any]]:
    if isinstance(entry, str):
        return entry, {"model": entry}
    return entry["model"], dict(entry)


def expand(sweep: SweepConfig) -> list[Cell]:
    """The sweep's cells in grid order (task, weak, strong, method, seed), skipped ones left out."""
    return [cell for cell, _, _ in _grid(sweep) if cell is not None]


def skipped_cells(sweep: SweepConfig) -> list[dict[str, Any]]:
    """The grid points ``skip_not_larger`` leaves out, with the reason."""
    return [{**coords, "reason": why} for cell, coords, why in _grid(sweep) if cell is None]


def order_cells(cells: list[Cell], order: Order = "weak_first") -> list[Cell]:
    """The order cells are handed to the executor.

    ``weak_first``: one cell per distinct weak supervisor first (their strong models spread
    round-robin, so the first wave also extracts each strong model's features once), then the
    rest in grid order. ``grid``: grid order.
    """
    if order == "grid":
        return list(cells)
    if order != "weak_first":
        raise ConfigError("order", f"'{order}' is not an order", "use 'weak_first' or 'grid'")
    first: dict[str, Cell] = {}
    strong_use: dict[str, int] = {}
    by_weak: dict[str, list[Cell]] = {}
    for c in cells:
        by_weak.setdefault(c.weak_key, []).append(c)
    for key, group in by_weak.items():
        pick = min(group, key=lambda c: (strong_use.get(c.strong, 0), c.index))
        strong_use[pick.strong] = strong_use.get(pick.strong, 0) + 1
        first[key] = pick
    chosen = {id(c) for c in first.values()}
    return list(first.values()) + [c for c in cells if id(c) not in chosen]


# -- the sweep -----------------------------------------------------------------------------------

@dataclass
class SweepResult:
    """Per-cell records (rows + coordinates + stage counts), seed-pooled groups and a summary."""

    sweep: SweepConfig
    cells: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    summary: dict[str, Any]
    out_dir: Path | None = None

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [c for c in self.cells if c["status"] != "ok"]

    def as_dict(self) -> dict[str, Any]:
        return {"experiment": "sweep", "sweep": self.sweep.model_dump(mode="json"), "cells": self.cells,
                "groups": self.groups, "skipped": self.skipped, "summary": self.summary}

    def table(self) -> str:
        from superalign.report.sweep import sweep_table

        return sweep_table(self.as_dict())


def run_sweep(
    sweep: SweepConfig,
    *,
    store_root: str | Path | None = None,
    out_dir: str | Path,
    executor: Executor = "local",
    workers: int = 2,
    ray_address: str | None = None,
    threads: int | None = None,
    gpus: float = 0.0,
    max_retries: int = 2,
    order: Order = "weak_first",
    isolate: bool = False,
    raise_on_failure: bool = True,
) -> SweepResult:
    """Run (or resume) every cell of ``sweep`` in parallel over one store and aggregate them.

    - ``store_root``: the stage store every worker shares (default ``$SUPERALIGN_STORE`` or
      ``~/.cache/superalign/store``); with Ray on several machines it must be a shared file system
      with working ``flock``.
    - ``out_dir``: ``sweep_results.json`` (also written as ``results.json`` so that
      ``superalign report OUT`` renders it), ``table.txt``, ``cells/<id>/`` (each a normal run dir)
      and ``groups/<id>/`` (seed-pooled runs).
    - ``executor``: ``local`` (``workers`` spawned processes) or ``ray`` (``ray_address``: an
      existing cluster's address, else ``$RAY_ADDRESS``; ``"local"`` or nothing starts a local
      instance with ``workers × threads`` CPUs, so ``workers`` cells run at once). A Ray already initialised in this process is used as it is
      and left running; one started here is shut down at the end.
    - ``threads``: torch threads per cell (default: this machine's cores // workers, at least 1;
      with Ray also the CPUs each task asks for, so no node may have fewer).
    - ``gpus``: Ray only: GPUs each cell asks for (a fraction shares one; with 0, Ray hides the
      GPUs from the task). Local workers all see this machine's GPUs.
    - ``max_retries``: how often a cell whose worker died is run again.
    - ``order``: ``weak_first`` or ``grid`` (see :func:`order_cells`).
    - ``isolate``: give every cell its own fresh store under ``store_root/isolated/<cell id>``
      (no sharing; for measuring what sharing saves). Groups are not pooled then.
    - ``raise_on_failure``: raise :class:`SweepError` after writing the results if a cell failed.

    A rerun (after a kill, or to add cells) recomputes nothing that finished: every stage is
    looked up in the store first.
    """
    t0 = time.perf_counter()
    if workers < 1:
        raise ConfigError("workers", f"{workers} given", "use 1 or more worker processes")
    if gpus < 0:
        raise ConfigError("gpus", f"{gpus} given", "use 0 (CPU) or the GPUs (or a fraction of one) each cell needs")
    if max_retries < 0:
        raise ConfigError("max_retries", f"{max_retries} given", "use 0 or more")
    if executor not in ("local", "ray"):
        raise ConfigError("executor", f"'{executor}' is not an executor", "use 'local' or 'ray'")
    threads = threads or max(1, cores() // workers)
    root = Path(store_root or default_store_root()).expanduser().resolve()
    out = Path(out_dir).expanduser().resolve()
    (out / "cells").mkdir(parents=True, exist_ok=True)
    Store(root)  # creates the root before workers race for it
    cells = expand(sweep)
    skipped = skipped_cells(sweep)
    if not cells:
        raise ConfigError("sweep", "every cell of the grid was skipped (strong model not larger than the weak one)",
                          "add larger strong models or set skip_not_larger: false")
    ordered = order_cells(cells, order)
    jobs = []
    for rank, cell in enumerate(ordered):
        cell_store = root / "isolated" / cell.id if isolate else root
        jobs.append({"id": cell.id, "config": cell.config.model_dump(mode="json"), "store_root": str(cell_store),
                     "out_dir": str(out / "cells" / cell.id), "threads": threads, "order": rank})
    by_id = {c.id: c for c in cells}
    records: dict[str, dict[str, Any]] = {}
    meta = {"executor": executor, "workers": workers, "threads": threads, "gpus": gpus, "order": order,
            "isolate": isolate,
            "ray_address": ray_address if executor == "ray" else None, "store": str(root)}

    def partial() -> SweepResult:
        return _assemble(sweep, cells, records, [], skipped, meta, t0, out)

    last_write = [0.0]

    def done(record: dict[str, Any]) -> None:
        cell = by_id[record["id"]]
        records[cell.id] = {**record, "coords": cell.coords, "index": cell.index,
                            "weak_params_m": model_size(cell.weak), "strong_params_m": model_size(cell.strong),
                            "out_dir": str(out / "cells" / cell.id)}
        stages = record.get("stages") or {}
        log.info("[%d/%d] %s %s: %s computed, %s cached (%.1fs)%s", len(records), len(cells), cell.id,
                 record["status"], stages.get("computed", "?"), stages.get("cached", "?"), record.get("seconds") or 0,
                 f" — {record['error']}" if record.get("error") else "")
        if time.perf_counter() - last_write[0] > PROGRESS_WRITE_S:  # progress for a reader, not too often
            _write(out, partial(), final=False)
            last_write[0] = time.perf_counter()

    log.info("sweep %s: %d cells (%d skipped) on %s, %d worker(s) × %d thread(s), store %s", sweep.name, len(cells),
             len(skipped), executor, workers, threads, root)
    if executor == "local":
        run_local(jobs, workers, threads, max_retries, done)
    else:
        run_ray(jobs, workers, threads, gpus, max_retries, ray_address, done)
    seconds_cells = time.perf_counter() - t0
    groups = [] if isolate else _pool_groups(cells, records, root, out)
    if groups:
        log.info("pooled %d group(s) over their seeds from the store (%d stage(s) computed)", len(groups),
                 sum((g.get("stages") or {}).get("computed", 0) for g in groups))
    result = _assemble(sweep, cells, records, groups, skipped, meta, t0, out)
    result.summary["seconds_cells"] = round(seconds_cells, 2)
    _write(out, result, final=True)
    if sweep.tracking is not None:
        log_sweep_run(result, out, tracking_uri=sweep.tracking.uri, experiment=sweep.tracking.experiment)
    if result.failed and raise_on_failure:
        first = result.failed[0]
        raise SweepError(f"sweep cell {first['id']}",
                         f"{len(result.failed)} of {len(cells)} cells failed; first: {first.get('error')}",
                         f"see cells[].error in {out / RESULTS_FILE}, fix the cause and rerun the sweep "
                         "(finished stages are cached)")
    return result


def _pool_groups(cells: list[Cell], records: dict[str, dict], root: Path, out: Path) -> list[dict[str, Any]]:
    """Seed-pooled W2S rows per (task, weak, strong, method), from stages already in the store."""
    from superalign.w2s.pipeline import run_w2s

    groups: dict[tuple, list[Cell]] = {}
    for c in cells:
        groups.setdefault(c.group, []).append(c)
    pooled = []
    with _quiet("superalign.w2s.pipeline", "superalign.w2s", "superalign.store"):
        for (task, weak, strong, method), members in groups.items():
            pooled.append(_pool_group(task, weak, strong, method, members, records, root, out, run_w2s))
    return pooled


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Keep the pooling runs' per-stage 'cached' lines out of the log (they say nothing new)."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    own_level, effective = log.level, log.getEffectiveLevel()
    for lg in loggers:
        lg.setLevel(max(logging.WARNING, lg.getEffectiveLevel()))
    log.setLevel(effective)  # this module's progress lines keep their level
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        log.setLevel(own_level)


def _pool_group(task: str, weak: str, strong: str, method: str, members: list[Cell], records: dict[str, dict],
                root: Path, out: Path, run_w2s) -> dict[str, Any]:
    ok = [c for c in members if records.get(c.id, {}).get("status") == "ok"]
    cfg = members[0].config.model_copy(update={"seeds": [c.seed for c in ok] or [c.seed for c in members]})
    gid = f"{_slug(_task_name(task))}__{_slug(weak)}__{_slug(strong)}__{_slug(method)}-{config_digest(cfg)}"
    entry: dict[str, Any] = {"id": gid, "coords": {"task": task, "weak": weak, "strong": strong, "method": method},
                             "weak_params_m": model_size(weak), "strong_params_m": model_size(strong),
                             "seeds": [c.seed for c in ok], "cells": [c.id for c in members], "row": None,
                             "summary": {}, "stages": None}
    if not ok:
        entry["error"] = "no cell of this group finished"
        return entry
    store = Store(root)
    try:
        res = run_w2s(cfg.model_copy(update={"name": gid}), out_dir=out / "groups" / gid, store=store)
        entry.update(row=json.loads(json.dumps(res.rows[0], default=_plain)),
                     summary=json.loads(json.dumps({k: res.summary[k] for k in ("weak", "n_test", "seeds")},
                                                   default=_plain)),
                     out_dir=str(out / "groups" / gid))
    except Exception as exc:  # noqa: BLE001 - a group that cannot be pooled is reported, not fatal
        entry["error"] = f"{type(exc).__name__}: {exc}"
    entry["stages"] = {k: v for k, v in stage_counts(store).items() if k in ("computed", "cached")}
    return entry


def _assemble(sweep: SweepConfig, cells: list[Cell], records: dict[str, dict], groups: list[dict],
              skipped: list[dict], meta: dict[str, Any], t0: float, out: Path) -> SweepResult:
    ordered = [records[c.id] for c in cells if c.id in records]
    keys = [k for r in ordered for k in ((r.get("stages") or {}).get("computed_keys") or [])]
    by_kind: dict[str, dict[str, int]] = {}
    for r in ordered:
        for kind, n in ((r.get("stages") or {}).get("by_kind") or {}).items():
            slot = by_kind.setdefault(kind, {"computed": 0, "cached": 0})
            slot["computed"] += n["computed"]
            slot["cached"] += n["cached"]
    summary = {
        **meta,
        "name": sweep.name,
        "cells": len(cells), "finished": len(ordered), "ok": sum(r["status"] == "ok" for r in ordered),
        "failed": sum(r["status"] != "ok" for r in ordered), "skipped": len(skipped),
        "stages": {"computed": len(keys), "cached": sum((r.get("stages") or {}).get("cached", 0) for r in ordered),
                   "distinct_computed": len(set(keys)), "by_kind": by_kind},
        "groups_stages_computed": sum((g.get("stages") or {}).get("computed", 0) for g in groups),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return SweepResult(sweep, ordered, groups, skipped, summary, out)


def _write(out: Path, result: SweepResult, final: bool) -> None:
    data = result.as_dict()
    data["summary"]["complete"] = final
    write_json_atomic(out / RESULTS_FILE, data)
    write_json_atomic(out / "results.json", data)  # what `superalign report OUT` reads
    if final:
        write_text_atomic(out / "sweep.yaml", result.sweep.to_yaml())
        write_text_atomic(out / "table.txt", result.table() + "\n")


def load_sweep_results(out_dir: str | Path) -> dict[str, Any]:
    """Read ``out_dir/sweep_results.json`` (what :func:`run_sweep` wrote)."""
    path = Path(out_dir) / RESULTS_FILE
    if not path.exists():
        raise ConfigError("OUT", f"'{out_dir}' has no {RESULTS_FILE}", "point at a sweep's output directory")
    return read_json(path)


# -- command line ----------------------------------------------------------------------------------
