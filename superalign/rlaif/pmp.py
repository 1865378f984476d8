"""Preference-model pre-training (PMP, Askell et al. 2021) on ranked answers.

Ranked answers are questions with several answers, each scored. Vote-based sources (Stack
Exchange style) are scored ``round(log2(1 + votes))``, +1 for the accepted answer, and -1 for an
answer with negative votes; every pair of answers with different scores becomes a binary
comparison. The PM is pre-trained on those pairs, then fine-tuned on the target preferences;
:func:`data_efficiency` measures what pre-training buys at several fine-tuning data sizes.

Offline, no vote data installs; :func:`wordnet_ranked_answers` builds ranked answers with real
ground truth from WordNet instead: for "What does the word X mean?" the word's own definition
ranks above the definition of a sibling concept (same parent), which ranks above an unrelated one.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from superalign.errors import ConfigError
from superalign.io import read_jsonl
from superalign.rlaif.pm import Pairs


def pmp_score(votes: int, accepted: bool = False) -> int:
    """round(log2(1 + votes)) for non-negative votes, -1 for negative ones; +1 if accepted."""
    base = round(math.log2(1 + votes)) if votes >= 0 else -1
    return int(base + (1 if accepted else 0))


def answer_score(answer: dict[str, Any], where: str) -> float:
    if "score" in answer:
        return float(answer["score"])
    if "pm_score" in answer:  # HuggingFaceH4/stack-exchange-preferences
        return float(answer["pm_score"])
    if "votes" in answer:
        return float(pmp_score(int(answer["votes"]), bool(answer.get("accepted", answer.get("selected", False)))))
    raise ConfigError(where, "an answer has no 'score', 'pm_score' or 'votes'", "give each answer a score or its votes")


def ranked_pairs(questions: Sequence[dict[str, Any]], *, max_pairs_per_question: int = 3, seed: int = 0) -> Pairs:
    """Binary comparisons from ranked answers; which member is shown first is randomised."""
    rng = random.Random(seed)
    prompts, a, b, p = [], [], [], []
    for qi, q in enumerate(questions):
        answers = q.get("answers") or []
        scored = [(answer_score(ans, f"ranked_answers[{qi}]"), str(ans["text"])) for ans in answers]
        combos = [(x, y) for i, x in enumerate(scored) for y in scored[i + 1:] if x[0] != y[0]]
        rng.shuffle(combos)
        for x, y in combos[:max_pairs_per_question]:
            better, worse = (x, y) if x[0] > y[0] else (y, x)
            first_better = rng.random() < 0.5
            prompts.append(str(q["question"]))
            a.append(better[1] if first_better else worse[1])
            b.append(worse[1] if first_better else better[1])
            p.append(1.0 if first_better else 0.0)
    if not prompts:
        raise ConfigError("ranked_answers", "no question has two answers with different scores",
                          "give questions with at least two differently scored answers")
    return Pairs(prompts, a, b, np.array(p))


def load_ranked_answers(source: str, *, limit: int | None = None) -> list[dict[str, Any]]:
    """Ranked answers from a JSONL file (``question``, ``answers: [{text, votes|score, accepted}]``)
    or a Hugging Face data set ``hf:NAME`` with the same columns (online)."""
    if source.startswith("hf:"):
        from datasets import load_dataset

        ds = load_dataset(source[3:], split="train", streaming=True)
        rows = []
        for row in ds:
            rows.append({"question": row.get("question", row.get("prompt")), "answers": row["answers"]})
            if limit and len(rows) >= limit:
                break
        return rows
    path = Path(source)
    if not path.exists():
        raise ConfigError("pmp.source", f"'{source}' is neither a file nor hf:NAME",
                          "give a JSONL of ranked answers, hf:NAME, or 'wordnet' for the offline default")
    rows = read_jsonl(path)
    return rows[:limit] if limit else rows


def wordnet_ranked_answers(n_questions: int, seed: int = 0) -> list[dict[str, Any]]:
    """Ranked definitions from WordNet: own (score 2) > sibling concept's (1) > unrelated (0)."""
    from superalign.assets import require
    from superalign.data.wordnet import first_senses, read_nouns

    wn = str(require("wordnet", "PMP source 'wordnet'"))
    synsets = read_nouns(wn)
    children: dict[str, list[str]] = {}
    for s in synsets.values():
        for h in s.hypernyms:
            children.setdefault(h, []).append(s.offset)
    words = sorted(first_senses(wn).items())
    rng = random.Random(seed)
    rng.shuffle(words)
    offsets = list(synsets)
    out = []
    for word, syn in words:
        siblings = [o for h in syn.hypernyms for o in children.get(h, []) if o != syn.offset]
        if not siblings:
            continue
        sib = synsets[rng.choice(siblings)]
        other = synsets[rng.choice(offsets)]
        if other.offset in (syn.offset, sib.offset):
            continue
        gloss = lambda s: s.gloss.split(";")[0].strip()  # noqa: E731
        out.append({"question": f"What does the word '{word.replace('_', ' ')}' mean?",
                    "answers": [{"text": gloss(syn), "score": 2}, {"text": gloss(sib), "score": 1},
                                {"text": gloss(other), "score": 0}]})
        if len(out) >= n_questions:
            break
    return out


def data_efficiency(make_pm: Callable[[], Any], pmp_pairs: Pairs | None, train: Pairs, test: Pairs,
                    sizes: Sequence[int], seeds: Sequence[int] = (0,), pmp_epochs: int | None = None) -> list[dict]:
    """PM accuracy on ``test`` after fine-tuning on the first ``n`` of ``train``, with vs without PMP.

    ``make_pm()`` returns a fresh untrained :class:`~superalign.rlaif.pm.PreferenceModel` (sharing
    one backbone is fine: only the head trains).
    """
    import copy

    rows = []
    pretrained_heads = {}
    for seed in seeds:
        if pmp_pairs is not None:
            pm = make_pm()
            pm.fit(pmp_pairs, seed=seed, epochs=pmp_epochs)
            pretrained_heads[seed] = pm.head
    for n in sizes:
        n = min(n, len(train))
        for seed in seeds:
            rng = np.random.default_rng([seed, n])
            idx = np.sort(rng.permutation(len(train))[:n])
            for pretrained in ([False, True] if pmp_pairs is not None else [False]):
                pm = make_pm()
                if pretrained:
                    pm.head = copy.deepcopy(pretrained_heads[seed])
                pm.fit(train.subset(idx), seed=seed, init_from_scratch=not pretrained)
                scores = pm.evaluate(test)
                rows.append({**scores, "n_test_pairs": scores["n"], "n": n, "seed": seed, "pmp": pretrained})
    return rows
