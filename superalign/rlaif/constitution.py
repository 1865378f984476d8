"""Constitutions: principles with a critique request, a revision request and a comparison question.

Two file formats load (YAML or JSON):

- superalign's own: ``{name: ..., principles: [{name, critique, revision, question}, ...]}``;
- the list of ``{critic, revision}`` pairs used for Constitutional AI's critique/revision
  instructions (``critique`` is accepted for ``critic``). Such entries have no comparison
  question; the labeller then uses a generic one, and says so.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from superalign.errors import ConfigError

GENERIC_QUESTION = "Which of these assistant responses is more helpful, honest and harmless?"


@dataclass(frozen=True)
class Principle:
    name: str
    critique: str
    revision: str
    question: str = ""

    def comparison_question(self) -> str:
        return self.question or GENERIC_QUESTION


@dataclass
class Constitution:
    name: str
    principles: list[Principle] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.principles:
            raise ConfigError("constitution.principles", "is empty", "give at least one principle")

    def sample(self, rng: random.Random, k: int = 1) -> list[Principle]:
        """``k`` principles drawn without replacement (with replacement if k > len)."""
        if k <= len(self.principles):
            return rng.sample(self.principles, k)
        return [rng.choice(self.principles) for _ in range(k)]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "principles": [p.__dict__ for p in self.principles]}


def _principle(entry: Any, i: int, where: str, need_question: bool) -> Principle:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}[{i}]", f"is a {type(entry).__name__}", "write each principle as a mapping")
    critique = entry.get("critique", entry.get("critic"))
    revision = entry.get("revision")
    for key, value in (("critique", critique), ("revision", revision)):
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}[{i}].{key}", "is missing or empty", f"add a '{key}' request to the principle")
    question = entry.get("question", "")
    if need_question and not (isinstance(question, str) and question.strip()):
        raise ConfigError(f"{where}[{i}].question", "is missing",
                          "add a comparison question, e.g. 'Which response is less harmful?'")
    return Principle(str(entry.get("name", f"principle-{i}")), critique.strip(), revision.strip(), str(question).strip())


def parse_constitution(data: Any, where: str = "constitution") -> Constitution:
    """Build a constitution from parsed YAML/JSON in either supported format."""
    if isinstance(data, list):  # [{critic, revision}, ...]
        return Constitution(where, [_principle(e, i, where, need_question=False) for i, e in enumerate(data)])
    if isinstance(data, dict) and "principles" in data:
        entries = data["principles"]
        if not isinstance(entries, list):
            raise ConfigError(f"{where}.principles", "is not a list", "write principles as a list of mappings")
        return Constitution(str(data.get("name", where)),
                            [_principle(e, i, f"{where}.principles", need_question=True) for i, e in enumerate(entries)])
    raise ConfigError(where, "is neither a list of {critic, revision} pairs nor a mapping with 'principles'",
                      "see superalign/rlaif/data/constitution.yaml for the format")


def load_constitution(path: str | Path | None = None) -> Constitution:
    """Load a constitution file (YAML or JSON); ``None`` gives the shipped default."""
    if path is None:
        text = resources.files("superalign.rlaif").joinpath("data/constitution.yaml").read_text()
        return parse_constitution(yaml.safe_load(text), "default")
    path = Path(path)
    if not path.exists():
        raise ConfigError("constitution", f"file '{path}' does not exist", "give a YAML or JSON constitution path")
    text = path.read_text()
    data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    return parse_constitution(data, path.stem)
