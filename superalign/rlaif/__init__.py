"""RLAIF / Constitutional AI and RLHF: constitution → critique/revision → AI feedback → preference
model (with pre-training) → best-of-n and RL → evaluation."""

from superalign.rlaif.config import RLAIFConfig
from superalign.rlaif.constitution import Constitution, Principle, load_constitution
from superalign.rlaif.feedback import FeedbackConfig, Labeller
from superalign.rlaif.pipeline import RLAIFResult, run_rlaif
from superalign.rlaif.pm import Pairs, PMConfig, PreferenceModel, bt_loss

__all__ = ["Constitution", "FeedbackConfig", "Labeller", "PMConfig", "Pairs", "PreferenceModel", "Principle",
           "RLAIFConfig", "RLAIFResult", "bt_loss", "load_constitution", "run_rlaif"]
