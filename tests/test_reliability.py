"""Reliability: a run killed inside a training stage resumes exactly, concurrent runs into one output
directory do not corrupt each other, and every HTML report escapes text from the task."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import make_toy_rows

PAYLOAD = "<script>alert('x')</script>"
ROOT = Path(__file__).resolve().parents[1]


def small_config(task: Path, **over) -> dict:
    cfg = {
        "name": "reliability",
        "task": str(task),
        "task_options": {"name": f"toy {PAYLOAD}"},
        "splits": {"weak_train": 30, "strong_train": 60, "val": 16, "test": 40},
        "weak": {"model": "tiny-bert", "regime": "probe", "epochs": 3},
        "strong": {"model": "tiny-llama", "regime": "probe", "epochs": 3},
        "seeds": [0],
        "methods": [{"name": "naive"}],
        "n_boot": 100,
    }
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def script_task(tmp_path_factory) -> Path:
    """A small task whose texts hold a <script> tag."""
    path = tmp_path_factory.mktemp("rel") / "script_task.csv"
    rows = make_toy_rows(150, seed=1)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows([(f"{t} {PAYLOAD}" if i % 3 == 0 else t, y) for i, (t, y) in enumerate(rows)])
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1"}


# -- SIGKILL inside a training stage --------------------------------------------------------------

KILL_SCRIPT = r"""
import json, os, signal, sys
import torch
from superalign.store.store import Store
from superalign.w2s import W2SConfig, run_w2s

cfg, root, target = W2SConfig.parse(json.loads(sys.argv[1])), sys.argv[2], int(sys.argv[3])
state = {"kind": None, "train": 0, "steps": 0}
original = Store.run

def run(self, kind, inputs, compute, **kw):
    def compute_and_track(tmp):
        outer = state["kind"]
        state["kind"] = kind
        if kind == "train":
            state["train"] += 1
            state["steps"] = 0
        try:
            return compute(tmp)
        finally:
            state["kind"] = outer
    return original(self, kind, inputs, compute_and_track, **kw)

Store.run = run

def after_step(optimizer, args, kwargs):  # SIGKILL mid-training: no cleanup, no atexit, no finally
    if state["kind"] == "train" and state["train"] == target:
        state["steps"] += 1
        if state["steps"] == 3:
            os.kill(os.getpid(), signal.SIGKILL)

from torch.optim.optimizer import register_optimizer_step_post_hook

register_optimizer_step_post_hook(after_step)
run_w2s(cfg, store=Store(root))
print("not killed")
"""


def finished_stages(root: Path) -> set[tuple[str, str]]:
    return {(p.parent.parent.name, p.parent.name) for p in root.glob("*/*/meta.json")}


@pytest.fixture(scope="module")
def resumed(script_task, tmp_path_factory):
    """Kill a W2S run inside its second training stage, then rerun it in-process."""
    from superalign.store import Store
    from superalign.w2s import W2SConfig, run_w2s

    tmp = tmp_path_factory.mktemp("kill")
    cfg = small_config(script_task)
    root = tmp / "store"
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, json.dumps(cfg), str(root), "2"], env=_env(),
                          capture_output=True, text=True, timeout=600, cwd=tmp)
    before = finished_stages(root)
    left = [p.name for p in (root / "train").glob(".tmp-*")]
    store = Store(root)
    result = run_w2s(W2SConfig.parse(cfg), store=store, out_dir=tmp / "run")
    return {"proc": proc, "before": before, "left": left, "store": store, "result": result, "run": tmp / "run",
            "root": root}


def test_sigkill_inside_a_training_stage_resumes_computing_only_what_was_unfinished(resumed):
    proc = resumed["proc"]
    assert proc.returncode == -9, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert "not killed" not in proc.stdout
    before = resumed["before"]
    assert sum(kind == "train" for kind, _ in before) == 1  # the weak model finished, the second training did not
    assert len(resumed["left"]) == 1  # the killed stage left only its scratch directory behind
    killed_key = resumed["left"][0].split("-")[1]
    events = resumed["store"].events
    cached = {(e.kind, e.key) for e in events if e.cached}
    computed = {(e.kind, e.key) for e in events if not e.cached}
    assert cached and cached <= before  # stages that finished before the kill are reused where needed
    assert not computed & before  # and none is computed again (an unneeded one, e.g. features of a
    #                               cached weak model, is not even read)
    assert ("train", killed_key) in computed  # the killed stage is computed afresh
    assert finished_stages(resumed["root"]) == before | computed
    assert not list((resumed["root"] / "train").glob(".tmp-*"))  # its scratch directory is gone
    rows = resumed["result"].rows
    assert rows and 0.0 <= rows[0]["w2s"]["value"] <= 1.0


@pytest.mark.slow
def test_resumed_run_matches_an_uninterrupted_one(resumed, script_task, tmp_path):
    from superalign.store import Store
    from superalign.w2s import W2SConfig, run_w2s

    fresh = run_w2s(W2SConfig.parse(small_config(script_task)), store=Store(tmp_path / "fresh"))
    for a, b in zip(fresh.rows, resumed["result"].rows):
        for k in ("weak", "w2s", "ceiling"):
            assert a[k]["value"] == pytest.approx(b[k]["value"], abs=1e-9)


# -- two runs into one output directory at once -----------------------------------------------------

RUN_SCRIPT = r"""
import json, sys
from superalign.store.store import Store
from superalign.w2s import W2SConfig, run_w2s

cfg, root, out, own = W2SConfig.parse(json.loads(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4]
result = run_w2s(cfg, store=Store(root), out_dir=out)
with open(own, "w") as f:
    json.dump({"results": json.loads(json.dumps(result.as_dict(), default=str)), "table": result.table()}, f)
"""


def _canon(obj) -> str:
    return json.dumps(obj, sort_keys=True)  # NaN-safe comparison (NaN != NaN in dicts)


def test_two_runs_into_one_output_directory_at_once(script_task, tmp_path):
    from superalign.report.html import write_report
    from superalign.store import Store
    from superalign.w2s import W2SConfig, run_w2s

    out, root = tmp_path / "shared_run", tmp_path / "store"
    cfgs = [small_config(script_task, n_boot=100), small_config(script_task, n_boot=150)]
    procs = [subprocess.Popen([sys.executable, "-c", RUN_SCRIPT, json.dumps(c), str(root), str(out),
                               str(tmp_path / f"own{i}.json")], env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path) for i, c in enumerate(cfgs)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    own = [json.loads((tmp_path / f"own{i}.json").read_text()) for i in range(2)]
    saved = json.loads((out / "results.json").read_text())  # complete JSON, not an interleaving
    winner = [o for o in own if _canon(o["results"]) == _canon(saved)]
    assert len(winner) == 1, "results.json must be exactly one run's results"
    assert (out / "table.txt").read_text().strip() in {o["table"].strip() for o in own}
    assert yaml.safe_load((out / "config.yaml").read_text())["n_boot"] in (100, 150)
    assert write_report(out).exists()
    # the shared store holds both runs' stages intact: rerunning either computes nothing and agrees
    for cfg, o in zip(cfgs, own):
        store = Store(root)
        again = run_w2s(W2SConfig.parse(cfg), store=store)
        assert all(e.cached for e in store.events)
        assert _canon(json.loads(json.dumps(again.rows, default=str))) == _canon(o["results"]["rows"])


# -- every HTML report escapes text from the task ---------------------------------------------------

def _assert_escaped(html: str) -> None:
    assert "<script" not in html.lower()
    assert "&lt;script&gt;" in html


def test_w2s_report_escapes_task_text(resumed):
    from superalign.report.html import write_report

    page = write_report(resumed["run"]).read_text()
    _assert_escaped(page)


def test_sweep_rlaif_and_oversight_reports_escape_task_text(tmp_path):
    from superalign.report.html import write_report

    iv = {"value": 0.6, "low": 0.5, "high": 0.7}
    sweep = {
        "experiment": "sweep",
        "summary": {"name": PAYLOAD, "cells": 1, "ok": 0, "failed": 1, "skipped": 0, "executor": "local",
                    "workers": 1, "stages": {"computed": 0, "cached": 0, "distinct_computed": 0}, "seconds": 1},
        "cells": [{"id": f"cell {PAYLOAD}", "coords": {"seed": 0, "task": PAYLOAD, "weak": "w", "strong": "s",
                                                     "method": "naive"},
                   "status": "failed", "error": f"DataError: {PAYLOAD}", "rows": []}],
        "groups": [],
        "sweep": {"name": PAYLOAD, "tasks": [PAYLOAD]},
    }
    rlaif = {
        "experiment": "rlaif",
        "config": {"name": PAYLOAD, "pmp": {"source": PAYLOAD}, "rl": {"algo": "rloo"}},
        "summary": {
            "policy": PAYLOAD, "constitution": PAYLOAD, "feedback_model": "f", "pm_model": "p",
            "preference_source": "ai", "notes": [PAYLOAD],
            "preferences": {"kind": "ai", "n": 4, "position_bias": 0.0, "order_consistency": 1.0,
                            "mean_confidence": 0.6},
            "pm": {k: {"n": 4, "accuracy": 0.5, "log_loss": 0.7, "ece": 0.1} for k in ("train", "test")},
            "best_of_n": {"curve": [{"n": 1, "kl": 0.0, "proxy": 0.1}, {"n": 2, "kl": 0.19, "proxy": 0.2}]},
            "rl": {"history": []},
            "eval": {"n_prompts": 4, "win_rates": {"sft|initial": {"labeller": iv, "pm": iv}},
                     "elo": {"labeller": {"initial": 1000.0}, "pm": {"initial": 1000.0}},
                     "mean_length": {"initial": 5.0}, "distinct_2": {"initial": 0.9},
                     "examples": [{"prompt": PAYLOAD, "initial": f"reply {PAYLOAD}"}]},
        },
    }
    oversight = {
        "experiment": "oversight",
        "config": {"name": PAYLOAD, "run": [], "easy_to_hard": {"task": PAYLOAD}},
        "summary": {"stages": PAYLOAD, "seconds": 1},
        "results": {},
    }
    for kind, results in (("sweep", sweep), ("rlaif", rlaif), ("oversight", oversight)):
        run_dir = tmp_path / kind
        run_dir.mkdir()
        (run_dir / "results.json").write_text(json.dumps(results))
        _assert_escaped(write_report(run_dir).read_text())


def test_every_page_field_is_escaped():
    """All reports render through one page; every field it shows is escaped."""
    from superalign.report.html import Section, Table, render_page

    sec = Section(PAYLOAD, table=Table([PAYLOAD], [[PAYLOAD, PAYLOAD]]), pre=PAYLOAD, notes=[PAYLOAD],
                  warnings=[PAYLOAD])
    page = render_page(PAYLOAD, PAYLOAD, [sec])
    _assert_escaped(page)
    assert page.count("&lt;script&gt;") == 10  # title (twice), subtitle, heading, warning, note, 3 cells, pre
