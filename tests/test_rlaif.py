import json
import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch

from superalign.errors import ConfigError
from superalign.rlaif import evaluate as ev
from superalign.rlaif.constitution import load_constitution, parse_constitution
from superalign.rlaif.feedback import FeedbackConfig, Labeller, agreement_with_labels, feedback_prompt
from superalign.rlaif.pm import Pairs, PMConfig, PreferenceModel, bt_loss
from superalign.rlaif.pmp import pmp_score, ranked_pairs
from superalign.rlaif.rl import AdaptiveKLController

# -- constitution -------------------------------------------------------------------------------

def test_default_constitution_and_formats(tmp_path):
    c = load_constitution()
    assert len(c.principles) >= 8 and all(p.question for p in c.principles)
    pairs = [{"critic": "Find harms.", "revision": "Remove them."}, {"critique": "Be honest?", "revision": "Fix."}]
    f = tmp_path / "cai.json"
    f.write_text(json.dumps(pairs))
    cai = load_constitution(f)
    assert [p.critique for p in cai.principles] == ["Find harms.", "Be honest?"]
    assert cai.principles[0].comparison_question().startswith("Which")
    with pytest.raises(ConfigError, match=r"principles\[0\].question"):
        parse_constitution({"principles": [{"critique": "a", "revision": "b"}]})
    with pytest.raises(ConfigError, match="revision"):
        parse_constitution([{"critic": "a"}])


# -- feedback -----------------------------------------------------------------------------------

class PlantedLabeller(Labeller):
    """A feedback model with a planted position bias: P("(A)") = 0.7 +/- 0.2 as (A) is the good option."""

    def p_a(self, texts, naive=False):
        out = []
        for t in texts:
            a = t.split("(A) ")[1].split("\n")[0]
            out.append(0.7 + (0.2 if a == "good" else -0.2))
        return np.array(out)


def test_labeller_averages_orderings_and_reports_position_bias():
    lab = PlantedLabeller(None, None, load_constitution(), FeedbackConfig(n_principles=3))
    res = lab.label(["q1", "q2"], ["good", "bad"], ["bad", "good"], seed=0)
    # pair 1: order (good, bad) P(A)=0.9; swapped (bad, good) P(A)=0.5 -> P(first)= (0.9 + 0.5) / 2 = 0.7
    assert res.p_first == pytest.approx([0.7, 0.3])
    assert res.position_bias == pytest.approx(0.2)  # mean P(A) = 0.7
    assert res.order_consistency == pytest.approx(1.0)
    assert res.p_a.shape == (2, 2, 3) and all(len(p) == 3 for p in res.principles)
    single = PlantedLabeller(None, None, load_constitution(), FeedbackConfig(n_principles=1, both_orderings=False))
    assert single.label(["q"], ["bad"], ["good"]).p_first == pytest.approx([0.5])  # bias left uncancelled


def test_feedback_prompt_format():
    c = load_constitution()
    text = feedback_prompt("Hi?", "Hello!", "Go away.", c.principles[0])
    assert text.startswith("Consider the following conversation between a human and an assistant:\nHuman: Hi?")
    assert "Options:\n(A) Hello!\n(B) Go away.\nThe answer is:" in text and not text.endswith(" ")


def test_one_pass_choice_scores_match_the_naive_two_pass_scores():
    from superalign.models import load_causal_lm
    from superalign.models.scoring import choice_logprobs, continuation_logprobs

    model, tok, _ = load_causal_lm("tiny-llama")
    prompts = ["The answer is:", "Pick one. The answer is:", "x"]
    fast = choice_logprobs(model, tok, prompts, [" (A)", " (B)"], max_length=128, batch_size=2)
    naive = continuation_logprobs(model, tok, prompts, [" (A)", " (B)"], max_length=128, batch_size=2)
    # the one-pass scores differ from the full ones only by the shared " (" and the unscored ")":
    # the normalised preference is close, and exact on the distinguishing token
    first_tok = continuation_logprobs(model, tok, [p + " (" for p in prompts], ["A", "B"], max_length=128, batch_size=2)
    assert np.allclose(fast, first_tok, atol=1e-4)
    assert fast.shape == naive.shape == (3, 2)


def test_labeller_runs_on_a_real_forward_pass_and_clamps():
    from superalign.models import load_causal_lm

    model, tok, _ = load_causal_lm("tiny-llama")
    lab = Labeller(model, tok, load_constitution(), FeedbackConfig(n_principles=1, clamp=(0.4, 0.6)))
    res = lab.label(["Say hi"], ["hi"], ["no"], seed=0)
    assert 0.4 <= res.p_first[0] <= 0.6 and np.all((res.p_a >= 0.4) & (res.p_a <= 0.6))


def test_agreement_with_labels():
    assert agreement_with_labels(np.array([0.9, 0.2, 0.5]), np.array([True, True, False])) == pytest.approx(0.5)


# -- preference model ---------------------------------------------------------------------------

def test_bt_soft_loss_known_numbers():
    logits = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    p = torch.tensor([[0.8, 0.2], [1.0, 0.0]])
    s = torch.nn.functional.logsigmoid
    expected = -((0.8 * s(torch.tensor(1.0)) + 0.2 * s(torch.tensor(-1.0))) + s(torch.tensor(-2.0))) / 2
    assert bt_loss()(logits, p).item() == pytest.approx(expected.item(), rel=1e-6)
    # a margin of 1 on a hard label asks for delta > 1: -log sigma(delta - 1)
    hard = torch.tensor([[1.0, 0.0]])
    assert bt_loss(margin=1.0)(torch.tensor([[1.5, 0.0]]), hard).item() == pytest.approx(-s(torch.tensor(0.5)).item())
    # centring adds mean((r_a + r_b)^2)
    assert bt_loss(center=0.1)(logits, p).item() == pytest.approx(expected.item() + 0.1 * (1 + 4) / 2, rel=1e-6)


def test_pm_learns_a_planted_preference():
    from superalign.models import load_backbone

    model, tok, info = load_backbone("tiny-llama")
    rng = np.random.default_rng(0)
    words = ["apple", "river", "stone", "cloud", "table", "green", "music"]
    prompts, a, b, p = [], [], [], []
    for i in range(160):
        plain = " ".join(rng.choice(words, 3))
        good = plain + " thank you kindly"
        first = i % 2 == 0
        prompts.append("Say something")
        a.append(good if first else plain)
        b.append(plain if first else good)
        p.append(1.0 if first else 0.0)
    pairs = Pairs(prompts, a, b, np.array(p))
    pm = PreferenceModel(model, tok, info.arch, PMConfig(model="tiny-llama", epochs=40, lr=0.05))
    pm.fit(pairs.subset(range(120)), seed=0)
    test = pm.evaluate(pairs.subset(range(120, 160)))
    assert test["accuracy"] > 0.9
    r = pm.score(["Say something"] * 2, ["stone cloud thank you kindly", "stone cloud"])
    assert r[0] > r[1]


def test_pmp_scores_and_pairs():
    assert pmp_score(0) == 0 and pmp_score(1) == 1 and pmp_score(3) == 2 and pmp_score(7) == 3
    assert pmp_score(7, accepted=True) == 4 and pmp_score(-2) == -1 and pmp_score(-2, accepted=True) == 0
    qs = [{"question": "q", "answers": [{"text": "best", "votes": 15, "accepted": True}, {"text": "ok", "votes": 1},
                                        {"text": "bad", "votes": -3}]},
          {"question": "tie", "answers": [{"text": "x", "score": 1}, {"text": "y", "score": 1}]}]
    pairs = ranked_pairs(qs, seed=0)
    assert len(pairs) == 3  # the tied question gives none
    for pa, pb, p in zip(pairs.a, pairs.b, pairs.p):
        better, worse = (pa, pb) if p == 1 else (pb, pa)
        rank = {"best": 0, "ok": 1, "bad": 2}
        assert rank[better] < rank[worse]


# -- best-of-n, win rates, Elo, KL control ------------------------------------------------------

def test_expected_best_of_n_matches_enumeration():
    rewards = np.array([[0.3, -1.0, 2.0, 0.5, 1.1], [5.0, 4.0, 3.0, 2.0, 1.0]])
    for n in (1, 2, 3, 5):
        brute = np.mean([np.mean([max(row[list(c)]) for c in combinations(range(5), n)]) for row in rewards])
        assert ev.expected_best_of_n(rewards, n) == pytest.approx(brute)
    assert ev.expected_best_of_n(rewards, 1) == pytest.approx(rewards.mean())
    gold = -rewards  # a gold judge that disagrees completely
    curve = ev.best_of_n_curve(rewards, [1, 2, 5], gold=gold)
    assert curve[0]["kl"] == 0 and curve[-1]["kl"] == pytest.approx(math.log(5) - 4 / 5)
    assert curve[-1]["proxy"] > curve[0]["proxy"] and curve[-1]["gold"] < curve[0]["gold"]


def test_best_of_n_selection():
    r = np.array([[0.1, 0.9, 0.5], [2.0, 1.0, 3.0]])
    assert ev.select_best_of_n(r, 2).tolist() == [1, 0]
    assert ev.select_best_of_n(r, 3).tolist() == [1, 2]


def test_distinct_n_and_reward_hacking_warnings():
    from superalign.report.rlaif import warning_lines

    assert ev.distinct_n(["a b c d", "e f g h"], 2) == pytest.approx(1.0)
    collapsed = ["I am an AI model"] * 4
    assert ev.distinct_n(collapsed, 2) == pytest.approx(4 / 16)
    assert ev.distinct_n(["one"], 2) == 0.0
    iv = lambda v, lo, hi: {"value": v, "low": lo, "high": hi}
    win_rates = {"rl|initial": {"pm": iv(0.9, 0.8, 1.0), "labeller": iv(0.3, 0.1, 0.5)},
                 "sft|initial": {"pm": iv(0.9, 0.8, 1.0), "labeller": iv(0.8, 0.7, 0.9)},
                 "rl|sft": {"pm": iv(0.5, 0.3, 0.7), "labeller": iv(0.2, 0.1, 0.3)}}
    assert ev.judge_disagreements(win_rates) == ["rl|initial"]  # only where the PM is sure and the labeller is not
    lines = warning_lines({"judge_disagreements": ["rl|initial"], "distinct_2": {"initial": 0.9, "sft": 0.8, "rl": 0.25}})
    assert len(lines) == 2 and "reward hacking" in lines[0] and "rl's responses" in lines[1]


def test_elo_orders_policies_by_strength():
    names = ["a", "b", "c"]
    results = {("b", "a"): np.array([1, 1, 1, 0] * 10), ("c", "a"): np.array([1] * 40), ("c", "b"): np.array([1, 1, 0, 1] * 10)}
    elo = ev.elo_ratings(names, results, anchor="a")
    assert elo["a"] == pytest.approx(1000) and elo["c"] > elo["b"] > elo["a"]


def test_adaptive_kl_controller():
    c = AdaptiveKLController(0.1, target=2.0, horizon=10)
    assert c.update(4.0) == pytest.approx(0.1 * 1.02)  # error clipped at +0.2, step 1/10
    c2 = AdaptiveKLController(0.1, target=2.0, horizon=10)
    assert c2.update(1.0) == pytest.approx(0.1 * (1 - 0.02))  # error -0.5 clipped at -0.2
    c3 = AdaptiveKLController(0.1, target=2.0, horizon=10)
    assert c3.update(2.2) == pytest.approx(0.1 * (1 + 0.01))


# -- generation errors --------------------------------------------------------------------------

def test_generation_errors_name_the_field():
    from superalign.models import load_causal_lm
    from superalign.rlaif.generation import GenerationConfig, generate, render_chat

    model, tok, _ = load_causal_lm("tiny-llama")
    saved = tok.chat_template
    tok.chat_template = None
    with pytest.raises(ConfigError, match="chat template"):
        render_chat(tok, [[{"role": "user", "content": "hi"}]])
    tok.chat_template = saved
    with pytest.raises(ConfigError, match=r"prompts\[0\].*context"):
        generate(model, tok, ["x" * 5000], GenerationConfig(max_new_tokens=8))
    out = generate(model, tok, render_chat(tok, [[{"role": "user", "content": "hi"}]] * 3), GenerationConfig(max_new_tokens=5),
                   seed=1, num_return_sequences=2)
    again = generate(model, tok, render_chat(tok, [[{"role": "user", "content": "hi"}]] * 3), GenerationConfig(max_new_tokens=5),
                     seed=1, num_return_sequences=2)
    assert [[c.text for c in o] for o in out] == [[c.text for c in o] for o in again]
    assert all(len(o) == 2 and o[0].n_tokens <= 5 for o in out)


def test_vllm_backend_through_a_stand_in_engine(tmp_path, monkeypatch):
    """The vLLM path (no vLLM or GPU here): backend resolution, one exported engine per set of weights,
    sampling parameters and the mapping of vLLM's outputs onto Completions, with a stand-in module."""
    import importlib.machinery
    import sys
    import types

    from superalign.models import load_causal_lm
    from superalign.rlaif import generation as g

    model, tok, _ = load_causal_lm("tiny-llama")
    cfg = g.GenerationConfig(max_new_tokens=4, backend="vllm")
    monkeypatch.setitem(sys.modules, "vllm", None)  # not installed
    with pytest.raises(ConfigError, match="generation.backend.*not installed"):
        g.resolve_backend(cfg)
    assert g.resolve_backend(g.GenerationConfig()) == "hf"  # auto falls back

    made, calls = [], []

    class LLM:
        def __init__(self, model, **kw):
            made.append(model)

        def generate(self, prompts, params, use_tqdm=True):
            calls.append(params)
            eos = tok.eos_token_id
            outs = []
            for i, (p, sp) in enumerate(zip(prompts, params)):
                ids = p["prompt_token_ids"]
                cands = [types.SimpleNamespace(token_ids=[ids[0], ids[1], eos], finish_reason="stop"),
                         types.SimpleNamespace(token_ids=ids[: sp.max_tokens], finish_reason="length")]
                outs.append(types.SimpleNamespace(outputs=cands[: sp.n]))
            return outs

    fake = types.ModuleType("vllm")
    fake.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    fake.LLM, fake.SamplingParams = LLM, lambda **kw: types.SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr(g.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA"):
        g.resolve_backend(cfg)
    monkeypatch.setattr(g.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(g.torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setenv("SUPERALIGN_HOME", str(tmp_path))
    g._ENGINE.clear()
    assert g.resolve_backend(g.GenerationConfig()) == "vllm"

    prompts = g.render_chat(tok, [[{"role": "user", "content": "hello there"}], [{"role": "user", "content": "hi"}]])
    out = g.generate(model, tok, prompts, cfg, seed=3, num_return_sequences=2)
    assert [len(row) for row in out] == [2, 2]
    first = out[0][0]
    assert first.finished and first.n_tokens == 2  # the EOS is not counted, as with the HF backend
    assert not out[0][1].finished and out[0][1].n_tokens == 4
    params = calls[0]
    assert [p.n for p in params] == [2, 2] and params[0].max_tokens == 4 and params[0].seed != params[1].seed
    assert len(made) == 1 and (Path(made[0]) / "config.json").exists()
    g.generate(model, tok, prompts, cfg)  # same weights: the engine is reused
    assert len(made) == 1
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # e.g. an adapter merged in
    g.generate(model, tok, prompts, cfg)
    assert len(made) == 2 and made[0] != made[1]
    g._ENGINE.clear()
