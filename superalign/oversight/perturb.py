"""Targeted perturbations with real ground truth: clean (question, answer) items and flawed variants.

An :class:`ItemFamily` builds clean items by a program (so the correct answer is known), and a
:class:`Perturbation` turns a clean item into a flawed one whose :class:`Flaw` says what was changed,
where (a character span in the flawed answer), how subtle it is and which words betray it. Both are
registries: add your own with :func:`register_family` / :func:`register_perturbation`.

Built-in families:

- ``wordnet`` (needs the offline WordNet asset): "What does the word 'X' mean?" answered with the
  first sense's WordNet definition. Perturbations: ``sibling_definition`` (the definition of a
  concept under the same hypernym: subtle), ``unrelated_definition`` (a definition from another
  lexicographer file: blatant), ``keyword_swap`` (one noun of the definition replaced by a sibling
  noun, e.g. *mammal* -> *bird*: subtle, local) and ``antonym_swap`` (an adjective replaced by its
  WordNet antonym, e.g. *warmest* stays but *large* -> *small*: subtle, local).
- ``arithmetic`` (no assets): "What is 347 + 589?" answered "347 + 589 = 936". Perturbations:
  ``wrong_digit`` (one digit of the result changed) and ``transposed_digits`` (two adjacent
  digits of the result swapped).

Everything is reproducible from a seed: the clean items from ``random.Random(seed)``, each flaw
from a generator seeded by (seed, item id, perturbation name).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

from superalign.errors import ConfigError, DataError, UnknownNameError

Severity = Literal["subtle", "blatant"]


# --- items and flaws ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Flaw:
    """What a perturbation changed: enough to grade a critique against ground truth."""

    perturbation: str  # the perturbation's registered name
    kind: str  # e.g. "wrong concept", "swapped word", "wrong digit"
    severity: Severity
    description: str  # one sentence a person can read, e.g. "'bird' replaces 'mammal'"
    location: tuple[int, int]  # character span [start, end) in the flawed answer
    original: str  # the text that was replaced
    replacement: str  # what replaced it
    keywords: tuple[str, ...] = ()  # words a critique that found the flaw is likely to name


@dataclass(frozen=True)
class Item:
    """A question with an answer; ``flaw`` is None for the correct answer."""

    id: str  # stable across runs, e.g. "wn:summer"; a flawed variant shares its clean item's id
    family: str
    question: str
    answer: str
    flaw: Flaw | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def flawed(self) -> bool:
        return self.flaw is not None

    def text(self) -> str:
        """What a discriminator reads: ``Question: ...\\nAnswer: ...``."""
        return f"Question: {self.question}\nAnswer: {self.answer}"

    def with_flaw(self, answer: str, flaw: Flaw) -> "Item":
        return replace(self, answer=answer, flaw=flaw)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["flaw"] is not None:
            d["flaw"]["location"] = list(d["flaw"]["location"])
            d["flaw"]["keywords"] = list(d["flaw"]["keywords"])
        return d


@dataclass(frozen=True)
class ItemPair:
    """A clean item and its flawed variant (same question)."""

    clean: Item
    flawed: Item


def items_fingerprint(items: Sequence[Item]) -> str:
    """sha256 over the items' content (questions, answers, flaws): part of every stage key."""
    text = json.dumps([i.to_dict() for i in items], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class NotApplicable(Exception):
    """Raised by :meth:`Perturbation.apply` when an item offers nothing to perturb."""


# --- the pluggable interfaces -------------------------------------------------------------------

class Perturbation(ABC):
    """Turns a clean item into a flawed one.

    Subclasses set ``name`` (registry key), ``families`` (the item families they understand; empty
    means any) and ``severity``, and implement :meth:`apply`, which returns ``item.with_flaw(...)``
    or raises :class:`NotApplicable`. ``apply`` must be a function of (item, rng) only.
    """

    name: ClassVar[str]
    families: ClassVar[tuple[str, ...]] = ()
    severity: ClassVar[Severity] = "subtle"

    def applies_to(self, item: Item) -> bool:
        return not self.families or item.family in self.families

    @abstractmethod
    def apply(self, item: Item, rng: random.Random) -> Item:
        """A flawed variant of ``item`` whose ``flaw`` describes the change."""


class ItemFamily(ABC):
    """Builds clean items whose answers are correct by construction."""

    name: ClassVar[str]
    default_perturbations: ClassVar[tuple[str, ...]] = ()
    asset: ClassVar[str | None] = None  # offline asset it reads, if any

    @abstractmethod
    def build(self, n: int, rng: random.Random) -> list[Item]:
        """``n`` distinct clean items (fewer only if the source has fewer)."""


PERTURBATIONS: dict[str, Perturbation] = {}
FAMILIES: dict[str, ItemFamily] = {}


def register_perturbation(p: Perturbation) -> Perturbation:
    """Make ``p`` available by name (to configs and :func:`build_pairs`); returns it."""
    if not getattr(p, "name", ""):
        raise ConfigError("Perturbation.name", f"{type(p).__name__} has no name", "set a class attribute name = '...'")
    PERTURBATIONS[p.name] = p
    return p


def register_family(f: ItemFamily) -> ItemFamily:
    """Make an item family available by name; returns it."""
    if not getattr(f, "name", ""):
        raise ConfigError("ItemFamily.name", f"{type(f).__name__} has no name", "set a class attribute name = '...'")
    FAMILIES[f.name] = f
    return f


def get_family(name: str, field_name: str = "items.family") -> ItemFamily:
    if name not in FAMILIES:
        raise UnknownNameError(field_name, name, list(FAMILIES), "use a registered family or register_family() yours")
    return FAMILIES[name]


def get_perturbation(name: str, field_name: str = "items.perturbations") -> Perturbation:
    if name not in PERTURBATIONS:
        raise UnknownNameError(field_name, name, list(PERTURBATIONS),
                               "use a registered perturbation or register_perturbation() yours")
    return PERTURBATIONS[name]


def resolve_perturbations(family: str, names: Sequence[str] | None, field_name: str = "items.perturbations"
                          ) -> list[Perturbation]:
    """The perturbations to use for ``family``: ``names`` (checked) or the family's defaults."""
    fam = get_family(family)
    chosen = list(names) if names else list(fam.default_perturbations)
    if not chosen:
        raise ConfigError(field_name, f"is empty and family '{family}' has no default perturbations",
                          "list at least one perturbation name")
    out = []
    for k, name in enumerate(chosen):
        p = get_perturbation(name, f"{field_name}[{k}]")
        if p.families and family not in p.families:
            raise ConfigError(f"{field_name}[{k}]", f"'{name}' applies to {list(p.families)}, not to '{family}'",
                              f"drop it or pick one of: {', '.join(family_perturbations(family))}")
        out.append(p)
    return out


def family_perturbations(family: str) -> list[str]:
    """Registered perturbations that can apply to ``family``."""
    return sorted(n for n, p in PERTURBATIONS.items() if not p.families or family in p.families)


def build_pairs(family: str, n: int, *, perturbations: Sequence[str] | None = None, seed: int = 0,
                field_name: str = "items") -> list[ItemPair]:
    """``n`` (clean, flawed) pairs from ``family``, reproducible from ``seed``.

    Perturbations are assigned round-robin over the items (item k tries perturbation k mod P
    first, then the others in order), so each kind gets a near-equal share; an item no
    perturbation applies to is replaced by another clean item. Every flawed answer differs from
    its clean one.
    """
    if n < 1:
        raise ConfigError(f"{field_name}.n", f"is {n}", "ask for at least one item")
    fam = get_family(family, f"{field_name}.family")
    perts = resolve_perturbations(family, perturbations, f"{field_name}.perturbations")
    pool = fam.build(int(n * 1.5) + 8, random.Random(f"items:{family}:{seed}"))
    ids = [it.id for it in pool]
    if len(set(ids)) != len(ids):
        raise DataError(f"{field_name}.family", f"family '{family}' built items with repeated ids",
                        "give every clean item a distinct id")
    pairs: list[ItemPair] = []
    for clean in pool:
        if len(pairs) == n:
            break
        k = len(pairs)
        order = perts[k % len(perts):] + perts[: k % len(perts)]
        for p in order:
            if not p.applies_to(clean):
                continue
            try:
                flawed = p.apply(clean, random.Random(f"flaw:{seed}:{clean.id}:{p.name}"))
            except NotApplicable:
                continue
            if flawed.flaw is None or flawed.answer == clean.answer:
                continue  # a perturbation that changes nothing does not count as one
            pairs.append(ItemPair(clean, flawed))
            break
    if len(pairs) < n:
        raise DataError(f"{field_name}.n", f"only {len(pairs)} of {n} items could be perturbed by "
                        f"{[p.name for p in perts]} in family '{family}'",
                        "ask for fewer items or add a perturbation that applies more widely")
    return pairs


# --- WordNet definitions ------------------------------------------------------------------------

STOPWORDS = frozenset("""a an the of or and in on at to for from by with as that which who whom whose this these those
is are was were be been being it its their his her one ones any some something someone thing things used use
especially usually often very more most less least other such than into out up down not no all each every""".split())


def clean_definition(gloss: str) -> str:
    """The definition part of a WordNet gloss: before the first ';', without a '(domain)' prefix."""
    d = gloss.split(";")[0].strip()
    d = re.sub(r"^\([^)]*\)\s*", "", d)
    return d.strip().strip('"').strip()


class WordNetLexicon:
    """Noun definitions, sibling concepts and adjective antonyms from the WordNet 3.0 files."""

    def __init__(self, wordnet_dir: str, min_count: int = 10):
        from superalign.data.wordnet import first_senses, read_nouns, sense_counts

        self.dir = wordnet_dir
        self.synsets = read_nouns(wordnet_dir)
        self.first = first_senses(wordnet_dir)
        self.counts = sense_counts(wordnet_dir)
        self.hyponyms: dict[str, list[str]] = defaultdict(list)
        for s in self.synsets.values():
            for h in s.hypernyms:
                self.hyponyms[h].append(s.offset)
        self.definition = {o: clean_definition(s.gloss) for o, s in self.synsets.items()}
        self.antonyms, self.adjectives = _read_adjectives(wordnet_dir)
        self.words = sorted(w for w, s in self.first.items() if self._usable(w, s.offset, min_count))

    def _usable(self, word: str, offset: str, min_count: int) -> bool:
        d = self.definition[offset]
        n_words = len(d.split())
        return (self.counts.get(word, 0) >= min_count and 3 <= n_words <= 20 and '"' not in d
                and word not in d.lower() and bool(self.siblings(offset, word)))

    def siblings(self, offset: str, word: str) -> list[str]:
        """Other synsets under the same hypernym(s) whose definition differs and avoids ``word``."""
        out = []
        for h in self.synsets[offset].hypernyms:
            for o in self.hyponyms[h]:
                d = self.definition.get(o, "")
                if o != offset and d and d != self.definition[offset] and word not in d.lower() and len(d.split()) >= 3:
                    out.append(o)
        return sorted(set(out))

    def lemma(self, offset: str) -> str:
        return self.synsets[offset].words[0].replace("_", " ")


def _read_adjectives(wordnet_dir: str) -> tuple[dict[str, str], frozenset[str]]:
    """(single-word adjective -> its direct WordNet antonym (lexical '!' pointers), every adjective)
    from ``data.adj``."""
    path = Path(wordnet_dir) / "data.adj"
    if not path.exists():
        return {}, frozenset()
    words: dict[str, list[str]] = {}
    pointers: list[tuple[str, int, str, int]] = []
    with open(path, encoding="latin-1") as f:
        for line in f:
            if line.startswith("  "):
                continue
            fields = line.partition(" | ")[0].split()
            n_words = int(fields[3], 16)
            ws = [re.sub(r"\(.*\)$", "", fields[4 + 2 * i]).lower() for i in range(n_words)]
            words[fields[0]] = ws
            p = 4 + 2 * n_words
            for i in range(int(fields[p])):
                sym, target, _pos, st = fields[p + 1 + 4 * i : p + 5 + 4 * i]
                if sym == "!":
                    pointers.append((fields[0], int(st[:2], 16), target, int(st[2:], 16)))
    out: dict[str, str] = {}
    for src, si, tgt, ti in pointers:
        if si == 0 or ti == 0 or tgt not in words:
            continue
        a, b = words[src][si - 1], words[tgt][ti - 1]
        if a.isalpha() and b.isalpha() and a not in out:
            out[a] = b
    return out, frozenset(w for ws in words.values() for w in ws)


def wordnet_lexicon(wordnet_dir: str | None = None) -> WordNetLexicon:
    """The lexicon of the installed WordNet (``superalign assets install wordnet``), built once and
    kept in the shared model cache (:mod:`superalign.models.cache`) beside the models that use it."""
    from superalign.assets import require
    from superalign.models.cache import cached

    path = wordnet_dir or str(require("wordnet", "perturbation family 'wordnet'"))
    return cached(("wordnet_lexicon", path), lambda: WordNetLexicon(path))


def _word_spans(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), m.group(0)) for m in re.finditer(r"[A-Za-z]+", text)]


def _content_words(text: str) -> set[str]:
    return {w.lower() for _, _, w in _word_spans(text) if w.lower() not in STOPWORDS and len(w) > 2}


def _replace_word(text: str, start: int, end: int, new: str) -> tuple[str, tuple[int, int]]:
    """``text`` with [start, end) replaced by ``new`` and a preceding article fixed ("a"/"an"),
    so the swap leaves no grammatical trace; returns the new text and the new word's span."""
    before = text[:start]
    m = re.search(r"\b([Aa]n?) $", before)
    if m:
        article = ("an" if new[:1].lower() in "aeiou" else "a")
        article = article.capitalize() if m.group(1)[0].isupper() else article
        before = before[: m.start(1)] + article + " "
    return before + new + text[end:], (len(before), len(before) + len(new))


class WordNetFamily(ItemFamily):
    """"What does the word 'X' mean?" with X's first-sense WordNet definition."""

    name = "wordnet"
    default_perturbations = ("sibling_definition", "unrelated_definition", "keyword_swap", "antonym_swap")
    asset = "wordnet"

    def build(self, n: int, rng: random.Random) -> list[Item]:
        lex = wordnet_lexicon()
        words = rng.sample(lex.words, min(n, len(lex.words)))
        items = []
        for w in words:
            s = lex.first[w]
            items.append(Item(f"wn:{w}", self.name, f"What does the word '{w}' mean?", lex.definition[s.offset],
                              meta={"word": w, "synset": s.offset, "lexname": s.lexname}))
        return items


class SiblingDefinition(Perturbation):
    """The definition of another concept under the same hypernym (e.g. 'summer' -> a harvest season)."""

    name = "sibling_definition"
    families = ("wordnet",)
    severity = "subtle"

    def apply(self, item: Item, rng: random.Random) -> Item:
        lex = wordnet_lexicon()
        sibs = lex.siblings(item.meta["synset"], item.meta["word"])
        if not sibs:
            raise NotApplicable(item.id)
        o = rng.choice(sibs)
        new = lex.definition[o]
        hyper = lex.lemma(lex.synsets[o].hypernyms[0]) if lex.synsets[o].hypernyms else "concept"
        flaw = Flaw(self.name, "wrong concept (sibling)", self.severity,
                    f"gives the definition of '{lex.lemma(o)}', another kind of {hyper}, not of '{item.meta['word']}'",
                    (0, len(new)), item.answer, new,
                    tuple(sorted(_content_words(new) - _content_words(item.answer))) or (lex.lemma(o),))
        return item.with_flaw(new, flaw)


class UnrelatedDefinition(Perturbation):
    """The definition of a concept from a different lexicographer file (e.g. a food for a feeling)."""

    name = "unrelated_definition"
    families = ("wordnet",)
    severity = "blatant"

    def apply(self, item: Item, rng: random.Random) -> Item:
        lex = wordnet_lexicon()
        for _ in range(50):
            w = rng.choice(lex.words)
            s = lex.first[w]
            if s.lexname != item.meta.get("lexname") and w != item.meta["word"]:
                new = lex.definition[s.offset]
                flaw = Flaw(self.name, "wrong concept (unrelated)", self.severity,
                            f"gives the definition of '{w}' ({s.lexname}), unrelated to '{item.meta['word']}'",
                            (0, len(new)), item.answer, new,
                            tuple(sorted(_content_words(new) - _content_words(item.answer))) or (w,))
                return item.with_flaw(new, flaw)
        raise NotApplicable(item.id)


class KeywordSwap(Perturbation):
    """One noun of the definition replaced by a sibling noun (e.g. 'mammal' -> 'bird').

    Words that WordNet also lists as adjectives are left alone, so the swap stays noun for noun.
    """

    name = "keyword_swap"
    families = ("wordnet",)
    severity = "subtle"

    def apply(self, item: Item, rng: random.Random) -> Item:
        lex = wordnet_lexicon()
        options = []
        for start, end, w in _word_spans(item.answer):
            low = w.lower()
            if low in STOPWORDS or len(low) < 4 or low not in lex.first or low in lex.adjectives:
                continue  # nouns only: a word that can be an adjective might be one here
            s = lex.first[low]
            subs = sorted({lex.synsets[o].words[0].lower() for o in lex.siblings(s.offset, low)
                           if lex.synsets[o].words[0].isalpha() and lex.counts.get(lex.synsets[o].words[0].lower(), 0) > 0}
                          - {low, item.meta["word"]})
            if subs:
                options.append((start, end, w, subs))
        if not options:
            raise NotApplicable(item.id)
        start, end, w, subs = rng.choice(options)
        new_word = rng.choice(subs)
        new, span = _replace_word(item.answer, start, end, new_word)
        flaw = Flaw(self.name, "swapped word", self.severity, f"'{new_word}' replaces '{w}'", span, w, new_word,
                    (new_word,))
        return item.with_flaw(new, flaw)


class AntonymSwap(Perturbation):
    """An adjective of the definition replaced by its WordNet antonym (e.g. 'large' -> 'small')."""

    name = "antonym_swap"
    families = ("wordnet",)
    severity = "subtle"

    def apply(self, item: Item, rng: random.Random) -> Item:
        lex = wordnet_lexicon()
        options = [(s, e, w) for s, e, w in _word_spans(item.answer)
                   if w.lower() in lex.antonyms and w.lower() not in STOPWORDS]
        if not options:
            raise NotApplicable(item.id)
        start, end, w = rng.choice(options)
        ant = lex.antonyms[w.lower()]
        new, span = _replace_word(item.answer, start, end, ant)
        flaw = Flaw(self.name, "antonym", self.severity, f"'{ant}' (the opposite) replaces '{w}'", span, w, ant, (ant,))
        return item.with_flaw(new, flaw)


# --- arithmetic (no assets) ---------------------------------------------------------------------

class ArithmeticFamily(ItemFamily):
    """"What is 347 + 589?" answered "347 + 589 = 936" (addition, subtraction, multiplication)."""

    name = "arithmetic"
    default_perturbations = ("wrong_digit", "transposed_digits")

    def build(self, n: int, rng: random.Random) -> list[Item]:
        items: list[Item] = []
        seen: set[str] = set()
        while len(items) < n:
            op = rng.choice("+-*")
            if op == "+":
                a, b = rng.randint(100, 999), rng.randint(100, 999)
                r = a + b
            elif op == "-":
                a = rng.randint(200, 999)
                b = rng.randint(100, a - 11)
                r = a - b
            else:
                a, b = rng.randint(12, 99), rng.randint(3, 19)
                r = a * b
            sym = {"+": "+", "-": "-", "*": "x"}[op]
            key = f"ar:{a}{sym}{b}"
            if key in seen:
                continue
            seen.add(key)
            items.append(Item(key, self.name, f"What is {a} {sym} {b}?", f"{a} {sym} {b} = {r}",
                              meta={"a": a, "b": b, "op": op, "result": r}))
        return items


def _result_span(item: Item) -> tuple[int, str]:
    start = item.answer.rindex("= ") + 2
    return start, item.answer[start:]


class WrongDigit(Perturbation):
    """One digit of the result changed (e.g. 936 -> 926)."""

    name = "wrong_digit"
    families = ("arithmetic",)
    severity = "subtle"

    def apply(self, item: Item, rng: random.Random) -> Item:
        start, result = _result_span(item)
        digits = [i for i, c in enumerate(result) if c.isdigit()]
        if not digits:
            raise NotApplicable(item.id)
        i = rng.choice(digits)
        choices = [d for d in "0123456789" if d != result[i] and not (d == "0" and i == 0 and len(result) > 1)]
        new_digit = rng.choice(choices)
        new_result = result[:i] + new_digit + result[i + 1:]
        new = item.answer[:start] + new_result
        flaw = Flaw(self.name, "wrong digit", self.severity,
                    f"the result should be {result}, not {new_result} (digit {i + 1} changed)",
                    (start + i, start + i + 1), result[i], new_digit, (new_result, result))
        return item.with_flaw(new, flaw)


class TransposedDigits(Perturbation):
    """Two adjacent, different digits of the result swapped (e.g. 936 -> 396)."""

    name = "transposed_digits"
    families = ("arithmetic",)
    severity = "subtle"

    def apply(self, item: Item, rng: random.Random) -> Item:
        start, result = _result_span(item)
        spots = [i for i in range(len(result) - 1) if result[i] != result[i + 1] and result[i:i + 2].isdigit()
                 and not (i == 0 and result[1] == "0")]
        if not spots:
            raise NotApplicable(item.id)
        i = rng.choice(spots)
        new_result = result[:i] + result[i + 1] + result[i] + result[i + 2:]
        new = item.answer[:start] + new_result
        flaw = Flaw(self.name, "transposed digits", self.severity,
                    f"the result should be {result}, not {new_result} (digits {i + 1}-{i + 2} swapped)",
                    (start + i, start + i + 2), result[i:i + 2], new_result[i:i + 2], (new_result, result))
        return item.with_flaw(new, flaw)


for _family in (WordNetFamily(), ArithmeticFamily()):
    register_family(_family)
for _pert in (SiblingDefinition(), UnrelatedDefinition(), KeywordSwap(), AntonymSwap(), WrongDigit(), TransposedDigits()):
    register_perturbation(_pert)
