import json

import yaml
from conftest import tiny_config
from typer.testing import CliRunner

from superalign.cli import app

runner = CliRunner()


def test_help_lists_commands():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("w2s", "report", "models", "tasks", "assets"):
        assert cmd in res.output
    res = runner.invoke(app, ["w2s", "run", "--help"])
    assert res.exit_code == 0 and "--set" in res.output and "--store" in res.output


def test_w2s_run_from_yaml_prints_table_and_writes_report(toy_csv, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(toy_csv, seeds=[0])))
    args = ["w2s", "run", str(cfg), "--out", str(tmp_path / "run"), "--store", str(tmp_path / "s")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "PGR" in res.output and "naive" in res.output and "report:" in res.output
    assert (tmp_path / "run" / "report.html").exists()
    res2 = runner.invoke(app, [*args, "--set", "n_boot=300"])
    assert res2.exit_code == 0
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["config"]["n_boot"] == 300 and saved["summary"]["stages"].endswith(" 0 computed")


def test_bad_field_exits_2_with_the_field_named(toy_csv, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(toy_csv, seeds=[0])))
    res = runner.invoke(app, ["w2s", "run", str(cfg), "--store", str(tmp_path / "s"), "--set", "weak.epochs=-1"])
    assert res.exit_code == 2
    assert "weak.epochs" in res.output
    res = runner.invoke(app, ["w2s", "run", str(cfg), "--store", str(tmp_path / "s"), "--weak", "nope-model"])
    assert res.exit_code == 2 and "unknown model 'nope-model'" in res.output


def test_show_config_and_lists():
    res = runner.invoke(app, ["w2s", "show-config"])
    assert res.exit_code == 0 and "methods:" in res.output
    assert "tiny-llama" in runner.invoke(app, ["models", "list"]).output
    assert "imdb" in runner.invoke(app, ["tasks", "list"]).output
