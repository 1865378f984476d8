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

import logging
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from superalign.data.preferences import Pairs, load_preference_rows, pairs_from_rows
from superalign.errors import ConfigError, DataError
from superalign.io import read_json, read_jsonl, write_json_atomic, write_jsonl_atomic, write_text_atomic
from superalign.metrics import mean_ci
from superalign.models.cache import model_scope
from superalign.models.loading import model_identity, model_notes
from superalign.rlaif import evaluate as ev
from superalign.rlaif.config import RLAIFConfig
from superalign.rlaif.constitution import load_constitution
from superalign.rlaif.feedback import agreement_with_labels
from superalign.rlaif.generation import GenerationConfig, generate, render_chat
from superalign.rlaif.models import Models, load_pm
from superalign.rlaif.pm import PreferenceModel
from superalign.rlaif.prompts import (  # noqa: F401  (re-exported)
    TAGS,
    PromptSet,
    build_known_pairs,
    load_prompt_set,
    policy_prompts_from_pairs,
    split_prompts,
)
from superalign.store.store import Stage, Store, default_store_root

log = logging.getLogger("superalign.rlaif")


@dataclass
class RLAIFResult:
    config: RLAIFConfig
    summary: dict[str, Any]
    out_dir: Path | None = None

    def table(self) -> str:
        from superalign.report.rlaif import rlaif_text

        return rlaif_text(self.summary)


def run_rlaif(cfg: RLAIFConfig, *, out_dir: str | Path | None = None, store: Store | None = None) -> RLAIFResult:
    """Run (or resume) the chain; every stage is cached in ``store``.

    The chain is this sequence of :class:`RLAIFStages` calls. To add a stage, add a method there
    that calls ``self.stage(kind, inputs, compute, label)`` (a cached :meth:`Store.run`) and records
    its summary entry, and call it here where its inputs are ready.
    """
    t0 = time.perf_counter()
    with model_scope(name="rlaif") as cache:  # the run's models are released when it returns
        cfg.check()
        st = RLAIFStages(cfg, store or Store(default_store_root()), Models(cfg, cache))
        revisions = st.slcai()  # 1. SL-CAI: critique → revision
        sft = st.sft(revisions)  # SFT on the revisions (adapters; () when off)
        st.labeller_vs_labelled_pairs()  # 2. the labeller on the prompt set's labelled pairs
        prefs = st.preference_pairs(revisions, sft)  # AI feedback on policy samples, or RLHF data
        st.policy_prompts(prefs)  # eval / RL prompts (RLHF: from the preference data's prompts)
        st.labeller_vs_preference_data(prefs)  # RLHF: would AI feedback have given the data's labels?
        pm = st.preference_model(prefs)  # 3. PMP + Bradley-Terry PM
        st.known_pairs(pm, sft)  # opt-in: PM accuracy / labeller agreement on pairs with a known better side
        bon = st.best_of_n(pm, sft)  # 4. best-of-n curve
        trained = st.optimise(pm, prefs, sft)  # 5. RL (KL leash to the SFT policy) and/or DPO, per policy_opt
        for r in range(2, cfg.rounds + 1):  # iterated rounds: new samples → feedback → PM refit → optimise
            trained.update(st.round(r, revisions, trained))
        base = {"initial": (), **({"sft": sft} if sft else {})}
        st.evaluate(pm, {**base, **trained}, bon)  # 6. win rates, Elo (overall and per tag)
        st.round_summary(list(base)[-1])
        return st.finish(out_dir, t0)


@dataclass
class Revisions:
    """SL-CAI output: the stage key and its rows (``prompt``, ``chosen`` = revision, ``rejected`` = first answer)."""

    key: str
    rows: list[dict]


@dataclass
class Preferences:
    """The PM's comparisons and where they came from (``meta["key"]`` identifies them in stage keys)."""

    pairs: Pairs
    meta: dict[str, Any]


@dataclass
class TrainedPM:
    key: str
    model: PreferenceModel


def _adapter_key(adapters: tuple[str, ...]) -> str:
    return adapters[0] if adapters else "none"


class RLAIFStages:
    """The chain's cached stages bound to one config, store and models.

    Each public method is one named step: it builds its stage inputs (everything its result depends
    on, including upstream stage keys), runs ``compute`` through the store unless cached, records
    its entry in :attr:`summary` and returns what later steps need.
    """

    def __init__(self, cfg: RLAIFConfig, store: Store, models: Models):
        self.cfg, self.store, self.models = cfg, store, models
        self.constitution = load_constitution(cfg.constitution)
        self.ps = load_prompt_set(cfg.prompts)
        # eval is drawn last, so a larger evaluation (--eval full) leaves the training prompts, and with
        # them every training stage, as they were
        self.split = split_prompts(self.ps, {"slcai": cfg.slcai.n_prompts,
                                             "pref": cfg.preferences.n_prompts if cfg.preferences.source == "ai" else 0,
                                             "eval": cfg.eval.n_prompts}, cfg.seed)
        self.policy_id = model_identity(cfg.policy)
        self.base_inputs = {"policy": self.policy_id, "generation": cfg.generation.model_dump(), "seed": cfg.seed,
                            "constitution": self.constitution.as_dict()}
        self.labeller_inputs = {"model": model_identity(cfg.feedback.model), "cfg": cfg.feedback.model_dump(),
                                "constitution": self.constitution.as_dict()}
        self.rounds_log: list[dict] = []
        self.summary: dict[str, Any] = {
            "policy": cfg.policy, "feedback_model": cfg.feedback.model, "pm_model": cfg.pm.model,
            "preference_source": cfg.preferences.source, "constitution": self.constitution.name,
            "n_principles": len(self.constitution.principles)}

    def stage(self, kind: str, inputs: dict[str, Any], compute: Callable[[Path], dict], label: str, **kw: Any) -> Stage:
        return self.store.run(kind, inputs, compute, label=label, **kw)

    # 1. SL-CAI --------------------------------------------------------------------------------
    def slcai(self) -> Revisions:
        cfg = self.cfg

        def compute(tmp: Path) -> dict:
            from superalign.rlaif.slcai import critique_revision

            model, tok, _ = self.models.base()
            rows = critique_revision(model, tok, self.split["slcai"], self.constitution, rounds=cfg.slcai.rounds,
                                     gen=cfg.generation, seed=cfg.seed)
            write_jsonl_atomic(tmp / "rows.jsonl", rows)
            return {"n": len(rows), "revised": sum(r["chosen"] != r["rejected"] for r in rows)}

        st = self.stage("rlaif-slcai", {**self.base_inputs, "prompts": self.split["slcai"], "rounds": cfg.slcai.rounds},
                        compute, "SL-CAI critique/revision")
        rows = read_jsonl(st.file("rows.jsonl"))
        self.summary["slcai"] = {**st.meta["result"], "examples": rows[:3]}
        return Revisions(st.key, rows)

    def sft(self, revisions: Revisions) -> tuple[str, ...]:
        """LoRA SFT of the policy on the revisions; the adapter directories to merge (none when off)."""
        cfg = self.cfg
        if not cfg.slcai.sft:
            return ()

        def compute(tmp: Path) -> dict:
            from superalign.rlaif.slcai import sft_on_revisions

            model, tok = self.models.policy()
            return {"losses": sft_on_revisions(model, tok, revisions.rows, tmp, epochs=cfg.slcai.sft_epochs,
                                               lr=cfg.slcai.sft_lr, seed=cfg.seed)}

        st = self.stage("rlaif-sft", {"slcai": revisions.key, "epochs": cfg.slcai.sft_epochs, "lr": cfg.slcai.sft_lr},
                        compute, "SFT on revisions")
        self.summary["sft"] = st.meta["result"]
        return (str(st.file("adapter")),)

    # 2. preference data -----------------------------------------------------------------------
    def labeller_vs_labelled_pairs(self) -> None:
        """Agreement of the AI labeller with the prompt set's labelled pairs (if it has any)."""
        rows, seed = self.ps.labelled_pairs, self.cfg.seed
        if not rows:
            return

        def compute(tmp: Path) -> dict:
            rng = random.Random(seed)
            flip = [rng.random() < 0.5 for _ in rows]  # chosen shown first or second at random
            first = [r["rejected"] if f else r["chosen"] for r, f in zip(rows, flip)]
            second = [r["chosen"] if f else r["rejected"] for r, f in zip(rows, flip)]
            res = self.models.labeller().label([r["prompt"] for r in rows], first, second, seed=seed)
            truth = np.array([not f for f in flip])
            return {"agreement": agreement_with_labels(res.p_first, truth), "n": len(rows), **res.summary(),
                    "p_chosen_mean": float(np.where(truth, res.p_first, 1 - res.p_first).mean())}

        st = self.stage("rlaif-feedback-check", {**self.labeller_inputs, "pairs": rows, "seed": seed}, compute,
                        "labeller vs labelled pairs")
        self.summary["labeller_vs_labelled_pairs"] = st.meta["result"]

    def preference_pairs(self, revisions: Revisions, adapters: tuple[str, ...]) -> Preferences:
        """Comparisons for the PM: AI-labelled policy samples (RLAIF), or human / chess pairs (RLHF)."""
        cfg, src = self.cfg, self.cfg.preferences
        if src.source in ("file", "hub"):
            if not src.path:
                raise ConfigError("preferences.path", f"is required for source '{src.source}'",
                                  "give a prompt/chosen/rejected file or a hub data set name")
            pairs = pairs_from_rows(load_preference_rows(src.path, hub=src.source == "hub"), cfg.seed)
            prefs = Preferences(pairs, {"key": f"{src.source}:{src.path}:{len(pairs)}", "n": len(pairs),
                                        "kind": "human"})
        elif src.source == "chess":
            from superalign.data.chess import cached_move_preference_pairs

            pairs = pairs_from_rows(cached_move_preference_pairs(src.n_chess, seed=cfg.seed), cfg.seed)
            prefs = Preferences(pairs, {"key": f"chess:{src.n_chess}:{cfg.seed}", "n": len(pairs), "kind": "stockfish"})
        else:
            rows, n_samples = self.policy_samples(revisions, adapters)
            if src.include_slcai_pairs:
                rows += [{"prompt": r["prompt"], "a": r["chosen"], "b": r["rejected"]} for r in revisions.rows
                         if r["chosen"] != r["rejected"]]
            prefs = self.ai_feedback(rows, n_samples, revisions)
        self.summary["preferences"] = prefs.meta
        return prefs

    def policy_samples(self, revisions: Revisions, adapters: tuple[str, ...],
                       round_: int = 1) -> tuple[list[dict], dict]:
        """Two samples per preference prompt from the (SFT) policy (in later rounds, the current policy):
        rows ``prompt``, ``a``, ``b``."""
        cfg, prompts = self.cfg, self.split["pref"]
        extra = {} if round_ == 1 else {"round": round_, "from": list(adapters)}

        def compute(tmp: Path) -> dict:
            model, tok = self.models.policy(adapters)
            out = generate(model, tok, _chat(tok, prompts), cfg.generation, seed=cfg.seed + 3 + 101 * (round_ - 1),
                           num_return_sequences=2, desc="preference samples")
            write_jsonl_atomic(tmp / "samples.jsonl",
                               [{"prompt": p, "a": o[0].text, "b": o[1].text} for p, o in zip(prompts, out)])
            return {"n": len(prompts)}

        st = self.stage("rlaif-samples", {"adapters": _adapter_key(adapters), "slcai": revisions.key,
                                          "prompts": prompts, "generation": cfg.generation.model_dump(),
                                          "policy": self.policy_id, "seed": cfg.seed, **extra},
                        compute, "policy samples for feedback" + ("" if round_ == 1 else f" (round {round_})"))
        return read_jsonl(st.file("samples.jsonl")), {"key": st.key, "n": st.meta["result"]["n"]}

    def ai_feedback(self, rows: list[dict], samples: dict, revisions: Revisions) -> Preferences:
        """The labeller's P(a better) on each row, both orderings and the principle ensemble."""
        cfg = self.cfg

        def compute(tmp: Path) -> dict:
            res = self.models.labeller().label([r["prompt"] for r in rows], [r["a"] for r in rows],
                                               [r["b"] for r in rows], seed=cfg.seed)
            np.save(tmp / "p_first.npy", res.p_first, allow_pickle=False)
            np.save(tmp / "p_a.npy", res.p_a, allow_pickle=False)
            n_sl = len(rows) - samples["n"]
            edges = np.linspace(0, 1, 11)
            extra: dict[str, Any] = {"p_a_histogram": {
                "edges": edges.tolist(),
                **{f"ordering_{o + 1}": np.histogram(res.p_a[:, o].ravel(), edges)[0].tolist()
                   for o in range(res.p_a.shape[1])}}}
            if n_sl > 0:  # on SL-CAI pairs "a" is the revision: how often does the labeller prefer it?
                extra["prefers_revision"] = float((res.p_first[-n_sl:] > 0.5).mean())
            return {**res.summary(), **extra}

        st = self.stage("rlaif-feedback", {**self.labeller_inputs, "samples": samples["key"], "slcai": revisions.key,
                                           "include_slcai": cfg.preferences.include_slcai_pairs, "seed": cfg.seed},
                        compute, "AI feedback", version=2)
        p_first = np.load(st.file("p_first.npy"), allow_pickle=False)
        pairs = Pairs([r["prompt"] for r in rows], [r["a"] for r in rows], [r["b"] for r in rows], p_first)
        return Preferences(pairs, {"key": st.key, "n": len(pairs), "kind": "ai", **st.meta["result"]})

    def policy_prompts(self, prefs: Preferences) -> None:
        self._first_prefs = prefs
        """RL prompts: the SL-CAI and preference prompts (RLAIF), or, for RLHF, held-out evaluation prompts
        and RL prompts drawn from the preference data's own prompts."""
        if self.cfg.preferences.source == "ai":
            self.split["rl"] = self.split["slcai"] + self.split["pref"]
        else:
            self.split["eval"], self.split["rl"] = policy_prompts_from_pairs(prefs.pairs.prompts,
                                                                             self.cfg.eval.n_prompts, self.cfg.seed)

    def labeller_vs_preference_data(self, prefs: Preferences) -> None:
        """RLHF only: agreement of the AI labeller with the preference data's labels (first 64 pairs)."""
        if self.cfg.preferences.source == "ai":
            return
        check, seed = prefs.pairs.subset(range(min(64, len(prefs.pairs)))), self.cfg.seed

        def compute(tmp: Path) -> dict:
            res = self.models.labeller().label(check.prompts, check.a, check.b, seed=seed)
            return {"agreement": agreement_with_labels(res.p_first, check.p > 0.5), "n": len(check), **res.summary()}

        st = self.stage("rlaif-feedback-vs-data", {**self.labeller_inputs, "pairs": prefs.meta["key"], "n": len(check),
                                                   "seed": seed}, compute, "labeller vs preference data")
        self.summary["labeller_vs_preference_data"] = st.meta["result"]

    # 3. preference model (+ PMP) ----------------------------------------------------------------
    def preference_model(self, prefs: Preferences, summary_key: str | None = "pm", study: bool = True) -> TrainedPM:
        """PMP (optional) then Bradley-Terry on ``prefs``' train split; ``study=False`` skips the PMP
        data-efficiency study (later rounds)."""
        cfg, models, pairs = self.cfg, self.models, prefs.pairs
        n_test = max(2, int(round(len(pairs) * cfg.preferences.test_fraction)))
        perm = np.random.default_rng(cfg.seed).permutation(len(pairs))
        test_pairs, train_pairs = pairs.subset(perm[:n_test]), pairs.subset(perm[n_test:])
        inputs = {"model": model_identity(cfg.pm.model), "pm": cfg.pm.model_dump(), "pmp": cfg.pmp.model_dump(),
                  "pairs": prefs.meta["key"], "seed": cfg.seed, **({} if study else {"study": False})}

        def compute(tmp: Path) -> dict:
            from safetensors.torch import save_file

            from superalign.rlaif.pmp import data_efficiency, load_ranked_answers, ranked_pairs, wordnet_ranked_answers

            pm = models.pm()
            out: dict[str, Any] = {"n_train": len(train_pairs), "n_test": len(test_pairs)}
            if cfg.pmp.enabled:
                ranked = (wordnet_ranked_answers(cfg.pmp.n_questions, cfg.seed) if cfg.pmp.source == "wordnet"
                          else load_ranked_answers(cfg.pmp.source, limit=cfg.pmp.n_questions))
                pmp_pairs = ranked_pairs(ranked, seed=cfg.seed)
                out["pmp_pairs"] = len(pmp_pairs)
                if study:
                    out["data_efficiency"] = data_efficiency(models.pm, pmp_pairs, train_pairs, test_pairs, cfg.pmp.sizes,
                                                             cfg.pmp.seeds, pmp_epochs=cfg.pmp.epochs)
                pm.fit(pmp_pairs, seed=cfg.seed, epochs=cfg.pmp.epochs)
                out["pmp_eval_on_target"] = pm.evaluate(test_pairs)
            out["curve"] = pm.fit(train_pairs, seed=cfg.seed, init_from_scratch=not cfg.pmp.enabled)
            out["train"] = pm.evaluate(train_pairs)
            out["test"] = pm.evaluate(test_pairs)
            save_file({k: v.contiguous() for k, v in pm.head.state_dict().items()}, str(tmp / "head.safetensors"))
            return out

        st = self.stage("rlaif-pm", inputs, compute, "preference model")
        if summary_key:
            self.summary[summary_key] = st.meta["result"]
        self.pm_results = {**getattr(self, "pm_results", {}), st.key: st.meta["result"]}
        return TrainedPM(st.key, load_pm(models, st.file("head.safetensors")))

    def known_pairs(self, pm: TrainedPM, adapters: tuple[str, ...]) -> None:
        """``eval.known_pairs`` held-out pairs whose better side is known by construction, from policy
        samples on the evaluation prompts (never seen by the PM): an answer against the same answer with
        its words shuffled, or against an answer to another prompt. PM accuracy and labeller agreement
        with bootstrap CIs; with ``eval.labeller_remedies``, the labeller's order consistency and
        agreement for one ordering, both orderings, CoT + clamping and the full principle ensemble."""
        cfg = self.cfg
        n = cfg.eval.known_pairs
        if not n:
            return
        prompts = self.split["eval"]
        k = max(1, -(-n // (2 * len(prompts))))  # samples per prompt

        def compute(tmp: Path) -> dict:
            model, tok = self.models.policy(adapters)
            out = generate(model, tok, _chat(tok, prompts), cfg.generation, seed=cfg.seed + 11, num_return_sequences=k,
                           desc="known-pair samples")
            rows = build_known_pairs(prompts, [[c.text for c in o] for o in out], n, cfg.seed)
            write_jsonl_atomic(tmp / "pairs.jsonl", rows)
            if not rows:
                raise DataError("eval.known_pairs", "the policy's answers were too short to build pairs from",
                                "raise generation.max_new_tokens or set eval.known_pairs: 0")
            a_better = np.array([r["a_better"] for r in rows], dtype=bool)
            ps, xa, xb = [r["prompt"] for r in rows], [r["a"] for r in rows], [r["b"] for r in rows]
            ra, rb = pm.model.score(ps, xa), pm.model.score(ps, xb)
            pm_hits = np.where(ra == rb, 0.5, (ra > rb) == a_better)
            kinds = np.array([r["kind"] for r in rows])
            res: dict[str, Any] = {"n": len(rows), "samples_per_prompt": k,
                                   "pm_accuracy": mean_ci(pm_hits, cfg.eval.n_boot).as_dict(),
                                   "pm_accuracy_by_kind": {kd: mean_ci(pm_hits[kinds == kd], cfg.eval.n_boot).as_dict()
                                                           for kd in dict.fromkeys(kinds.tolist())}}
            # the labeller as it judges win rates (eval.judge_principles); the remedies are stages of their own
            res["labeller"] = self._labeller_rows(f"as judge ({cfg.eval.judge_principles} principle(s))",
                                                  {"n_principles": cfg.eval.judge_principles}, rows)
            return res

        st = self.stage("rlaif-known-pairs", {"policy": self.policy_id, "adapters": list(adapters), "pm": pm.key,
                                              "prompts": prompts, "n": n, "generation": cfg.generation.model_dump(),
                                              "remedies": {"judge": cfg.eval.judge_principles},
                                              **self.labeller_inputs,
                                              "seed": cfg.seed}, compute, "known-better pairs", version=2)
        result = dict(st.meta["result"])
        if cfg.eval.labeller_remedies:
            result["labeller"] = result["labeller"] + self.labeller_remedies(st)
        self.summary["known_pairs"] = result

    def _labeller_rows(self, name: str, update: dict, rows: list[dict], one_ordering: bool = False) -> list[dict]:
        """Agreement with the known better side and order consistency of the labeller with ``update``
        applied to its config; with ``one_ordering`` (a both-orderings variant) first the row of the
        first ordering alone, read from the same evaluations."""
        cfg = self.cfg
        a_better = np.array([r["a_better"] for r in rows], dtype=bool)
        lab = self.models.labeller()
        base = lab.cfg
        lab.cfg = base.model_copy(update=update)
        try:
            fb = lab.label([r["prompt"] for r in rows], [r["a"] for r in rows], [r["b"] for r in rows], seed=cfg.seed)
        finally:
            lab.cfg = base

        def row(label: str, p_first: np.ndarray) -> dict:
            hits = np.where(p_first == 0.5, 0.5, (p_first > 0.5) == a_better)
            return {"variant": label, **fb.summary(), "agreement": mean_ci(hits, cfg.eval.n_boot).as_dict()}

        table = [row(name, fb.p_first)]
        if one_ordering:
            one = row("one ordering", fb.p_a[:, 0, :].mean(1))
            one["position_bias"] = float(fb.p_a[:, 0].mean() - 0.5)
            table.insert(0, one)
        return table

    def labeller_remedies(self, known: Stage) -> list[dict]:
        """The remedy table on the known-better pairs, one cached stage per remedy (the CoT one is long,
        and an interrupted run keeps the remedies already measured): one ordering and both orderings
        averaged (from one set of evaluations), CoT + clamping, and the principle ensemble."""
        cfg = self.cfg
        rows = read_jsonl(known.file("pairs.jsonl"))
        n_ens = min(cfg.eval.ensemble_principles, len(self.constitution.principles))
        both = "both orderings averaged"
        variants = {both: {"both_orderings": True},
                    "CoT + clamp [0.4, 0.6]": {"both_orderings": True, "cot": True, "clamp": (0.4, 0.6),
                                               "cot_max_new_tokens": cfg.eval.cot_max_new_tokens},
                    f"ensemble of {n_ens} principles": {"both_orderings": True, "n_principles": n_ens}}
        table: list[dict] = []
        for name, update in variants.items():
            def compute(tmp: Path, name=name, update=update) -> dict:
                return {"rows": self._labeller_rows(name, update, rows, one_ordering=name == both)}

            st = self.stage("rlaif-labeller-remedy", {"pairs": known.key, "variant": name, "update": update,
                                                      **self.labeller_inputs, "seed": cfg.seed},
                            compute, f"labeller remedy: {name}")
            table += st.meta["result"]["rows"]
        return table

    # 4. best-of-n -------------------------------------------------------------------------------
    def best_of_n(self, pm: TrainedPM, adapters: tuple[str, ...]) -> Stage:
        cfg = self.cfg
        prompts = self.split["eval"][: cfg.best_of_n.n_prompts]

        def compute(tmp: Path) -> dict:
            model, tok = self.models.policy(adapters)
            n_max = max(cfg.best_of_n.ns)
            samples = generate(model, tok, _chat(tok, prompts), cfg.generation, seed=cfg.seed + 7,
                               num_return_sequences=n_max, desc="best-of-n samples")
            texts = [[c.text for c in s] for s in samples]
            rewards = np.array([pm.model.score([p] * n_max, t) for p, t in zip(prompts, texts)])
            lengths = np.array([[c.n_tokens for c in s] for s in samples], dtype=float)
            pick = ev.select_best_of_n(rewards, n_max)
            write_json_atomic(tmp / "samples.json", {"prompts": prompts, "samples": texts, "rewards": rewards.tolist()})
            return {"curve": ev.best_of_n_curve(rewards, cfg.best_of_n.ns), "mean_length_all": float(lengths.mean()),
                    "mean_length_best": float(lengths[np.arange(len(pick)), pick].mean())}

        st = self.stage("rlaif-bon", {"policy": self.policy_id, "adapters": _adapter_key(adapters), "pm": pm.key,
                                      "cfg": cfg.best_of_n.model_dump(), "generation": cfg.generation.model_dump(),
                                      "prompts": prompts, "seed": cfg.seed}, compute, "best-of-n")
        self.summary["best_of_n"] = st.meta["result"]
        return st

    # 5. RL --------------------------------------------------------------------------------------
    def optimise(self, pm: TrainedPM, prefs: Preferences, adapters: tuple[str, ...], suffix: str = "",
                 ) -> dict[str, tuple[str, ...]]:
        """The trained policies of ``cfg.optimisers`` from ``adapters``: ``rl`` (RL against the PM),
        ``rl-direct`` (d-RLAIF, the labeller's rating as reward) and ``dpo``; each name + ``suffix``."""
        out: dict[str, tuple[str, ...]] = {}
        for opt in self.cfg.optimisers:
            if opt in ("rloo", "grpo"):
                rl_cfg = self.cfg.rl.model_copy(update={"algo": opt})
                if rl_cfg.reward in ("pm", "both"):
                    out["rl" + suffix] = self.rl(pm, adapters, rl_cfg, "rl" + suffix.replace("-", "_"))
                if rl_cfg.reward in ("labeller", "both"):
                    out["rl-direct" + suffix] = self.rl(None, adapters, rl_cfg, "rl_direct" + suffix.replace("-", "_"))
            elif opt == "dpo":
                out["dpo" + suffix] = self.dpo(prefs, adapters, "dpo" + suffix.replace("-", "_"))
        return out

    def rl(self, pm: TrainedPM | None, adapters: tuple[str, ...], rl_cfg=None, summary_key: str = "rl",
           ) -> tuple[str, ...]:
        """RLOO/GRPO from (and KL-leashed to) the policy ``adapters`` against the PM, or with ``pm=None``
        against the labeller's own rating (d-RLAIF, Lee et al. 2023); its adapters."""
        cfg, prompts = self.cfg, self.split["rl"]
        rl_cfg = rl_cfg or cfg.rl
        direct = pm is None

        def compute(tmp: Path) -> dict:
            from superalign.rlaif.feedback import direct_reward
            from superalign.rlaif.rl import train_rl

            model, tok = self.models.policy(adapters)
            if direct:
                lab = self.models.labeller()
                score = lambda p, r: direct_reward(lab, p, r, seed=cfg.seed)  # noqa: E731
            else:
                score = lambda p, r: pm.model.score(p, r)  # noqa: E731
            return {"history": train_rl(model, tok, prompts, score, rl_cfg, tmp, seed=cfg.seed),
                    "reward": "labeller" if direct else "pm"}

        inputs = {"policy": self.policy_id, "adapters": _adapter_key(adapters),
                  "pm": "labeller" if direct else pm.key, "rl": rl_cfg.model_dump(exclude={"reward"}),
                  "prompts": prompts, "seed": cfg.seed}
        if direct:
            inputs["labeller"] = self.labeller_inputs
        if len(adapters) > 1:
            inputs["from"] = list(adapters)
        st = self.stage("rlaif-rl", inputs, compute, f"RL ({rl_cfg.algo}{', d-RLAIF' if direct else ''})")
        self.summary[summary_key] = st.meta["result"]
        return (*adapters, str(st.file("adapter")))

    def dpo(self, prefs: Preferences, adapters: tuple[str, ...], summary_key: str = "dpo") -> tuple[str, ...]:
        """DPO (TRL, LoRA) from the policy ``adapters`` on every labelled pair, oriented by the soft label,
        with conservative-DPO label smoothing from the labeller's confidence; its adapters."""
        from superalign.rlaif.dpo import dpo_rows

        cfg, pairs = self.cfg, prefs.pairs
        rows, p_chosen = dpo_rows(pairs.prompts, pairs.a, pairs.b, pairs.p, cfg.dpo.min_confidence)
        if len(rows) < 2:
            raise ConfigError("policy_opt", f"has dpo, but only {len(rows)} of {len(pairs)} preference pairs are "
                              "usable (distinct responses, confident labels)",
                              "raise preferences.n_prompts or lower dpo.min_confidence")

        def compute(tmp: Path) -> dict:
            from superalign.rlaif.dpo import train_dpo

            model, tok = self.models.policy(adapters)
            return train_dpo(model, tok, rows, p_chosen, cfg.dpo, tmp, seed=cfg.seed)

        inputs = {"policy": self.policy_id, "adapters": _adapter_key(adapters), "pairs": prefs.meta["key"],
                  "dpo": cfg.dpo.model_dump(), "seed": cfg.seed}
        if len(adapters) > 1:
            inputs["from"] = list(adapters)
        st = self.stage("rlaif-dpo", inputs, compute, "DPO")
        self.summary[summary_key] = st.meta["result"]
        return (*adapters, str(st.file("adapter")))

    # iterated rounds ----------------------------------------------------------------------------
    def round(self, r: int, revisions: Revisions, trained: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        """Round ``r`` (2, 3, ...): sample the current policy (the previous round's first trained policy),
        label new pairs, refit the PM on every pair so far, optimise again from the current policy."""
        prev = [n for n in trained if _round_of(n) == r - 1]
        current = trained[prev[0]]
        rows, samples = self.policy_samples(revisions, current, round_=r)
        new = self.ai_feedback(rows, samples, revisions)
        before = self._round_prefs[-1] if getattr(self, "_round_prefs", None) else self._first_prefs
        pairs = Pairs.concat([before.pairs, new.pairs])
        prefs = Preferences(pairs, {"key": f"{before.meta['key']}+{new.meta['key']}", "n": len(pairs), "kind": "ai"})
        self._round_prefs = [*getattr(self, "_round_prefs", []), prefs]
        pm = self.preference_model(prefs, summary_key=None, study=False)
        out = self.optimise(pm, prefs, current, suffix=f"-r{r}")
        self.rounds_log.append({"round": r, "from": prev[0], "policies": list(out), "n_pairs": len(pairs),
                                "new_pairs": len(new.pairs), "pm_test": self.pm_results[pm.key]["test"],
                                "feedback": {k: new.meta.get(k) for k in ("position_bias", "order_consistency")}})
        return out

    def round_summary(self, round0: str) -> None:
        """Per-round PM test accuracy and labeller win rate of each round's policies against round 0
        (the policy before any optimisation: SFT, or the initial policy)."""
        if self.cfg.rounds == 1:
            return
        wr = self.summary["eval"]["win_rates"]
        first = {"round": 1, "policies": [n for n in self.summary["eval"]["policies"]
                                          if n in ("rl", "rl-direct", "dpo")], "n_pairs": self._first_prefs.meta["n"],
                 "pm_test": self.summary["pm"]["test"]}
        self.rounds_log.sort(key=lambda row: row["round"])
        rows = [first, *self.rounds_log]
        for row in rows:
            row["win_rate_vs_round0"] = {n: wr.get(f"{n}|{round0}", {}).get("labeller") for n in row["policies"]}
        self.summary["rounds"] = {"round0": round0, "rounds": rows}

    # 6. evaluation ------------------------------------------------------------------------------
    def eval_responses(self, policies: dict[str, tuple[str, ...]], bon: Stage) -> tuple[str, list[str], dict]:
        """Greedy responses of each policy (and the best-of-n picks) on the held-out prompts."""
        cfg, prompts = self.cfg, self.split["eval"]

        def compute(tmp: Path) -> dict:
            out = {}
            greedy = GenerationConfig(**{**cfg.generation.model_dump(), "temperature": 0.0})
            for name, adapters in policies.items():
                model, tok = self.models.policy(adapters)
                res = generate(model, tok, _chat(tok, prompts), greedy, seed=cfg.seed, desc=f"eval {name}")
                out[name] = {"texts": [r[0].text for r in res], "lengths": [r[0].n_tokens for r in res],
                             "finished": [r[0].finished for r in res]}
            samples = read_json(bon.file("samples.json"))
            rewards = np.array(samples["rewards"])
            pick = ev.select_best_of_n(rewards, rewards.shape[1])
            n_bon = len(samples["prompts"])
            if samples["prompts"] == prompts[:n_bon] and n_bon == len(prompts):
                out[f"best-of-{rewards.shape[1]}"] = {"texts": [s[i] for s, i in zip(samples["samples"], pick)],
                                                      "lengths": None, "finished": None}
            write_json_atomic(tmp / "responses.json", out)
            return {"policies": list(out)}  # the order of the policies (later = more trained)

        st = self.stage("rlaif-eval-gen", {"policies": {k: list(v) for k, v in policies.items()}, "prompts": prompts,
                                           "bon": bon.key, "generation": cfg.generation.model_dump()},
                        compute, "evaluation responses")
        return st.key, list(st.meta["result"]["policies"]), read_json(st.file("responses.json"))

    def eval_judge(self, pm: TrainedPM, responses_key: str, names: list[str], responses: dict) -> dict:
        """Pairwise verdicts of the labeller and the PM: for each later policy x against earlier y, x's wins."""
        cfg, prompts = self.cfg, self.split["eval"]

        def compute(tmp: Path) -> dict:
            lab = self.models.labeller()
            lab.cfg = lab.cfg.model_copy(update={"n_principles": cfg.eval.judge_principles})
            rewards = {n: pm.model.score(prompts, responses[n]["texts"]) for n in names}
            comparisons = {}
            for y, x in ev.all_pairs(names):  # x is the later (more trained) policy: its win rate against y
                res = lab.label(prompts, responses[x]["texts"], responses[y]["texts"], seed=cfg.seed)
                comparisons[f"{x}|{y}"] = {"labeller": ev.wins_from_preferences(res.p_first).tolist(),
                                           "pm": ev.wins_from_rewards(rewards[x], rewards[y]).tolist()}
            return {"comparisons": comparisons, "pm_reward": {n: float(np.mean(r)) for n, r in rewards.items()}}

        st = self.stage("rlaif-eval-judge", {"responses": responses_key, "pm": pm.key, **self.labeller_inputs,
                                             "judge_principles": cfg.eval.judge_principles},
                        compute, "win-rate judging")
        return st.meta["result"]

    def evaluate(self, pm: TrainedPM, policies: dict[str, tuple[str, ...]], bon: Stage) -> None:
        """Win rates (bootstrap CIs), Elo, PM reward, lengths, diversity and reward-hacking checks."""
        cfg, prompts = self.cfg, self.split["eval"]
        key, names, responses = self.eval_responses(policies, bon)
        judged = self.eval_judge(pm, key, names, responses)
        comp = judged["comparisons"]
        win_rates = {k: {judge: mean_ci(np.array(v), cfg.eval.n_boot).as_dict() for judge, v in j.items()}
                     for k, j in comp.items()}
        elo = {judge: ev.elo_ratings(names, {tuple(k.split("|")): np.array(v[judge]) for k, v in comp.items()},
                                     anchor="initial")
               for judge in ("labeller", "pm")}
        self.summary["eval"] = {
            "policies": names, "win_rates": win_rates, "elo": elo, "pm_reward": judged["pm_reward"],
            "mean_length": {n: float(np.mean(responses[n]["lengths"])) for n in names if responses[n].get("lengths")},
            "distinct_2": {n: ev.distinct_n(responses[n]["texts"], 2) for n in names},
            "judge_disagreements": ev.judge_disagreements(win_rates), "n_prompts": len(prompts),
            "by_tag": self.per_tag(names, comp, prompts),
            "examples": [{"prompt": prompts[i], **{n: responses[n]["texts"][i] for n in names}}
                         for i in range(min(3, len(prompts)))]}

    def per_tag(self, names: list[str], comp: dict, prompts: list[str]) -> dict[str, dict]:
        """Win rates and Elo on each tag's prompts apart (Bai et al., 2022): ``ordinary`` measures
        helpfulness, ``harmful`` harmlessness. Tags with fewer than 2 prompts are left out."""
        tags = np.array([self.ps.tag(p) for p in prompts])
        out: dict[str, dict] = {}
        for tag in dict.fromkeys(tags.tolist()):
            idx = np.flatnonzero(tags == tag)
            if len(idx) < 2:
                continue
            sub = {k: {j: np.asarray(v)[idx] for j, v in judges.items()} for k, judges in comp.items()}
            out[tag] = {"n": int(len(idx)),
                        "win_rates": {k: {j: mean_ci(v, self.cfg.eval.n_boot).as_dict() for j, v in judges.items()}
                                      for k, judges in sub.items()},
                        "elo": {j: ev.elo_ratings(names, {tuple(k.split("|")): v[j] for k, v in sub.items()},
                                                  anchor="initial") for j in ("labeller", "pm")}}
        return out

    # -- the end ----------------------------------------------------------------------------------
    def finish(self, out_dir: str | Path | None, t0: float) -> RLAIFResult:
        """Notes, stage counts and timing into the summary; ``results.json``/``summary.txt`` into ``out_dir``."""
        cfg, summary = self.cfg, self.summary
        summary["notes"] = model_notes([cfg.policy, cfg.feedback.model, cfg.pm.model])
        summary["stages"] = self.store.summary()
        summary["seconds"] = round(time.perf_counter() - t0, 1)
        result = RLAIFResult(cfg, summary)
        if out_dir is not None:
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            write_text_atomic(out / "config.yaml", cfg.to_yaml())
            write_json_atomic(out / "results.json", {"experiment": "rlaif", "config": cfg.model_dump(mode="json"),
                                                     "summary": summary})
            write_text_atomic(out / "summary.txt", result.table() + "\n")
            result.out_dir = out
        log.info(self.store.summary(detail=True))
        return result


def _round_of(name: str) -> int:
    """1 for ``rl``/``dpo``/``rl-direct``, r for ``<name>-r<r>``."""
    m = re.search(r"-r(\d+)$", name)
    return int(m.group(1)) if m else 1


def _chat(tok, prompts: list[str]) -> list[str]:
    """Each prompt as a one-turn user chat, rendered with the tokenizer's template."""
    return render_chat(tok, [[{"role": "user", "content": p}] for p in prompts])
