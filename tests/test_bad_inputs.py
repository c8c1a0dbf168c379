"""The bad-input catalogue: each case is data — the input, where it enters (CLI, Python API or
serving), what it must give (a one-line error matching a pattern, or quarantine reasons) and a
row count showing nothing was lost. ``tests/BAD_INPUTS.md`` mirrors :data:`CASES`; regenerate
it with ``python tests/test_bad_inputs.py`` (a test checks the two agree)."""

from __future__ import annotations

import json
import random
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from manymodels.cli import main
from manymodels.config import load_config
from manymodels.errors import ManyModelsError, ModelError
from manymodels.tables import open_store

REPO = Path(__file__).resolve().parents[1]
TABLE = Path(__file__).with_name("BAD_INPUTS.md")
HEADER = "ds,store,item,y\n"


def days(n: int, store: str = "1", item: str = "1", start: str = "2024-01-01") -> str:
    dates = pd.date_range(start, periods=n, freq="D")
    return "".join(f"{d.date()},{store},{item},{i + 1}\n" for i, d in enumerate(dates))


def random_zip(path: Path) -> None:
    rng = random.Random(7)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("sales.csv", bytes(rng.randrange(256) for _ in range(4000)))


@dataclass(frozen=True)
class Counts:
    """Rows in, and where each went: observed silver rows, future rows, quarantined, merged."""

    rows_in: int
    observed: int
    future: int = 0
    quarantined: int = 0
    merged: int = 0


@dataclass(frozen=True)
class Case:
    """One bad input and what it must give."""

    id: str
    surface: str  # cli | api | serving
    input: str  # what the user gave, in words (the table's column)
    run: str  # ingest | clean | config | train-config | args | fit | serve
    expect: str  # a regex the one-line error matches, or the quarantine reasons ("; ")
    body: str | bytes | None = None  # the source file's contents
    name: str = "in.csv"
    sets: tuple[str, ...] = ()
    argv: tuple[str, ...] = ()
    counts: Counts | None = None
    checks: dict[str, Any] = field(default_factory=dict)


CASES: list[Case] = [
    # --------------------------------------------------------------- files (ingest)
    Case("empty-file", "cli", "an empty file", "ingest", r"hold no rows; nothing was ingested", ""),
    Case(
        "header-only",
        "cli",
        "a header and no rows",
        "ingest",
        r"hold no rows; nothing was ingested",
        HEADER,
    ),
    Case(
        "header-0xff",
        "cli",
        "a 0xFF byte in the header",
        "ingest",
        r"the header is not UTF-8 text \(byte 0xFF at position \d+\); save the file as UTF-8",
        b"ds,st\xffore,item,y\n2024-01-01,1,1,1\n",
    ),
    Case(
        "value-0xff",
        "cli",
        "a 0xFF byte in a value",
        "ingest",
        r"is not a readable CSV file: .*invalid UTF8 data; save the file as UTF-8",
        b"ds,store,item,y\n2024-01-01,1\xff,1,1\n",
    ),
    Case(
        "zip-random-member",
        "cli",
        "a zip whose .csv member is random bytes",
        "ingest",
        r"sales\.csv(: the header is not UTF-8 text| is not a readable CSV file)",
        None,
        name="in.zip",
    ),
    Case(
        "zip-not-zip",
        "cli",
        "a .zip that is not a zip",
        "ingest",
        r"is not a readable zip file",
        "hello\n",
        name="in.zip",
    ),
    Case(
        "parquet-not-parquet",
        "cli",
        "a .parquet that is not Parquet",
        "ingest",
        r"is not a readable Parquet file: .*magic bytes",
        "ds,store\n",
        name="in.parquet",
    ),
    Case(
        "header-spaces",
        "cli",
        "a header with spaces after the commas",
        "ingest",
        r"has no column 'store'.*The header has spaces around its names",
        "ds, store, item, y\n2024-01-01, 1, 1, 1\n",
    ),
    Case(
        "header-twice",
        "cli",
        "a header naming a column twice",
        "ingest",
        r"the header names a column twice",
        "ds,store,item,y,y\n2024-01-01,1,1,1,2\n",
    ),
    Case(
        "missing-key-column",
        "cli",
        "no column for a key",
        "ingest",
        r"has no column 'item' \(named by data\.keys\); found columns: ds, store, y\.",
        "ds,store,y\n2024-01-01,1,1\n",
    ),
    Case(
        "no-such-file",
        "cli",
        "a path that does not exist",
        "ingest",
        r"source '.*nope\.csv' does not exist",
        None,
        name="nope.csv",
    ),
    # --------------------------------------------------------------- configuration
    Case(
        "yaml-malformed",
        "cli",
        "a malformed --conf YAML file",
        "config",
        r"config file .*bad\.yml:3:\d+ is not valid YAML: while parsing a flow sequence",
        "data:\n  keys: [store, item\n  freq: D\n",
        name="bad.yml",
    ),
    Case(
        "config-key-typo",
        "cli",
        "--set data.keyz=[store]",
        "config",
        r"unknown config key data\.keyz; known keys under data: .*keys",
        sets=("data.keyz=[store]",),
    ),
    Case(
        "family-param-typo",
        "cli",
        "--set 'train.params={ridge: {alpah: 1.0}}'",
        "train-config",
        r"config key train\.params\.ridge: unknown parameter\(s\) \['alpah'\] for model "
        r"family 'ridge'; known: \[.*'alpha'",
        sets=("train.families=[ridge]", "train.params={ridge: {alpah: 1.0}}"),
    ),
    Case(
        "family-param-value",
        "cli",
        "--set 'train.params={ridge: {alpha: -1}}'",
        "train-config",
        r"config key train\.params\.ridge: ridge: alpha must be a number in \[0\.0, inf\]",
        sets=("train.families=[ridge]", "train.params={ridge: {alpha: -1}}"),
    ),
    Case(
        "family-unknown",
        "cli",
        "--set train.families=[ridgee]",
        "train-config",
        r"config key train\.families: unknown model family 'ridgee'; known: .*ridge",
        sets=("train.families=[ridgee]",),
    ),
    Case(
        "fallback-param-typo",
        "api",
        "a typo in the fallback family's params",
        "train-config",
        r"config key train\.params\.seasonal_naive: unknown parameter",
        sets=("train.params={seasonal_naive: {sesaon: 7}}",),
    ),
    Case(
        "tuning-metric",
        "cli",
        "--set train.tuning.metric=wap",
        "config",
        r"train\.tuning\.metric: metric 'wap' is unknown; use one of .*wape",
        sets=("train.tuning.metric=wap",),
    ),
    Case(
        "holiday-country",
        "cli",
        "--set train.holidays_country=XX",
        "config",
        r"train\.holidays_country = 'XX' is not a country the holidays package knows",
        sets=("train.holidays_country=XX",),
    ),
    Case(
        "summary-levels",
        "cli",
        "--set 'score.summary_levels=[[region]]'",
        "config",
        r"score\.summary_levels\[0\] = \['region'\] must name key columns",
        sets=("score.summary_levels=[[region]]",),
    ),
    Case(
        "key-column-backtick",
        "cli",
        "a key column named a`b",
        "config",
        r"data\.keys names column 'a`b': .*backtick",
        sets=("data.keys=['a`b', item]",),
    ),
    Case(
        "key-column-dot",
        "cli",
        "a key column named a.b",
        "config",
        r"data\.keys names column 'a\.b': .*a dot",
        sets=("data.keys=[a.b, item]",),
    ),
    Case(
        "key-type-unknown",
        "cli",
        "--set 'data.key_types={store: float}'",
        "config",
        r"data\.key_types\.store must be one of string, int; got 'float'",
        sets=("data.key_types={store: float}",),
    ),
    Case(
        "key-type-not-a-key",
        "cli",
        "--set 'data.key_types={region: int}'",
        "config",
        r"data\.key_types names \['region'\], which are not among data\.keys",
        sets=("data.key_types={region: int}",),
    ),
    Case(
        "max-gap-zero",
        "cli",
        "--set data.max_gap_periods=0",
        "config",
        r"data\.max_gap_periods must be at least 1, got 0",
        sets=("data.max_gap_periods=0",),
    ),
    Case(
        "identifier-injection",
        "cli",
        "--set 'tables.bronze=x; DROP TABLE y'",
        "ingest",
        r"'x; DROP TABLE y' is not a safe identifier",
        HEADER + days(2),
        sets=("tables.bronze=x; DROP TABLE y",),
    ),
    # --------------------------------------------------------------- numeric arguments
    Case(
        "horizon-zero",
        "cli",
        "score --horizon 0",
        "args",
        r"argument --horizon: must be a whole number of periods >= 1, got '0'",
        argv=("score", "--horizon", "0"),
    ),
    Case(
        "horizon-negative",
        "cli",
        "score --horizon -3",
        "args",
        r"argument --horizon: must be a whole number of periods >= 1, got '-3'",
        argv=("score", "--horizon", "-3"),
    ),
    Case(
        "limit-zero",
        "cli",
        "sql --limit 0",
        "args",
        r"argument --limit: must be a whole number of rows >= 1, got '0'",
        argv=("sql", "--limit", "0"),
    ),
    Case(
        "days-text",
        "cli",
        "demo --days many",
        "args",
        r"argument --days: must be a whole number of days >= 1, got 'many'",
        argv=("demo", "--days", "many"),
    ),
    # --------------------------------------------------------------- rows (clean)
    Case(
        "keys-007-vs-7",
        "cli",
        'keys "007", "7" and " 7" (string keys, the default)',
        "clean",
        "key store has surrounding spaces",
        HEADER + days(2, "007") + days(2, "7") + "2024-01-03, 7,1,5\n",
        counts=Counts(rows_in=5, observed=4, quarantined=1),
        checks={"keys": 2},
    ),
    Case(
        "keys-int",
        "cli",
        'keys "01", "1" and "1.0" declared int',
        "clean",
        "key store is not an integer",
        HEADER + "2024-01-01,01,1,1\n2024-01-01,1,1,2\n2024-01-02,1.0,1,3\n",
        sets=("data.key_types={store: int}",),
        counts=Counts(rows_in=3, observed=1, quarantined=1, merged=1),
        checks={"keys": 1},
    ),
    Case(
        "key-int64-overflow",
        "cli",
        "an int key above the int64 range",
        "clean",
        "key store is outside the int64 range",
        HEADER + days(2, "9223372036854775807") + "2024-01-01,9223372036854775808,1,5\n",
        sets=("data.key_types={store: int}",),
        counts=Counts(rows_in=3, observed=2, quarantined=1),
        checks={"keys": 1},
    ),
    Case(
        "targets-inf-nan-negative",
        "cli",
        "targets inf, NaN and -5",
        "clean",
        "non-finite target; non-finite target",
        HEADER + "2024-01-01,1,1,inf\n2024-01-02,1,1,NaN\n2024-01-03,1,1,-5\n" + days(2, "2"),
        counts=Counts(rows_in=5, observed=3, quarantined=2),
    ),
    Case(
        "target-text",
        "cli",
        "a non-numeric target",
        "clean",
        "non-numeric target",
        HEADER + days(3) + "2024-01-04,1,1,lots\n",
        counts=Counts(rows_in=4, observed=3, quarantined=1),
    ),
    Case(
        "quarantined-gap",
        "cli",
        "a bad target inside a series, data.fill zero",
        "clean",
        "non-numeric target",
        HEADER + days(2) + "2024-01-03,1,1,x\n" + days(2, start="2024-01-04"),
        sets=("data.fill=zero",),
        counts=Counts(rows_in=5, observed=4, quarantined=1),
        checks={"gap_reason": {"quarantined": 1}, "gap_y_missing": True},
    ),
    Case(
        "mixed-date-formats",
        "cli",
        "dates as 2024-01-01 and 01/02/2024 in one column",
        "clean",
        "unparseable date",
        HEADER + days(2) + "01/03/2024,1,1,3\n",
        counts=Counts(rows_in=3, observed=2, quarantined=1),
    ),
    Case(
        "mixed-tz-offsets",
        "cli",
        "dates with Z, +02:00 and -05:00 offsets in one column",
        "clean",
        "",
        HEADER
        + "2024-01-01T00:00:00Z,1,1,1\n2024-01-02T00:00:00+02:00,1,1,2\n"
        + "2024-01-03T00:00:00-05:00,1,1,3\n",
        counts=Counts(rows_in=3, observed=3),
    ),
    Case(
        "ten-year-gap",
        "cli",
        "a 10-year gap inside a series",
        "clean",
        "",
        HEADER + days(3, start="2014-01-01") + days(3, start="2024-01-01"),
        sets=("data.fill=zero",),
        counts=Counts(rows_in=6, observed=6),
        checks={"long_gap": r"long gaps .* in 1 keys: store=1, item=1 \(3,649 periods\)"},
    ),
    # --------------------------------------------------------------- one key's fit
    Case(
        "one-row-series",
        "api",
        "a key with one row",
        "fit",
        "fallback to seasonal_naive|fallback to mean",
        checks={"y": [5.0], "fallback": "skipped"},
    ),
    Case(
        "constant-series",
        "api",
        "a key whose target never changes",
        "fit",
        "constant target",
        checks={"y": [3.0] * 60, "fallback": "skipped"},
    ),
    Case(
        "all-candidates-fail",
        "api",
        "negative targets for a family that needs y >= 0 (tsb)",
        "fit",
        "fallback to seasonal_naive: tsb: ModelError: .*needs non-negative targets",
        sets=("train.families=[tsb]",),
        checks={"y": [-1.0, 2.0] * 80, "fallback": "failed"},
    ),
    # --------------------------------------------------------------- serving
    Case(
        "serve-unknown-key",
        "serving",
        "ModelSet.predict for a key with no model",
        "serve",
        r"has no model for key\(s\) \(?store=9, item=9",
        checks={"frame": {"store": [9], "item": [9], "horizon": [1]}},
    ),
    Case(
        "serve-unknown-key-coerce",
        "serving",
        "the same with errors='coerce'",
        "serve",
        r"no model",
        checks={"frame": {"store": [9, 1], "item": [9, 1], "horizon": [1, 1]}, "coerce": True},
    ),
    Case(
        "serve-no-horizon",
        "serving",
        "ModelSet.predict with neither ds nor horizon",
        "serve",
        r"needs a ds column \(dates to score\) or a horizon column",
        checks={"frame": {"store": [1], "item": [1]}},
    ),
    Case(
        "serve-zero-horizon",
        "serving",
        "ModelSet.predict with horizon 0",
        "serve",
        r"1 input row\(s\) have neither a ds nor a positive horizon",
        checks={"frame": {"store": [1], "item": [1], "horizon": [0]}},
    ),
]


# --------------------------------------------------------------------------- the table


def table() -> str:
    """The markdown catalogue, one row per case, in the order of :data:`CASES`."""
    lines = [
        "# Bad inputs and what they give",
        "",
        "Generated from `tests/test_bad_inputs.py` (`python tests/test_bad_inputs.py`); "
        "a test checks the two agree. *Expected* is a regex the one-line error matches, or "
        "the quarantine reasons; *rows* is rows in = observed + future + quarantined + "
        "merged (refused inputs write nothing).",
        "",
        "| case | where | input | step | expected | rows |",
        "|---|---|---|---|---|---|",
    ]
    for c in CASES:
        rows = "—"
        if c.counts is not None:
            n = c.counts
            rows = f"{n.rows_in} = {n.observed} + {n.future} + {n.quarantined} + {n.merged}"
        expect = (c.expect or "(nothing quarantined)").replace("|", "\\|")
        text = c.input.replace("|", "\\|")
        lines.append(f"| {c.id} | {c.surface} | {text} | {c.run} | `{expect}` | {rows} |")
    return "\n".join(lines) + "\n"


def test_the_catalogue_is_large_and_its_ids_unique():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.surface for c in CASES} == {"cli", "api", "serving"}


def test_the_markdown_table_mirrors_the_cases():
    assert TABLE.read_text() == table(), "run `python tests/test_bad_inputs.py` to regenerate"


# --------------------------------------------------------------------------- runners


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def _sets(case: Case) -> list[str]:
    return [a for s in case.sets for a in ("--set", s)]


def _one_line_error(err: str, pattern: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip() and " WARNING " not in ln]
    assert lines, "no error printed"
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert re.search(pattern, lines[0]), lines[0]


def _source(case: Case, tmp: Path) -> Path:
    path = tmp / case.name
    if case.id == "zip-random-member":
        random_zip(path)
    elif isinstance(case.body, bytes):
        path.write_bytes(case.body)
    elif case.body is not None:
        path.write_text(case.body)
    return path


def _run_ingest(case: Case, tmp: Path, capsys: Any) -> None:
    home = tmp / "home"
    code, _, err = _cli(
        capsys, "--home", str(home), "ingest", str(_source(case, tmp)), *_sets(case)
    )
    assert code == 2
    _one_line_error(err, case.expect)
    assert not (home / "tables" / "bronze").exists() or not any(
        (home / "tables").rglob("*.parquet")
    )


def _run_config(case: Case, tmp: Path, capsys: Any) -> None:
    src = tmp / "in.csv"
    src.write_text(HEADER + days(2))
    conf = ["--conf", str(_source(case, tmp))] if case.name.endswith(".yml") else []
    code, _, err = _cli(
        capsys, "--home", str(tmp / "home"), "ingest", str(src), *conf, *_sets(case)
    )
    assert code == 2
    _one_line_error(err, case.expect)
    assert not (tmp / "home").exists() or not any((tmp / "home").rglob("*.parquet"))


def _run_train_config(case: Case, tmp: Path, capsys: Any) -> None:
    from manymodels.train import _check_config

    cfg = load_config(overrides=list(case.sets), home=tmp / "home", base=REPO / "conf/base.yml")
    with pytest.raises(ManyModelsError) as err:
        _check_config(cfg)
    assert "\n" not in str(err.value)
    assert re.search(case.expect, str(err.value)), str(err.value)
    if case.surface == "cli":  # the command stops before any work: no run, no table
        code, _, text = _cli(capsys, "--home", str(tmp / "home"), "train", *_sets(case))
        assert code == 2
        _one_line_error(text, case.expect)
        assert not (tmp / "home" / "tables").exists()


def _run_args(case: Case, tmp: Path, capsys: Any) -> None:
    code, _, err = _cli(capsys, *case.argv)
    assert code == 2
    assert re.search(case.expect, err.strip().splitlines()[-1]), err
    assert "Traceback" not in err


def _run_clean(case: Case, tmp: Path, capsys: Any) -> None:
    home, sets = str(tmp / "home"), _sets(case)
    code, _, err = _cli(capsys, "--home", home, "ingest", str(_source(case, tmp)), *sets)
    assert code == 0, err
    code, out, err = _cli(capsys, "--home", home, "clean", *sets)
    assert code == 0, err
    cfg = load_config(overrides=list(case.sets), home=home, base=REPO / "conf/base.yml")
    store = open_store(cfg)
    silver = store.read_pandas(store.ref("silver", "sales"))
    quarantine = store.read_pandas(store.ref("silver", "sales_quarantine"))
    future = store.read_pandas(store.ref("silver", "sales_future"))
    observed = silver[~silver["is_filled"].astype(bool)]
    want = case.counts
    assert want is not None
    assert sorted(quarantine["reason"]) == sorted(r for r in case.expect.split("; ") if r)
    merged = want.rows_in - len(observed) - len(future) - len(quarantine)
    got = Counts(want.rows_in, len(observed), len(future), len(quarantine), merged)
    assert got == want
    assert f"check: {want.rows_in:,} = {want.observed:,} + {want.future:,} + " in out
    if "keys" in case.checks:
        assert silver.groupby(["store", "item"]).ngroups == case.checks["keys"]
    if "gap_reason" in case.checks:
        gaps = silver.loc[silver["is_filled"].astype(bool), "gap_reason"].value_counts()
        assert gaps.to_dict() == case.checks["gap_reason"]
        assert silver.loc[silver["gap_reason"] == "quarantined", "y"].isna().all()
    if "long_gap" in case.checks:
        assert re.search(case.checks["long_gap"], out), out
        filled = silver[silver["is_filled"].astype(bool)]
        assert len(filled) and filled["y"].isna().all()  # never zero-filled
        assert (filled["gap_reason"] == "long gap").all()


def _run_fit(case: Case, tmp: Path, capsys: Any) -> None:
    from manymodels.partition import fit_partition

    cfg = load_config(overrides=list(case.sets), home=tmp / "home", base=REPO / "conf/base.yml")
    y = case.checks["y"]
    pdf = pd.DataFrame(
        {
            "store": "1",
            "item": "1",
            "ds": pd.date_range("2024-01-01", periods=len(y), freq="D"),
            "y": np.asarray(y, dtype="float64"),
        }
    )
    row = fit_partition(pdf, cfg).iloc[0]
    assert row["status"] == "ok"  # served, by the fallback
    assert row["fallback"] == case.checks["fallback"]
    assert re.search(case.expect, row["error"]), row["error"]
    assert row["n_obs"] == len(y)  # every row reached the fit


@pytest.fixture(scope="module")
def model_set(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("mlflow")
    from manymodels import registry
    from manymodels.models import dumps, get_family, sha256_hex
    from manymodels.partition import forecast_spec

    home = tmp_path_factory.mktemp("serving")
    cfg = load_config(
        overrides=["data.key_types={store: int, item: int}"],
        home=home,
        base=REPO / "conf/base.yml",
    )
    history = pd.DataFrame(
        {"ds": pd.date_range("2024-01-01", periods=30, freq="D"), "y": np.arange(30.0)}
    )
    blob = dumps(get_family("seasonal_naive")(forecast_spec(cfg)).fit(history))
    models = pd.DataFrame(
        {
            "store": [1],
            "item": [1],
            "run_id": ["r1"],
            "family": ["seasonal_naive"],
            "model": [blob],
            "model_sha256": [sha256_hex(blob)],
            "last_ds": [history["ds"].iloc[-1].date()],
            "freq": ["D"],
        }
    )
    with registry.job_run(cfg, "train") as run:
        registry.register_model_set(cfg, models, alias="champion", run_id=run.run_id)
    return registry.load_model_set(cfg, alias="champion")


def _run_serve(case: Case, tmp: Path, capsys: Any, request: pytest.FixtureRequest) -> None:
    models = request.getfixturevalue("model_set")
    frame = pd.DataFrame(case.checks["frame"])
    if case.checks.get("coerce"):
        out = models.predict(frame, errors="coerce")
        bad = out[out["store"] == 9]
        assert len(bad) == 1 and re.search(case.expect, str(bad["error"].iloc[0]))
        good = out[out["store"] == 1]
        assert len(good) == 1 and good["error"].isna().all() and good["yhat"].notna().all()
        return
    with pytest.raises(ModelError) as err:
        models.predict(frame)
    assert "\n" not in str(err.value)
    assert re.search(case.expect, str(err.value)), str(err.value)


RUNNERS: dict[str, Callable[..., None]] = {
    "ingest": _run_ingest,
    "config": _run_config,
    "train-config": _run_train_config,
    "args": _run_args,
    "clean": _run_clean,
    "fit": _run_fit,
}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(
    case: Case,
    tmp_path: Path,
    capsys: Any,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # the CLI reads no conf/base.yml but the built-in defaults
    if case.run == "serve":
        _run_serve(case, tmp_path, capsys, request)
    else:
        RUNNERS[case.run](case, tmp_path, capsys)


if __name__ == "__main__":  # regenerate the markdown table
    TABLE.write_text(table())
    print(json.dumps({"cases": len(CASES), "written": str(TABLE)}))
