"""Scoring throughput: predictions per second, and scoring time as a share of training time.

Trains one model per key on generated daily series (3 years each), promotes them all, then
scores them. Both steps run end to end (Spark job, ledger or predictions write, MLflow run) in
the same already-running Spark session, so the ratio compares like with like.

    .venv/bin/python benchmarks/score_throughput.py --series 2000 --family ridge --horizon 28
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time

from manymodels import registry
from manymodels.config import load_config
from manymodels.datasets import generate_demand
from manymodels.promote import promote
from manymodels.score import score
from manymodels.spark import get_spark
from manymodels.tables import open_store
from manymodels.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=2000)
    parser.add_argument("--family", default="ridge")
    parser.add_argument("--horizon", type=int, default=28)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    n_items = 100 if args.series >= 100 else args.series
    n_stores = max(1, args.series // n_items)
    home = tempfile.mkdtemp(prefix="mm-score-bench-")
    cfg = load_config(
        home=home,
        overrides=[
            f"train.families=[{args.family}]",
            "train.fallback=null",
            "train.horizon=28",
            "data.regressors=[price, promo]",
            "promote.must_beat_baseline=false",
            "train.max_failed_fraction=1.0",
        ],
    )
    frame = generate_demand(n_stores, n_items, 1095, seed=1)
    store = open_store(cfg)
    store.overwrite(store.ref("silver", "sales"), frame.assign(ds=frame["ds"].dt.date))
    spark = get_spark()
    spark.range(10).count()
    registry.configure(cfg)  # one-time sqlite store creation, outside both timings
    print(
        f"{n_stores * n_items:,} series x 1,095 days, family {args.family}, "
        f"cores {os.cpu_count()}; one running Spark session reused for both steps"
    )

    t0 = time.perf_counter()
    trained = train(cfg, spark)
    train_s = time.perf_counter() - t0
    promote(cfg, spark)
    t0 = time.perf_counter()
    scored = score(cfg, spark, horizon=args.horizon)
    score_s = time.perf_counter() - t0

    print(f"train: {trained.ok:,} models in {train_s:.1f} s")
    print(f"score: {scored.rows:,} predictions for {scored.keys_scored:,} keys in {score_s:.1f} s")
    print(
        f"throughput: {scored.rows / score_s:,.0f} predictions/s, "
        f"{scored.keys_scored / score_s:,.1f} keys/s"
    )
    print(f"ratio score/train time = {score_s / train_s:.2f}")


if __name__ == "__main__":
    main()
