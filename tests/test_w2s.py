import json
import subprocess
import sys
import time

import pytest
from conftest import tiny_config

from superalign.errors import ConfigError
from superalign.store import Store
from superalign.w2s import W2SConfig, run_w2s

ALL_METHODS = [
    {"name": "naive-soft"},
    {"name": "naive-hard", "labels": "hard"},
    {"name": "logconf", "loss": {"name": "logconf", "aux_weight": 0.75}},
    {"name": "es-weak", "early_stopping": "weak"},
    {"name": "es-oracle", "early_stopping": "oracle"},
    {"name": "bootstrap", "bootstrap": ["tiny-llama"]},
]


def test_every_method_runs_and_reports(toy_csv, tmp_path):
    cfg = W2SConfig.parse(tiny_config(toy_csv, methods=ALL_METHODS))
    res = run_w2s(cfg, out_dir=tmp_path / "run", store=Store(tmp_path / "s"))
    rows = {r["method"]: r for r in res.rows}
    assert set(rows) == {m["name"] for m in ALL_METHODS}
    for r in rows.values():
        for key in ("weak", "w2s", "ceiling"):
            assert 0.0 <= r[key]["low"] <= r[key]["value"] <= r[key]["high"] <= 1.0
        assert 0 <= r["agreement"] <= 1 and r["ece_w2s"] >= 0
        assert len(r["pgr_per_seed"]) == 2
    # same weak model and ceiling (same regime) serve every method
    assert len({json.dumps(r["weak"]) for r in rows.values()}) == 1
    assert len({json.dumps(r["ceiling"]) for r in rows.values()}) == 1
    # methods differ in what they train on: soft vs hard labels give different students
    assert rows["naive-soft"]["w2s"] != rows["naive-hard"]["w2s"] or rows["naive-soft"]["ece_w2s"] != rows["naive-hard"]["ece_w2s"]
    assert len(rows["bootstrap"]["intermediates"]) == 1
    text = res.table()
    assert "naive-soft" in text and "PGR" in text
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(res.rows))


def test_rerun_recomputes_nothing(toy_csv, tmp_path):
    cfg = W2SConfig.parse(tiny_config(toy_csv, methods=ALL_METHODS[:3]))
    first_store = Store(tmp_path / "s")
    first = run_w2s(cfg, store=first_store)
    assert any(not e.cached for e in first_store.events)
    again_store = Store(tmp_path / "s")
    again = run_w2s(cfg, store=again_store)
    assert again_store.events and all(e.cached for e in again_store.events)
    assert json.dumps(again.rows) == json.dumps(first.rows)
    assert again.summary["stages"].endswith(", 0 computed")


def test_same_config_and_seed_give_identical_numbers_in_fresh_stores(toy_csv, tmp_path):
    cfg = W2SConfig.parse(tiny_config(toy_csv, methods=[{"name": "naive"}, {"name": "lc", "loss": "logconf"}]))
    a = run_w2s(cfg, store=Store(tmp_path / "a"))
    b = run_w2s(cfg, store=Store(tmp_path / "b"))
    assert json.dumps(a.rows) == json.dumps(b.rows)
    c = run_w2s(cfg.model_copy(update={"seeds": [5, 6]}), store=Store(tmp_path / "c"))
    assert json.dumps(c.rows) != json.dumps(a.rows)


def test_finetune_student_regime_with_its_own_ceiling(toy_csv, tmp_path):
    methods = [{"name": "probe"},
               {"name": "lastk", "student": {"regime": "last_k", "epochs": 1, "batch_size": 32, "lr": 1e-3}}]
    cfg = W2SConfig.parse(tiny_config(toy_csv, methods=methods, seeds=[0]))
    store = Store(tmp_path / "s")
    res = run_w2s(cfg, store=store)
    assert [r["regime"] for r in res.rows] == ["probe", "last_k"]
    ceilings = [e for e in store.events if e.label.startswith("ceiling")]
    assert len(ceilings) == 2  # one ceiling per student regime


def test_last_k_without_prefix_cache_streams_the_frozen_blocks_and_matches_the_cache(toy_csv, tmp_path):
    student = {"regime": "last_k", "epochs": 2, "batch_size": 16, "lr": 1e-3}
    results = {}
    for cache in (True, False):
        methods = [{"name": "lastk", "student": {**student, "prefix_cache": cache}}]
        cfg = W2SConfig.parse(tiny_config(toy_csv, methods=methods, seeds=[0]))
        store = Store(tmp_path / f"s{cache}")
        results[cache] = run_w2s(cfg, store=store).rows[0]
        prefix_stages = list((tmp_path / f"s{cache}" / "prefix").glob("*/meta.json"))
        assert bool(prefix_stages) == cache  # no prefix states stored without the cache
    for key in ("w2s", "ceiling"):
        assert results[True][key]["value"] == pytest.approx(results[False][key]["value"], abs=0.02)
    assert results[True]["agreement"] == pytest.approx(results[False]["agreement"], abs=0.02)


RESUME_SCRIPT = """
import sys, json
from superalign.store import Store
from superalign.w2s import W2SConfig, run_w2s
cfg = W2SConfig.parse(json.loads(sys.argv[1]))
run_w2s(cfg, store=Store(sys.argv[2]))
"""


def test_killed_run_resumes_without_recomputing_finished_stages(toy_csv, tmp_path):
    cfg = tiny_config(toy_csv, seeds=[0, 1, 2], methods=ALL_METHODS[:2],
                      strong={"model": "tiny-llama", "regime": "full", "epochs": 2, "batch_size": 16,
                              "checkpoint_every": 2})
    root = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, json.dumps(cfg), str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once some training stages have finished, mid-run
        done = list((root / "train").glob("*/meta.json")) if (root / "train").exists() else []
        if len(done) >= 3:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    finished_before = {p.parent.name for p in (root / "train").glob("*/meta.json")}
    assert finished_before, "the run finished no stage before it was killed"
    store = Store(root)
    res = run_w2s(W2SConfig.parse(cfg), store=store)
    recomputed = {e.key for e in store.events if not e.cached}
    assert not (recomputed & finished_before)
    assert not list(root.glob("*/.tmp-*"))
    fresh = run_w2s(W2SConfig.parse(cfg), store=Store(tmp_path / "fresh"))
    assert json.dumps(res.rows) == json.dumps(fresh.rows)


def test_bad_config_errors_name_the_field(toy_csv):
    with pytest.raises(ConfigError) as e:
        W2SConfig.parse(tiny_config(toy_csv, weak={"model": "tiny-bert", "regime": "probez"}))
    assert "weak.regime" in str(e.value) and "probe" in str(e.value)
    with pytest.raises(ConfigError) as e:
        W2SConfig.parse(tiny_config(toy_csv, epochs=3))
    assert "epochs" in str(e.value) and "remove" in str(e.value)
    with pytest.raises(ConfigError) as e:
        W2SConfig.parse(tiny_config(toy_csv, methods=[{"name": "a", "student": {"regime": "nope"}}]))
    assert "student" in str(e.value)
    with pytest.raises(ConfigError, match="splits.val"):
        W2SConfig.parse(tiny_config(toy_csv, splits={"weak_train": 10, "strong_train": 10, "val": 0, "test": 10},
                                    methods=[{"name": "a", "early_stopping": "weak"}]))


def test_split_sizes_that_do_not_fit_the_task(toy_csv, tmp_path):
    from superalign.errors import DataError

    cfg = W2SConfig.parse(tiny_config(toy_csv, splits={"weak_train": 500, "strong_train": 500, "val": 0, "test": 10}))
    with pytest.raises(DataError, match="has 600"):
        run_w2s(cfg, store=Store(tmp_path / "s"))


def test_unreliable_pgr_is_flagged_not_hidden(toy_csv, tmp_path):
    # the same model as weak and strong: no gap, so PGR must be flagged
    cfg = W2SConfig.parse(tiny_config(toy_csv, strong={"model": "tiny-bert", "regime": "probe", "epochs": 4},
                                      seeds=[0]))
    res = run_w2s(cfg, store=Store(tmp_path / "s"))
    assert not res.rows[0]["pgr_reliable"] and res.rows[0]["pgr_note"]
    assert "unreliable" in res.table()


def test_prompting_rows(toy_csv, tmp_path):
    cfg = W2SConfig.parse(tiny_config(toy_csv, seeds=[0],
                                      prompting=[{"model": "tiny-llama", "shots": [0, 2], "max_test": 20}]))
    res = run_w2s(cfg, store=Store(tmp_path / "s"))
    prompt = [r for r in res.rows if r["kind"] == "prompt"]
    assert [r["shots"] for r in prompt] == [0, 2] and all(r["n_test"] == 20 for r in prompt)


def test_report_html(toy_csv, tmp_path):
    from superalign.report.html import write_report

    cfg = W2SConfig.parse(tiny_config(toy_csv, seeds=[0], methods=ALL_METHODS[:2]))
    run_w2s(cfg, out_dir=tmp_path / "run", store=Store(tmp_path / "s"))
    html = write_report(tmp_path / "run").read_text()
    assert "naive-soft" in html and html.count("data:image/png;base64,") >= 3
    assert "<table>" in html
