"""Cost of registering 10,000 per-key models: one model-set version vs one registered model per key.

(a) ``register_model_set`` with N real ridge models (``dumps`` bytes), end to end;
(b) the old per-model way (``mlflow.pyfunc.log_model`` + registration per key, as the Azure
    many-models accelerator did) on a sample of keys, extrapolated to N;
(c) loading the registered set as a pyfunc and forecasting a few keys on demand.

Run: ``.venv/bin/python benchmarks/registry_cost.py [--n 10000] [--sample 20]``
Everything goes to a temporary home (sqlite tracking + local artifacts) deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PIP = ["manymodels", "pandas<3", "pyarrow", "prophet", "scikit-learn"]


def real_blobs(n_distinct: int, family: str) -> list[bytes]:
    """Fit ``n_distinct`` small models on 3 years of synthetic daily data and serialize them."""
    from manymodels.models import ForecastSpec, dumps, get_family

    rng = np.random.default_rng(0)
    ds = pd.date_range("2022-01-01", periods=3 * 365, freq="D")
    spec = ForecastSpec(freq="D", season_length=7)
    blobs = []
    for _ in range(n_distinct):
        t = np.arange(len(ds))
        y = 20 + rng.normal(0, 5) + 4 * np.sin(t * 2 * np.pi / 7) + rng.normal(0, 2, len(ds))
        model = get_family(family)(spec).fit(pd.DataFrame({"ds": ds, "y": y}))
        blobs.append(dumps(model))
    return blobs


def model_frame(n: int, blobs: list[bytes], run_id: str) -> pd.DataFrame:
    from manymodels.models import sha256_hex

    n_items = 100
    picked = [blobs[i % len(blobs)] for i in range(n)]
    return pd.DataFrame(
        {
            "store": [i // n_items for i in range(n)],
            "item": [i % n_items for i in range(n)],
            "run_id": run_id,
            "family": "ridge",
            "model": picked,
            "model_sha256": [sha256_hex(b) for b in picked],
            "last_ds": pd.Timestamp("2024-12-30"),
            "freq": "D",
        }
    )


def per_model_way(frame: pd.DataFrame, run_id: str, name: str, tmp: Path) -> float:
    """One ``log_model`` + one registered model per key; returns seconds per key."""
    import mlflow

    from manymodels.registry import _pyfunc_cls

    py_model = _pyfunc_cls()  # any PythonModel: the cost is MLflow's, not the model's
    # the fluent API below is this benchmark's own: point it at the set's stores first
    # (manymodels itself never changes the process-wide URIs)
    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'home' / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{tmp / 'home' / 'mlflow.db'}")
    started = time.perf_counter()
    quiet = io.StringIO()  # MLflow prints "Successfully registered model ..." per key
    with (
        mlflow.start_run(run_id=run_id),
        warnings.catch_warnings(),
        contextlib.redirect_stdout(quiet),
        contextlib.redirect_stderr(quiet),
    ):
        warnings.simplefilter("ignore")
        for row in frame.itertuples(index=False):
            path = tmp / f"model_{row.store}_{row.item}.bin"
            path.write_bytes(row.model)
            mlflow.pyfunc.log_model(
                name=f"model_{row.store}_{row.item}",
                python_model=py_model(),
                artifacts={"model": str(path)},
                pip_requirements=PIP,
                registered_model_name=f"{name}_{row.store}_{row.item}",
            )
    return (time.perf_counter() - started) / len(frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="models in the set")
    parser.add_argument("--sample", type=int, default=20, help="keys timed the per-model way")
    parser.add_argument("--distinct", type=int, default=200, help="distinct fitted models")
    parser.add_argument("--family", default="ridge")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="mm-bench-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        from manymodels import registry
        from manymodels.config import load_config

        cfg = load_config(
            home=tmp / "home",
            overrides={
                "mlflow.tracking_uri": None,
                "mlflow.registry_uri": None,
                "mlflow.experiment": "bench",
                "mlflow.model_name": "bench_set",
            },
        )
        registry.configure(cfg)
        logging.getLogger("mlflow").setLevel(logging.ERROR)  # after import: mlflow resets it
        print(f"setup: import mlflow + create sqlite store   {time.perf_counter() - t0:6.2f} s")

        t0 = time.perf_counter()
        blobs = real_blobs(args.distinct, args.family)
        sizes = [len(b) for b in blobs]
        print(
            f"fitted {args.distinct} distinct {args.family} models in "
            f"{time.perf_counter() - t0:.1f} s; bytes/model mean {np.mean(sizes):.0f}"
        )

        with registry.job_run(cfg, "train") as run:
            frame = model_frame(args.n, blobs, run.run_id)
            mb = frame["model"].map(len).sum() / 1e6
            t0 = time.perf_counter()
            v1 = registry.register_model_set(cfg, frame, alias="challenger", run_id=run.run_id)
            cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            v2 = registry.register_model_set(cfg, frame, alias="challenger", run_id=run.run_id)
            warm = time.perf_counter() - t0
        print(
            f"(a) register_model_set, {args.n} models ({mb:.1f} MB): "
            f"{cold:6.2f} s cold (v{v1.version}), {warm:6.2f} s warm (v{v2.version})"
        )

        with registry.job_run(cfg, "train-per-model") as run:
            pass
        sample = frame.sample(args.sample, random_state=0)
        per_key = per_model_way(sample, run.run_id, "bench_key", tmp)
        extrapolated = per_key * args.n
        print(
            f"(b) per-model log_model + register: {per_key:6.3f} s/key on {args.sample} keys "
            f"-> {extrapolated:8.1f} s for {args.n} ({extrapolated / 60:.1f} min), "
            f"{2 * args.n} registry writes + {args.n} model logs"
        )
        print(f"ratio (b/a): {extrapolated / cold:.0f}x  (vs warm: {extrapolated / warm:.0f}x)")

        import mlflow

        t0 = time.perf_counter()
        model: Any = mlflow.pyfunc.load_model("models:/bench_set@challenger")
        t_load = time.perf_counter() - t0
        keys = frame[["store", "item"]].sample(100, random_state=1).assign(horizon=28)
        t0 = time.perf_counter()
        out = model.predict(keys)
        t_pred = time.perf_counter() - t0
        print(
            f"(c) pyfunc load {t_load:.2f} s; forecast 100 keys x 28 days on demand "
            f"{t_pred:.2f} s ({len(out)} rows)"
        )


if __name__ == "__main__":
    main()
