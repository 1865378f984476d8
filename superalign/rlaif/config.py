"""RLAIF / RLHF experiment config (pydantic, loadable from YAML)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from superalign.config import YamlConfig
from superalign.errors import ConfigError
from superalign.rlaif.dpo import DPOSettings
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
    known_pairs: int = Field(0, ge=0, description="held-out pairs whose better side is known by construction (a "
                             "policy answer vs the same answer word-shuffled, or vs an answer to another prompt) for "
                             "PM accuracy and labeller agreement with CIs; 0 = off")
    labeller_remedies: bool = Field(False, description="on the known pairs, measure order consistency and agreement "
                                    "for one ordering, both orderings, CoT + clamping and a principle ensemble")
    ensemble_principles: int = Field(4, ge=2, description="principles the remedy table's principle ensemble "
                                     "averages per pair (capped at the constitution's size)")
    cot_max_new_tokens: int = Field(32, ge=1, description="reasoning tokens per comparison in the remedy table's "
                                    "CoT + clamp row")
    size: Literal["default", "full"] = Field(
        "default", description="full: at least 100 win-rate prompts, 240 known pairs and the remedy table "
                               "(on the offline models about 24 min on top of the default run's store)")

    @model_validator(mode="after")
    def _full(self) -> "EvalConfig":
        if self.size == "full":
            self.n_prompts = max(self.n_prompts, 100)
            self.known_pairs = max(self.known_pairs, 240)
            self.labeller_remedies = True
        return self


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
    policy_opt: list[Literal["best_of_n", "rloo", "grpo", "dpo"]] | None = Field(
        None, description="policy optimisers beside the best-of-n curve (one name or a list): rloo/grpo = RL against "
                          "the PM (rl.algo), dpo = DPO on the labeller's pairs, best_of_n = no trained policy; "
                          "None: today's chain (best-of-n and RL with rl.algo)")
    dpo: DPOSettings = Field(default_factory=DPOSettings)
    rounds: int = Field(1, ge=1, description="iterated RLAIF: 1 = one pass; N > 1 samples the current policy, "
                                             "labels new pairs, refits the PM and optimises again, N - 1 more times")

    @field_validator("policy_opt", mode="before")
    @classmethod
    def _one_name(cls, v):
        return [v] if isinstance(v, str) else v

    @classmethod
    def parse(cls, data: dict[str, Any], where: str = "config") -> "RLAIFConfig":
        cfg = super().parse(data, where)
        cfg.check()
        return cfg

    def check(self) -> "RLAIFConfig":
        """Errors for settings that do not fit together, each naming the field and the fix."""
        opt = self.optimisers
        if sum(o in ("rloo", "grpo") for o in opt) > 1:
            raise ConfigError("policy_opt", "lists both rloo and grpo", "keep one RL algorithm")
        if self.rounds > 1 and self.preferences.source != "ai":
            raise ConfigError("rounds", f"is {self.rounds} but preferences.source is '{self.preferences.source}' "
                              "(new comparisons need the AI labeller)", "set preferences.source: ai or rounds: 1")
        if self.rl.reward != "pm" and not any(o in ("rloo", "grpo") for o in opt):
            raise ConfigError("rl.reward", f"is '{self.rl.reward}' but policy_opt has no RL algorithm",
                              "add rloo or grpo to policy_opt, or set rl.reward: pm")
        if self.eval.labeller_remedies and not self.eval.known_pairs:
            raise ConfigError("eval.labeller_remedies", "needs pairs with a known better side",
                              "set eval.known_pairs (e.g. 240) or eval.size: full")
        if self.rounds > 1 and opt == ["best_of_n"]:
            raise ConfigError("rounds", "needs a trained policy to iterate", "add dpo, rloo or grpo to policy_opt")
        return self

    @property
    def optimisers(self) -> list[str]:
        """The policy optimisers in run order (None → best-of-n and RL with ``rl.algo``)."""
        return list(dict.fromkeys(self.policy_opt)) if self.policy_opt else ["best_of_n", self.rl.algo]
