"""RLAIF / RLHF experiment config (pydantic, loadable from YAML)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from superalign.config import YamlConfig
from superalign.rlaif.feedback import FeedbackConfig
from superalign.rlaif.generation import GenerationConfig
from superalign.rlaif.pm import PMConfig
from superalign.rlaif.rl import RLConfig


class SLCAIConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_prompts: int = Field(32, ge=1, description="prompts for critique/revision (half harmful, half ordinary)")
    rounds: int = Field(1, ge=1)
    sft: bool = Field(True, description="fine-tune the policy on the revisions (LoRA)")
    sft_epochs: int = Field(2, ge=1)
    sft_lr: float = Field(2e-4, gt=0)


class PreferenceData(BaseModel):
    """Where the preference model's comparisons come from."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["ai", "file", "hub", "chess"] = Field(
        "ai", description="ai: AI feedback on policy samples (RLAIF); file/hub: human prompt/chosen/rejected "
                          "(RLHF); chess: move pairs ranked by Stockfish (RLHF path with exact ground truth)")
    path: str | None = Field(None, description="file (JSONL/CSV/Parquet) or hub data set name, for file/hub")
    n_prompts: int = Field(64, ge=4, description="prompts sampled twice by the policy for AI-labelled pairs")
    include_slcai_pairs: bool = True
    n_chess: int = Field(200, ge=8)
    test_fraction: float = Field(0.25, gt=0, lt=1)


class PMPConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    source: str = Field("wordnet", description="'wordnet' (offline), a JSONL of ranked answers, or hf:NAME")
    n_questions: int = Field(300, ge=2)
    epochs: int = Field(20, ge=1)
    sizes: list[int] = Field(default_factory=lambda: [8, 16, 32, 64], description="data-efficiency sizes")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])


class BestOfNConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ns: list[int] = Field(default_factory=lambda: [1, 2, 4, 8])
    n_prompts: int = Field(24, ge=1)


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_prompts: int = Field(24, ge=2, description="held-out prompts for win rates")
    judge_principles: int = Field(1, ge=1, description="principles the labeller samples per comparison when judging")
    n_boot: int = Field(1000, ge=100)


class RLAIFConfig(YamlConfig):
    """The whole chain: constitution → SL-CAI → feedback → PM (+PMP) → best-of-n and RL → evaluation."""

    model_config = ConfigDict(extra="forbid")

    name: str = "rlaif"
    policy: str = Field("smollm2-135m", description="chat model to align (needs a chat template)")
    constitution: str | None = Field(None, description="YAML/JSON constitution; default: the shipped one")
    prompts: str | None = Field(None, description="prompt set YAML (harmful/ordinary/labelled_pairs); default shipped")
    seed: int = 0
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    slcai: SLCAIConfig = Field(default_factory=SLCAIConfig)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    preferences: PreferenceData = Field(default_factory=PreferenceData)
    pm: PMConfig = Field(default_factory=PMConfig)
    pmp: PMPConfig = Field(default_factory=PMPConfig)
    best_of_n: BestOfNConfig = Field(default_factory=BestOfNConfig)
    rl: RLConfig = Field(default_factory=RLConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
