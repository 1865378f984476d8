"""Weak-to-strong generalization experiments."""

from superalign.w2s.config import MethodConfig, ModelConfig, PromptingConfig, SplitSizes, W2SConfig
from superalign.w2s.pipeline import W2SResult, run_w2s

__all__ = ["MethodConfig", "ModelConfig", "PromptingConfig", "SplitSizes", "W2SConfig", "W2SResult", "run_w2s"]
