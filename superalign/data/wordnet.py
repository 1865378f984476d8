"""A small reader for the WordNet 3.0 database files (Debian's ``wordnet-base``).

Reads ``data.noun`` (synsets, lexicographer files, glosses, hypernym pointers) and ``cntlist.rev``
(sense-tagged corpus counts, a measure of how common a word sense is). No nltk needed.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# The lexicographer file numbers of WordNet 3.0 (lexnames(5WN)), nouns only.
NOUN_LEXNAMES = {
    3: "Tops", 4: "act", 5: "animal", 6: "artifact", 7: "attribute", 8: "body", 9: "cognition",
    10: "communication", 11: "event", 12: "feeling", 13: "food", 14: "group", 15: "location", 16: "motive",
    17: "object", 18: "person", 19: "phenomenon", 20: "plant", 21: "possession", 22: "process", 23: "quantity",
    24: "relation", 25: "shape", 26: "state", 27: "substance", 28: "time",
}


@dataclass(frozen=True)
class Synset:
    offset: str
    lexname: str
    words: tuple[str, ...]
    hypernyms: tuple[str, ...]
    gloss: str


@functools.lru_cache(maxsize=2)
def read_nouns(wordnet_dir: str) -> dict[str, Synset]:
    """Every noun synset by offset."""
    out: dict[str, Synset] = {}
    with open(Path(wordnet_dir) / "data.noun", encoding="latin-1") as f:
        for line in f:
            if line.startswith("  "):  # licence header
                continue
            head, _, gloss = line.partition(" | ")
            fields = head.split()
            n_words = int(fields[3], 16)
            words = tuple(fields[4 + 2 * i] for i in range(n_words))
            p = 4 + 2 * n_words
            n_ptr = int(fields[p])
            ptrs = [fields[p + 1 + 4 * i : p + 5 + 4 * i] for i in range(n_ptr)]
            hyper = tuple(ptr[1] for ptr in ptrs if ptr[0] in ("@", "@i"))
            out[fields[0]] = Synset(fields[0], NOUN_LEXNAMES.get(int(fields[1]), "?"), words, hyper, gloss.strip())
    return out


@functools.lru_cache(maxsize=2)
def sense_counts(wordnet_dir: str) -> Counter:
    """Tagged-corpus frequency per lemma (summed over its senses); 0 for words never tagged."""
    counts: Counter = Counter()
    path = Path(wordnet_dir) / "cntlist.rev"
    if path.exists():
        with open(path, encoding="latin-1") as f:
            for line in f:
                key, _, count = line.split()
                counts[key.split("%")[0].lower()] += int(count)
    return counts


def first_senses(wordnet_dir: str) -> dict[str, Synset]:
    """Each single-word noun lemma mapped to its most frequent (first-listed) synset.

    ``index.noun`` lists a lemma's synsets by decreasing frequency; the first is its usual sense.
    """
    synsets = read_nouns(wordnet_dir)
    out: dict[str, Synset] = {}
    with open(Path(wordnet_dir) / "index.noun", encoding="latin-1") as f:
        for line in f:
            if line.startswith("  "):
                continue
            fields = line.split()
            lemma, n_synsets, n_ptr = fields[0], int(fields[2]), int(fields[3])
            offsets = fields[6 + n_ptr : 6 + n_ptr + n_synsets]
            if "_" in lemma or not lemma.isalpha() or not offsets:
                continue
            out[lemma] = synsets[offsets[0]]
    return out
