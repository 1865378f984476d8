"""Task registry, in the manner of lm-evaluation-harness: a name maps to a loader.

``load_task(name)`` accepts

- a registered name (``superalign tasks list``): offline defaults that ship real labelled data;
- a path to a local ``.csv``, ``.jsonl``/``.json`` or ``.parquet`` file with ``text`` and ``label``
  columns (or ``text``/``text_pair``; other names through ``text_column=`` etc.);
- ``hf:OWNER/NAME`` (or any name containing ``/``): a Hugging Face data set, loaded online.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from superalign.data.task import TaskData
from superalign.errors import UnknownNameError


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
    loader: Callable[..., TaskData]
    source: str
    asset: str | None = None  # offline asset it needs (``superalign assets install NAME``)
    difficulty: str = ""  # what the per-example difficulty score means, if the task has one


TASKS: dict[str, TaskSpec] = {}


def register_task(name: str, *, description: str, source: str, asset: str | None = None, difficulty: str = ""):
    """Decorator: register ``fn(**options) -> TaskData`` under ``name``."""

    def wrap(fn: Callable[..., TaskData]) -> Callable[..., TaskData]:
        TASKS[name] = TaskSpec(name, description, fn, source, asset, difficulty)
        return fn

    return wrap


def list_tasks() -> list[TaskSpec]:
    _load_builtin()
    return [TASKS[k] for k in sorted(TASKS)]


def load_task(name: str, /, *, max_examples: int | None = None, seed: int = 0, **options: Any) -> TaskData:
    """Load a task by registered name, local path, or ``hf:`` data set name.

    ``max_examples`` keeps a class-balanced deterministic subsample (``seed``) so that large data
    sets load into a CPU-sized experiment.
    """
    _load_builtin()
    from superalign.data import files

    if name in TASKS:
        spec = TASKS[name]
        if spec.asset:
            from superalign.assets import require

            require(spec.asset, f"task '{name}'")
        task = spec.loader(**options)
    elif Path(name).suffix.lower() in files.SUFFIXES or Path(name).exists():
        task = files.load_local(name, **options)
    elif name.startswith("hf:") or "/" in name:
        task = files.load_hub(name.removeprefix("hf:"), **options)
    else:
        raise UnknownNameError(
            "task",
            name,
            list(TASKS),
            "use a registered task (superalign tasks list), a path to a .csv/.jsonl/.parquet file with "
            "text,label columns, or a Hugging Face data set as hf:OWNER/NAME",
        )
    if max_examples is not None and max_examples < len(task):
        task = task.subset(balanced_subsample(task.labels, max_examples, seed))
    return task


def check_task(name: str, field: str = "task") -> None:
    """Check, without reading the rows, that ``name`` can be loaded; raise an error naming ``field`` and the fix.

    A registered task needs its offline asset; a local file must exist; an ``hf:`` data set must be
    in the local cache when the hub is off (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``) and on the
    hub otherwise.
    """
    _load_builtin()
    from superalign.data import files
    from superalign.errors import DataError

    if not isinstance(name, str) or not name.strip():
        raise UnknownNameError(field, str(name), list(TASKS), "give a registered task, a local file or hf:OWNER/NAME")
    if name in TASKS:
        spec = TASKS[name]
        if spec.asset:
            from superalign.assets import require

            require(spec.asset, f"{field} '{name}'")
        return
    path = Path(name).expanduser()
    if path.suffix.lower() in files.SUFFIXES or path.exists():
        if not path.is_file():
            raise DataError(field, f"file '{name}' does not exist",
                            f"give the path of an existing {'/'.join(sorted(files.SUFFIXES))} file with text,label "
                            "columns, or a registered task (superalign tasks list)")
        return
    if name.startswith("hf:") or "/" in name:
        repo = name.removeprefix("hf:")
        if hub_dataset_cached(repo):
            return
        from superalign.models.loading import check_hub_id

        check_hub_id(repo, field, "dataset", offline_vars=("HF_DATASETS_OFFLINE",))
        return
    raise UnknownNameError(field, name, list(TASKS), "use a registered task (superalign tasks list), a path to a "
                           ".csv/.jsonl/.parquet file with text,label columns, or a Hugging Face data set as "
                           "hf:OWNER/NAME")


def hub_dataset_cached(repo: str) -> bool:
    """Whether the ``datasets`` library has prepared ``repo`` in its own cache (``HF_DATASETS_CACHE``)."""
    try:
        from datasets import config
    except ImportError:
        return False
    root = Path(config.HF_DATASETS_CACHE)
    return (root / repo.replace("/", "___")).is_dir()


def balanced_subsample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` indices, as close to class-balanced as the data allows, in a seeded order."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    quota = {c: min(len(per[c]), n // len(classes)) for c in classes}
    left = n - sum(quota.values())
    for c in sorted(classes, key=lambda c: -len(per[c])):  # fill from the classes that have spare rows
        extra = min(left, len(per[c]) - quota[c])
        quota[c] += extra
        left -= extra
    idx = np.concatenate([per[c][: quota[c]] for c in classes])
    return np.sort(idx)


_LOADED = False


def _load_builtin() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        import superalign.data.builtin  # noqa: F401  (registers the offline tasks)
        import superalign.data.chess  # noqa: F401  (registers chess_best_move)
