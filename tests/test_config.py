"""Config: defaults, files, overrides, and the errors a typo gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from manymodels.config import Config, load_config
from manymodels.errors import ConfigError


def test_base_yml_matches_the_typed_defaults(make_cfg):
    cfg = make_cfg()
    defaults = Config()
    assert cfg.data == defaults.data
    assert cfg.train == defaults.train
    assert cfg.data.keys == ["store", "item"]


def test_overrides_are_parsed_as_yaml(make_cfg):
    cfg = make_cfg("data.keys=[warehouse, product]", "train.horizon=14", "data.freq=W-SUN")
    assert cfg.data.keys == ["warehouse", "product"]
    assert cfg.train.horizon == 14
    assert cfg.data.freq == "W-SUN"


def test_extra_file_then_overrides_win(tmp_path: Path):
    extra = tmp_path / "extra.yml"
    extra.write_text("train:\n  horizon: 7\n  families: [ridge]\n")
    cfg = load_config(conf=extra, overrides=["train.horizon=3"], home=tmp_path)
    assert cfg.train.horizon == 3
    assert cfg.train.families == ["ridge"]


def test_home_from_env(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("MANYMODELS_HOME", str(tmp_path / "h"))
    assert load_config().home_path == (tmp_path / "h").resolve()
    assert load_config(home=tmp_path / "x").home_path == (tmp_path / "x").resolve()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.kyes=[a]", "unknown config key data.kyes"),
        ("trian.horizon=3", "unknown config key trian"),
        ("train.horizon=soon", "config key train.horizon must be an integer"),
        ("train.horizon=0", "train.horizon must be at least 1"),
        ("train.tasks=0", "train.tasks must be at least 1"),
        ("train.rows_per_call=-5", "train.rows_per_call must be 0"),
        ("score.keys_per_call=0", "score.keys_per_call must be at least 1"),
        ("data.keys=store", "config key data.keys must be a list"),
        ("data.fill=mean", "config key data.fill must be one of zero, nan, ffill, none"),
        ("data.freq=fortnightly", "data.freq='fortnightly' is not supported"),
        ("train.select_metric=accuracy", "metric 'accuracy' is unknown"),
        ("promote.thresholds={wape: x}", "promote.thresholds.wape must be a number"),
        ("data.regressors=[store]", "column store is named twice"),
        ("horizon", "must look like dotted.key=value"),
        ("data.key_types={store: text}", "data.key_types.store must be one of string, int"),
        ("data.key_types={sku: int}", "data.key_types names ['sku'], which are not among"),
        ("data.max_gap_periods=0", "data.max_gap_periods must be at least 1"),
        ("data.keys=[a.b]", "data.keys names column 'a.b'"),
        ("data.target_col=' y'", "data.target_col names column ' y'"),
        ("train.tuning.metric=wap", "train.tuning.metric: metric 'wap' is unknown"),
        ("train.tuning.max_trials=-1", "train.tuning.max_trials must be at least 0"),
        ("train.holidays_country=us", "did you mean 'US'"),
        ("train.min_obs=0", "train.min_obs must be at least 1"),
        ("score.max_failed_fraction=2", "score.max_failed_fraction must lie between 0 and 1"),
        ("score.summary_levels=[[store, day]]", "['day'] are not among data.keys"),
    ],
)
def test_config_errors_name_the_key(make_cfg, override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        make_cfg(override)


def test_bad_yaml_file(tmp_path: Path):
    bad = tmp_path / "bad.yml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(conf=bad, home=tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(conf=tmp_path / "missing.yml", home=tmp_path)


def test_bad_yaml_is_one_line_with_file_line_and_column(tmp_path: Path):
    bad = tmp_path / "bad.yml"
    bad.write_text("data:\n  keys: [store, item\n  freq: D\n")
    with pytest.raises(ConfigError) as err:
        load_config(conf=bad, home=tmp_path)
    assert "\n" not in str(err.value)
    assert f"{bad}:3:7 is not valid YAML" in str(err.value)


def test_the_default_summary_level_follows_the_keys(make_cfg):
    assert make_cfg().score.summary_levels == [["store"]]
    assert make_cfg("data.keys=[sku, region]").score.summary_levels == [["sku"]]


def test_replace_returns_a_validated_copy(make_cfg):
    cfg = make_cfg()
    other = cfg.replace(**{"train.horizon": 5})
    assert other.train.horizon == 5 and cfg.train.horizon == 28
    with pytest.raises(ConfigError):
        cfg.replace(**{"train.nope": 1})
