import pytest
import torch

from superalign.errors import ConfigError, UnknownNameError
from superalign.models import Classifier, load_backbone, load_causal_lm, model_identity, pool
from superalign.models.classifier import collate, encode
from superalign.models.features import extract_features
from superalign.training import TrainConfig, build_classifier
from superalign.training.regimes import count_trainable, transformer_blocks


def test_pool_last_and_mean_ignore_padding():
    h = torch.arange(2 * 4 * 1, dtype=torch.float32).view(2, 4, 1)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert pool(h, mask, "last").squeeze(-1).tolist() == [1.0, 7.0]
    assert pool(h, mask, "mean").squeeze(-1).tolist() == [0.5, 5.5]
    assert pool(h, mask, "first").squeeze(-1).tolist() == [0.0, 4.0]


@pytest.mark.parametrize("name,arch", [("tiny-bert", "encoder"), ("tiny-llama", "decoder")])
def test_tiny_models_load_without_download(name, arch):
    model, tok, info = load_backbone(name)
    assert info.arch == arch
    ids, mask = collate(encode(tok, ["hello there", "hi"], 32).ids, tok.pad_token_id)
    out = model(input_ids=ids, attention_mask=mask)
    assert out.last_hidden_state.shape[:2] == ids.shape


def test_padding_does_not_change_decoder_last_token_features():
    model, tok, _ = load_backbone("tiny-llama")
    clf = Classifier(model, 2, pooling="last")
    enc = encode(tok, ["a short one", "a much longer sentence here"], 64)
    ids, mask = collate(enc.ids, tok.pad_token_id)
    batched = clf.features(ids, mask)[0]
    single_ids, single_mask = collate(enc.ids[:1], tok.pad_token_id)
    alone = clf.features(single_ids, single_mask)[0]
    assert torch.allclose(batched, alone, atol=1e-5)


def test_feature_extraction_order_is_input_order():
    model, tok, _ = load_backbone("tiny-bert")
    texts = ["x" * n for n in (30, 2, 15, 7, 1)]
    feats = extract_features(model, tok, texts, pooling="mean", batch_size=2)[-1]
    single = extract_features(model, tok, texts[2:3], pooling="mean", batch_size=1)[-1]
    assert feats.shape[0] == 5
    assert torch.allclose(torch.from_numpy(feats[2]), torch.from_numpy(single[0]), atol=1e-5)


def test_regimes_train_the_right_parameters():
    model, _, info = load_backbone("tiny-llama")
    counts = {}
    for regime in ("head", "last_k", "lora", "full"):
        import copy

        clf = build_classifier(copy.deepcopy(model), 2, TrainConfig(regime=regime, last_k=1), info.arch)
        counts[regime] = count_trainable(clf)[0]
    head = 48 * 2 + 2
    assert counts["head"] == head
    block = sum(p.numel() for p in transformer_blocks(model)[-1].parameters())
    assert counts["last_k"] == head + block + 48  # + final RMSNorm
    assert head < counts["lora"] < counts["full"]
    assert counts["full"] == sum(p.numel() for p in model.parameters()) + head


def test_last_k_larger_than_depth_is_a_config_error():
    model, _, info = load_backbone("tiny-llama")
    with pytest.raises(ConfigError, match="last_k"):
        build_classifier(model, 2, TrainConfig(regime="last_k", last_k=9), info.arch)


def test_unknown_model_error_lists_the_zoo():
    with pytest.raises(UnknownNameError) as e:
        load_backbone("no-such-model")
    assert "minilm-l6" in str(e.value) and "Hugging Face id" in str(e.value)


def test_model_identity_is_stable_and_loads_nothing():
    assert model_identity("tiny-llama") == model_identity("tiny-llama")
    assert model_identity("tiny-llama") != model_identity("tiny-bert")
    assert model_identity("owner/some-model")["origin"] == "hub:owner/some-model"


def test_encoder_is_refused_as_causal_lm():
    with pytest.raises(UnknownNameError, match="causal LM"):
        load_causal_lm("tiny-bert")


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-bert"])
def test_prefix_cached_last_k_matches_the_full_model(name):
    from superalign.training.prefix import PrefixBatcher, PrefixClassifier, check_equivalence, compute_prefix_states
    from superalign.training.regimes import copy_for_regime

    model, tok, info = load_backbone(name)
    model.requires_grad_(False)
    cfg = TrainConfig(regime="last_k", last_k=1)
    texts = ["a b c", "a much longer text with words", "x", "another one here"]
    enc = encode(tok, texts, 32)
    start = len(transformer_blocks(model)) - 1
    states = compute_prefix_states(model, enc, tok.pad_token_id, start, batch_size=3)
    clf = build_classifier(copy_for_regime(model, cfg), 2, cfg, info.arch)
    pre = PrefixClassifier(clf, start)
    batcher = PrefixBatcher(enc, tok.pad_token_id, states)
    ref = Classifier(model, 2, pooling=clf.pooling)
    assert check_equivalence(ref, pre, batcher, [0, 1, 2, 3], atol=1e-4) < 1e-4
    # frozen parameters are shared with the original, trained ones are copies
    shared = {id(p) for p in model.parameters()}
    trained = [p for p in clf.parameters() if p.requires_grad]
    assert trained and not any(id(p) in shared for p in trained)
    # a training step through the prefix model changes only the trainable copy
    before = [p.clone() for p in model.parameters()]
    ids, mask, st = batcher.inputs([0, 1])
    pre(ids, mask, st).sum().backward()
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_full_regime_trains_everything_even_after_a_frozen_copy():
    from superalign.training.regimes import copy_for_regime

    model, _, info = load_backbone("tiny-llama")
    model.requires_grad_(False)
    build_classifier(copy_for_regime(model, TrainConfig(regime="last_k")), 2, TrainConfig(regime="last_k"), info.arch)
    clf = build_classifier(copy_for_regime(model, TrainConfig(regime="full")), 2, TrainConfig(regime="full"), info.arch)
    assert all(p.requires_grad for p in clf.parameters())
