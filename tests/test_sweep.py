"""W2S sweeps: grid expansion, stage sharing across worker processes, Ray vs local, kill + resume,
two sweeps on one store at once. Tiny random-init models; every comparison is against the same
cells run one after another in this process."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import tiny_config

from superalign.errors import ConfigError
from superalign.store import Store
from superalign.w2s import run_w2s
from superalign.w2s.sweep import (
    SweepConfig,
    expand,
    load_sweep_results,
    order_cells,
    run_sweep,
    skipped_cells,
)

WEAK = ["tiny-bert", "tiny-llama"]
STRONG = ["tiny-llama", "tiny-llama-wide"]


def sweep_data(toy_csv, **over) -> dict:
    """2 weak × 2 strong × 2 seeds = 8 cells (tiny-llama -> tiny-llama kept: skip_not_larger off)."""
    data = {"name": "t", "base": tiny_config(toy_csv), "weak": WEAK, "strong": STRONG, "seeds": [0, 1],
            "skip_not_larger": False}
    data.update(over)
    return data


def dumps(rows) -> str:
    return json.dumps(rows, sort_keys=True)  # NaN-safe equality (nan != nan as floats)


def computed_keys(results: dict) -> list[str]:
    return [k for c in results["cells"] for k in (c["stages"] or {}).get("computed_keys", [])]


def finished_stages(root: Path) -> set[str]:
    return {f"{p.parent.parent.name}/{p.parent.name}" for p in root.glob("*/*/meta.json")}


@pytest.fixture(scope="module")
def sequential(toy_csv, tmp_path_factory):
    """Every cell run one after another in this process over one store: the numbers to match."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("sequential") / "store"
        rows, per_cell = {}, None
        for cell in expand(SweepConfig.parse(sweep_data(toy_csv))):
            store = Store(root)
            res = run_w2s(cell.config, store=store)
            rows[cell.id] = dumps(res.rows)
            if per_cell is None:  # the first cell, in a fresh store: every stage a cell needs
                assert all(not e.cached for e in store.events)
                per_cell = len(store.events)
    finally:
        torch.set_num_threads(threads)
    return {"rows": rows, "per_cell": per_cell, "store": root}


def assert_matches(results: dict, sequential: dict) -> None:
    assert all(c["status"] == "ok" for c in results["cells"]), [c.get("error") for c in results["cells"]]
    for c in results["cells"]:
        assert dumps(c["rows"]) == sequential["rows"][c["id"]], c["id"]


# -- config and grid ---------------------------------------------------------------------------

def test_grid_expansion_skip_order_and_errors(toy_csv, tmp_path):
    sweep = SweepConfig.parse(sweep_data(toy_csv, methods=["naive"]))
    cells = expand(sweep)
    assert len(cells) == 8
    assert {(c.weak, c.strong, c.seed) for c in cells} == {(w, s, k) for w in WEAK for s in STRONG for k in (0, 1)}
    for c in cells:  # each cell: one method, one seed, no prompting, the axis models
        assert c.config.seeds == [c.seed] and [m.name for m in c.config.methods] == ["naive"]
        assert c.config.weak.model == c.weak and c.config.strong.model == c.strong
        assert c.config.weak.epochs == 4  # training fields of the base kept
    assert len({c.id for c in cells}) == 8
    # weak_first: one cell per weak supervisor (weak model, seed) first, strong models spread
    first = order_cells(cells)[:4]
    assert len({(c.weak, c.seed) for c in first}) == 4 and {c.strong for c in first} == set(STRONG)
    assert order_cells(cells, "grid") == cells

    # strong not larger than weak (zoo sizes: tiny-bert 0.2M < tiny-llama 0.3M < tiny-llama-wide 0.9M)
    skip = SweepConfig.parse(sweep_data(toy_csv, skip_not_larger=True))
    assert len(expand(skip)) == 6
    assert {(k["weak"], k["strong"]) for k in skipped_cells(skip)} == {("tiny-llama", "tiny-llama")}
    unknown = SweepConfig.parse(sweep_data(toy_csv, weak=["some/unknown-model"], strong=["tiny-bert"],
                                           skip_not_larger=True))
    assert len(expand(unknown)) == 2  # unknown size: kept

    # a mapping on an axis overrides training fields; the base as a YAML path beside the sweep file
    base_file = tmp_path / "base.yaml"
    base_file.write_text(json.dumps(tiny_config(toy_csv)))
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(json.dumps({"base": "base.yaml", "weak": [{"model": "tiny-bert", "epochs": 2}],
                                      "seeds": [3]}))
    loaded = SweepConfig.from_yaml(sweep_file)
    (cell,) = expand(loaded)
    assert cell.config.weak.epochs == 2 and cell.seed == 3 and cell.strong == "tiny-llama"

    with pytest.raises(ConfigError, match="methods") as e:
        SweepConfig.parse(sweep_data(toy_csv, methods=["nope"]))
    assert "naive" in str(e.value)
    with pytest.raises(ConfigError, match="weakk"):
        SweepConfig.parse(sweep_data(toy_csv, weakk=["tiny-bert"]))
    with pytest.raises(ConfigError, match="base"):
        SweepConfig.parse({"weak": ["tiny-bert"]})
    with pytest.raises(ConfigError, match="weak.regime") as e:
        SweepConfig.parse(sweep_data(toy_csv, base=tiny_config(toy_csv, weak={"model": "x", "regime": "probez"})))
    assert "base" in str(e.value)
    with pytest.raises(ConfigError, match="more than once"):
        SweepConfig.parse(sweep_data(toy_csv, strong=["tiny-llama", {"model": "tiny-llama", "epochs": 1}]))
    with pytest.raises(ConfigError, match="skip_not_larger"):
        run_sweep(SweepConfig.parse(sweep_data(toy_csv, weak=["tiny-llama-wide"], skip_not_larger=True)),
                  store_root=tmp_path / "s", out_dir=tmp_path / "o")


# -- local process pool ------------------------------------------------------------------------

def test_local_sweep_shares_stages_and_matches_sequential(toy_csv, tmp_path, sequential):
    from superalign.report.html import write_report

    sweep = SweepConfig.parse(sweep_data(toy_csv))
    res = run_sweep(sweep, store_root=tmp_path / "store", out_dir=tmp_path / "out", workers=2, threads=1)
    data = load_sweep_results(tmp_path / "out")
    assert data["experiment"] == "sweep" and data["summary"]["complete"] and len(data["cells"]) == 8
    assert_matches(data, sequential)

    # sharing: fewer stages computed than 8 independent cells would, and none computed twice
    keys = computed_keys(data)
    assert len(keys) == len(set(keys)) == data["summary"]["stages"]["computed"]
    assert len(keys) < 8 * sequential["per_cell"]
    kinds = data["summary"]["stages"]["by_kind"]
    assert kinds["features"]["computed"] == 3  # one per model
    assert kinds["train"]["computed"] == 4 + 4 + 8  # weak per (model, seed), ceiling per (strong, seed), students
    assert set(keys) == finished_stages(tmp_path / "store")

    # seed-pooled groups come from the store without computing anything
    assert len(data["groups"]) == 4 and all(g["row"] and g["seeds"] == [0, 1] for g in data["groups"])
    assert data["summary"]["groups_stages_computed"] == 0
    text = res.table()
    assert "tiny-llama-wide (0.9M)" in text and "no stage computed twice" in text
    html = write_report(tmp_path / "out").read_text()
    assert html.count("data:image/png;base64,") >= 1 and "tiny-llama-wide" in html and "<table>" in html

    # a rerun computes nothing and gives the same numbers
    again = run_sweep(sweep, store_root=tmp_path / "store", out_dir=tmp_path / "out", workers=2, threads=1)
    assert again.summary["stages"]["computed"] == 0 and again.summary["stages"]["cached"] > 0
    assert_matches(again.as_dict(), sequential)


SWEEP_SCRIPT = """
import json, sys
from superalign.w2s.sweep import SweepConfig, run_sweep
if __name__ == "__main__":
    run_sweep(SweepConfig.parse(json.loads(sys.argv[1])), store_root=sys.argv[2], out_dir=sys.argv[3],
              workers=int(sys.argv[4]), threads=1)
"""


def start_sweep(data: dict, store: Path, out: Path, workers: int) -> subprocess.Popen:
    """The sweep in a new process group (so that a kill reaches its workers); stderr to OUT.log."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{out}.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-c", SWEEP_SCRIPT, json.dumps(data), str(store), str(out),
                                 str(workers)], stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)


def test_killed_sweep_resumes_without_recomputing(toy_csv, tmp_path, sequential):
    data = sweep_data(toy_csv)
    store, out = tmp_path / "store", tmp_path / "out"
    proc = start_sweep(data, store, out, workers=2)
    deadline = time.time() + 150
    while time.time() < deadline:  # kill the sweep, workers included, once some cells have finished
        if len(list(out.glob("cells/*/results.json"))) >= 2 or proc.poll() is not None:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_cells = {p.parent.name for p in out.glob("cells/*/results.json")}
    assert 2 <= len(done_cells) < 8, "the sweep should be killed mid-way"
    finished = finished_stages(store)

    res = run_sweep(SweepConfig.parse(data), store_root=store, out_dir=out, workers=2, threads=1)
    results = res.as_dict()
    assert_matches(results, sequential)
    assert not set(computed_keys(results)) & finished  # nothing that finished is computed again
    for c in results["cells"]:
        if c["id"] in done_cells:
            assert c["stages"]["computed"] == 0
    assert not list(store.glob("*/.tmp-*"))


def test_two_sweeps_on_one_store_at_once(toy_csv, tmp_path, sequential):
    store = tmp_path / "store"
    a = sweep_data(toy_csv, name="a", strong=["tiny-llama-wide"])  # both weak models -> wide
    b = sweep_data(toy_csv, name="b", weak=["tiny-bert"])  # tiny-bert -> both strong models
    procs = [start_sweep(a, store, tmp_path / "a", 1), start_sweep(b, store, tmp_path / "b", 1)]
    for p, name in zip(procs, "ab"):
        assert p.wait(timeout=240) == 0, Path(f"{tmp_path / name}.log").read_text()[-2000:]
    ra, rb = load_sweep_results(tmp_path / "a"), load_sweep_results(tmp_path / "b")
    assert len(ra["cells"]) == 4 and len(rb["cells"]) == 4
    assert_matches(ra, sequential)
    assert_matches(rb, sequential)
    # the overlap (tiny-bert -> tiny-llama-wide) and shared stages were computed by one of them only
    ka, kb = computed_keys(ra), computed_keys(rb)
    assert len(ka) + len(kb) == len(set(ka) | set(kb))
    assert set(ka) | set(kb) == finished_stages(store)
    assert not list(store.glob("*/.tmp-*"))
    # nothing lost: every stage of every cell is in the store
    for data in (a, b):
        for cell in expand(SweepConfig.parse(data)):
            check = Store(store)
            run_w2s(cell.config, store=check)
            assert check.events and all(e.cached for e in check.events)


# -- Ray ---------------------------------------------------------------------------------------

def test_ray_sweep_matches_local_and_survives_a_killed_worker(toy_csv, tmp_path, sequential):
    ray = pytest.importorskip("ray")
    store = tmp_path / "store"
    killed: list[int] = []
    stop = threading.Event()

    def kill_first_worker_mid_stage() -> None:
        while not stop.is_set() and not killed:
            for tmp in store.glob("*/.tmp-*"):  # .tmp-<key>-<pid>-<rand>: a stage being computed
                pid = int(tmp.name.split("-")[-2])
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if pid != os.getpid() and b"ray" in cmd:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.01)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    watcher = threading.Thread(target=kill_first_worker_mid_stage, daemon=True)
    try:
        watcher.start()
        res = run_sweep(SweepConfig.parse(sweep_data(toy_csv)), store_root=store, out_dir=tmp_path / "out",
                        executor="ray", workers=2, threads=1, max_retries=2)
    finally:
        stop.set()
        watcher.join()
        ray.shutdown()
    assert killed, "no stage was caught in progress"
    data = load_sweep_results(tmp_path / "out")
    assert data["summary"]["executor"] == "ray"
    assert_matches(data, sequential)  # the retried cell included
    assert killed[0] not in {c["pid"] for c in data["cells"]}
    keys = computed_keys(data)
    assert len(keys) == len(set(keys)) and len(keys) < 8 * sequential["per_cell"]
    assert [g["row"] for g in data["groups"]] == [g["row"] for g in res.groups]


# -- the command-line function -----------------------------------------------------------------

def test_sweep_command_under_typer(toy_csv, tmp_path, sequential):
    from typer.testing import CliRunner

    from superalign.cli import app
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(json.dumps(sweep_data(toy_csv, name="cli", weak=["tiny-bert"], seeds=[1])))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["w2s", "sweep", str(sweep_file), "--workers", "1", "--store", str(sequential["store"]),
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "tiny-llama-wide (0.9M)" in res.output and (out / "report.html").is_file()
    data = load_sweep_results(out)
    assert data["summary"]["stages"]["computed"] == 0  # every stage was in the store already
    assert_matches(data, sequential)

    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps(sweep_data(toy_csv, methods=["nope"])))
    res = CliRunner().invoke(app, ["w2s", "sweep", str(bad), "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "methods" in res.output
