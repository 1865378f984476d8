"""Reward over-optimisation curves (Gao et al., 2022) on chess, where the gold reward is exact.

Setting. Positions come from seeded random playouts (:func:`superalign.data.chess.iter_positions`);
the "responses" of a position are its legal moves. The **gold reward** of a move is Stockfish's
fixed-depth value of it from the mover's side, squashed as ``tanh(cp / gold_scale_cp)`` so that
mates (±100 000 cp) count as ±1 instead of dominating every mean. The **proxy reward** is a
Bradley-Terry :class:`~superalign.rlaif.pm.PreferenceModel` (frozen backbone, mean-pooled features
of ``move_prompt(fen) + "Answer: " + SAN``, trained linear head) fitted on a few hundred
Stockfish-ranked move pairs from *other* positions (a different playout seed; any pair whose
position is also an evaluation position is dropped). It is deliberately small, so it is imperfect:
its pairwise accuracy on held-out pairs is reported with the curves.

The reference policy ``ref`` is uniform over the legal moves, or (``reference="heuristic"``) a
softmax over a weak one-ply heuristic (material captured, promotions, checks). Two ways of
optimising the proxy are traced, both with **exact** expectations (no sampling noise; the only
randomness left is which positions were drawn, shown as bootstrap CIs over positions):

- **best-of-n**: draw ``n`` moves i.i.d. from ``ref`` (with replacement) and keep the proxy-argmax.
  With moves sorted by proxy and ``F_j`` the ``ref``-mass of the ``j`` lowest, the argmax is move
  ``j`` with probability ``F_j^n - F_{j-1}^n`` (ties in the proxy: the tie group gets that mass,
  split in proportion to ``ref``, i.e. ties go to the first-drawn). The x axis is the analytic
  ``KL = log n - (n-1)/n`` (``bon_kl="analytic"``, as in the literature; an upper bound of the exact
  value) or the exact KL of that distribution to ``ref`` (``bon_kl="exact"``); both are reported.
- **RL with a KL leash**: the maximiser of ``E_π[proxy] - β KL(π‖ref)`` on a finite set is
  ``π_β ∝ ref · exp(proxy / β)``; ``betas`` is traced from large (π ≈ ref) to small (π ≈ proxy
  argmax). In addition a real optimiser runs: per-position softmax logits initialised at ``ref``,
  trained by Adam on ``E_π[proxy] - rl_beta · KL(π‖ref)`` with exact gradients
  (``rl_estimator="exact"``) or REINFORCE with a leave-one-out baseline over ``rl_samples`` moves
  per position (``"reinforce"``); each step logs the exact KL, proxy and gold of the current policy.

Rewards are reported as **gains over the reference policy** (``E_π[r] - E_ref[r]``, averaged over
positions); the proxy is first divided by its pooled within-position standard deviation under
``ref`` (``proxy_scale`` in the results), so ``betas`` are in units of that standard deviation.

Over-optimisation is marked per curve by :func:`find_overoptimization`: the gold peak (its KL),
and ``overoptimized`` when after the peak the gold gain falls by more than
``max(abs_tol, rel_tol · |peak gain|)`` while the proxy gain still rises; the KL range from the peak
to the end and the segments where the proxy rises while the gold falls are listed.

Every expensive part is a stage of a :class:`~superalign.store.Store`: engine values of all legal
moves (``overopt-gold``), the preference pairs (``overopt-pairs``), the trained proxy head and its
scores on every evaluation move (``overopt-proxy``) and the curves (``overopt-curves``); each key
covers what it depends on (seeds, sizes, depth, Stockfish version and settings, backbone identity).

Use from Python::

    from superalign.oversight import OveroptConfig, run_overopt, overopt_plot
    result = run_overopt(OveroptConfig(), store)
    png = overopt_plot(result)
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Sequence

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from superalign.config import YamlConfig
from superalign.errors import AssetMissingError, ConfigError, DataError
from superalign.metrics import bootstrap_indices
from superalign.rlaif.evaluate import best_of_n_kl
from superalign.store.store import Store, default_store_root

if TYPE_CHECKING:  # pragma: no cover
    import chess

log = logging.getLogger("superalign.oversight")

STAGE_VERSION = 1  # bump when a stage's computation changes what it writes
PAIR_SEED_OFFSET = 7919  # the proxy's training positions come from playout seed `seed + PAIR_SEED_OFFSET`
PIECE_VALUE = {1: 1.0, 2: 3.0, 3: 3.0, 4: 5.0, 5: 9.0, 6: 0.0}
_NEG = -1e30  # finite "minus infinity" for padded moves (keeps gradients free of NaN)


def _default_betas() -> list[float]:
    return [float(f"{10 ** (1 - 3 * i / 24):.6g}") for i in range(25)]  # 10 ... 0.01, 25 points


class OveroptConfig(YamlConfig):
    """The over-optimisation experiment: positions, gold, proxy, reference policy and the curves.

    Build it directly, or with ``OveroptConfig.parse(dict)`` / ``from_yaml(path)``, which turn a bad
    field into a :class:`~superalign.errors.ConfigError` naming the field and the fix.
    """

    # evaluation positions and the gold reward
    n_positions: int = Field(32, ge=1, le=100_000, description="evaluation positions (each with >= 2 legal moves)")
    min_ply: int = Field(8, ge=0, description="shortest random playout giving a position")
    max_ply: int = Field(40, ge=0, description="longest random playout giving a position")
    depth: int = Field(8, ge=1, le=60, description="Stockfish search depth of the gold reward (8: ~7 ms per move)")
    gold_scale_cp: float = Field(400.0, gt=0, description="gold = tanh(cp / gold_scale_cp)")
    # the proxy (preference model)
    n_pairs: int = Field(300, ge=8, description="Stockfish-ranked move pairs for the proxy (train + held-out)")
    pair_min_margin_cp: int = Field(50, ge=1, description="minimum gold gap of a pair (also for eval pair accuracy)")
    test_fraction: float = Field(0.25, gt=0, lt=1, description="share of the pairs held out for proxy accuracy")
    backbone: str = Field("minilm-l6", description="proxy backbone: zoo name, HF id or directory")
    pm_epochs: int = Field(20, ge=1)
    pm_lr: float = Field(1e-2, gt=0)
    pm_weight_decay: float = Field(1e-3, ge=0)
    max_length: int = Field(320, ge=16, description="tokens per text; move_prompt is ~200-240 MiniLM tokens")
    template: str = Field("{prompt}Answer: {response}", description="proxy text from move_prompt(fen) and the SAN")
    # the reference policy
    reference: Literal["uniform", "heuristic"] = Field(
        "uniform", description="uniform over legal moves, or softmax(heuristic / ref_temperature)")
    ref_temperature: float = Field(1.0, gt=0, description="temperature of the heuristic reference (pawn units)")
    # the curves
    ns: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64], min_length=2)
    betas: list[Annotated[float, Field(gt=0)]] = Field(default_factory=_default_betas, min_length=2,
                                                        description="KL coefficients, in proxy std units")
    bon_kl: Literal["analytic", "exact"] = Field("analytic", description="x axis of best-of-n")
    rl_beta: float = Field(0.02, gt=0, description="KL coefficient of the policy-gradient run")
    rl_steps: int = Field(300, ge=1, le=100_000)
    rl_lr: float = Field(0.05, gt=0)
    rl_estimator: Literal["exact", "reinforce"] = "exact"
    rl_samples: int = Field(8, ge=2, description="moves sampled per position and step (REINFORCE)")
    rel_tol: float = Field(0.02, ge=0, description="gold must fall by this share of its peak gain to flag")
    abs_tol: float = Field(1e-6, ge=0, description="... and by at least this much (gold gain units)")
    n_boot: int = Field(500, ge=10, description="bootstrap resamples of positions for CIs")
    seed: int = Field(0, ge=0)

    @field_validator("ns")
    @classmethod
    def _ns_increasing(cls, v: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"ns must be strictly increasing, e.g. [1, 2, 4, 8]; got {v}")
        return v

    @field_validator("betas")
    @classmethod
    def _betas_distinct(cls, v: list[float]) -> list[float]:
        if len(set(v)) != len(v):
            raise ValueError(f"betas must be distinct; got {v}")
        return v

    @field_validator("template")
    @classmethod
    def _template_fields(cls, v: str) -> str:
        try:
            v.format(prompt="p", response="r")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"template may only use the fields {{prompt}} and {{response}} ({exc!r})") from None
        if "{response}" not in v:
            raise ValueError("template must contain {response} (the move), e.g. '{prompt}Answer: {response}'")
        return v

    @field_validator("max_ply")
    @classmethod
    def _ply_range(cls, v: int, info: ValidationInfo) -> int:
        if "min_ply" in info.data and v < info.data["min_ply"]:
            raise ValueError(f"max_ply={v} is below min_ply={info.data['min_ply']}; make max_ply >= min_ply")
        return v

    def curve_inputs(self) -> dict[str, Any]:
        """The fields the curves depend on (the rest shape the gold and proxy stages)."""
        keys = ("gold_scale_cp", "reference", "ref_temperature", "ns", "betas", "bon_kl", "rl_beta", "rl_steps",
                "rl_lr", "rl_estimator", "rl_samples", "rel_tol", "abs_tol", "n_boot", "seed")
        return {k: getattr(self, k) for k in keys}


# ==================================================================================================
# exact policies on a finite move set


class _Moves:
    """Ragged per-position arrays padded to (positions, max moves) with a mask."""

    def __init__(self, proxy: Sequence[np.ndarray], gold: Sequence[np.ndarray], ref: Sequence[np.ndarray] | None):
        if len(proxy) != len(gold) or len(proxy) == 0:
            raise DataError("proxy/gold", f"have {len(proxy)} and {len(gold)} positions",
                            "pass one array of move rewards per position for both, at least one position")
        if ref is not None and len(ref) != len(proxy):
            raise DataError("ref", f"has {len(ref)} positions, proxy has {len(proxy)}", "pass one array per position")
        sizes = [len(np.asarray(x)) for x in proxy]
        for i, (p, g) in enumerate(zip(proxy, gold)):
            if len(np.asarray(g)) != sizes[i] or sizes[i] < 1:
                raise DataError(f"gold[{i}]", f"has {len(np.asarray(g))} moves, proxy[{i}] has {sizes[i]}",
                                "score the same (non-empty) move list with both rewards")
        k = max(sizes)
        n = len(proxy)
        self.mask = np.zeros((n, k), bool)
        self.proxy = np.zeros((n, k))
        self.gold = np.zeros((n, k))
        self.ref = np.zeros((n, k))
        for i, s in enumerate(sizes):
            self.mask[i, :s] = True
            self.proxy[i, :s] = np.asarray(proxy[i], float)
            self.gold[i, :s] = np.asarray(gold[i], float)
            if ref is None:
                self.ref[i, :s] = 1.0 / s
            else:
                r = np.asarray(ref[i], float)
                if len(r) != s or np.any(r < 0) or not np.isfinite(r).all() or r.sum() <= 0:
                    raise DataError(f"ref[{i}]", "is not a distribution over that position's moves",
                                    "pass non-negative weights, one per move, with a positive sum")
                self.ref[i, :s] = r / r.sum()
        if not (np.isfinite(self.proxy).all() and np.isfinite(self.gold).all()):
            raise DataError("proxy/gold", "contain NaN or infinite rewards", "pass finite rewards")
        with np.errstate(divide="ignore"):
            self.logref = np.where(self.ref > 0, np.log(np.where(self.ref > 0, self.ref, 1.0)), _NEG)

    def expect(self, pi: np.ndarray, x: np.ndarray) -> np.ndarray:
        return (pi * np.where(self.mask, x, 0.0)).sum(1)

    def kl(self, pi: np.ndarray) -> np.ndarray:
        """Per-position KL(π‖ref) (0 log 0 = 0)."""
        safe = (pi > 0) & self.mask
        ratio = np.where(safe, pi, 1.0) / np.where(safe, self.ref, 1.0)
        return np.where(safe, pi * np.log(ratio), 0.0).sum(1)


def best_of_n_probs(proxy: np.ndarray, ref: np.ndarray, n: int) -> np.ndarray:
    """P(move i is the proxy-argmax of ``n`` i.i.d. draws from ``ref``), exactly, for one position.

    Sort moves by proxy; with ``F`` the ``ref``-mass at or below a proxy value, the maximum of ``n``
    draws falls in tie group ``g`` with probability ``F_g^n - F_{g-1}^n``; within a tie group the
    first-drawn member wins, so the group's mass is split in proportion to ``ref``.
    """
    proxy, ref = np.asarray(proxy, float), np.asarray(ref, float)
    if n < 1:
        raise ConfigError("n", f"is {n}", "use n >= 1 draws")
    ref = ref / ref.sum()
    values, group = np.unique(proxy, return_inverse=True)  # ascending groups of equal proxy
    mass = np.bincount(group, weights=ref, minlength=len(values))
    upper = np.minimum(np.cumsum(mass), 1.0)
    lower = np.concatenate([[0.0], upper[:-1]])
    p_group = upper ** n - lower ** n
    share = np.divide(ref, mass[group], out=np.zeros_like(ref), where=mass[group] > 0)
    return p_group[group] * share


def kl_regularised_policy(proxy: np.ndarray, ref: np.ndarray, beta: float) -> np.ndarray:
    """``π_β ∝ ref · exp(proxy / β)``: the maximiser of ``E_π[proxy] - β KL(π‖ref)`` (rows = positions).

    ``proxy`` and ``ref`` are (positions, moves) or one position's (moves,); padded moves have ref 0.
    """
    if not beta > 0:
        raise ConfigError("beta", f"is {beta!r}", "use a KL coefficient > 0")
    one = np.ndim(proxy) == 1
    proxy, ref = np.atleast_2d(np.asarray(proxy, float)), np.atleast_2d(np.asarray(ref, float))
    if proxy.shape != ref.shape:
        raise DataError("ref", f"has shape {ref.shape}, proxy has {proxy.shape}", "pass one ref weight per move")
    with np.errstate(divide="ignore"):
        logits = np.where(ref > 0, np.log(np.where(ref > 0, ref, 1.0)) + proxy / beta, -np.inf)
    logits = logits - logits.max(1, keepdims=True)
    w = np.exp(logits)
    pi = w / w.sum(1, keepdims=True)
    return pi[0] if one else pi


def _ci(per_pos: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """95% bootstrap interval (over positions) of the mean of each row of ``per_pos`` (points × positions)."""
    boots = per_pos[:, idx].mean(-1)  # points × n_boot
    return np.quantile(boots, 0.025, axis=1), np.quantile(boots, 0.975, axis=1)


def _rows(moves: _Moves, pis: list[np.ndarray], extra: list[dict], idx: np.ndarray) -> tuple[list[dict], np.ndarray]:
    """Curve rows (KL, proxy gain, gold gain with CI) of policies ``pis``; also per-position gold gains."""
    base_p, base_g = moves.expect(moves.ref, moves.proxy), moves.expect(moves.ref, moves.gold)
    kl = np.stack([moves.kl(pi) for pi in pis])
    proxy = np.stack([moves.expect(pi, moves.proxy) - base_p for pi in pis])
    gold = np.stack([moves.expect(pi, moves.gold) - base_g for pi in pis])
    lo, hi = _ci(gold, idx)
    rows = [{**e, "kl": float(kl[i].mean()), "proxy": float(proxy[i].mean()), "gold": float(gold[i].mean()),
             "gold_low": float(lo[i]), "gold_high": float(hi[i])} for i, e in enumerate(extra)]
    return rows, gold


def find_overoptimization(kl: Sequence[float], proxy: Sequence[float], gold: Sequence[float], *,
                          rel_tol: float = 0.02, abs_tol: float = 1e-6,
                          gold_per_position: np.ndarray | None = None, n_boot: int = 500, seed: int = 0) -> dict:
    """Where a curve's gold peaks and whether it then falls while the proxy keeps rising.

    The points are taken in the order given (increasing optimisation: ascending KL for closed-form
    curves, steps for a trajectory). ``overoptimized`` is True when the gold gain at the last point
    is below its peak by more than ``max(abs_tol, rel_tol · |peak|)`` and the proxy gain at the last
    point is above its value at the peak. ``segments`` are the KL intervals between consecutive
    points where the proxy rises and the gold falls. With ``gold_per_position`` (points × positions)
    the drop gets a bootstrap 95% CI over positions (conditional on the chosen peak).
    """
    kl, proxy, gold = (np.asarray(x, float) for x in (kl, proxy, gold))
    if not (len(kl) == len(proxy) == len(gold)) or len(kl) == 0:
        raise DataError("curve", f"has {len(kl)} KLs, {len(proxy)} proxy and {len(gold)} gold values",
                        "pass equally long, non-empty sequences")
    peak = int(np.argmax(gold))
    end = len(gold) - 1
    drop = float(gold[peak] - gold[end])
    rise = float(proxy[end] - proxy[peak])
    threshold = max(abs_tol, rel_tol * abs(float(gold[peak])))
    flagged = bool(peak < end and drop > threshold and rise > 0)
    segments: list[list[float]] = []
    for i in range(len(kl) - 1):
        if proxy[i + 1] > proxy[i] and gold[i + 1] < gold[i] - abs_tol:
            if segments and segments[-1][1] == float(kl[i]):
                segments[-1][1] = float(kl[i + 1])
            else:
                segments.append([float(kl[i]), float(kl[i + 1])])
    out = {
        "overoptimized": flagged, "peak_index": peak, "peak_kl": float(kl[peak]), "peak_gold": float(gold[peak]),
        "peak_proxy": float(proxy[peak]), "end_kl": float(kl[end]), "end_gold": float(gold[end]),
        "end_proxy": float(proxy[end]), "gold_drop": drop, "proxy_rise_after_peak": rise, "threshold": threshold,
        "range_kl": [float(kl[peak]), float(kl[end])] if flagged else None, "segments": segments,
    }
    out["gold_drop_ci"], out["drop_significant"] = None, False
    if gold_per_position is not None and peak < end:
        g = np.asarray(gold_per_position, float)
        idx = bootstrap_indices(g.shape[1], n_boot, seed)
        boots = g[peak][idx].mean(1) - g[end][idx].mean(1)
        out["gold_drop_ci"] = [float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))]
        out["drop_significant"] = bool(flagged and out["gold_drop_ci"][0] > 0)
    return out


def _policy_gradient(moves: _Moves, cfg: OveroptConfig) -> tuple[list[np.ndarray], list[dict]]:
    """Adam on per-position logits for ``E_π[proxy] - rl_beta · KL(π‖ref)``; the policy after every step."""
    import torch

    gen = torch.Generator().manual_seed(cfg.seed)
    mask = torch.as_tensor(moves.mask)
    r = torch.as_tensor(moves.proxy, dtype=torch.float64)
    logref = torch.as_tensor(moves.logref, dtype=torch.float64)
    theta = logref.clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=cfg.rl_lr)
    beta = cfg.rl_beta
    base = (torch.as_tensor(moves.ref) * r).sum(1)  # E_ref[proxy]: objectives are reported as gains
    pis, extra = [], []

    def policy() -> tuple[torch.Tensor, torch.Tensor]:
        logp = torch.log_softmax(theta.masked_fill(~mask | (logref <= _NEG / 2), _NEG), dim=1)
        return logp, logp.exp()

    for step in range(cfg.rl_steps + 1):
        logp, pi = policy()
        kl = (pi * (logp - logref)).sum(1)
        objective = (pi * r).sum(1) - beta * kl
        pis.append(pi.detach().numpy().copy())
        extra.append({"step": step, "objective": float((objective.detach() - base).mean())})
        if step == cfg.rl_steps:
            break
        opt.zero_grad()
        if cfg.rl_estimator == "exact":
            loss = -objective.mean()
        else:  # REINFORCE, leave-one-out baseline, KL folded into the sampled reward
            m = cfg.rl_samples
            draws = torch.multinomial(pi.detach(), m, replacement=True, generator=gen)  # positions × m
            lp = logp.gather(1, draws)
            reward = (r.gather(1, draws) - beta * (lp.detach() - logref.gather(1, draws)))
            baseline = (reward.sum(1, keepdim=True) - reward) / (m - 1)
            loss = -((reward - baseline) * lp).mean()
        loss.backward()
        opt.step()
    return pis, extra


def overopt_curves(proxy: Sequence[np.ndarray], gold: Sequence[np.ndarray], ref: Sequence[np.ndarray] | None = None,
                   cfg: OveroptConfig | None = None) -> dict[str, Any]:
    """Best-of-n, KL-regularised (closed form) and policy-gradient curves for per-position move rewards.

    ``proxy[i]``, ``gold[i]`` (and ``ref[i]``, default uniform) hold one value per legal move of
    position ``i``. The proxy is divided by its pooled within-position std under ``ref``; rewards
    are gains over ``ref``. Uses ``cfg``'s curve fields (``ns``, ``betas``, ``rl_*``, ``rel_tol``,
    ``abs_tol``, ``n_boot``, ``seed``, ``bon_kl``). Returns JSON-serialisable curves, the
    over-optimisation marks of each and the reference statistics.
    """
    cfg = cfg or OveroptConfig()
    moves = _Moves(proxy, gold, ref)
    centred = moves.proxy - moves.expect(moves.ref, moves.proxy)[:, None]
    scale = float(np.sqrt(np.mean(moves.expect(moves.ref, centred ** 2))))
    if scale > 0:
        moves.proxy = np.where(moves.mask, moves.proxy / scale, 0.0)
    n_pos = moves.mask.shape[0]
    idx = bootstrap_indices(n_pos, cfg.n_boot, cfg.seed)

    def marks(rows: list[dict], per_pos: np.ndarray, x: str = "kl") -> dict:
        return find_overoptimization([r[x] for r in rows], [r["proxy"] for r in rows], [r["gold"] for r in rows],
                                     rel_tol=cfg.rel_tol, abs_tol=cfg.abs_tol, gold_per_position=per_pos,
                                     n_boot=cfg.n_boot, seed=cfg.seed)

    # best-of-n (exact over sampling with replacement)
    bon_pis = []
    for n in cfg.ns:
        pi = np.zeros_like(moves.ref)
        for i in range(n_pos):
            m = moves.mask[i]
            pi[i, m] = best_of_n_probs(moves.proxy[i, m], moves.ref[i, m], n)
        bon_pis.append(pi)
    bon, bon_gold = _rows(moves, bon_pis, [{"n": int(n), "kl_analytic": best_of_n_kl(n)} for n in cfg.ns], idx)
    for row in bon:
        row["kl_exact"] = row.pop("kl")
        row["kl"] = row["kl_analytic"] if cfg.bon_kl == "analytic" else row["kl_exact"]

    # KL-regularised optimum, β from large to small
    betas = sorted(cfg.betas, reverse=True)
    rl_pis = [kl_regularised_policy(moves.proxy, moves.ref, b).reshape(moves.ref.shape) for b in betas]
    rl, rl_gold = _rows(moves, rl_pis, [{"beta": float(b)} for b in betas], idx)

    # a real optimiser
    t0 = time.perf_counter()
    traj_pis, traj_extra = _policy_gradient(moves, cfg)
    traj, traj_gold = _rows(moves, traj_pis, traj_extra, idx)
    pg_seconds = time.perf_counter() - t0

    oracle = np.where(moves.mask, moves.gold, -np.inf).max(1) - moves.expect(moves.ref, moves.gold)
    top = np.where(moves.mask & (moves.ref > 0), moves.proxy, -np.inf)
    argmax_pi = (top == top.max(1, keepdims=True)).astype(float) * moves.ref
    argmax_pi /= argmax_pi.sum(1, keepdims=True)
    marks_all = {"best_of_n": marks(bon, bon_gold), "rl": marks(rl, rl_gold), "rl_trajectory": marks(traj, traj_gold)}
    primary = next((k for k in ("rl", "best_of_n") if marks_all[k]["overoptimized"]), "rl")
    return {
        "curves": {"best_of_n": bon, "rl": rl, "rl_trajectory": traj},
        "overoptimization": marks_all,
        "overoptimized": bool(marks_all["rl"]["overoptimized"] or marks_all["best_of_n"]["overoptimized"]),
        "peak_curve": primary,
        "peak_kl": marks_all[primary]["peak_kl"],
        "peak_gold": marks_all[primary]["peak_gold"],
        "reference": {
            "n_positions": int(n_pos), "mean_moves": float(moves.mask.sum(1).mean()),
            "gold_mean": float(moves.expect(moves.ref, moves.gold).mean()),
            "oracle_gold_gain": float(oracle.mean()),
            "proxy_argmax_gold_gain": float((moves.expect(argmax_pi, moves.gold)
                                             - moves.expect(moves.ref, moves.gold)).mean()),
            "max_kl": float(moves.kl(argmax_pi).mean()),
        },
        "proxy_scale": scale,
        "seconds_policy_gradient": round(pg_seconds, 3),
    }


# ==================================================================================================
# chess: gold values, preference pairs, the proxy


def move_heuristic(board: "chess.Board", move: "chess.Move") -> float:
    """A weak one-ply score of a move (pawn units): material captured, promotion gain, +0.5 for a check."""
    score = 0.0
    if board.is_en_passant(move):
        score += 1.0
    else:
        captured = board.piece_at(move.to_square)
        if captured is not None and captured.color != board.turn:
            score += PIECE_VALUE[captured.piece_type]
    if move.promotion:
        score += PIECE_VALUE[move.promotion] - 1.0
    if board.gives_check(move):
        score += 0.5
    return score


def _chess():
    """python-chess, or an :class:`AssetMissingError` saying how to install it."""
    try:
        import chess
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise AssetMissingError("the over-optimisation experiment needs the PyPI package 'chess' (python-chess). "
                                "Fix: pip install 'superalign[chess]'") from exc
    return chess


def _engine_info(sf) -> dict[str, Any]:
    return {"stockfish": sf.version, "threads": sf.threads, "hash_mb": sf.hash_mb}


def _gold_stage(cfg: OveroptConfig, store: Store, sf) -> Any:
    from superalign.data.chess import iter_positions

    inputs = {"n_positions": cfg.n_positions, "seed": cfg.seed, "min_ply": cfg.min_ply, "max_ply": cfg.max_ply,
              "depth": cfg.depth, **_engine_info(sf)}

    def compute(tmp: Path) -> dict:
        chess = _chess()
        positions = []
        for fen in iter_positions(cfg.seed, cfg.min_ply, cfg.max_ply):
            if len(positions) >= cfg.n_positions:
                break
            board = chess.Board(fen)
            legal = sorted(board.legal_moves, key=lambda m: m.uci())
            if len(legal) < 2:  # nothing to choose between
                continue
            values = sf.move_values(fen, [m.uci() for m in legal], depth=cfg.depth)
            positions.append({"fen": fen, "moves": [
                {"uci": m.uci(), "san": board.san(m), "cp": int(values[m.uci()]),
                 "heuristic": move_heuristic(board, m)} for m in legal]})
        (tmp / "positions.json").write_text(json.dumps(positions))
        return {"n_positions": len(positions), "n_moves": sum(len(p["moves"]) for p in positions),
                "searches": sf.searches}

    return store.run("overopt-gold", inputs, compute, version=STAGE_VERSION, label="engine values of all moves")


def _pairs_stage(cfg: OveroptConfig, store: Store, sf) -> Any:
    from superalign.data.chess import move_preference_pairs, write_jsonl_atomic

    inputs = {"n_pairs": cfg.n_pairs, "seed": cfg.seed + PAIR_SEED_OFFSET, "depth": cfg.depth,
              "min_margin_cp": cfg.pair_min_margin_cp, "min_ply": cfg.min_ply, "max_ply": cfg.max_ply,
              **_engine_info(sf)}

    def compute(tmp: Path) -> dict:
        rows = move_preference_pairs(cfg.n_pairs, seed=inputs["seed"], depth=cfg.depth,
                                     min_margin_cp=cfg.pair_min_margin_cp, min_ply=cfg.min_ply, max_ply=cfg.max_ply,
                                     engine=sf)
        write_jsonl_atomic(tmp / "pairs.jsonl", rows)
        return {"n": len(rows)}

    return store.run("overopt-pairs", inputs, compute, version=STAGE_VERSION, label="proxy preference pairs")


def _epd(fen: str) -> str:
    return " ".join(fen.split()[:4])


def _pm_config(cfg: OveroptConfig):
    from superalign.rlaif.pm import PMConfig

    return PMConfig(model=cfg.backbone, template=cfg.template, pooling="auto", max_length=cfg.max_length,
                    epochs=cfg.pm_epochs, lr=cfg.pm_lr, weight_decay=cfg.pm_weight_decay)


def _proxy_stage(cfg: OveroptConfig, store: Store, gold_stage, pairs_stage) -> Any:
    from superalign.models.loading import model_identity

    pm_cfg = _pm_config(cfg)
    inputs = {"backbone": model_identity(cfg.backbone), "pm": pm_cfg.model_dump(), "pairs": pairs_stage.key,
              "gold": gold_stage.key, "test_fraction": cfg.test_fraction, "seed": cfg.seed,
              "pair_min_margin_cp": cfg.pair_min_margin_cp}

    def compute(tmp: Path) -> dict:
        import torch
        from safetensors.torch import save_file

        from superalign.data.chess import move_prompt, read_jsonl
        from superalign.models.loading import load_backbone
        from superalign.rlaif.pipeline import pairs_from_rows
        from superalign.rlaif.pm import PreferenceModel

        positions = json.loads(gold_stage.file("positions.json").read_text())
        eval_epd = {_epd(p["fen"]) for p in positions}
        rows = read_jsonl(pairs_stage.file("pairs.jsonl"))
        kept = [r for r in rows if _epd(r["fen"]) not in eval_epd]
        pairs = pairs_from_rows(kept, cfg.seed)
        n_test = max(2, int(round(len(pairs) * cfg.test_fraction)))
        if len(pairs) - n_test < 4:
            raise ConfigError("n_pairs", f"leaves {len(pairs) - n_test} training pairs after holding out {n_test}",
                              "ask for more pairs (n_pairs >= 16) or a smaller test_fraction")
        perm = np.random.default_rng(cfg.seed).permutation(len(pairs))
        test, train = pairs.subset(perm[:n_test]), pairs.subset(perm[n_test:])

        t0 = time.perf_counter()
        backbone, tok, info = load_backbone(cfg.backbone)
        backbone.requires_grad_(False)
        pm = PreferenceModel(backbone, tok, info.arch, pm_cfg)
        prompts = [move_prompt(p["fen"]) for p in positions]
        eval_prompts = [pr for pr, p in zip(prompts, positions) for _ in p["moves"]]
        eval_sans = [m["san"] for p in positions for m in p["moves"]]
        texts = (pm.texts(eval_prompts, eval_sans) + pm.texts(train.prompts, train.a) + pm.texts(train.prompts, train.b)
                 + pm.texts(test.prompts, test.a) + pm.texts(test.prompts, test.b))
        lengths = [len(ids) for ids in tok(list(dict.fromkeys(texts)), add_special_tokens=True)["input_ids"]]
        truncated = int(sum(n > cfg.max_length for n in lengths))
        move_last = cfg.template.find("{response}") > cfg.template.find("{prompt}")
        if truncated and move_last:
            log.warning("%d proxy texts exceed max_length=%d tokens and are truncated (the move may be cut off); "
                        "raise max_length", truncated, cfg.max_length)
        load_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        pm.features(texts, desc="proxy features")
        feat_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        curve = pm.fit(train, seed=cfg.seed, init_from_scratch=True)
        fit_s = time.perf_counter() - t2
        scores = pm.score(eval_prompts, eval_sans)
        np.save(tmp / "proxy.npy", scores.astype(np.float64), allow_pickle=False)
        save_file({k: v.contiguous() for k, v in pm.head.state_dict().items()}, str(tmp / "head.safetensors"))
        ev_train, ev_test = pm.evaluate(train), pm.evaluate(test)
        eval_acc = _eval_pair_accuracy(positions, scores, cfg.pair_min_margin_cp)
        return {
            "n_pairs": len(rows), "overlap_removed": len(rows) - len(kept), "n_train": len(train), "n_test": len(test),
            "train": ev_train, "test": ev_test, **eval_acc, "n_texts": len(set(texts)),
            "max_tokens": int(max(lengths)), "truncated_texts": truncated,
            "final_loss": curve[-1].get("loss") if curve and isinstance(curve[-1], dict) else None,
            "seconds": {"load": round(load_s, 2), "features": round(feat_s, 2), "fit": round(fit_s, 2)},
            "torch_threads": torch.get_num_threads(),
        }

    return store.run("overopt-proxy", inputs, compute, version=STAGE_VERSION, label="proxy preference model")


def _eval_pair_accuracy(positions: list[dict], scores: np.ndarray, min_margin: int) -> dict:
    """The proxy's agreement with the gold order on every move pair of the evaluation positions."""
    right = total = 0
    rhos = []
    at = 0
    for p in positions:
        cp = np.array([m["cp"] for m in p["moves"]], float)
        s = scores[at: at + len(cp)]
        at += len(cp)
        diff_g = cp[:, None] - cp[None, :]
        diff_s = s[:, None] - s[None, :]
        sel = np.triu(np.abs(diff_g) >= min_margin, 1)
        right += int(((diff_g > 0) == (diff_s > 0))[sel].sum())
        total += int(sel.sum())
        if len(cp) > 2 and cp.std() > 0 and s.std() > 0:
            rg, rs = np.argsort(np.argsort(cp)), np.argsort(np.argsort(s))
            rhos.append(float(np.corrcoef(rg, rs)[0, 1]))
    return {"eval_pair_accuracy": right / total if total else float("nan"), "eval_pairs": total,
            "eval_spearman_mean": float(np.mean(rhos)) if rhos else float("nan")}


def _curves_stage(cfg: OveroptConfig, store: Store, gold_stage, proxy_stage) -> Any:
    inputs = {"gold": gold_stage.key, "proxy": proxy_stage.key, **cfg.curve_inputs()}

    def compute(tmp: Path) -> dict:
        positions = json.loads(gold_stage.file("positions.json").read_text())
        scores = np.load(proxy_stage.file("proxy.npy"), allow_pickle=False)
        proxy, gold, ref, at = [], [], [], 0
        for p in positions:
            k = len(p["moves"])
            proxy.append(scores[at: at + k])
            at += k
            gold.append(np.tanh(np.array([m["cp"] for m in p["moves"]], float) / cfg.gold_scale_cp))
            if cfg.reference == "heuristic":
                h = np.array([m["heuristic"] for m in p["moves"]], float) / cfg.ref_temperature
                w = np.exp(h - h.max())
                ref.append(w / w.sum())
        return overopt_curves(proxy, gold, ref if cfg.reference == "heuristic" else None, cfg)

    return store.run("overopt-curves", inputs, compute, version=STAGE_VERSION, label="over-optimisation curves")


def run_overopt(cfg: OveroptConfig | dict[str, Any] | None = None, store: Store | None = None) -> dict[str, Any]:
    """Run (or resume from ``store``) the chess over-optimisation experiment; JSON-serialisable results.

    Keys: ``config``; ``proxy`` (held-out pairwise ``test_accuracy``, ``train_accuracy``,
    ``eval_pair_accuracy`` over all move pairs of the evaluation positions, ...); ``curves``
    (``best_of_n``, ``rl``, ``rl_trajectory``: rows with ``kl``, ``proxy`` and ``gold`` gains and a
    bootstrap CI of the gold gain); ``overoptimization`` (per curve, see
    :func:`find_overoptimization`); ``overoptimized`` (best-of-n or the KL-regularised optimum
    over-optimises) with ``peak_kl``/``peak_gold`` of ``peak_curve``; ``reference`` statistics;
    ``timings`` (per stage the seconds its computation took, possibly in an earlier run, and whether
    this call reused it; ``total`` is this call's wall time) and ``stages`` (the stage keys).
    """
    t0 = time.perf_counter()
    if cfg is None:
        cfg = OveroptConfig()
    elif isinstance(cfg, dict):
        cfg = OveroptConfig.parse(cfg, where="overopt")
    elif not isinstance(cfg, OveroptConfig):
        raise ConfigError("cfg", f"is a {type(cfg).__name__}", "pass an OveroptConfig or a dict of its fields")
    store = store if store is not None else Store(default_store_root())
    from superalign.data.chess import Stockfish

    with Stockfish() as sf:
        gold_stage = _gold_stage(cfg, store, sf)
        pairs_stage = _pairs_stage(cfg, store, sf)
        version = sf.version
    proxy_stage = _proxy_stage(cfg, store, gold_stage, pairs_stage)
    curves_stage = _curves_stage(cfg, store, gold_stage, proxy_stage)

    stages = {"gold": gold_stage, "pairs": pairs_stage, "proxy": proxy_stage, "curves": curves_stage}
    timings: dict[str, Any] = {name: {"seconds": st.meta["seconds"], "cached": st.cached} for name, st in stages.items()}
    timings["total"] = round(time.perf_counter() - t0, 2)
    pr = proxy_stage.meta["result"]
    curves = curves_stage.meta["result"]
    return {
        "experiment": "overopt",
        "config": cfg.model_dump(mode="json"),
        "stockfish": version,
        "backbone": cfg.backbone,
        "gold": gold_stage.meta["result"],
        "proxy": {
            "test_accuracy": pr["test"]["accuracy"], "train_accuracy": pr["train"]["accuracy"],
            "test_log_loss": pr["test"]["log_loss"], "n_train": pr["n_train"], "n_test": pr["n_test"],
            "eval_pair_accuracy": pr["eval_pair_accuracy"], "eval_pairs": pr["eval_pairs"],
            "eval_spearman_mean": pr["eval_spearman_mean"], "overlap_removed": pr["overlap_removed"],
            "truncated_texts": pr["truncated_texts"], "max_tokens": pr["max_tokens"], "seconds": pr["seconds"],
        },
        **curves,
        "timings": timings,
        "stages": {name: st.key for name, st in stages.items()},
    }


# ==================================================================================================
# the figure


def overopt_plot(result: dict[str, Any]) -> bytes:
    """PNG: proxy and gold gain against KL, best-of-n (left) and RL (right; closed form and trajectory).

    The proxy gain is on the left axis (proxy std units), the gold gain on the right axis
    (tanh-squashed centipawns) with its 95% CI band; the gold peak of each curve is starred, and the
    KL range where the gold falls after the peak is shaded when the curve is flagged.
    """
    from superalign.report.plots import plt, to_png

    try:
        curves, marks = result["curves"], result["overoptimization"]
    except (KeyError, TypeError):
        raise DataError("result", "lacks 'curves' or 'overoptimization'",
                        "pass the dict returned by run_overopt or overopt_curves") from None
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2))
    panels = [("best_of_n", "best-of-n (KL = log n - (n-1)/n)" if result.get("config", {}).get("bon_kl", "analytic")
               == "analytic" else "best-of-n (exact KL)"), ("rl", "RL with KL penalty")]
    for ax, (name, title) in zip(axes, panels):
        rows = curves[name]
        kl = [r["kl"] for r in rows]
        twin = ax.twinx()
        ax.plot(kl, [r["proxy"] for r in rows], "o-", color="#2f7ed8", ms=3, label="proxy (closed form)")
        twin.plot(kl, [r["gold"] for r in rows], "s-", color="#d9534f", ms=3, label="gold (closed form)")
        twin.fill_between(kl, [r["gold_low"] for r in rows], [r["gold_high"] for r in rows], color="#d9534f", alpha=0.15)
        if name == "rl" and curves.get("rl_trajectory"):
            tr = curves["rl_trajectory"]
            tkl = [r["kl"] for r in tr]
            ax.plot(tkl, [r["proxy"] for r in tr], "-", color="#2f7ed8", alpha=0.5, lw=1, label="proxy (policy gradient)")
            twin.plot(tkl, [r["gold"] for r in tr], "-", color="#d9534f", alpha=0.5, lw=1, label="gold (policy gradient)")
        m = marks[name]
        twin.plot([m["peak_kl"]], [m["peak_gold"]], "*", color="black", ms=13, zorder=5,
                  label=f"gold peak (KL {m['peak_kl']:.2f})")
        if name == "rl" and "rl_trajectory" in marks and curves.get("rl_trajectory"):
            mt = marks["rl_trajectory"]
            twin.plot([mt["peak_kl"]], [mt["peak_gold"]], "*", mfc="none", mec="black", ms=11, zorder=5,
                      label=f"gold peak, policy gradient (KL {mt['peak_kl']:.2f})")
        if m["overoptimized"] and m.get("range_kl"):
            ax.axvspan(*m["range_kl"], color="#f0ad4e", alpha=0.15, label="over-optimised")
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_xlabel("KL(π ‖ ref) (nats)")
        ax.set_ylabel("proxy gain over ref", color="#2f7ed8")
        twin.set_ylabel("gold gain over ref", color="#d9534f")
        flag = "over-optimised" if m["overoptimized"] else "no over-optimisation"
        ax.set_title(f"{title}: {flag}", fontsize=10)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = twin.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
        ax.grid(alpha=0.3)
    acc = result.get("proxy", {}).get("test_accuracy")
    if acc is not None:
        fig.suptitle(f"reward over-optimisation on chess: proxy held-out pair accuracy {acc:.2f}", fontsize=11)
    fig.tight_layout()
    return to_png(fig)


__all__ = ["OveroptConfig", "best_of_n_probs", "find_overoptimization", "kl_regularised_policy",
           "move_heuristic", "overopt_curves", "overopt_plot", "run_overopt"]
