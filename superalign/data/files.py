"""Tasks from local files (CSV, JSONL, Parquet) and from Hugging Face data sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from superalign.data.task import TaskData
from superalign.errors import DataError

SUFFIXES = {".csv", ".jsonl", ".json", ".parquet", ".tsv"}


def from_frame(
    frame: Any,
    *,
    name: str,
    text_column: str = "text",
    label_column: str = "label",
    pair_column: str | None = None,
    difficulty_column: str | None = None,
    label_names: list[str] | None = None,
    prompt: str | None = None,
    verbalizers: list[str] | None = None,
    where: str = "",
) -> TaskData:
    """Build a task from a pandas DataFrame, checking columns and labels.

    String labels are mapped to class indices in sorted order (or in the order of
    ``label_names``); integer labels must lie in ``0..len(label_names)-1``.
    """
    where = where or f"task '{name}'"
    if pair_column is None and "text_pair" in frame.columns:
        pair_column = "text_pair"
    for field, col in (("text_column", text_column), ("label_column", label_column), ("pair_column", pair_column),
                       ("difficulty_column", difficulty_column)):
        if col is not None and col not in frame.columns:
            raise DataError(
                f"{where}.{field}",
                f"column '{col}' is missing; the columns are {list(frame.columns)}",
                f"rename a column to '{col}' or pass {field}=<one of the columns above>",
            )
    frame = frame.reset_index(drop=True)
    raw = frame[label_column]
    if raw.isna().any():
        row = int(np.flatnonzero(raw.isna().to_numpy())[0])
        raise DataError(f"{where}.{label_column}", f"row {row} has no label", "drop unlabelled rows")
    if raw.dtype.kind in "OUS" or str(raw.dtype) in ("string", "str", "category"):
        values = [str(v) for v in raw]
        if not label_names:
            _check_string_labels(values, f"{where}.{label_column}")
        names = list(label_names) if label_names else sorted(set(values))
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise DataError(
                f"{where}.{label_column}",
                f"labels {unknown[:5]} are not among the declared classes {names}",
                "add them to label_names or fix the rows",
            )
        labels = np.array([names.index(v) for v in values], dtype=np.int64)
    else:
        vals = raw.to_numpy()
        if not np.all(np.equal(np.mod(vals, 1), 0)):
            raise DataError(f"{where}.{label_column}", "holds non-integer numbers", "use integer class ids 0..K-1 or class names")
        labels = vals.astype(np.int64)
        if label_names is None and len(np.unique(labels)) < 2:
            raise DataError(f"{where}.{label_column}", f"holds one class only ({int(labels[0])})",
                            "give rows of at least two classes")
        k = max(int(labels.max()) + 1, 2) if label_names is None else len(label_names)
        names = list(label_names) if label_names else [str(i) for i in range(k)]
    texts = frame[text_column].tolist()
    pairs = frame[pair_column].astype(str).tolist() if pair_column else None
    diff = frame[difficulty_column].to_numpy(dtype=float) if difficulty_column else None
    kwargs: dict[str, Any] = {}
    if prompt:
        kwargs["prompt"] = prompt
    if verbalizers:
        kwargs["verbalizers"] = list(verbalizers)
    return TaskData(name=name, texts=texts, labels=labels, label_names=names, text_pairs=pairs, difficulty=diff, **kwargs)


def _is_int(value: str) -> bool:
    try:
        return float(value) == int(float(value))
    except (ValueError, OverflowError):
        return False


def _check_string_labels(values: list[str], field: str) -> None:
    """Catch label columns that are not class names: ids mixed with names, or free text."""
    distinct = sorted(set(values))
    ints = [v for v in distinct if _is_int(v)]
    if ints and len(ints) < len(distinct):
        names = [v for v in distinct if not _is_int(v)]
        raise DataError(field, f"mixes integer class ids {ints[:3]} with class names {names[:3]}",
                        "use either integer ids 0..K-1 or class names in every row (or declare label_names)")
    if len(distinct) > max(10, len(values) // 2):
        raise DataError(field, f"holds {len(distinct)} distinct values in {len(values)} rows, which looks like text, "
                        "not class labels", "point label_column at the column of class labels (or declare label_names)")
    if len(distinct) < 2:
        raise DataError(field, f"holds one class only ({distinct[0]!r})" if distinct else "is empty",
                        "give rows of at least two classes")


def load_local(path: str | Path, **options: Any) -> TaskData:
    """A task from a local file; options as in :func:`from_frame`."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise DataError("task", f"file '{path}' does not exist", "give the path of a .csv, .jsonl or .parquet file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame = pd.read_csv(path)
    elif suffix == ".tsv":
        frame = pd.read_csv(path, sep="\t")
    elif suffix in (".jsonl", ".json"):
        frame = pd.read_json(path, lines=suffix == ".jsonl")
    elif suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        raise DataError("task", f"cannot read '{path.suffix}' files", f"use one of {sorted(SUFFIXES)}")
    return from_frame(frame, name=options.pop("name", path.stem), where=f"file '{path}'", **options)


def load_hub(name: str, *, split: str = "train", config: str | None = None, revision: str | None = None,
             **options: Any) -> TaskData:
    """A task from a Hugging Face data set (needs a hub; offline this raises the library's error).

    Class names come from the data set's ``ClassLabel`` feature when it has one.
    """
    from datasets import ClassLabel, load_dataset

    ds = load_dataset(name, config, split=split, revision=revision)
    label_column = options.get("label_column", "label")
    feature = ds.features.get(label_column)
    if isinstance(feature, ClassLabel) and "label_names" not in options:
        options["label_names"] = list(feature.names)
    return from_frame(ds.to_pandas(), name=options.pop("name", name), where=f"data set '{name}'", **options)
