"""Regression tests for the defects of issue 11 (each failed before its fix)."""

from __future__ import annotations

import gc
import inspect
import json
import warnings

import numpy as np
import pytest
import yaml
from conftest import tiny_config

from superalign.errors import DataError, SuperalignError, UnknownNameError

iv = lambda v, lo, hi: {"value": v, "low": lo, "high": hi}  # noqa: E731


# -- judge_disagreements: flag only a labeller CI that reaches 0.5 --------------------------------

def test_labeller_ci_above_half_is_agreement_not_a_disagreement():
    from superalign.rlaif import evaluate as ev

    # the labeller also prefers rl (CI wholly above 0.5), only less strongly than the PM: no reward hacking
    assert ev.judge_disagreements({"rl|initial": {"pm": iv(0.9, 0.8, 1.0), "labeller": iv(0.65, 0.55, 0.75)}}) == []
    # the labeller's CI reaches 0.5 (it does not confirm the PM's preference), overlapping the PM's: flagged
    assert ev.judge_disagreements({"rl|initial": {"pm": iv(0.7, 0.6, 0.8), "labeller": iv(0.65, 0.45, 0.85)}}) == [
        "rl|initial"]
    # the PM is not sure: nothing to flag
    assert ev.judge_disagreements({"rl|initial": {"pm": iv(0.6, 0.45, 0.75), "labeller": iv(0.2, 0.1, 0.3)}}) == []
    doc = ev.judge_disagreements.__doc__
    assert "0.5 or below" in doc and "never flagged" in doc


# -- the weak-to-ceiling gap message ---------------------------------------------------------------

def test_negative_gap_says_the_weak_model_beats_the_ceiling():
    from superalign import metrics

    u = np.arange(100) / 100
    weak, student, ceiling = (u < 0.8).astype(float), (u < 0.75).astype(float), (u < 0.7).astype(float)
    res = metrics.pgr_bootstrap(weak, student, ceiling, n_boot=100)
    assert not res.reliable
    assert "the weak model beats the ceiling by 10.0 points" in res.reason
    assert "-" not in res.reason.split("points")[0]
    positive = metrics.pgr_bootstrap(ceiling, student, (u < 0.72).astype(float), n_boot=100)
    assert "the ceiling beats the weak model by 2.0 points" in positive.reason


# -- the labeller's docstring says what is scored ------------------------------------------------

def test_labeller_scores_the_distinguishing_token_as_documented():
    import torch

    from superalign.models.loading import load_causal_lm
    from superalign.rlaif import feedback
    from superalign.rlaif.constitution import load_constitution

    model, tok, _ = load_causal_lm("tiny-llama", seed=0)
    lab = feedback.Labeller(model, tok, load_constitution(None), feedback.FeedbackConfig(model="tiny-llama"))
    prompt = "Human: hi\nOptions:\n(A) x\n(B) y\nThe answer is:"
    a_ids, b_ids = (tok(o, add_special_tokens=False)["input_ids"] for o in feedback.OPTIONS)
    common = next(i for i, (t, u) in enumerate(zip(a_ids, b_ids)) if t != u)
    shared = a_ids[:common]
    ids = tok(prompt, add_special_tokens=True)["input_ids"] + shared
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
    first_a, first_b = a_ids[len(shared)], b_ids[len(shared)]
    expected = float(torch.softmax(logp[[first_a, first_b]], -1)[0])
    assert lab.p_a([prompt])[0] == pytest.approx(expected, abs=1e-5)
    doc = feedback.__doc__
    assert "first\ntoken where the options differ" in doc and "nothing after it" in doc


# -- files are closed ----------------------------------------------------------------------------

def _no_resource_warning(fn) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]


def test_loaders_close_their_files(tmp_path, monkeypatch):
    from superalign.data import builtin, wordnet

    spam = tmp_path / "spam.jsonl"
    spam.write_text("\n".join(json.dumps({"text": f"Subject: s{i}\n\nbody {i}", "group": g})
                              for i, g in enumerate(["spam", "easy-ham", "hard-ham", "spam"])) + "\n")
    monkeypatch.setattr(builtin, "require", lambda *a, **k: spam)
    _no_resource_warning(lambda: builtin.spamassassin())
    (tmp_path / "cntlist.rev").write_text("dog%1:05:00:: 1 42\ncat%1:05:00:: 1 7\n")
    _no_resource_warning(lambda: wordnet.sense_counts(str(tmp_path)))
    assert wordnet.sense_counts(str(tmp_path))["dog"] == 42


# -- dead code is gone ---------------------------------------------------------------------------

def test_dead_code_removed():
    from superalign.models import classifier, loading
    from superalign.rlaif import evaluate, pm

    assert not hasattr(evaluate, "win_rate")
    assert "val" not in inspect.signature(pm.PreferenceModel.fit).parameters
    assert "quantised_source" not in loading.ModelInfo.__dataclass_fields__
    assert not hasattr(classifier, "Pooling")


# -- names are checked before any stage runs -----------------------------------------------------

def test_uncached_hub_id_offline_fails_before_any_stage(toy_csv, tmp_path, monkeypatch):
    from superalign.store import Store
    from superalign.w2s import W2SConfig, run_w2s

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = W2SConfig.parse(tiny_config(toy_csv, strong={"model": "someorg/nonexistent-model", "regime": "probe"}))
    store = Store(tmp_path / "store")
    with pytest.raises(UnknownNameError) as err:
        run_w2s(cfg, store=store)
    msg = str(err.value)
    assert msg.startswith("strong.model: unknown model 'someorg/nonexistent-model'") and "Fix:" in msg
    assert "not in the local cache" in msg
    assert store.summary().endswith("0 computed")  # the weak supervisor was not trained first
    assert not (tmp_path / "store").exists() or not any(p.name != ".locks" for p in (tmp_path / "store").iterdir())


def test_hub_ids_are_checked_in_the_cache_offline_and_on_the_hub_online(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    from superalign.models.loading import check_model

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "hub" / "models--org--cached" / "snapshots" / "abc123").mkdir(parents=True)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    check_model("org/cached", "strong.model")  # in the cache: fine offline
    with pytest.raises(UnknownNameError, match="not in the local cache"):
        check_model("org/other", "strong.model")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    asked: list[str] = []

    def exists(self, repo_id, repo_type=None, token=None):
        asked.append(repo_id)
        return repo_id == "org/online"

    monkeypatch.setattr(HfApi, "repo_exists", exists)
    check_model("org/online", "weak.model")
    with pytest.raises(UnknownNameError, match="is not on the Hugging Face hub"):
        check_model("org/missing", "weak.model")
    assert asked == ["org/online", "org/missing"]

    def unreachable(self, repo_id, repo_type=None, token=None):
        raise OSError("no network")

    monkeypatch.setattr(HfApi, "repo_exists", unreachable)
    check_model("org/cached", "weak.model")  # unreachable hub: the cache decides
    with pytest.raises(UnknownNameError, match="hub is unreachable"):
        check_model("org/other", "weak.model")


def test_local_directories_and_zoo_names_are_checked_on_disk(tmp_path, monkeypatch):
    from superalign.models.loading import check_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check_model("tiny-bert")
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(UnknownNameError, match="no config.json"):
        check_model(str(empty), "weak.model")
    (empty / "config.json").write_text("{}")
    check_model(str(empty), "weak.model")
    with pytest.raises(UnknownNameError, match="does not exist"):
        check_model(str(tmp_path / "gone"), "weak.model")
    with pytest.raises(UnknownNameError, match="^weak.model: unknown model 'nope'"):
        check_model("nope", "weak.model")


def test_hf_datasets_are_checked_before_loading(tmp_path, monkeypatch):
    from superalign.data.registry import check_task

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", str(tmp_path / "ds"))
    with pytest.raises(UnknownNameError, match="^task: unknown task 'someorg/nods'.*HF_DATASETS_OFFLINE"):
        check_task("hf:someorg/nods")
    (tmp_path / "ds" / "someorg___nods").mkdir(parents=True)
    check_task("hf:someorg/nods")
    with pytest.raises(DataError, match="does not exist"):
        check_task(str(tmp_path / "missing.csv"))


def test_every_model_in_an_rlaif_or_oversight_config_is_checked(tmp_path, monkeypatch):
    from superalign.models.loading import check_names, config_names
    from superalign.oversight.pipeline import OversightConfig
    from superalign.rlaif import RLAIFConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = RLAIFConfig.parse({"policy": "tiny-llama", "feedback": {"model": "tiny-llama"},
                             "pm": {"model": "someorg/pm-model"}})
    assert {f for f, kind, _ in config_names(cfg.model_dump()) if kind == "model"} >= {"policy", "feedback.model",
                                                                                        "pm.model"}
    with pytest.raises(UnknownNameError, match="^pm.model"):
        check_names(cfg)
    rlhf = RLAIFConfig.parse({"policy": "tiny-llama", "feedback": {"model": "tiny-llama"}, "pm": {"model": "tiny-bert"},
                              "preferences": {"source": "file", "path": str(tmp_path / "none.jsonl")}})
    with pytest.raises(DataError, match="^preferences.path"):
        check_names(rlhf)
    ov = OversightConfig.parse({"run": ["critique_gap"], "critique_gap": {"critic": {"model": "someorg/critic"}}})
    with pytest.raises(SuperalignError, match="critique_gap.critic.model"):
        check_names(ov, only=list(ov.run))


# -- label columns that are not class labels -------------------------------------------------------

@pytest.mark.parametrize("labels,match", [
    (["pos", "neg", "1", "neg"] * 10, "mixes integer class ids"),
    ([f"free text {i}" for i in range(40)], "looks like text"),
    (["pos"] * 40, "one class only"),
    ([1] * 40, "one class only"),
])
def test_label_columns_that_cannot_be_classes(tmp_path, labels, match):
    import pandas as pd

    from superalign.data.files import from_frame

    frame = pd.DataFrame({"text": [f"row {i}" for i in range(len(labels))], "label": labels})
    with pytest.raises(DataError, match=match):
        from_frame(frame, name="t")
    ok = from_frame(pd.DataFrame({"text": ["a", "b", "c"], "label": ["neg", "pos", "neg"]}), name="t")
    assert ok.label_names == ["neg", "pos"]


def test_a_valid_config_passes_the_name_check(toy_csv, tmp_path):
    """A config file is validated as a whole: its task and both models."""
    from superalign.models.loading import check_names
    from superalign.w2s import W2SConfig

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(toy_csv)))
    check_names(W2SConfig.from_yaml(path))
