"""Weak-to-strong experiment configs (pydantic, loadable from YAML)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from superalign.config import YamlConfig
from superalign.errors import ConfigError
from superalign.tracking import TrackingConfig
from superalign.training.config import LossConfig, TrainConfig


class GenerativeFinetuneConfig(BaseModel):
    """Generative (unsupervised) finetuning of a causal LM on the task's unlabelled texts.

    Burns et al. (2023), sec. 4.3.2: before the W2S regime runs, the strong model is fine-tuned with
    the causal-LM (next-token) loss on the task's texts, so its representations of the task become
    more salient; no label is used. The texts are the model inputs of splits B (strong_train),
    test and val, capped at ``max_texts`` (a seeded sample). Defaults are sized for a 2-core CPU.
    """

    model_config = ConfigDict(extra="forbid")

    regime: Literal["lora", "full"] = Field("lora", description="LoRA adapters (peft) merged afterwards, or every weight")
    epochs: int = Field(1, ge=1, le=100)
    lr: float | None = Field(None, gt=0, description="default: 2e-4 for lora, 2e-5 for full")
    max_length: int = Field(64, ge=4, le=32768, description="tokens per text")
    batch_size: int = Field(8, ge=1)
    max_texts: int | None = Field(256, ge=1, description="cap on unlabelled texts (CPU budget); null: all of them")
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (2e-4 if self.regime == "lora" else 2e-5)


def _generative_shorthand(v: Any) -> Any:
    """``true`` → defaults; ``false``/``null`` → off; a mapping → those fields."""
    if v is True:
        return {}
    if v is False or v is None or v == "none":
        return None
    return v


class ModelConfig(TrainConfig):
    """A model and how it is trained (every :class:`TrainConfig` field, plus the model's name).

    ``generative_finetune`` first adapts the backbone with the causal-LM loss on the task's
    unlabelled texts (decoders only); the regime then trains on the adapted backbone.
    """

    model: str = Field(..., description="zoo name (superalign models list), Hugging Face id, or local directory")
    trust_remote_code: bool = False
    generative_finetune: GenerativeFinetuneConfig | None = Field(
        None, description="causal-LM finetuning on the task's unlabelled texts first (true: defaults)")

    @field_validator("generative_finetune", mode="before")
    @classmethod
    def _gen_shorthand(cls, v: Any) -> Any:
        return _generative_shorthand(v)

    def train_config(self) -> TrainConfig:
        """The :class:`TrainConfig` part (what the training loop reads)."""
        return TrainConfig.model_validate(self.model_dump(exclude={"model", "trust_remote_code", "generative_finetune"}))


class SplitSizes(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weak_train: int = Field(500, ge=2, description="split A: ground truth for the weak supervisor")
    strong_train: int = Field(1000, ge=2, description="split B: weak labels for the student, ground truth for the ceiling")
    val: int = Field(200, ge=0, description="for early stopping")
    test: int = Field(1000, ge=2, description="held out; all reported accuracies")


class LabelFilterConfig(BaseModel):
    """Which weak labels of split B the student trains on.

    ``knn_consistency`` (EleutherAI w2s): drop the ``drop_frac`` of examples whose weak label
    disagrees most with the mean weak label of their ``k`` nearest neighbours in the strong model's
    feature space (pooled features before any W2S training; cosine similarity of standardised
    features). ``confidence``: drop the ``drop_frac`` least confident weak labels.
    """

    model_config = ConfigDict(extra="forbid")

    name: Literal["knn_consistency", "confidence"]
    k: int = Field(20, ge=1)
    drop_frac: float = Field(0.2, ge=0, lt=1)


class MethodConfig(BaseModel):
    """One way of training the strong student on weak labels (one row of the results table)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    labels: Literal["soft", "hard"] = "soft"
    loss: LossConfig = Field(default_factory=LossConfig)
    early_stopping: Literal["none", "weak", "oracle"] = "none"
    bootstrap: list[ModelConfig] = Field(default_factory=list, description="intermediate models, weakest first")
    student: dict[str, Any] = Field(default_factory=dict, description="overrides of the strong model's training fields")
    weak_ensemble: list[ModelConfig] = Field(
        default_factory=list, description="extra weak supervisors trained like `weak` on split A; the student's labels "
                                          "are the mean of all weak supervisors' soft labels")
    label_filter: LabelFilterConfig | None = Field(None, description="drop some weak labels before the student trains")

    @field_validator("label_filter", mode="before")
    @classmethod
    def _filter_shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("weak_ensemble", mode="before")
    @classmethod
    def _ensemble_shorthand(cls, v: Any) -> Any:
        return [{"model": m} if isinstance(m, str) else m for m in (v or [])]

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
    test_curve: bool = Field(True, description="record ground-truth test accuracy at every eval point of every model")
    misfit_tolerance: float = Field(0.01, ge=0, description="slack for the misfit bound gain >= misfit (point estimates)")
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

    def generative_models(self) -> list[tuple[str, ModelConfig]]:
        """(field, config) of every model with ``generative_finetune`` set."""
        out = [("weak", self.weak), ("strong", self.strong)]
        for m in self.methods:
            out += [(f"methods[{m.name}].student", self.student_config(m))]
            out += [(f"methods[{m.name}].bootstrap[{i}]", b) for i, b in enumerate(m.bootstrap)]
            out += [(f"methods[{m.name}].weak_ensemble[{i}]", w) for i, w in enumerate(m.weak_ensemble)]
        return [(f, c) for f, c in out if c.generative_finetune is not None]

    def student_config(self, method: MethodConfig) -> ModelConfig:
        """The strong model's config with the method's overrides applied."""
        return ModelConfig.model_validate({**self.strong.model_dump(), **method.student})


def check_generative(cfg: W2SConfig) -> None:
    """Raise a :class:`ConfigError` naming the field when ``generative_finetune`` is set on an encoder."""
    from superalign.models.zoo import ZOO

    for where, m in cfg.generative_models():
        spec = ZOO.get(m.model.removeprefix("hf:"))
        if spec is not None and spec.arch == "encoder":
            raise ConfigError(f"{where}.generative_finetune",
                              f"'{m.model}' is an encoder: it has no causal-LM head to fine-tune generatively",
                              "remove generative_finetune from this model, or use a decoder (superalign models list)")
