"""End-to-end: the embedded default experiment, as `superalign w2s run` runs it (minutes: -m slow)."""

import pytest

from superalign.cli import CONFIG_DIR


@pytest.mark.slow
@pytest.mark.assets
def test_default_w2s_experiment(tmp_path):
    from superalign.store import Store
    from superalign.w2s import W2SConfig, run_w2s

    cfg = W2SConfig.from_yaml(CONFIG_DIR / "w2s_default.yaml")
    res = run_w2s(cfg, out_dir=tmp_path / "run", store=Store(tmp_path / "s"))
    rows = {r["method"]: r for r in res.rows if r["kind"] == "w2s"}
    for r in rows.values():
        assert r["gap"]["value"] >= 0.05 and r["pgr_reliable"], r  # the default is chosen so PGR means something
    assert len(cfg.seeds) >= 3 and {"naive-soft", "aux-conf"} <= set(rows)


def test_default_config_is_valid_and_meets_the_brief():
    from superalign.w2s import W2SConfig

    cfg = W2SConfig.from_yaml(CONFIG_DIR / "w2s_default.yaml")
    assert len(cfg.seeds) >= 3
    assert any(m.loss.name == "logconf" for m in cfg.methods) and any(m.loss.name == "xent" for m in cfg.methods)


@pytest.mark.slow
@pytest.mark.assets
def test_default_rlaif_run(tmp_path):
    """`superalign rlaif run` with no arguments: the whole chain on the offline zoo, with its report."""
    from superalign.report.html import write_report
    from superalign.rlaif import RLAIFConfig, run_rlaif
    from superalign.store import Store

    cfg = RLAIFConfig.from_yaml(CONFIG_DIR / "rlaif_default.yaml")
    res = run_rlaif(cfg, out_dir=tmp_path / "run", store=Store(tmp_path / "s"))
    s = res.summary
    assert s["preferences"]["kind"] == "ai" and s["preferences"]["n"] >= 32
    assert 0.0 <= s["pm"]["test"]["accuracy"] <= 1.0 and s["pm"]["data_efficiency"]
    assert [r["n"] for r in s["best_of_n"]["curve"]] == cfg.best_of_n.ns
    kls = [r["kl"] for r in s["best_of_n"]["curve"]]
    assert kls[0] == pytest.approx(0.0) and kls == sorted(kls)  # analytic KL of best-of-n grows with n
    assert len(s["rl"]["history"]) == cfg.rl.steps
    assert {"rl|initial", "rl|sft", "dpo|initial", "dpo|sft"} <= set(s["eval"]["win_rates"])
    assert s["dpo"]["n_pairs"] >= 32
    by_tag = s["eval"]["by_tag"]
    assert set(by_tag) == {"harmful", "ordinary"} and sum(t["n"] for t in by_tag.values()) == cfg.eval.n_prompts
    assert s["known_pairs"]["n"] >= 200 and 0 <= s["known_pairs"]["pm_accuracy"]["value"] <= 1
    text = res.table()
    assert "dpo vs initial" in text and "per-tag frontier" in text and "(n=24)" in text
    html = write_report(tmp_path / "run").read_text()
    assert "position bias" in html and html.count("data:image/png;base64,") >= 5
    assert "harmlessness Elo" in html and "helpfulness Elo" in html


@pytest.mark.slow
@pytest.mark.assets
def test_default_oversight_run(tmp_path):
    """`superalign oversight run` with no arguments: easy-to-hard, critique gap, over-optimization and
    automated interpretability on the offline zoo, in one report."""
    from superalign.oversight import OversightConfig, run_oversight
    from superalign.report.html import write_report
    from superalign.store import Store

    cfg = OversightConfig.from_yaml(CONFIG_DIR / "oversight_default.yaml")
    res = run_oversight(cfg, out_dir=tmp_path / "run", store=Store(tmp_path / "s"))
    assert set(res.results) == {"easy_to_hard", "critique_gap", "overoptimization", "autointerp"}
    text = res.table()
    for needle in ("easy-to-hard", "discriminator-critique gap", "reward over-optimization",
                   "automated interpretability"):
        assert needle in text
    html = write_report(tmp_path / "run").read_text()
    assert html.count("data:image/png;base64,") >= 4
