"""MLflow tracking: a W2S run and a sweep (parent + one nested run per cell) logged to a file
store in a temp dir and read back."""

import json
import sys

import pytest
from conftest import tiny_config

from superalign.store import Store
from superalign.w2s import W2SConfig, run_w2s

mlflow = pytest.importorskip("mlflow")

from superalign.tracking import (  # noqa: E402
    TrackingError,
    flatten_params,
    log_sweep_run,
    log_w2s_run,
    resolve_tracking_uri,
    w2s_metrics,
)


def read_client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=resolve_tracking_uri(uri))


def test_log_w2s_run_to_a_file_store_and_read_it_back(toy_csv, tmp_path):
    methods = [{"name": "naive"}, {"name": "log conf", "loss": "logconf"}]  # a space: kept in metric names
    cfg = W2SConfig.parse(tiny_config(toy_csv, methods=methods, seeds=[0]))
    res = run_w2s(cfg, out_dir=tmp_path / "run", store=Store(tmp_path / "s"))
    uri = f"file:{tmp_path / 'mlruns'}"
    run_id = log_w2s_run(res, tmp_path / "run", tracking_uri=uri, experiment="tests")

    run = read_client(uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    m, p = run.data.metrics, run.data.params
    for row in res.rows:
        name = row["method"]
        for src, key in (("weak", "weak_acc"), ("w2s", "w2s_acc"), ("ceiling", "ceiling_acc")):
            assert m[f"{name}/{key}"] == pytest.approx(row[src]["value"])
            assert m[f"{name}/{key}_low"] == pytest.approx(row[src]["low"])
            assert m[f"{name}/{key}_high"] == pytest.approx(row[src]["high"])
        if row["pgr"]["value"] == row["pgr"]["value"]:  # finite PGR is logged with its CI bounds
            assert m[f"{name}/pgr"] == pytest.approx(row["pgr"]["value"])
            assert m[f"{name}/pgr_low"] == pytest.approx(row["pgr"]["low"])
        else:  # NaN is not logged; the reason is a tag
            assert f"{name}/pgr" not in m and run.data.tags[f"{name}/pgr_note"]
    assert p["weak.model"] == "tiny-bert" and p["strong.model"] == "tiny-llama" and p["weak.epochs"] == "4"
    assert p["methods.1.loss.name"] == "logconf" and json.loads(p["seeds"]) == [0]
    arts = {a.path for a in read_client(uri).list_artifacts(run_id)}
    assert {"results.json", "report.html", "table.txt"} <= arts  # report.html rendered for the log
    exp = read_client(uri).get_experiment_by_name("tests")
    assert exp is not None and run.info.experiment_id == exp.experiment_id


def test_sweep_logs_a_parent_run_with_one_nested_run_per_cell(toy_csv, tmp_path):
    from superalign.w2s.sweep import SweepConfig, run_sweep

    uri = f"file:{tmp_path / 'mlruns'}"
    sweep = SweepConfig.parse({"name": "tracked", "base": tiny_config(toy_csv), "strong": ["tiny-llama-wide"],
                               "seeds": [0, 1], "tracking": {"uri": uri, "experiment": "sweeps"}})
    res = run_sweep(sweep, store_root=tmp_path / "s", out_dir=tmp_path / "out", workers=2, threads=1)
    client = read_client(uri)
    exp = client.get_experiment_by_name("sweeps")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.data.tags["superalign.experiment"] == "sweep" and parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    by_cell = {c.data.tags["superalign.cell"]: c for c in children}
    for cell in res.cells:
        run = by_cell[cell["id"]]
        assert run.data.tags["seed"] == str(cell["coords"]["seed"]) and run.data.tags["strong"] == "tiny-llama-wide"
        assert run.data.metrics["naive/w2s_acc"] == pytest.approx(cell["rows"][0]["w2s"]["value"])
        assert run.data.metrics["stages_computed"] == cell["stages"]["computed"]
        assert run.data.params["seeds"] == json.dumps([cell["coords"]["seed"]])
        assert {"results.json", "table.txt"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    group = res.groups[0]["row"]
    key = "toy/tiny-bert__tiny-llama-wide/naive/w2s_acc"
    assert parent.data.metrics[key] == pytest.approx(group["w2s"]["value"])
    assert parent.data.params["base.weak.model"] == "tiny-bert" and parent.data.params["executor"] == "local"
    assert "sweep_results.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}

    # the same sweep logged again from its output directory: a second parent run
    again = log_sweep_run(tmp_path / "out", tracking_uri=uri, experiment="sweeps", cells=False)
    assert client.get_run(again).data.metrics[key] == pytest.approx(group["w2s"]["value"])


def test_default_uri_env_and_plain_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri() == "http://127.0.0.1:5000"
    assert resolve_tracking_uri("runs/ml") == (tmp_path / "runs" / "ml").as_uri()
    assert resolve_tracking_uri("sqlite:///mlflow.db") == "sqlite:///mlflow.db"


def test_params_and_metrics_flattening():
    flat = flatten_params({"a": {"b": 1, "c": [1, 2]}, "m": [{"name": "x"}, {"name": "y", "bad key!": None}],
                           "long": "z" * 1000, "empty": {}})
    assert flat["a.b"] == "1" and flat["a.c"] == "[1, 2]" and flat["m.1.name"] == "y"
    assert flat["m.1.bad key_"] == "None" and len(flat["long"]) == 500 and flat["empty"] == "{}"
    row = {"kind": "w2s", "method": "m", "pgr_reliable": False,
           **{k: {"value": 0.5, "low": 0.4, "high": 0.6} for k in ("weak", "w2s", "ceiling", "gap")},
           "pgr": {"value": float("nan"), "low": float("nan"), "high": float("nan")}}
    metrics = w2s_metrics([row])
    assert metrics["m/w2s_acc_high"] == 0.6 and "m/pgr" not in metrics and metrics["m/pgr_reliable"] == 0.0


def test_missing_mlflow_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    from superalign.tracking import client

    with pytest.raises(TrackingError, match=r"pip install 'superalign\[tracking\]'"):
        client("file:/nonexistent")
