"""RL against a preference model with a KL leash, through TRL's stable trainers (RLOO, GRPO).

The reward is the preference model's score of each completion. TRL computes the KL to the
reference policy (the initial weights; with LoRA, the adapter switched off) and weighs it with
``beta``; :class:`AdaptiveKLController` moves ``beta`` towards a target KL (Ziegler et al., 2019):
``beta *= 1 + clip(KL / target - 1, -0.2, 0.2) * steps / horizon``. Every logged step records the
reward, KL, beta, mean completion length and EOS rate, so length drift and reward hacking show.
PPO is not offered: TRL 1.x ships RLOO and GRPO as its stable online trainers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("superalign.rlaif")


class RLConfig(BaseModel):
    """Online RL settings (small defaults fit a 2-core CPU; scale up on GPUs)."""

    model_config = ConfigDict(extra="forbid")

    algo: Literal["rloo", "grpo"] = "rloo"
    reward: Literal["pm", "labeller", "both"] = Field(
        "pm", description="pm: the preference model's score; labeller: d-RLAIF (Lee et al., 2023), the labeller's "
                          "1-9 rating used directly; both: train one policy on each (rows 'rl' and 'rl-direct')")
    steps: int = Field(12, ge=1)
    prompts_per_step: int = Field(2, ge=1)
    num_generations: int = Field(4, ge=2, description="completions per prompt (the group for the baseline)")
    max_completion_length: int = Field(48, ge=4)
    temperature: float = Field(1.0, gt=0)
    lr: float = Field(2e-3, gt=0, description="LoRA learning rate (2e-4 barely moved a 135M policy in 16 steps)")
    beta: float = Field(0.05, gt=0, description="initial KL coefficient")
    target_kl: float | None = Field(4.0, gt=0, description="adaptive KL target (nats per sequence); None = fixed beta")
    kl_horizon: int = Field(20, ge=1)
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    logging_steps: int = Field(1, ge=1)
    use_vllm: bool | None = Field(None, description="generate rollouts with vLLM through TRL (colocated); "
                                  "None: when vLLM is installed and CUDA is there")
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1)


class AdaptiveKLController:
    """Proportional controller for the KL coefficient (Ziegler et al., 2019)."""

    def __init__(self, beta: float, target: float, horizon: int):
        self.beta, self.target, self.horizon = beta, target, horizon

    def update(self, kl: float, n_steps: int = 1) -> float:
        error = max(-0.2, min(0.2, kl / self.target - 1.0))
        self.beta *= 1.0 + error * n_steps / self.horizon
        return self.beta


def _text(x: Any) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, list) and x and isinstance(x[-1], dict):
        return str(x[-1].get("content", ""))
    return str(x)


def reward_function(score: Callable[[list[str], list[str]], Sequence[float]]):
    """Wrap ``score(prompts, responses)`` as a TRL reward function (plain or conversational data)."""

    def reward(prompts, completions, **kwargs) -> list[float]:
        user = [_text(p[0]) if isinstance(p, list) and p and isinstance(p[0], dict) and p[0].get("role") == "user"
                else _text(p) for p in prompts]
        return [float(r) for r in score(user, [_text(c) for c in completions])]

    reward.__name__ = "preference_model"
    return reward


def train_rl(model, tok, prompts: Sequence[str], score: Callable[[list[str], list[str]], Sequence[float]],
             cfg: RLConfig, out_dir: Path, *, seed: int = 0) -> list[dict]:
    """Train ``model`` (a causal LM; LoRA adapters are added) with RLOO or GRPO; returns per-step logs.

    The adapter is saved to ``out_dir/adapter`` (safetensors).
    """
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback

    if cfg.algo == "rloo":
        from trl import RLOOConfig as TRLConfig
        from trl import RLOOTrainer as TRLTrainer
    else:
        from trl import GRPOConfig as TRLConfig
        from trl import GRPOTrainer as TRLTrainer

    from superalign.rlaif.generation import vllm_available

    use_vllm = vllm_available() if cfg.use_vllm is None else cfg.use_vllm
    vllm_args = {"use_vllm": True, "vllm_mode": "colocate",
                 "vllm_gpu_memory_utilization": cfg.vllm_gpu_memory_utilization} if use_vllm else {}
    out_dir = Path(out_dir)
    data = Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p in prompts]})
    batch = cfg.prompts_per_step * cfg.num_generations
    args = TRLConfig(
        output_dir=str(out_dir / "trl"), max_steps=cfg.steps, per_device_train_batch_size=batch,
        num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature, learning_rate=cfg.lr, beta=cfg.beta, logging_steps=cfg.logging_steps,
        report_to=[], save_strategy="no", seed=seed, use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(), disable_tqdm=False, gradient_accumulation_steps=1, **vllm_args,
    )
    history: list[dict] = []
    controller = AdaptiveKLController(cfg.beta, cfg.target_kl, cfg.kl_horizon) if cfg.target_kl else None

    class Recorder(TrainerCallback):
        trainer = None

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: D401
            if not logs or "reward" not in logs:
                return
            row = {"step": state.global_step, "reward": logs.get("reward"), "kl": logs.get("kl", 0.0),
                   "length": logs.get("completions/mean_length"),
                   "eos_rate": 1.0 - float(logs.get("completions/clipped_ratio", 0.0)),
                   "beta": getattr(self.trainer, "beta", cfg.beta)}
            if controller is not None and self.trainer is not None and row["kl"] is not None:
                self.trainer.beta = controller.update(float(row["kl"]), cfg.logging_steps)
                row["beta_next"] = self.trainer.beta
            history.append(row)

    recorder = Recorder()
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = TRLTrainer(model=model, reward_funcs=[reward_function(score)], args=args, train_dataset=data,
                         processing_class=tok, callbacks=[recorder], peft_config=lora)
    recorder.trainer = trainer
    trainer.train()
    trainer.model.save_pretrained(str(out_dir / "adapter"))
    return history
