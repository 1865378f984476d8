"""`run_oversight` / `superalign oversight run` on tiny random-initialised models (no assets)."""

import json

import pytest
import yaml
from test_oversight import e2h_csv, preference_file
from typer.testing import CliRunner


@pytest.fixture(scope="module")
def tiny_oversight(tmp_path_factory):
    root = tmp_path_factory.mktemp("oversight")
    e2h = e2h_csv(root / "e2h.csv", same_rule=False, n=800)
    prefs = preference_file(root / "prefs.jsonl", n=300)
    cfg = {
        "name": "tiny-oversight",
        "run": ["easy_to_hard", "critique_gap", "autointerp", "w2s_reward", "misaligned"],
        "easy_to_hard": {"task": str(e2h), "task_options": {"difficulty_column": "difficulty"}, "max_examples": None,
                         "model": {"model": "tiny-bert", "epochs": 10, "lr": 0.05}, "difficulty": "column",
                         "pool": 500, "n_train": 200, "seeds": [0], "n_boot": 200},
        "critique_gap": {"items": {"family": "arithmetic"}, "n_train": 40, "n_test": 8,
                         "discriminator": {"model": "tiny-bert", "epochs": 5},
                         "critic": {"model": "tiny-llama", "max_new_tokens": 6}, "n_boot": 200},
        "autointerp": {"model": "tiny-llama", "layer": 1, "corpus": str(e2h), "corpus_size": 80, "n_neurons": 4,
                       "top_k": 4, "n_random": 2, "explainer": "tiny-llama", "explain_max_new_tokens": 6,
                       "simulator": "keyword", "n_boot": 50},
        "w2s_reward": {"data": str(prefs), "n_pairs": 300, "weak": {"model": "tiny-bert", "epochs": 5},
                       "strong": {"model": "tiny-llama", "epochs": 5}, "weak_train": 40, "strong_train": 80,
                       "test": 60, "seeds": [0], "n_boot": 200},
        "misaligned": {"data": str(prefs), "n_pairs": 300, "pm": {"model": "tiny-bert", "epochs": 10},
                       "student": {"model": "tiny-bert", "epochs": 10}, "ns": [1, 2, 4], "n_boot": 200},
    }
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return root, path


def test_cli_runs_every_measurement_and_writes_one_report(tiny_oversight):
    from superalign.cli import app

    root, path = tiny_oversight
    args = ["oversight", "run", str(path), "--out", str(root / "run"), "--store", str(root / "store")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    for needle in ("easy-to-hard", "discriminator-critique gap", "automated interpretability",
                   "W2S reward modeling", "planted misalignment"):
        assert needle in res.output
    saved = json.loads((root / "run" / "results.json").read_text())
    assert saved["experiment"] == "oversight" and set(saved["results"]) == {
        "easy_to_hard", "critique_gap", "autointerp", "w2s_reward", "misaligned"}
    html = (root / "run" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "Planted misalignment" in html
    again = CliRunner().invoke(app, args)  # everything cached
    assert again.exit_code == 0 and ", 0 computed" in again.output


def test_only_and_bad_fields(tiny_oversight):
    from superalign.cli import app

    root, path = tiny_oversight
    res = CliRunner().invoke(app, ["oversight", "run", str(path), "--store", str(root / "store"), "--out",
                                   str(root / "only"), "--only", "nope"])
    assert res.exit_code == 2 and "run" in res.output
    res = CliRunner().invoke(app, ["oversight", "run", str(path), "--store", str(root / "store"), "--out",
                                   str(root / "bad"), "--set", "easy_to_hard.pool=1"])
    assert res.exit_code == 2 and "easy_to_hard.pool" in res.output


def test_default_config_covers_the_required_measurements():
    from superalign.cli import CONFIG_DIR
    from superalign.oversight import OversightConfig

    cfg = OversightConfig.from_yaml(CONFIG_DIR / "oversight_default.yaml")
    assert {"easy_to_hard", "critique_gap", "overoptimization", "autointerp"} <= set(cfg.run)
