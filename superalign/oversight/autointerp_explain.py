"""Explainers, simulators and scoring for automated interpretability (:mod:`superalign.oversight.autointerp`).

An :class:`Explainer` turns a unit's marked top examples into a one-sentence explanation; a
:class:`Simulator` predicts held-out activations from the explanation alone; the score is the
Pearson correlation of predicted with true activations, compared with a shuffled-explanation
baseline (CIs over units). :class:`ModelCache` holds the run's models (loaded once, through the
shared :mod:`superalign.models.cache`).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
from torch import nn

from superalign.metrics import mean_ci

log = logging.getLogger("superalign.autointerp")

EXPLAIN_PREFIX = "These texts all"
EXPLAIN_INSTRUCTION = (
    "Below are texts on which one neuron of a language model fires strongly. The tokens where it fires "
    "most are marked with [[double brackets]].\n\n{examples}\n\n"
    "What do these texts or their marked tokens have in common? Answer in one short sentence."
)
SIMULATE_PROMPT = "Explanation: {explanation}\nText: {text}\nDoes the text match the explanation? Answer:"
SIMULATE_OPTIONS = (" Yes", " No")
PROMPT_VERSION = 2  # bump when a prompt or the marking rule changes (part of stage keys)


# --- explainers -------------------------------------------------------------------------------

@runtime_checkable
class Explainer(Protocol):
    """Writes one explanation per unit from its marked top examples."""

    def identity(self) -> dict[str, Any]:
        """What determines the explanations (part of the stage key)."""

    def explain(self, examples: Sequence[Sequence[str]]) -> list[str]:
        """``examples[i]`` are unit i's marked texts; returns one explanation per unit."""


def explain_prompt(examples: Sequence[str]) -> str:
    """The user message showing one unit's marked examples."""
    body = "\n".join(f"{i + 1}. {x}" for i, x in enumerate(examples))
    return EXPLAIN_INSTRUCTION.format(examples=body)


_FLUFF = re.compile(r"^(?:share|have) (?:a|one) (?:common|similar|shared) (?:thread|trait|theme|feature|pattern|element|"
                    r"characteristic)s?\s*(?P<of>of\b)?\s*[:,]?\s*", re.IGNORECASE)


def clean_explanation(completion: str, prefix: str = EXPLAIN_PREFIX) -> str:
    """``prefix`` plus the completion's first sentence, on one line, without filler.

    Small explainers like to open with "share a common thread: they all ..."; that filler is
    dropped ("These texts all share a common thread: they all contain X" -> "These texts all contain X"),
    which also keeps the simulator's prompts short.
    """
    text = completion.strip().split("\n")[0].strip()
    m = _FLUFF.match(text)
    if m:
        text = ("have " if m.group("of") else "") + text[m.end():]
        text = re.sub(r"^(?:they(?:'re| are) all |they(?:'re| are) )", "are ", text, flags=re.IGNORECASE)
        text = re.sub(r"^they all ", "", text, flags=re.IGNORECASE)
    cut = re.search(r"(?<=[a-z0-9\)\]\"'])[.!?](\s|$)", text)
    if cut:
        text = text[: cut.start()]
    text = text.strip(" .,:;-")
    if text.lower() in _DANGLING:
        text = ""
    while True:  # a completion cut at max_new_tokens can end on a dangling word ("... voice and")
        words = text.rsplit(" ", 1)
        if len(words) == 2 and words[1].lower() in _DANGLING:
            text = words[0].rstrip(" ,:;-")
        else:
            break
    if not text:
        return f"{prefix} (no explanation)."
    if prefix == EXPLAIN_PREFIX and text.lower().startswith("are "):
        return f"These texts are all {text[4:]}."
    return f"{prefix} {text}."


_DANGLING = frozenset("and or a an the of to with that which is are but in on for as by from its their".split())


class LMExplainer:
    """A causal LM (chat-templated when it has a template) completing "These texts all ..."."""

    def __init__(self, model: str = "smollm2-135m", *, max_new_tokens: int = 24, temperature: float = 0.0,
                 seed: int = 0, batch_size: int = 16, models: "ModelCache | None" = None):
        self.model, self.max_new_tokens, self.temperature = model, max_new_tokens, temperature
        self.seed, self.batch_size, self.models = seed, batch_size, models or ModelCache()

    def identity(self) -> dict[str, Any]:
        from superalign.models.loading import model_identity

        return {"kind": "lm", "model": model_identity(self.model), "max_new_tokens": self.max_new_tokens,
                "temperature": self.temperature, "seed": self.seed, "prompt": PROMPT_VERSION,
                "instruction": EXPLAIN_INSTRUCTION, "prefix": EXPLAIN_PREFIX}

    def prompts(self, examples: Sequence[Sequence[str]]) -> list[str]:
        _, tok = self.models.causal(self.model)
        users = [explain_prompt(ex) for ex in examples]
        if getattr(tok, "chat_template", None):
            from superalign.rlaif.generation import render_chat

            rendered = render_chat(tok, [[{"role": "user", "content": u}] for u in users], field="explainer")
            return [r + EXPLAIN_PREFIX for r in rendered]
        return [f"{u}\nAnswer: {EXPLAIN_PREFIX}" for u in users]

    def explain(self, examples: Sequence[Sequence[str]]) -> list[str]:
        from superalign.rlaif.generation import GenerationConfig, generate

        model, tok = self.models.causal(self.model)
        gen = GenerationConfig(max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                               batch_size=self.batch_size)
        outs = generate(model, tok, self.prompts(examples), gen, seed=self.seed, desc="explaining", field="explainer")
        return [clean_explanation(o[0].text, EXPLAIN_PREFIX) for o in outs]


# --- simulators -------------------------------------------------------------------------------

@runtime_checkable
class Simulator(Protocol):
    """Predicts activations of texts from an explanation alone (higher = more active)."""

    def identity(self) -> dict[str, Any]:
        """What determines the predictions (part of the stage key)."""

    def predict(self, explanations: Sequence[str], texts: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """``texts[i]`` are scored against ``explanations[i]``; one array per explanation."""


STOPWORDS = frozenset("""a an the these those this that texts text all are is be been being to of in on at by for with
and or not no from as it its their they them there which who whom what when where why how about into onto over under
than then so such like some any each every many much more most other another also only just very both either neither
mention mentions mentioning contain contains containing include includes including describe describes describing
refer refers referring word words phrase phrases sentence sentences token tokens marked share shares common have has
having use uses using talk talks talking something things thing related seem seems appear appears often usually
focus focuses""".split())


def explanation_keywords(explanation: str) -> list[str]:
    """Quoted strings if the explanation quotes any (used verbatim), else its content words."""
    quoted = re.findall(r"\"([^\"]+)\"|“([^”]+)”|`([^`]+)`|(?<![A-Za-z])'([^']+)'(?![A-Za-z])", explanation)
    found = [next(g for g in groups if g) for groups in quoted]
    if found:
        return list(dict.fromkeys(q.lower() for q in found))
    words = re.findall(r"[a-z][a-z'-]+", explanation.lower())
    return list(dict.fromkeys(w for w in words if len(w) >= 3 and w not in STOPWORDS))


class KeywordSimulator:
    """Predicted activation = how many of the explanation's keywords a text contains.

    Quoted keywords match as case-insensitive substrings; content words match at a word start,
    with a trailing "s" optional (so "dog" finds "dogs"). Cheap and deterministic: a floor for LM
    simulators and the simulator of the planted-neuron tests.
    """

    def identity(self) -> dict[str, Any]:
        return {"kind": "keyword", "version": 1}

    def predict(self, explanations: Sequence[str], texts: Sequence[Sequence[str]]) -> list[np.ndarray]:
        out = []
        for expl, batch in zip(explanations, texts):
            quoted = bool(re.search(r"[\"“`]|(?<![A-Za-z])'", expl))
            pats = []
            for kw in explanation_keywords(expl):
                if quoted:
                    pats.append(re.compile(re.escape(kw), re.IGNORECASE))
                else:
                    stem = kw[:-1] if kw.endswith("s") and len(kw) > 3 else kw
                    pats.append(re.compile(r"\b" + re.escape(stem), re.IGNORECASE))
            out.append(np.array([sum(bool(p.search(t)) for p in pats) for t in batch], dtype=np.float64))
        return out


class LMSimulator:
    """P(" Yes") for "Explanation: …\nText: …\nDoes the text match the explanation? Answer:".

    One forward pass per (explanation, text) through :func:`choice_logprobs`, batched across units;
    the prediction is P(Yes) / (P(Yes) + P(No)). With ``calibrate``, the prediction is instead the
    log-odds of Yes minus their value for the same text under a content-free explanation (one more
    pass per distinct text), which removes the simulator's explanation-independent prior about a
    text (e.g. saying Yes to longer texts), a confound the shuffled baseline otherwise exposes.
    """

    NEUTRAL = "(no explanation given)"

    def __init__(self, model: str = "smollm2-135m", *, batch_size: int = 16, max_length: int = 512,
                 calibrate: bool = False, models: "ModelCache | None" = None):
        self.model, self.batch_size, self.max_length = model, batch_size, max_length
        self.calibrate = calibrate
        self.models = models or ModelCache()

    def identity(self) -> dict[str, Any]:
        from superalign.models.loading import model_identity

        ident = {"kind": "lm", "model": model_identity(self.model), "prompt": SIMULATE_PROMPT,
                 "options": list(SIMULATE_OPTIONS), "max_length": self.max_length}
        if self.calibrate:
            ident["calibrate"] = self.NEUTRAL
        return ident

    def _log_odds(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        from superalign.models.scoring import choice_logprobs

        model, tok = self.models.causal(self.model)
        prompts = [SIMULATE_PROMPT.format(explanation=e, text=t) for e, t in pairs]
        lp = choice_logprobs(model, tok, prompts, list(SIMULATE_OPTIONS), max_length=self.max_length,
                             batch_size=self.batch_size, desc="simulating")
        return lp[:, 0] - lp[:, 1]

    def predict(self, explanations: Sequence[str], texts: Sequence[Sequence[str]]) -> list[np.ndarray]:
        pairs = [(e, t) for e, batch in zip(explanations, texts) for t in batch]
        if not pairs:
            return [np.zeros(0) for _ in explanations]
        odds = self._log_odds(pairs)
        if self.calibrate:
            distinct = list(dict.fromkeys(t for _, t in pairs))
            prior = dict(zip(distinct, self._log_odds([(self.NEUTRAL, t) for t in distinct])))
            pred = odds - np.array([prior[t] for _, t in pairs])
        else:
            pred = 1.0 / (1.0 + np.exp(-odds))
        out, start = [], 0
        for batch in texts:
            out.append(pred[start : start + len(batch)])
            start += len(batch)
        return out


# --- scoring ----------------------------------------------------------------------------------

def pearson(pred: Sequence[float], true: Sequence[float]) -> float:
    """Pearson correlation; 0.0 when either side is constant (the explanation predicts nothing)."""
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if len(p) < 2 or p.std() < 1e-12 or t.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(p, t)[0, 1])


def shuffled_baseline_permutation(n: int, seed: int = 0) -> np.ndarray:
    """A seeded derangement of ``range(n)``: unit i is scored with unit perm[i]'s explanation."""
    if n < 2:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    shift = rng.integers(1, n)
    order = rng.permutation(n)  # a random cycle structure with no fixed points
    perm = np.empty(n, dtype=np.int64)
    perm[order] = order[(np.arange(n) + shift) % n]
    return perm


def score_summary(scores: Sequence[float], baseline: Sequence[float], *, n_boot: int = 1000,
                  seed: int = 0) -> dict[str, Any]:
    """Mean score, mean shuffled-baseline score and their paired difference, with bootstrap CIs
    over units (one resample of units applied to all three)."""
    s, b = np.asarray(scores, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    ci = {k: mean_ci(v, n_boot=n_boot, seed=seed).as_dict() for k, v in  # one seed: the same resamples for all three
          (("mean_score", s), ("mean_baseline", b), ("difference", s - b))}
    return {"n": int(len(s)), **ci, "median_score": float(np.median(s)),
            "share_above_0.3": float((s > 0.3).mean())}


# --- models -----------------------------------------------------------------------------------

class ModelCache:
    """The models of one run, so a model that is studied, explains and simulates loads once.

    Loading goes through the shared cache (:mod:`superalign.models.cache`), so other measurements
    in the same scope reuse the same objects; ``loaded`` maps a name to (model, tokenizer) for this
    run (set an entry to stand planted weights in for a name).
    """

    def __init__(self) -> None:
        self.loaded: dict[str, tuple[nn.Module, Any]] = {}

    def causal(self, name: str) -> tuple[nn.Module, Any]:
        if name not in self.loaded:
            from superalign.models.cache import causal_lm

            log.info("loading %s", name)
            model, tok, _ = causal_lm(name, frozen=True)
            self.loaded[name] = (model, tok)
        return self.loaded[name]

    def any(self, name: str) -> tuple[nn.Module, Any]:
        """The causal LM when ``name`` is a decoder (shared with explaining), else the encoder."""
        from superalign.models.cache import backbone
        from superalign.models.loading import resolve

        if name in self.loaded:
            return self.loaded[name]
        _, spec = resolve(name)
        if spec is None or spec.arch == "decoder":
            try:
                return self.causal(name)
            except (ValueError, OSError):
                if spec is not None:
                    raise
        model, tok, _ = backbone(name, frozen=True)
        self.loaded[name] = (model, tok)
        return self.loaded[name]

    def tokenizer(self, name: str):
        if name in self.loaded:
            return self.loaded[name][1]
        from superalign.models.loading import load_tokenizer

        return load_tokenizer(name)
