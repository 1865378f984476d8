"""Training: losses on soft/weak labels, regimes, and one loop for all of them."""

from superalign.training.config import LossConfig, TrainConfig
from superalign.training.losses import logconf_loss, soft_cross_entropy
from superalign.training.regimes import ProbeHead, build_classifier, probe_head
from superalign.training.trainer import FeatureBatcher, FitResult, TokenBatcher, ValSet, fit, predict

__all__ = ["FeatureBatcher", "FitResult", "LossConfig", "ProbeHead", "TokenBatcher", "TrainConfig", "ValSet",
           "build_classifier", "fit", "logconf_loss", "predict", "probe_head", "soft_cross_entropy"]
