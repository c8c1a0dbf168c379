"""predict_partition: forecasts land on the right dates (daily, weekly, monthly, from an origin);
the score arguments are checked before any Spark work; one call of the scoring cogroup loads a
group model once and forecasts each of its series."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pandas as pd
import pytest

from manymodels import cli
from manymodels.datasets import generate_demand
from manymodels.errors import ConfigError, ModelError
from manymodels.partition import fit_partition
from manymodels.periods import grid_neighbours, on_grid, periods_between
from manymodels.score import ScoreResult, predict_partition, score


@pytest.mark.parametrize(
    ("freq", "periods", "first", "last"),
    [
        ("D", 200, "2021-07-20", "2021-08-02"),
        ("W-SUN", 104, "2023-01-01", "2023-03-19"),
        ("MS", 36, "2024-01-01", "2024-12-01"),
        ("M", 36, "2024-01-31", "2024-12-31"),
    ],
)
def test_forecasts_land_on_the_right_dates(make_cfg, freq, periods, first, last):
    frame = generate_demand(1, 1, periods, freq=freq, seed=2, intermittent_share=0.0)
    horizon = {"D": 14, "W-SUN": 12, "MS": 12, "M": 12}[freq]
    cfg = make_cfg(
        f"data.freq={freq}",
        "train.families=[ridge]",
        f"train.horizon={horizon}",
        "data.regressors=[price, promo]",
    )
    row = fit_partition(frame, cfg).iloc[0]
    assert row["status"] == "ok", row["error"]
    future = pd.DataFrame({"ds": [pd.Timestamp(first)], "price": [1.0], "promo": [1.0]})
    out = predict_partition(row, future, cfg, horizon)
    assert len(out) == horizon
    assert str(out["ds"].iloc[0].date()) == first and str(out["ds"].iloc[-1].date()) == last
    assert out["ds"].iloc[0] > frame["ds"].max()
    assert (out["yhat_lower"] <= out["yhat"]).all() and (out["yhat"] <= out["yhat_upper"]).all()


def test_known_future_regressors_move_the_forecast(make_cfg):
    frame = generate_demand(1, 1, 400, seed=5, intermittent_share=0.0)
    cfg = make_cfg("train.families=[ridge]", "train.horizon=14", "data.regressors=[price, promo]")
    row = fit_partition(frame, cfg).iloc[0]
    dates = pd.date_range(frame["ds"].max(), periods=15, freq="D")[1:]
    promo = predict_partition(row, pd.DataFrame({"ds": dates, "price": 1.0, "promo": 1.0}), cfg, 14)
    plain = predict_partition(row, pd.DataFrame({"ds": dates, "price": 1.0, "promo": 0.0}), cfg, 14)
    assert promo["yhat"].sum() > plain["yhat"].sum()


def test_altered_model_bytes_are_refused(make_cfg):
    frame = generate_demand(1, 1, 200, seed=1)
    cfg = make_cfg("train.families=[mean]", "train.horizon=7")
    row = fit_partition(frame, cfg).iloc[0].to_dict()
    row["model"] = row["model"][:-1] + bytes([row["model"][-1] ^ 1])
    with pytest.raises(ModelError, match="do not match model_sha256"):
        predict_partition(row, pd.DataFrame(), cfg, 7)


# --------------------------------------------------------------------------- forecast origin


def weekly_model(make_cfg, *extra: str):
    """A ridge model on 104 weeks (W-SUN) of one key, its config and its history."""
    frame = generate_demand(1, 1, 104, freq="W-SUN", seed=3, intermittent_share=0.0)
    cfg = make_cfg(
        "data.freq=W-SUN",
        "train.families=[ridge]",
        "train.horizon=8",
        "data.regressors=[price, promo]",
        *extra,
    )
    row = fit_partition(frame, cfg).iloc[0]
    assert row["status"] == "ok", row["error"]
    return row, cfg, frame["ds"].max()


def weeks(start: pd.Timestamp, n: int) -> pd.DatetimeIndex:
    return pd.date_range(start + pd.Timedelta(weeks=1), periods=n, freq="W-SUN")


NO_FUTURE = pd.DataFrame({"ds": pd.Series(dtype="datetime64[ns]")})


def test_an_origin_after_the_history_end_is_forecast_through_the_gap(make_cfg):
    row, cfg, last = weekly_model(make_cfg)
    origin = last + pd.Timedelta(weeks=10)
    out = predict_partition(row, NO_FUTURE, cfg, 8, origin=origin)
    assert list(out["ds"]) == list(weeks(origin, 8))
    # the same numbers as forecasting 18 weeks from the end and keeping the last 8
    longer = predict_partition(row, NO_FUTURE, cfg, 18)
    pd.testing.assert_frame_equal(out, longer.iloc[10:].reset_index(drop=True))


def test_an_origin_on_the_history_end_is_the_default(make_cfg):
    row, cfg, last = weekly_model(make_cfg)
    pd.testing.assert_frame_equal(
        predict_partition(row, NO_FUTURE, cfg, 8, origin=str(last.date())),
        predict_partition(row, NO_FUTURE, cfg, 8),
    )


def test_an_origin_before_the_history_end_keeps_only_the_dates_after_it(make_cfg):
    row, cfg, last = weekly_model(make_cfg)
    out = predict_partition(row, NO_FUTURE, cfg, 8, origin=last - pd.Timedelta(weeks=3))
    assert list(out["ds"]) == list(weeks(last, 5))  # 3 of the 8 wanted weeks are history
    full = predict_partition(row, NO_FUTURE, cfg, 5)
    pd.testing.assert_frame_equal(out, full)
    past = predict_partition(row, NO_FUTURE, cfg, 8, origin=last - pd.Timedelta(weeks=8))
    assert past.empty and list(past.columns) == ["ds", "yhat", "yhat_lower", "yhat_upper"]


def test_regressors_are_matched_by_date_across_the_gap(make_cfg):
    row, cfg, last = weekly_model(make_cfg)
    origin = last + pd.Timedelta(weeks=6)
    gap_and_window = weeks(last, 14)
    plain = pd.DataFrame({"ds": gap_and_window, "price": 1.0, "promo": 0.0})
    promo_day = origin + pd.Timedelta(weeks=3)
    promo = plain.assign(promo=(plain["ds"] == promo_day).astype(float))
    a = predict_partition(row, plain, cfg, 8, origin=origin).set_index("ds")["yhat"]
    b = predict_partition(row, promo, cfg, 8, origin=origin).set_index("ds")["yhat"]
    assert (a[a.index < promo_day] == b[b.index < promo_day]).all()
    assert b[promo_day] > a[promo_day]
    # a promotion in the gap (before the origin) moves the window through the recursion only
    gap = plain.assign(promo=(plain["ds"] == last + pd.Timedelta(weeks=5)).astype(float))
    c = predict_partition(row, gap, cfg, 8, origin=origin).set_index("ds")["yhat"]
    assert list(c.index) == list(a.index) and not (c == a).all()


def test_staleness_is_counted_in_periods_on_each_grid():
    stamp = pd.Timestamp
    assert periods_between(stamp("2023-01-01"), stamp("2024-03-10"), "W-SUN") == 62
    assert periods_between(stamp("2024-03-10"), stamp("2023-01-01"), "W-SUN") == -62
    assert periods_between(stamp("2023-01-31"), stamp("2024-02-29"), "M") == 13
    assert periods_between(stamp("2024-01-01"), stamp("2024-03-01"), "MS") == 2
    assert periods_between(stamp("2024-01-01"), stamp("2024-01-03"), "D") == 2
    assert on_grid(stamp("2024-01-07"), "W-SUN") and not on_grid(stamp("2024-01-03"), "W-SUN")
    assert not on_grid(stamp("2024-01-07 06:00"), "W-SUN")
    assert on_grid(stamp("2024-02-29"), "M") and not on_grid(stamp("2024-02-28"), "M")
    assert on_grid(stamp("2024-02-01"), "MS") and not on_grid(stamp("2024-01-03 01:00"), "D")
    assert grid_neighbours(stamp("2024-01-03"), "W-SUN") == (
        stamp("2023-12-31"),
        stamp("2024-01-07"),
    )


score_module = importlib.import_module("manymodels.score")  # the attribute is the function


def no_spark(*_args, **_kwargs):
    raise AssertionError("the error must come before any Spark work")


@pytest.mark.parametrize(
    ("origin", "match"),
    [
        (
            "2024-01-03",
            r"2024-01-03 \(score --from / origin=\) is not a period of data.freq='W-SUN' "
            r"\(Wednesday\); pass a period label such as 2023-12-31 or 2024-01-07",
        ),
        ("next week", "is not a date"),
    ],
)
def test_an_origin_off_the_grid_is_refused_before_spark(make_cfg, monkeypatch, origin, match):
    monkeypatch.setattr(score_module, "spark_of", no_spark)
    cfg = make_cfg("data.freq=W-SUN")
    with pytest.raises(ConfigError, match=match):
        score(cfg, origin=origin)


@pytest.mark.parametrize("horizon", [0, -3, 2.5])
def test_a_horizon_below_one_is_refused_not_defaulted(make_cfg, monkeypatch, horizon):
    monkeypatch.setattr(score_module, "spark_of", no_spark)
    with pytest.raises(ConfigError, match=r"horizon=.* \(score --horizon\) must be a whole"):
        score(make_cfg(), horizon=horizon)


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_the_cli_refuses_horizon_below_one(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--home", str(tmp_path), "score", "--horizon", value])
    assert exc.value.code == 2
    assert "argument --horizon: must be a whole number of periods >= 1" in capsys.readouterr().err


def test_the_cli_names_from_for_an_origin_off_the_grid(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(score_module, "spark_of", no_spark)
    argv = ["--home", str(tmp_path), "score", "--set", "data.freq=W-SUN", "--from", "2024-01-03"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("manymodels score: error: forecast origin 2024-01-03 (score --from")


def test_the_summary_reports_stale_keys_and_keys_after_the_origin():
    result = ScoreResult(
        run_id="r1",
        model_version=3,
        job="batch",
        horizon=26,
        rows=52,
        keys_scored=2,
        keys_failed=0,
        keys_without_model=0,
        seconds=1.0,
        origin="2024-03-10",
        keys_stale=1,
        max_staleness=62,
        examples_stale=["store=1, item=2 (last 2023-01-01, 62 periods before)"],
        keys_after_origin=1,
        examples_after_origin=["store=1, item=3 (last 2024-03-17, 1 periods after)"],
    )
    text = result.summary()
    assert "over the 26 periods after 2024-03-10" in text
    assert "1 keys end before the origin 2024-03-10 (by up to 62 periods)" in text
    assert "store=1, item=2 (last 2023-01-01, 62 periods before)" in text
    assert "1 keys have data after the origin 2024-03-10" in text


def test_an_empty_champion_set_stops_score_with_one_line(make_cfg, monkeypatch):
    from types import SimpleNamespace

    from manymodels import registry
    from manymodels.errors import ModelError
    from manymodels.score import score

    cfg = make_cfg()
    empty = SimpleNamespace(manifest=pd.DataFrame(columns=["store", "item"]), version=3)
    monkeypatch.setattr(registry, "load_model_set", lambda *a, **k: empty)
    with pytest.raises(ModelError, match=r"version 3 \(champion\) holds no model: promotion"):
        score(cfg, spark=SimpleNamespace())


# --------------------------------------------------------------------------- group models


KEYS = ["store", "item"]
#: A small, quick pooled model: a few trees over three short series.
POOLED = {"n_estimators": 20, "num_leaves": 7, "min_data_in_leaf": 10, "draws": 1, "horizon": 7}
GROUP = [(1, 1), (1, 2), (1, 3)]  # served by one pooled model; (1, 3) ends EARLY days sooner
SINGLE = [(2, 1), (2, 2)]  # a model of their own each
EARLY = 5


def group_ledger(cfg, run_id: str = "r1"):
    """gold.model_ledger rows as training writes them for a group: the pooled model's bytes on
    one row of its series (the holder), the others ``model = null``; plus per-series rows.
    Returns (ledger, the pooled model, the history of every series: 2 stores x 3 items)."""
    from datetime import datetime, timezone

    from manymodels.models import sha256_hex
    from manymodels.models.pooled import PooledForecaster, dumps_pooled
    from manymodels.partition import forecast_spec, ledger_columns

    frame = generate_demand(2, 3, 150, seed=7, with_regressors=False, intermittent_share=0.0)
    end = frame["ds"].max()
    late = (
        (frame["store"] == 1)
        & (frame["item"] == 3)
        & (frame["ds"] > end - pd.Timedelta(days=EARLY))
    )
    frame = frame[~late].reset_index(drop=True)
    pick = frame.set_index(KEYS).index
    group = frame[pick.isin(GROUP)]
    model = PooledForecaster(forecast_spec(cfg), KEYS, POOLED).fit(group[[*KEYS, "ds", "y"]])
    blob = dumps_pooled(model)
    trained_at = datetime.now(timezone.utc)
    singles = [
        fit_partition(frame[pick == key].reset_index(drop=True), cfg, run_id, trained_at)
        for key in SINGLE
    ]
    template = singles[0].iloc[0]
    rows = []
    for i, (store, item) in enumerate(GROUP):
        last = group[(group["store"] == store) & (group["item"] == item)]["ds"].max().date()
        row = template.copy()
        row[["store", "item", "family", "model", "model_sha256", "last_ds", "status", "error"]] = [
            store, item, model.family, blob if i == 0 else None, sha256_hex(blob), last, "ok", None
        ]  # fmt: skip
        row[["baseline_model", "baseline_model_sha256"]] = [None, None]
        rows.append(row)
    ledger = pd.concat([pd.DataFrame(rows), *singles], ignore_index=True)[ledger_columns(KEYS)]
    assert set(ledger["status"]) == {"ok"}, ledger["error"].tolist()
    return ledger.astype({"store": "int64", "item": "int64"}), model, frame


def own_dates(last: Any, n: int) -> list[pd.Timestamp]:
    return list(pd.date_range(pd.Timestamp(last) + pd.Timedelta(days=1), periods=n, freq="D"))


def test_a_call_loads_a_group_model_once_and_forecasts_each_series_on_its_own_dates(
    make_cfg, monkeypatch
):
    from collections import OrderedDict
    from datetime import datetime, timezone

    from pyspark.sql import types as T

    import manymodels.models as models_pkg
    from manymodels import forecast_key
    from manymodels.forecast_key import INTEGRITY_PREFIX
    from manymodels.score_udf import output_schema, score_udf

    cfg = make_cfg("train.families=[ridge]", "train.horizon=7")
    ledger, model, _ = group_ledger(cfg)
    real = models_pkg.loads_any
    loads: list[str] = []

    def counting(blob, sha256=None):  # type: ignore[no-untyped-def]
        loads.append(sha256)
        return real(blob, sha256)

    monkeypatch.setattr(models_pkg, "loads_any", counting)
    monkeypatch.setattr(forecast_key, "_GROUPS", OrderedDict())  # this worker loaded none yet
    fields = [T.StructField(k, T.LongType()) for k in KEYS]
    columns = output_schema(fields).fieldNames()
    fn = score_udf(cfg, 7, None, 1, "s1", "batch", datetime.now(timezone.utc), columns)
    # the models side of one call: a row per key, the bytes on one row per distinct model,
    # and a key whose (run, sha256) has no bytes anywhere (its ledger row was altered)
    side = ledger[[*KEYS, "model_sha256", "model"]].assign(run_id="r1")
    lost = pd.DataFrame([{"store": 3, "item": 1, "run_id": "r1", "model_sha256": "0" * 64}])
    side = pd.concat([side, lost.assign(model=None)], ignore_index=True)
    no_future = pd.DataFrame({"store": [], "item": [], "ds": []})
    out = fn(side, no_future)

    group_sha = ledger["model_sha256"].iloc[0]
    assert loads.count(group_sha) == 1 and len(loads) == 1 + len(SINGLE)
    ok = out[out["_error"].isna()]
    assert sorted(set(zip(ok["store"], ok["item"], strict=True))) == sorted(GROUP + SINGLE)
    want = model.forecast(7)
    for store, item in GROUP:
        mine = ok[(ok["store"] == store) & (ok["item"] == item)]
        theirs = want[(want["store"] == store) & (want["item"] == item)]
        last = model.series.set_index(KEYS).loc[(store, item), "last_ds"]
        assert list(pd.to_datetime(mine["ds"])) == own_dates(last, 7)
        np.testing.assert_allclose(mine["yhat"], theirs["yhat"], rtol=1e-9)
        assert (mine["model_run_id"] == "r1").all()
    gone = out[out["store"] == 3]
    assert len(gone) == 1 and gone["_error"].iloc[0].startswith(INTEGRITY_PREFIX)
    assert "no model bytes with the registered sha256 000000000000" in gone["_error"].iloc[0]

    # the next call in this Python worker (Spark reuses it) parses the group model no more,
    # once its bytes hash to the registered sha256
    loads.clear()
    again = fn(side, no_future)
    assert loads.count(group_sha) == 0 and again["_error"].notna().sum() == 1

    # the holder's bytes altered: every series of the group fails verification, loaded once
    loads.clear()
    bad = side.copy()
    blob = bad.at[0, "model"]
    bad.at[0, "model"] = blob[:-1] + bytes([blob[-1] ^ 1])
    out = fn(bad, no_future)
    failed = out[out["_error"].notna()].set_index(KEYS)["_error"]
    assert {key for key in failed.index if key[0] == 1} == set(GROUP)
    assert all(failed.loc[key].startswith(INTEGRITY_PREFIX) for key in GROUP)
    assert "do not match model_sha256" in failed.loc[GROUP[1]]
    assert loads.count(group_sha) == 1
