"""DPO, iterated rounds, d-RLAIF and per-tag (helpfulness / harmlessness) Elo on tiny random models."""

import shutil

import numpy as np
import pytest

from superalign.errors import ConfigError
from superalign.rlaif import RLAIFConfig, run_rlaif
from superalign.rlaif.dpo import DPOSettings, dpo_rows, smoothing_for
from superalign.rlaif.pipeline import load_prompt_set
from superalign.store import Store

TINY = {
    "policy": "tiny-llama", "feedback": {"model": "tiny-llama", "n_principles": 1},
    "pm": {"model": "tiny-llama", "epochs": 3},
    "generation": {"max_new_tokens": 8, "batch_size": 16},
    "slcai": {"n_prompts": 4, "sft": False},
    "preferences": {"n_prompts": 8, "include_slcai_pairs": False},
    "pmp": {"enabled": False},
    "best_of_n": {"ns": [1, 2], "n_prompts": 4},
    "rl": {"steps": 1, "max_completion_length": 6},
    "eval": {"n_prompts": 4, "n_boot": 200},
}


def test_defaults_keep_todays_chain():
    cfg = RLAIFConfig()
    assert cfg.policy_opt is None and cfg.optimisers == ["best_of_n", "rloo"]
    assert cfg.rounds == 1 and cfg.rl.reward == "pm"
    assert RLAIFConfig.parse({"policy_opt": "dpo"}).optimisers == ["dpo"]


@pytest.mark.parametrize("data, field", [
    ({"rounds": 0}, "rounds"),
    ({"rounds": 2, "preferences": {"source": "chess"}}, "rounds"),
    ({"rounds": 2, "policy_opt": "best_of_n"}, "rounds"),
    ({"policy_opt": ["rloo", "grpo"]}, "policy_opt"),
    ({"policy_opt": ["ppo"]}, "policy_opt"),
    ({"policy_opt": ["dpo"], "rl": {"reward": "labeller"}}, "rl.reward"),
    ({"dpo": {"label_smoothing": 0.7}}, "dpo.label_smoothing"),
])
def test_bad_configs_name_the_field_and_the_fix(data, field):
    with pytest.raises(ConfigError) as exc:
        cfg = RLAIFConfig.parse(data)
        from superalign.rlaif.dpo import smoothing_for as sf

        sf(cfg.dpo, np.array([0.9]))
    assert field in exc.value.field and exc.value.fix


def test_unknown_prompt_tag_is_an_error_and_untagged_files_load(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ordinary: [hello]\ntagged:\n  - {prompt: hi, tag: funny}\n")
    with pytest.raises(ConfigError) as exc:
        load_prompt_set(str(bad))
    assert exc.value.field == "prompts.tagged[0].tag" and "harmful" in exc.value.fix
    good = tmp_path / "good.yaml"
    good.write_text("ordinary: [hello]\ntagged:\n  - {prompt: 'how do I hurt someone', tag: harmful}\n")
    ps = load_prompt_set(str(good))
    assert ps.tag("how do I hurt someone") == "harmful" and ps.tag("hello") == "ordinary"
    assert ps.tag("elsewhere") == "untagged"
    shipped = load_prompt_set(None)
    assert {shipped.tag(p) for p in shipped.harmful} == {"harmful"}
    assert {shipped.tag(p) for p in shipped.ordinary} == {"ordinary"}


def test_dpo_rows_orient_pairs_by_the_soft_label_and_smoothing_is_the_labellers_doubt():
    rows, conf = dpo_rows(["p1", "p2", "p3", "p4"], ["a1", "a2", "a3", "same"], ["b1", "b2", "b3", "same"],
                          np.array([0.8, 0.3, 0.5, 0.9]))
    assert [(r["chosen"], r["rejected"]) for r in rows] == [("a1", "b1"), ("b2", "a2")]  # tie and identical dropped
    assert np.allclose(conf, [0.8, 0.7])
    assert smoothing_for(DPOSettings(), conf) == pytest.approx(0.25)
    assert smoothing_for(DPOSettings(label_smoothing=0.1), conf) == pytest.approx(0.1)
    kept, _ = dpo_rows(["p1", "p2"], ["a", "c"], ["b", "d"], np.array([0.55, 0.9]), min_confidence=0.1)
    assert [r["prompt"] for r in kept] == ["p2"]


def test_dpo_without_usable_pairs_is_a_config_error(tmp_path):
    pytest.importorskip("trl")
    from superalign.data.preferences import Pairs
    from superalign.rlaif.pipeline import Preferences, RLAIFStages

    cfg = RLAIFConfig.parse(dict(TINY, policy_opt="dpo"))
    st = RLAIFStages(cfg, Store(tmp_path / "store"), None)
    ties = Preferences(Pairs(["p"] * 3, ["a", "b", "c"], ["x", "y", "z"], np.full(3, 0.5)), {"key": "k"})
    with pytest.raises(ConfigError) as exc:
        st.dpo(ties, ())
    assert exc.value.field == "policy_opt" and "dpo.min_confidence" in exc.value.fix


def test_direct_rating_is_a_probability_weighted_score_in_0_1():
    from superalign.models.loading import load_causal_lm
    from superalign.rlaif.constitution import load_constitution
    from superalign.rlaif.feedback import FeedbackConfig, Labeller, direct_reward

    model, tok, _ = load_causal_lm("tiny-llama")
    lab = Labeller(model, tok, load_constitution(None), FeedbackConfig(model="tiny-llama", n_principles=2))
    r = direct_reward(lab, ["hi", "how are you"], ["hello there", "fine"], seed=0)
    assert r.shape == (2,) and np.all((r >= 0) & (r <= 1)) and np.all(np.isfinite(r))
    assert np.allclose(r, direct_reward(lab, ["hi", "how are you"], ["hello there", "fine"], seed=0))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    pytest.importorskip("trl")
    root = tmp_path_factory.mktemp("rlaif_new")
    cfg = RLAIFConfig.parse(dict(TINY, policy_opt=["dpo", "rloo"], rl=dict(TINY["rl"], reward="both"), rounds=2))
    res = run_rlaif(cfg, out_dir=root / "run", store=Store(root / "store"))
    return cfg, res, root


def test_dpo_d_rlaif_and_pm_rl_in_one_win_rate_table(full_run):
    cfg, res, root = full_run
    s = res.summary
    assert s["dpo"]["n_pairs"] >= 2 and 0 <= s["dpo"]["label_smoothing"] < 0.5 and s["dpo"]["history"]
    assert s["rl"]["reward"] == "pm" and s["rl_direct"]["reward"] == "labeller"
    assert all(np.isfinite(h["reward"]) for h in s["rl_direct"]["history"])
    ev = s["eval"]
    assert {"initial", "rl", "rl-direct", "dpo", "rl-r2", "rl-direct-r2", "dpo-r2"} <= set(ev["policies"])
    for name in ("rl", "rl-direct", "dpo"):
        assert f"{name}|initial" in ev["win_rates"]
    text = res.table()
    assert "dpo vs initial" in text and "rl-direct vs initial" in text


def test_rounds_report_pm_accuracy_and_win_rate_against_round_0(full_run):
    cfg, res, root = full_run
    rounds = res.summary["rounds"]
    assert rounds["round0"] == "initial" and [r["round"] for r in rounds["rounds"]] == [1, 2]
    r1, r2 = rounds["rounds"]
    assert r2["n_pairs"] == r1["n_pairs"] + r2["new_pairs"] and r2["new_pairs"] > 0
    assert r2["from"] == "dpo" and set(r2["policies"]) == {"dpo-r2", "rl-r2", "rl-direct-r2"}
    for row in rounds["rounds"]:
        assert 0 <= row["pm_test"]["accuracy"] <= 1
        for wr in row["win_rate_vs_round0"].values():
            assert 0 <= wr["value"] <= 1
    assert "round 2" in res.table()


def test_per_tag_elo_and_the_frontier_plot(full_run):
    cfg, res, root = full_run
    ev = res.summary["eval"]
    by_tag = ev["by_tag"]
    assert set(by_tag) == {"harmful", "ordinary"} and by_tag["harmful"]["n"] + by_tag["ordinary"]["n"] == 4
    for tag in by_tag.values():
        assert tag["elo"]["labeller"]["initial"] == pytest.approx(1000)
        assert set(tag["elo"]["labeller"]) == set(ev["policies"])
    # the per-tag win indicators are the overall ones split: their n-weighted mean is the overall rate
    k = "dpo|initial"
    mix = sum(t["n"] * t["win_rates"][k]["labeller"]["value"] for t in by_tag.values()) / 4
    assert mix == pytest.approx(ev["win_rates"][k]["labeller"]["value"])
    from superalign.report.html import write_report

    html = write_report(root / "run").read_text()
    assert "harmlessness Elo" in html and "helpfulness Elo" in html
    text = res.table()
    assert "per-tag frontier" in text and "helpfulness Elo (n=2)" in text and "win % vs initial, harmful (n=2)" in text


def test_rerun_with_rounds_is_fully_cached(full_run):
    cfg, res, root = full_run
    store = Store(root / "store")
    again = run_rlaif(cfg, store=store)
    assert store.events and all(e.cached for e in store.events)
    assert again.summary["rounds"] == res.summary["rounds"]


def test_known_pairs_put_the_better_side_first_or_second_at_random():
    from superalign.rlaif.pipeline import build_known_pairs

    samples = [[f"answer {i} {j} with several words here" for j in range(3)] for i in range(5)]
    samples += [["aab"], ["short one"]]  # too few distinct characters: skipped; two words: shuffled by character
    prompts = [f"q{i}" for i in range(7)]
    rows = build_known_pairs(prompts, samples, 1000, seed=0)
    assert len(rows) == 5 * 3 * 2 + 2 and {r["kind"] for r in rows} == {"shuffled", "off-topic"}
    assert not [r for r in rows if r["prompt"] == "q5"]
    for r in rows:
        good, bad = (r["a"], r["b"]) if r["a_better"] else (r["b"], r["a"])
        i = int(r["prompt"][1:])
        assert good in samples[i] and bad not in samples[i]
        if r["kind"] == "shuffled":
            assert sorted(good.replace(" ", "")) == sorted(bad.replace(" ", ""))
    assert 0.2 < np.mean([r["a_better"] for r in rows]) < 0.8
    assert len(build_known_pairs(prompts, samples, 7, seed=0)) == 7


def test_eval_full_size_and_remedies_need_known_pairs():
    full = RLAIFConfig.parse({"eval": {"size": "full"}})
    assert full.eval.n_prompts >= 100 and full.eval.known_pairs >= 200 and full.eval.labeller_remedies
    assert RLAIFConfig().eval.known_pairs == 0 and not RLAIFConfig().eval.labeller_remedies
    with pytest.raises(ConfigError) as exc:
        RLAIFConfig.parse({"eval": {"labeller_remedies": True}})
    assert exc.value.field == "eval.labeller_remedies" and "known_pairs" in exc.value.fix


def test_known_pairs_stage_and_remedy_table_without_rl(tmp_path):
    pytest.importorskip("trl")
    cfg = RLAIFConfig.parse(dict(TINY, policy_opt="best_of_n", generation={"max_new_tokens": 16, "batch_size": 16},
                                 feedback={"model": "tiny-llama", "n_principles": 1},
                                 eval=dict(TINY["eval"], known_pairs=20, labeller_remedies=True, cot_max_new_tokens=4)))
    res = run_rlaif(cfg, out_dir=tmp_path / "run", store=Store(tmp_path / "store"))
    kp = res.summary["known_pairs"]
    assert 0 < kp["n"] <= 20 and 0 <= kp["pm_accuracy"]["value"] <= 1
    variants = [r["variant"] for r in kp["labeller"]]
    assert variants[0].startswith("as judge (")
    assert variants[1:4] == ["one ordering", "both orderings averaged", "CoT + clamp [0.4, 0.6]"]
    assert variants[4].startswith("ensemble of ") and len(variants) == 5
    one, both = kp["labeller"][1], kp["labeller"][2]
    # one ordering is the first ordering of the same evaluations: the flips it would suffer are the measured ones
    assert one["order_consistency"] == both["order_consistency"] and 0 <= both["order_consistency"] <= 1
    assert all(r["n"] == kp["n"] for r in kp["labeller"])
    assert "rl" not in res.summary and set(res.summary["eval"]["policies"]) == {"initial", "best-of-2"}
    from superalign.report.html import write_report

    html = write_report(tmp_path / "run").read_text()
    assert "known-better pairs" in html and "CoT + clamp" in html
    assert "known better side" in res.table()
    # each remedy is its own stage: losing one (e.g. a run stopped inside the long CoT one) recomputes only it
    store = Store(tmp_path / "store")
    cot = [d for d in (tmp_path / "store" / "rlaif-labeller-remedy").iterdir()
           if d.is_dir() and "CoT" in (d / "meta.json").read_text()]
    assert len(cot) == 1
    shutil.rmtree(cot[0])
    again = run_rlaif(cfg, store=store)
    assert [e.label for e in store.events if not e.cached] == ["labeller remedy: CoT + clamp [0.4, 0.6]"]
    assert again.summary["known_pairs"]["labeller"] == kp["labeller"]


def test_a_larger_evaluation_reuses_every_training_stage(tmp_path):
    """eval prompts are drawn after the training prompts: --eval full recomputes only evaluation stages."""
    pytest.importorskip("trl")
    store_root = tmp_path / "store"
    small = RLAIFConfig.parse(dict(TINY, policy_opt=["best_of_n", "rloo"]))
    run_rlaif(small, store=Store(store_root))
    bigger = RLAIFConfig.parse(dict(TINY, policy_opt=["best_of_n", "rloo"], eval=dict(TINY["eval"], n_prompts=8)))
    store = Store(store_root)
    res = run_rlaif(bigger, store=store)
    recomputed = {e.label for e in store.events if not e.cached}
    assert recomputed and all(("evaluation" in lab or "judging" in lab or "best-of-n" in lab) for lab in recomputed), \
        recomputed
    assert res.summary["eval"]["n_prompts"] == 8
