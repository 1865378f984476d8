"""Preference data: comparisons (``Pairs``) and loading them from files, hub data sets or rows.

Readers of preference data (the RLAIF/RLHF chain, W2S reward modelling, over-optimization) all go
through here: :func:`load_preference_rows` reads ``prompt``/``chosen``/``rejected`` rows in TRL's
formats, :func:`pairs_from_rows` turns rows into hard-labelled :class:`Pairs` with the chosen
response shown first or second at random.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from superalign.errors import ConfigError


@dataclass
class Pairs:
    """Comparisons: P(a better than b) for each (prompt, a, b)."""

    prompts: list[str]
    a: list[str]
    b: list[str]
    p: np.ndarray

    def __post_init__(self) -> None:
        self.p = np.asarray(self.p, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, idx: Sequence[int]) -> "Pairs":
        return Pairs([self.prompts[i] for i in idx], [self.a[i] for i in idx], [self.b[i] for i in idx], self.p[list(idx)])

    @classmethod
    def concat(cls, parts: list["Pairs"]) -> "Pairs":
        return cls(sum((x.prompts for x in parts), []), sum((x.a for x in parts), []), sum((x.b for x in parts), []),
                   np.concatenate([x.p for x in parts]))


def _as_text(value: Any) -> str:
    """A TRL standard (string) or conversational (list of messages) value as plain text."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(m, dict) and "content" in m for m in value):
        if len(value) == 1:
            return str(value[0]["content"])
        return "\n".join(f"{str(m.get('role', 'user')).capitalize()}: {m['content']}" for m in value)
    return "" if value is None else str(value)


def _split_shared_prefix(chosen: str, rejected: str) -> dict[str, str]:
    """TRL's implicit-prompt split for plain strings, moved back to a word boundary (so that "I'm
    sorry" and "I think" do not leave "I" in the prompt)."""
    from trl.data_utils import extract_prompt

    cut = len(extract_prompt({"chosen": chosen, "rejected": rejected})["prompt"])
    while cut > 0 and not (chosen[cut - 1].isspace() or chosen[cut - 1] == ":"):
        cut -= 1
    return {"prompt": chosen[:cut], "chosen": chosen[cut:], "rejected": rejected[cut:]}


def load_preference_rows(path: str, hub: bool = False) -> list[dict]:
    """``prompt``/``chosen``/``rejected`` rows from a local file or a hub data set.

    Reads TRL's preference formats: explicit or implicit prompt (``chosen``/``rejected`` that share
    it as a prefix, as in Anthropic/hh-rlhf: split off by TRL's ``extract_prompt``, at a word
    boundary for strings), standard strings or conversational lists of messages (flattened to text).
    """
    import pandas as pd
    from trl.data_utils import maybe_extract_prompt

    if hub:
        from datasets import load_dataset

        frame = load_dataset(path, split="train").to_pandas()
    else:
        p = Path(path)
        if not p.exists():
            raise ConfigError("preferences.path", f"file '{path}' does not exist", "give a JSONL/CSV/Parquet file")
        frame = (pd.read_json(p, lines=p.suffix == ".jsonl") if p.suffix in (".jsonl", ".json")
                 else pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p))
    for col in ("chosen", "rejected"):
        if col not in frame.columns:
            raise ConfigError(f"preferences.path: column '{col}'", f"is missing; columns are {list(frame.columns)}",
                              "provide chosen and rejected columns, and prompt unless both responses start with it "
                              "(TRL preference format)")
    cols = [c for c in ("prompt", "chosen", "rejected") if c in frame.columns]
    rows = []
    for r in frame[cols].to_dict("records"):
        r = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in r.items()}  # arrays from parquet/arrow
        if "prompt" not in r and isinstance(r["chosen"], str) and isinstance(r["rejected"], str):
            r = _split_shared_prefix(r["chosen"], r["rejected"])
        else:
            r = maybe_extract_prompt(r)
        rows.append({k: _as_text(r.get(k)).strip() if k == "prompt" else _as_text(r.get(k))
                     for k in ("prompt", "chosen", "rejected")})
    for i, r in enumerate(rows):
        for col in ("prompt", "chosen", "rejected"):
            if not isinstance(r[col], str) or not r[col].strip():
                raise ConfigError(f"preferences.path: row {i}.{col}", "is empty", "drop empty rows")
    return rows


def pairs_from_rows(rows: list[dict], seed: int) -> Pairs:
    """Hard-labelled pairs with the chosen response first or second at random (p = 1 or 0)."""
    rng = random.Random(seed)
    prompts, a, b, p = [], [], [], []
    for r in rows:
        first = rng.random() < 0.5
        prompts.append(r["prompt"])
        a.append(r["chosen"] if first else r["rejected"])
        b.append(r["rejected"] if first else r["chosen"])
        p.append(1.0 if first else 0.0)
    return Pairs(prompts, a, b, np.array(p))
