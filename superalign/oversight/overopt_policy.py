"""Exact policies on finite move sets for the over-optimisation curves (:mod:`superalign.oversight.overopt`).

Best-of-n and the KL-regularised optimum in closed form, a policy-gradient optimiser with exact
KL/proxy/gold per step, and :func:`find_overoptimization`, which marks where a curve's gold reward
peaks and whether it then falls while the proxy keeps rising. Rewards are per position, one value
per legal move; CIs bootstrap over positions.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from superalign.errors import ConfigError, DataError
from superalign.metrics import bootstrap_indices, interval_from_boots
from superalign.rlaif.evaluate import best_of_n_kl

if TYPE_CHECKING:  # pragma: no cover
    from superalign.oversight.overopt import OveroptConfig

_NEG = -1e30  # finite "minus infinity" for padded moves (keeps gradients free of NaN)


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
        ci = interval_from_boots(drop, boots)
        out["gold_drop_ci"] = [ci.low, ci.high]
        out["drop_significant"] = bool(flagged and out["gold_drop_ci"][0] > 0)
    return out


def _policy_gradient(moves: _Moves, cfg: "OveroptConfig") -> tuple[list[np.ndarray], list[dict]]:
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
                   cfg: "OveroptConfig | None" = None) -> dict[str, Any]:
    """Best-of-n, KL-regularised (closed form) and policy-gradient curves for per-position move rewards.

    ``proxy[i]``, ``gold[i]`` (and ``ref[i]``, default uniform) hold one value per legal move of
    position ``i``. The proxy is divided by its pooled within-position std under ``ref``; rewards
    are gains over ``ref``. Uses ``cfg``'s curve fields (``ns``, ``betas``, ``rl_*``, ``rel_tol``,
    ``abs_tol``, ``n_boot``, ``seed``, ``bon_kl``). Returns JSON-serialisable curves, the
    over-optimisation marks of each and the reference statistics.
    """
    if cfg is None:
        from superalign.oversight.overopt import OveroptConfig

        cfg = OveroptConfig()
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
