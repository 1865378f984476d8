"""The AI-feedback labeller of Constitutional AI (Bai et al., 2022).

For a prompt and two responses the feedback model reads::

    Consider the following conversation between a human and an assistant:
    Human: <prompt>
    <principle's comparison question>
    Options:
    (A) <first response>
    (B) <second response>
    The answer is:

What is scored: the tokens the two options " (A)" and " (B)" share (" (" for most tokenizers) are
appended to the prompt, and one forward pass gives the next-token log-probabilities of the first
token where the options differ (the "A" token and the "B" token); nothing after it (")") is
scored, and log P(" (" | prompt) is common to both and cancels. The two are normalised into
P(A) = softmax over {A, B}. When the options do not split on one token, or with ``naive=True``,
the summed log-probability of every token of " (A)" and of " (B)" is scored instead (one pass
per option). We evaluate the swapped ordering too and average P(first response) over both
orderings (cancelling position bias) and over several sampled principles. Chain-of-thought mode
lets the model reason first and clamps its (overconfident) probabilities, e.g. to [0.4, 0.6].
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from superalign.errors import ConfigError
from superalign.models.scoring import choice_logprobs, continuation_logprobs
from superalign.rlaif.constitution import Constitution, Principle

OPTIONS = (" (A)", " (B)")
RATINGS = tuple(f" {k}" for k in range(1, 10))  # d-RLAIF's score tokens (single digits: one token each)


class FeedbackConfig(BaseModel):
    """How the labeller asks for and combines preferences."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("gemma3-270m", description="feedback model: a causal LM (a pretrained base model works)")
    n_principles: int = Field(2, ge=1, description="principles sampled per pair; their preferences are averaged")
    both_orderings: bool = True
    clamp: tuple[float, float] | None = Field(None, description="clamp each preference, e.g. [0.4, 0.6] (CoT mode)")
    cot: bool = Field(False, description="let the model reason before answering (then clamp is advised)")
    cot_max_new_tokens: int = Field(64, ge=1)
    max_length: int = Field(1024, ge=32)
    batch_size: int = Field(8, ge=1)
    max_response_chars: int = Field(1200, ge=20, description="responses are cut to this many characters")


def feedback_prompt(prompt: str, first: str, second: str, principle: Principle, max_chars: int = 1200) -> str:
    """The multiple-choice comparison prompt (no trailing space: options start with one)."""
    return ("Consider the following conversation between a human and an assistant:\n"
            f"Human: {prompt.strip()}\n"
            f"{principle.comparison_question()}\n"
            "Options:\n"
            f"(A) {first.strip()[:max_chars]}\n"
            f"(B) {second.strip()[:max_chars]}\n"
            "The answer is:")


@dataclass
class FeedbackResult:
    """Soft preferences for pairs (response 1 vs response 2) and the labeller's diagnostics."""

    p_first: np.ndarray  # (n,) P(response 1 is better), averaged over orderings and principles
    p_a: np.ndarray  # (n, orderings, principles) raw P("(A)") per evaluation
    principles: list[list[str]] = field(default_factory=list)

    @property
    def position_bias(self) -> float:
        """Mean P("(A)") minus 0.5 over every evaluation: 0 = unbiased, +0.5 = always picks (A)."""
        return float(self.p_a.mean() - 0.5)

    @property
    def order_consistency(self) -> float:
        """Share of (pair, principle) where both orderings prefer the same response."""
        if self.p_a.shape[1] < 2:
            return float("nan")
        first_in_a = self.p_a[:, 0] > 0.5  # ordering 0: response 1 shown as (A)
        first_in_b = self.p_a[:, 1] < 0.5  # ordering 1: response 1 shown as (B)
        return float((first_in_a == first_in_b).mean())

    def summary(self) -> dict:
        return {"n": int(len(self.p_first)), "position_bias": self.position_bias,
                "order_consistency": self.order_consistency, "mean_confidence": float(np.abs(self.p_first - 0.5).mean() + 0.5)}


def normalise(logp: np.ndarray) -> np.ndarray:
    """(n, 2) option log-probabilities → P(first option), a softmax over the two."""
    z = logp - logp.max(1, keepdims=True)
    e = np.exp(z)
    return e[:, 0] / e.sum(1)


class Labeller:
    """Pairwise AI feedback from a causal LM under a constitution."""

    def __init__(self, model, tok, constitution: Constitution, cfg: FeedbackConfig):
        self.model, self.tok, self.constitution, self.cfg = model, tok, constitution, cfg

    def _cot(self, prompts: list[str]) -> list[str]:
        from superalign.rlaif.generation import GenerationConfig, generate

        # greedy decoding in batches of at least 32: decode steps cost about the same at 8 rows as at
        # 32 on a CPU, and the batch size changes nothing but padding
        gen = GenerationConfig(max_new_tokens=self.cfg.cot_max_new_tokens, temperature=0.0,
                               batch_size=max(self.cfg.batch_size, 32))
        reasoning = generate(self.model, self.tok, [p + " Let's think step by step:" for p in prompts], gen,
                             desc="feedback reasoning")
        return [p + " Let's think step by step: " + r[0].text + "\nTherefore, the answer is:" for p, r in zip(prompts, reasoning)]

    def p_a(self, texts: list[str], naive: bool = False) -> np.ndarray:
        """P(A) for each fully built comparison prompt: the softmax over the log-probabilities of the
        first token where " (A)" and " (B)" differ, after their shared tokens (``naive``: of the
        whole of " (A)" and " (B)")."""
        if self.cfg.cot:
            texts = self._cot(texts)
        fn = continuation_logprobs if naive else choice_logprobs
        logp = fn(self.model, self.tok, texts, list(OPTIONS), max_length=self.cfg.max_length,
                  batch_size=self.cfg.batch_size, desc="AI feedback")
        p = normalise(logp)
        if self.cfg.clamp is not None:
            lo, hi = self.cfg.clamp
            p = np.clip(p, lo, hi)
        return p

    def label(self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str], *, seed: int = 0,
              naive: bool = False) -> FeedbackResult:
        """Soft preference P(first better) for every (prompt, first, second)."""
        n = len(prompts)
        if not (len(first) == len(second) == n):
            raise ConfigError("pairs", f"{n} prompts but {len(first)} and {len(second)} responses",
                              "give one response of each kind per prompt")
        for i, p in enumerate(prompts):
            if not str(p).strip():
                raise ConfigError(f"prompts[{i}]", "is empty", "drop empty prompts")
        rng = random.Random(seed)
        chosen = [self.constitution.sample(rng, self.cfg.n_principles) for _ in range(n)]
        orders = 2 if self.cfg.both_orderings else 1
        texts, index = [], []
        for i in range(n):
            for k, principle in enumerate(chosen[i]):
                for o in range(orders):
                    a, b = (first[i], second[i]) if o == 0 else (second[i], first[i])
                    texts.append(feedback_prompt(prompts[i], a, b, principle, self.cfg.max_response_chars))
                    index.append((i, o, k))
        pa = self.p_a(texts, naive=naive)
        p_a = np.zeros((n, orders, self.cfg.n_principles))
        for (i, o, k), v in zip(index, pa):
            p_a[i, o, k] = v
        p_first = p_a[:, 0, :].copy()
        if orders == 2:
            p_first = (p_first + (1.0 - p_a[:, 1, :])) / 2.0
        return FeedbackResult(p_first.mean(1), p_a, [[p.name for p in c] for c in chosen])


def rating_prompt(prompt: str, response: str, principle: Principle, max_chars: int = 1200) -> str:
    """d-RLAIF's scoring prompt (Lee et al., 2023): rate one response from 1 to 9 under a principle."""
    return ("Consider the following conversation between a human and an assistant:\n"
            f"Human: {prompt.strip()}\n"
            f"Assistant: {response.strip()[:max_chars]}\n"
            f"{principle.comparison_question()} Rate the assistant's response on a scale from 1 (worst) to 9 (best).\n"
            "Rating:")


def expected_rating(model, tok, texts: list[str], cfg: FeedbackConfig) -> np.ndarray:
    """The rating's expectation under the model's next-token distribution over " 1" .. " 9", mapped to [0, 1]."""
    logp = choice_logprobs(model, tok, texts, list(RATINGS), max_length=cfg.max_length, batch_size=cfg.batch_size,
                           desc="d-RLAIF ratings")
    z = np.exp(logp - logp.max(1, keepdims=True))
    probs = z / z.sum(1, keepdims=True)
    return (probs @ np.arange(1, 10) - 1.0) / 8.0


def direct_reward(labeller: "Labeller", prompts: Sequence[str], responses: Sequence[str], *, seed: int = 0) -> np.ndarray:
    """d-RLAIF reward: the labeller's expected 1-9 rating (in [0, 1]), averaged over ``n_principles`` principles."""
    rng = random.Random(seed)
    k = labeller.cfg.n_principles
    chosen = [labeller.constitution.sample(rng, k) for _ in prompts]
    texts = [rating_prompt(p, r, pr, labeller.cfg.max_response_chars)
             for p, r, c in zip(prompts, responses, chosen) for pr in c]
    scores = expected_rating(labeller.model, labeller.tok, texts, labeller.cfg) if texts else np.zeros(0)
    return scores.reshape(len(prompts), k).mean(1) if len(prompts) else scores


def agreement_with_labels(p_first: np.ndarray, first_is_better: np.ndarray) -> float:
    """Share of pairs where the soft preference points the same way as a known label (ties count half)."""
    hits = np.where(p_first == 0.5, 0.5, (p_first > 0.5) == first_is_better.astype(bool))
    return float(np.mean(hits))
