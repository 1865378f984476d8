"""The RLAIF chain end to end on tiny random-initialised models (seconds), cached and resumable."""

import json

import pandas as pd
import pytest

from superalign.errors import ConfigError
from superalign.rlaif import RLAIFConfig, run_rlaif
from superalign.rlaif.pipeline import load_prompt_set, split_prompts
from superalign.store import Store

TINY = {
    "policy": "tiny-llama", "feedback": {"model": "tiny-llama", "n_principles": 2},
    "pm": {"model": "tiny-llama", "epochs": 5},
    "generation": {"max_new_tokens": 10, "batch_size": 16},
    "slcai": {"n_prompts": 6, "sft_epochs": 1},
    "preferences": {"n_prompts": 12},
    "pmp": {"n_questions": 30, "sizes": [4, 8], "seeds": [0], "epochs": 3},
    "best_of_n": {"ns": [1, 2, 4], "n_prompts": 4},
    "rl": {"steps": 2, "max_completion_length": 8},
    "eval": {"n_prompts": 4, "n_boot": 200},
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rlaif")
    pytest.importorskip("trl")
    cfg = RLAIFConfig.parse(dict(TINY, pmp={"enabled": False}))
    res = run_rlaif(cfg, out_dir=root / "run", store=Store(root / "store"))
    return cfg, res, root


def test_chain_runs_and_reports_every_stage(tiny_run):
    cfg, res, root = tiny_run
    s = res.summary
    assert s["slcai"]["n"] == 6 and s["sft"]["losses"]
    assert s["preferences"]["kind"] == "ai" and -0.5 <= s["preferences"]["position_bias"] <= 0.5
    assert 0 <= s["pm"]["test"]["accuracy"] <= 1
    assert [r["n"] for r in s["best_of_n"]["curve"]] == [1, 2, 4]
    hist = s["rl"]["history"]
    assert hist and {"reward", "kl", "length", "eos_rate", "beta"} <= set(hist[0])
    ev = s["eval"]
    assert set(ev["policies"]) >= {"initial", "sft", "rl"}
    assert "rl|initial" in ev["win_rates"] and "rl|sft" in ev["win_rates"]
    assert ev["elo"]["labeller"]["initial"] == pytest.approx(1000)
    saved = json.loads((root / "run" / "results.json").read_text())
    assert saved["experiment"] == "rlaif"
    from superalign.report.html import write_report

    html = write_report(root / "run").read_text()
    assert "position bias" in html and html.count("data:image/png;base64,") >= 3
    assert "win rate" in res.table()


def test_rerun_is_fully_cached(tiny_run):
    cfg, res, root = tiny_run
    store = Store(root / "store")
    again = run_rlaif(cfg, store=store)
    assert store.events and all(e.cached for e in store.events)
    assert json.dumps(again.summary["eval"]["win_rates"]) == json.dumps(res.summary["eval"]["win_rates"])


def test_run_releases_its_models(tiny_run, monkeypatch):
    import gc
    import weakref

    from superalign.models import cache as mc
    from superalign.rlaif import models as pl  # the run's model handles live in rlaif/models.py

    cfg, res, root = tiny_run
    refs = []
    real = pl.load_backbone

    def recording(*a, **k):
        out = real(*a, **k)
        refs.append(weakref.ref(out[0]))
        return out

    monkeypatch.setattr(pl, "load_backbone", recording)
    mc.process_cache().clear()  # earlier tests (outside any run scope) may have filled it
    run_rlaif(cfg, store=Store(root / "store"))  # all cached, but the PM backbone still loads to score
    assert refs, "expected the cached run to load the PM backbone"
    gc.collect()
    assert all(r() is None for r in refs), "a model outlived run_rlaif"
    assert mc.active_cache() is mc.process_cache() and len(mc.process_cache()) == 0


def test_pmp_and_data_efficiency(tmp_path):
    from superalign.assets import locate

    if locate("wordnet") is None:
        pytest.skip("WordNet not installed")
    cfg = RLAIFConfig.parse(TINY)
    res = run_rlaif(cfg, store=Store(tmp_path / "s"))
    rows = res.summary["pm"]["data_efficiency"]
    assert {r["pmp"] for r in rows} == {True, False} and {r["n"] for r in rows} == {4, 8}
    assert res.summary["pm"]["pmp_pairs"] > 10


def test_rlhf_path_from_a_file(tmp_path):
    rows = [{"prompt": f"Question {i}?", "chosen": "A careful, kind answer.", "rejected": "Go away."} for i in range(24)]
    pd.DataFrame(rows).to_json(tmp_path / "prefs.jsonl", orient="records", lines=True)
    cfg = RLAIFConfig.parse(dict(TINY, pmp={"enabled": False}, slcai={"n_prompts": 4, "sft": False},
                                 preferences={"source": "file", "path": str(tmp_path / "prefs.jsonl")}))
    res = run_rlaif(cfg, store=Store(tmp_path / "s"))
    assert res.summary["preferences"]["kind"] == "human" and res.summary["pm"]["test"]["n"] >= 2
    # the planted preference is lexical and constant: even random features separate it
    assert res.summary["pm"]["test"]["accuracy"] == pytest.approx(1.0)
    assert "sft" not in res.summary["eval"]["policies"]
    # RLHF: the policy is evaluated (and trained) on the data's own prompts, held out from each other
    file_prompts = {r["prompt"] for r in rows}
    evaluated = {e["prompt"] for e in res.summary["eval"]["examples"]}
    assert evaluated <= file_prompts and res.summary["eval"]["n_prompts"] == 4
    agree = res.summary["labeller_vs_preference_data"]
    assert agree["n"] == 24 and 0.0 <= agree["agreement"] <= 1.0
    assert "labeller vs 24 labelled pairs of the preference data" in res.table()


def test_preference_formats_implicit_prompt_and_conversational(tmp_path):
    from superalign.data.preferences import load_preference_rows
    from superalign.rlaif.pipeline import policy_prompts_from_pairs

    hh = [{"chosen": "\n\nHuman: How do I bake bread?\n\nAssistant: I think you mix flour and water.",
           "rejected": "\n\nHuman: How do I bake bread?\n\nAssistant: I won't help."}]
    pd.DataFrame(hh).to_json(tmp_path / "hh.jsonl", orient="records", lines=True)
    assert load_preference_rows(str(tmp_path / "hh.jsonl")) == [{
        "prompt": "Human: How do I bake bread?\n\nAssistant:", "chosen": "I think you mix flour and water.",
        "rejected": "I won't help."}]  # cut at a word boundary, not inside the shared "I"
    conv = [{"chosen": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Blue."}],
             "rejected": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Green."}]}]
    pd.DataFrame(conv).to_parquet(tmp_path / "conv.parquet")
    assert load_preference_rows(str(tmp_path / "conv.parquet")) == [{"prompt": "Sky?", "chosen": "Blue.",
                                                                     "rejected": "Green."}]
    ev_prompts, rl_prompts = policy_prompts_from_pairs(["a", "b", "a", "c", "d"], 2, seed=0)
    assert len(ev_prompts) == 2 and sorted(ev_prompts + rl_prompts) == ["a", "b", "c", "d"]
    with pytest.raises(ConfigError, match="eval.n_prompts"):
        policy_prompts_from_pairs(["a", "b"], 2, seed=0)


@pytest.mark.assets
def test_rlhf_path_on_stockfish_ranked_moves(tmp_path, monkeypatch):
    """The offline RLHF path with exact ground truth: move pairs ranked by Stockfish, cached once."""
    from superalign.assets import locate

    if locate("stockfish") is None:
        pytest.skip("Stockfish not installed")
    from superalign.data import chess as sc

    monkeypatch.setenv("SUPERALIGN_HOME", str(tmp_path / "home"))
    cfg = RLAIFConfig.parse(dict(TINY, pmp={"enabled": False}, slcai={"n_prompts": 2, "sft": False},
                                 preferences={"source": "chess", "n_chess": 12}))
    res = run_rlaif(cfg, store=Store(tmp_path / "s"))
    s = res.summary
    assert s["preferences"]["kind"] == "stockfish" and s["preferences"]["n"] == 12
    assert all(e["prompt"].startswith(("White to move.", "Black to move.")) for e in s["eval"]["examples"])

    def no_engine(*a, **k):
        raise AssertionError("the cached pairs should have been read")

    monkeypatch.setattr(sc, "move_preference_pairs", no_engine)
    again = run_rlaif(cfg, store=Store(tmp_path / "s"))
    assert again.summary["pm"] == s["pm"]


def test_bad_inputs_name_the_field(tmp_path):
    pd.DataFrame([{"prompt": "p", "good": "a", "rejected": "b"}]).to_csv(tmp_path / "bad.csv", index=False)
    cfg = RLAIFConfig.parse(dict(TINY, preferences={"source": "file", "path": str(tmp_path / "bad.csv")},
                                 slcai={"n_prompts": 2, "sft": False}))
    with pytest.raises(ConfigError, match="chosen"):
        run_rlaif(cfg, store=Store(tmp_path / "s"))
    with pytest.raises(ConfigError, match="feedback.n_principles"):
        RLAIFConfig.parse({"feedback": {"n_principles": 0}})
    (tmp_path / "empty.yaml").write_text("harmful: ['']\n")
    with pytest.raises(ConfigError, match=r"prompts.harmful\[0\]"):
        load_prompt_set(str(tmp_path / "empty.yaml"))
    with pytest.raises(ConfigError, match="n_prompts"):
        split_prompts(load_prompt_set(None), {"eval": 1000}, 0)


def test_shipped_prompt_set():
    ps = load_prompt_set(None)
    assert len(ps.harmful) >= 80 and len(ps.ordinary) >= 80 and len(ps.labelled_pairs) >= 20
    split = split_prompts(ps, {"a": 10, "b": 10}, 0)
    assert not set(split["a"]) & set(split["b"])
    assert sum(p in ps.harmful for p in split["a"]) == 5


def test_pairs_from_rows_in_data_put_the_chosen_response_at_random():
    from superalign.data.preferences import Pairs, pairs_from_rows
    from superalign.rlaif.pm import Pairs as PMPairs

    assert Pairs is PMPairs  # one class, importable from both places
    rows = [{"prompt": f"q{i}", "chosen": f"good{i}", "rejected": f"bad{i}"} for i in range(40)]
    pairs = pairs_from_rows(rows, seed=3)
    assert len(pairs) == 40 and set(pairs.p.tolist()) == {0.0, 1.0}
    for a, b, p in zip(pairs.a, pairs.b, pairs.p):
        assert (a.startswith("good") and b.startswith("bad")) if p == 1 else (a.startswith("bad") and b.startswith("good"))
    again = pairs_from_rows(rows, seed=3)
    assert again.a == pairs.a and pairs_from_rows(rows, seed=4).a != pairs.a
