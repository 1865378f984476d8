"""Deterministic disjoint splits of a task for weak-to-strong experiments."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from superalign.errors import DataError

SPLIT_NAMES = ("weak_train", "strong_train", "val", "test")


@dataclass(frozen=True)
class Splits:
    """Index arrays into a :class:`~superalign.data.task.TaskData`.

    - ``weak_train`` (split A): ground truth for the weak supervisor.
    - ``strong_train`` (split B): the weak supervisor labels it; the student trains on those
      labels, the ceiling on its ground truth.
    - ``val``: for early stopping (weak labels or, as an oracle, ground truth).
    - ``test``: held out; every reported accuracy is on it.
    """

    weak_train: np.ndarray
    strong_train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in SPLIT_NAMES}


def make_splits(
    labels: np.ndarray,
    sizes: dict[str, int],
    seed: int,
    task_name: str = "task",
    field_prefix: str = "splits",
) -> Splits:
    """Shuffle with ``seed`` and cut consecutive blocks of the requested sizes.

    Sizes of 0 are allowed for ``val`` only. Raises :class:`DataError` naming the split when the
    task is too small or a split ends up with a single class.
    """
    labels = np.asarray(labels)
    n = len(labels)
    need = sum(sizes[name] for name in SPLIT_NAMES)
    if need > n:
        largest = max(SPLIT_NAMES, key=lambda k: sizes[k])
        raise DataError(
            f"{field_prefix}",
            f"the splits ask for {need} examples ({', '.join(f'{k}={sizes[k]}' for k in SPLIT_NAMES)}) "
            f"but task '{task_name}' has {n}",
            f"lower {field_prefix}.{largest} (or the others) so they sum to at most {n}",
        )
    for name in SPLIT_NAMES:
        if sizes[name] < (0 if name == "val" else 2):
            raise DataError(f"{field_prefix}.{name}", f"is {sizes[name]}", "give at least 2 examples (val may be 0)")
    perm = np.random.default_rng(seed).permutation(n)
    out, start = {}, 0
    for name in SPLIT_NAMES:
        out[name] = np.sort(perm[start : start + sizes[name]])
        start += sizes[name]
        if sizes[name] and len(np.unique(labels[out[name]])) < 2:
            raise DataError(
                f"{field_prefix}.{name}",
                f"holds only one class after shuffling {n} examples of '{task_name}' (seed {seed})",
                f"make {field_prefix}.{name} larger, or check that the task has more than one label",
            )
    return Splits(**out)
