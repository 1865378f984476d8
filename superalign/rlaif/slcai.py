"""Supervised Constitutional AI data: response → (critique → revision) × N, and optional SFT.

Each round samples one principle per prompt (seeded), asks the policy to critique its last
response under that principle, then to revise it. Rows are TRL-style: ``prompt``, ``messages``
(the conversation with the final revision, for SFT), ``chosen`` (final revision) and ``rejected``
(initial response) for preference training, plus the critique trace.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

from superalign.rlaif.constitution import Constitution
from superalign.rlaif.generation import GenerationConfig, generate, render_chat

REVISION_SUFFIX = " Reply with the rewritten response only."


def critique_revision(model, tok, prompts: Sequence[str], constitution: Constitution, *, rounds: int,
                      gen: GenerationConfig, seed: int = 0) -> list[dict]:
    """Run the critique/revision loop over all prompts, batched per step."""
    rng = random.Random(seed)
    convs = [[{"role": "user", "content": p}] for p in prompts]
    initial = [c[0].text for c in generate(model, tok, render_chat(tok, convs), gen, seed=seed, desc="responses")]
    current = list(initial)
    traces: list[list[dict]] = [[] for _ in prompts]
    for r in range(rounds):
        principles = [rng.choice(constitution.principles) for _ in prompts]
        crit_convs = [c + [{"role": "assistant", "content": cur}, {"role": "user", "content": pr.critique}]
                      for c, cur, pr in zip(convs, current, principles)]
        critiques = [x[0].text for x in generate(model, tok, render_chat(tok, crit_convs), gen, seed=seed + 1000 * (r + 1),
                                                  desc=f"critiques round {r + 1}")]
        rev_convs = [c + [{"role": "assistant", "content": cr}, {"role": "user", "content": pr.revision + REVISION_SUFFIX}]
                     for c, cr, pr in zip(crit_convs, critiques, principles)]
        revisions = [x[0].text for x in generate(model, tok, render_chat(tok, rev_convs), gen,
                                                  seed=seed + 1000 * (r + 1) + 1, desc=f"revisions round {r + 1}")]
        for i, (pr, cr, rv) in enumerate(zip(principles, critiques, revisions)):
            traces[i].append({"principle": pr.name, "critique": cr, "revision": rv})
            if rv.strip():  # an empty revision keeps the previous response
                current[i] = rv
    return [{"prompt": p, "messages": [{"role": "user", "content": p}, {"role": "assistant", "content": cur}],
             "chosen": cur, "rejected": ini, "rounds": tr}
            for p, ini, cur, tr in zip(prompts, initial, current, traces)]


def sft_on_revisions(model, tok, rows: Sequence[dict], out_dir: Path, *, epochs: int = 1, lr: float = 2e-4,
                     batch_size: int = 8, max_length: int = 256, lora_r: int = 16, seed: int = 0) -> list[dict]:
    """Supervised fine-tuning (TRL ``SFTTrainer``, LoRA) on the revised conversations.

    Saves the adapter to ``out_dir/adapter``; returns the logged losses.
    """
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    data = Dataset.from_dict({"messages": [r["messages"] for r in rows]})
    args = SFTConfig(output_dir=str(out_dir / "trl"), num_train_epochs=epochs, learning_rate=lr,
                     per_device_train_batch_size=batch_size, max_length=max_length, report_to=[], save_strategy="no",
                     logging_steps=1, seed=seed, use_cpu=not torch.cuda.is_available(), bf16=torch.cuda.is_available(),
                     assistant_only_loss=False, disable_tqdm=False)
    lora = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=lora)
    trainer.train()
    trainer.model.save_pretrained(str(out_dir / "adapter"))
    return [{"step": h.get("step"), "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h]
