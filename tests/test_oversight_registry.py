"""The oversight measurement registry: a measurement registered in one place runs through `run_oversight`."""

import json

import pytest
from pydantic import BaseModel, ConfigDict, Field

from superalign.errors import ConfigError, UnknownNameError
from superalign.oversight import OversightConfig, run_oversight
from superalign.oversight.registry import (
    get_measurement,
    list_measurements,
    register_measurement,
    unregister_measurement,
)
from superalign.store import Store


class CoinConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flips: int = Field(10, ge=1)
    p: float = Field(0.5, ge=0, le=1)


@pytest.fixture
def coin():
    """A measurement defined and registered here, as a plug-in module would (removed afterwards)."""
    calls = []

    def summary(r):
        return [f"coin: {r['heads']} heads of {r['flips']}"]

    def report(r):
        from superalign.report.html import Section

        return [Section("Coin flips", pre=f"heads {r['heads']}")]

    @register_measurement("coin", config=CoinConfig, summary=summary, report=report, help="flips a biased coin")
    def run_coin(cfg: CoinConfig, store: Store) -> dict:
        calls.append(cfg)
        return {"flips": cfg.flips, "heads": round(cfg.flips * cfg.p)}

    yield calls
    unregister_measurement("coin")


def test_a_registered_measurement_runs_through_run_oversight(coin, tmp_path):
    cfg = OversightConfig.parse({"name": "coins", "run": ["coin"], "coin": {"flips": 8, "p": 0.25}})
    assert isinstance(cfg.coin, CoinConfig) and cfg.coin.flips == 8
    assert "coin" in [m.name for m in list_measurements()] and "coin" not in OversightConfig().run  # not a default
    res = run_oversight(cfg, out_dir=tmp_path / "run", store=Store(tmp_path / "store"))
    assert res.results == {"coin": {"flips": 8, "heads": 2}} and len(coin) == 1
    assert res.table().splitlines()[0] == "coin: 2 heads of 8"
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["config"]["coin"] == {"flips": 8, "p": 0.25} and saved["results"]["coin"]["heads"] == 2
    from superalign.report.html import write_report

    html = write_report(tmp_path / "run").read_text()
    assert "Coin flips" in html and "heads 2" in html
    # the measurement's own settings are validated by its config class, and errors name the field
    with pytest.raises(ConfigError, match=r"coin\.flips"):
        OversightConfig.parse({"run": ["coin"], "coin": {"flips": 0}})


def test_unknown_measurement_names_are_clear_errors():
    with pytest.raises(ConfigError, match=r"run: 'nope' is not a registered oversight measurement; valid names: "
                                          r"easy_to_hard, w2s_reward, critique_gap"):
        OversightConfig.parse({"run": ["easy_to_hard", "nope"]})
    with pytest.raises(ConfigError, match=r"nope: 'nope' is not a registered.*autointerp, misaligned"):
        OversightConfig.parse({"nope": {"x": 1}})
    with pytest.raises(ConfigError, match="twice"):
        OversightConfig.parse({"run": ["easy_to_hard", "easy_to_hard"]})
    with pytest.raises(UnknownNameError, match="Known: .*overoptimization"):
        get_measurement("nope")


def test_builtin_measurements_keep_their_yaml_shape_and_defaults():
    cfg = OversightConfig.parse({"easy_to_hard": {"pool": 20}, "autointerp": {"n_neurons": 4}})
    assert cfg.run == ["easy_to_hard", "critique_gap", "overoptimization", "autointerp"]
    assert cfg.easy_to_hard.pool == 20 and cfg.autointerp.n_neurons == 4 and cfg.critique_gap.n_test == 48
    dumped = cfg.model_dump(mode="json")
    assert list(dumped)[:4] == ["name", "run", "easy_to_hard", "w2s_reward"]
    assert OversightConfig.parse(dumped) == cfg  # a dumped config reads back
