"""The cached stages of a weak-to-strong run: features, training (+ predictions), labels.

Each function derives its stage key from everything it depends on and lets the
:class:`~superalign.store.Store` decide whether to compute. Arrays are saved as ``.npy`` (read
back with ``allow_pickle=False``) and weights as safetensors.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from superalign.data.task import TaskData
from superalign.errors import ConfigError
from superalign.models.cache import ModelCache
from superalign.models.classifier import Classifier, Encoded, encode, hidden_size, resolve_pooling
from superalign.models.features import extract_features
from superalign.models.loading import load_backbone, model_identity
from superalign.store.store import Stage, Store, stage_key
from superalign.training.config import LossConfig, TrainConfig
from superalign.training.losses import get_loss
from superalign.training.prefix import (
    PrefixBatcher,
    PrefixClassifier,
    PrefixStates,
    StreamingPrefixBatcher,
    check_equivalence,
    compute_prefix_states,
)
from superalign.training.regimes import (
    build_classifier,
    copy_for_regime,
    count_trainable,
    probe_head,
    transformer_blocks,
)
from superalign.training.trainer import FeatureBatcher, TokenBatcher, ValSet, fit, predict
from superalign.w2s.config import ModelConfig

log = logging.getLogger("superalign.w2s")

PREFIX_CACHE_MAX_BYTES = 6 * 2**30


def idx_hash(idx: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(idx, dtype=np.int64).tobytes()).hexdigest()[:16]


def array_hash(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float32).tobytes()).hexdigest()[:16]


def save_array(path: Path, a: np.ndarray) -> None:
    np.save(path, a, allow_pickle=False)


def load_array(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


@dataclass
class ModelPool:
    """Loads each backbone once (a :class:`~superalign.models.cache.ModelCache`, unbounded unless
    given one); training works on deep copies."""

    cache: ModelCache = field(default_factory=lambda: ModelCache(None, name="w2s"))

    def get(self, cfg: ModelConfig):
        def load():
            log.info("loading model %s", cfg.model)
            model, tok, info = load_backbone(cfg.model, trust_remote_code=cfg.trust_remote_code)
            model.requires_grad_(False)  # the pristine copy is never trained; regimes copy what they train
            return model, tok, info

        # the key of superalign.models.cache.backbone(frozen=True), so a pool over a shared cache shares its models
        return self.cache.get(("backbone", cfg.model, True, cfg.trust_remote_code), load)


@dataclass
class Labels:
    """Training targets for a split: soft probabilities, where they came from (stage key or 'gt')."""

    idx: np.ndarray  # example indices into the task
    probs: np.ndarray  # (n, K)
    key: str  # 'gt' or the labels stage key

    def targets(self, kind: str) -> np.ndarray:
        if kind == "soft":
            return self.probs
        return np.eye(self.probs.shape[1], dtype=np.float32)[self.probs.argmax(1)]

    def subset(self, positions: np.ndarray, tag: str) -> "Labels":
        return Labels(self.idx[positions], self.probs[positions], f"{self.key}/{tag}")


def ground_truth(task: TaskData, idx: np.ndarray) -> Labels:
    probs = np.eye(task.num_classes, dtype=np.float32)[task.labels[idx]]
    return Labels(np.asarray(idx), probs, f"gt:{idx_hash(idx)}")


class Stages:
    """Stage functions bound to one task, store and model pool."""

    def __init__(self, store: Store, task: TaskData, pool: ModelPool | None = None,
                 generative_idx: np.ndarray | None = None):
        self.store, self.task, self.pool = store, task, pool or ModelPool()
        self.task_fp = task.fingerprint()
        # examples whose texts (never labels) generative finetuning reads; default: every example
        self.generative_idx = np.arange(len(task)) if generative_idx is None else np.sort(np.asarray(generative_idx))
        self._adapted: dict[str, tuple] = {}
        self._features: dict[str, np.ndarray] = {}
        self._encoded: dict[str, Encoded] = {}
        self._prefix: dict[str, PrefixStates] = {}

    # -- backbones ---------------------------------------------------------------------------
    def _generative_texts(self, cfg: ModelConfig) -> list[str]:
        from superalign.training.generative import select_texts

        gen = cfg.generative_finetune
        assert gen is not None
        inputs = self.task.inputs()
        return select_texts([inputs[i] for i in self.generative_idx], gen.max_texts, gen.seed)

    def identity(self, cfg: ModelConfig) -> dict[str, Any]:
        """What identifies ``cfg``'s backbone weights in a stage key (plus the generative stage, if any)."""
        ident = model_identity(cfg.model)
        if cfg.generative_finetune is None:
            return ident
        from superalign.training.generative import generative_key

        return {**ident, "generative": generative_key(ident, cfg.generative_finetune, self._generative_texts(cfg))}

    def backbone(self, cfg: ModelConfig):
        """(backbone, tokenizer, info): the pool's pristine copy, or its generatively fine-tuned version."""
        model, tok, info = self.pool.get(cfg)
        gen = cfg.generative_finetune
        if gen is None:
            return model, tok, info
        key = self.identity(cfg)["generative"]
        if key not in self._adapted:
            from superalign.training.generative import adapted_backbone

            adapted, _ = adapted_backbone(
                self.store, model_name=cfg.model, identity=model_identity(cfg.model), backbone=model, tokenizer=tok,
                arch=info.arch, texts=self._generative_texts(cfg), cfg=gen, trust_remote_code=cfg.trust_remote_code,
                device=self.device)
            self._adapted[key] = (adapted.cpu(), tok, info)
        return self._adapted[key]

    # -- features ----------------------------------------------------------------------------
    def features(self, cfg: ModelConfig) -> np.ndarray:
        """Pooled features of every example of the task for ``cfg.model`` (cached once per model)."""
        spec_pool = cfg.pooling
        inputs = {"model": self.identity(cfg), "task": self.task_fp, "pooling": spec_pool,
                  "layer": cfg.layer, "max_length": cfg.max_length}

        def compute(tmp: Path) -> dict:
            backbone, tok, info = self.backbone(cfg)
            pooling = resolve_pooling(cfg.pooling, info.arch)
            feats = extract_features(backbone, tok, self.task.inputs(), pooling=pooling, layers=[cfg.layer],
                                     max_length=cfg.max_length, batch_size=cfg.features_batch_size,
                                     desc=f"features {cfg.model}", device=self.device)[cfg.layer]
            save_array(tmp / "features.npy", feats)
            return {"shape": list(feats.shape), "pooling": pooling}

        key = stage_key("features", inputs)
        if key not in self._features:
            stage = self.store.run("features", inputs, compute, label=f"features {cfg.model}")
            self._features[key] = load_array(stage.file("features.npy"))
        return self._features[key]

    # -- training ----------------------------------------------------------------------------
    def train(
        self,
        cfg: ModelConfig,
        labels: Labels,
        *,
        target_kind: str = "soft",
        loss: LossConfig | None = None,
        early_stopping: str = "none",
        val: Labels | None = None,
        seed: int = 0,
        predict_on: dict[str, np.ndarray],
        label: str,
        test_idx: np.ndarray | None = None,
    ) -> "Trained":
        """Train ``cfg.model`` on ``labels`` and predict class probabilities on ``predict_on``.

        With ``test_idx``, every curve point also carries ``test_acc``: ground-truth accuracy on those
        examples at that step (a measurement only; training and early stopping never see it).
        """
        loss = loss or LossConfig()
        train_cfg = cfg.train_config()
        val_gt = self.task.labels[val.idx] if val is not None else None
        inputs: dict[str, Any] = {
            "model": self.identity(cfg), "train": train_cfg.model_dump(), "task": self.task_fp,
            "train_idx": idx_hash(labels.idx), "targets": labels.key, "target_kind": target_kind,
            "loss": loss.model_dump() if loss.name != "xent" else "xent", "early_stopping": early_stopping,
            "val": None if val is None else {"idx": idx_hash(val.idx), "weak": val.key}, "seed": seed,
            "predict": {k: idx_hash(v) for k, v in sorted(predict_on.items())},
            **({"loss_version": v} if (v := get_loss(loss.name).version) > 1 else {}),
        }
        if labels.key.startswith("gt:") is False:
            inputs["targets_hash"] = array_hash(labels.probs)
        if test_idx is not None:
            inputs["test_curve"] = idx_hash(test_idx)

        def compute(tmp: Path) -> dict:
            scratch = self.store.scratch("train", stage_key("train", inputs))
            module, batcher, device, info = self._module(cfg, train_cfg, labels, seed)
            val_set = None
            if val is not None and len(val.idx):
                val_set = ValSet(val.idx, val_gt, None if val.key.startswith("gt:") else val.probs.argmax(1))
            extra_eval = None
            if test_idx is not None:
                test_gt = self.task.labels[test_idx]

                def extra_eval(m) -> dict[str, float]:
                    probs = predict(m, batcher, test_idx, train_cfg.batch_size * 2, device)
                    return {"test_acc": float((probs.argmax(1) == test_gt).mean())}

            result = fit(module, batcher, labels.idx, labels.targets(target_kind), train_cfg, loss=loss, seed=seed,
                         val=val_set, early_stopping=early_stopping,
                         checkpoint_dir=None if train_cfg.uses_features() else scratch, desc=label,
                         extra_eval=extra_eval)
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in result.state.items()}, str(tmp / "trainable.safetensors"))
            for split, idx in predict_on.items():
                save_array(tmp / f"probs_{split}.npy",
                           predict(module, batcher, idx, train_cfg.batch_size * 2, device))
            trainable, total = count_trainable(module)
            return {"curve": result.curve, "steps": result.steps, "selected": result.selected,
                    "trainable_params": trainable, "total_params": total, "n_train": int(len(labels.idx))}

        stage = self.store.run("train", inputs, compute, label=label)
        return Trained(stage, {k: load_array(stage.file(f"probs_{k}.npy")) for k in predict_on})

    @property
    def device(self) -> torch.device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def _module(self, cfg: ModelConfig, train_cfg: TrainConfig, labels: Labels, seed: int):
        device = self.device
        if train_cfg.uses_features():
            feats = torch.from_numpy(self.features(cfg))
            head = probe_head(feats[torch.as_tensor(labels.idx)], self.task.num_classes)
            return head, FeatureBatcher(feats), device, None
        backbone, tok, info = self.backbone(cfg)
        torch.manual_seed(seed)
        clf = build_classifier(copy_for_regime(backbone, train_cfg), self.task.num_classes, train_cfg, info.arch)
        encoded = self.encoded(cfg, tok)
        batcher = TokenBatcher(encoded, tok.pad_token_id)
        module: torch.nn.Module = clf
        if train_cfg.regime == "last_k":
            start = len(transformer_blocks(backbone)) - train_cfg.last_k
            if start >= 1:
                module = PrefixClassifier(clf, start)
                if train_cfg.prefix_cache:  # frozen blocks run once, states stored (a cached stage)
                    batcher = PrefixBatcher(encoded, tok.pad_token_id, self.prefix(cfg, start))
                else:  # frozen blocks rerun every epoch in large batches, nothing stored
                    batcher = StreamingPrefixBatcher(backbone, encoded, tok.pad_token_id, start,
                                                     batch_size=cfg.features_batch_size)
                reference = Classifier(backbone, self.task.num_classes, pooling=clf.pooling).to(device)
                module.to(device)
                check_equivalence(reference, module, batcher, labels.idx[:4])
        module.to(device)
        return module, batcher, device, info

    def encoded(self, cfg: ModelConfig, tok) -> Encoded:
        key = f"{cfg.model}:{cfg.max_length}"
        if key not in self._encoded:
            self._encoded[key] = encode(tok, self.task.inputs(), cfg.max_length)
        return self._encoded[key]

    def prefix(self, cfg: ModelConfig, start: int) -> PrefixStates:
        """Hidden states at the input of block ``start`` for every example (cached stage)."""
        inputs = {"model": self.identity(cfg), "task": self.task_fp, "start": start,
                  "max_length": cfg.max_length}

        def compute(tmp: Path) -> dict:
            backbone, tok, _ = self.backbone(cfg)
            encoded = self.encoded(cfg, tok)
            need = int(encoded.lengths().sum()) * hidden_size(backbone.config) * 4
            if need > PREFIX_CACHE_MAX_BYTES:
                raise ConfigError("prefix_cache", f"the cached states would take {need / 2**30:.1f} GiB",
                                  "set prefix_cache: false, lower max_length, or use fewer examples (max_examples)")
            states = compute_prefix_states(backbone, encoded, tok.pad_token_id, start, cfg.features_batch_size,
                                           desc=f"prefix states {cfg.model}", device=self.device)
            save_array(tmp / "flat.npy", states.flat)
            save_array(tmp / "offsets.npy", states.offsets)
            return {"tokens": int(states.offsets[-1]), "dim": int(states.flat.shape[1])}

        key = stage_key("prefix", inputs)
        if key not in self._prefix:
            stage = self.store.run("prefix", inputs, compute, label=f"prefix states {cfg.model} @block{start}")
            self._prefix[key] = PrefixStates(np.load(stage.file("flat.npy"), mmap_mode="r", allow_pickle=False),
                                             load_array(stage.file("offsets.npy")))
        return self._prefix[key]

    # -- labels ------------------------------------------------------------------------------
    def labels(self, parts: list[tuple[np.ndarray, np.ndarray]], sources: list[str], label: str) -> Labels:
        """Weak labels (soft probabilities; hard ones are derived) from labelling passes.

        ``parts`` are (example indices, probabilities) from one or more trained models (several
        when cross-fitted); they are merged in the order of the example indices.
        """
        idx = np.concatenate([p[0] for p in parts])
        probs = np.concatenate([p[1] for p in parts])
        order = np.argsort(idx, kind="stable")
        idx, probs = idx[order], probs[order]
        inputs = {"from": sources, "idx": idx_hash(idx)}

        def compute(tmp: Path) -> dict:
            save_array(tmp / "soft.npy", probs.astype(np.float32))
            save_array(tmp / "hard.npy", probs.argmax(1).astype(np.int64))
            save_array(tmp / "idx.npy", idx.astype(np.int64))
            gt = self.task.labels[idx]
            return {"n": int(len(idx)), "accuracy_vs_gt": float((probs.argmax(1) == gt).mean()),
                    "mean_confidence": float(probs.max(1).mean())}

        stage = self.store.run("labels", inputs, compute, label=label)
        return Labels(load_array(stage.file("idx.npy")), load_array(stage.file("soft.npy")), stage.key)


@dataclass
class Trained:
    stage: Stage
    probs: dict[str, np.ndarray]

    @property
    def curve(self) -> list[dict]:
        return self.stage.meta["result"]["curve"]
