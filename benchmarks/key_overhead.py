"""The pipeline's own cost per key: ``fit_partition`` against the bare fit + predict it wraps.

In one process (pure pandas, no Spark), for each case (a family list and a history length):

(a) ``fit_partition`` on each of ``--keys`` synthetic daily keys, handed over as Spark's
    ``applyInPandas`` hands them (``ds`` as ``datetime.date`` objects, ``is_filled``), with
    one backtest window of 28 periods: ms per key;
(b) the bare work of the same families on the same keys, summed over the families:
    ``get_family(name)(spec, params).fit(history)`` and a 28-step ``predict``, on a history
    already typed (datetime64 ``ds``, float ``y``): ms per key. The pipeline fits each family
    about twice (on its backtest window, then the winner and the baseline on all rows): with
    no overhead at all the ratio would still be about 2.

Times are this process's CPU time (core-ms: a shared machine's other load does not count),
the minimum of ``--repeats`` passes over the keys, after a warm-up key. Prints both,
``ratio = a / b`` and ``overhead = a - b`` per case. ``--profile`` prints cProfile's top
functions of one pass of (a). ``--dump PATH`` saves every case's ledger rows (pickle) and
``--against PATH`` compares this run's rows with a saved dump: every column equal except
``fit_seconds`` and ``trained_at`` (model bytes included), for changes that must not change
any forecast or metric.

Run: ``.venv/bin/python benchmarks/key_overhead.py [--keys 300] [--repeats 3]
[--cases seasonal_naive:365,ridge+seasonal_naive:365,seasonal_naive:1461] [--profile]``.
It ends with one line per case:
``key_overhead family=… days=… ms_per_key=… bare_ms_per_key=… ratio=…``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import pickle
import pstats
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
HORIZON = 28
TRAINED_AT = datetime(2024, 1, 1, tzinfo=timezone.utc)
#: Ledger columns that differ between runs by design.
VOLATILE = ("fit_seconds", "trained_at")


def make_config(home: Path, families: list[str]) -> Any:
    from manymodels.config import load_config

    return load_config(
        overrides=[
            f"train.families=[{', '.join(families)}]",
            "train.n_windows=1",
            f"train.horizon={HORIZON}",
        ],
        home=home,
        base=REPO / "conf" / "base.yml",
    )


def make_keys(n_keys: int, days: int, seed: int) -> list[pd.DataFrame]:
    """``n_keys`` daily keys of ``days`` rows, typed as a Spark fit task receives them."""
    from manymodels.datasets import generate_demand

    items = max(1, math.isqrt(n_keys))
    stores = math.ceil(n_keys / items)
    frame = generate_demand(stores, items, days, seed=seed, with_regressors=False)
    frame = frame.assign(ds=frame["ds"].dt.date, is_filled=False)
    parts = [part.reset_index(drop=True) for _, part in frame.groupby(["store", "item"])]
    return parts[:n_keys]


def typed_history(pdf: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {"ds": pd.to_datetime(pdf["ds"]), "y": pdf["y"].to_numpy(dtype="float64")}
    ).sort_values("ds", ignore_index=True)


def pipeline(keys: list[pd.DataFrame], cfg: Any) -> tuple[float, list[pd.DataFrame]]:
    from manymodels.partition import fit_partition

    started = time.process_time()
    rows = [fit_partition(pdf, cfg, run_id="bench", trained_at=TRAINED_AT) for pdf in keys]
    return time.process_time() - started, rows


def bare(histories: list[pd.DataFrame], cfg: Any, families: list[str]) -> float:
    from manymodels.models import get_family
    from manymodels.partition import forecast_spec

    spec = forecast_spec(cfg)
    made = [
        (get_family(n), {**get_family(n).default_params(), **cfg.train.params.get(n, {})})
        for n in families
    ]
    started = time.process_time()
    for history in histories:
        future = pd.DataFrame(
            {"ds": pd.date_range(history["ds"].iloc[-1], periods=HORIZON + 1, freq="D")[1:]}
        )
        for family, params in made:
            family(spec, params).fit(history).predict(future)
    return time.process_time() - started


def compare(name: str, rows: list[pd.DataFrame], saved: list[pd.DataFrame]) -> int:
    """How many keys' ledger rows differ from the saved ones (volatile columns aside)."""
    if len(rows) != len(saved):
        raise SystemExit(
            f"{name}: the dump holds {len(saved)} keys, this run {len(rows)}; "
            "compare runs with the same --keys and --seed"
        )
    bad = 0
    for i, (new, old) in enumerate(zip(rows, saved, strict=True)):
        a, b = new.drop(columns=list(VOLATILE)), old.drop(columns=list(VOLATILE))
        same = list(a.columns) == list(b.columns) and all(
            _same(a[c].iloc[0], b[c].iloc[0]) for c in a.columns
        )
        if not same:
            bad += 1
            if bad <= 3:
                diff = [c for c in a.columns if not _same(a[c].iloc[0], b[c].iloc[0])]
                print(f"  {name} key {i} differs in {diff}", file=sys.stderr)
    return bad


def _same(x: Any, y: Any) -> bool:
    if isinstance(x, float) and isinstance(y, float):
        return (math.isnan(x) and math.isnan(y)) or x == y
    return bool(x == y) if not (x is None or y is None) else x is y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--cases", default="seasonal_naive:365,ridge+seasonal_naive:365,seasonal_naive:1461"
    )
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--dump", type=Path)
    parser.add_argument("--against", type=Path)
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    saved = pickle.loads(args.against.read_bytes()) if args.against else {}
    dumped: dict[str, list[pd.DataFrame]] = {}
    lines, mismatched = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            names, days = case.split(":")
            families = names.split("+")
            cfg = make_config(Path(tmp) / "home", families)
            keys = make_keys(args.keys, int(days), args.seed)
            histories = [typed_history(pdf) for pdf in keys]
            pipeline(keys[:1], cfg)  # warm-up: imports, caches
            bare(histories[:1], cfg, families)
            t_pipe, t_bare, rows = math.inf, math.inf, []
            for _ in range(args.repeats):
                seconds, rows = pipeline(keys, cfg)
                t_pipe = min(t_pipe, seconds)
                t_bare = min(t_bare, bare(histories, cfg, families))
            if args.profile:
                prof = cProfile.Profile()
                prof.enable()
                pipeline(keys, cfg)
                prof.disable()
                out = io.StringIO()
                pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(45)
                print(out.getvalue())
            dumped[case] = rows
            if case in saved:
                bad = compare(case, rows, saved[case])
                mismatched += bad
                print(f"{case}: {bad} of {len(rows)} keys differ from {args.against}")
            ms, bare_ms = 1e3 * t_pipe / len(keys), 1e3 * t_bare / len(keys)
            status = pd.concat(rows)["status"].value_counts().to_dict()
            print(
                f"{case}: keys={len(keys)} status={status} pipeline {ms:.2f} ms/key, "
                f"bare fit+predict {bare_ms:.2f} ms/key, overhead {ms - bare_ms:.2f} ms/key"
            )
            lines.append(
                f"key_overhead family={names} days={days} ms_per_key={ms:.2f} "
                f"bare_ms_per_key={bare_ms:.2f} ratio={ms / bare_ms:.2f}"
            )
    if args.dump:
        args.dump.write_bytes(pickle.dumps(dumped))
    print("\n".join(lines))
    if mismatched:
        raise SystemExit(f"{mismatched} keys differ from {args.against}")


if __name__ == "__main__":
    main()
