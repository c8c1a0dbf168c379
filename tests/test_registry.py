"""MLflow runs, registered model-set versions, aliases and the on-demand pyfunc."""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from manymodels import registry
from manymodels.config import Config, load_config
from manymodels.errors import ModelError

mlflow = pytest.importorskip("mlflow")
from manymodels.registry.client import uris  # noqa: E402

LAST_DS = pd.Timestamp("2024-03-31")


class FakeForecaster:
    """yhat = level (+ promo), interval ±1."""

    def __init__(self, level: float, freq: str) -> None:
        self.level = level
        self.spec = SimpleNamespace(freq=freq)

    predicted = 0  # calls of predict, all instances

    def predict(self, future: pd.DataFrame) -> pd.DataFrame:
        FakeForecaster.predicted += 1
        bump = future["promo"].fillna(0).to_numpy() if "promo" in future else 0.0
        yhat = self.level + bump
        return pd.DataFrame(
            {
                "ds": pd.to_datetime(future["ds"]).to_numpy(),
                "yhat": yhat,
                "yhat_lower": yhat - 1,
                "yhat_upper": yhat + 1,
            },
            index=future.index,
        )


class Loader:
    """Stands in for manymodels.models.loads and counts deserializations."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, blob: bytes, sha256: str | None) -> FakeForecaster:
        if sha256 is not None and hashlib.sha256(blob).hexdigest() != sha256:
            raise ModelError("hash mismatch")
        data = json.loads(blob)
        self.calls.append(data["level"])
        return FakeForecaster(data["level"], data["freq"])


def level(store: int, item: str, offset: float = 0.0) -> float:
    return store * 100 + int(item[1:]) + offset


def make_models(
    n_stores: int = 5, n_items: int = 10, run_id: str = "r1", offset: float = 0.0
) -> pd.DataFrame:
    rows = []
    for s in range(n_stores):
        for i in range(n_items):
            item = f"i{i:02d}"
            blob = json.dumps({"level": level(s, item, offset), "freq": "D", "pad": "x" * 200})
            raw = blob.encode()
            rows.append(
                {
                    "store": s,
                    "item": item,
                    "run_id": run_id,
                    "family": "ridge" if i % 2 else "naive",
                    "model": raw,
                    "model_sha256": hashlib.sha256(raw).hexdigest(),
                    "last_ds": LAST_DS,
                    "freq": "D",
                    "extra": 1,
                }
            )
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # unsorted on purpose


@pytest.fixture
def loader(monkeypatch: pytest.MonkeyPatch) -> Loader:
    fake = Loader()
    monkeypatch.setattr(registry.store, "_load_forecaster", fake)
    return fake


@pytest.fixture
def cfg(tmp_path: Path, loader: Loader) -> Config:
    return load_config(
        home=tmp_path / "home",
        overrides={
            "data.regressors": ["promo"],
            "mlflow.tracking_uri": None,
            "mlflow.registry_uri": None,
            "mlflow.experiment": "test",
            "mlflow.model_name": "mm_test",
        },
    )


def client_of(cfg: Config) -> Any:
    tracking, registry_uri = uris(cfg)
    return mlflow.MlflowClient(tracking_uri=tracking, registry_uri=registry_uri)


@contextlib.contextmanager
def as_user(cfg: Config) -> Iterator[None]:
    """Point the global MLflow URIs at cfg's stores, as a user serving the model would."""
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uris(cfg)[0])
    mlflow.set_registry_uri(uris(cfg)[1])
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


def load_pyfunc(cfg: Config, uri: str) -> Any:
    with as_user(cfg):
        return mlflow.pyfunc.load_model(uri)


def register(cfg: Config, models: pd.DataFrame, alias: str = "challenger") -> Any:
    with registry.job_run(cfg, "train") as run:
        return registry.register_model_set(cfg, models, alias=alias, run_id=run.run_id)


def test_import_does_not_import_mlflow() -> None:
    code = "import sys, manymodels.registry; sys.exit('mlflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_bad_model_frames_are_refused(cfg: Config) -> None:
    models = make_models(1, 3)
    with pytest.raises(ModelError, match="lacks column"):
        registry.register_model_set(cfg, models.drop(columns="freq"), alias="x", run_id="r")
    with pytest.raises(ModelError, match="twice"):
        registry.register_model_set(
            cfg, pd.concat([models, models.iloc[:1]]), alias="x", run_id="r"
        )
    bad = models.copy()
    bad.iloc[0, bad.columns.get_loc("model_sha256")] = "0" * 64
    with pytest.raises(ModelError, match="model_sha256"):
        registry.register_model_set(cfg, bad, alias="x", run_id="r")


def test_register_versions_and_aliases(cfg: Config, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    v1 = register(cfg, make_models(run_id="r1"))
    assert (v1.name, v1.version, v1.alias, v1.n_models) == ("mm_test", 1, "challenger", 50)
    assert registry.get_alias_version(cfg, "challenger") == 1
    assert registry.get_alias_version(cfg, "champion") is None

    # second version registered from outside the run: the finished run is resumed and restored
    with registry.job_run(cfg, "promote") as run:
        promote_run = run.run_id
    mixed = make_models(run_id="r2", offset=0.5)
    mixed.loc[mixed["store"] == 0, "run_id"] = "r1"
    v2 = registry.register_model_set(
        cfg, mixed, alias="challenger", run_id=promote_run, tags={"data_version": "7"}
    )
    assert v2.version == 2
    assert registry.get_alias_version(cfg, "challenger") == 2

    client = client_of(cfg)
    assert client.get_run(promote_run).info.status == "FINISHED"
    mv = client.get_model_version("mm_test", "2")
    assert mv.tags["n_models"] == "50"
    assert mv.tags["run_id"] == promote_run
    assert mv.tags["data_version"] == "7"
    assert json.loads(mv.tags["families"]) == {"naive": 25, "ridge": 25}

    ms = registry.load_model_set(cfg, "challenger")
    assert (ms.name, ms.version, ms.run_id, len(ms)) == ("mm_test", 2, promote_run, 50)
    man = ms.manifest
    assert man[["store", "item"]].equals(
        man[["store", "item"]].sort_values(["store", "item"]).reset_index(drop=True)
    )
    assert man["row"].tolist() == list(range(50))
    assert set(man.loc[man["store"] == 0, "run_id"]) == {"r1"}
    frame = ms.models_frame()
    assert list(frame.columns[:3]) == ["store", "item", "run_id"]
    merged = frame.merge(mixed, on=["store", "item"], suffixes=("", "_in"))
    assert (merged["model"] == merged["model_in"]).all()
    assert ms.get((3, "i04")).level == level(3, "i04", 0.5)
    assert registry.load_model_set(cfg, "challenger", version=1).get((3, "i04")).level == 304

    # everything under home: sqlite db, artifacts; nothing in the working directory
    assert (cfg.home_path / "mlflow.db").is_file()
    assert list((cfg.home_path / "mlartifacts").rglob("models/part-00000.arrow"))
    # (MLflow 2.x's sqlite store makes an empty ./mlruns as its default artifact root)
    assert not list((tmp_path / "mlruns").rglob("*"))


def test_pyfunc_predicts_by_ds_and_horizon(cfg: Config, loader: Loader) -> None:
    register(cfg, make_models())
    model = load_pyfunc(cfg, "models:/mm_test@challenger")
    assert loader.calls == []  # nothing deserialized at load time

    ds = pd.date_range("2024-04-01", periods=3, freq="D")
    rows = pd.DataFrame(
        {
            "store": [1] * 3 + [4] * 3,
            "item": ["i02"] * 3 + ["i09"] * 3,
            "ds": [d.strftime("%Y-%m-%d") for d in ds] * 2,
            "promo": [0.0, 1.0, 0.0, 0.0, 0.0, 2.0],
        }
    )
    out = model.predict(rows)
    assert list(out.columns) == ["store", "item", "ds", "yhat", "yhat_lower", "yhat_upper", "error"]
    assert out["error"].isna().all()
    assert out["yhat"].tolist() == [102, 103, 102, 409, 409, 411]
    assert (out["yhat_upper"] - out["yhat_lower"] == 2).all()
    assert out["ds"].tolist() == list(ds) * 2

    hz = pd.DataFrame(
        {"store": [0, 2, 3], "item": ["i00", "i05", "i07"], "horizon": [2.0, 3.0, 1.0]}
    )
    out = model.predict(hz)
    assert len(out) == 6
    assert out.groupby(["store", "item"]).size().to_dict() == {
        (0, "i00"): 2,
        (2, "i05"): 3,
        (3, "i07"): 1,
    }
    assert out["ds"].min() == LAST_DS + pd.Timedelta(days=1)
    assert out.loc[out["store"] == 2, "ds"].max() == LAST_DS + pd.Timedelta(days=3)
    assert set(out.loc[out["store"] == 3, "yhat"]) == {307}

    # an unknown key or a row without a date is that row's error, the rest is served
    unknown = pd.DataFrame(
        {"store": [1, 9, 2], "item": ["i01", "i99", "i02"], "horizon": [1, 1, None]}
    )
    out = model.predict(unknown)
    assert out["error"].isna().tolist() == [True, False, False]
    assert "store=9, item='i99'" in out["error"].iloc[1]
    assert "neither a ds nor a positive horizon" in out["error"].iloc[2]
    assert out["yhat"].iloc[0] == 101 and out["yhat"].iloc[1:].isna().all()
    with pytest.raises(mlflow.exceptions.MlflowException, match=r"store=9, item='i99'") as err:
        model.predict(unknown.iloc[:2], params={"errors": "raise"})
    assert err.value.get_http_status_code() == 400 and "Traceback" not in err.value.message
    missing = r"missing inputs \[.item.\]"
    with pytest.raises(mlflow.exceptions.MlflowException, match=missing) as err:
        model.predict(unknown.drop(columns="item"))
    assert err.value.get_http_status_code() == 400


def test_a_servers_records_are_the_body_of_the_predicted_frame(cfg: Config) -> None:
    import io

    from mlflow.pyfunc.scoring_server import predictions_to_json

    def body(predictions: object) -> str:
        out = io.StringIO()
        predictions_to_json(predictions, out)
        return out.getvalue()

    register(cfg, make_models())
    store = registry.load_model_set(cfg, "challenger")._store
    rows = pd.DataFrame(
        {
            "store": [1, 1, 9, 2, 3, 1],
            "item": ["i02", "i02", "i99", "i05", "i07", "i01"],
            "ds": ["2024-04-01", "2024-04-02", None, None, None, None],
            "horizon": [None, None, 1.0, None, 3.0, 2.0],
            "promo": [1.0, 0.0, None, None, None, None],
        }
    )
    for errors in ("coerce", "raise"):
        wanted = rows if errors == "coerce" else rows.iloc[[0, 1, 4, 5]]
        frame = store.predict(wanted, errors)
        records = store.predict_records(wanted, errors)
        assert isinstance(records, list) and len(records) == len(frame)
        assert body(records) == body(frame)


def test_on_demand_loading_is_bounded(cfg: Config, loader: Loader) -> None:
    register(cfg, make_models())
    ms = registry.load_model_set(cfg, "challenger", cache_size=4)
    keys = pd.DataFrame(
        {"store": [k // 10 for k in range(10)], "item": [f"i{k:02d}" for k in range(10)]}
    )
    ms.predict(keys.assign(horizon=2))
    assert ms.loads == 10 and len(loader.calls) == 10
    ms.predict(keys.iloc[6:].assign(horizon=1))  # the 4 most recent keys are cached
    assert ms.loads == 10
    ms.predict(keys.iloc[:1].assign(horizon=1))  # evicted: loaded again
    assert ms.loads == 11

    model = load_pyfunc(cfg, "models:/mm_test/1")
    loader.calls.clear()
    for _ in range(2):
        model.predict(keys.assign(horizon=1), params={"cache_size": 2})
    assert len(loader.calls) == 20  # 10 keys cycling through a cache of 2
    loader.calls.clear()
    for _ in range(2):
        model.predict(keys.assign(horizon=1), params={"cache_size": 16})
    assert len(loader.calls) == 8  # the 2 still cached, then the other 8 once


def test_tampered_model_is_refused(cfg: Config, loader: Loader) -> None:
    models = make_models(2, 3)
    register(cfg, models)
    ms = registry.load_model_set(cfg, "challenger")
    blob = models.loc[(models["store"] == 1) & (models["item"] == "i01"), "model"].iloc[0]
    evil = blob.replace(b'"level": 101', b'"level": 999')
    assert len(evil) == len(blob) and evil != blob
    for path in cfg.home_path.rglob("models/part-*.arrow"):  # the artifact store and the cache
        data = path.read_bytes()
        assert blob in data
        path.write_bytes(data.replace(blob, evil))

    fresh = registry.load_model_set(cfg, "challenger")
    assert fresh.get((1, "i00")).level == 100
    with pytest.raises(ModelError, match=r"store=1, item='i01'.*model_sha256"):
        fresh.get((1, "i01"))
    model = load_pyfunc(cfg, "models:/mm_test@challenger")
    with pytest.raises(mlflow.exceptions.MlflowException, match="model_sha256") as err:
        model.predict(pd.DataFrame({"store": [1], "item": ["i01"], "horizon": [1]}))
    assert err.value.get_http_status_code() == 500  # not the request's fault
    assert 999 not in loader.calls
    assert ms.path.exists()


def test_empty_set_registers(cfg: Config) -> None:
    empty = make_models().iloc[:0]
    v = register(cfg, empty, alias="champion")
    assert (v.version, v.n_models) == (1, 0)
    ms = registry.load_model_set(cfg)
    assert len(ms) == 0 and ms.models_frame().empty
    assert "model" in ms.models_frame().columns
    model = load_pyfunc(cfg, "models:/mm_test@champion")
    out = model.predict(pd.DataFrame({"store": [1], "item": ["i01"], "horizon": [1]}))
    assert "no model for key" in out["error"].iloc[0]
    with pytest.raises(ModelError, match="no model for key"):
        ms.predict(pd.DataFrame({"store": [1], "item": ["i01"], "horizon": [1]}))
    out = ms.predict(pd.DataFrame({"store": [], "item": [], "horizon": []}))
    assert out.empty and "yhat" in out.columns


def test_missing_alias_says_what_to_run(cfg: Config) -> None:
    with pytest.raises(
        ModelError, match=r"model 'mm_test' has alias 'champion'.*manymodels promote"
    ):
        registry.load_model_set(cfg, "champion")
    register(cfg, make_models(1, 2))
    assert registry.get_alias_version(cfg, "champion") is None
    with pytest.raises(ModelError, match="alias 'champion'"):
        registry.load_model_set(cfg)
    with pytest.raises(ModelError, match="no version 5"):
        registry.load_model_set(cfg, version=5)


def test_job_run_logs_and_resumes(cfg: Config) -> None:
    long_cfg = cfg.replace(**{"train.params": {"ridge": {"note": "n" * 900}}})
    with registry.job_run(long_cfg, "train", params={"mode": "full"}, tags={"who": "ci"}) as run:
        assert mlflow.active_run() is None  # a client run: the fluent stack is untouched
        run.log_metrics({"wape": 0.25, "n_failed": 3, "skipped": None})
        run.log_table(pd.DataFrame({"store": [1], "wape": [0.2]}), "metrics")
        run.log_table(pd.DataFrame({"store": [1], "error": ["boom"]}), "failures.csv")
        run.log_dict({"a": 1}, "summary.json")
        run.set_tags({"n_keys": 50})
    client = client_of(cfg)
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.metrics == {"wape": 0.25, "n_failed": 3.0}
    params = got.data.params
    assert params["data.keys"] == '["store", "item"]'
    assert params["train.horizon"] == "28" and params["mode"] == "full"
    assert len(params["train.params.ridge.note"]) == 500
    tags = got.data.tags
    assert tags["manymodels.step"] == "train" and tags["manymodels.keys"] == "store,item"
    assert tags["who"] == "ci" and tags["n_keys"] == "50"
    names = {a.path for a in client.list_artifacts(run.run_id)}
    assert names == {"metrics.parquet", "failures.csv", "summary.json"}

    with registry.job_run(long_cfg, "train", params={"mode": "full"}, run_id=run.run_id) as again:
        again.log_metrics({"resumed": 1})
    assert again.run_id == run.run_id
    assert client.get_run(run.run_id).data.metrics["resumed"] == 1


def test_job_run_failure_marks_failed(cfg: Config) -> None:
    with pytest.raises(RuntimeError, match="boom"), registry.job_run(cfg, "score") as run:
        raise RuntimeError("boom")
    got = client_of(cfg).get_run(run.run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags["manymodels.error"] == "RuntimeError: boom"
    assert mlflow.active_run() is None


def test_real_baseline_models_round_trip(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    models_pkg = pytest.importorskip("manymodels.models")
    if not all(hasattr(models_pkg, n) for n in ("dumps", "loads", "sha256_hex")):
        pytest.skip("manymodels.models is not complete yet")
    from manymodels.models.base import get_family
    from manymodels.models.spec import ForecastSpec

    monkeypatch.setattr(registry.store, "_load_forecaster", models_pkg.loads)
    history = pd.DataFrame({"ds": pd.date_range("2024-01-01", periods=60, freq="D")})
    rows = []
    for store in (1, 2):
        spec = ForecastSpec(freq="D", season_length=7)
        fitted = get_family("naive")(spec).fit(history.assign(y=float(store)))
        blob = models_pkg.dumps(fitted)
        rows.append(
            {
                "store": store,
                "item": "a",
                "run_id": "r",
                "family": "naive",
                "model": blob,
                "model_sha256": models_pkg.sha256_hex(blob),
                "last_ds": history["ds"].max(),
                "freq": "D",
            }
        )
    register(cfg, pd.DataFrame(rows))
    model = load_pyfunc(cfg, "models:/mm_test@challenger")
    out = model.predict(pd.DataFrame({"store": [1, 2], "item": ["a", "a"], "horizon": [3.0, 3.0]}))
    assert out.groupby("store")["yhat"].mean().tolist() == [1.0, 2.0]


def test_a_horizon_forecast_is_kept_with_its_cached_model(cfg: Config, loader: Loader) -> None:
    register(cfg, make_models())
    ms = registry.load_model_set(cfg, "challenger", cache_size=1)
    ask = pd.DataFrame({"store": [1], "item": ["i02"], "horizon": [3]})
    before = FakeForecaster.predicted
    first = ms.predict(ask)
    pd.testing.assert_frame_equal(ms.predict(ask), first)
    assert FakeForecaster.predicted == before + 1  # the second answer came from the memo
    ms.predict(ask.assign(horizon=2))  # another horizon is computed
    assert FakeForecaster.predicted == before + 2
    ms.predict(pd.DataFrame({"store": [2], "item": ["i03"], "horizon": [3]}))  # evicts i02
    pd.testing.assert_frame_equal(ms.predict(ask), first)
    assert FakeForecaster.predicted == before + 4 and ms.loads == 3
