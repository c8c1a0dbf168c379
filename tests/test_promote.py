"""Promotion rules on crafted ledgers: each rule blocks, hysteresis, first promotion, kept keys."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from manymodels import registry
from manymodels.config import PromoteConfig
from manymodels.datasets import generate_demand
from manymodels.partition import fit_partition
from manymodels.promote import decide, promote
from manymodels.tables import open_store

CAND = {
    "status": "ok",
    "n_obs": 400,
    "wape": 0.15,
    "baseline_wape": 0.30,
    "mase": 0.8,
    "coverage": 0.82,
}


@pytest.mark.parametrize(
    ("rules", "cand", "champion", "decision", "reason"),
    [
        ({}, CAND, None, "promoted", "passed every rule"),
        ({"min_history": 500}, CAND, None, "rejected", "min history: 400 observations"),
        ({"thresholds": {"wape": 0.1}}, CAND, None, "rejected", "threshold: wape 0.15 > 0.1"),
        (
            {"thresholds": {"coverage": 0.9}},
            CAND,
            None,
            "rejected",
            "threshold: coverage 0.82 < 0.9",
        ),
        (
            {"thresholds": {"mase": 1.0}},
            {**CAND, "mase": math.nan},
            None,
            "rejected",
            "threshold: mase could not be computed",
        ),
        (
            {},
            {**CAND, "baseline_wape": 0.1},
            None,
            "rejected",
            "baseline: wape 0.15 does not beat seasonal naive 0.1",
        ),
        ({"must_beat_baseline": False}, {**CAND, "baseline_wape": 0.1}, None, "promoted", "passed"),
        (
            {"champion_margin": 0.05},
            CAND,
            {"wape": 0.155},
            "kept",
            "champion: wape 0.15 does not beat champion 0.155 by promote.champion_margin 5%",
        ),
        ({"champion_margin": 0.05}, CAND, {"wape": 0.17}, "promoted", "passed every rule"),
        (
            {},
            {"status": "failed", "error": "ValueError: x"},
            None,
            "rejected",
            "candidate failed: ValueError: x",
        ),
        (
            {},
            {"status": "skipped", "error": "too short"},
            {"wape": 0.2},
            "kept",
            "candidate skipped: too short",
        ),
        ({"thresholds": {"wape": 0.1}}, CAND, {"wape": 0.5}, "kept", "threshold: wape"),
        ({}, None, {"wape": 0.2}, "kept", "not in the candidate run"),
    ],
)
def test_each_rule_decides_and_says_why(rules, cand, champion, decision, reason):
    got, why = decide(cand, champion, PromoteConfig(**rules))
    assert got == decision
    assert why.startswith(reason)


# --------------------------------------------------------------------------- crafted ledgers


def fitted_rows(cfg, run_id: str, items: list[int], wape: dict[int, float]) -> pd.DataFrame:
    frame = generate_demand(1, max(items), 120, seed=1)
    rows = []
    for item in items:
        pdf = frame[frame["item"] == item]
        row = fit_partition(pdf, cfg, run_id=run_id)
        row["wape"] = wape[item]
        row["baseline_wape"] = 0.5
        rows.append(row)
    return pd.concat(rows, ignore_index=True)


def land(cfg, rows: pd.DataFrame) -> None:
    store = open_store(cfg)
    store.append(store.ref("gold", "model_ledger"), rows)
    ok = rows[rows["status"] == "ok"].rename(columns={"run_id": "_r"})
    models = ok.rename(columns={"origin_run_id": "run_id"})[
        ["store", "item", "run_id", "family", "model", "model_sha256", "last_ds", "freq"]
    ]
    registry.register_model_set(cfg, models, alias="challenger", run_id=rows["run_id"].iloc[0])


@pytest.fixture
def cfg(make_cfg):
    cfg = make_cfg(
        "train.families=[mean]",
        "train.horizon=7",
        "promote.thresholds={wape: 0.4}",
        "promote.champion_margin=0.05",
    )
    registry.configure(cfg)
    return cfg


def run_id(cfg) -> str:
    with registry.job_run(cfg, "train") as run:
        return run.run_id


def test_first_promotion_then_hysteresis_and_kept_keys(cfg):
    store = open_store(cfg)
    r1 = run_id(cfg)
    land(cfg, fitted_rows(cfg, r1, [1, 2, 3], {1: 0.2, 2: 0.3, 3: 0.45}))

    dry = promote(cfg, dry_run=True)
    assert dry.counts == {"promoted": 2, "baseline": 1}
    assert not store.exists(store.ref("gold", "promotions"))
    assert registry.get_alias_version(cfg, "champion") is None

    # item 3 fails a threshold and has no champion: its seasonal-naive baseline serves it
    first = promote(cfg)
    assert first.counts == {"promoted": 2, "baseline": 1}
    champ = registry.load_model_set(cfg, alias="champion")
    assert sorted(champ.manifest["item"]) == [1, 2, 3] and first.champion_version == champ.version
    assert champ.manifest.set_index("item").loc[3, "family"] == "seasonal_naive"
    served = first.decisions.set_index("item").loc[3]
    assert served["decision"] == "baseline" and served["reason"].startswith("threshold: wape")
    assert served["reason"].endswith("served by seasonal_naive")

    # run 2: item 1 improves by 2.5% only (margin 5%: kept), item 2 by 50% (promoted),
    # item 3 passes now (promoted, no champion before), and item 4 is new.
    r2 = run_id(cfg)
    land(cfg, fitted_rows(cfg, r2, [1, 2, 3, 4], {1: 0.195, 2: 0.15, 3: 0.3, 4: 0.1}))
    second = promote(cfg)
    d = second.decisions.set_index("item")
    assert d.loc[1, "decision"] == "kept" and "champion_margin" in d.loc[1, "reason"]
    assert d.loc[1, "champion_wape"] == pytest.approx(0.2)  # the champion's own backtest
    assert [d.loc[i, "decision"] for i in (2, 3, 4)] == ["promoted"] * 3
    assert d.loc[2, "previous_champion_run_id"] == r1 and pd.isna(
        d.loc[4, "previous_champion_run_id"]
    )
    champ = registry.load_model_set(cfg, alias="champion")
    runs = champ.manifest.set_index("item")["run_id"].to_dict()
    assert runs == {1: r1, 2: r2, 3: r2, 4: r2}  # item 1 keeps its older champion

    promotions = store.read_pandas(store.ref("gold", "promotions"))
    assert len(promotions) == 3 + 4 and set(promotions["promotion_run_id"]) == {
        first.run_id,
        second.run_id,
    }
    # each row names the champion set its promotion registered
    assert second.champion_version == champ.version > first.champion_version
    versions = promotions.groupby("promotion_run_id")["champion_version"].unique().to_dict()
    assert versions == {first.run_id: [first.champion_version], second.run_id: [champ.version]}
    assert list(second.decisions["champion_version"]) == [champ.version] * 4
    quality = store.read_pandas(store.ref("gold", "model_quality")).set_index("item")
    assert sorted(quality.index) == [1, 2, 3, 4]
    assert quality.loc[1, "model_run_id"] == r1 and quality.loc[2, "wape"] == pytest.approx(0.15)
    assert quality.loc[1, "champion_since"] < quality.loc[2, "champion_since"]

    # promoting the same training run again decides nothing twice
    version = registry.get_alias_version(cfg, "champion")
    again = promote(cfg)
    assert again.run_id == second.run_id and again.counts == second.counts
    assert again.champion_version == second.champion_version == version
    assert list(again.decisions["champion_version"]) == [version] * 4
    assert f"version {version}" in again.summary()
    assert len(store.read_pandas(store.ref("gold", "promotions"))) == 3 + 4
    assert registry.get_alias_version(cfg, "champion") == version


def test_promote_without_a_training_run_says_what_to_run(cfg):
    with pytest.raises(Exception, match="run `manymodels train` first"):
        promote(cfg)


def test_a_promotion_that_registers_nothing_records_no_version(cfg):
    store = open_store(cfg)
    r1 = run_id(cfg)
    land(cfg, fitted_rows(cfg, r1, [1, 2], {1: 0.2, 2: 0.2}))
    first = promote(cfg)
    r2 = run_id(cfg)  # no key beats its champion by the 5% margin: every champion stays
    land(cfg, fitted_rows(cfg, r2, [1, 2], {1: 0.2, 2: 0.2}))
    second = promote(cfg)
    assert second.counts == {"kept": 2} and second.champion_version is None
    assert "no new version registered" in second.summary()
    assert registry.get_alias_version(cfg, "champion") == first.champion_version

    promotions = store.read_pandas(store.ref("gold", "promotions"))
    assert str(store.schema(store.ref("gold", "promotions")).field("champion_version").type) == (
        "int64"  # typed even though the latest rows are all null
    )
    by_run = promotions.set_index("promotion_run_id")["champion_version"]
    assert (by_run.loc[first.run_id] == first.champion_version).all()
    assert by_run.loc[second.run_id].isna().all()
    again = promote(cfg)  # the re-run of a promotion that registered nothing
    assert again.run_id == second.run_id and again.champion_version is None


def test_promotions_of_an_older_manymodels_are_read_and_appended_to(cfg):
    store = open_store(cfg)
    ref = store.ref("gold", "promotions")
    r1 = run_id(cfg)
    land(cfg, fitted_rows(cfg, r1, [1, 2], {1: 0.2, 2: 0.3}))
    first = promote(cfg)
    # the table as a manymodels without the column wrote it
    store.overwrite(ref, store.read_pandas(ref).drop(columns="champion_version"))
    assert "champion_version" not in store.schema(ref).names

    earlier = promote(cfg, run_id=r1)  # a re-run reads the old rows: the version is unknown
    assert earlier.run_id == first.run_id and earlier.champion_version is None
    assert earlier.decisions["champion_version"].isna().all()

    r2 = run_id(cfg)
    land(cfg, fitted_rows(cfg, r2, [1, 2, 3], {1: 0.1, 2: 0.1, 3: 0.1}))
    second = promote(cfg)  # appends to the old table: the column is added, old rows null
    assert second.champion_version == registry.get_alias_version(cfg, "champion")
    rows = store.read_pandas(ref)
    assert len(rows) == 2 + 3 and store.schema(ref).names[-1] == "champion_version"
    by_run = rows.set_index("promotion_run_id")["champion_version"]
    assert by_run.loc[first.run_id].isna().all()
    assert (by_run.loc[second.run_id] == second.champion_version).all()
