"""Promote: business rules per key on the backtest → gold.promotions and the `champion` version.

Each key of the candidate training run (the version behind the ``challenger`` alias, or a run
given by id) gets one decision, checked in this order:

1. ``rejected``/``kept`` — the candidate is not ``ok`` (failed or skipped in training);
2. ``promote.min_history`` — fewer observations than required;
3. ``promote.thresholds`` — e.g. ``wape: 0.2`` means ``wape <= 0.2`` (``coverage`` means
   ``>=``); a metric that could not be computed fails its threshold;
4. ``promote.must_beat_baseline`` — the candidate's ``baseline_metric`` must be lower than the
   seasonal-naive baseline's on the same window;
5. ``promote.champion_margin`` — with a current champion, the candidate's ``compare_metric``
   must be lower than ``champion × (1 − margin)``. The champion's metric is the one measured by
   the training run on the *same window* (train backtests the champion beside the candidates);
   when that is missing, the champion's own ledger metric is used and the reason says so.

A candidate whose family *is* the seasonal-naive baseline passes rule 4 (it cannot beat
itself). A candidate that passes is ``promoted``. One that fails is ``kept`` when the key has
a champion (the old champion stays); a key without a champion is served by its ``baseline``
instead — the seasonal-naive model that training fitted beside the candidate (or, for a key
too short to backtest, the simple method training served it with) — so a rule decides which
model serves a key, never whether it gets a forecast. Only a key with neither a champion nor
any fitted model is ``rejected``. Champion keys that the candidate run does not cover are
``kept`` as well. The new champion set is registered as a new model version with the alias
``champion``; the first promotion starts from an empty set. Each row of gold.promotions
records that version in ``champion_version`` (null when the promotion registered none).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pandas as pd

from manymodels.config import Config, PromoteConfig
from manymodels.errors import DataError, ModelError
from manymodels.locking import exclusive
from manymodels.tables import TableStore, open_store

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["PROMOTIONS_TABLE", "PromoteResult", "decide", "promote"]

log = logging.getLogger(__name__)

PROMOTIONS_TABLE = "promotions"
QUALITY_TABLE = "model_quality"
LEDGER_TABLE = "model_ledger"
_LEDGER_COLUMNS = (
    "run_id",
    "origin_run_id",
    "status",
    "error",
    "family",
    "n_obs",
    "last_ds",
    "trained_at",
    "champion_run_id",
    "champion_metrics",
    "baseline_family",
    "baseline_model_sha256",
)
BASELINE = "seasonal_naive"


@dataclass
class PromoteResult:
    """The decisions of one promotion and the champion version it registered (if any)."""

    run_id: str | None
    candidate_run_id: str
    decisions: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)
    champion_version: int | None = None
    dry_run: bool = False

    def summary(self) -> str:
        head = "dry run — nothing written: " if self.dry_run else ""
        counts = ", ".join(f"{n:,} {d}" for d, n in sorted(self.counts.items()))
        lines = [f"{head}promotion of training run {self.candidate_run_id}: {counts}"]
        reasons = self.decisions.loc[self.decisions["decision"] != "promoted", "reason"]
        for reason, n in reasons.str.split(":").str[0].value_counts().head(5).items():
            lines.append(f"  {n:,} x {reason}")
        if self.champion_version is not None:
            lines.append(f"registered champion set as version {self.champion_version}")
        elif not self.dry_run:
            lines.append("champion set unchanged; no new version registered")
        return "\n".join(lines)


def _lower_is_better(metric: str) -> bool:
    return metric != "coverage"


def _value(row: Mapping[str, Any], name: str) -> float:
    value = row.get(name)
    try:
        out = float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan
    if metric_is_bias(name):
        return abs(out)
    return out


def metric_is_bias(name: str) -> bool:
    return name.removeprefix("candidate_").removeprefix("champion_").removeprefix("baseline_") == (
        "bias"
    )


def _fmt(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.4g}"


def decide(
    cand: Mapping[str, Any] | None,
    champion: Mapping[str, Any] | None,
    rules: PromoteConfig,
) -> tuple[str, str]:
    """One key's decision and reason. ``cand``: its ledger row; ``champion``: the champion's
    metrics (``None`` when the key has no champion)."""
    decision, reason = _rules(cand, champion, rules)
    if decision == "rejected" and cand is not None and cand.get("baseline_model_sha256"):
        served = cand.get("baseline_family") or BASELINE
        return "baseline", f"{reason}; served by {served}"
    return decision, reason


def _rules(
    cand: Mapping[str, Any] | None,
    champion: Mapping[str, Any] | None,
    rules: PromoteConfig,
) -> tuple[str, str]:
    stay = "kept" if champion is not None else "rejected"
    if cand is None:
        return "kept", "not in the candidate run: the champion stays"
    if cand.get("status") != "ok":
        return stay, f"candidate {cand.get('status')}: {cand.get('error') or 'no model'}"
    n_obs = int(cand.get("n_obs") or 0)
    if n_obs < rules.min_history:
        return stay, f"min history: {n_obs} observations < promote.min_history {rules.min_history}"
    for metric, limit in sorted(rules.thresholds.items()):
        value = _value(cand, metric)
        ok = value <= limit if _lower_is_better(metric) else value >= limit
        if not ok:
            sign = ">" if _lower_is_better(metric) else "<"
            if math.isnan(value):
                return stay, f"threshold: {metric} could not be computed (promote.thresholds)"
            return stay, f"threshold: {metric} {_fmt(value)} {sign} {limit:g} (promote.thresholds)"
    if rules.must_beat_baseline and cand.get("family") != BASELINE:
        m = rules.baseline_metric
        value, base = _value(cand, m), _value(cand, f"baseline_{m}")
        beats = value < base if _lower_is_better(m) else value > base
        if not math.isnan(base) and not beats:
            return stay, (f"baseline: {m} {_fmt(value)} does not beat seasonal naive {_fmt(base)}")
    if champion is not None:
        m, margin = rules.compare_metric, rules.champion_margin
        value, champ = _value(cand, m), _value(champion, m)
        if not math.isnan(champ):
            need = champ * (1 - margin) if _lower_is_better(m) else champ * (1 + margin)
            beats = value < need if _lower_is_better(m) else value > need
            if not beats:
                where = champion.get("_source", "same window")
                return "kept", (
                    f"champion: {m} {_fmt(value)} does not beat champion {_fmt(champ)} by "
                    f"promote.champion_margin {margin:.0%} ({where})"
                )
    return "promoted", "passed every rule"


def _ledger(store: TableStore, cfg: Config, run_ids: list[str]) -> pd.DataFrame:
    from manymodels.backtest import METRICS

    keys = list(cfg.data.keys)
    ref = store.ref("gold", LEDGER_TABLE)
    store.require(ref, "run `manymodels train` first")
    cols = [*keys, *_LEDGER_COLUMNS, *METRICS, *(f"baseline_{m}" for m in METRICS)]
    found = set(store.schema(ref).names)  # a ledger of an older manymodels lacks newer columns
    rows = store.read_pandas(
        ref, columns=[c for c in cols if c in found], where={"run_id": list(run_ids)}
    )
    for col in cols:
        if col not in rows.columns:
            rows[col] = None
    return rows[cols]


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in r.items()} for r in frame.to_dict("records")]


def _champion_metrics(
    cand_rows: pd.DataFrame, champ_rows: pd.DataFrame, keys: list[str], champ_manifest: pd.DataFrame
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Per champion key: its metrics on the candidate's window when train measured them."""
    served = {tuple(r[k] for k in keys): r["family"] for r in _records(champ_manifest)}
    own = {
        tuple(r[k] for k in keys): {
            **_served_metrics(r, served.get(tuple(r[k] for k in keys))),
            "_source": "champion's own backtest",
        }
        for r in _records(champ_rows)
    }
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    by_key = {tuple(r[k] for k in keys): r for r in _records(cand_rows)}
    for rec in _records(champ_manifest):
        key = tuple(rec[k] for k in keys)
        cand = by_key.get(key)
        measured: dict[str, Any] | None = None
        if cand is not None and cand.get("champion_run_id") == rec["run_id"]:
            parsed = json.loads(cand.get("champion_metrics") or "{}")
            if "error" not in parsed:
                measured = {**parsed, "_source": "same window"}
        out[key] = measured or own.get(key, {"_source": "champion metrics unknown"})
    return out


def _served_metrics(row: Mapping[str, Any], served_family: Any) -> dict[str, Any]:
    """A champion's ledger metrics; its baseline's when the key is served by its baseline."""
    from manymodels.backtest import METRICS

    if served_family in (None, row.get("family")):
        return dict(row)
    return {**row, **{m: row.get(f"baseline_{m}") for m in METRICS}}


@exclusive("promote")
def promote(
    cfg: Config,
    spark: SparkSession | None = None,
    *,
    run_id: str | None = None,
    dry_run: bool = False,
    store: TableStore | None = None,
) -> PromoteResult:
    """Decide per key whether the candidate replaces the champion; register the new set."""
    from manymodels import registry

    store = store or open_store(cfg, spark)
    keys = list(cfg.data.keys)
    if run_id is None:
        if registry.get_alias_version(cfg, "challenger") is None:
            raise ModelError(
                f"model {cfg.mlflow.model_name!r} has no 'challenger' version; run "
                "`manymodels train` first or pass --run RUN_ID"
            )
        run_id = registry.load_manifest(cfg, alias="challenger")[1]
    done = _earlier_promotion(store, run_id) if not dry_run else None
    if done is not None:  # a re-run of a finished promotion: decided once, never twice
        log.info("training run %s was promoted already (promotion run %s)", run_id,
                 done["promotion_run_id"].iloc[0])  # fmt: skip
        counts = {str(k): int(v) for k, v in done["decision"].value_counts().items()}
        recorded = _recorded_version(done)
        return PromoteResult(
            str(done["promotion_run_id"].iloc[0]), run_id, done, counts, champion_version=recorded
        )
    has_champion = registry.get_alias_version(cfg, "champion") is not None
    # the champion's manifest only: its models' bytes are never downloaded here
    champ_set = registry.load_manifest(cfg, alias="champion")[2] if has_champion else None
    champ_manifest = (
        champ_set[[*keys, "run_id", "family"]]
        if champ_set is not None
        else pd.DataFrame(columns=[*keys, "run_id", "family"])
    )
    cand_rows = _ledger(store, cfg, [run_id])
    if cand_rows.empty:
        raise DataError(f"gold.model_ledger has no rows for training run {run_id}; check the id")
    cand_rows = cand_rows.drop_duplicates(keys, keep="last")
    champ_ledger = _ledger(store, cfg, sorted(set(champ_manifest["run_id"])))
    champ_ledger = champ_ledger.drop_duplicates([*keys, "run_id"], keep="last")
    champ_ledger = champ_manifest[[*keys, "run_id"]].merge(champ_ledger, on=[*keys, "run_id"])
    champions = _champion_metrics(cand_rows, champ_ledger, keys, champ_manifest)
    decisions = _decisions(cfg, run_id, cand_rows, champions, champ_manifest)
    counts = {str(k): int(v) for k, v in decisions["decision"].value_counts().items()}
    result = PromoteResult(None, run_id, decisions, counts, dry_run=dry_run)
    if dry_run:
        return result
    with registry.job_run(cfg, "promote", tags={"manymodels.candidate_run": run_id}) as run:
        result.run_id = run.run_id
        decided_at = datetime.now(timezone.utc)
        run.log_metrics({f"keys_{k}": v for k, v in counts.items()})
        changed = counts.get("promoted", 0) + counts.get("baseline", 0) > 0
        if changed or champ_set is None:
            models = _champion_models(store, cfg, decisions, champ_set)
            version = registry.register_model_set(
                cfg,
                models,
                alias="champion",
                run_id=run.run_id,
                store=store,
                spark=spark,
                tags={"candidate_run_id": run_id, "step": "promote"},
                description=f"champion set after promoting training run {run_id}",
            )
            result.champion_version = int(version.version)
        # champion_version last: a table of an older manymodels gains it as its last column
        decisions = decisions.assign(
            promotion_run_id=run.run_id,
            decided_at=decided_at,
            champion_version=_versions(result.champion_version, len(decisions)),
        )
        result.decisions = decisions
        run.log_table(decisions, "decisions")
        store.append(store.ref("gold", PROMOTIONS_TABLE), decisions)
        _write_quality(store, cfg)
    log.debug(result.summary())
    return result


def _earlier_promotion(store: TableStore, run_id: str) -> pd.DataFrame | None:
    """The decisions already recorded for training run ``run_id``, if it was promoted."""
    ref = store.ref("gold", PROMOTIONS_TABLE)
    if not store.exists(ref) or "candidate_run_id" not in store.schema(ref).names:
        return None
    rows = store.read_pandas(ref, where={"candidate_run_id": run_id})
    if not len(rows):
        return None
    if "champion_version" not in rows:  # recorded by a manymodels without the column
        return rows.assign(champion_version=_versions(None, len(rows)))
    return rows.assign(champion_version=rows["champion_version"].astype("Int64"))


def _versions(version: int | None, n: int) -> pd.api.extensions.ExtensionArray:
    """``version`` ``n`` times as a nullable long column (typed even when all null)."""
    return pd.array([version] * n, dtype="Int64")


def _recorded_version(rows: pd.DataFrame) -> int | None:
    """The champion version an earlier promotion registered (its latest, were there two)."""
    known = rows.dropna(subset=["champion_version"])
    if known.empty:
        return None
    return int(known.sort_values("decided_at")["champion_version"].iloc[-1])


def _decisions(
    cfg: Config,
    run_id: str,
    cand_rows: pd.DataFrame,
    champions: Mapping[tuple[Any, ...], Mapping[str, Any]],
    champ_manifest: pd.DataFrame,
) -> pd.DataFrame:
    keys = list(cfg.data.keys)
    rules = cfg.promote
    shown = sorted({rules.compare_metric, rules.baseline_metric, *rules.thresholds})
    champ_runs = {tuple(r[k] for k in keys): r for r in _records(champ_manifest)}
    cands = {tuple(r[k] for k in keys): r for r in _records(cand_rows)}
    records = []
    for key in sorted(set(cands) | set(champ_runs), key=lambda k: tuple(map(str, k))):
        cand, champ = cands.get(key), champions.get(key)
        decision, reason = decide(cand, champ if key in champ_runs else None, rules)
        prev = champ_runs.get(key)
        rec: dict[str, Any] = dict(zip(keys, key, strict=True))
        rec.update(
            candidate_run_id=run_id,
            candidate_model_run_id=(cand or {}).get("origin_run_id"),
            previous_champion_run_id=prev["run_id"] if prev else None,
            decision=decision,
            reason=reason,
            candidate_family=(cand or {}).get("family"),
            champion_family=prev["family"] if prev else None,
        )
        for m in shown:
            rec[f"candidate_{m}"] = _value(cand or {}, m)
            rec[f"champion_{m}"] = _value(champ or {}, m) if prev else math.nan
            rec[f"baseline_{m}"] = _value(cand or {}, f"baseline_{m}")
        records.append(rec)
    frame = pd.DataFrame.from_records(records)
    for k in keys:
        if k in cand_rows:
            frame[k] = frame[k].astype(cand_rows[k].dtype)
    return frame


def _champion_models(
    store: TableStore, cfg: Config, decisions: pd.DataFrame, champ_set: pd.DataFrame | None
) -> pd.DataFrame:
    """The new champion set's metadata: promoted keys' models and baseline-served keys'
    baselines from the ledger, kept keys' models from the old set's manifest. The bytes stay
    in the ledger until registration copies them into the version's shards."""
    keys = list(cfg.data.keys)
    cols = [*keys, "run_id", "family", "model_sha256", "last_ds", "freq"]
    parts = []
    for decision, prefix in (("promoted", ""), ("baseline", "baseline_")):
        chosen = decisions.loc[decisions["decision"] == decision, [*keys, "candidate_run_id"]]
        if chosen.empty:
            continue
        run = str(chosen["candidate_run_id"].iloc[0])
        wanted = [f"{prefix}family", f"{prefix}model_sha256"]
        ledger = store.read_pandas(
            store.ref("gold", LEDGER_TABLE),
            columns=[*keys, "run_id", "origin_run_id", *wanted, "last_ds", "freq"],
            where={"run_id": run},
        )
        ledger = ledger.drop_duplicates(keys, keep="last").drop(columns="run_id")
        ledger = ledger.rename(columns={"origin_run_id": "run_id"})
        ledger = ledger.rename(columns=dict(zip(wanted, ("family", "model_sha256"), strict=True)))
        parts.append(chosen[keys].merge(ledger, on=keys)[cols])
    if champ_set is not None:
        kept = decisions.loc[decisions["decision"] == "kept", keys]
        parts.append(champ_set.merge(kept, on=keys)[cols])
    if not parts:
        return pd.DataFrame(columns=cols)
    return pd.concat(parts, ignore_index=True)


def _write_quality(store: TableStore, cfg: Config) -> None:
    """gold.model_quality: per champion key its family, backtest metrics and champion since."""
    from manymodels import registry
    from manymodels.backtest import METRICS

    keys = list(cfg.data.keys)
    champion_version, _, champ = registry.load_manifest(cfg, alias="champion")
    manifest = champ[[*keys, "run_id", "family", "last_ds"]].rename(
        columns={"run_id": "model_run_id"}
    )
    ledger = _ledger(store, cfg, sorted(set(manifest["model_run_id"])))
    ledger = ledger.rename(columns={"run_id": "model_run_id"}).drop_duplicates(
        [*keys, "model_run_id"], keep="last"
    )
    metric_cols = [*METRICS, *(f"baseline_{m}" for m in METRICS)]
    quality = manifest.merge(
        ledger[[*keys, "model_run_id", "n_obs", "trained_at", "family", *metric_cols]],
        on=[*keys, "model_run_id"],
        how="left",
        suffixes=("", "_candidate"),
    )
    served_by_baseline = quality["family_candidate"].notna() & (
        quality["family"] != quality["family_candidate"]
    )
    for m in METRICS:  # a key served by its baseline shows the baseline's metrics
        quality[m] = quality[m].where(~served_by_baseline, quality[f"baseline_{m}"])
    quality = quality.drop(columns="family_candidate")
    promotions = store.read_pandas(store.ref("gold", PROMOTIONS_TABLE))
    promoted = promotions[promotions["decision"] == "promoted"]
    since = (
        promoted.groupby([*keys, "candidate_model_run_id"])["decided_at"]
        .min()
        .reset_index()
        .rename(columns={"candidate_model_run_id": "model_run_id", "decided_at": "champion_since"})
    )
    quality = quality.merge(since, on=[*keys, "model_run_id"], how="left")
    quality["champion_version"] = champion_version
    store.overwrite(store.ref("gold", QUALITY_TABLE), quality)
