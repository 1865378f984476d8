"""The in-memory form of a labelled classification task, and its validation."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from superalign.errors import DataError


@dataclass
class TaskData:
    """Texts (or text pairs) with integer labels in ``range(len(label_names))``.

    ``difficulty`` is an optional per-example score (higher = harder) that a source knows from its
    ground truth (e.g. SpamAssassin's "hard ham", a WordNet word's rarity); oversight experiments
    split on it. ``prompt`` and ``verbalizers`` let a causal LM score the task zero- or few-shot.
    """

    name: str
    texts: list[str]
    labels: np.ndarray
    label_names: list[str]
    text_pairs: list[str] | None = None
    difficulty: np.ndarray | None = None
    prompt: str = "{text}\nAnswer:"
    verbalizers: list[str] = field(default_factory=list)
    description: str = ""

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.difficulty is not None:
            self.difficulty = np.asarray(self.difficulty, dtype=np.float64)
        if not self.verbalizers:
            self.verbalizers = [f" {n}" for n in self.label_names]
        validate(self)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def subset(self, idx: Sequence[int] | np.ndarray) -> "TaskData":
        idx = np.asarray(idx, dtype=np.int64)
        return replace(
            self,
            texts=[self.texts[i] for i in idx],
            labels=self.labels[idx],
            text_pairs=None if self.text_pairs is None else [self.text_pairs[i] for i in idx],
            difficulty=None if self.difficulty is None else self.difficulty[idx],
        )

    def inputs(self) -> list[str]:
        """Texts joined with their pair (if any) for models that take one string."""
        if self.text_pairs is None:
            return list(self.texts)
        return [f"{a}\n{b}" for a, b in zip(self.texts, self.text_pairs)]

    def fingerprint(self) -> str:
        """sha256 over texts, pairs, labels and label names: part of every stage key."""
        h = hashlib.sha256()
        h.update("\x1f".join(self.label_names).encode())
        for i, text in enumerate(self.texts):
            h.update(text.encode("utf-8", "surrogatepass"))
            h.update(b"\x1e")
            if self.text_pairs is not None:
                h.update(self.text_pairs[i].encode("utf-8", "surrogatepass"))
                h.update(b"\x1d")
        h.update(self.labels.tobytes())
        return h.hexdigest()[:20]

    def render_prompt(self, i: int) -> str:
        pair = self.text_pairs[i] if self.text_pairs is not None else ""
        return self.prompt.format(text=self.texts[i], text_pair=pair)

    def to_hf(self):  # -> datasets.Dataset
        """The task as a Hugging Face ``datasets.Dataset`` (columns text, [text_pair], label)."""
        from datasets import Dataset

        cols: dict[str, list] = {"text": self.texts, "label": self.labels.tolist()}
        if self.text_pairs is not None:
            cols["text_pair"] = self.text_pairs
        if self.difficulty is not None:
            cols["difficulty"] = self.difficulty.tolist()
        return Dataset.from_dict(cols)


def validate(task: TaskData) -> None:
    """Raise :class:`DataError` naming the field and the fix when a task cannot be used."""
    n = len(task.texts)
    if n == 0:
        raise DataError(f"task '{task.name}'", "has no examples", "check the file or the data set split you pointed at")
    if len(task.label_names) < 2:
        raise DataError(
            f"task '{task.name}'.label_names",
            f"declares {len(task.label_names)} class(es)",
            "declare at least two classes (label_names: [negative, positive])",
        )
    if task.labels.shape != (n,):
        raise DataError(f"task '{task.name}'.label", f"has {task.labels.shape} labels for {n} texts", "give one label per text")
    bad = (task.labels < 0) | (task.labels >= len(task.label_names))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"task '{task.name}'.label",
            f"row {first} has label {int(task.labels[first])}, outside the declared classes 0..{len(task.label_names) - 1} "
            f"({', '.join(task.label_names)})",
            "map labels to 0..K-1 or declare the classes with label_names",
        )
    if task.text_pairs is not None and len(task.text_pairs) != n:
        raise DataError(f"task '{task.name}'.text_pair", f"has {len(task.text_pairs)} entries for {n} texts", "give one pair per text")
    if task.difficulty is not None and task.difficulty.shape != (n,):
        raise DataError(f"task '{task.name}'.difficulty", "does not match the number of texts", "give one score per text")
    empty = [i for i, t in enumerate(task.texts) if not isinstance(t, str) or not t.strip()]
    if empty:
        raise DataError(
            f"task '{task.name}'.text",
            f"{len(empty)} empty or non-string text(s), first at row {empty[0]}",
            "drop empty rows before loading, or fill them",
        )
    if len(task.verbalizers) != len(task.label_names):
        raise DataError(
            f"task '{task.name}'.verbalizers",
            f"has {len(task.verbalizers)} entries for {len(task.label_names)} classes",
            "give one verbalizer per class",
        )
