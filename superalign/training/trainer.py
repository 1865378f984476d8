"""One readable training loop for every regime, in the spirit of nanoGPT.

The loop sees a ``module`` (a linear head over cached features, or a backbone+head classifier)
and a ``Batcher`` that turns example indices into the module's inputs. Targets are distributions
(one-hot for ground truth or hard weak labels, probabilities for soft weak labels). Devices,
mixed precision and multi-GPU data parallelism come from ``accelerate``; the same code runs on
this CPU and on a GPU cluster.

Early stopping evaluates on a validation split against weak labels (what a real supervisor has)
or against ground truth (an oracle, an optimistic bound) and keeps the best weights. Fine-tuning
writes in-stage checkpoints, so a killed run resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import get_scheduler

from superalign.errors import TrainingError
from superalign.models.classifier import INFERENCE_TOKENS, Encoded, collate, length_batches
from superalign.training.config import LossConfig, TrainConfig
from superalign.training.losses import compute_loss

log = logging.getLogger("superalign.training")


# --- batches -----------------------------------------------------------------------------------

class Batcher(Protocol):
    def inputs(self, idx: np.ndarray) -> tuple[torch.Tensor, ...]: ...

    def lengths(self) -> np.ndarray | None: ...


@dataclass
class FeatureBatcher:
    """Rows of a cached feature matrix."""

    features: torch.Tensor

    def inputs(self, idx: np.ndarray) -> tuple[torch.Tensor, ...]:
        return (self.features[torch.as_tensor(idx)].float(),)

    def lengths(self) -> np.ndarray | None:
        return None


@dataclass
class TokenBatcher:
    """Token ids padded per batch (batches group similar lengths)."""

    encoded: Encoded
    pad_id: int

    def inputs(self, idx: np.ndarray) -> tuple[torch.Tensor, ...]:
        return collate([self.encoded.ids[i] for i in idx], self.pad_id)

    def lengths(self) -> np.ndarray | None:
        return self.encoded.lengths()


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, lengths: np.ndarray | None) -> list[np.ndarray]:
    """Positions 0..n-1 in batches, shuffled by (seed, epoch).

    With ``lengths``, positions are shuffled, grouped into pools of 32 batches, sorted by length
    inside each pool and cut: batches of similar length, in a random order.
    """
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(n)
    if lengths is not None:
        pool = batch_size * 32
        chunks = [perm[i : i + pool] for i in range(0, n, pool)]
        perm = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in chunks])
    batches = [perm[i : i + batch_size] for i in range(0, n, batch_size)]
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


# --- the loop ----------------------------------------------------------------------------------

@dataclass
class ValSet:
    """Validation examples with ground truth and weak labels, for early stopping and curves."""

    idx: np.ndarray
    gt: np.ndarray
    weak: np.ndarray | None = None


@dataclass
class FitResult:
    state: dict[str, torch.Tensor]  # trainable parameters at the selected point
    curve: list[dict] = field(default_factory=list)
    steps: int = 0
    selected: dict = field(default_factory=dict)  # step/epoch and criterion of the kept weights


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach().cpu().clone() for k, p in module.named_parameters() if p.requires_grad}


def make_optimizer(params: list[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, fused (one kernel for all parameters) where every parameter sits on a device that has it.

    The fused kernel computes the same update as the per-tensor one up to float rounding (~1e-7).
    """
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def fit(
    module: nn.Module,
    batcher: Batcher,
    train_idx: np.ndarray,
    targets: np.ndarray,
    cfg: TrainConfig,
    *,
    loss: LossConfig | None = None,
    seed: int = 0,
    val: ValSet | None = None,
    early_stopping: str = "none",
    checkpoint_dir: Path | None = None,
    desc: str = "train",
    accelerator=None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    extra_eval: Callable[[nn.Module], dict[str, float]] | None = None,
) -> FitResult:
    """Train ``module``'s parameters that require grad on ``targets`` (N, K) for ``train_idx``.

    ``loss_fn(logits, targets)`` replaces the cross-entropy/``logconf`` objective of ``loss`` (the
    preference model passes its Bradley-Terry loss this way). ``extra_eval(module)`` is called at
    every eval point and its numbers join the curve point (e.g. ground-truth test accuracy); it
    never affects training or early stopping.
    """
    from accelerate import Accelerator

    loss = loss or LossConfig()
    if early_stopping != "none" and (val is None or len(val.idx) == 0):
        raise TrainingError("early_stopping", f"'{early_stopping}' needs a validation split", "set splits.val > 0")
    if early_stopping == "weak" and val is not None and val.weak is None:
        raise TrainingError("early_stopping", "'weak' needs weak labels on the validation split", "use 'oracle' or 'none'")
    targets_t = torch.as_tensor(np.asarray(targets), dtype=torch.float32)
    # Accelerate's state is process-wide and fixes mixed precision at its first creation, so the
    # accelerator only places devices and wraps data parallelism; autocast is applied per fit().
    accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    precision = cfg.precision()
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(enabled=precision == "fp16" and accelerator.device.type == "cuda")
    torch.manual_seed(seed)

    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("regime", "no parameter is trainable", "choose a regime that trains something")
    optimizer = make_optimizer(params, cfg.learning_rate(), cfg.weight_decay)
    lengths = batcher.lengths()
    lengths_train = lengths[train_idx] if lengths is not None else None
    n_batches = math.ceil(len(train_idx) / cfg.batch_size)
    if accelerator.num_processes > 1:
        n_batches //= accelerator.num_processes
    steps_per_epoch = math.ceil(n_batches / cfg.grad_accum)
    total = steps_per_epoch * cfg.epochs
    # transformers' schedulers (the same cosine as before; with warmup, its first step has lr 0).
    scheduler = get_scheduler("cosine" if cfg.schedule == "cosine" else "constant_with_warmup", optimizer,
                              num_warmup_steps=int(cfg.warmup_frac * total), num_training_steps=total)
    module, optimizer, scheduler = accelerator.prepare(module, optimizer, scheduler)
    raw_module = accelerator.unwrap_model(module)

    state = _State()
    if checkpoint_dir is not None:
        state.load(checkpoint_dir, raw_module, optimizer, scheduler)
    evals_since_best = state.evals_since_best

    def evaluate(epoch: int) -> bool:
        """Record a curve point; return True to stop (patience exhausted)."""
        nonlocal evals_since_best
        point = {"step": state.step, "epoch": epoch, "loss": state.running_loss()}
        if val is not None and len(val.idx):
            probs = predict(raw_module, batcher, val.idx, cfg.batch_size, accelerator.device)
            pred = probs.argmax(1)
            point["val_acc"] = float((pred == val.gt).mean())
            if val.weak is not None:
                point["val_acc_weak"] = float((pred == val.weak).mean())
        if extra_eval is not None:
            point.update(extra_eval(raw_module))
        state.curve.append(point)
        if early_stopping == "none":
            return False
        score = point["val_acc_weak"] if early_stopping == "weak" else point["val_acc"]
        if score > state.best_score:
            state.best_score, evals_since_best = score, 0
            state.best = trainable_state(raw_module)
            state.selected = {"step": state.step, "epoch": epoch, "criterion": early_stopping, "score": score}
        else:
            evals_since_best += 1
        return cfg.patience is not None and evals_since_best >= cfg.patience

    stop = False
    bar = tqdm(total=total, initial=state.step, desc=desc, unit="step", leave=False)
    for epoch in range(state.epoch, cfg.epochs):
        batches = epoch_batches(len(train_idx), cfg.batch_size, seed, epoch, lengths_train)
        if accelerator.num_processes > 1:  # data parallel: each process takes its share of the batches
            usable = len(batches) - len(batches) % accelerator.num_processes
            batches = batches[accelerator.process_index:usable:accelerator.num_processes]
        if hasattr(batcher, "plan"):  # e.g. StreamingPrefixBatcher: it prepares upcoming batches together
            batcher.plan([train_idx[pos] for pos in batches])
        module.train()
        for b, pos in enumerate(batches):
            if b < state.batch_in_epoch:  # resumed mid-epoch: these batches are done
                continue
            idx = train_idx[pos]
            inputs = [t.to(accelerator.device) for t in batcher.inputs(idx)]
            with torch.autocast(accelerator.device.type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype is not None):
                logits = module(*inputs)
            tgt = targets_t[torch.as_tensor(pos)].to(logits.device)
            if loss_fn is not None:
                value = loss_fn(logits, tgt)
            else:  # the registered loss (superalign.training.losses.register_loss)
                value = compute_loss(loss, logits, tgt, state.step, total)
            if not torch.isfinite(value):
                raise TrainingError(
                    "lr", f"loss became {value.item()} at step {state.step} of '{desc}'",
                    f"lower the learning rate (now {cfg.learning_rate():g}) or use mixed_precision: no",
                )
            boundary = (b + 1) % cfg.grad_accum == 0 or b + 1 == len(batches)
            # Gradient accumulation: accelerate's no_sync skips the data-parallel all-reduce between
            # boundaries. The boundary itself stays explicit (not ``accelerator.accumulate``), since
            # accumulate() counts micro-batches itself and learns an epoch's end from a prepared
            # dataloader, neither of which survives resuming mid-epoch from an in-stage checkpoint.
            with contextlib.nullcontext() if boundary else accelerator.no_sync(module):
                accelerator.backward(scaler.scale(value / cfg.grad_accum))
            state.losses.append(float(value.detach()))
            state.batch_in_epoch = b + 1
            if boundary:
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                bar.update(1)
                if cfg.eval_every and state.step % cfg.eval_every == 0:
                    module.eval()
                    stop = evaluate(epoch)
                    module.train()
                if checkpoint_dir is not None and state.step % cfg.checkpoint_every == 0:
                    state.evals_since_best = evals_since_best
                    state.save(checkpoint_dir, raw_module, optimizer, scheduler, epoch)
                if stop:
                    break
        if stop:
            break
        state.batch_in_epoch = 0
        module.eval()
        if not cfg.eval_every:
            stop = evaluate(epoch)
        if checkpoint_dir is not None:
            state.evals_since_best = evals_since_best
            state.save(checkpoint_dir, raw_module, optimizer, scheduler, epoch + 1)
        if stop:
            break
    bar.close()
    module.eval()
    if early_stopping != "none" and state.best is not None:
        final = state.best
        raw_module.load_state_dict(state.best, strict=False)
    else:
        final = trainable_state(raw_module)
        state.selected = {"step": state.step, "epoch": cfg.epochs - 1, "criterion": "last"}
    return FitResult(state=final, curve=state.curve, steps=state.step, selected=state.selected)


@torch.inference_mode()
def predict(module: nn.Module, batcher: Batcher, idx: np.ndarray, batch_size: int,
            device: torch.device | str = "cpu", desc: str | None = None,
            max_tokens: int | None = INFERENCE_TOKENS) -> np.ndarray:
    """Class probabilities (len(idx), K) in the order of ``idx``.

    Token inputs go in length-sorted batches of at least ``batch_size`` rows, more while a padded
    batch stays within ``max_tokens`` tokens (see :func:`~superalign.models.classifier.length_batches`).
    """
    was_training = module.training
    module.eval()
    idx = np.asarray(idx)
    lengths = batcher.lengths()
    if lengths is not None:
        batches = list(length_batches(lengths[idx], batch_size, max_tokens))
    else:
        batches = [np.arange(s, min(s + batch_size, len(idx))) for s in range(0, len(idx), batch_size)]
    out: np.ndarray | None = None
    for pos in tqdm(batches, desc=desc, leave=False, disable=desc is None):
        inputs = [t.to(device) for t in batcher.inputs(idx[pos])]
        probs = torch.softmax(module(*inputs).float(), -1).cpu().numpy()
        if out is None:
            out = np.zeros((len(idx), probs.shape[1]), dtype=np.float32)
        out[pos] = probs
    module.train(was_training)
    assert out is not None
    return out


# --- in-stage checkpoints ----------------------------------------------------------------------

@dataclass
class _State:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    losses: list[float] = field(default_factory=list)
    curve: list[dict] = field(default_factory=list)
    best: dict[str, torch.Tensor] | None = None
    best_score: float = -1.0
    evals_since_best: int = 0
    selected: dict = field(default_factory=dict)

    def running_loss(self) -> float:
        recent = self.losses[-50:]
        return float(np.mean(recent)) if recent else float("nan")

    def save(self, d: Path, module: nn.Module, optimizer, scheduler, epoch: int) -> None:
        """Trainable weights (safetensors) + optimizer/scheduler/RNG (torch.save) + JSON, then a rename.

        These stay the project's own checkpoints rather than ``accelerator.save_state``: that writes
        every file in place into its target (a kill mid-write leaves a torn checkpoint) and saves the
        whole model, frozen weights included (~1 GB per checkpoint for a last-block run of Gemma-3-270M
        against ~25 MB of trainable weights here); the early-stopping state has to travel too.
        """
        from safetensors.torch import save_file

        d.mkdir(parents=True, exist_ok=True)
        tmp = d / ".ckpt.tmp"
        tmp.mkdir(exist_ok=True)
        save_file(trainable_state(module), str(tmp / "trainable.safetensors"))
        if self.best is not None:
            save_file(self.best, str(tmp / "best.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": torch.get_rng_state()}, tmp / "optim.pt")
        meta = {"step": self.step, "epoch": epoch, "batch_in_epoch": self.batch_in_epoch,
                "losses": self.losses[-200:], "curve": self.curve, "best_score": self.best_score,
                "evals_since_best": self.evals_since_best, "selected": self.selected}
        (tmp / "state.json").write_text(json.dumps(meta))
        final = d / "ckpt"
        old = d / ".ckpt.old"
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        if old.exists():
            shutil.rmtree(old)

    def load(self, d: Path, module: nn.Module, optimizer, scheduler) -> None:
        from safetensors.torch import load_file

        ck = d / "ckpt"
        if not (ck / "state.json").exists():
            return
        meta = json.loads((ck / "state.json").read_text())
        module.load_state_dict(load_file(str(ck / "trainable.safetensors")), strict=False)
        extra = torch.load(ck / "optim.pt", weights_only=True)  # a file this project wrote
        optimizer.load_state_dict(extra["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
        torch.set_rng_state(extra["rng"])
        if (ck / "best.safetensors").exists():
            self.best = load_file(str(ck / "best.safetensors"))
        self.step, self.epoch, self.batch_in_epoch = meta["step"], meta["epoch"], meta["batch_in_epoch"]
        self.losses, self.curve = meta["losses"], meta["curve"]
        self.best_score, self.evals_since_best, self.selected = meta["best_score"], meta["evals_since_best"], meta["selected"]
        log.info("resumed '%s' from step %d", d.name, self.step)
