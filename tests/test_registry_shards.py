"""A set's bytes in shards, copied from gold.model_ledger by key, run and sha256 (never through
a frame of bytes on the driver), and sets of the single-file format 1 still loading."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from manymodels import registry
from manymodels.config import Config, load_config
from manymodels.errors import ModelError
from manymodels.registry import files
from manymodels.registry.store import Store
from manymodels.tables import open_store
from test_registry import LAST_DS, Loader, level, make_models

pytest.importorskip("mlflow")

KEYS = ["store", "item"]
META = [*KEYS, "run_id", "family", "model_sha256", "last_ds", "freq"]


@pytest.fixture
def cfg(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setattr(registry.store, "_load_forecaster", Loader())
    monkeypatch.setattr(files, "SHARD_ROWS", 7)  # 50 models -> 8 shards
    return load_config(
        home=tmp_path / "home",
        overrides={"mlflow.experiment": "test", "mlflow.model_name": "mm_shards"},
    )


def write_ledger(cfg: Config, models: pd.DataFrame, run_id: str) -> None:
    """Ledger rows as train writes them: the bytes in the origin run's row only."""
    rows = models.assign(run_id=run_id, origin_run_id=models["run_id"], status="ok")
    store = open_store(cfg)
    store.append(store.ref("gold", "model_ledger"), rows.drop(columns="extra"))


def register_meta(cfg: Config, meta: pd.DataFrame, alias: str = "challenger") -> int:
    with registry.job_run(cfg, "train") as run:
        version = registry.register_model_set(
            cfg, meta, alias=alias, run_id=run.run_id, store=open_store(cfg)
        )
    return version.version


def test_bytes_come_from_the_ledger_into_shards_and_carried_keys_from_their_origin(cfg):
    first = make_models(run_id="r1")
    write_ledger(cfg, first, "r1")
    # run r2 refits store 0 and carries the rest over: its carried rows hold no bytes
    refit = make_models(n_stores=1, run_id="r2", offset=0.5)
    carried = first[first["store"] > 0].assign(model=None)
    write_ledger(cfg, pd.concat([refit, carried]), "r2")
    meta = pd.concat([refit, first[first["store"] > 0]])[META]

    version = register_meta(cfg, meta)
    ms = registry.load_model_set(cfg, "challenger")
    assert ms.version == version and len(ms) == 50
    shards = sorted((ms.path / "artifacts" / files.MODELS_DIR).glob("part-*.arrow"))
    assert len(shards) == 8 and set(ms.manifest["shard"]) == {p.name for p in shards}
    assert ms.get((0, "i03")).level == level(0, "i03", 0.5)  # refitted in r2
    assert ms.get((4, "i09")).level == level(4, "i09")  # r1's bytes, carried by r2
    frame = ms.models_frame().merge(pd.concat([refit, first[first["store"] > 0]]), on=KEYS)
    assert (frame["model_x"] == frame["model_y"]).all() and len(frame) == 50


def test_altered_or_missing_ledger_bytes_stop_the_registration_naming_the_key(cfg):
    models = make_models(n_stores=2, run_id="r1")
    bad = models.copy()
    hit = (bad["store"] == 1) & (bad["item"] == "i04")
    bad.loc[hit, "model"] = bad.loc[hit, "model"].map(lambda b: b.replace(b"pad", b"PAD"))
    write_ledger(cfg, bad, "r1")
    with pytest.raises(ModelError, match=r"store=1, item='i04'.*altered"):
        register_meta(cfg, models[META])
    assert registry.get_alias_version(cfg, "challenger") is None

    gone = models[META].copy()
    gone.loc[gone["store"] == 0, "model_sha256"] = "0" * 64  # no ledger row has these bytes
    with pytest.raises(ModelError, match=r"no model bytes for key \(store=0.*10 key\(s\)"):
        register_meta(cfg, gone[gone["store"] == 0])


def test_metadata_without_a_store_says_what_to_pass(cfg):
    with registry.job_run(cfg, "train") as run, pytest.raises(ModelError, match="store="):
        registry.register_model_set(
            cfg, make_models(run_id="r1")[META], alias="challenger", run_id=run.run_id
        )


def test_a_set_of_format_1_still_loads(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """One models.arrow whose manifest row is the row in it, as sets were registered before."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(registry.store, "_load_forecaster", Loader())
    frame = files.prepare(make_models(n_stores=2, run_id="r1"), KEYS)
    meta = {b"manymodels.keys": json.dumps(KEYS).encode(), b"manymodels.format": b"1"}
    table = pa.Table.from_pandas(frame[KEYS], preserve_index=False)
    table = table.append_column("model", pa.array(frame["model"].tolist(), pa.large_binary()))
    with (
        pa.OSFile(str(tmp_path / files.MODELS_FILE), "wb") as sink,
        pa.ipc.new_file(sink, table.schema) as writer,
    ):
        for batch in table.to_batches(max_chunksize=6):
            writer.write_batch(batch)
    manifest = frame[META].assign(row=range(len(frame)))
    pq.write_table(
        pa.Table.from_pandas(manifest, preserve_index=False).replace_schema_metadata(meta),
        str(tmp_path / files.MANIFEST_FILE),
    )
    store = Store(tmp_path, "a format-1 set")
    assert len(store) == 20 and store.get((1, "i07")).level == level(1, "i07")
    out = store.predict(pd.DataFrame({"store": [0], "item": ["i02"], "horizon": [2]}))
    assert out["ds"].tolist() == [LAST_DS + pd.Timedelta(days=d) for d in (1, 2)]


class FakeGroup:
    """A group model: one level per series, served through ``for_series``."""

    def __init__(self, levels: dict[str, float]) -> None:
        self.levels = levels

    def for_series(self, key):  # type: ignore[no-untyped-def]
        from test_registry import FakeForecaster

        return FakeForecaster(self.levels[f"{key['store']}-{key['item']}"], "D")


def test_keys_sharing_one_group_model_store_and_load_it_once(cfg, monkeypatch):
    import hashlib

    loads: list[bytes] = []

    def load_group(blob: bytes, sha256: str | None) -> FakeGroup:
        loads.append(blob)
        return FakeGroup(json.loads(blob))

    monkeypatch.setattr(registry.store, "_load_forecaster", load_group)
    blob = json.dumps({"0-i00": 10.0, "0-i01": 11.0, "1-i00": 20.0}).encode()
    sha = hashlib.sha256(blob).hexdigest()
    group = pd.DataFrame(
        {"store": [0, 0, 1], "item": ["i00", "i01", "i00"], "run_id": "r1", "family": "pooled"}
    ).assign(model_sha256=sha, last_ds=LAST_DS, freq="D")
    # the group's bytes sit in one series' ledger row; the others reference them (no bytes)
    write_ledger(cfg, group.assign(model=[blob, None, None], extra=0), "r1")
    register_meta(cfg, group)
    ms = registry.load_model_set(cfg, "challenger")
    shards = list((ms.path / "artifacts" / files.MODELS_DIR).glob("part-*.arrow"))
    assert len(shards) == 1 and ms.manifest["row"].tolist() == [0, 0, 0]
    assert [ms.get(k).level for k in [(0, "i00"), (0, "i01"), (1, "i00")]] == [10.0, 11.0, 20.0]
    assert len(loads) == 1  # one deserialization serves the three series


def test_a_pooled_group_model_is_served_per_series_from_a_registered_set(tmp_path):
    """A real pooled model registered for its three series: one copy, one load, and each
    key's forecast is the group model's forecast of that series."""
    from manymodels.datasets import generate_demand
    from manymodels.models.pooled import PooledForecaster, dumps_pooled
    from manymodels.models.spec import ForecastSpec

    cfg = load_config(
        home=tmp_path / "home",
        overrides={"mlflow.experiment": "test", "mlflow.model_name": "mm_pooled"},
    )
    history = generate_demand(1, 3, 200, seed=4)[["store", "item", "ds", "y"]]
    spec = ForecastSpec(freq="D", season_length=7)
    fast = {"n_estimators": 30, "num_leaves": 7, "min_data_in_leaf": 10, "draws": 1}
    model = PooledForecaster(spec, KEYS, {**fast, "horizon": 7}).fit(history)
    blob = dumps_pooled(model)
    import hashlib

    group = model.series[KEYS].assign(
        run_id="r1",
        family="pooled",
        model=[blob] * 3,
        model_sha256=hashlib.sha256(blob).hexdigest(),
        last_ds=history["ds"].max(),
        freq="D",
    )
    with registry.job_run(cfg, "train") as run:
        registry.register_model_set(cfg, group, alias="champion", run_id=run.run_id)
    ms = registry.load_model_set(cfg, "champion")
    keys = group[KEYS].astype(object)
    ask = keys.assign(horizon=5)
    out = ms.predict(ask)
    want = model.forecast(5)
    merged = out.merge(want, on=[*KEYS, "ds"], suffixes=("", "_want"))
    assert len(out) == 15 == len(merged) and ms.loads == 1
    np.testing.assert_allclose(merged["yhat"], merged["yhat_want"], rtol=1e-9)
