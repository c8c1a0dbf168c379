"""The demo pipeline: generate data, then run every step on the embedded default, in order."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator

from manymodels.config import Config

__all__ = ["DEMO_OVERRIDES", "DEMO_STEPS", "run_demo"]

log = logging.getLogger(__name__)

#: Settings the demo applies under the user's own ``--set`` (which win): the generated data's
#: regressors and fast model settings so the whole run stays short on two cores.
DEMO_OVERRIDES = (
    "data.regressors=[price, promo]",
    "train.preset=fast",
    "train.horizon=28",
)

DEMO_STEPS = ("generate", "ingest", "clean", "train", "promote", "score", "report")


def run_demo(
    cfg: Config,
    *,
    n_stores: int = 3,
    n_items: int = 10,
    n_days: int = 730,
    seed: int = 0,
    steps: str | None = None,
) -> Iterator[str]:
    """Run the demo; yields the lines of its summary as each step finishes."""
    from manymodels.clean import clean
    from manymodels.datasets import generate_demand, write_demand_files
    from manymodels.ingest import ingest
    from manymodels.tables import open_store

    if steps is not None and steps not in DEMO_STEPS:
        from manymodels.errors import ConfigError

        raise ConfigError(
            f"--until {steps!r} is not a demo step; use one of {', '.join(DEMO_STEPS)}"
        )
    home = cfg.home_path
    home.mkdir(parents=True, exist_ok=True)
    store = open_store(cfg)
    started = time.perf_counter()

    landing = home / "landing"
    shutil.rmtree(landing, ignore_errors=True)
    frame = generate_demand(
        n_stores,
        n_items,
        n_days,
        freq=cfg.data.freq,
        seed=seed,
        keys=(cfg.data.keys[0], cfg.data.keys[1]) if len(cfg.data.keys) == 2 else ("store", "item"),
        time_col=cfg.data.time_col,
        target_col=cfg.data.target_col,
    )
    files = write_demand_files(frame, landing, n_files=min(n_stores, 4))
    yield f"generated {len(frame):,} rows ({n_stores} stores x {n_items} items) in {landing}"
    if steps == "generate":
        return

    ingested = ingest([str(landing)], cfg, store)
    yield ingested.summary() + f" from {len(files)} file(s)"
    if steps == "ingest":
        return

    cleaned = clean(cfg, store)
    yield cleaned.summary()
    if steps == "clean":
        return

    from manymodels.spark import get_spark
    from manymodels.train import train

    spark = get_spark()
    trained = train(cfg, spark, store=store)
    yield trained.summary()
    if steps == "train":
        return

    from manymodels.promote import promote

    promoted = promote(cfg, spark, store=store)
    yield promoted.summary()
    if steps == "promote":
        return

    from manymodels.score import score

    scored = score(cfg, spark, store=store)
    yield scored.summary()
    if steps == "score":
        return

    from manymodels.report import write_report

    report = write_report(cfg, store=store)
    yield f"report: {report}"
    yield f"demo finished in {time.perf_counter() - started:.1f} s"
    yield f"tables: {store_root(cfg)}  (read them with deltalake, polars or Spark)"
    yield f"MLflow: {cfg.mlflow.tracking_uri or 'sqlite:///' + str(home / 'mlflow.db')}"


def store_root(cfg: Config) -> str:
    """Where the demo's tables are, for the closing line."""
    if cfg.tables.backend == "local":
        return str(cfg.home_path / "tables")
    return (
        f"{cfg.tables.catalog + '.' if cfg.tables.catalog else ''}{cfg.tables.bronze}/silver/gold"
    )
