"""``superalign w2s reproduce``: the findings of Burns et al. (2023) as one study over the offline zoo.

A *study* (``superalign/configs/reproduce.yaml``) names tasks, (weak, strong) model pairs, a library
of methods, seeds and sizes, and which method plays which role in the findings. It is validated
whole before anything runs. The study expands into *blocks* (one task × one pair × some methods),
each run as a sweep (:func:`superalign.w2s.sweep.run_sweep`) over one shared store, so no stage is
computed twice and a killed study resumes where it stopped. The findings are then computed from
the stored test-set predictions by the pure functions of :mod:`superalign.w2s.findings` and written
as ``findings.json``, ``table.txt``, ``results.json`` and ``report.html``.

What runs where:

- the *main pair* (the largest strong/weak size ratio) on every task, with the naive, aux-conf,
  early-stopping and post-paper methods;
- every pair on the ``size_ratio_tasks`` with naive and aux-conf;
- the bootstrap method on ``bootstrap_task`` and the generative method on ``generative_task``
  (main pair);
- prompting baselines on one task; W2S reward modelling (naive and with generative finetuning).

Use from Python::

    from superalign.w2s.reproduce import StudyConfig, run_study
    study = StudyConfig.from_yaml("superalign/configs/reproduce.yaml")
    result = run_study(study, store_root="store", out_dir="runs/reproduce")
    print(result.table())
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from superalign.config import YamlConfig, config_error, deep_merge
from superalign.errors import ConfigError, SuperalignError
from superalign.io import write_json_atomic, write_text_atomic
from superalign.metrics import Interval
from superalign.w2s import findings as F
from superalign.w2s.config import MethodConfig, W2SConfig

log = logging.getLogger("superalign.w2s.reproduce")

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_STUDY = CONFIG_DIR / "reproduce.yaml"


# -- config ----------------------------------------------------------------------------------------

class StudyTask(BaseModel):
    """One task of the study and the W2S fields that differ for it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="registered task (superalign tasks list) or a local file")
    options: dict[str, Any] = Field(default_factory=dict, description="task_options")
    max_examples: int | None = Field(None, ge=8)
    max_length: int | None = Field(None, ge=4, description="tokens per text for every model on this task")
    splits: dict[str, int] = Field(default_factory=dict, description="overrides of the study's split sizes")
    overrides: dict[str, Any] = Field(default_factory=dict, description="any other W2S config fields")


class StudyPair(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weak: str
    strong: str


class Roles(BaseModel):
    """Which method of ``methods`` plays which part in the findings (names; null leaves a finding out)."""

    model_config = ConfigDict(extra="forbid")

    naive: str = "naive"
    aux_conf: str = "aux-conf"
    early_stop_weak: str | None = "early-stop-weak"
    early_stop_oracle: str | None = "early-stop-oracle"
    bootstrap: str | None = "bootstrap"
    generative: str | None = "generative"
    post_paper: list[str] = Field(default_factory=list, description="methods from after the paper")
    size_ratio_tasks: list[str] = Field(default_factory=list, description="tasks run with every pair")
    bootstrap_task: str | None = None
    generative_task: str | None = None


class StudyPrompting(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str
    model: str
    shots: list[int] = Field(default_factory=lambda: [0, 2])
    max_test: int | None = Field(None, ge=2)
    max_length: int = Field(128, ge=16)
    batch_size: int = Field(8, ge=1)


class StudyReward(BaseModel):
    """W2S reward modelling (``superalign.oversight.w2s_reward``): naive, and with generative finetuning."""

    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any] = Field(default_factory=dict, description="W2SRewardConfig fields")
    generative: Any = Field(True, description="generative_finetune of the strong PM for the second run "
                                              "(true: defaults, a mapping, or false to skip)")
    little: float = Field(0.5, gt=0, le=1, description="'recovers little of the gap' means PGR below this")


class StudyConfig(YamlConfig):
    """The study: tasks × pairs × methods over one store, and the findings' roles."""

    model_config = ConfigDict(extra="forbid")

    name: str = "reproduce"
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    n_boot: int = Field(1000, ge=100)
    min_gap: float = Field(0.05, ge=0, le=1)
    workers: int = Field(2, ge=1, description="cells run at once within a block (sweep worker processes)")
    base: dict[str, Any] = Field(default_factory=dict, description="W2S config fields every run starts from")
    tasks: list[StudyTask] = Field(..., min_length=1)
    pairs: list[StudyPair] = Field(..., min_length=1)
    methods: list[MethodConfig] = Field(..., min_length=1)
    roles: Roles = Field(default_factory=Roles)
    prompting: StudyPrompting | None = None
    reward: StudyReward | None = None
    quick: dict[str, Any] | None = Field(None, description="overrides applied by --quick (a smaller study)")

    @classmethod
    def load(cls, path: str | Path | None = None, *, quick: bool = False,
             overrides: dict[str, Any] | None = None) -> "StudyConfig":
        """Read a study YAML (default: the embedded one), apply its ``quick:`` block if asked, validate
        everything (:func:`validate_study`) before anything runs."""
        path = Path(path) if path is not None else DEFAULT_STUDY
        if not path.exists():
            raise ConfigError("study", f"file '{path}' does not exist", "give the path of a study YAML "
                              "(superalign w2s show-config reproduce prints the default)")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError("study", f"'{path}' is not a mapping of fields", "write 'field: value' lines")
        return cls.from_data(data, quick=quick, overrides=overrides, where=str(path))

    @classmethod
    def from_data(cls, data: dict[str, Any], *, quick: bool = False, overrides: dict[str, Any] | None = None,
                  where: str = "study") -> "StudyConfig":
        data = dict(data)
        if quick:
            q = data.get("quick")
            if not q:
                raise ConfigError("quick", "--quick given but the study has no 'quick:' block",
                                  "add a 'quick:' mapping of the fields to change, or drop --quick")
            data = _merge_quick(data, q)
        data = deep_merge(data, overrides or {})
        try:
            study = cls.model_validate(data)
        except ValidationError as exc:
            raise config_error(exc, where) from None
        validate_study(study)
        return study


def _merge_quick(data: dict[str, Any], quick: dict[str, Any]) -> dict[str, Any]:
    """``quick`` over ``data``: mappings merge, lists and scalars replace; ``tasks_splits`` shrinks every task."""
    quick = dict(quick)
    splits = quick.pop("tasks_splits", None)
    max_examples = quick.pop("tasks_max_examples", None)
    out = deep_merge(data, quick)
    if splits or max_examples:
        tasks = []
        for t in out.get("tasks", []):
            t = dict(t)
            if splits:
                t["splits"] = {**(t.get("splits") or {}), **splits}
            if max_examples:
                t["max_examples"] = max_examples
            tasks.append(t)
        out["tasks"] = tasks
    return out


# -- validation (before anything runs) ------------------------------------------------------------

def _size(name: str) -> float | None:
    from superalign.models.zoo import ZOO

    spec = ZOO.get(name)
    return spec.params_m if spec is not None else None


def validate_study(study: StudyConfig) -> None:
    """Every name and pair checked, every block's W2S config built: errors name the field and the fix."""
    from superalign.data.registry import TASKS, _load_builtin, check_task
    from superalign.models.loading import check_model

    _load_builtin()
    task_names = [t.name for t in study.tasks]
    for i, t in enumerate(study.tasks):
        if t.name not in TASKS and not Path(t.name).expanduser().is_file():
            raise ConfigError(f"tasks[{i}].name", f"'{t.name}' is not a registered task or a local file",
                              f"use one of {sorted(TASKS)} (superalign tasks list) or the path of a CSV/JSONL file")
        check_task(t.name, f"tasks[{i}].name")
    dup = sorted({n for n in task_names if task_names.count(n) > 1})
    if dup:
        raise ConfigError("tasks", f"task(s) {dup} listed twice", "list each task once")
    for i, p in enumerate(study.pairs):
        check_model(p.weak, f"pairs[{i}].weak")
        check_model(p.strong, f"pairs[{i}].strong")
        ws, ss = _size(p.weak), _size(p.strong)
        if ws is not None and ss is not None and ss <= ws:
            raise ConfigError(f"pairs[{i}].strong", f"'{p.strong}' ({ss:g}M) is not larger than the weak model "
                              f"'{p.weak}' ({ws:g}M)", "swap the two models or pick a larger strong model "
                              "(superalign models list shows the sizes)")
    names = [m.name for m in study.methods]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError("methods", f"method name(s) {dup} repeated", "give each method a unique name")
    r = study.roles
    for fld in ("naive", "aux_conf", "early_stop_weak", "early_stop_oracle", "bootstrap", "generative"):
        v = getattr(r, fld)
        if v is not None and v not in names:
            raise ConfigError(f"roles.{fld}", f"method '{v}' does not exist in methods",
                              f"use one of {names} or define a method named '{v}' under methods")
    for i, v in enumerate(r.post_paper):
        if v not in names:
            raise ConfigError(f"roles.post_paper[{i}]", f"method '{v}' does not exist in methods",
                              f"use one of {names} or define a method named '{v}' under methods")
    for fld in ("bootstrap_task", "generative_task"):
        v = getattr(r, fld)
        if v is not None and v not in task_names:
            raise ConfigError(f"roles.{fld}", f"task '{v}' is not one of the study's tasks {task_names}",
                              "add it under tasks or name one of them")
    for i, v in enumerate(r.size_ratio_tasks):
        if v not in task_names:
            raise ConfigError(f"roles.size_ratio_tasks[{i}]", f"task '{v}' is not one of the study's tasks "
                              f"{task_names}", "add it under tasks or name one of them")
    if study.prompting is not None:
        if study.prompting.task not in task_names:
            raise ConfigError("prompting.task", f"task '{study.prompting.task}' is not one of the study's tasks",
                              f"use one of {task_names}")
        check_model(study.prompting.model, "prompting.model")
    if study.reward is not None:
        reward_configs(study)  # validates the reward-model fields
    for block in plan(study):
        _ = block.config  # builds and validates every W2S config


# -- the plan --------------------------------------------------------------------------------------

@dataclass
class Block:
    """One task × one pair × some methods: a sweep over seeds and methods."""

    task: StudyTask
    pair: StudyPair
    methods: list[str]
    study: StudyConfig
    main: bool = False
    _config: W2SConfig | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        from superalign.w2s.sweep import _slug

        return f"{_slug(Path(self.task.name).stem)}__{_slug(self.pair.weak)}__{_slug(self.pair.strong)}"

    @property
    def config(self) -> W2SConfig:
        if self._config is None:
            self._config = block_config(self.study, self.task, self.pair, self.methods,
                                        where=f"block {self.task.name} {self.pair.weak}->{self.pair.strong}")
        return self._config


def main_pair(study: StudyConfig) -> StudyPair:
    """The pair with the largest strong/weak size ratio (the 'largest gap'); the first on ties or unknown sizes."""
    def ratio(p: StudyPair) -> float:
        ws, ss = _size(p.weak), _size(p.strong)
        return ss / ws if ws and ss else 0.0

    return max(study.pairs, key=ratio) if any(ratio(p) for p in study.pairs) else study.pairs[0]


def plan(study: StudyConfig) -> list[Block]:
    """The blocks the findings need, in run order (one per task × pair; methods merged)."""
    r = study.roles
    main = main_pair(study)
    main_methods = [r.naive, r.aux_conf, r.early_stop_weak, r.early_stop_oracle, *r.post_paper]
    blocks: dict[tuple[str, int], Block] = {}

    def add(task: StudyTask, pair: StudyPair, methods: list[str | None]) -> None:
        key = (task.name, study.pairs.index(pair))
        b = blocks.setdefault(key, Block(task, pair, [], study, main=pair is main))
        for m in methods:
            if m is not None and m not in b.methods:
                b.methods.append(m)

    for t in study.tasks:
        add(t, main, main_methods)
        if t.name == r.bootstrap_task:
            add(t, main, [r.bootstrap])
        if t.name == r.generative_task:
            add(t, main, [r.generative])
        if t.name in r.size_ratio_tasks:
            for p in study.pairs:
                if p is not main:
                    add(t, p, [r.naive, r.aux_conf])
    return list(blocks.values())


def block_config(study: StudyConfig, task: StudyTask, pair: StudyPair, methods: list[str], where: str) -> W2SConfig:
    """The W2S config of one block: the study's base, the task's fields, the pair, the methods."""
    data = deep_merge(study.base, task.overrides)
    for side, model in (("weak", pair.weak), ("strong", pair.strong)):
        m = dict(data.get(side) or {})
        m["model"] = model
        if task.max_length is not None:
            m["max_length"] = task.max_length
        data[side] = m
    by_name = {m.name: m for m in study.methods}
    chosen = []
    for name in methods:
        m = by_name[name].model_dump(mode="json", exclude_defaults=True)
        m["name"] = name
        if task.max_length is not None:
            for b in m.get("bootstrap", []):
                b["max_length"] = task.max_length
            for w in m.get("weak_ensemble", []):
                w["max_length"] = task.max_length
            gen = (m.get("student") or {}).get("generative_finetune")
            if isinstance(gen, dict):
                gen.setdefault("max_length", task.max_length)
        chosen.append(m)
    splits = {**(data.get("splits") or {}), **task.splits}
    data.update(name=f"{study.name}-{Path(task.name).stem}-{pair.weak}-{pair.strong}", task=task.name,
                task_options=task.options, seeds=list(study.seeds), methods=chosen, n_boot=study.n_boot,
                min_gap=study.min_gap, splits=splits)
    if task.max_examples is not None:
        data["max_examples"] = task.max_examples
    if study.prompting is not None and study.prompting.task == task.name and pair is main_pair(study):
        p = study.prompting
        data["prompting"] = [{"model": p.model, "shots": p.shots, "max_test": p.max_test,
                              "max_length": p.max_length, "batch_size": p.batch_size}]
    cfg = W2SConfig.parse(data, where=where)
    try:
        from superalign.w2s.config import check_generative  # W2S-methods: encoders cannot be fine-tuned generatively
    except ImportError:  # pragma: no cover - older checkouts
        check_generative = None
    if check_generative is not None:
        check_generative(cfg)
    return cfg


def reward_configs(study: StudyConfig) -> dict[str, Any]:
    """The W2S reward-modelling configs: ``naive`` and (if asked) ``generative``."""
    from superalign.oversight.w2s_reward import W2SRewardConfig

    assert study.reward is not None
    base = dict(study.reward.config)
    base.setdefault("seeds", list(study.seeds))
    base.setdefault("n_boot", study.n_boot)
    out: dict[str, Any] = {}
    try:
        out["naive"] = W2SRewardConfig.model_validate(base)
    except ValidationError as exc:
        raise config_error(exc, "reward.config") from None
    gen = study.reward.generative
    if gen not in (False, None):
        strong = dict(out["naive"].strong.model_dump(mode="json"))
        if "generative_finetune" not in strong:
            out["generative_unavailable"] = ("this checkout's W2S reward models have no generative_finetune field "
                                             "(W2S-methods adds it)")
            return out
        strong["generative_finetune"] = {} if gen is True else gen
        try:
            out["generative"] = W2SRewardConfig.model_validate({**base, "strong": strong})
        except ValidationError as exc:
            raise config_error(exc, "reward.generative") from None
    return out


# -- running ---------------------------------------------------------------------------------------

@dataclass
class StudyResult:
    study: StudyConfig
    findings: list[F.Finding]
    summary: dict[str, Any]
    out_dir: Path | None = None

    def table(self) -> str:
        from superalign.report.reproduce import findings_table

        return findings_table([f.as_dict() for f in self.findings], self.summary)

    def as_dict(self) -> dict[str, Any]:
        return {"experiment": "reproduce", "study": self.study.model_dump(mode="json"),
                "findings": [f.as_dict() for f in self.findings], "summary": self.summary}


def run_study(study: StudyConfig, *, store_root: str | Path | None = None, out_dir: str | Path,
              workers: int | None = None, report: bool = True) -> StudyResult:
    """Run (or resume) the study and compute its findings.

    Every training and feature stage goes through the store at ``store_root`` (default
    ``$SUPERALIGN_STORE``), so rerunning after a kill recomputes nothing that finished; the
    per-block results and the findings are written atomically under ``out_dir``.
    """
    from superalign.store.store import Store, default_store_root
    from superalign.w2s.sweep import SweepConfig, run_sweep

    t0 = time.perf_counter()
    root = Path(store_root or default_store_root()).expanduser().resolve()
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "study.yaml", study.to_yaml())
    blocks = plan(study)
    timings: dict[str, float] = {}
    computed = 0
    groups: dict[tuple[str, str, str, str], F.GroupData] = {}
    prompt_rows: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        tb = time.perf_counter()
        log.info("[block %d/%d] %s: %s", i + 1, len(blocks), block.id, ", ".join(block.methods))
        sweep = SweepConfig.model_validate({"name": f"{study.name}-{block.id}", "base": block.config,
                                            "methods": block.methods, "skip_not_larger": False})
        res = run_sweep(sweep, store_root=root, out_dir=out / "blocks" / block.id / "sweep",
                        workers=workers or study.workers)
        computed += res.summary["stages"]["computed"]
        block_groups, rows = collect_block(block.config, Store(root), out / "blocks" / block.id)
        for g in block_groups:
            groups[(g.task, g.weak, g.strong, g.method)] = g
        prompt_rows += rows
        timings[block.id] = round(time.perf_counter() - tb, 1)
    reward: dict[str, Any] = {}
    if study.reward is not None:
        tr = time.perf_counter()
        reward = run_reward(study, Store(root))
        timings["reward"] = round(time.perf_counter() - tr, 1)
    found = compute_findings(study, groups, prompt_rows, reward)
    summary = {"seconds": round(time.perf_counter() - t0, 1), "blocks": timings, "stages_computed_in_sweeps": computed,
               "store": str(root), "seeds": study.seeds, "tasks": [t.name for t in study.tasks],
               "pairs": [p.model_dump() for p in study.pairs], "main_pair": main_pair(study).model_dump(),
               "n_test": {t: int(g.n) for (t, _, _, _), g in groups.items()}}
    result = StudyResult(study, found, summary, out)
    write_json_atomic(out / "findings.json", [f.as_dict() for f in found])
    write_json_atomic(out / "results.json", result.as_dict())
    write_text_atomic(out / "table.txt", result.table() + "\n")
    if report:
        import superalign.report.reproduce  # noqa: F401  (registers the builder)
        from superalign.report.html import write_report

        write_report(out)
    return result


def collect_block(cfg: W2SConfig, store, out: Path) -> tuple[list[F.GroupData], list[dict[str, Any]]]:
    """The block's rows (seed-pooled, from the store) and each method's per-seed test predictions."""
    from superalign.data.registry import load_task
    from superalign.data.splits import make_splits
    from superalign.models.zoo import ZOO
    from superalign.w2s import pipeline
    from superalign.w2s.stages import Stages

    result = pipeline.run_w2s(cfg, out_dir=out, store=store)  # everything is cached by the sweep (prompting aside)
    task = load_task(cfg.task, max_examples=cfg.max_examples, seed=cfg.split_seed, **cfg.task_options)
    splits = make_splits(task.labels, cfg.splits.model_dump(), cfg.split_seed, task.name)
    # the same stages as run_w2s (its generative finetuning reads the texts of B, test and val), so every
    # one of them is found in the store; a stage computed here would mean the two disagree
    stages = Stages(store, task, generative_idx=np.concatenate([splits.strong_train, splits.test, splits.val]))
    before = len([e for e in store.events if not e.cached])
    outcomes = [pipeline._run_seed(cfg, stages, task, splits, s) for s in cfg.seeds]
    extra = [e.label for e in store.events if not e.cached][before:]
    if extra:
        log.warning("collecting %s computed %d stage(s) that run_w2s had not: %s", cfg.name, len(extra), extra)
    y = task.labels[splits.test]
    rows = {r["method"]: r for r in result.rows if r.get("kind") == "w2s"}
    ws, ss = ZOO.get(cfg.weak.model), ZOO.get(cfg.strong.model)
    groups = []
    for m in cfg.methods:
        groups.append(F.GroupData(
            task=task.name, weak=cfg.weak.model, strong=cfg.strong.model, method=m.name, y=y,
            weak_probs=np.stack([o.weak for o in outcomes]),
            student_probs=np.stack([o.students[m.name] for o in outcomes]),
            ceiling_probs=np.stack([o.ceilings[m.name] for o in outcomes]),
            weak_params_m=ws.params_m if ws else None, strong_params_m=ss.params_m if ss else None,
            intermediate_probs=[np.stack([o.intermediates[m.name][d] for o in outcomes])
                                for d in range(len(m.bootstrap))],
            curves=[o.curves.get(f"student/{m.name}", []) for o in outcomes], row=rows.get(m.name, {}),
            min_gap=cfg.min_gap,
            supervisor_probs=np.stack([getattr(o, "supervisors", {}).get(m.name, o.weak) for o in outcomes])))
    prompt_rows = []
    if cfg.prompting:
        from superalign.w2s.prompting import score_prompting

        for p in cfg.prompting:
            test = splits.test if p.max_test is None else splits.test[: p.max_test]
            for k in p.shots:
                probs = score_prompting(store, task, p, test, splits.weak_train, k, seed=cfg.split_seed)
                prompt_rows.append({"task": task.name, "model": p.model, "shots": k, "n": int(len(test)),
                                    "correct": (probs.argmax(1) == task.labels[test]).astype(float)})
    return groups, prompt_rows


def run_reward(study: StudyConfig, store) -> dict[str, Any]:
    """W2S reward modelling, naive and with generative finetuning of the strong PM (cached stages)."""
    from superalign.oversight.w2s_reward import run_w2s_reward

    cfgs = reward_configs(study)
    out: dict[str, Any] = {}
    for name in ("naive", "generative"):
        if name in cfgs:
            log.info("W2S reward modelling (%s)", name)
            out[name] = run_w2s_reward(cfgs[name], store)
    if "generative_unavailable" in cfgs:
        out["generative_unavailable"] = cfgs["generative_unavailable"]
    return out


# -- findings --------------------------------------------------------------------------------------

CLAIMS = {
    "bootstrap": "Bootstrapping through an intermediate model raises PGR on chess (paired PGR difference > 0)",
    "generative": "Generative finetuning of the strong model on the task's unlabelled texts raises PGR",
    "generative_rm": "Generative finetuning of the strong reward model raises W2S reward-modelling PGR",
    "aux_conf": "The auxiliary confidence loss raises PGR at the largest gap (paired PGR difference > 0, "
                "pooled over tasks)",
    "aux_conf_small": "...and helps less at small gaps (gain at the largest gap minus gain at smaller gaps > 0)",
    "overfit": "Training on weak labels overfits them: the best checkpoint (oracle early stopping) beats the "
               "final one (student accuracy difference > 0)",
    "early_stop": "Early stopping on weak-label validation accuracy is worse than oracle early stopping "
                  "(accuracy difference oracle - weak > 0)",
    "prompting": "At this scale finetuning beats zero/few-shot prompting (strong ceiling minus the best prompting "
                 "accuracy > 0, same test examples)",
}


def compute_findings(study: StudyConfig, groups: dict[tuple[str, str, str, str], F.GroupData],
                     prompt_rows: list[dict[str, Any]], reward: dict[str, Any]) -> list[F.Finding]:
    """Every finding from the collected groups (pure: reads only its arguments)."""
    r, nb = study.roles, study.n_boot
    main = main_pair(study)
    tasks = [Path(t.name).stem if Path(t.name).suffix else t.name for t in study.tasks]

    def get(task: str, pair: StudyPair, method: str | None) -> F.GroupData | None:
        if method is None:
            return None
        return groups.get((task, pair.weak, pair.strong, method))

    def main_pairs(method: str | None, baseline: str | None, only: list[str] | None = None):
        out = []
        for t in only or tasks:
            m, b = get(t, main, method), get(t, main, baseline)
            if m is not None and b is not None:
                out.append((m, b))
        return out

    found: list[F.Finding] = []
    naive_main = [g for t in tasks if (g := get(t, main, r.naive)) is not None]
    found.append(F.pgr_positive(naive_main, nb))
    ratio_groups = [g for t in r.size_ratio_tasks for p in study.pairs if (g := get(t, p, r.naive)) is not None]
    found.append(F.size_ratio(ratio_groups, nb))
    found.append(F.method_gain("aux_conf", "aux-conf raises PGR (largest gap)", CLAIMS["aux_conf"],
                               main_pairs(r.aux_conf, r.naive), nb))
    small = [(m, b) for t in r.size_ratio_tasks for p in study.pairs if p is not main
             if (m := get(t, p, r.aux_conf)) is not None and (b := get(t, p, r.naive)) is not None]
    found.append(F.gain_difference("aux_conf_small", "aux-conf helps less at small gaps", CLAIMS["aux_conf_small"],
                                   main_pairs(r.aux_conf, r.naive, r.size_ratio_tasks), small, nb))
    if r.bootstrap and r.bootstrap_task:
        pairs = main_pairs(r.bootstrap, r.naive, [_stem(r.bootstrap_task)])
        found.append(F.method_gain("bootstrap", "bootstrapping (chess)", CLAIMS["bootstrap"], pairs, nb)
                     if pairs else F.Finding.skipped("bootstrap", "bootstrapping (chess)", CLAIMS["bootstrap"],
                                                     "no bootstrap results"))
    if r.generative and r.generative_task:
        pairs = main_pairs(r.generative, r.naive, [_stem(r.generative_task)])
        found.append(F.method_gain("generative", f"generative finetuning ({_stem(r.generative_task)})",
                                   CLAIMS["generative"], pairs, nb)
                     if pairs else F.Finding.skipped("generative", "generative finetuning", CLAIMS["generative"],
                                                     "no generative-finetuning results"))
    found += _reward_findings(study, reward)
    curves = {}
    for name in (r.naive, r.aux_conf):
        curves[name] = [c for (m, _) in main_pairs(name, r.naive) for c in m.curves if c]
    if r.early_stop_oracle:
        f = F.method_gain("overfit", "overfitting: best vs final", CLAIMS["overfit"],
                          main_pairs(r.early_stop_oracle, r.naive), nb, what="accuracy")
        f.details["curves"] = {k: v for k, v in curves.items()}
        f.details["best_vs_final"] = F.best_vs_final(curves)
        f.details["per_task_curves"] = {t: {"naive": n.curves, "aux": a.curves} for t in tasks
                                        if (n := get(t, main, r.naive)) is not None
                                        and (a := get(t, main, r.aux_conf)) is not None}
        found.append(f)
    if r.early_stop_oracle and r.early_stop_weak:
        found.append(F.method_gain("early_stop", "weak-label vs oracle early stopping", CLAIMS["early_stop"],
                                   main_pairs(r.early_stop_oracle, r.early_stop_weak), nb, what="accuracy"))
    found.append(_prompting_finding(study, groups, prompt_rows))
    found.append(F.agreement_finding(main_pairs(r.aux_conf, r.naive), nb))
    for name in r.post_paper:
        method_cfg = next(m for m in study.methods if m.name == name)
        f = F.method_gain(f"post:{name}", f"{name} vs naive", f"{_describe(method_cfg)} raises PGR over naive "
                          "training (paired PGR difference > 0)", main_pairs(name, r.naive), nb)
        vs_aux = F.method_gain(f"post:{name}:aux", f"{name} vs aux-conf", "", main_pairs(name, r.aux_conf), nb)
        f.details["vs_aux_conf"] = {"estimate": None if vs_aux.estimate is None else vs_aux.estimate.as_dict(),
                                    "verdict": vs_aux.verdict}
        found.append(f)
    mis = [g for (t, w, s, m), g in groups.items() if (w, s) == (main.weak, main.strong)]
    found.append(F.misfit_finding(mis, nb))
    return found


def _stem(task: str) -> str:
    return Path(task).stem if Path(task).suffix else task


def _describe(m: MethodConfig) -> str:
    if m.weak_ensemble:
        return f"An ensemble of {len(m.weak_ensemble) + 1} weak supervisors (mean soft labels)"
    lf = getattr(m, "label_filter", None)
    if lf is not None:
        return f"Weak-label selection ({lf.name}, dropping {lf.drop_frac:.0%})"
    return f"Method {m.name}"


def _reward_findings(study: StudyConfig, reward: dict[str, Any]) -> list[F.Finding]:
    claim_little = (f"W2S for reward models recovers little of the gap (PGR < {study.reward.little:g}; naive)"
                    if study.reward else "W2S for reward models recovers little of the gap")
    if not reward or "naive" not in reward:
        return [F.Finding.skipped("reward_little", "W2S reward models recover little", claim_little,
                                  "reward modelling not in the study")]
    naive = reward["naive"]
    iv = Interval.from_dict(naive["pgr"])
    n = int(naive["n"]["test"])
    out = [F.below_threshold("reward_little", "W2S reward models recover little", claim_little, iv,
                             study.reward.little, n, f"reward-model PGR on {naive['data']} comparisons "
                             f"({naive['weak_model']} -> {naive['strong_model']})", {"naive": naive})]
    if "generative" in reward:
        gen = reward["generative"]
        d = F.unpaired_difference(Interval.from_dict(gen["pgr"]), iv)
        out.append(F.Finding("generative_rm", "generative finetuning (reward model)", CLAIMS["generative_rm"],
                             "PGR(generative) - PGR(naive); unpaired normal approximation from the two CIs", d,
                             0.0, ">", n, F.verdict(d, 0.0, ">", n), details={"naive": naive, "generative": gen}))
    else:
        out.append(F.Finding.skipped("generative_rm", "generative finetuning (reward model)", CLAIMS["generative_rm"],
                                     reward.get("generative_unavailable", "not asked for")))
    return out


def _prompting_finding(study: StudyConfig, groups, prompt_rows: list[dict[str, Any]]) -> F.Finding:
    from superalign.metrics import bootstrap_ci

    if not prompt_rows or study.prompting is None:
        return F.Finding.skipped("prompting", "prompting vs finetuning", CLAIMS["prompting"], "no prompting in the study")
    main = main_pair(study)
    task = _stem(study.prompting.task)
    g = groups.get((task, main.weak, main.strong, study.roles.naive))
    if g is None:
        return F.Finding.skipped("prompting", "prompting vs finetuning", CLAIMS["prompting"], "no finetuned results")
    n = min(r["n"] for r in prompt_rows)
    ceil = g.correct("ceiling")[:, :n].mean(0)
    stud = g.correct("student")[:, :n].mean(0)
    prompts = {f"{r['shots']}-shot {r['model']}": r["correct"][:n] for r in prompt_rows}

    def stat(i: np.ndarray) -> float:
        return float(ceil[i].mean() - max(p[i].mean() for p in prompts.values()))

    iv = bootstrap_ci(stat, n, n_boot=study.n_boot)
    idx = np.arange(n)
    cases = [{"label": k, "estimate": bootstrap_ci(lambda i, p=p: float(p[i].mean()), n, n_boot=study.n_boot).as_dict(),
              "verdict": "accuracy", "n": n} for k, p in prompts.items()]
    cases.append({"label": f"strong ceiling ({main.strong})", "n": n, "verdict": "accuracy",
                  "estimate": bootstrap_ci(lambda i: float(ceil[i].mean()), n, n_boot=study.n_boot).as_dict()})
    cases.append({"label": f"W2S student, naive ({main.weak} -> {main.strong})", "n": n, "verdict": "accuracy",
                  "estimate": bootstrap_ci(lambda i: float(stud[i].mean()), n, n_boot=study.n_boot).as_dict()})
    return F.Finding("prompting", "prompting vs finetuning", CLAIMS["prompting"],
                     f"ceiling accuracy minus the best prompting accuracy on {task} (the best of "
                     f"{len(prompts)} prompt settings is re-chosen in every resample)", iv, 0.0, ">", n,
                     F.verdict(iv, 0.0, ">", n), cases,
                     {"cases": cases, "ceiling": float(ceil[idx].mean()), "student": float(stud[idx].mean())})


__all__ = ["StudyConfig", "StudyResult", "run_study", "plan", "validate_study", "compute_findings", "SuperalignError"]
