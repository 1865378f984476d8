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
