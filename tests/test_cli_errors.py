"""Every bad input a user can make ends in one ``error: … Fix: …`` line, exit code 2 and no traceback."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import make_toy_rows, tiny_config
from typer.testing import CliRunner

from superalign.cli import app

runner = CliRunner()


def write_csv(path: Path, header: list[str], rows) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    rows = make_toy_rows(600)
    write_csv(d / "good.csv", ["text", "label"], rows)
    write_csv(d / "no_label_column.csv", ["text", "y"], rows)
    write_csv(d / "string_labels.csv", ["text", "label"],
              [(t, ("pos" if y else "neg") if i % 50 else y) for i, (t, y) in enumerate(rows)])
    write_csv(d / "text_as_labels.csv", ["text", "label"], [(t, f"{t} {i}") for i, (t, _) in enumerate(rows)])
    write_csv(d / "one_class.csv", ["text", "label"], [(t, 1) for t, _ in rows])
    write_csv(d / "few_rows.csv", ["text", "label"], rows[:20])
    write_csv(d / "empty_text.csv", ["text", "label"], [("" if i == 7 else t, y) for i, (t, y) in enumerate(rows)])
    (d / "good.yaml").write_text(yaml.safe_dump(tiny_config(d / "good.csv", seeds=[0])))
    (d / "typo.yaml").write_text(yaml.safe_dump({**tiny_config(d / "good.csv"), "sedes": [0]}))
    (d / "a_file").write_text("not a directory")
    return d


CASES = {
    "missing column": (["--task", "{d}/no_label_column.csv"], "column 'label' is missing"),
    "string labels": (["--task", "{d}/string_labels.csv"], "mixes integer class ids"),
    "text as labels": (["--task", "{d}/text_as_labels.csv"], "looks like text"),
    "one class": (["--task", "{d}/one_class.csv"], "one class only"),
    "too few rows": (["--task", "{d}/few_rows.csv"], "but task 'few_rows' has 20"),
    "empty text": (["--task", "{d}/empty_text.csv"], "1 empty or non-string text(s), first at row 7"),
    "unknown model": (["--weak", "nope-model"], "weak.model: unknown model 'nope-model'"),
    "unknown hub id": (["--strong", "someorg/nonexistent-model"], "strong.model: unknown model "
                                                                   "'someorg/nonexistent-model'"),
    "unknown hf data set": (["--task", "hf:someorg/no-such-data"], "task: unknown task 'someorg/no-such-data'"),
    "unknown task": (["--task", "no_such_task"], "task: unknown task 'no_such_task'"),
    "misspelt YAML key": (["CONFIG={d}/typo.yaml"], "sedes: Extra inputs are not permitted"),
    "unwritable output directory": (["--out", "{d}/a_file/run"], "--out: cannot write to"),
    "unwritable store": (["--store", "{d}/a_file/store"], "--store: cannot write to"),
    "missing config file": (["CONFIG={d}/missing.yaml"], "config: file"),
    "missing task file": (["--task", "{d}/missing.csv"], "task: file"),
    "--seeds abc": (["--seeds", "abc"], "--seeds: 'abc' is not a comma-separated list of integers"),
    "unknown method": (["--methods", "naive,nope"], "--methods: unknown method(s) ['nope']"),
    "bad --set": (["--set", "weak.epochs"], "--set: 'weak.epochs' is not KEY=VALUE"),
    "bad field value": (["--set", "weak.epochs=-1"], "weak.epochs"),
}


def w2s_args(extra: list[str], d: Path, store: Path) -> list[str]:
    config = next((a.split("=", 1)[1] for a in extra if a.startswith("CONFIG=")), f"{d}/good.yaml")
    rest = [a.format(d=d) for a in extra if not a.startswith("CONFIG=")]
    if "--store" not in rest:
        rest += ["--store", str(store)]
    if "--out" not in rest:
        rest += ["--out", str(store.parent / "run")]
    return ["w2s", "run", config.format(d=d), *rest]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_error_exit_2(case, bad, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", str(tmp_path / "ds"))
    extra, expected = CASES[case]
    res = runner.invoke(app, w2s_args(extra, bad, tmp_path / "store"))
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert "Traceback" not in res.output and (res.exception is None or isinstance(res.exception, SystemExit))
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and "Fix: " in lines[0], lines[0]
    assert expected in lines[0], lines[0]
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").glob("*/*/meta.json"))


def test_rlaif_and_oversight_names_are_checked_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    store = ["--store", str(tmp_path / "s"), "--out", str(tmp_path / "run")]
    res = runner.invoke(app, ["rlaif", "run", "--policy", "someorg/no-policy", *store])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert res.stderr.startswith("error: policy: unknown model 'someorg/no-policy'")
    res = runner.invoke(app, ["rlaif", "run", "--policy", "tiny-llama", "--feedback", "tiny-llama",
                              "--preferences", str(tmp_path / "none.jsonl"), "--set", "pm.model=tiny-bert", *store])
    assert res.exit_code == 2 and res.stderr.startswith("error: preferences.path: file"), res.output
    res = runner.invoke(app, ["oversight", "run", "--only", "critique_gap", "--set",
                              "critique_gap.critic.model=someorg/no-critic", *store])
    assert res.exit_code == 2 and "critique_gap.critic.model: unknown model 'someorg/no-critic'" in res.stderr, \
        res.output
    assert not list((tmp_path / "s").glob("*/*/meta.json"))


def test_real_entry_point_prints_one_line_without_traceback(bad, tmp_path):
    """The installed command path (python -m superalign.cli → main()), in a fresh process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    for extra in (["--strong", "someorg/nonexistent-model"], ["--seeds", "abc"]):
        proc = subprocess.run([sys.executable, "-m", "superalign.cli", *w2s_args(extra, bad, tmp_path / "store")],
                              capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 2, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Fix: " in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("args,expected", [
    (["w2s", "show-config", "nope"], "error: NAME: no embedded config 'nope'. Fix: "),
    (["assets", "install", "nope"], "error: NAMES: unknown asset 'nope'. Fix: "),
    (["report", "/nonexistent/run"], "error: RUN_DIR: '/nonexistent/run' has no results.json. Fix: "),
])
def test_other_commands_fail_in_one_line(args, expected):
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and res.stderr.startswith(expected), res.output


def test_rlaif_eval_size_option(tmp_path, monkeypatch):
    store = ["--store", str(tmp_path / "s"), "--out", str(tmp_path / "run")]
    res = runner.invoke(app, ["rlaif", "run", "--eval", "huge", *store])
    assert res.exit_code == 2 and res.stderr.startswith("error: --eval: is 'huge'. Fix: use --eval default or"), \
        res.output
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").glob("*/*/meta.json"))
    seen = {}
    monkeypatch.setattr("superalign.cli._run_and_report", lambda make, *a, **k: seen.setdefault("cfg", make()))
    assert runner.invoke(app, ["rlaif", "run", "--eval", "full", *store]).exit_code == 0
    cfg = seen["cfg"]
    assert cfg.eval.size == "full" and cfg.eval.n_prompts >= 100 and cfg.eval.known_pairs >= 200
    assert cfg.eval.labeller_remedies
