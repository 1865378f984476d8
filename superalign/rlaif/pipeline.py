"""The RLAIF chain as cached stages, from a constitution to an evaluated RL policy.

    prompts ─► SL-CAI (critique → revision) ─► SFT policy
                                   │
    policy samples ─► AI feedback (both orderings, principle ensemble) ─► preference pairs
    ranked answers ─► PMP ─► preference model (Bradley-Terry, soft labels) ◄─┘
                                   │
             best-of-n curve ◄─────┤
             RL (RLOO/GRPO, KL leash to the SFT policy) ─► RL policy
                                   │
    win rates (labeller and PM) and Elo over initial / SFT / best-of-n / RL policies

The RLHF path replaces AI feedback with human comparisons (a file or hub data set) or, offline,
with chess move pairs ranked by Stockfish.

Use from Python::

    from superalign.rlaif import RLAIFConfig, run_rlaif
    result = run_rlaif(RLAIFConfig(), out_dir="runs/rlaif")
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from superalign.errors import ConfigError
from superalign.metrics import mean_ci
from superalign.models.cache import ModelCache, active_cache, model_scope
from superalign.models.loading import load_backbone, load_causal_lm, model_identity, model_notes
from superalign.rlaif import evaluate as ev
from superalign.rlaif.config import RLAIFConfig
from superalign.rlaif.constitution import load_constitution
from superalign.rlaif.feedback import Labeller, agreement_with_labels
from superalign.rlaif.generation import GenerationConfig, generate, render_chat
from superalign.rlaif.pm import Pairs, PreferenceModel
from superalign.store.store import Store, default_store_root, write_json_atomic

log = logging.getLogger("superalign.rlaif")


# -- prompts ------------------------------------------------------------------------------------

@dataclass
class PromptSet:
    harmful: list[str]
    ordinary: list[str]
    labelled_pairs: list[dict]


def load_prompt_set(path: str | None) -> PromptSet:
    """The shipped prompt set, or a YAML file with ``harmful``, ``ordinary`` and ``labelled_pairs``."""
    if path is None:
        data = yaml.safe_load(resources.files("superalign.rlaif").joinpath("data/prompts.yaml").read_text())
    else:
        p = Path(path)
        if not p.exists():
            raise ConfigError("prompts", f"file '{path}' does not exist", "give a YAML prompt set")
        data = yaml.safe_load(p.read_text()) or {}
    harmful, ordinary = list(data.get("harmful") or []), list(data.get("ordinary") or [])
    for field, items in (("harmful", harmful), ("ordinary", ordinary)):
        for i, s in enumerate(items):
            if not isinstance(s, str) or not s.strip():
                raise ConfigError(f"prompts.{field}[{i}]", "is empty", "remove empty prompts")
    if not harmful and not ordinary:
        raise ConfigError("prompts", "has no harmful or ordinary prompts", "add prompts under 'harmful:' or 'ordinary:'")
    pairs = list(data.get("labelled_pairs") or [])
    for i, row in enumerate(pairs):
        for col in ("prompt", "chosen", "rejected"):
            if not str(row.get(col, "")).strip():
                raise ConfigError(f"prompts.labelled_pairs[{i}].{col}", "is missing", f"give each pair a '{col}'")
    return PromptSet(harmful, ordinary, pairs)


def split_prompts(ps: PromptSet, sizes: dict[str, int], seed: int) -> dict[str, list[str]]:
    """Disjoint, half-harmful/half-ordinary prompt lists for each use, in a seeded order."""
    rng = random.Random(seed)
    pools = [list(ps.harmful), list(ps.ordinary)]
    for pool in pools:
        rng.shuffle(pool)
    out: dict[str, list[str]] = {}
    for name, n in sizes.items():
        take = []
        for k in range(n):
            pool = pools[k % 2] if pools[k % 2] else pools[1 - k % 2]
            if not pool:
                raise ConfigError(f"{name}.n_prompts", f"asks for more prompts than the set holds ({n})",
                                  "lower the n_prompts settings or add prompts")
            take.append(pool.pop())
        out[name] = take
    return out


def policy_prompts_from_pairs(prompts: list[str], n_eval: int, seed: int) -> tuple[list[str], list[str]]:
    """Held-out evaluation prompts and RL prompts, disjoint, from the distinct prompts of preference data."""
    distinct = list(dict.fromkeys(prompts))
    random.Random(seed).shuffle(distinct)
    if len(distinct) < n_eval + 1:
        raise ConfigError("eval.n_prompts", f"is {n_eval}, but the preference data has {len(distinct)} distinct "
                          "prompts and RL needs at least one more", f"lower it below {len(distinct)} or add data")
    return distinct[:n_eval], distinct[n_eval:]


# -- models -------------------------------------------------------------------------------------

class Models:
    """The chain's models through one :class:`~superalign.models.cache.ModelCache` (by default the active
    scope's: :func:`run_rlaif` opens one, so a run's models are released when it ends). Policies are fresh
    copies of the base model with adapters merged in."""

    def __init__(self, cfg: RLAIFConfig, cache: ModelCache | None = None):
        self.cfg = cfg
        self.cache = cache if cache is not None else active_cache()
        self.pm_features: dict = {}  # shared by every PreferenceModel built here (one backbone, one config)

    def base(self):
        """(causal LM, tokenizer, info) of the policy model; shared, so never trained in place."""
        return self.cache.get(("causal_lm", self.cfg.policy, False, False), lambda: load_causal_lm(self.cfg.policy))

    def policy(self, adapters: tuple[str, ...] = ()):
        """A fresh copy of the policy with ``adapters`` (directories) merged in order."""
        import copy

        from peft import PeftModel

        model, tok, _ = self.base()
        model = copy.deepcopy(model)
        for a in adapters:
            model = PeftModel.from_pretrained(model, a).merge_and_unload()
        model.eval()
        return model, tok

    def feedback(self):
        name = self.cfg.feedback.model
        model, tok, _ = self.cache.get(("causal_lm", name, False, False), lambda: load_causal_lm(name))
        return model, tok

    def pm_backbone(self):
        name = self.cfg.pm.model

        def load():
            model, tok, info = load_backbone(name)
            model.requires_grad_(False)
            return model, tok, info

        return self.cache.get(("backbone", name, True, False), load)

    def labeller(self) -> Labeller:
        model, tok = self.feedback()
        return Labeller(model, tok, load_constitution(self.cfg.constitution), self.cfg.feedback)

    def pm(self) -> PreferenceModel:
        model, tok, info = self.pm_backbone()
        return PreferenceModel(model, tok, info.arch, self.cfg.pm, feature_cache=self.pm_features)


# -- the run ------------------------------------------------------------------------------------

@dataclass
class RLAIFResult:
    config: RLAIFConfig
    summary: dict[str, Any]
    out_dir: Path | None = None

    def table(self) -> str:
        from superalign.report.rlaif import rlaif_text

        return rlaif_text(self.summary)


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_rlaif(cfg: RLAIFConfig, *, out_dir: str | Path | None = None, store: Store | None = None) -> RLAIFResult:
    """Run (or resume) the chain; every stage is cached in ``store``."""
    with model_scope(name="rlaif") as cache:  # the run's models are released when it returns
        return _run_rlaif(cfg, out_dir=out_dir, store=store, cache=cache)


def _run_rlaif(cfg: RLAIFConfig, *, out_dir: str | Path | None, store: Store | None, cache: ModelCache) -> RLAIFResult:
    t0 = time.perf_counter()
    store = store or Store(default_store_root())
    models = Models(cfg, cache)
    constitution = load_constitution(cfg.constitution)
    ps = load_prompt_set(cfg.prompts)
    split = split_prompts(ps, {"eval": cfg.eval.n_prompts, "slcai": cfg.slcai.n_prompts,
                               "pref": cfg.preferences.n_prompts if cfg.preferences.source == "ai" else 0}, cfg.seed)
    policy_id = model_identity(cfg.policy)
    base_inputs = {"policy": policy_id, "generation": cfg.generation.model_dump(), "seed": cfg.seed,
                   "constitution": constitution.as_dict()}
    summary: dict[str, Any] = {"policy": cfg.policy, "feedback_model": cfg.feedback.model, "pm_model": cfg.pm.model,
                               "preference_source": cfg.preferences.source, "constitution": constitution.name,
                               "n_principles": len(constitution.principles)}

    # 1. SL-CAI ------------------------------------------------------------------------------
    def slcai(tmp: Path) -> dict:
        from superalign.rlaif.slcai import critique_revision

        model, tok, _ = models.base()
        rows = critique_revision(model, tok, split["slcai"], constitution, rounds=cfg.slcai.rounds,
                                 gen=cfg.generation, seed=cfg.seed)
        _jsonl(tmp / "rows.jsonl", rows)
        changed = sum(r["chosen"] != r["rejected"] for r in rows)
        return {"n": len(rows), "revised": changed}

    sl_stage = store.run("rlaif-slcai", {**base_inputs, "prompts": split["slcai"], "rounds": cfg.slcai.rounds}, slcai,
                         label="SL-CAI critique/revision")
    sl_rows = _read_jsonl(sl_stage.file("rows.jsonl"))
    summary["slcai"] = {**sl_stage.meta["result"], "examples": sl_rows[:3]}

    adapters: tuple[str, ...] = ()
    if cfg.slcai.sft:
        def sft(tmp: Path) -> dict:
            from superalign.rlaif.slcai import sft_on_revisions

            model, tok = models.policy()
            losses = sft_on_revisions(model, tok, sl_rows, tmp, epochs=cfg.slcai.sft_epochs, lr=cfg.slcai.sft_lr,
                                      seed=cfg.seed)
            return {"losses": losses}

        sft_stage = store.run("rlaif-sft", {"slcai": sl_stage.key, "epochs": cfg.slcai.sft_epochs, "lr": cfg.slcai.sft_lr},
                              sft, label="SFT on revisions")
        adapters = (str(sft_stage.file("adapter")),)
        summary["sft"] = sft_stage.meta["result"]
    sft_key = adapters[0] if adapters else "none"

    # 2. preference data ---------------------------------------------------------------------
    labeller_inputs = {"model": model_identity(cfg.feedback.model), "cfg": cfg.feedback.model_dump(),
                       "constitution": constitution.as_dict()}

    def human_agreement(tmp: Path) -> dict:
        lab = models.labeller()
        rows = ps.labelled_pairs
        rng = random.Random(cfg.seed)
        flip = [rng.random() < 0.5 for _ in rows]  # chosen shown first or second at random
        first = [r["rejected"] if f else r["chosen"] for r, f in zip(rows, flip)]
        second = [r["chosen"] if f else r["rejected"] for r, f in zip(rows, flip)]
        res = lab.label([r["prompt"] for r in rows], first, second, seed=cfg.seed)
        truth = np.array([not f for f in flip])
        return {"agreement": agreement_with_labels(res.p_first, truth), "n": len(rows), **res.summary(),
                "p_chosen_mean": float(np.where(truth, res.p_first, 1 - res.p_first).mean())}

    if ps.labelled_pairs:
        agree = store.run("rlaif-feedback-check", {**labeller_inputs, "pairs": ps.labelled_pairs, "seed": cfg.seed},
                          human_agreement, label="labeller vs labelled pairs")
        summary["labeller_vs_labelled_pairs"] = agree.meta["result"]

    pairs, pref_meta = _preference_pairs(cfg, store, models, split, sl_rows, sl_stage.key, adapters, labeller_inputs)
    summary["preferences"] = pref_meta
    if cfg.preferences.source != "ai":  # RLHF: the policy answers the preference data's own prompts
        split["eval"], split["rl"] = policy_prompts_from_pairs(pairs.prompts, cfg.eval.n_prompts, cfg.seed)
        check = pairs.subset(range(min(64, len(pairs))))

        def data_agreement(tmp: Path) -> dict:  # would AI feedback have given the data's labels?
            res = models.labeller().label(check.prompts, check.a, check.b, seed=cfg.seed)
            return {"agreement": agreement_with_labels(res.p_first, check.p > 0.5), "n": len(check), **res.summary()}

        agree = store.run("rlaif-feedback-vs-data", {**labeller_inputs, "pairs": pref_meta["key"], "n": len(check),
                                                     "seed": cfg.seed}, data_agreement, label="labeller vs preference data")
        summary["labeller_vs_preference_data"] = agree.meta["result"]
    else:
        split["rl"] = split["slcai"] + split["pref"]

    # 3. preference model (+ PMP) ------------------------------------------------------------
    n_test = max(2, int(round(len(pairs) * cfg.preferences.test_fraction)))
    perm = np.random.default_rng(cfg.seed).permutation(len(pairs))
    test_pairs, train_pairs = pairs.subset(perm[:n_test]), pairs.subset(perm[n_test:])
    pm_inputs = {"model": model_identity(cfg.pm.model), "pm": cfg.pm.model_dump(), "pmp": cfg.pmp.model_dump(),
                 "pairs": pref_meta["key"], "seed": cfg.seed}

    def train_pm(tmp: Path) -> dict:
        from safetensors.torch import save_file

        from superalign.rlaif.pmp import data_efficiency, load_ranked_answers, ranked_pairs, wordnet_ranked_answers

        pm = models.pm()
        out: dict[str, Any] = {"n_train": len(train_pairs), "n_test": len(test_pairs)}
        pmp_pairs = None
        if cfg.pmp.enabled:
            ranked = (wordnet_ranked_answers(cfg.pmp.n_questions, cfg.seed) if cfg.pmp.source == "wordnet"
                      else load_ranked_answers(cfg.pmp.source, limit=cfg.pmp.n_questions))
            pmp_pairs = ranked_pairs(ranked, seed=cfg.seed)
            out["pmp_pairs"] = len(pmp_pairs)
            out["data_efficiency"] = data_efficiency(models.pm, pmp_pairs, train_pairs, test_pairs, cfg.pmp.sizes,
                                                     cfg.pmp.seeds, pmp_epochs=cfg.pmp.epochs)
            pm.fit(pmp_pairs, seed=cfg.seed, epochs=cfg.pmp.epochs)
            out["pmp_eval_on_target"] = pm.evaluate(test_pairs)
        out["curve"] = pm.fit(train_pairs, seed=cfg.seed, init_from_scratch=not cfg.pmp.enabled)
        out["train"] = pm.evaluate(train_pairs)
        out["test"] = pm.evaluate(test_pairs)
        save_file({k: v.contiguous() for k, v in pm.head.state_dict().items()}, str(tmp / "head.safetensors"))
        return out

    pm_stage = store.run("rlaif-pm", pm_inputs, train_pm, label="preference model")
    summary["pm"] = pm_stage.meta["result"]
    pm = _load_pm(models, pm_stage.file("head.safetensors"))

    # 4. best-of-n ---------------------------------------------------------------------------
    def bon(tmp: Path) -> dict:
        model, tok = models.policy(adapters)
        prompts = split["eval"][: cfg.best_of_n.n_prompts]
        n_max = max(cfg.best_of_n.ns)
        samples = generate(model, tok, render_chat(tok, [[{"role": "user", "content": p}] for p in prompts]),
                           cfg.generation, seed=cfg.seed + 7, num_return_sequences=n_max, desc="best-of-n samples")
        texts = [[c.text for c in s] for s in samples]
        rewards = np.array([pm.score([p] * n_max, t) for p, t in zip(prompts, texts)])
        curve = ev.best_of_n_curve(rewards, cfg.best_of_n.ns)
        lengths = np.array([[c.n_tokens for c in s] for s in samples], dtype=float)
        pick = ev.select_best_of_n(rewards, n_max)
        json.dump({"prompts": prompts, "samples": texts, "rewards": rewards.tolist()}, open(tmp / "samples.json", "w"))
        return {"curve": curve, "mean_length_all": float(lengths.mean()),
                "mean_length_best": float(lengths[np.arange(len(pick)), pick].mean())}

    bon_stage = store.run("rlaif-bon", {"policy": policy_id, "adapters": sft_key, "pm": pm_stage.key,
                                        "cfg": cfg.best_of_n.model_dump(), "generation": cfg.generation.model_dump(),
                                        "prompts": split["eval"][: cfg.best_of_n.n_prompts], "seed": cfg.seed},
                          bon, label="best-of-n")
    summary["best_of_n"] = bon_stage.meta["result"]

    # 5. RL ----------------------------------------------------------------------------------
    rl_prompts = split["rl"]

    def rl(tmp: Path) -> dict:
        from superalign.rlaif.rl import train_rl

        model, tok = models.policy(adapters)
        history = train_rl(model, tok, rl_prompts, lambda p, r: pm.score(p, r), cfg.rl, tmp, seed=cfg.seed)
        return {"history": history}

    rl_stage = store.run("rlaif-rl", {"policy": policy_id, "adapters": sft_key, "pm": pm_stage.key,
                                      "rl": cfg.rl.model_dump(), "prompts": rl_prompts, "seed": cfg.seed}, rl,
                         label=f"RL ({cfg.rl.algo})")
    summary["rl"] = rl_stage.meta["result"]
    rl_adapters = (*adapters, str(rl_stage.file("adapter")))

    # 6. evaluation --------------------------------------------------------------------------
    policies = {"initial": (), **({"sft": adapters} if adapters else {}), "rl": rl_adapters}
    summary["eval"] = _evaluate(cfg, store, models, pm, pm_stage.key, split["eval"], policies, labeller_inputs,
                                bon_stage)
    summary["notes"] = model_notes([cfg.policy, cfg.feedback.model, cfg.pm.model])
    summary["stages"] = store.summary()
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    result = RLAIFResult(cfg, summary)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(cfg.to_yaml())
        write_json_atomic(out / "results.json", {"experiment": "rlaif", "config": cfg.model_dump(mode="json"),
                                                 "summary": summary})
        (out / "summary.txt").write_text(result.table() + "\n")
        result.out_dir = out
    log.info(store.summary(detail=True))
    return result


def _load_pm(models: Models, head_file: Path) -> PreferenceModel:
    from safetensors.torch import load_file

    from superalign.training.regimes import ProbeHead

    state = load_file(str(head_file))
    pm = models.pm()
    dim = state["linear.weight"].shape[1]
    pm.head = ProbeHead(dim, 1)
    pm.head.load_state_dict(state)
    return pm


def _preference_pairs(cfg: RLAIFConfig, store: Store, models: Models, split: dict[str, list[str]], sl_rows: list[dict],
                      sl_key: str, adapters: tuple[str, ...], labeller_inputs: dict) -> tuple[Pairs, dict]:
    """Comparisons for the PM: AI-labelled policy samples (RLAIF), or human / chess pairs (RLHF)."""
    src = cfg.preferences
    if src.source in ("file", "hub"):
        if not src.path:
            raise ConfigError("preferences.path", f"is required for source '{src.source}'",
                              "give a prompt/chosen/rejected file or a hub data set name")
        rows = load_preference_rows(src.path, hub=src.source == "hub")
        pairs = pairs_from_rows(rows, cfg.seed)
        return pairs, {"key": f"{src.source}:{src.path}:{len(pairs)}", "n": len(pairs), "kind": "human"}
    if src.source == "chess":
        from superalign.data.chess import cached_move_preference_pairs

        rows = cached_move_preference_pairs(src.n_chess, seed=cfg.seed)
        pairs = pairs_from_rows(rows, cfg.seed)
        return pairs, {"key": f"chess:{src.n_chess}:{cfg.seed}", "n": len(pairs), "kind": "stockfish"}

    def samples(tmp: Path) -> dict:
        model, tok = models.policy(adapters)
        prompts = split["pref"]
        out = generate(model, tok, render_chat(tok, [[{"role": "user", "content": p}] for p in prompts]),
                       cfg.generation, seed=cfg.seed + 3, num_return_sequences=2, desc="preference samples")
        _jsonl(tmp / "samples.jsonl", [{"prompt": p, "a": o[0].text, "b": o[1].text} for p, o in zip(prompts, out)])
        return {"n": len(prompts)}

    sample_stage = store.run("rlaif-samples", {"adapters": adapters[0] if adapters else "none", "slcai": sl_key,
                                               "prompts": split["pref"], "generation": cfg.generation.model_dump(),
                                               "policy": model_identity(cfg.policy), "seed": cfg.seed},
                             samples, label="policy samples for feedback")
    rows = _read_jsonl(sample_stage.file("samples.jsonl"))
    if src.include_slcai_pairs:
        rows += [{"prompt": r["prompt"], "a": r["chosen"], "b": r["rejected"]} for r in sl_rows if r["chosen"] != r["rejected"]]

    def feedback(tmp: Path) -> dict:
        lab = models.labeller()
        res = lab.label([r["prompt"] for r in rows], [r["a"] for r in rows], [r["b"] for r in rows], seed=cfg.seed)
        np.save(tmp / "p_first.npy", res.p_first, allow_pickle=False)
        np.save(tmp / "p_a.npy", res.p_a, allow_pickle=False)
        n_sl = len(rows) - sample_stage.meta["result"]["n"]
        edges = np.linspace(0, 1, 11)
        extra: dict[str, Any] = {"p_a_histogram": {
            "edges": edges.tolist(),
            **{f"ordering_{o + 1}": np.histogram(res.p_a[:, o].ravel(), edges)[0].tolist() for o in range(res.p_a.shape[1])}}}
        if n_sl > 0:  # on SL-CAI pairs "a" is the revision: how often does the labeller prefer it?
            extra["prefers_revision"] = float((res.p_first[-n_sl:] > 0.5).mean())
        return {**res.summary(), **extra}

    fb_stage = store.run("rlaif-feedback", {**labeller_inputs, "samples": sample_stage.key, "slcai": sl_key,
                                            "include_slcai": src.include_slcai_pairs, "seed": cfg.seed},
                         feedback, label="AI feedback", version=2)
    p_first = np.load(fb_stage.file("p_first.npy"), allow_pickle=False)
    pairs = Pairs([r["prompt"] for r in rows], [r["a"] for r in rows], [r["b"] for r in rows], p_first)
    return pairs, {"key": fb_stage.key, "n": len(pairs), "kind": "ai", **fb_stage.meta["result"]}


def _as_text(value: Any) -> str:
    """A TRL standard (string) or conversational (list of messages) value as plain text."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(m, dict) and "content" in m for m in value):
        if len(value) == 1:
            return str(value[0]["content"])
        return "\n".join(f"{str(m.get('role', 'user')).capitalize()}: {m['content']}" for m in value)
    return "" if value is None else str(value)


def _split_shared_prefix(chosen: str, rejected: str) -> dict[str, str]:
    """TRL's implicit-prompt split for plain strings, moved back to a word boundary (so that "I'm
    sorry" and "I think" do not leave "I" in the prompt)."""
    from trl.data_utils import extract_prompt

    cut = len(extract_prompt({"chosen": chosen, "rejected": rejected})["prompt"])
    while cut > 0 and not (chosen[cut - 1].isspace() or chosen[cut - 1] == ":"):
        cut -= 1
    return {"prompt": chosen[:cut], "chosen": chosen[cut:], "rejected": rejected[cut:]}


def load_preference_rows(path: str, hub: bool = False) -> list[dict]:
    """``prompt``/``chosen``/``rejected`` rows from a local file or a hub data set.

    Reads TRL's preference formats: explicit or implicit prompt (``chosen``/``rejected`` that share
    it as a prefix, as in Anthropic/hh-rlhf: split off by TRL's ``extract_prompt``, at a word
    boundary for strings), standard strings or conversational lists of messages (flattened to text).
    """
    import pandas as pd
    from trl.data_utils import maybe_extract_prompt

    if hub:
        from datasets import load_dataset

        frame = load_dataset(path, split="train").to_pandas()
    else:
        p = Path(path)
        if not p.exists():
            raise ConfigError("preferences.path", f"file '{path}' does not exist", "give a JSONL/CSV/Parquet file")
        frame = (pd.read_json(p, lines=p.suffix == ".jsonl") if p.suffix in (".jsonl", ".json")
                 else pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p))
    for col in ("chosen", "rejected"):
        if col not in frame.columns:
            raise ConfigError(f"preferences.path: column '{col}'", f"is missing; columns are {list(frame.columns)}",
                              "provide chosen and rejected columns, and prompt unless both responses start with it "
                              "(TRL preference format)")
    cols = [c for c in ("prompt", "chosen", "rejected") if c in frame.columns]
    rows = []
    for r in frame[cols].to_dict("records"):
        r = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in r.items()}  # arrays from parquet/arrow
        if "prompt" not in r and isinstance(r["chosen"], str) and isinstance(r["rejected"], str):
            r = _split_shared_prefix(r["chosen"], r["rejected"])
        else:
            r = maybe_extract_prompt(r)
        rows.append({k: _as_text(r.get(k)).strip() if k == "prompt" else _as_text(r.get(k))
                     for k in ("prompt", "chosen", "rejected")})
    for i, r in enumerate(rows):
        for col in ("prompt", "chosen", "rejected"):
            if not isinstance(r[col], str) or not r[col].strip():
                raise ConfigError(f"preferences.path: row {i}.{col}", "is empty", "drop empty rows")
    return rows


def pairs_from_rows(rows: list[dict], seed: int) -> Pairs:
    """Hard-labelled pairs with the chosen response first or second at random (p = 1 or 0)."""
    rng = random.Random(seed)
    prompts, a, b, p = [], [], [], []
    for r in rows:
        first = rng.random() < 0.5
        prompts.append(r["prompt"])
        a.append(r["chosen"] if first else r["rejected"])
        b.append(r["rejected"] if first else r["chosen"])
        p.append(1.0 if first else 0.0)
    return Pairs(prompts, a, b, np.array(p))


def _evaluate(cfg: RLAIFConfig, store: Store, models: Models, pm: PreferenceModel, pm_key: str, prompts: list[str],
              policies: dict[str, tuple[str, ...]], labeller_inputs: dict, bon_stage) -> dict:
    """Responses from each policy on held-out prompts, judged pairwise by the labeller and the PM."""

    def gen(tmp: Path) -> dict:
        out = {}
        greedy = GenerationConfig(**{**cfg.generation.model_dump(), "temperature": 0.0})
        for name, adapters in policies.items():
            model, tok = models.policy(adapters)
            res = generate(model, tok, render_chat(tok, [[{"role": "user", "content": p}] for p in prompts]), greedy,
                           seed=cfg.seed, desc=f"eval {name}")
            out[name] = {"texts": [r[0].text for r in res], "lengths": [r[0].n_tokens for r in res],
                         "finished": [r[0].finished for r in res]}
        samples = json.loads(bon_stage.file("samples.json").read_text())
        rewards = np.array(samples["rewards"])
        pick = ev.select_best_of_n(rewards, rewards.shape[1])
        n_bon = len(samples["prompts"])
        if samples["prompts"] == prompts[:n_bon] and n_bon == len(prompts):
            out[f"best-of-{rewards.shape[1]}"] = {"texts": [s[i] for s, i in zip(samples["samples"], pick)],
                                                  "lengths": None, "finished": None}
        json.dump(out, open(tmp / "responses.json", "w"))
        return {"policies": list(out)}

    gen_stage = store.run("rlaif-eval-gen", {"policies": {k: list(v) for k, v in policies.items()}, "prompts": prompts,
                                             "bon": bon_stage.key, "generation": cfg.generation.model_dump()},
                          gen, label="evaluation responses")
    responses = json.loads(gen_stage.file("responses.json").read_text())
    names = list(responses)

    def judge(tmp: Path) -> dict:
        lab = models.labeller()
        lab.cfg = lab.cfg.model_copy(update={"n_principles": cfg.eval.judge_principles})
        rewards = {n: pm.score(prompts, responses[n]["texts"]) for n in names}
        comparisons = {}
        for y, x in ev.all_pairs(names):  # x is the later (more trained) policy: its win rate against y
            res = lab.label(prompts, responses[x]["texts"], responses[y]["texts"], seed=cfg.seed)
            comparisons[f"{x}|{y}"] = {"labeller": ev.wins_from_preferences(res.p_first).tolist(),
                                       "pm": ev.wins_from_rewards(rewards[x], rewards[y]).tolist()}
        return {"comparisons": comparisons, "pm_reward": {n: float(np.mean(r)) for n, r in rewards.items()}}

    judge_stage = store.run("rlaif-eval-judge", {"responses": gen_stage.key, "pm": pm_key, **labeller_inputs,
                                                 "judge_principles": cfg.eval.judge_principles},
                            judge, label="win-rate judging")
    comp = judge_stage.meta["result"]["comparisons"]
    win_rates = {}
    for key, j in comp.items():
        win_rates[key] = {judge_name: mean_ci(np.array(v), cfg.eval.n_boot).as_dict() for judge_name, v in j.items()}
    elo = {judge_name: ev.elo_ratings(names, {tuple(k.split("|")): np.array(v[judge_name]) for k, v in comp.items()},
                                      anchor="initial")
           for judge_name in ("labeller", "pm")}
    lengths = {n: float(np.mean(r["lengths"])) for n, r in responses.items() if r.get("lengths")}
    diversity = {n: ev.distinct_n(r["texts"], 2) for n, r in responses.items()}
    return {"policies": names, "win_rates": win_rates, "elo": elo, "pm_reward": judge_stage.meta["result"]["pm_reward"],
            "mean_length": lengths, "distinct_2": diversity, "judge_disagreements": ev.judge_disagreements(win_rates),
            "n_prompts": len(prompts),
            "examples": [{"prompt": prompts[i], **{n: responses[n]["texts"][i] for n in names}} for i in range(min(3, len(prompts)))]}
