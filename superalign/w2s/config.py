"""Weak-to-strong experiment configs (pydantic, loadable from YAML)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from superalign.config import YamlConfig
from superalign.tracking import TrackingConfig
from superalign.training.config import LossConfig, TrainConfig


class ModelConfig(TrainConfig):
    """A model and how it is trained (every :class:`TrainConfig` field, plus the model's name)."""

    model: str = Field(..., description="zoo name (superalign models list), Hugging Face id, or local directory")
    trust_remote_code: bool = False


class SplitSizes(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weak_train: int = Field(500, ge=2, description="split A: ground truth for the weak supervisor")
    strong_train: int = Field(1000, ge=2, description="split B: weak labels for the student, ground truth for the ceiling")
    val: int = Field(200, ge=0, description="for early stopping")
    test: int = Field(1000, ge=2, description="held out; all reported accuracies")


class MethodConfig(BaseModel):
    """One way of training the strong student on weak labels (one row of the results table)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    labels: Literal["soft", "hard"] = "soft"
    loss: LossConfig = Field(default_factory=LossConfig)
    early_stopping: Literal["none", "weak", "oracle"] = "none"
    bootstrap: list[ModelConfig] = Field(default_factory=list, description="intermediate models, weakest first")
    student: dict[str, Any] = Field(default_factory=dict, description="overrides of the strong model's training fields")

    @field_validator("loss", mode="before")
    @classmethod
    def _loss_shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("bootstrap", mode="before")
    @classmethod
    def _bootstrap_shorthand(cls, v: Any) -> Any:
        return [{"model": m} if isinstance(m, str) else m for m in (v or [])]


class PromptingConfig(BaseModel):
    """Zero-/few-shot scoring of a causal LM on the task (extra rows in the results table)."""

    model_config = ConfigDict(extra="forbid")

    model: str
    shots: list[int] = Field(default_factory=lambda: [0, 4])
    max_length: int = Field(512, ge=16)
    batch_size: int = Field(8, ge=1)
    max_test: int | None = Field(None, ge=2, description="score only the first N test examples (speed)")


class W2SConfig(YamlConfig):
    """A weak-to-strong experiment: weak supervisor, strong student, methods, seeds."""

    model_config = ConfigDict(extra="forbid")

    name: str = "w2s"
    task: str = Field(..., description="registered task (superalign tasks list), local file, or hf:OWNER/NAME")
    task_options: dict[str, Any] = Field(default_factory=dict)
    max_examples: int | None = Field(None, ge=8, description="class-balanced subsample of the task")
    splits: SplitSizes = Field(default_factory=SplitSizes)
    split_seed: int = 0
    weak: ModelConfig
    strong: ModelConfig
    methods: list[MethodConfig] = Field(default_factory=lambda: [MethodConfig(name="naive")], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    prompting: list[PromptingConfig] = Field(default_factory=list)
    min_gap: float = Field(0.05, ge=0, le=1, description="ceiling-weak gap below which PGR is flagged unreliable")
    n_boot: int = Field(1000, ge=100)
    tracking: TrackingConfig | None = Field(None, description="log config, metrics and artifacts to MLflow")

    @field_validator("weak", "strong", mode="before")
    @classmethod
    def _model_shorthand(cls, v: Any) -> Any:
        return {"model": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check(self) -> "W2SConfig":
        names = [m.name for m in self.methods]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"method names must be unique; repeated: {sorted(dup)}")
        for m in self.methods:
            try:
                self.student_config(m)
            except ValidationError as exc:
                raise ValueError(f"methods[{m.name}].student: {exc.errors()[0]['msg']} "
                                 f"({'.'.join(str(x) for x in exc.errors()[0]['loc'])})") from None
            if m.early_stopping != "none" and self.splits.val == 0:
                raise ValueError(f"methods[{m.name}].early_stopping needs splits.val > 0")
        return self

    def student_config(self, method: MethodConfig) -> ModelConfig:
        """The strong model's config with the method's overrides applied."""
        return ModelConfig.model_validate({**self.strong.model_dump(), **method.student})
