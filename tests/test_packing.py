"""Packed (padding-free, shared-prefix) inference and the last-token final block: same numbers, less work."""

import numpy as np
import pytest
import torch

from superalign.models import load_backbone
from superalign.models.classifier import encode
from superalign.models.features import extract_features
from superalign.models.packing import pack_rows, packed_batches, shared_prefix, supports_packing
from superalign.training import TrainConfig, build_classifier, fit, predict
from superalign.training.prefix import PrefixBatcher, PrefixClassifier, compute_prefix_states
from superalign.training.regimes import copy_for_regime, transformer_blocks

TEXTS = [("good " if i % 3 else "bad ") + "x" * (i % 7) + " y" * (i % 4) for i in range(40)]
PROMPTED = ["Is it good? " + t for t in TEXTS]  # a shared prefix, computed once per packed row


def test_pack_rows_places_every_text_once_within_the_width():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 12, 200)
    rows = pack_rows(lengths, 16)
    placed = sorted(i for r in rows for i in r)
    assert placed == list(range(200))
    assert all(lengths[r].sum() <= 16 for r in rows)
    assert len(rows) * 16 < 1.1 * lengths.sum()  # little room left over
    with pytest.raises(ValueError, match="lengths must lie in"):
        pack_rows(np.array([3, 20]), 16)


def test_shared_prefix_leaves_each_text_a_token_of_its_own():
    assert shared_prefix([[2, 5, 6], [2, 5, 7, 8], [2, 5, 9]]) == 2
    assert shared_prefix([[2, 5], [2, 5, 7]]) == 1
    assert shared_prefix([[1, 2], [3, 2]]) == 0
    assert shared_prefix([[4]]) == 0


def test_packed_batches_mask_keeps_texts_apart():
    batch = next(packed_batches([[9, 1, 2], [9, 3], [9, 4, 5, 6]], pad_id=0, width=8))
    assert batch.prefix == 1 and batch.input_ids.shape == (1, 8)
    allowed = batch.allowed[0]
    seg = {int(e): (int(s), int(n)) for e, s, n in zip(batch.examples, batch.start, batch.length)}
    for e, (s, n) in seg.items():
        for q in range(s, s + n):
            sees = set(torch.nonzero(allowed[q]).flatten().tolist())
            assert sees == {0, *range(s, q + 1)}, (e, q, sees)  # the shared prefix and its own past only
    assert batch.position_ids[0, seg[1][0]] == 1  # positions continue after the shared prefix


def test_decoders_pack_and_encoders_do_not():
    llama, _, _ = load_backbone("tiny-llama")
    bert, _, _ = load_backbone("tiny-bert")
    assert supports_packing(llama)
    assert not supports_packing(bert)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-bert"])
@pytest.mark.parametrize("pooling", ["last", "mean", "first"])
@pytest.mark.parametrize("texts", [TEXTS, PROMPTED], ids=["plain", "shared-prefix"])
def test_packed_features_equal_padded_ones(name, pooling, texts):
    model, tok, _ = load_backbone(name)
    if texts is PROMPTED:
        assert shared_prefix(encode(tok, texts, 48).ids) >= 10
    kw = dict(pooling=pooling, layers=(-1, 1), max_length=48, batch_size=8)
    padded = extract_features(model, tok, texts, packing=False, **kw)
    packed = extract_features(model, tok, texts, packing=True, **kw)
    for layer in padded:
        np.testing.assert_allclose(packed[layer], padded[layer], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("texts", [TEXTS, PROMPTED], ids=["plain", "shared-prefix"])
def test_packed_prefix_states_equal_padded_ones(texts):
    model, tok, _ = load_backbone("tiny-llama")
    enc = encode(tok, texts, 48)
    start = len(transformer_blocks(model)) - 1
    a = compute_prefix_states(model, enc, tok.pad_token_id, start, packing=False)
    b = compute_prefix_states(model, enc, tok.pad_token_id, start, packing=True)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_allclose(b.flat, a.flat, rtol=1e-4, atol=1e-5)


def _last_k_runs(break_layout: bool = False):
    model, tok, info = load_backbone("tiny-llama")
    enc = encode(tok, TEXTS, 32)
    y = np.array([i % 3 != 0 for i in range(len(TEXTS))], dtype=int)
    onehot = np.eye(2, dtype=np.float32)[y]
    cfg = TrainConfig(regime="last_k", last_k=1, epochs=2, batch_size=8, lr=1e-3)
    start = len(transformer_blocks(model)) - 1
    states = compute_prefix_states(model, enc, tok.pad_token_id, start)
    out = []
    for last_token in (False, True):
        torch.manual_seed(0)
        pre = PrefixClassifier(build_classifier(copy_for_regime(model, cfg), 2, cfg, info.arch), start,
                               last_token=last_token)
        if break_layout and pre.last_token is not None:
            pre.last_token.block.self_attn.attn_logit_softcapping = 30.0  # a layout it does not handle
        batcher = PrefixBatcher(enc, tok.pad_token_id, states)
        res = fit(pre, batcher, np.arange(len(TEXTS)), onehot, cfg, seed=0)
        out.append((pre, res, predict(pre, batcher, np.arange(len(TEXTS)), 8)))
    return out


def test_last_token_final_block_trains_and_predicts_like_the_full_block():
    (full, res_full, p_full), (last, res_last, p_last) = _last_k_runs()
    assert full.last_token is None and last.last_token.checked is True
    for k in res_full.state:
        assert torch.allclose(res_full.state[k], res_last.state[k], atol=1e-5), k
    np.testing.assert_allclose(p_last, p_full, atol=1e-5)


def test_last_token_falls_back_to_the_full_block_when_the_layer_does_not_fit():
    (_, res_full, p_full), (last, res_last, p_last) = _last_k_runs(break_layout=True)
    assert last.last_token.checked is False
    np.testing.assert_allclose(p_last, p_full, atol=1e-5)


def test_a_shared_prompt_is_computed_once_per_row_not_once_per_text():
    _, tok, _ = load_backbone("tiny-llama")
    ids = encode(tok, PROMPTED, 48).ids
    batches = list(packed_batches(ids, tok.pad_token_id))
    run = sum(b.input_ids.shape[0] * b.prefix + int(b.length.sum()) for b in batches)
    rows = sum(b.input_ids.shape[0] for b in batches)
    total = sum(len(x) for x in ids)
    prefix = batches[0].prefix
    assert run == total - (len(ids) - rows) * prefix  # each row holds the prompt once
    assert run < 0.8 * total  # (rows of 32 tokens hold one or two texts after the 12-token prompt)
    assert sorted(int(i) for b in batches for i in b.examples) == list(range(len(ids)))
