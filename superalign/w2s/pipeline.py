"""The weak-to-strong pipeline: weak supervisor → weak labels → strong student (per method) and
strong ceiling → evaluation on held-out test → PGR with bootstrap CIs, aggregated over seeds.

Use from Python::

    from superalign.w2s import W2SConfig, run_w2s
    result = run_w2s(W2SConfig.from_yaml("configs/w2s_default.yaml"), out_dir="runs/demo")
    print(result.table())
"""

from __future__ import annotations

import fcntl
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from superalign import metrics
from superalign.data.registry import load_task
from superalign.data.splits import Splits, make_splits
from superalign.data.task import TaskData
from superalign.io import write_json_atomic, write_text_atomic
from superalign.models.cache import model_scope
from superalign.models.loading import model_notes
from superalign.store.store import Store, default_store_root
from superalign.w2s import methods as w2s_methods
from superalign.w2s.config import MethodConfig, ModelConfig, W2SConfig, check_generative
from superalign.w2s.stages import Labels, ModelPool, Stages, ground_truth

log = logging.getLogger("superalign.w2s")


@dataclass
class SeedOutcome:
    """Test-set probabilities of every model trained for one seed."""

    weak: np.ndarray
    ceilings: dict[str, np.ndarray] = field(default_factory=dict)  # by method name
    students: dict[str, np.ndarray] = field(default_factory=dict)
    intermediates: dict[str, list[np.ndarray]] = field(default_factory=dict)
    weak_label_acc: float = 0.0
    curves: dict[str, list[dict]] = field(default_factory=dict)
    supervisors: dict[str, np.ndarray] = field(default_factory=dict)  # test probs of what labelled each student
    ensembles: dict[str, np.ndarray] = field(default_factory=dict)  # weak-ensemble test probs, by method
    filters: dict[str, dict] = field(default_factory=dict)  # label-filter statistics, by method


@dataclass
class W2SResult:
    config: W2SConfig
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    curves: dict[str, list[dict]]
    out_dir: Path | None = None

    def table(self) -> str:
        from superalign.report.tables import results_table

        return results_table(self.rows, self.summary)

    def as_dict(self) -> dict[str, Any]:
        return {"config": self.config.model_dump(mode="json"), "rows": self.rows, "summary": self.summary,
                "curves": self.curves}


def run_w2s(config: W2SConfig, *, out_dir: str | Path | None = None, store: Store | None = None,
            pool: ModelPool | None = None) -> W2SResult:
    """Run (or resume) a W2S experiment; every stage is cached in ``store``.

    Models loaded for the run (prompting baselines, and the stages' models unless ``pool`` is passed)
    live in one :func:`~superalign.models.cache.model_scope` and are released when it returns.
    """
    with model_scope(name="w2s"):
        return _run_w2s(config, out_dir=out_dir, store=store, pool=pool)


def _run_w2s(config: W2SConfig, *, out_dir: str | Path | None, store: Store | None,
             pool: ModelPool | None) -> W2SResult:
    from superalign.models.loading import check_names

    check_names(config)  # every model and task name, before any stage runs
    t0 = time.perf_counter()
    check_generative(config)
    store = store or Store(default_store_root())
    task = load_task(config.task, max_examples=config.max_examples, seed=config.split_seed, **config.task_options)
    splits = make_splits(task.labels, config.splits.model_dump(), config.split_seed, task.name)
    # generative finetuning reads the texts (never the labels) of B, test and val
    stages = Stages(store, task, pool,
                    generative_idx=np.concatenate([splits.strong_train, splits.test, splits.val]))
    outcomes = [_run_seed(config, stages, task, splits, seed) for seed in config.seeds]
    prompt_rows = _prompting(config, store, task, splits)
    rows, summary = _evaluate(config, task, splits, outcomes)
    rows += prompt_rows
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    summary["stages"] = store.summary()
    summary["notes"] = model_notes([config.weak.model, config.strong.model,
                                    *(b.model for m in config.methods for b in m.bootstrap),
                                    *(p.model for p in config.prompting)])
    summary["task"] = {"name": task.name, "n": len(task), "classes": task.label_names,
                       "splits": {k: int(len(v)) for k, v in splits.as_dict().items()}}
    curves = {f"seed{o_seed}/{k}": v for o_seed, o in zip(config.seeds, outcomes) for k, v in o.curves.items()}
    result = W2SResult(config, rows, summary, curves)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        # each file atomically, and the three under one lock, so that two runs into one directory leave
        # one run's config, results and table together (never a mix, never half a file)
        with open(out / ".write.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            write_text_atomic(out / "config.yaml", config.to_yaml())
            write_json_atomic(out / "results.json", result.as_dict())
            write_text_atomic(out / "table.txt", result.table() + "\n")
        result.out_dir = out
    if config.tracking is not None:
        from superalign.tracking import log_w2s_run

        log_w2s_run(result, result.out_dir, tracking_uri=config.tracking.uri, experiment=config.tracking.experiment)
    log.info(store.summary(detail=True))
    return result


# -- one seed -----------------------------------------------------------------------------------

def _run_seed(cfg: W2SConfig, stages: Stages, task: TaskData, splits: Splits, seed: int) -> SeedOutcome:
    A, B, V, T = splits.weak_train, splits.strong_train, splits.val, splits.test
    predict_labelled = {"strong_train": B, "test": T, **({"val": V} if len(V) else {})}
    curve_on = T if cfg.test_curve else None
    weak = stages.train(cfg.weak, ground_truth(task, A), seed=seed, predict_on=predict_labelled,
                        label=f"weak {cfg.weak.model} s{seed}", test_idx=curve_on)
    weak_labels = stages.labels([(B, weak.probs["strong_train"])], [weak.stage.key], f"weak labels s{seed}")
    weak_val = stages.labels([(V, weak.probs["val"])], [weak.stage.key], f"weak val labels s{seed}") if len(V) else None
    out = SeedOutcome(weak=weak.probs["test"], weak_label_acc=float((weak_labels.probs.argmax(1) == task.labels[B]).mean()))
    out.curves["weak"] = weak.curve
    for method in cfg.methods:
        student_cfg = cfg.student_config(method)
        ceiling = stages.train(student_cfg, ground_truth(task, B), seed=seed, predict_on={"test": T},
                               label=f"ceiling {student_cfg.model}/{student_cfg.regime} s{seed}", test_idx=curve_on)
        out.ceilings[method.name] = ceiling.probs["test"]
        out.curves[f"ceiling/{student_cfg.regime}"] = ceiling.curve
        labels, val_labels, supervisor = weak_labels, weak_val, weak.probs["test"]
        if method.weak_ensemble:
            labels, val_labels, supervisor = _weak_ensemble(stages, method, weak, A, B, V, T, seed, curve_on)
            out.ensembles[method.name] = supervisor
        for depth, mid_cfg in enumerate(method.bootstrap):
            labels, val_labels, supervisor = _bootstrap_step(stages, mid_cfg, method, labels, val_labels, T, seed,
                                                             depth)
            out.intermediates.setdefault(method.name, []).append(supervisor)
        out.supervisors[method.name] = supervisor
        if method.label_filter is not None:
            labels, out.filters[method.name] = _filter(stages, task, student_cfg, method, labels)
        val = ground_truth(task, V) if method.early_stopping == "oracle" else val_labels
        student = stages.train(
            student_cfg, labels, target_kind=method.labels, loss=method.loss, early_stopping=method.early_stopping,
            val=val, seed=seed, predict_on={"test": T}, label=f"student {method.name} s{seed}", test_idx=curve_on)
        out.students[method.name] = student.probs["test"]
        out.curves[f"student/{method.name}"] = student.curve
    return out


def _weak_ensemble(stages: Stages, method: MethodConfig, weak, A: np.ndarray, B: np.ndarray, V: np.ndarray,
                   T: np.ndarray, seed: int, curve_on: np.ndarray | None):
    """Train the method's extra weak supervisors like ``weak`` on A; labels = the mean of all of them."""
    task = stages.task
    predict_labelled = {"strong_train": B, "test": T, **({"val": V} if len(V) else {})}
    members = [weak]
    for i, m_cfg in enumerate(method.weak_ensemble):
        members.append(stages.train(m_cfg, ground_truth(task, A), seed=seed, predict_on=predict_labelled,
                                    label=f"weak-ensemble[{i}] {m_cfg.model} s{seed}", test_idx=curve_on))
    keys = [t.stage.key for t in members]
    labels = stages.labels([(B, w2s_methods.ensemble_labels([t.probs["strong_train"] for t in members]))], keys,
                           f"weak-ensemble labels {method.name} s{seed}")
    val_labels = None
    if len(V):
        val_labels = stages.labels([(V, w2s_methods.ensemble_labels([t.probs["val"] for t in members]))], keys,
                                   f"weak-ensemble val labels {method.name} s{seed}")
    return labels, val_labels, w2s_methods.ensemble_labels([t.probs["test"] for t in members])


def _filter(stages: Stages, task: TaskData, student_cfg: ModelConfig, method: MethodConfig, labels: Labels):
    """Drop the weak labels the method's ``label_filter`` selects; return (kept labels, statistics)."""
    f = method.label_filter
    assert f is not None
    feats = stages.features(student_cfg)[labels.idx] if f.name == "knn_consistency" else None
    keep, _ = w2s_methods.filter_labels(f.name, labels.probs, f.drop_frac, features=feats, k=f.k)
    dropped = np.setdiff1d(np.arange(len(labels.idx)), keep)
    correct = labels.probs.argmax(1) == task.labels[labels.idx]
    tag = f"filter:{f.name}:k{f.k}:d{f.drop_frac}"
    stats = {"name": f.name, "n_before": int(len(labels.idx)), "n_kept": int(len(keep)), "n_dropped": int(len(dropped)),
             "label_acc_before": float(correct.mean()),
             "label_acc_kept": float(correct[keep].mean()) if len(keep) else float("nan"),
             "label_acc_dropped": float(correct[dropped].mean()) if len(dropped) else float("nan")}
    return labels.subset(keep, tag), stats


def _bootstrap_step(stages: Stages, mid_cfg: ModelConfig, method: MethodConfig, labels: Labels,
                    val_labels: Labels | None, T: np.ndarray, seed: int, depth: int):
    """Train an intermediate model on the current labels and relabel split B for the next model.

    Cross-fitted: B is cut in two folds; the model trained on one fold labels the other, so
    every new label is a prediction on an example the labeller never trained on.
    """
    rng = np.random.default_rng([seed, depth, 7])
    perm = rng.permutation(len(labels.idx))
    folds = [np.sort(perm[: len(perm) // 2]), np.sort(perm[len(perm) // 2:])]
    parts, val_parts, tests, keys = [], [], [], []
    for f in (0, 1):
        train_pos, other_pos = folds[f], folds[1 - f]
        predict_on = {"other": labels.idx[other_pos], "test": T}
        if val_labels is not None:
            predict_on["val"] = val_labels.idx
        mid = stages.train(mid_cfg, labels.subset(train_pos, f"fold{f}"), target_kind=method.labels,
                           loss=method.loss, seed=seed, predict_on=predict_on,
                           label=f"bootstrap {mid_cfg.model} fold{f} {method.name} s{seed}")
        parts.append((labels.idx[other_pos], mid.probs["other"]))
        tests.append(mid.probs["test"])
        keys.append(mid.stage.key)
        if val_labels is not None:
            val_parts.append(mid.probs["val"])
    new = stages.labels(parts, keys, f"bootstrap labels {mid_cfg.model} {method.name} s{seed}")
    new_val = None
    if val_labels is not None:
        new_val = stages.labels([(val_labels.idx, np.mean(val_parts, axis=0))], keys,
                                f"bootstrap val labels {mid_cfg.model} s{seed}")
    return new, new_val, np.mean(tests, axis=0)


# -- evaluation ---------------------------------------------------------------------------------

def _correct(probs: list[np.ndarray], labels: np.ndarray) -> np.ndarray:
    return np.stack([(p.argmax(1) == labels) for p in probs]).astype(float)


def _evaluate(cfg: W2SConfig, task: TaskData, splits: Splits, outcomes: list[SeedOutcome]):
    y = task.labels[splits.test]
    weak_c = _correct([o.weak for o in outcomes], y)
    weak_acc = metrics.mean_ci(weak_c, cfg.n_boot)
    summary: dict[str, Any] = {
        "weak": {"model": cfg.weak.model, "accuracy": weak_acc.as_dict(),
                 "ece": float(np.mean([metrics.expected_calibration_error(o.weak, y) for o in outcomes])),
                 "label_accuracy_on_B": float(np.mean([o.weak_label_acc for o in outcomes])),
                 "curve": w2s_methods.mean_curve([o.curves.get("weak", []) for o in outcomes])},
        "strong": cfg.strong.model, "seeds": cfg.seeds, "n_test": int(len(y)),
    }
    rows = []
    for method in cfg.methods:
        ceil = [o.ceilings[method.name] for o in outcomes]
        stud = [o.students[method.name] for o in outcomes]
        res = metrics.pgr_bootstrap(weak_c, _correct(stud, y), _correct(ceil, y), n_boot=cfg.n_boot,
                                    min_gap=cfg.min_gap)
        rows.append({
            "kind": "w2s", "method": method.name, "regime": cfg.student_config(method).regime,
            "weak": res.weak.as_dict(), "w2s": res.w2s.as_dict(), "ceiling": res.ceiling.as_dict(),
            "pgr": res.pgr.as_dict(), "gap": res.gap.as_dict(), "pgr_per_seed": res.per_seed,
            "pgr_reliable": res.reliable, "pgr_note": res.reason,
            "agreement": float(np.mean([metrics.agreement(s, o.weak) for s, o in zip(stud, outcomes)])),
            "ece_w2s": float(np.mean([metrics.expected_calibration_error(s, y) for s in stud])),
            "ece_ceiling": float(np.mean([metrics.expected_calibration_error(c, y) for c in ceil])),
            "intermediates": [metrics.mean_ci(_correct([o.intermediates[method.name][d] for o in outcomes], y),
                                              cfg.n_boot).as_dict()
                              for d in range(len(method.bootstrap))],
        })
        row = rows[-1]
        if method.weak_ensemble:
            row["weak_ensemble"] = metrics.mean_ci(_correct([o.ensembles[method.name] for o in outcomes], y),
                                                   cfg.n_boot).as_dict()
        # Charikar et al. (2024): the gain over the supervisor whose labels the student trained on
        row["misfit_supervisor"] = ("bootstrap" if method.bootstrap else
                                    "weak_ensemble" if method.weak_ensemble else "weak")
        row.update(w2s_methods.misfit_gain(stud, [o.supervisors[method.name] for o in outcomes], y,
                                           n_boot=cfg.n_boot, tolerance=cfg.misfit_tolerance))
        if method.label_filter is not None:
            per_seed = [o.filters[method.name] for o in outcomes]
            row["label_filter"] = {"name": method.label_filter.name, "k": method.label_filter.k,
                                   "drop_frac": method.label_filter.drop_frac,
                                   **{k: float(np.mean([p[k] for p in per_seed]))
                                      for k in per_seed[0] if k != "name"}}
        row["curve"] = w2s_methods.mean_curve([o.curves.get(f"student/{method.name}", []) for o in outcomes])
        row["ceiling_curve"] = w2s_methods.mean_curve(
            [o.curves.get(f"ceiling/{cfg.student_config(method).regime}", []) for o in outcomes])
    return rows, summary


# -- prompting baselines ------------------------------------------------------------------------

def _prompting(cfg: W2SConfig, store: Store, task: TaskData, splits: Splits) -> list[dict]:
    from superalign.w2s.prompting import score_prompting

    rows = []
    for p in cfg.prompting:
        test = splits.test if p.max_test is None else splits.test[: p.max_test]
        for k in p.shots:
            probs = score_prompting(store, task, p, test, splits.weak_train, k, seed=cfg.split_seed)
            correct = (probs.argmax(1) == task.labels[test]).astype(float)
            rows.append({"kind": "prompt", "method": f"{k}-shot {p.model}", "model": p.model, "shots": k,
                         "accuracy": metrics.mean_ci(correct, cfg.n_boot).as_dict(), "n_test": int(len(test)),
                         "ece": metrics.expected_calibration_error(probs, task.labels[test])})
    return rows
