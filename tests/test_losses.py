import pytest
import torch
import torch.nn.functional as F

from superalign.training.losses import (
    LOSSES,
    aux_weight_at,
    compute_loss,
    harden_predictions,
    logconf_loss,
    register_loss,
    soft_cross_entropy,
)


def test_soft_xent_equals_hard_xent_on_one_hot():
    logits = torch.randn(8, 3)
    y = torch.randint(0, 3, (8,))
    assert soft_cross_entropy(logits, F.one_hot(y, 3).float()) == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)


def test_soft_xent_known_value():
    logits = torch.log(torch.tensor([[0.25, 0.75]]))
    target = torch.tensor([[0.5, 0.5]])
    expected = -(0.5 * torch.log(torch.tensor(0.25)) + 0.5 * torch.log(torch.tensor(0.75)))
    assert soft_cross_entropy(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_logconf_weight_zero_is_plain_xent():
    logits = torch.randn(6, 2)
    t = torch.softmax(torch.randn(6, 2), -1)
    assert logconf_loss(logits, t, 0.0).item() == pytest.approx(soft_cross_entropy(logits, t).item(), rel=1e-6)


def test_logconf_pulls_towards_own_hardened_predictions():
    # the student is confident in class 1 on every example; weak labels say 0.6 for class 0
    logits = torch.tensor([[0.0, 3.0]] * 4 + [[3.0, 0.0]] * 4)
    weak = torch.tensor([[0.6, 0.4]] * 8)
    hardened = harden_predictions(torch.softmax(logits, -1), weak.mean(0))
    # adaptive threshold: round(0.4 * 8) = 3 positives, taken from the four (tied) confident-positive rows in order
    assert hardened[:, 1].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    full = logconf_loss(logits, weak, 1.0)
    assert full.item() == pytest.approx(soft_cross_entropy(logits, hardened).item(), rel=1e-6)


def test_aux_weight_warmup():
    assert aux_weight_at(0, 100, 0.5, 0.2) == 0.0
    assert aux_weight_at(10, 100, 0.5, 0.2) == pytest.approx(0.25)
    assert aux_weight_at(20, 100, 0.5, 0.2) == pytest.approx(0.5)
    assert aux_weight_at(90, 100, 0.5, 0.2) == pytest.approx(0.5)
    assert aux_weight_at(0, 100, 0.5, 0.0) == 0.5


def test_harden_multiclass_is_argmax():
    p = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]])
    assert harden_predictions(p).argmax(-1).tolist() == [1, 0]


def _p(p1):
    p1 = torch.tensor(p1)
    return torch.stack([1 - p1, p1], 1)


def test_harden_no_positive_weak_labels_gives_no_positives():
    # k = round(0 * 5) = 0: the most confident example must not be hardened to positive
    hard = harden_predictions(_p([0.1, 0.9, 0.3, 0.2, 0.7]), torch.tensor([1.0, 0.0]))
    assert hard[:, 1].tolist() == [0, 0, 0, 0, 0] and hard.sum(1).tolist() == [1] * 5


def test_harden_all_positive_weak_labels_gives_all_positive():
    hard = harden_predictions(_p([0.1, 0.9, 0.3, 0.2, 0.7]), torch.tensor([0.0, 1.0]))
    assert hard[:, 1].tolist() == [1, 1, 1, 1, 1]


@pytest.mark.parametrize("prior,expected", [(0.2, [0, 1, 0, 0, 0]), (0.4, [0, 1, 0, 0, 1]), (0.6, [0, 1, 1, 0, 1])])
def test_harden_keeps_exactly_k_highest(prior, expected):
    hard = harden_predictions(_p([0.1, 0.9, 0.3, 0.2, 0.7]), torch.tensor([1 - prior, prior]))
    assert hard[:, 1].tolist() == expected


def test_harden_ties_still_give_exactly_k():
    # saturated probabilities tie: k = round(0.25 * 8) = 2, not all six tied rows
    p = _p([1.0, 1.0, 0.2, 1.0, 1.0, 1.0, 0.1, 1.0])
    hard = harden_predictions(p, torch.tensor([0.75, 0.25]))
    assert int(hard[:, 1].sum()) == 2 and hard[:, 1].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    none = harden_predictions(_p([0.5] * 4), torch.tensor([1.0, 0.0]))
    assert int(none[:, 1].sum()) == 0


def test_logconf_on_all_negative_weak_labels_is_xent_to_negatives():
    logits = torch.tensor([[0.0, 2.0], [1.0, 0.0], [0.0, 0.5]])
    weak = torch.tensor([[1.0, 0.0]] * 3)
    assert logconf_loss(logits, weak, 1.0).item() == pytest.approx(soft_cross_entropy(logits, weak).item(), rel=1e-6)


def test_registry_holds_the_builtin_losses_and_warms_up_logconf():
    from superalign.training.config import LossConfig

    assert {"xent", "logconf"} <= set(LOSSES)
    logits, t = torch.randn(6, 2), torch.softmax(torch.randn(6, 2), -1)
    cfg = LossConfig(name="logconf", aux_weight=0.5, aux_warmup=0.5)
    assert compute_loss(cfg, logits, t, 0, 10).item() == pytest.approx(soft_cross_entropy(logits, t).item(), rel=1e-6)
    assert compute_loss(cfg, logits, t, 5, 10).item() == pytest.approx(logconf_loss(logits, t, 0.5).item(), rel=1e-6)
    assert compute_loss(LossConfig(), logits, t, 0, 10).item() == pytest.approx(soft_cross_entropy(logits, t).item())


def test_unknown_loss_name_lists_the_registered_ones(toy_csv):
    from conftest import tiny_config

    from superalign.errors import ConfigError
    from superalign.w2s import W2SConfig

    with pytest.raises(ConfigError) as e:
        W2SConfig.parse(tiny_config(toy_csv, methods=[{"name": "m", "loss": {"name": "logconff"}}]))
    msg = str(e.value)
    assert "methods.0.loss.name" in msg and "logconf" in msg and "xent" in msg


def test_a_loss_registered_here_trains_a_w2s_student(toy_csv, tmp_path):
    from conftest import tiny_config

    from superalign.store import Store
    from superalign.w2s import W2SConfig, run_w2s

    calls = []

    @register_loss("test-scaled-xent", description="cross-entropy times two (test)")
    def scaled(logits, targets, cfg, step, total_steps):
        calls.append((step, total_steps))
        return 2.0 * soft_cross_entropy(logits, targets)

    try:
        cfg = W2SConfig.parse(tiny_config(toy_csv, seeds=[0], methods=[{"name": "scaled",
                                                                          "loss": {"name": "test-scaled-xent"}}]))
        res = run_w2s(cfg, store=Store(tmp_path / "s"))
    finally:
        LOSSES.pop("test-scaled-xent", None)
    assert calls and calls[-1][1] > 0 and max(s for s, _ in calls) < calls[-1][1]
    assert [r["method"] for r in res.rows if r.get("method") == "scaled"]



def test_loss_version_enters_train_stage_keys_only_above_one(tmp_path):
    """A fixed loss (logconf, version 2) must not reuse stages trained by its old code; xent keys stay as they were."""
    import json

    import numpy as np

    from superalign.data.task import TaskData
    from superalign.store.store import Store
    from superalign.training.config import LossConfig
    from superalign.training.losses import get_loss
    from superalign.w2s.config import ModelConfig
    from superalign.w2s.stages import Stages, ground_truth

    assert get_loss("logconf").version == 2 and get_loss("xent").version == 1
    task = TaskData(name="t", texts=[f"word {i}" for i in range(16)], labels=np.array([i % 2 for i in range(16)]),
                    label_names=["a", "b"])
    stages = Stages(Store(tmp_path / "store"), task)
    cfg = ModelConfig(model="tiny-bert", epochs=1, batch_size=8)
    labels = ground_truth(task, np.arange(8))
    for name in ("xent", "logconf"):
        stages.train(cfg, labels, loss=LossConfig(name=name), seed=0, predict_on={"test": np.arange(8, 16)},
                     label=name)
    train = [m for m in (json.loads(p.read_text()) for p in (tmp_path / "store").rglob("meta.json"))
             if m.get("kind") == "train"]
    by_loss = {m["label"]: m["inputs"] for m in train}
    assert set(by_loss) == {"xent", "logconf"}
    assert by_loss["logconf"]["loss_version"] == 2
    assert "loss_version" not in by_loss["xent"]
