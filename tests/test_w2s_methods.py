"""W2S methods: generative finetuning, weak ensembles, label filters, misfit/gain and test curves."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_config

from superalign.errors import ConfigError
from superalign.store import Store
from superalign.w2s import W2SConfig, run_w2s
from superalign.w2s import methods as M
from superalign.w2s.config import GenerativeFinetuneConfig, MethodConfig, ModelConfig

GEN = {"max_texts": 48, "epochs": 1, "batch_size": 8, "max_length": 24, "lr": 5e-3}


# -- config --------------------------------------------------------------------------------------

def test_generative_shorthand_and_defaults():
    on = ModelConfig.model_validate({"model": "tiny-llama", "generative_finetune": True})
    assert on.generative_finetune == GenerativeFinetuneConfig()
    assert on.generative_finetune.regime == "lora" and on.generative_finetune.lora_r == 8
    assert on.generative_finetune.max_length == 64 and on.generative_finetune.max_texts == 256
    for off in (False, None):
        assert ModelConfig.model_validate({"model": "tiny-llama", "generative_finetune": off}).generative_finetune is None
    # the training loop's config never sees the field
    assert "generative_finetune" not in on.train_config().model_dump()
    with pytest.raises(ValueError):
        ModelConfig.model_validate({"model": "tiny-llama", "generative_finetune": {"regime": "qlora"}})


def test_generative_on_an_encoder_names_the_field(toy_csv, tmp_path):
    cfg = W2SConfig.parse(tiny_config(toy_csv, strong={"model": "tiny-bert", "generative_finetune": True}))
    with pytest.raises(ConfigError) as exc:
        run_w2s(cfg, store=Store(tmp_path / "s"))
    assert exc.value.field == "strong.generative_finetune" and "decoder" in exc.value.fix
    cfg = W2SConfig.parse(tiny_config(toy_csv, methods=[
        {"name": "m", "bootstrap": [{"model": "tiny-bert", "generative_finetune": True}]}]))
    with pytest.raises(ConfigError, match=r"methods\[m\]\.bootstrap\[0\]\.generative_finetune"):
        run_w2s(cfg, store=Store(tmp_path / "s"))


def test_method_shorthands():
    m = MethodConfig.model_validate({"name": "x", "weak_ensemble": ["tiny-bert"], "label_filter": "confidence"})
    assert m.weak_ensemble[0].model == "tiny-bert" and m.label_filter.name == "confidence"
    assert m.label_filter.k == 20 and m.label_filter.drop_frac == 0.2
    with pytest.raises(ValueError):
        MethodConfig.model_validate({"name": "x", "label_filter": "nearest"})


# -- pure functions on constructed cases --------------------------------------------------------

def test_ensemble_labels_are_the_mean():
    a = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    b = np.array([[0.5, 0.5], [0.6, 0.4]], np.float32)
    c = np.array([[0.1, 0.9], [0.1, 0.9]], np.float32)
    np.testing.assert_allclose(M.ensemble_labels([a, b, c]), [[0.5, 0.5], [0.3, 0.7]], atol=1e-6)


def test_knn_filter_drops_the_examples_that_disagree_with_their_neighbours():
    rng = np.random.default_rng(0)
    # two tight clusters; the weak labels follow the cluster except for three planted flips
    feats = np.concatenate([rng.normal(0, 0.05, (20, 4)) + [3, 0, 0, 0], rng.normal(0, 0.05, (20, 4)) - [3, 0, 0, 0]])
    probs = np.array([[0.1, 0.9]] * 20 + [[0.9, 0.1]] * 20, np.float32)
    flipped = [2, 11, 33]
    probs[flipped] = probs[flipped][:, ::-1]
    keep, score = M.filter_labels("knn_consistency", probs, 0.075, features=feats, k=5)
    assert len(keep) == 40 - 3  # round(0.075 * 40) = 3 dropped
    assert set(np.setdiff1d(np.arange(40), keep)) == set(flipped)
    assert score[flipped].min() > np.delete(score, flipped).max()


def test_confidence_filter_drops_the_least_confident():
    probs = np.array([[0.55, 0.45], [0.99, 0.01], [0.3, 0.7], [0.5, 0.5], [0.9, 0.1]], np.float32)
    keep, _ = M.filter_labels("confidence", probs, 0.4)
    assert keep.tolist() == [1, 2, 4]  # round(0.4 * 5) = 2 dropped: positions 3 (0.5) and 0 (0.55)


def test_misfit_and_gain_on_a_constructed_case():
    y = np.array([0, 1, 1, 0])
    weak = [np.array([[0.6, 0.4], [0.5, 0.5], [0.2, 0.8], [0.4, 0.6]])]
    student = [np.array([[0.8, 0.2], [0.3, 0.7], [0.2, 0.8], [0.4, 0.6]])]
    res = M.misfit_gain(student, weak, y, n_boot=200)
    # misfit per example: 2*0.2^2, 2*0.2^2, 0, 0 -> mean 0.04
    assert res["misfit"]["value"] == pytest.approx(0.04)
    # weak errors 2*.4^2, 2*.5^2, 2*.2^2, 2*.6^2 = .32,.5,.08,.72; student .08,.18,.08,.72 -> gain (.24+.32)/4
    assert res["gain"]["value"] == pytest.approx(0.14)
    assert res["misfit_bound_holds"] is True
    assert res["misfit"]["low"] <= res["misfit"]["value"] <= res["misfit"]["high"]
    worse = M.misfit_gain(weak, student, y, n_boot=200)  # the roles swapped: negative gain, same misfit
    assert worse["gain"]["value"] == pytest.approx(-0.14) and worse["misfit_bound_holds"] is False


def test_mean_curve_averages_by_step():
    c = M.mean_curve([[{"step": 1, "test_acc": 0.5}, {"step": 2, "test_acc": 0.7, "val_acc": 0.6}],
                      [{"step": 1, "test_acc": 0.7}]])
    assert c == [{"step": 1, "n_seeds": 2, "test_acc": pytest.approx(0.6)},
                 {"step": 2, "n_seeds": 1, "test_acc": 0.7, "val_acc": 0.6}]


# -- the pipeline on tiny models ----------------------------------------------------------------

def test_generative_stage_is_cached_and_used_by_student_and_ceiling(toy_csv, tmp_path):
    strong = {"model": "tiny-llama", "regime": "probe", "epochs": 2, "generative_finetune": GEN}
    methods = [{"name": "naive"}, {"name": "lk", "student": {"regime": "last_k", "epochs": 1, "lr": 1e-3}}]
    cfg = W2SConfig.parse(tiny_config(toy_csv, strong=strong, methods=methods, seeds=[0]))
    store = Store(tmp_path / "s")
    res = run_w2s(cfg, store=store)
    gen = [e for e in store.events if e.kind == "generative"]
    assert len(gen) == 1 and not gen[0].cached  # one adaptation serves both regimes' students and ceilings
    stage = store.load("generative", gen[0].key)
    assert stage.meta["result"]["n_texts"] == 48 and stage.meta["result"]["steps"] == 6
    trains = [store.load("train", e.key) for e in store.events if e.kind == "train"]
    strong_trains = [s for s in trains if s.meta["label"].startswith(("ceiling", "student"))]
    assert len(strong_trains) == 4
    assert all(s.meta["inputs"]["model"]["generative"] == gen[0].key for s in strong_trains)
    weak = [s for s in trains if s.meta["label"].startswith("weak")]
    assert weak and all("generative" not in s.meta["inputs"]["model"] for s in weak)
    # the adapted backbone differs from the pristine one: different strong numbers than without it
    plain = run_w2s(W2SConfig.parse(tiny_config(toy_csv, strong={**strong, "generative_finetune": None},
                                                methods=methods[:1], seeds=[0])), store=Store(tmp_path / "p"))
    assert plain.rows[0]["ceiling"] != res.rows[0]["ceiling"] or plain.rows[0]["w2s"] != res.rows[0]["w2s"]
    # rerun: nothing recomputed, same rows
    again_store = Store(tmp_path / "s")
    again = run_w2s(cfg, store=again_store)
    assert again_store.events and all(e.cached for e in again_store.events)
    assert json.dumps(again.rows) == json.dumps(res.rows)


def test_generative_adaptation_lowers_the_lm_loss():
    from superalign.models.loading import load_backbone
    from superalign.training.generative import apply_adaptation, finetune, lm_head_weight, lm_loss

    backbone, tok, _ = load_backbone("tiny-llama")
    texts = [f"the film was {w} and very {w}" for w in ["good", "bad", "fine", "dull"] * 6]
    head = lm_head_weight("tiny-llama", backbone)
    before = lm_loss(backbone, tok, texts, head)
    for regime, lr in (("lora", 1e-2), ("full", 1e-3)):
        cfg = GenerativeFinetuneConfig(regime=regime, lr=lr, epochs=4, batch_size=8, max_length=32)
        tensors, meta = finetune(backbone, tok, texts, cfg, head_weight=head)
        adapted = apply_adaptation(backbone, tensors, meta)
        assert lm_loss(backbone, tok, texts, head) == pytest.approx(before)  # the original is untouched
        assert lm_loss(adapted, tok, texts, head) < before - 0.3, regime
        if regime == "lora":
            assert all(k.endswith((".lora_A", ".lora_B")) for k in tensors) and meta["scaling"]


def test_weak_ensemble_filter_misfit_and_test_curve_in_rows(toy_csv, tmp_path):
    methods = [{"name": "naive"},
               {"name": "ens", "weak_ensemble": [{"model": "tiny-bert", "regime": "probe", "epochs": 2, "lr": 0.05}]},
               {"name": "knn", "label_filter": {"name": "knn_consistency", "k": 5, "drop_frac": 0.25}},
               {"name": "conf", "label_filter": {"name": "confidence", "drop_frac": 0.1}}]
    cfg = W2SConfig.parse(tiny_config(toy_csv, methods=methods, seeds=[0, 1]))
    store = Store(tmp_path / "s")
    res = run_w2s(cfg, store=store)
    rows = {r["method"]: r for r in res.rows}
    # the ensemble has its own accuracy; the row's weak stays the main weak model's
    assert "weak_ensemble" in rows["ens"] and "weak_ensemble" not in rows["naive"]
    assert rows["ens"]["weak"] == rows["naive"]["weak"]
    assert rows["ens"]["misfit_supervisor"] == "weak_ensemble" and rows["naive"]["misfit_supervisor"] == "weak"
    # the ensemble's labels are the mean of both weak models' soft labels
    ens_labels = [store.load("labels", e.key) for e in store.events
                  if e.kind == "labels" and e.label == "weak-ensemble labels ens s0"][0]
    members = [store.load("train", k) for k in ens_labels.meta["inputs"]["from"]]
    probs = [np.load(m.file("probs_strong_train.npy")) for m in members]
    np.testing.assert_allclose(np.load(ens_labels.file("soft.npy")), M.ensemble_labels(probs), atol=1e-6)
    # filters drop the configured number of split-B examples
    assert rows["knn"]["label_filter"]["n_dropped"] == 60 and rows["knn"]["label_filter"]["n_kept"] == 180
    assert rows["conf"]["label_filter"]["n_dropped"] == 24
    students = {e.label: store.load("train", e.key) for e in store.events if e.kind == "train"}
    assert students["student knn s0"].meta["result"]["n_train"] == 180
    assert students["student conf s0"].meta["result"]["n_train"] == 216
    for r in rows.values():
        assert r["misfit"]["value"] >= 0 and isinstance(r["misfit_bound_holds"], bool)
        assert r["gain"]["low"] <= r["gain"]["value"] <= r["gain"]["high"]
        # one curve point per epoch (4), each with ground-truth test accuracy; the final one is the row's w2s
        assert [p["step"] for p in r["curve"]] == sorted(p["step"] for p in r["curve"]) and len(r["curve"]) == 4
        assert all(0 <= p["test_acc"] <= 1 and "val_acc" in p for p in r["curve"])
        assert r["curve"][-1]["test_acc"] == pytest.approx(r["w2s"]["value"])
    assert len(res.summary["weak"]["curve"]) == 4
    assert "misfit" in res.table()


def test_test_curve_off_keeps_stage_keys_of_before(toy_csv, tmp_path):
    cfg = W2SConfig.parse(tiny_config(toy_csv, seeds=[0], test_curve=False))
    store = Store(tmp_path / "s")
    res = run_w2s(cfg, store=store)
    trains = [store.load("train", e.key) for e in store.events if e.kind == "train"]
    assert all("test_curve" not in s.meta["inputs"] for s in trains)
    assert all("test_acc" not in p for p in res.rows[0]["curve"])
    on = run_w2s(W2SConfig.parse(tiny_config(toy_csv, seeds=[0])), store=Store(tmp_path / "t"))
    assert on.rows[0]["w2s"] == res.rows[0]["w2s"]  # the curve is a measurement only


def test_w2s_reward_modelling_with_generative_finetuning(tmp_path):
    from test_oversight import preference_file

    from superalign.oversight.w2s_reward import W2SRewardConfig, run_w2s_reward

    path = preference_file(tmp_path / "prefs.jsonl")
    base = dict(data=str(path), n_pairs=240, weak={"model": "tiny-bert", "epochs": 10}, weak_train=40,
                strong_train=100, test=80, seeds=[0], n_boot=200)
    store = Store(tmp_path / "s")
    plain = run_w2s_reward(W2SRewardConfig(**base, strong={"model": "tiny-llama", "epochs": 10}), store)
    assert plain["generative_finetune"] is None
    cfg = W2SRewardConfig(**base, strong={"model": "tiny-llama", "epochs": 10, "generative_finetune": GEN})
    r = run_w2s_reward(cfg, store)
    gen = [e for e in store.events if e.kind == "generative"]
    assert len(gen) == 1 and r["generative_finetune"]["key"] == gen[0].key
    assert r["generative_finetune"]["n_texts"] == 48
    assert 0 <= r["w2s"]["value"] <= 1 and r["weak"] == plain["weak"]  # only the strong PM is adapted
    again = Store(tmp_path / "s")
    assert run_w2s_reward(cfg, again) == r and all(e.cached for e in again.events)
    with pytest.raises(ConfigError, match="strong.generative_finetune"):
        run_w2s_reward(W2SRewardConfig(**{**base, "n_pairs": 239},
                                       strong={"model": "tiny-bert", "generative_finetune": True}), store)
