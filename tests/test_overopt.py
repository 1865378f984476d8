"""Reward over-optimisation curves: exact best-of-n, the KL-regularised optimum, planted reward hacking,
and a small real chess run (Stockfish gold, MiniLM preference-model proxy)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from superalign.errors import ConfigError, DataError
from superalign.oversight import (
    OveroptConfig,
    best_of_n_probs,
    find_overoptimization,
    kl_regularised_policy,
    overopt_curves,
    run_overopt,
)
from superalign.report.plots_oversight import overopt_plot

FAST = dict(ns=[1, 2, 4, 8, 16, 32, 64], rl_steps=150, n_boot=100)


def brute_force_best_of_n(proxy: np.ndarray, ref: np.ndarray, n: int) -> np.ndarray:
    """P(argmax) by enumerating every ordered n-tuple of draws; ties go to the first-drawn move."""
    out = np.zeros(len(proxy))
    for draw in itertools.product(range(len(proxy)), repeat=n):
        prob = float(np.prod(ref[list(draw)]))
        best = draw[0]
        for j in draw[1:]:
            if proxy[j] > proxy[best]:
                best = j
        out[best] += prob
    return out


def planted(n_pos: int = 40, k: int = 20, bonus: float = 5.0, seed: int = 0):
    """Gold ~ N(0, 1); proxy = gold + small noise + a large bonus on each position's two worst moves."""
    rng = np.random.default_rng(seed)
    gold = [rng.normal(size=k) for _ in range(n_pos)]
    proxy = []
    for g in gold:
        x = g + 0.3 * rng.normal(size=k)
        x[np.argsort(g)[:2]] += bonus  # the hackable moves
        proxy.append(x)
    return proxy, gold


# ---------------------------------------------------------------------------------------------
# exact best-of-n


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_best_of_n_closed_form_matches_enumeration(n):
    proxy = np.array([0.3, -1.0, 0.3, 2.0, 0.1])  # a tie between moves 0 and 2
    ref = np.array([0.1, 0.4, 0.2, 0.05, 0.25])
    exact = best_of_n_probs(proxy, ref, n)
    assert np.allclose(exact, brute_force_best_of_n(proxy, ref, n), atol=1e-12)
    assert exact.sum() == pytest.approx(1.0)


def test_best_of_n_curve_expectations_match_enumeration():
    rng = np.random.default_rng(1)
    proxy = [rng.normal(size=4), rng.normal(size=3)]
    gold = [rng.normal(size=4), rng.normal(size=3)]
    ref = [np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.5, 0.25, 0.25])]
    ns = [1, 2, 3, 5]
    res = overopt_curves(proxy, gold, ref, OveroptConfig(ns=ns, rl_steps=2, n_boot=20))
    for row, n in zip(res["curves"]["best_of_n"], ns):
        want_gold, want_kl = [], []
        for p, g, r in zip(proxy, gold, ref):
            q = brute_force_best_of_n(p, r, n)
            want_gold.append(q @ g - r @ g)
            want_kl.append(sum(qi * math.log(qi / ri) for qi, ri in zip(q, r) if qi > 0))
        assert row["gold"] == pytest.approx(np.mean(want_gold), abs=1e-12)
        assert row["kl_exact"] == pytest.approx(np.mean(want_kl), abs=1e-12)
        assert row["kl"] == pytest.approx(math.log(n) - (n - 1) / n)  # analytic x axis by default
        assert row["kl_exact"] <= row["kl_analytic"] + 1e-12  # the analytic KL bounds the exact one


# ---------------------------------------------------------------------------------------------
# the KL-regularised optimum


def test_kl_regularised_optimum_limits_and_monotonicity():
    rng = np.random.default_rng(2)
    proxy = rng.normal(size=(6, 9))
    ref = rng.dirichlet(np.ones(9), size=6)
    betas = np.logspace(4, -3, 40)
    kls, values = [], []
    for b in betas:
        pi = kl_regularised_policy(proxy, ref, b)
        assert np.allclose(pi.sum(1), 1.0)
        terms = np.where(pi > 0, pi * np.log(np.where(pi > 0, pi, 1.0) / ref), 0.0)  # 0 log 0 = 0
        kls.append(float(terms.sum(1).mean()))
        values.append(float((pi * proxy).sum(1).mean()))
    assert kls[0] < 1e-6  # β → ∞: the reference policy
    assert all(b >= a - 1e-12 for a, b in zip(kls, kls[1:]))  # KL grows as β shrinks
    assert all(b >= a - 1e-12 for a, b in zip(values, values[1:]))  # and so does the proxy
    argmax = (proxy == proxy.max(1, keepdims=True)).astype(float)
    assert np.allclose(kl_regularised_policy(proxy, ref, 1e-4), argmax, atol=1e-6)  # β → 0: the proxy argmax
    one = kl_regularised_policy(proxy[0], ref[0], 1.0)  # one position in, one position out
    assert one.shape == (9,)


def test_rl_curve_kl_vanishes_for_large_beta():
    proxy, gold = planted(n_pos=10, k=8)
    res = overopt_curves(proxy, gold, None, OveroptConfig(betas=[1e6, 10.0, 1.0, 0.1], rl_steps=2, n_boot=20))
    rl = res["curves"]["rl"]
    assert rl[0]["beta"] == 1e6 and rl[0]["kl"] < 1e-9 and abs(rl[0]["gold"]) < 1e-6
    assert [r["kl"] for r in rl] == sorted(r["kl"] for r in rl)
    assert [r["proxy"] for r in rl] == sorted(r["proxy"] for r in rl)


# ---------------------------------------------------------------------------------------------
# planted over-optimisation


def test_planted_hack_is_flagged_on_every_curve():
    proxy, gold = planted()
    res = overopt_curves(proxy, gold, None, OveroptConfig(**FAST))
    assert res["overoptimized"]
    for name in ("best_of_n", "rl", "rl_trajectory"):
        m = res["overoptimization"][name]
        curve = res["curves"][name]
        assert m["overoptimized"], name
        assert 0 < m["peak_index"] < len(curve) - 1, name  # gold rises first, then falls
        assert m["peak_gold"] > 0 > m["end_gold"], name
        assert m["proxy_rise_after_peak"] > 0 and m["drop_significant"], name
        assert m["range_kl"][0] == m["peak_kl"] < m["range_kl"][1] == m["end_kl"]
    # the proxy never stops rising along the closed-form curves
    for name in ("best_of_n", "rl"):
        p = [r["proxy"] for r in res["curves"][name]]
        assert all(b > a for a, b in zip(p, p[1:]))
    assert res["peak_curve"] == "rl" and res["peak_kl"] == res["overoptimization"]["rl"]["peak_kl"]
    json.dumps(res)  # JSON-serialisable


def test_proxy_equal_to_gold_is_not_flagged():
    _, gold = planted()
    res = overopt_curves(gold, gold, None, OveroptConfig(**FAST))
    assert not res["overoptimized"]
    for name, m in res["overoptimization"].items():
        assert not m["overoptimized"], name
        assert m["range_kl"] is None
    g = [r["gold"] for r in res["curves"]["rl"]]
    assert all(b >= a - 1e-12 for a, b in zip(g, g[1:]))  # optimising the gold itself only helps


def test_reinforce_and_heuristic_reference_run():
    proxy, gold = planted(n_pos=20, k=12)
    rng = np.random.default_rng(3)
    ref = [rng.dirichlet(np.ones(12)) for _ in proxy]
    res = overopt_curves(proxy, gold, ref, OveroptConfig(rl_estimator="reinforce", rl_steps=120, rl_samples=6,
                                                         n_boot=50, ns=[1, 4, 16]))
    traj = res["curves"]["rl_trajectory"]
    assert [r["step"] for r in traj] == list(range(121))
    assert traj[0]["kl"] == pytest.approx(0.0, abs=1e-12) and traj[-1]["kl"] > 0.5
    assert traj[-1]["proxy"] > 1.0
    assert res["overoptimization"]["rl_trajectory"]["overoptimized"]


def test_find_overoptimization_on_a_hand_made_curve():
    m = find_overoptimization([0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [0, 0.5, 0.8, 0.6, 0.1])
    assert m["overoptimized"] and m["peak_kl"] == 2 and m["range_kl"] == [2.0, 4.0]
    assert m["segments"] == [[2.0, 4.0]] and m["gold_drop"] == pytest.approx(0.7)
    flat = find_overoptimization([0, 1, 2], [0, 1, 2], [0, 0.5, 0.5 - 1e-9])  # a numerical wobble
    assert not flat["overoptimized"]
    both_fall = find_overoptimization([0, 1, 2], [0, 2, 1], [0, 1, 0.5])  # proxy falls too: not hacking
    assert not both_fall["overoptimized"]


def test_bad_inputs_name_the_field():
    with pytest.raises(ConfigError, match="ns"):
        OveroptConfig.parse({"ns": [4, 2]})
    with pytest.raises(ConfigError, match="betas"):
        OveroptConfig.parse({"betas": [1.0, -1.0]})
    with pytest.raises(ConfigError, match="n_position"):
        OveroptConfig.parse({"n_position": 3})
    with pytest.raises(ConfigError, match="template"):
        OveroptConfig.parse({"template": "{prompt} {move}"})
    with pytest.raises(ConfigError, match="max_ply"):
        OveroptConfig.parse({"min_ply": 20, "max_ply": 10})
    with pytest.raises(DataError, match="gold"):
        overopt_curves([np.zeros(3)], [np.zeros(4)])
    with pytest.raises(DataError, match="ref"):
        overopt_curves([np.zeros(3)], [np.zeros(3)], [np.array([1.0, -1.0, 0.5])])
    with pytest.raises(DataError, match="result"):
        overopt_plot({})


def test_plot_is_a_png():
    proxy, gold = planted(n_pos=10, k=10)
    png = overopt_plot(overopt_curves(proxy, gold, None, OveroptConfig(rl_steps=30, n_boot=20)))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


# ---------------------------------------------------------------------------------------------
# a small real run on chess


@pytest.mark.assets
def test_small_chess_run_completes_caches_and_beats_chance(tmp_path):
    pytest.importorskip("chess", reason="python-chess is not installed (pip install 'superalign[chess]')")
    from superalign.assets import locate

    if locate("stockfish") is None:
        pytest.skip("Stockfish is not installed (superalign assets install stockfish)")
    if locate("minilm") is None:
        pytest.skip("the offline MiniLM backbone is not installed (superalign assets install minilm)")
    import torch

    from superalign.store import Store

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # shallow engine, few positions; the move first and a short text so MiniLM features take seconds
        cfg = OveroptConfig(n_positions=4, depth=4, n_pairs=120, template="Move: {response}\n{prompt}", max_length=32,
                            rl_steps=60, n_boot=50)
        store = Store(tmp_path / "store")
        res = run_overopt(cfg, store)
        again = run_overopt(cfg, store)
    finally:
        torch.set_num_threads(threads)
    json.dumps(res)
    assert res["gold"]["n_positions"] == 4 and res["reference"]["n_positions"] == 4
    proxy = res["proxy"]
    assert proxy["n_train"] + proxy["n_test"] == 120 - proxy["overlap_removed"]
    assert proxy["eval_pair_accuracy"] > 0.5 and proxy["eval_pairs"] > 100  # above chance on unseen positions
    assert proxy["test_accuracy"] > 0.5  # and on held-out pairs
    bon = res["curves"]["best_of_n"]
    assert [r["n"] for r in bon] == cfg.ns and bon[0]["kl"] == 0.0 and bon[0]["gold"] == pytest.approx(0.0, abs=1e-12)
    assert len(res["curves"]["rl"]) == len(cfg.betas) and len(res["curves"]["rl_trajectory"]) == 61
    assert isinstance(res["overoptimized"], bool) and res["peak_kl"] >= 0
    assert all(not t["cached"] for k, t in res["timings"].items() if k != "total")
    assert all(t["cached"] for k, t in again["timings"].items() if k != "total")  # every stage cached
    assert again["curves"] == res["curves"] and again["stages"] == res["stages"]
    assert overopt_plot(res)[:4] == b"\x89PNG"
