"""Ingest and clean on crafted sources: the table of bad inputs and what each one gives."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable

from manymodels.clean import clean, clean_frame
from manymodels.config import DataConfig
from manymodels.errors import DataError
from manymodels.ingest import ingest
from manymodels.tables import open_store

HEADER = "date,store,item,sales\n"


def write(path: Path, body: str, header: str = HEADER) -> Path:
    path.write_text(header + body)
    return path


def good_rows(store: int = 1, item: int = 1, days: int = 5, start: str = "2024-01-01") -> str:
    dates = pd.date_range(start, periods=days, freq="D")
    return "".join(f"{d.date()},{store},{item},{i + 1}\n" for i, d in enumerate(dates))


@pytest.fixture
def cfg(make_cfg):
    return make_cfg("data.time_col=date", "data.target_col=sales")


def silver(cfg):
    return open_store(cfg).read_pandas(open_store(cfg).ref("silver", "sales"))


def quarantine(cfg):
    store = open_store(cfg)
    return store.read_pandas(store.ref("silver", "sales_quarantine"))


# One row each: (the bad CSV row, the expected quarantine reason).
BAD_ROWS = [
    ("2024-01-03,,1,5", "null key store"),
    ("2024-01-03,1, ,5", "null key item"),
    ("03/01/2024,1,1,5", "unparseable date"),
    ("not a date,1,1,5", "unparseable date"),
    ("2024-01-03 13:30:00,1,1,5", "date does not fit frequency D"),
    ("2024-01-03,1,1,", "missing target"),
    ("2024-01-03,1,1,lots", "non-numeric target"),
    ("2024-01-03,1,1,inf", "non-finite target"),
]


@pytest.mark.parametrize(("row", "reason"), BAD_ROWS)
def test_each_bad_row_is_quarantined_with_its_reason(tmp_path, cfg, row, reason):
    src = write(tmp_path / "in.csv", good_rows(days=2, start="2024-01-01") + row + "\n")
    ingest([src], cfg)
    result = clean(cfg)
    q = quarantine(cfg)
    assert q["reason"].tolist() == [reason]
    assert result.rows_in == 3 and result.quarantined == 1
    assert len(silver(cfg)) == 2
    # the quarantined row is kept as landed, with its source
    assert q["_source"].iloc[0].endswith("in.csv")


def test_weekly_and_monthly_frequency_checks(tmp_path, make_cfg):
    body = "2024-01-07,1,1,1\n2024-01-14,1,1,2\n2024-01-16,1,1,3\n"  # the 16th is a Tuesday
    cfg = make_cfg("data.time_col=date", "data.target_col=sales", "data.freq=W-SUN")
    ingest([write(tmp_path / "w.csv", body)], cfg)
    clean(cfg)
    assert quarantine(cfg)["reason"].tolist() == ["date does not fit frequency W-SUN"]
    frame = pd.DataFrame(
        {
            "date": ["2024-01-01", "2024-02-01", "2024-02-15"],
            "store": "1",
            "item": "1",
            "sales": ["1", "2", "3"],
        }
    )
    out = clean_frame(frame, DataConfig(time_col="date", target_col="sales", freq="MS"))
    assert out.quarantine["reason"].tolist() == ["date does not fit frequency MS"]
    assert out.silver["ds"].dt.day.tolist() == [1, 1]


def test_source_missing_the_target_stops_with_one_line(tmp_path, cfg):
    src = write(tmp_path / "in.csv", "2024-01-01,1,1,3\n", header="date,store,item,qty\n")
    with pytest.raises(DataError) as err:
        ingest([src], cfg)
    msg = str(err.value)
    assert "no column 'sales'" in msg and "data.target_col" in msg
    assert "found columns: date, store, item, qty" in msg
    assert "\n" not in msg
    assert not open_store(cfg).exists(open_store(cfg).ref("bronze", "sales_raw"))


def test_clean_with_a_mistyped_column_setting_leaves_tables_as_they_were(tmp_path, cfg, make_cfg):
    ingest([write(tmp_path / "in.csv", good_rows())], cfg)
    clean(cfg)
    store = open_store(cfg)
    before = store.version(store.ref("silver", "sales"))
    typo = make_cfg("data.time_col=date", "data.target_col=sale")
    with pytest.raises(DataError, match="no column 'sale'"):
        clean(typo)
    assert store.version(store.ref("silver", "sales")) == before
    assert len(silver(cfg)) == 5


def test_reingesting_a_file_does_not_duplicate_and_counts_add_up(tmp_path, cfg):
    a = write(tmp_path / "a.csv", good_rows(1, 1, 10))
    b = write(tmp_path / "b.csv", good_rows(1, 2, 10) + "2024-01-02,1,2,7\n")  # a duplicate day
    ingest([a, b], cfg)
    ingest([a], cfg)
    store = open_store(cfg)
    raw = store.read_pandas(store.ref("bronze", "sales_raw"))
    assert len(raw) == 21 and set(raw.columns) >= {"_source", "_ingested_at"}
    result = clean(cfg)
    assert result.duplicates_merged == 1
    assert result.rows_in == result.silver_rows - result.filled_rows + result.quarantined + (
        result.duplicates_merged + result.future_rows
    )
    s = silver(cfg)
    day2 = s[(s["item"] == "2") & (pd.to_datetime(s["ds"]) == "2024-01-02")]
    assert day2["y"].tolist() == [2.0 + 7.0]  # the default duplicate rule sums


def test_a_batch_streams_one_source_at_a_time_into_one_transaction(tmp_path, cfg, monkeypatch):
    """Headers are checked first; the rows of the second source are read only once the one
    write has started (the batch is never held whole); a source with an extra column gives
    bronze that column (null in the other's rows)."""
    import importlib

    from manymodels.tables import LocalDeltaStore

    ingest_mod = importlib.import_module("manymodels.ingest")  # the package names the function
    a = write(tmp_path / "a.csv", good_rows(1, 1, 10))
    noted = "".join(f"{line},x\n" for line in good_rows(1, 2, 10).splitlines())
    b = write(tmp_path / "b.csv", noted, header=HEADER.rstrip("\n") + ",note\n")
    events: list[str] = []
    read, replace = ingest_mod.read_source, LocalDeltaStore.replace_where

    def reading(path):  # type: ignore[no-untyped-def]
        events.append(f"read {Path(path).name}")
        yield from read(path)

    def writing(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        events.append("write")
        return replace(self, *args, **kwargs)

    monkeypatch.setattr(ingest_mod, "read_source", reading)
    monkeypatch.setattr(LocalDeltaStore, "replace_where", writing)
    result = ingest([a, b], cfg)
    assert events == ["read a.csv", "write", "read b.csv"]
    store = open_store(cfg)
    raw = store.read_pandas(store.ref("bronze", "sales_raw"))
    assert result.rows == len(raw) == 20 and result.version == 0  # one commit
    assert raw.loc[raw["_source"].str.endswith("a.csv"), "note"].isna().all()
    assert (raw.loc[raw["_source"].str.endswith("b.csv"), "note"] == "x").all()


@pytest.mark.parametrize(
    ("policy", "expected"), [("zero", 0.0), ("ffill", 2.0), ("missing", None), ("nan", None)]
)
def test_gap_policies(policy, expected):
    frame = pd.DataFrame(
        {
            "ds": ["2024-01-01", "2024-01-02", "2024-01-04"],
            "store": "1",
            "item": "a",
            "y": ["1", "2", "4"],
        }
    )
    out = clean_frame(frame, DataConfig(fill=policy))
    assert out.filled_rows == 1 and out.silver_rows == 4
    gap = out.silver[out.silver["is_filled"]]
    assert gap["ds"].tolist() == [pd.Timestamp("2024-01-03")]
    value = gap["y"].iloc[0]
    assert pd.isna(value) if expected is None else value == expected
    assert out.silver["item"].tolist() == ["a"] * 4  # text keys stay text


def test_weekly_gaps_fill_on_the_anchor_day():
    frame = pd.DataFrame(
        {"ds": ["2024-01-07", "2024-01-28"], "store": "1", "item": "1", "y": ["1", "2"]}
    )
    out = clean_frame(frame, DataConfig(freq="W-SUN"))
    assert [d.day for d in out.silver["ds"]] == [7, 14, 21, 28]
    frame = pd.DataFrame(
        {"ds": ["2024-01-31", "2024-04-30"], "store": "1", "item": "1", "y": ["1", "2"]}
    )
    out = clean_frame(frame, DataConfig(freq="M"))
    assert [str(d.date()) for d in out.silver["ds"]] == [
        "2024-01-31",
        "2024-02-29",
        "2024-03-31",
        "2024-04-30",
    ]


def test_future_rows_with_regressors_go_to_the_future_table():
    frame = pd.DataFrame(
        {
            "ds": ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"],
            "store": "1",
            "item": "1",
            "y": ["1", "2", "", ""],
            "price": ["1.0", "1.0", "0.8", "x"],
        }
    )
    out = clean_frame(frame, DataConfig(regressors=["price"]))
    assert out.future["ds"].tolist() == [pd.Timestamp("2024-01-03")]
    assert out.quarantine["reason"].tolist() == ["non-numeric regressor price"]
    assert out.silver_rows == 2


def test_zip_of_csvs_and_folder_sources(tmp_path, cfg):
    z = tmp_path / "data.zip"
    with zipfile.ZipFile(z, "w") as archive:
        archive.writestr("train.csv", HEADER + good_rows(1, 1, 4))
        archive.writestr("test.csv", "id,date,store,item\n1,2024-02-01,1,1\n")  # no target: skipped
    folder = tmp_path / "more"
    folder.mkdir()
    write(folder / "x.csv", good_rows(2, 1, 3))
    pd.DataFrame(
        {"date": pd.to_datetime(["2024-01-01"]), "store": [3], "item": [1], "sales": [5.0]}
    ).to_parquet(folder / "y.parquet")
    result = ingest([z, folder], cfg)
    assert result.rows == 4 + 3 + 1
    out = clean(cfg)
    assert out.n_keys == 3 and out.quarantined == 0
    path = open_store(cfg).path(open_store(cfg).ref("silver", "sales"))
    assert DeltaTable(str(path)).to_pandas()["store"].nunique() == 3


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        (["nowhere/*.csv"], "no file matches"),
        (["missing.csv"], "does not exist"),
    ],
)
def test_bad_sources(tmp_path, cfg, sources, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=message):
        ingest(sources, cfg)


def test_clean_before_ingest_says_what_to_run(cfg):
    with pytest.raises(Exception, match="run `manymodels ingest"):
        clean(cfg)


def gappy_frame() -> pd.DataFrame:
    """Two keys: (1, a) misses the 3rd and 4th, (1, b) has no gap."""
    return pd.DataFrame(
        {
            "ds": ["2024-01-01", "2024-01-02", "2024-01-05", "2024-01-01", "2024-01-02"],
            "store": "1",
            "item": ["a", "a", "a", "b", "b"],
            "y": ["1", "2", "5", "7", "8"],
        }
    )


def test_default_gap_policy_leaves_gaps_missing_and_flagged():
    assert DataConfig().fill == "missing"
    out = clean_frame(gappy_frame(), DataConfig())
    s = out.silver
    assert out.filled_rows == 2 and out.silver_rows == 7
    assert s["is_filled"].dtype == bool
    assert s["is_filled"].tolist() == [False, False, True, True, False, False, False]
    assert s.loc[s["is_filled"], "y"].isna().all()
    assert s.loc[~s["is_filled"], "y"].tolist() == [1.0, 2.0, 5.0, 7.0, 8.0]
    assert "y missing (NaN)" in out.summary()


@pytest.mark.parametrize("policy", ["zero", "ffill", "missing", "nan", "none"])
def test_is_filled_flags_exactly_the_added_rows(policy):
    out = clean_frame(gappy_frame(), DataConfig(fill=policy))
    s = out.silver
    observed = s[~s["is_filled"]]
    assert observed["y"].tolist() == [1.0, 2.0, 5.0, 7.0, 8.0]
    assert int(s["is_filled"].sum()) == out.filled_rows == (0 if policy == "none" else 2)
    gaps = s.loc[s["is_filled"], "y"].tolist()
    expected = {"zero": [0.0, 0.0], "ffill": [2.0, 2.0], "none": []}
    if policy in expected:
        assert gaps == expected[policy]
    else:
        assert all(pd.isna(v) for v in gaps)
    assert out.rows_in == len(observed) + out.future_rows + out.quarantined + (
        out.duplicates_merged
    )


def test_zero_fill_and_the_nan_alias_through_the_tables(tmp_path, make_cfg):
    body = "2024-01-01,1,1,1\n2024-01-03,1,1,3\n2024-01-03,1,1,1\n2024-01-02,,1,9\n"
    src = write(tmp_path / "in.csv", body)
    for policy, gap in [("zero", 0.0), ("nan", None), ("missing", None)]:
        cfg = make_cfg("data.time_col=date", "data.target_col=sales", f"data.fill={policy}")
        ingest([src], cfg)
        result = clean(cfg)
        assert result.rows_in == 4 and result.quarantined == 1 and result.duplicates_merged == 1
        assert result.rows_in == result.silver_rows - result.filled_rows + result.quarantined + (
            result.duplicates_merged + result.future_rows
        )
        s = silver(cfg)
        assert s["is_filled"].tolist() == [False, True, False]
        assert s["y"].iloc[[0, 2]].tolist() == [1.0, 4.0]
        value = s["y"].iloc[1]
        assert pd.isna(value) if gap is None else value == gap


BOOLEAN_SPELLINGS = [
    ("true", "false"),
    ("True", "False"),
    ("TRUE", " false "),
    ("yes", "no"),
    ("Y", "n"),
    ("t", "F"),
    ("On", "OFF"),
    ("1", "0"),
    ("yes", "0"),  # booleans and numbers mix in one column
]


@pytest.mark.parametrize(("on", "off"), BOOLEAN_SPELLINGS)
def test_boolean_regressors_are_stored_as_zero_one(on, off):
    frame = pd.DataFrame(
        {
            "ds": ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-05"],
            "store": "1",
            "item": "1",
            "y": ["1", "2", "3", "5"],
            "promo": [on, off, on, off],
        }
    )
    out = clean_frame(frame, DataConfig(regressors=["promo"]))
    assert out.quarantined == 0
    s = out.silver
    assert s["promo"].dtype == "float64"
    # the gap on the 4th carries the 3rd's value forward
    assert s["promo"].tolist() == [1.0, 0.0, 1.0, 1.0, 0.0]


def test_a_bad_regressor_value_is_quarantined_naming_the_regressor():
    frame = pd.DataFrame(
        {
            "ds": ["2024-01-01", "2024-01-02", "2024-01-03"],
            "store": "1",
            "item": "1",
            "y": ["1", "2", "3"],
            "promo": ["yes", "maybe", "2.5"],
        }
    )
    out = clean_frame(frame, DataConfig(regressors=["promo"]))
    assert out.quarantine["reason"].tolist() == ["non-numeric regressor promo"]
    assert out.quarantine["promo"].tolist() == ["maybe"]
    s = out.silver
    assert s.loc[~s["is_filled"], "promo"].tolist() == [1.0, 2.5]
    assert s.loc[s["is_filled"], "y"].isna().all()  # the quarantined day is a gap, not a zero


def test_all_rows_quarantined_names_the_rule_not_generic_settings(tmp_path, make_cfg):
    cfg = make_cfg("data.time_col=date", "data.target_col=sales", "data.regressors=[promo]")
    body = "2024-01-01,1,1,3,maybe\n2024-01-02,1,1,4,perhaps\n"
    ingest([write(tmp_path / "in.csv", body, header="date,store,item,sales,promo\n")], cfg)
    with pytest.raises(DataError) as err:
        clean(cfg)
    msg = str(err.value)
    assert "non-numeric regressor promo" in msg and "data.regressors" in msg
    assert "data.time_col" not in msg and "data.freq" not in msg
    assert "\n" not in msg


def _frame(stores: list[str], ys: list[str] | None = None, dates: list[str] | None = None):
    n = len(stores)
    return pd.DataFrame(
        {
            "ds": dates or [f"2024-01-{i + 1:02d}" for i in range(n)],
            "store": stores,
            "item": ["1"] * n,
            "y": ys or ["1"] * n,
        }
    )


def test_string_keys_keep_their_spelling_and_refuse_surrounding_spaces():
    raw = _frame(["007", "7", "07", " 7", "7 "], dates=["2024-01-01"] * 5)
    result = clean_frame(raw, DataConfig())
    assert sorted(result.silver["store"]) == ["007", "07", "7"]
    assert result.reasons == {"key store has surrounding spaces": 2}
    assert result.duplicates_merged == 0


def test_int_keys_parse_digits_within_int64_and_refuse_the_rest():
    big = str(2**63 - 1)
    raw = _frame(["01", "1", " 1", "1.0", "1e3", big, str(2**63), str(-(2**63) - 1)])
    result = clean_frame(raw, DataConfig(key_types={"store": "int"}))
    silver = result.silver
    assert silver["store"].dtype == "int64"
    assert sorted(set(silver["store"])) == [1, 2**63 - 1]
    assert -(2**63) not in set(silver["store"])  # never wrapped
    assert result.reasons == {
        "key store is not an integer": 2,
        "key store is outside the int64 range": 2,
    }
    assert result.rows_in == len(silver) - result.filled_rows + result.quarantined


def test_offsets_keep_the_wall_clock_date_even_mixed_in_one_column():
    dates = ["2024-01-01T00:00:00+02:00", "2024-01-02T00:00:00Z", "2024-01-03 00:00-0500"]
    result = clean_frame(_frame(["1"] * 3, dates=dates), DataConfig())
    assert result.quarantined == 0
    assert [d.date().isoformat() for d in result.silver["ds"]] == [
        "2024-01-01",
        "2024-01-02",
        "2024-01-03",
    ]


@pytest.mark.parametrize("fill", ["zero", "ffill", "missing"])
def test_a_quarantined_period_is_a_flagged_missing_gap_whatever_the_policy(fill):
    raw = _frame(["1"] * 4, ys=["1", "oops", "inf", "4"])
    result = clean_frame(raw, DataConfig(fill=fill))
    gaps = result.silver[result.silver["is_filled"]]
    assert gaps["gap_reason"].tolist() == ["quarantined", "quarantined"]
    assert gaps["y"].isna().all()  # never a zero or a carried value
    assert result.gap_reasons == {"quarantined": 2}
    assert "2 gap rows left missing" in result.summary()
    assert "gap rows 'quarantined': 2" in result.summary()


def test_long_gaps_are_left_missing_and_reported_per_key(caplog):
    dates = ["2024-01-01", "2024-01-02", "2024-03-01", "2024-03-03"]
    raw = _frame(["1"] * 4, dates=dates)
    result = clean_frame(raw, DataConfig(fill="zero", max_gap_periods=30))
    s = result.silver
    assert s.loc[s["gap_reason"] == "long gap", "y"].isna().all()
    assert (s["gap_reason"] == "long gap").sum() == 58
    assert s.loc[s["gap_reason"] == "gap", "y"].tolist() == [0.0]  # a short gap: the policy
    assert result.long_gaps == {"store=1, item=1": 58}
    assert "long gaps (> data.max_gap_periods, left missing) in 1 keys" in result.summary()
    assert "data.max_gap_periods=30" in caplog.text
