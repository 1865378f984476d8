"""Shared fixtures: a small synthetic task with a lexical rule and label noise, and a temp store."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

POS = ["good", "great", "fine", "lovely", "superb", "nice"]
NEG = ["bad", "awful", "poor", "dull", "weak", "sad"]
FILLER = ["the", "a", "movie", "plot", "was", "and", "very", "it", "film"]


def make_toy_rows(n: int = 600, seed: int = 0, noise: float = 0.1) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        y = rng.randint(0, 1)
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
        words.insert(rng.randint(0, len(words)), rng.choice(POS if y else NEG))
        if rng.random() < noise:
            y = 1 - y
        rows.append((" ".join(words), y))
    return rows


@pytest.fixture(scope="session")
def toy_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "toy.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(make_toy_rows())
    return path


@pytest.fixture
def store(tmp_path):
    from superalign.store import Store

    return Store(tmp_path / "store")


def tiny_config(toy_csv: Path, **over) -> dict:
    """A W2S config on tiny random-init models that runs in seconds."""
    cfg = {
        "name": "toy",
        "task": str(toy_csv),
        "splits": {"weak_train": 120, "strong_train": 240, "val": 60, "test": 150},
        "weak": {"model": "tiny-bert", "regime": "probe", "epochs": 4},
        "strong": {"model": "tiny-llama", "regime": "probe", "epochs": 4},
        "seeds": [0, 1],
        "methods": [{"name": "naive"}],
        "n_boot": 200,
    }
    cfg.update(over)
    return cfg
