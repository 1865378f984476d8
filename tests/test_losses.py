import pytest
import torch
import torch.nn.functional as F

from superalign.training.losses import aux_weight_at, harden_predictions, logconf_loss, soft_cross_entropy


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
    # adaptive threshold at the 60% quantile of P(1): the four confident-positive rows stay positive
    assert hardened[:, 1].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
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
