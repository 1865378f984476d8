"""Using and judging policies: best-of-n curves, win rates with CIs, and Elo ratings."""

from __future__ import annotations

import math
from itertools import combinations
from typing import Sequence

import numpy as np


def best_of_n_kl(n: int) -> float:
    """Analytic KL(best-of-n || policy) = log n - (n - 1) / n (Stiennon et al., 2020)."""
    return math.log(n) - (n - 1) / n


def expected_best_of_n(rewards: np.ndarray, n: int) -> float:
    """E[max of n draws without replacement] from each row of ``rewards`` (prompts × samples).

    Unbiased over all size-n subsets: the i-th smallest of N is the maximum of C(i-1, n-1) of them.
    """
    rewards = np.sort(np.atleast_2d(rewards), axis=1)
    big_n = rewards.shape[1]
    if n > big_n:
        raise ValueError(f"n={n} exceeds the {big_n} samples per prompt")
    weights = np.array([math.comb(i, n - 1) for i in range(big_n)], dtype=float) / math.comb(big_n, n)
    return float((rewards * weights).sum(1).mean())


def select_best_of_n(rewards: np.ndarray, n: int) -> np.ndarray:
    """Index of the highest-reward sample among the first ``n`` of each row (rejection sampling)."""
    return np.argmax(np.atleast_2d(rewards)[:, :n], axis=1)


def best_of_n_curve(proxy: np.ndarray, ns: Sequence[int], gold: np.ndarray | None = None) -> list[dict]:
    """Proxy (and gold) reward of the best-of-n sample by the proxy, against the analytic KL.

    ``gold`` scores the same samples with another judge: where the proxy keeps rising and the gold
    falls, the proxy is being over-optimised.
    """
    rows = []
    order = np.argsort(proxy, axis=1)
    for n in ns:
        row = {"n": int(n), "kl": best_of_n_kl(n), "proxy": expected_best_of_n(proxy, n)}
        if gold is not None:
            # E[gold of the proxy-argmax over a random n-subset]: same subset weights, gold values
            big_n = proxy.shape[1]
            weights = np.array([math.comb(i, n - 1) for i in range(big_n)], dtype=float) / math.comb(big_n, n)
            gold_sorted = np.take_along_axis(gold, order, axis=1)
            row["gold"] = float((gold_sorted * weights).sum(1).mean())
        rows.append(row)
    return rows


def wins_from_preferences(p_first: np.ndarray) -> np.ndarray:
    """Soft preferences P(first better) → win indicators for the first (ties at exactly 0.5)."""
    return np.where(p_first > 0.5, 1.0, np.where(p_first < 0.5, 0.0, 0.5))


def wins_from_rewards(r_first: np.ndarray, r_second: np.ndarray) -> np.ndarray:
    return np.where(r_first > r_second, 1.0, np.where(r_first < r_second, 0.0, 0.5))


def elo_ratings(names: Sequence[str], results: dict[tuple[str, str], np.ndarray], anchor: str | None = None,
                iters: int = 2000) -> dict[str, float]:
    """Elo-scale Bradley-Terry ratings from pairwise win indicators.

    ``results[(x, y)]`` holds per-prompt scores of x against y (1, 0.5, 0). Ratings maximise the
    Bradley-Terry likelihood (minorise-maximise updates), are shifted so ``anchor`` (default the
    first name) is 1000, and use Elo's scale (400 / ln 10 per unit of log-strength).
    """
    idx = {n: i for i, n in enumerate(names)}
    k = len(names)
    wins = np.zeros((k, k))
    for (x, y), s in results.items():
        s = np.asarray(s, dtype=float)
        wins[idx[x], idx[y]] += s.sum() + 0.5  # +0.5 pseudo-count keeps all-win/all-loss finite
        wins[idx[y], idx[x]] += (1 - s).sum() + 0.5
    games = wins + wins.T
    strength = np.ones(k)
    for _ in range(iters):
        total = wins.sum(1)
        denom = np.array([sum(games[i, j] / (strength[i] + strength[j]) for j in range(k) if j != i) for i in range(k)])
        new = total / np.maximum(denom, 1e-12)
        new /= np.exp(np.log(new).mean())
        if np.allclose(new, strength, rtol=1e-10):
            strength = new
            break
        strength = new
    log_s = np.log(strength)
    base = log_s[idx[anchor or names[0]]]
    return {n: float(1000 + 400 / math.log(10) * (log_s[idx[n]] - base)) for n in names}


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct unique word n-grams over all n-grams in ``texts`` (Li et al., 2016); 0 when none.

    A policy that collapses onto one template (a common way of hacking a preference model) scores
    far below the policy it started from.
    """
    grams: list[tuple[str, ...]] = []
    for t in texts:
        words = t.split()
        grams += [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def judge_disagreements(win_rates: dict[str, dict[str, dict]]) -> list[str]:
    """Comparisons ``"x|y"`` where the PM's 95% CI puts x ahead (its low end above 0.5) and the
    labeller's CI does not (its low end at 0.5 or below): the preference model rewards something in
    x that the labeller does not confirm, a sign of reward hacking.

    A labeller CI wholly above 0.5 is agreement, however much lower than the PM's it lies (the two
    judges are on different scales); it is never flagged.
    """
    out = []
    for key, judges in win_rates.items():
        pm, lab = judges.get("pm"), judges.get("labeller")
        if pm and lab and pm["low"] > 0.5 and lab["low"] <= 0.5:
            out.append(key)
    return out


def all_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    return list(combinations(names, 2))
