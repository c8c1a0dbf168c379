"""The `manymodels` command line: one verb per pipeline step, thin over the Python API."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from manymodels.config import Config, load_config
from manymodels.errors import IntegrityError, ManyModelsError

__all__ = ["main"]

log = logging.getLogger("manymodels")


def echo(text: str = "") -> None:
    """What a verb tells its user goes to stdout; logs go to stderr."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--conf", action="append", default=[], metavar="FILE", help="extra YAML config (repeatable)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, e.g. --set train.horizon=14 (repeatable)",
    )


def _config(args: argparse.Namespace, extra: Sequence[str] = ()) -> Config:
    return load_config(conf=args.conf or None, overrides=[*extra, *args.overrides], home=args.home)


# --------------------------------------------------------------------------- verbs


def _ingest(args: argparse.Namespace) -> int:
    from manymodels.ingest import ingest

    result = ingest(args.sources, _config(args))
    echo(result.summary())
    for source, rows in result.sources.items():
        echo(f"  {rows:>12,}  {source}")
    return 0


def _clean(args: argparse.Namespace) -> int:
    from manymodels.clean import clean

    result = clean(_config(args))
    echo(result.summary())
    return 0


def _train(args: argparse.Namespace) -> int:
    from manymodels.train import train

    result = train(
        _config(args),
        resume=args.resume,
        incremental=args.incremental,
        register=not args.no_register,
    )
    echo(result.summary())
    return 0


def _promote(args: argparse.Namespace) -> int:
    from manymodels.promote import promote

    result = promote(_config(args), run_id=args.run, dry_run=args.dry_run)
    echo(result.summary())
    if args.dry_run and args.show:
        echo(result.decisions.to_string(index=False, max_rows=args.show))
    return 0


def _score(args: argparse.Namespace) -> int:
    from manymodels.score import score

    result = score(
        _config(args),
        horizon=args.horizon,
        alias=args.alias,
        version=args.version,
        job=args.job,
        origin=args.origin,
    )
    echo(result.summary())
    return 0


def _report(args: argparse.Namespace) -> int:
    from manymodels.report import write_report

    path = write_report(_config(args), args.output)
    echo(f"report written to {path}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import os

    from manymodels.registry.serve import serve_command

    cmd = serve_command(
        _config(args),
        alias=args.alias,
        version=args.version,
        host=args.host,
        port=args.port,
        workers=args.workers,
        env_manager=args.env_manager,
        cache_size=args.cache_size,
        access_log=args.access_log,
    )
    echo(f"serving {cmd.name} version {cmd.version} at {cmd.url} (Ctrl-C stops it)")
    os.execve(cmd.argv[0], cmd.argv, cmd.env)  # the server replaces this process


def _sql(args: argparse.Namespace) -> int:
    from manymodels.spark import get_spark, to_pandas
    from manymodels.tables import open_store

    cfg = _config(args)
    spark = get_spark()
    views = open_store(cfg, spark).register_views(spark)
    if not args.query:
        for view, table in views.items():
            echo(f"{view:<28} {table}")
        return 0
    frame = to_pandas(spark.sql(args.query).limit(args.limit))
    echo(frame.to_string(index=False))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from manymodels.pipeline import DEMO_OVERRIDES, run_demo

    cfg = _config(args, DEMO_OVERRIDES)
    for line in run_demo(
        cfg,
        n_stores=args.stores,
        n_items=args.items,
        n_days=args.days,
        seed=args.seed,
        steps=args.until,
    ):
        echo(line)
    return 0


VERBS: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {
    "ingest": ("land source files in bronze.sales_raw", _ingest),
    "clean": ("bronze → silver.sales and silver.sales_quarantine", _clean),
    "train": ("fit one model per key: silver.sales → gold.model_ledger + MLflow", _train),
    "promote": ("apply the business rules per key; register the champion set", _promote),
    "score": ("forecast every key with the champion set → gold.predictions", _score),
    "serve": ("serve the champion set (or any version) over HTTP with MLflow", _serve),
    "report": ("write a self-contained HTML report of the pipeline's results", _report),
    "sql": ("query the pipeline's tables with Spark SQL (no query: list them)", _sql),
    "demo": ("generate demand data and run the pipeline on the embedded default", _demo),
}


def _whole(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum`` (argparse names the flag in its error)."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a whole number of {what} >= {minimum}, got {text!r}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"must be a whole number of {what} >= {minimum}, got {text!r}"
            )
        return value

    parse.__name__ = what  # argparse shows it for a bad value
    return parse


_periods = _whole(1, "periods")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="manymodels",
        description="Train, promote, score and serve one model per data partition on Spark.",
    )
    parser.add_argument(
        "--home",
        default=None,
        metavar="DIR",
        help="work folder for local tables and MLflow (env MANYMODELS_HOME, default ./.manymodels)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    parsers: dict[str, argparse.ArgumentParser] = {}
    for name, (help_text, func) in VERBS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p)
        p.set_defaults(func=func)
        parsers[name] = p
    parsers["ingest"].add_argument(
        "sources", nargs="+", help="CSV/Parquet files, folders, globs or zips of CSVs"
    )
    tr = parsers["train"]
    tr.add_argument("--resume", metavar="RUN_ID", help="refit only keys with no ok row in RUN_ID")
    tr.add_argument(
        "--incremental",
        action="store_true",
        help="carry over keys whose data is unchanged and whose model is young enough",
    )
    tr.add_argument(
        "--no-register", action="store_true", help="do not register a challenger model version"
    )
    pr = parsers["promote"]
    pr.add_argument("--run", metavar="RUN_ID", help="training run to promote (default: challenger)")
    pr.add_argument("--dry-run", action="store_true", help="show the decisions, change nothing")
    pr.add_argument(
        "--show",
        type=_whole(1, "rows"),
        default=20,
        metavar="N",
        help="decisions shown by --dry-run",
    )
    sc = parsers["score"]
    sc.add_argument(
        "--horizon",
        type=_periods,
        default=None,
        help="periods to forecast per key, at least 1 (default: score.horizon)",
    )
    sc.add_argument(
        "--from",
        dest="origin",
        default=None,
        metavar="DATE",
        help="forecast origin, a period of data.freq: every key is forecast over the horizon "
        "periods after it (default: each key's last observation)",
    )
    sc.add_argument("--alias", default=None, help="model alias to score (default: champion)")
    sc.add_argument(
        "--version", type=_whole(1, "versions"), default=None, help="model version to score"
    )
    sc.add_argument("--job", default=None, help="scoring job name that owns the rows")
    sv = parsers["serve"]
    sv.add_argument("--alias", default=None, help="alias to serve (default: champion)")
    sv.add_argument("--version", type=_whole(1, "versions"), default=None, help="version to serve")
    sv.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    sv.add_argument("--port", type=_whole(1, "port"), default=5000, help="port (default 5000)")
    sv.add_argument("--workers", type=_whole(1, "workers"), default=1, help="server processes")
    sv.add_argument(
        "--env-manager",
        default="local",
        choices=["local", "uv", "virtualenv", "conda"],
        help="local: this environment; uv/virtualenv/conda: build the set's own environment "
        "from its logged wheel and pinned requirements",
    )
    sv.add_argument(
        "--cache-size",
        type=_whole(1, "models"),
        default=None,
        help="models kept in memory per server process (default $MANYMODELS_CACHE_SIZE or 256)",
    )
    sv.add_argument(
        "--access-log",
        action="store_true",
        help="log a line per request (off by default: it costs about 0.6 ms per request)",
    )
    parsers["report"].add_argument(
        "--output", "-o", default=None, help="HTML file (default: <home>/report.html)"
    )
    q = parsers["sql"]
    q.add_argument("query", nargs="?", help="e.g. 'SELECT * FROM gold_forecast_summary'")
    q.add_argument("--limit", type=_whole(1, "rows"), default=50, help="rows shown (default 50)")
    demo = parsers["demo"]
    demo.add_argument(
        "--stores", type=_whole(1, "stores"), default=3, help="stores to generate (default 3)"
    )
    demo.add_argument(
        "--items", type=_whole(1, "items"), default=10, help="items per store (default 10)"
    )
    demo.add_argument(
        "--days", type=_whole(1, "days"), default=730, help="days of history (default 730)"
    )
    demo.add_argument("--seed", type=_whole(0, "seed"), default=0)
    demo.add_argument(
        "--until", default=None, help="stop after this step (ingest, clean, train, ...)"
    )
    return parser


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("manymodels").setLevel(level)
    for noisy in ("py4j", "pyspark", "cmdstanpy", "prophet", "mlflow", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; a ManyModelsError becomes one line on stderr and exit code 2 (3 for an
    IntegrityError: model bytes that failed verification, a security event)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    try:
        code: Any = args.func(args)
        return int(code or 0)
    except ManyModelsError as exc:
        sys.stderr.write(f"manymodels {args.verb}: error: {exc}\n")
        return 3 if isinstance(exc, IntegrityError) else 2
    except KeyboardInterrupt:  # pragma: no cover - interactive
        sys.stderr.write("interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
