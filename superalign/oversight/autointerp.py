"""Automated interpretability (Bills et al. 2023): explain neurons with an LM, score by simulation.

For one layer of a model the pipeline is:

1. **Record** (:func:`record_activations`): run a text corpus through the model, hooking either the
   MLP hidden units of block ``k`` (the input of the MLP's down projection, i.e. the activation
   function's output, times the up projection in gated MLPs) or the block's output. Each example's
   activation is its maximum over (non-special) tokens. Memory stays at ``O(top_k * units * tokens)``:
   per unit, a top-k "heap" (merged with ``torch.topk`` per batch) keeps the best examples and their
   per-token activations; running sums give each unit's mean and spread; a seeded random pool of
   examples keeps all units' activations (the random half of the held-out sets). The forward pass
   stops at the hooked block.
2. **Select** (:func:`select_neurons`): a seeded random subset of live units (the unbiased default,
   as in Bills et al.) or the most variable ones.
3. **Explain** (:class:`LMExplainer`): a chat LM sees a unit's top examples (interleaved ranks
   0, 2, 4, ...) with its strongest tokens marked ``[[like this]]`` and completes
   "These texts all ...". Generation is batched across units.
4. **Simulate and score** (:class:`Simulator`): a simulator predicts each held-out example's
   activation from the explanation alone; the score is the Pearson correlation between predicted and
   true activations over held-out top examples (ranks 1, 3, 5, ...) mixed with random ones. The
   default :class:`LMSimulator` reads P(" Yes") for "Does the text match the explanation?" in one
   forward pass per (unit, text) via :func:`~superalign.models.scoring.choice_logprobs`;
   :class:`KeywordSimulator` counts the explanation's quoted strings / content words in the text.
   The baseline scores each unit with another unit's explanation (explanations shuffled by a
   derangement), so a mean score means something; CIs bootstrap over units.

Activations, explanations and simulations are :class:`~superalign.store.Store` stages keyed by the
model's identity, layer, site, corpus fingerprint, sizes and seeds. :func:`run_autointerp` runs the
pipeline for the layers of an :class:`AutoInterpConfig`; :func:`layer_report_sections` renders one
layer's page (ranked table, score histogram vs the shuffled baseline, top examples).
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from superalign.config import YamlConfig
from superalign.errors import ConfigError
from superalign.io import read_json, write_bytes_atomic, write_json_atomic
from superalign.metrics import fmt_interval
from superalign.oversight.autointerp_explain import (
    EXPLAIN_PREFIX,
    PROMPT_VERSION,
    Explainer,
    KeywordSimulator,
    LMExplainer,
    LMSimulator,
    ModelCache,
    Simulator,
    clean_explanation,
    explain_prompt,
    explanation_keywords,
    pearson,
    score_summary,
    shuffled_baseline_permutation,
)
from superalign.oversight.autointerp_record import (
    LayerActivations,
    LayerSpec,
    NeuronExamples,
    Site,
    _tokenize,
    mark_tokens,
    mlp_down_projection,
    neuron_examples,
    record_activations,
    select_neurons,
    visible_text,
)
from superalign.oversight.registry import register_measurement
from superalign.store.store import Store

log = logging.getLogger("superalign.autointerp")

__all__ = [
    "AutoInterpConfig",
    "Explainer",
    "KeywordSimulator",
    "LMExplainer",
    "LMSimulator",
    "LayerActivations",
    "ModelCache",
    "NeuronExamples",
    "Simulator",
    "autointerp_text",
    "clean_explanation",
    "explanation_keywords",
    "layer_report_sections",
    "mark_tokens",
    "mlp_down_projection",
    "neuron_examples",
    "pearson",
    "record_activations",
    "run_autointerp",
    "score_summary",
    "select_neurons",
    "shuffled_baseline_permutation",
    "write_layer_reports",
]


# --- config -----------------------------------------------------------------------------------

class AutoInterpConfig(YamlConfig):
    """What :func:`run_autointerp` does; every field is part of some stage key.

    Strict (unknown fields are errors); ``AutoInterpConfig.parse(dict)`` / ``from_yaml(path)`` turn
    validation errors into a :class:`ConfigError` naming the field. The defaults are sized for a
    2-core CPU (a few minutes): smollm2-135m explaining 16 random MLP units of its middle block
    from 1,000 Rotten Tomatoes sentences.
    """

    model: str = Field("smollm2-135m", description="model whose units are studied (zoo name, hub id or directory)")
    layer: LayerSpec | list[LayerSpec] = Field(
        "middle", description="block index (negative counts from the end), 'middle', or a list of them")
    site: Site = Field("mlp", description="mlp: the MLP's hidden units (input of its down projection); "
                                          "block: the block's output (residual stream) dimensions")
    corpus: str = Field("rotten_tomatoes", description="task name or file whose texts form the corpus")
    corpus_size: int = Field(1000, ge=4, description="texts taken from the corpus (class-balanced, seeded)")
    corpus_seed: int = 0
    max_length: int = Field(64, ge=2, description="tokens kept per text")
    batch_size: int = Field(32, ge=1)
    random_pool: int = Field(64, ge=1, description="seeded random texts whose activations are kept for all units")
    n_neurons: int = Field(16, ge=2, description="units studied per layer (>= 2 for the shuffled baseline)")
    select: Literal["random", "variance"] = Field("random", description="random live units, or the most variable")
    neuron_seed: int = 0
    top_k: int = Field(10, ge=2, description="top-activating texts per unit: even ranks explain, odd ranks are held out")
    n_random: int = Field(5, ge=0, description="random held-out texts per unit (scored with the odd-rank top texts)")
    holdout_seed: int = 0
    explainer: str = Field("smollm2-135m", description="chat LM that writes explanations")
    explain_max_new_tokens: int = Field(24, ge=1, le=256)
    explain_temperature: float = Field(0.0, ge=0, description="0 = greedy")
    explain_seed: int = 0
    explain_chars: int = Field(240, ge=20, description="characters shown per example to the explainer")
    simulator: Literal["lm", "keyword"] = Field("lm", description="lm: P(Yes) from simulator_model; keyword: matches")
    simulator_model: str = "smollm2-135m"
    simulator_batch_size: int = Field(16, ge=1)
    simulator_calibrate: bool = Field(False, description="lm: subtract each text's log-odds under a content-free "
                                                         "explanation (one more pass per distinct text)")
    baseline_seed: int = 0
    n_boot: int = Field(1000, ge=10)
    boot_seed: int = 0

    @field_validator("layer")
    @classmethod
    def _layer(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("give at least one layer")
        return v

    def layers(self) -> list[LayerSpec]:
        """The configured layers as a list (as written: resolved against the model at run time)."""
        return list(self.layer) if isinstance(self.layer, list) else [self.layer]

# --- the pipeline -----------------------------------------------------------------------------

def _corpus(cfg: AutoInterpConfig) -> tuple[list[str], str]:
    from superalign.data import load_task

    task = load_task(cfg.corpus, max_examples=cfg.corpus_size, seed=cfg.corpus_seed)
    texts = [t for t in task.inputs() if t.strip()]
    need = cfg.top_k + cfg.n_random
    if len(texts) < need:
        raise ConfigError("corpus_size", f"the corpus has {len(texts)} non-empty texts, fewer than top_k + n_random = "
                          f"{need}", "use a larger corpus/corpus_size or lower top_k and n_random")
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\x1e")
    return texts, h.hexdigest()[:20]


def _check(cfg: AutoInterpConfig) -> None:
    if cfg.random_pool < cfg.n_random + cfg.top_k and cfg.n_random > 0:
        raise ConfigError("random_pool", f"{cfg.random_pool} is below n_random + top_k = {cfg.n_random + cfg.top_k}, so "
                          "some units could lack random held-out texts", "raise random_pool or lower n_random")
    if cfg.n_neurons < 2:
        raise ConfigError("n_neurons", "the shuffled-explanation baseline needs at least 2 units", "use n_neurons >= 2")


def _simulator(cfg: AutoInterpConfig, models: ModelCache) -> Simulator:
    if cfg.simulator == "keyword":
        return KeywordSimulator()
    return LMSimulator(cfg.simulator_model, batch_size=cfg.simulator_batch_size, calibrate=cfg.simulator_calibrate,
                        models=models)


def summary_lines(r: dict[str, Any]) -> list[str]:
    """The printed lines: per layer, mean score vs the shuffled baseline and the best three units."""
    return ["automated interpretability: " + autointerp_text(r, top=3).replace("\n", "\n  ")]


def report_sections(r: dict[str, Any]) -> list:
    """The oversight report's sections: the summary, then each layer's page sections."""
    from superalign.report.html import Section

    return [Section("Automated interpretability", pre="\n".join(summary_lines(r))),
            *[s for entry in r["layers"] for s in layer_report_sections(entry)]]


@register_measurement("autointerp", config=AutoInterpConfig, default=True, summary=summary_lines,
                      report=report_sections, help="an LM explains neurons; explanations are scored by simulation")
def run_autointerp(cfg: AutoInterpConfig, store: Store, *, explainer: Explainer | None = None,
                   simulator: Simulator | None = None, models: ModelCache | None = None) -> dict[str, Any]:
    """Record, explain, simulate and score ``cfg.n_neurons`` units per layer; JSON-serialisable.

    ``explainer`` / ``simulator`` replace the ones the config names (their ``identity()`` keys the
    stages). Returns ``{"experiment": "autointerp", "config", "layers": [per-layer result], "timings",
    "stages", "notes"}``; a layer result holds its summary (mean score vs shuffled baseline with CIs)
    and the units ranked by score, each with its explanation, scores and examples.
    """
    from superalign.models.loading import model_identity, model_notes

    _check(cfg)
    models = models or ModelCache()
    explainer = explainer or LMExplainer(cfg.explainer, max_new_tokens=cfg.explain_max_new_tokens,
                                         temperature=cfg.explain_temperature, seed=cfg.explain_seed, models=models)
    simulator = simulator or _simulator(cfg, models)
    start_all = time.perf_counter()
    texts, corpus_fp = _corpus(cfg)
    ident = model_identity(cfg.model)
    layers = []
    timings: dict[str, float] = {}
    n_events = len(store.events)
    for spec in cfg.layers():
        lt: dict[str, float] = {}
        t0 = time.perf_counter()
        acts_inputs = {"model": ident, "layer": spec, "site": cfg.site, "corpus": corpus_fp, "n_texts": len(texts),
                       "max_length": cfg.max_length, "top_k": cfg.top_k, "random_pool": cfg.random_pool,
                       "pool_seed": cfg.corpus_seed}

        def compute_acts(tmp: Path, spec=spec) -> dict:
            model, tok = models.any(cfg.model)
            acts = record_activations(model, tok, texts, layer=spec, site=cfg.site, top_k=cfg.top_k,
                                      max_length=cfg.max_length, batch_size=cfg.batch_size,
                                      random_pool=cfg.random_pool, pool_seed=cfg.corpus_seed,
                                      desc=f"activations (layer {spec})")
            acts.save(tmp)
            return {"layer": acts.layer, "n_units": acts.n_units, "n_blocks": acts.n_blocks}

        acts_stage = store.run("autointerp-acts", acts_inputs, compute_acts, label=f"autointerp acts {spec}")
        acts = LayerActivations.load(acts_stage.path)
        lt["record_s"] = time.perf_counter() - t0

        neurons = select_neurons(acts, cfg.n_neurons, method=cfg.select, seed=cfg.neuron_seed)
        if len(neurons) < 2:
            raise ConfigError("layer", f"only {len(neurons)} unit(s) of layer {acts.layer} vary over the corpus",
                              "pick another layer, site or a larger corpus")
        ex = [neuron_examples(acts, u, n_random=cfg.n_random, seed=cfg.holdout_seed) for u in neurons]
        tok = models.tokenizer(cfg.model)
        needed = sorted({i for e in ex for i in (*e.explain_index, *e.holdout_index)})
        enc = _tokenize(tok, [texts[i] for i in needed], cfg.max_length)
        offsets = {i: (enc["offset_mapping"][j] if "offset_mapping" in enc else None) for j, i in enumerate(needed)}
        n_tok = {i: len(enc["input_ids"][j]) for j, i in enumerate(needed)}
        marked = [[_mark(texts[i], offsets[i], toks, cfg.explain_chars) for i, toks in zip(e.explain_index, e.explain_tokens)]
                  for e in ex]
        shown = {i: visible_text(texts[i], offsets[i], n_tok[i], 10**9)[0] for i in needed}

        t0 = time.perf_counter()
        exp_inputs = {"acts": acts_stage.key, "neurons": neurons, "explainer": explainer.identity(),
                      "explain_chars": cfg.explain_chars, "prompt": PROMPT_VERSION}

        def compute_explain(tmp: Path) -> dict:
            expl = explainer.explain(marked)
            write_json_atomic(tmp / "explanations.json", {"neurons": neurons, "explanations": expl})
            return {"n": len(expl)}

        exp_stage = store.run("autointerp-explain", exp_inputs, compute_explain, label=f"autointerp explain {spec}")
        explanations = read_json(exp_stage.file("explanations.json"))["explanations"]
        lt["explain_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        perm = shuffled_baseline_permutation(len(neurons), cfg.baseline_seed)
        sim_inputs = {"explain": exp_stage.key, "simulator": simulator.identity(), "n_random": cfg.n_random,
                      "holdout_seed": cfg.holdout_seed, "baseline_perm": perm.tolist()}
        held_texts = [[shown[i] for i in e.holdout_index] for e in ex]

        def compute_sim(tmp: Path) -> dict:
            pred = simulator.predict(explanations, held_texts)
            base = simulator.predict([explanations[j] for j in perm], held_texts)
            write_json_atomic(tmp / "simulation.json", {"predictions": [p.tolist() for p in pred],
                                                        "baseline": [b.tolist() for b in base]})
            return {"n_prompts": 2 * sum(len(h) for h in held_texts)}

        sim_stage = store.run("autointerp-simulate", sim_inputs, compute_sim, label=f"autointerp simulate {spec}")
        sim = read_json(sim_stage.file("simulation.json"))
        lt["simulate_s"] = time.perf_counter() - t0

        rows = []
        for k, e in enumerate(ex):
            score = pearson(sim["predictions"][k], e.holdout_values)
            base = pearson(sim["baseline"][k], e.holdout_values)
            rows.append({
                "neuron": e.neuron, "explanation": explanations[k], "score": score, "baseline_score": base,
                "baseline_explanation_of": neurons[int(perm[k])],
                "max_activation": float(acts.max[e.neuron]), "mean_activation": float(acts.mean[e.neuron]),
                "std_activation": float(acts.std[e.neuron]), "frac_active": float(acts.frac_active[e.neuron]),
                "top_examples": [{"index": i, "activation": v, "marked": m}
                                 for i, v, m in zip(e.explain_index, e.explain_values, marked[k])],
                "holdout": [{"index": i, "activation": v, "top": t, "prediction": float(p), "text": shown[i][:240]}
                            for i, v, t, p in zip(e.holdout_index, e.holdout_values, e.holdout_is_top,
                                                  sim["predictions"][k])],
            })
        rows.sort(key=lambda r: (-r["score"], r["neuron"]))
        for rank, r in enumerate(rows, 1):
            r["rank"] = rank
        summary = score_summary([r["score"] for r in rows], [r["baseline_score"] for r in rows],
                                n_boot=cfg.n_boot, seed=cfg.boot_seed)
        layers.append({
            "layer": acts.layer, "layer_spec": spec, "n_blocks": acts.n_blocks, "site": cfg.site,
            "n_units": acts.n_units, "n_live_units": int((acts.std > 1e-6).sum()), "n_texts": acts.n_examples,
            "neurons_selected": neurons, "summary": summary, "neurons": rows,
            "explainer_prompt_example": _prompt_example(explainer, marked[0]),
            "stages": {"acts": acts_stage.key, "explain": exp_stage.key, "simulate": sim_stage.key},
            "timings": {k: round(v, 2) for k, v in lt.items()},
        })
        for k, v in lt.items():
            timings[f"layer{acts.layer}.{k}"] = round(v, 2)
    timings["total_s"] = round(time.perf_counter() - start_all, 2)
    ev = store.events[n_events:]
    names = [cfg.model] + ([cfg.explainer] if isinstance(explainer, LMExplainer) else []) + (
        [cfg.simulator_model] if isinstance(simulator, LMSimulator) else [])
    return {
        "experiment": "autointerp",
        "config": cfg.model_dump(mode="json"),
        "corpus_fingerprint": corpus_fp,
        "explainer": explainer.identity(),
        "simulator": simulator.identity(),
        "layers": layers,
        "timings": timings,
        "stages": {"cached": sum(e.cached for e in ev), "computed": sum(not e.cached for e in ev)},
        "notes": model_notes(names),
    }


def _mark(text: str, offsets, token_acts: np.ndarray, limit: int) -> str:
    if offsets is None:  # slow tokenizers give no offsets: show the text unmarked
        return visible_text(text, None, 0, limit)[0]
    return mark_tokens(text, offsets, token_acts, limit=limit)


def _prompt_example(explainer: Explainer, examples: list[str]) -> str:
    if isinstance(explainer, LMExplainer):
        return explain_prompt(examples) + f"\n[assistant] {EXPLAIN_PREFIX} …"
    return ""


# --- report -----------------------------------------------------------------------------------

def _layer_entry(result: dict[str, Any], layer: int | None) -> dict[str, Any]:
    if "layers" not in result:
        return result  # already one layer's entry
    entries = result["layers"]
    if layer is None:
        return entries[0]
    for entry in entries:
        if entry["layer"] == layer:
            return entry
    raise ConfigError("layer", f"the result has no layer {layer}", f"use one of {[e['layer'] for e in entries]}")


def layer_report_sections(result: dict[str, Any], layer: int | None = None) -> list:
    """Report sections for one layer (``result`` from :func:`run_autointerp`, or one of its layers).

    Summary table, score histogram vs the shuffled baseline, units ranked by score with their
    explanations, and each unit's marked top examples and held-out predictions.
    """
    from superalign.report.html import Section, Table

    entry = _layer_entry(result, layer)
    s = entry["summary"]
    rows = entry["neurons"]
    summary = Section(
        f"Layer {entry['layer']} ({entry['site']}): summary",
        table=Table(["metric", "value"], [
            ["units studied / live / total", f"{s['n']} / {entry['n_live_units']} / {entry['n_units']}"],
            ["mean score (95% CI over units)", fmt_interval(s["mean_score"])],
            ["mean score, shuffled explanations", fmt_interval(s["mean_baseline"])],
            ["difference (paired)", fmt_interval(s["difference"])],
            ["median score", f"{s['median_score']:.3f}"],
            ["share of units scoring > 0.3", f"{100 * s['share_above_0.3']:.0f}%"],
            ["corpus texts", str(entry["n_texts"])],
        ]),
        notes=["Score = Pearson correlation between the simulator's predictions from the explanation alone and the "
               "unit's true activations (max over tokens), over held-out top-activating texts (odd ranks) mixed with "
               "random texts. The baseline scores each unit with another unit's explanation."],
    )
    if s["difference"]["low"] <= 0:
        summary.warnings.append("The difference from the shuffled baseline's CI reaches zero: these explanations are "
                                "not shown to beat explanations of other units.")
    from superalign.report.plots_oversight import score_histogram

    hist = Section("Scores vs shuffled baseline").image(
        score_histogram([r["score"] for r in rows], [r["baseline_score"] for r in rows]))
    ranked = Section("Units ranked by score", table=Table(
        ["explanation", "rank", "unit", "score", "shuffled", "max act", "active"],
        [[r["explanation"], str(r["rank"]), str(r["neuron"]), f"{r['score']:.3f}", f"{r['baseline_score']:.3f}",
          f"{r['max_activation']:.2f}", f"{100 * r['frac_active']:.0f}%"] for r in rows]))
    lines = []
    for r in rows:
        lines.append(f"#{r['rank']} unit {r['neuron']}  score {r['score']:.3f}  {r['explanation']}")
        for e in r["top_examples"]:
            lines.append(f"   {e['activation']:8.3f}  {e['marked']}")
        lines.append("   held out (true activation -> simulated):")
        for h in r["holdout"]:
            tag = "top" if h["top"] else "rnd"
            lines.append(f"   {tag} {h['activation']:8.3f} -> {h['prediction']:.3f}  {h['text'][:120]}")
        lines.append("")
    examples = Section("Top examples ([[marked]] = strongest tokens) and held-out predictions", pre="\n".join(lines))
    out = [summary, hist, ranked, examples]
    if entry.get("explainer_prompt_example"):
        out.append(Section("Explainer prompt (first unit)", pre=entry["explainer_prompt_example"]))
    return out


def _subtitle(result: dict[str, Any]) -> str:
    cfg = result.get("config", {})
    return (f"model {cfg.get('model')}, corpus {cfg.get('corpus')} ({cfg.get('corpus_size')} texts), explainer "
            f"{cfg.get('explainer')}, simulator {result.get('simulator', {}).get('kind')}")


def write_layer_reports(result: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """One self-contained HTML page per layer: ``out_dir/autointerp_layer{L}.html``."""
    from superalign.report.html import render_page

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for entry in result["layers"]:
        path = out_dir / f"autointerp_layer{entry['layer']}.html"
        page = render_page(f"Automated interpretability: layer {entry['layer']}", _subtitle(result),
                           layer_report_sections(entry))
        write_bytes_atomic(path, page.encode())
        paths.append(path)
    return paths


def autointerp_text(result: dict[str, Any], top: int = 5) -> str:
    """A plain-text summary: per layer, mean score vs baseline and the best units."""
    out = []
    for entry in result["layers"]:
        s = entry["summary"]
        out.append(f"layer {entry['layer']} ({entry['site']}): mean score {fmt_interval(s['mean_score'])}, shuffled "
                   f"baseline {fmt_interval(s['mean_baseline'])}, difference {fmt_interval(s['difference'])} over {s['n']} units")
        for r in entry["neurons"][:top]:
            out.append(f"  #{r['rank']} unit {r['neuron']:5d} score {r['score']:+.3f} (shuffled {r['baseline_score']:+.3f})"
                       f"  {r['explanation']}")
    return "\n".join(out)


def _register() -> None:
    from superalign.report.html import register_report

    @register_report("autointerp")
    def _build(result: dict[str, Any]):
        sections = [s for entry in result["layers"] for s in layer_report_sections(entry)]
        return "Automated interpretability", _subtitle(result), sections


_register()
