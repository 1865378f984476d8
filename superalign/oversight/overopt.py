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

    from superalign.oversight import OveroptConfig, run_overopt
    from superalign.report.plots_oversight import overopt_plot
    result = run_overopt(OveroptConfig(), store)
    png = overopt_plot(result)
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from superalign.config import YamlConfig
from superalign.errors import AssetMissingError, ConfigError
from superalign.io import read_json, write_json_atomic
from superalign.oversight.overopt_policy import (
    best_of_n_probs,
    find_overoptimization,
    kl_regularised_policy,
    overopt_curves,
)
from superalign.oversight.registry import register_measurement
from superalign.store.store import Store, default_store_root

if TYPE_CHECKING:  # pragma: no cover
    import chess

log = logging.getLogger("superalign.oversight")

STAGE_VERSION = 1  # bump when a stage's computation changes what it writes
PAIR_SEED_OFFSET = 7919  # the proxy's training positions come from playout seed `seed + PAIR_SEED_OFFSET`
PIECE_VALUE = {1: 1.0, 2: 3.0, 3: 3.0, 4: 5.0, 5: 9.0, 6: 0.0}


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
        write_json_atomic(tmp / "positions.json", positions)
        return {"n_positions": len(positions), "n_moves": sum(len(p["moves"]) for p in positions),
                "searches": sf.searches}

    return store.run("overopt-gold", inputs, compute, version=STAGE_VERSION, label="engine values of all moves")


def _pairs_stage(cfg: OveroptConfig, store: Store, sf) -> Any:
    from superalign.data.chess import move_preference_pairs
    from superalign.io import write_jsonl_atomic

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

        from superalign.data.chess import move_prompt
        from superalign.data.preferences import pairs_from_rows
        from superalign.io import read_jsonl
        from superalign.models.loading import load_backbone
        from superalign.rlaif.pm import PreferenceModel

        positions = read_json(gold_stage.file("positions.json"))
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
        positions = read_json(gold_stage.file("positions.json"))
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


def summary_lines(r: dict[str, Any]) -> list[str]:
    """The printed line: the proxy's held-out accuracy, whether it over-optimises and where gold peaks."""
    p = r["proxy"]
    return [f"reward over-optimization (chess, {r['backbone']} proxy, held-out pair accuracy "
            f"{p['test_accuracy']:.3f}): over-optimised {r['overoptimized']}, gold peaks at KL {r['peak_kl']:.2f}"]


def report_sections(r: dict[str, Any]) -> list:
    """The report section: the summary, a warning when the gold reward falls, and the curves."""
    from superalign.report.html import Section
    from superalign.report.plots_oversight import overopt_plot

    sec = Section("Reward over-optimization (chess; Stockfish gold)", pre="\n".join(summary_lines(r)))
    if r["overoptimized"]:
        sec.warnings.append(f"the gold reward peaks at KL {r['peak_kl']:.2f} and falls while the proxy keeps rising")
    return [sec.image(overopt_plot(r))]


@register_measurement("overoptimization", config=OveroptConfig, default=True, summary=summary_lines,
                      report=report_sections,
                      help="proxy vs Stockfish gold reward as best-of-n and RL optimise the proxy")
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


__all__ = ["OveroptConfig", "best_of_n_probs", "find_overoptimization", "kl_regularised_policy",
           "move_heuristic", "overopt_curves", "report_sections", "run_overopt", "summary_lines"]
