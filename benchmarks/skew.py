"""Skew: one key with 100x the rows of the others must not stretch training by more than its
own fit time.

Silver holds ``--series`` ordinary daily keys of ``--days`` rows each, plus (in the skewed
arm) one giant key with ``--factor`` times as many rows. In the same run, on one warmed-up
Spark session and the same family:

(a) ``train`` on the ordinary keys alone: ``t_even``;
(b) the giant key's own fit: ``fit_partition`` on its rows in this process, ``t_giant``;
(c) ``train`` on the ordinary keys plus the giant key: ``t_skewed``.

Training's balancing (keys spread over tasks by their row counts, longest first) should give
``t_skewed - t_even <= t_giant``: the giant key costs its own fit, not a straggler task that
also holds its share of ordinary keys. Prints the three times and ``stretch = (t_skewed -
t_even) / t_giant`` (target <= 1.0), from ``--repeats`` runs of each arm (medians).

Run: ``.venv/bin/python benchmarks/skew.py [--series 400] [--days 730] [--factor 100]
[--family ridge] [--repeats 2]``. Its last line:
``skew family=… series=… factor=… t_even_s=… t_giant_s=… t_skewed_s=… stretch=…``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from train_overhead import make_config, shape, start_spark

log = logging.getLogger("skew")


def demand(series: int, days: int, factor: int, skewed: bool) -> pd.DataFrame:
    """``series`` keys of ``days`` rows; with ``skewed``, key (0, 0) of ``days * factor`` rows."""
    from manymodels.datasets import generate_demand

    stores, items = shape(series)
    frame = generate_demand(stores, items, days, seed=7)
    if skewed:  # an ordinary key's years repeated: as regular as the others, 100x longer
        one = frame[
            (frame["store"] == frame["store"].iloc[0]) & (frame["item"] == frame["item"].iloc[0])
        ]
        giant = pd.concat([one] * factor, ignore_index=True)
        giant["ds"] = pd.date_range(one["ds"].min(), periods=len(giant), freq="D")
        frame = pd.concat([frame, giant.assign(store=0, item=0)], ignore_index=True)
    return frame.assign(ds=frame["ds"].dt.date, is_filled=False)


def write_silver(cfg: Any, frame: pd.DataFrame) -> None:
    from manymodels.tables import open_store

    store = open_store(cfg)
    store.overwrite(store.ref("silver", "sales"), frame)


def timed_train(cfg: Any, spark: Any) -> float:
    from manymodels.train import train

    started = time.perf_counter()
    result = train(cfg, spark, register=False)
    elapsed = time.perf_counter() - started
    if result.failed:
        raise SystemExit(f"{result.failed} keys failed: {result.top_errors}")
    return elapsed


def giant_fit(cfg: Any, frame: pd.DataFrame) -> float:
    from manymodels.partition import fit_partition

    rows = frame[(frame["store"] == 0) & (frame["item"] == 0)].copy()
    rows["ds"] = pd.to_datetime(rows["ds"])
    started = time.perf_counter()
    out = fit_partition(rows, cfg, run_id="skew")
    elapsed = time.perf_counter() - started
    if out["status"].iloc[0] != "ok":
        raise SystemExit(f"the giant key did not fit: {out['error'].iloc[0]}")
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=400)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--factor", type=int, default=100)
    parser.add_argument("--family", default="ridge")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    spark = start_spark(None)
    even_frame = demand(args.series, args.days, args.factor, skewed=False)
    skewed_frame = demand(args.series, args.days, args.factor, skewed=True)
    giant_rows = args.days * args.factor
    print(
        f"{args.series} keys x {args.days} days ({len(even_frame):,} rows) + one key of "
        f"{giant_rows:,} rows ({args.factor}x); family {args.family}; "
        f"{spark.sparkContext.defaultParallelism} cores"
    )
    times: dict[str, list[float]] = {"even": [], "giant": [], "skewed": []}
    with tempfile.TemporaryDirectory(prefix="mm-skew-") as tmp:
        even = make_config(Path(tmp) / "even", args.family)
        skewed = make_config(Path(tmp) / "skewed", args.family)
        write_silver(even, even_frame)
        write_silver(skewed, skewed_frame)
        timed_train(even, spark)  # warm-up: imports, MLflow set-up, JIT of the fit path
        for _ in range(args.repeats):
            times["even"].append(timed_train(even, spark))
            times["giant"].append(giant_fit(skewed, skewed_frame))
            times["skewed"].append(timed_train(skewed, spark))
    med = {k: statistics.median(v) for k, v in times.items()}
    stretch = (med["skewed"] - med["even"]) / med["giant"]
    for arm, label in (("even", "(a) ordinary keys"), ("giant", "(b) giant key's own fit"),
                       ("skewed", "(c) ordinary + giant")):  # fmt: skip
        runs = ", ".join(f"{t:.1f}" for t in times[arm])
        print(f"{label:<28} {med[arm]:7.1f} s  (runs: {runs})")
    print(f"extra time from the giant key: {med['skewed'] - med['even']:.1f} s "
          f"= {stretch:.2f} x its own fit (target <= 1.00)")  # fmt: skip
    print(
        f"skew family={args.family} series={args.series} factor={args.factor} "
        f"t_even_s={med['even']:.1f} t_giant_s={med['giant']:.1f} "
        f"t_skewed_s={med['skewed']:.1f} stretch={stretch:.2f}"
    )


if __name__ == "__main__":
    main()
