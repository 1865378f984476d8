"""The RLAIF chain's prompts: the shipped or a user's prompt set (tagged harmful / ordinary), its
splits, the policy prompts of a preference data set, and held-out pairs whose better side is known."""

from __future__ import annotations

import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from superalign.errors import ConfigError

TAGS = ("harmful", "ordinary")


@dataclass
class PromptSet:
    """Prompts by tag (``harmful`` measures harmlessness, ``ordinary`` helpfulness) and hand-labelled pairs."""

    harmful: list[str]
    ordinary: list[str]
    labelled_pairs: list[dict]

    def tag(self, prompt: str) -> str:
        """The prompt's tag: ``harmful``, ``ordinary``, or ``untagged`` (e.g. RLHF data's own prompts)."""
        if not hasattr(self, "_tags"):
            self._tags = {**{q: "ordinary" for q in self.ordinary}, **{q: "harmful" for q in self.harmful}}
        return self._tags.get(prompt, "untagged")


def load_prompt_set(path: str | None) -> PromptSet:
    """The shipped prompt set, or a YAML file with ``harmful``, ``ordinary`` and ``labelled_pairs``."""
    if path is None:
        data = yaml.safe_load(resources.files("superalign.rlaif").joinpath("data/prompts.yaml").read_text())
    else:
        p = Path(path)
        if not p.exists():
            raise ConfigError("prompts", f"file '{path}' does not exist", "give a YAML prompt set")
        data = yaml.safe_load(p.read_text()) or {}
    harmful, ordinary = list(data.get("harmful") or []), list(data.get("ordinary") or [])
    for i, row in enumerate(data.get("tagged") or []):  # optional: [{prompt, tag}] beside the two lists
        if not isinstance(row, dict) or not str(row.get("prompt", "")).strip():
            raise ConfigError(f"prompts.tagged[{i}].prompt", "is missing", "give each tagged entry a 'prompt'")
        if row.get("tag") not in TAGS:
            raise ConfigError(f"prompts.tagged[{i}].tag", f"is {row.get('tag')!r}, not a known tag",
                              f"use one of {', '.join(TAGS)}")
        (harmful if row["tag"] == "harmful" else ordinary).append(str(row["prompt"]))
    for field, items in (("harmful", harmful), ("ordinary", ordinary)):
        for i, s in enumerate(items):
            if not isinstance(s, str) or not s.strip():
                raise ConfigError(f"prompts.{field}[{i}]", "is empty", "remove empty prompts")
    if not harmful and not ordinary:
        raise ConfigError("prompts", "has no harmful or ordinary prompts", "add prompts under 'harmful:' or 'ordinary:'")
    pairs = list(data.get("labelled_pairs") or [])
    for i, row in enumerate(pairs):
        for col in ("prompt", "chosen", "rejected"):
            if not str(row.get(col, "")).strip():
                raise ConfigError(f"prompts.labelled_pairs[{i}].{col}", "is missing", f"give each pair a '{col}'")
    return PromptSet(harmful, ordinary, pairs)


def split_prompts(ps: PromptSet, sizes: dict[str, int], seed: int) -> dict[str, list[str]]:
    """Disjoint, half-harmful/half-ordinary prompt lists for each use, in a seeded order."""
    rng = random.Random(seed)
    pools = [list(ps.harmful), list(ps.ordinary)]
    for pool in pools:
        rng.shuffle(pool)
    out: dict[str, list[str]] = {}
    for name, n in sizes.items():
        take = []
        for k in range(n):
            pool = pools[k % 2] if pools[k % 2] else pools[1 - k % 2]
            if not pool:
                raise ConfigError(f"{name}.n_prompts", f"asks for more prompts than the set holds ({n})",
                                  "lower the n_prompts settings or add prompts")
            take.append(pool.pop())
        out[name] = take
    return out


def policy_prompts_from_pairs(prompts: list[str], n_eval: int, seed: int) -> tuple[list[str], list[str]]:
    """Held-out evaluation prompts and RL prompts, disjoint, from the distinct prompts of preference data."""
    distinct = list(dict.fromkeys(prompts))
    random.Random(seed).shuffle(distinct)
    if len(distinct) < n_eval + 1:
        raise ConfigError("eval.n_prompts", f"is {n_eval}, but the preference data has {len(distinct)} distinct "
                          "prompts and RL needs at least one more", f"lower it below {len(distinct)} or add data")
    return distinct[:n_eval], distinct[n_eval:]


# -- models -------------------------------------------------------------------------------------


def build_known_pairs(prompts: list[str], samples: list[list[str]], n: int, seed: int) -> list[dict]:
    """Up to ``n`` pairs with a known better side: each sample against itself word-shuffled ("shuffled")
    and against a sample for another prompt ("off-topic"); the better side is put first or second at
    random (``a_better``). Answers of under 4 words are shuffled by character; under 4 distinct
    characters, skipped."""
    rng = random.Random(seed)
    rows = []
    for i, (p, outs) in enumerate(zip(prompts, samples)):
        for j, text in enumerate(outs):
            words = text.split()
            units, sep = (words, " ") if len(words) >= 4 and len(set(words)) >= 2 else (list(text.strip()), "")
            if len(set(units)) < 4 and sep == "":
                continue
            shuffled = units[:]
            while shuffled == units:
                rng.shuffle(shuffled)
            others = [o for t, outs2 in enumerate(samples) if t != i for o in outs2[j:j + 1] if o.strip() != text.strip()]
            worse = [("shuffled", sep.join(shuffled))] + ([("off-topic", rng.choice(others))] if others else [])
            for kind, bad in worse:
                first = rng.random() < 0.5
                rows.append({"prompt": p, "a": text if first else bad, "b": bad if first else text,
                             "a_better": first, "kind": kind})
    rng.shuffle(rows)
    return rows[:n]


