import copy

import numpy as np
import pytest
import torch

from superalign.errors import TrainingError
from superalign.models import load_backbone
from superalign.models.classifier import encode
from superalign.training import (
    FeatureBatcher,
    LossConfig,
    TokenBatcher,
    TrainConfig,
    ValSet,
    build_classifier,
    fit,
    predict,
    probe_head,
)


def blobs(n=400, d=8, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = (rng.normal(size=(n, d)) + (2 * y[:, None] - 1) * 1.5).astype(np.float32)
    return torch.from_numpy(x), y


def onehot(y, k=2):
    return np.eye(k, dtype=np.float32)[y]


def test_probe_learns_separable_data():
    x, y = blobs()
    head = probe_head(x[:300], 2)
    fit(head, FeatureBatcher(x), np.arange(300), onehot(y[:300]), TrainConfig(epochs=5), seed=0)
    probs = predict(head, FeatureBatcher(x), np.arange(300, 400), 64)
    assert (probs.argmax(1) == y[300:]).mean() > 0.95


def test_soft_labels_are_learned_as_distributions():
    x, y = blobs()
    head = probe_head(x, 2)
    soft = np.where(y[:, None] == 1, [[0.3, 0.7]], [[0.7, 0.3]]).astype(np.float32)
    fit(head, FeatureBatcher(x), np.arange(400), soft, TrainConfig(epochs=40, lr=0.05), seed=0)
    p = predict(head, FeatureBatcher(x), np.arange(400), 64)
    # a soft target of 0.7 is matched on average, not pushed to 1
    assert 0.6 < p[y == 1, 1].mean() < 0.8


def test_nan_loss_is_a_training_error():
    x, y = blobs()
    x[0, 0] = float("nan")
    head = probe_head(x[1:], 2)
    with pytest.raises(TrainingError) as e:
        fit(head, FeatureBatcher(x), np.arange(400), onehot(y), TrainConfig(epochs=1, batch_size=400), seed=0)
    assert "lr" in str(e.value) and "lower the learning rate" in str(e.value)


def test_early_stopping_keeps_the_best_weights():
    x, y = blobs(seed=1)
    noisy = y.copy()
    noisy[:200] = 1 - noisy[:200]  # the first half of the training labels are flipped
    val = ValSet(np.arange(300, 400), y[300:400], weak=y[300:400])
    head = probe_head(x[:300], 2)
    res = fit(head, FeatureBatcher(x), np.arange(300), onehot(noisy[:300]), TrainConfig(epochs=6, eval_every=2),
              seed=0, val=val, early_stopping="oracle")
    assert res.selected["criterion"] == "oracle"
    best = max(p["val_acc"] for p in res.curve)
    assert res.selected["score"] == pytest.approx(best)
    got = (predict(head, FeatureBatcher(x), val.idx, 64).argmax(1) == val.gt).mean()
    assert got == pytest.approx(best)


def test_early_stopping_needs_val():
    x, y = blobs()
    with pytest.raises(TrainingError, match="validation"):
        fit(probe_head(x, 2), FeatureBatcher(x), np.arange(10), onehot(y[:10]), TrainConfig(), early_stopping="weak")


def test_same_seed_same_numbers_different_seed_differs():
    x, y = blobs()
    outs = []
    for seed in (0, 0, 1):
        head = probe_head(x, 2)
        r = fit(head, FeatureBatcher(x), np.arange(400), onehot(y), TrainConfig(epochs=2, batch_size=16, lr=1e-3),
                seed=seed)
        outs.append(r.state["linear.weight"])
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])


def _finetune_setup():
    model, tok, info = load_backbone("tiny-llama")
    texts = [("good " if i % 2 else "bad ") + "x" * (i % 7) for i in range(64)]
    y = np.array([i % 2 for i in range(64)])
    batcher = TokenBatcher(encode(tok, texts, 32), tok.pad_token_id)
    return model, info, batcher, y


class Killed(Exception):
    pass


class KillingBatcher:
    def __init__(self, inner, after):
        self.inner, self.after, self.calls = inner, after, 0

    def inputs(self, idx):
        self.calls += 1
        if self.calls > self.after:
            raise Killed()
        return self.inner.inputs(idx)

    def lengths(self):
        return self.inner.lengths()


def test_finetune_resumes_from_checkpoint_to_the_same_weights(tmp_path):
    model, info, batcher, y = _finetune_setup()
    cfg = TrainConfig(regime="full", epochs=2, batch_size=8, lr=1e-3, checkpoint_every=3)
    full = build_classifier(copy.deepcopy(model), 2, cfg, info.arch)
    ref = fit(full, batcher, np.arange(64), onehot(y), cfg, seed=0, checkpoint_dir=tmp_path / "a")

    first = build_classifier(copy.deepcopy(model), 2, cfg, info.arch)
    with pytest.raises(Killed):
        fit(first, KillingBatcher(batcher, 11), np.arange(64), onehot(y), cfg, seed=0, checkpoint_dir=tmp_path / "b")
    assert (tmp_path / "b" / "ckpt" / "state.json").exists()
    again = build_classifier(copy.deepcopy(model), 2, cfg, info.arch)
    counting = KillingBatcher(batcher, 10**9)
    res = fit(again, counting, np.arange(64), onehot(y), cfg, seed=0, checkpoint_dir=tmp_path / "b")
    assert counting.calls < 16  # it did not start over (16 batches in all)
    assert res.steps == ref.steps == 16
    for k in ref.state:
        assert torch.allclose(ref.state[k], res.state[k], atol=1e-6), k


def test_logconf_and_lora_train():
    model, info, batcher, y = _finetune_setup()
    cfg = TrainConfig(regime="lora", epochs=1, batch_size=16)
    clf = build_classifier(copy.deepcopy(model), 2, cfg, info.arch)
    res = fit(clf, batcher, np.arange(64), onehot(y), cfg, loss=LossConfig(name="logconf"), seed=0)
    assert res.steps == 4 and any("lora" in k for k in res.state)


def test_token_budget_batches_cover_every_example_once_with_little_padding():
    from superalign.models.classifier import length_batches, padding_waste

    lengths = np.random.default_rng(0).integers(1, 40, 1000)
    batches = list(length_batches(lengths, 16, max_tokens=2048))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert all(len(b) >= 16 for b in batches[:-1])
    # beyond the minimum batch size a batch only grows within the token budget and the waste cap
    grown = [b for b in batches if len(b) > 16]
    assert grown and all(len(b) * lengths[b].max() <= 2048 for b in grown)
    assert all(padding_waste(lengths, [b]) <= 1.1 + 1e-9 for b in grown)
    assert len(batches) < len(list(length_batches(lengths, 16)))  # short texts went in larger batches


def test_predict_does_not_depend_on_the_token_budget():
    model, info, batcher, y = _finetune_setup()
    clf = build_classifier(copy.deepcopy(model), 2, TrainConfig(regime="head"), info.arch)
    torch.nn.init.normal_(clf.head.weight)
    a = predict(clf, batcher, np.arange(64), 4, max_tokens=None)
    b = predict(clf, batcher, np.arange(64), 4, max_tokens=4096)
    assert np.allclose(a, b, atol=1e-5) and not np.allclose(a, 0.5)


def test_cosine_schedule_from_transformers_matches_the_plain_formula():
    import math

    x, y = blobs()
    head = probe_head(x, 2)
    cfg = TrainConfig(epochs=2, batch_size=100, lr=0.1)
    lrs = []

    def record(logits, tgt):
        lrs.append(opt_lr())
        return torch.nn.functional.cross_entropy(logits, tgt)

    import superalign.training.trainer as tr

    made = []
    real = tr.make_optimizer
    tr.make_optimizer = lambda *a, **k: made.append(real(*a, **k)) or made[-1]
    try:
        def opt_lr():
            return made[0].param_groups[0]["lr"]
        fit(head, FeatureBatcher(x), np.arange(400), onehot(y), cfg, seed=0, loss_fn=record)
    finally:
        tr.make_optimizer = real
    total = 8
    assert lrs == pytest.approx([0.1 * 0.5 * (1 + math.cos(math.pi * s / total)) for s in range(total)])
    assert made[0].defaults["fused"]  # one fused AdamW kernel on CPU


def test_streamed_prefix_states_train_like_the_stored_cache():
    from superalign.training.prefix import (
        PrefixBatcher,
        PrefixClassifier,
        StreamingPrefixBatcher,
        compute_prefix_states,
    )
    from superalign.training.regimes import copy_for_regime, transformer_blocks

    model, info, batcher, y = _finetune_setup()
    cfg = TrainConfig(regime="last_k", last_k=1, epochs=2, batch_size=8, lr=1e-3)
    start = len(transformer_blocks(model)) - 1
    stored = PrefixBatcher(batcher.encoded, batcher.pad_id,
                           compute_prefix_states(model, batcher.encoded, batcher.pad_id, start))
    streamed = StreamingPrefixBatcher(model, batcher.encoded, batcher.pad_id, start, chunk=3)
    results = []
    for b in (stored, streamed):
        clf = PrefixClassifier(build_classifier(copy_for_regime(model, cfg), 2, cfg, info.arch), start)
        results.append(fit(clf, b, np.arange(64), onehot(y), cfg, seed=0))
    assert streamed.frozen_passes == 2 * 64  # every example through the frozen blocks once per epoch
    for k in results[0].state:
        assert torch.allclose(results[0].state[k], results[1].state[k], atol=1e-5), k
