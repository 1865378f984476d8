"""Generative (unsupervised) finetuning: the causal-LM loss on a task's unlabelled texts.

Burns et al. (2023, "Weak-to-strong generalization", sec. 4.3.2) fine-tune the strong model as a
language model on the task's texts before weak-to-strong training, which makes the task's
concepts more salient in its representations; no label is read. Here the backbone (the
hidden-state model every regime starts from) is fine-tuned through its own LM head: the tied
input embeddings, or the causal LM's untied output layer, frozen. With ``regime: lora`` LoRA
adapters (peft) on every linear layer train and are stored as their factors (small); the adapted
backbone is the pristine one with ``W += scale * B @ A`` applied. With ``regime: full`` every
backbone weight trains and is stored.

The result is a cached stage of kind ``generative`` (:func:`adapted_backbone`); stages that read
the adapted backbone put its key into theirs.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from superalign.errors import ConfigError, TrainingError
from superalign.models.classifier import collate, encode
from superalign.store.store import Store, stage_key

log = logging.getLogger("superalign.training")

ADAPTATION_FILE = "adaptation.safetensors"
VERSION = 1


def select_texts(texts: Sequence[str], max_texts: int | None, seed: int) -> list[str]:
    """At most ``max_texts`` of ``texts`` (a seeded sample, in their original order)."""
    texts = list(texts)
    if max_texts is None or len(texts) <= max_texts:
        return texts
    keep = np.sort(np.random.default_rng([seed, 4321]).permutation(len(texts))[:max_texts])
    return [texts[i] for i in keep]


def texts_hash(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def generative_inputs(identity: dict[str, Any], cfg, texts: Sequence[str]) -> dict[str, Any]:
    """The ``generative`` stage's inputs: base model identity, the config, the texts' hash."""
    return {"model": identity, "cfg": cfg.model_dump(), "texts": texts_hash(texts), "n_texts": len(texts)}


def generative_key(identity: dict[str, Any], cfg, texts: Sequence[str]) -> str:
    return stage_key("generative", generative_inputs(identity, cfg, texts), VERSION)


def lm_head_weight(model_name: str, backbone: nn.Module, *, trust_remote_code: bool = False) -> torch.Tensor | None:
    """The untied output-layer weight of ``model_name``'s causal LM, or None when it is tied to the
    input embeddings (then the backbone's own, possibly trained, embeddings are the head)."""
    from superalign.models.loading import load_causal_lm

    lm, _, _ = load_causal_lm(model_name, trust_remote_code=trust_remote_code)
    tied = bool(getattr(lm.config, "tie_word_embeddings", False))
    head = lm.get_output_embeddings()
    if head is None:
        raise ConfigError("generative_finetune", f"'{model_name}' has no causal-LM head",
                          "remove generative_finetune, or use a decoder (superalign models list)")
    weight = None if tied else head.weight.detach().clone()
    if weight is not None and weight.shape[1] != backbone.get_input_embeddings().weight.shape[1]:
        raise ConfigError("generative_finetune", f"the LM head of '{model_name}' does not fit its backbone",
                          "remove generative_finetune for this model")
    del lm
    return weight


def _lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and "default" in getattr(module, "lora_A", {}):
            out[name.removeprefix("base_model.model.")] = module
    return out


def finetune(
    backbone: nn.Module,
    tokenizer,
    texts: Sequence[str],
    cfg,
    *,
    head_weight: torch.Tensor | None = None,
    softcap: float | None = None,
    device: torch.device | str = "cpu",
    desc: str = "generative finetune",
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Fine-tune a copy of ``backbone`` with the next-token loss on ``texts``.

    ``cfg`` is a :class:`~superalign.w2s.config.GenerativeFinetuneConfig`. Returns (tensors, meta):
    for ``lora`` the factors ``{module}.lora_A``/``{module}.lora_B`` and per-module scalings in
    ``meta["scaling"]``; for ``full`` every backbone weight. ``backbone`` is not modified.
    """
    if not texts:
        raise ConfigError("generative_finetune", "there are no texts to fine-tune on", "give the task some examples")
    model = copy.deepcopy(backbone)
    model.requires_grad_(False)
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    if cfg.regime == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                                 target_modules="all-linear", bias="none"))
    else:
        model.requires_grad_(True)
    model.to(device)
    head = head_weight.to(device) if head_weight is not None else None
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate(), weight_decay=cfg.weight_decay)
    enc = encode(tokenizer, texts, cfg.max_length)
    lengths = enc.lengths()
    pad = tokenizer.pad_token_id
    from superalign.training.trainer import epoch_batches

    losses: list[float] = []
    torch.manual_seed(cfg.seed)
    n_steps = cfg.epochs * math.ceil(len(texts) / cfg.batch_size)
    bar = tqdm(total=n_steps, desc=desc, unit="step", leave=False)
    model.train()
    for epoch in range(cfg.epochs):
        for pos in epoch_batches(len(texts), cfg.batch_size, cfg.seed, epoch, lengths):
            ids, mask = collate([enc.ids[i] for i in pos], pad)
            ids, mask = ids.to(device), mask.to(device)
            if ids.shape[1] < 2:
                bar.update(1)
                continue
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
            weight = head if head is not None else model.get_input_embeddings().weight
            logits = hidden @ weight.T.to(hidden.dtype)
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            target = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)
            if not torch.isfinite(loss):
                raise TrainingError("generative_finetune.lr", f"the causal-LM loss became {loss.item()}",
                                    f"lower generative_finetune.lr (now {cfg.learning_rate():g})")
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            bar.update(1)
    bar.close()
    model.eval()
    k = max(1, min(10, len(losses) // 4 or 1))
    meta: dict[str, Any] = {"regime": cfg.regime, "steps": len(losses), "n_texts": len(texts),
                            "loss_first": float(np.mean(losses[:k])) if losses else float("nan"),
                            "loss_last": float(np.mean(losses[-k:])) if losses else float("nan")}
    tensors: dict[str, torch.Tensor] = {}
    if cfg.regime == "lora":
        scaling = {}
        for name, layer in _lora_layers(model).items():
            tensors[f"{name}.lora_A"] = layer.lora_A["default"].weight.detach().cpu().contiguous()
            tensors[f"{name}.lora_B"] = layer.lora_B["default"].weight.detach().cpu().contiguous()
            scaling[name] = float(layer.scaling["default"])
        meta["scaling"] = scaling
    else:
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return tensors, meta


@torch.no_grad()
def lm_loss(backbone: nn.Module, tokenizer, texts: Sequence[str], head_weight: torch.Tensor | None = None,
            max_length: int = 64, batch_size: int = 16) -> float:
    """Mean next-token cross-entropy of ``backbone`` + LM head on ``texts`` (a check of an adaptation)."""
    enc = encode(tokenizer, texts, max_length)
    total, count = 0.0, 0
    for start in range(0, len(texts), batch_size):
        ids, mask = collate(enc.ids[start:start + batch_size], tokenizer.pad_token_id)
        hidden = backbone(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
        weight = head_weight if head_weight is not None else backbone.get_input_embeddings().weight
        logits = hidden @ weight.T
        target = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
                               reduction="sum")
        total += float(loss)
        count += int((target != -100).sum())
    return total / max(1, count)


@torch.no_grad()
def apply_adaptation(backbone: nn.Module, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> nn.Module:
    """A copy of ``backbone`` with the stored adaptation applied (``backbone`` is not modified)."""
    model = copy.deepcopy(backbone)
    if meta["regime"] == "lora":
        for name, scale in meta["scaling"].items():
            layer = model.get_submodule(name)
            a, b = tensors[f"{name}.lora_A"], tensors[f"{name}.lora_B"]
            layer.weight += (scale * (b.to(layer.weight) @ a.to(layer.weight)))
    else:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        if unexpected:
            raise TrainingError("generative_finetune", f"stored weights do not fit the model ({unexpected[:3]})",
                                "delete the generative stage from the store and rerun")
    model.requires_grad_(False)
    model.eval()
    return model


def adapted_backbone(
    store: Store,
    *,
    model_name: str,
    identity: dict[str, Any],
    backbone: nn.Module,
    tokenizer,
    arch: str,
    texts: Sequence[str],
    cfg,
    field: str = "generative_finetune",
    trust_remote_code: bool = False,
    device: torch.device | str = "cpu",
) -> tuple[nn.Module, str]:
    """(the adapted backbone, the ``generative`` stage key): computed once per (model, config, texts)."""
    if arch == "encoder":
        raise ConfigError(field, f"'{model_name}' is an encoder: it has no causal-LM head to fine-tune generatively",
                          "remove generative_finetune from this model, or use a decoder (superalign models list)")
    inputs = generative_inputs(identity, cfg, texts)

    def compute(tmp: Path) -> dict:
        from safetensors.torch import save_file

        t0 = time.perf_counter()
        head = lm_head_weight(model_name, backbone, trust_remote_code=trust_remote_code)
        softcap = getattr(backbone.config, "final_logit_softcapping", None)
        tensors, meta = finetune(backbone, tokenizer, texts, cfg, head_weight=head, softcap=softcap, device=device,
                                 desc=f"generative finetune {model_name}")
        save_file(tensors, str(tmp / ADAPTATION_FILE))
        meta["seconds"] = round(time.perf_counter() - t0, 1)
        log.info("generative finetune %s: %d steps on %d texts, LM loss %.3f -> %.3f", model_name, meta["steps"],
                 meta["n_texts"], meta["loss_first"], meta["loss_last"])
        return meta

    stage = store.run("generative", inputs, compute, version=VERSION,
                      label=f"generative finetune {model_name} ({cfg.regime}, {len(texts)} texts)")
    from safetensors.torch import load_file

    tensors = load_file(str(stage.file(ADAPTATION_FILE)))
    return apply_adaptation(backbone, tensors, stage.meta["result"]).to(device), stage.key
