"""A model set's bytes as shards: ``artifacts/models/part-NNNNN.arrow``, written where they are.

A registered version holds its models' bytes (so it loads on its own, in a server or a
notebook), but the driver only ever handles their metadata. The bytes come from
gold.model_ledger, matched on (keys, origin run, ``model_sha256``) — a carried-over key's row
has no bytes of its own: its origin run's row has them — and go straight into shard files of at
most ``SHARD_ROWS`` models:

- ``stream_ledger_shards``: the local table store. The ledger's Parquet files are scanned in
  batches of ``_SCAN_ROWS`` rows, so memory holds one batch and one shard's writer, whatever
  the number of keys.
- ``spark_shards``: the Spark table store. Executors join the ledger to the manifest, each
  range of keys becomes one shard written by its task and uploaded to the version's artifact
  location by the task itself; only (keys, shard, row) come back to the driver.

Either way every model's bytes are checked against the sha256 the version registers before
they are written, and a key whose bytes are missing or altered stops the registration with
its name.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from manymodels.errors import ModelError
from manymodels.registry import files
from manymodels.registry.files import ShardWriter, key_text, sha256_hex, shard_name

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from manymodels.config import Config
    from manymodels.tables import TableStore

__all__ = ["spark_shards", "stream_ledger_shards"]

log = logging.getLogger(__name__)

_SCAN_ROWS = 512
LEDGER_TABLE = "model_ledger"
_BYTES = (("model_sha256", "model"), ("baseline_model_sha256", "baseline_model"))


def _missing_error(keys: list[str], wanted: pd.DataFrame) -> ModelError:
    first = wanted.iloc[0]
    key = key_text(keys, [first[k] for k in keys])
    return ModelError(
        f"gold.model_ledger holds no model bytes for key {key} of run {first['run_id']} with "
        f"model_sha256 {str(first['model_sha256'])[:12]}... ({len(wanted):,} key(s) in all): "
        "its ledger row was removed or altered; retrain those keys"
    )


def _altered_error(keys: list[str], values: list[Any]) -> ModelError:
    return ModelError(
        f"the model of key {key_text(keys, values)} in gold.model_ledger does not match its "
        "model_sha256; its bytes were altered: retrain that key"
    )


def _bytes_rows(models: pd.DataFrame) -> dict[str, Any]:
    """The ledger rows that may hold these models' bytes: their origin runs' own ok rows
    (``run_id`` too: run folders and statistics prune the other runs' files)."""
    runs = sorted(set(models["run_id"]))
    return {"run_id": runs, "origin_run_id": runs, "status": "ok"}


def _models_of(wanted: pd.DataFrame) -> pd.DataFrame:
    """The distinct models ``wanted`` needs: one row per (run_id, model_sha256), with the
    first key that uses it (a group model serves many keys: its bytes are copied once)."""
    models = wanted.drop_duplicates(["run_id", "model_sha256"]).reset_index(drop=True)
    return models.assign(_pos=range(len(models)))


def _placed(wanted: pd.DataFrame, models: pd.DataFrame, spots: pd.DataFrame) -> pd.DataFrame:
    """``wanted`` with the shard and row of its model (``spots``: _pos, shard, row)."""
    where = models[["run_id", "model_sha256", "_pos"]].merge(spots, on="_pos")
    out = wanted.merge(where.drop(columns="_pos"), on=["run_id", "model_sha256"], how="left")
    out.index = wanted.index
    out["row"] = out["row"].astype("int64")
    return out


def stream_ledger_shards(
    store: TableStore, cfg: Config, wanted: pd.DataFrame, folder: Path
) -> pd.DataFrame:
    """Write the bytes of ``wanted`` (keys, run_id, model_sha256) from the local ledger into
    shards under ``folder``; return ``wanted`` with ``shard`` and ``row``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    keys = list(cfg.data.keys)
    ref = store.ref("gold", LEDGER_TABLE)
    schema = store.schema(ref)
    pairs = [(s, b) for s, b in _BYTES if s in schema.names and b in schema.names]
    models = _models_of(wanted)
    columns = [*keys, "origin_run_id", *(c for p in pairs for c in p)]
    todo = models[["run_id", "model_sha256", "_pos"]]
    spots: dict[int, tuple[str, int]] = {}
    batches = store.read_batches(  # type: ignore[attr-defined]  # the local store's stream
        ref, columns, where=_bytes_rows(models), batch_size=_SCAN_ROWS
    )
    with ShardWriter(folder, pa.schema([schema.field(k) for k in keys]), keys) as out:
        for batch in batches:
            if batch.num_rows == 0 or len(spots) == len(todo):
                continue
            runs = batch.column("origin_run_id").to_pandas()
            for sha_col, bytes_col in pairs:
                blobs = batch.column(bytes_col)
                has = pc.is_valid(blobs).to_numpy(zero_copy_only=False)
                cand = pd.DataFrame(
                    {"run_id": runs, "model_sha256": batch.column(sha_col).to_pandas()}
                ).assign(_at=range(batch.num_rows))[has]
                hits = cand.merge(todo, on=["run_id", "model_sha256"])
                hits = hits[~hits["_pos"].isin(spots)].drop_duplicates("_pos")
                if hits.empty:
                    continue
                at = pa.array(hits["_at"].to_numpy())
                chosen = blobs.take(at)
                checks = zip(chosen.to_pylist(), hits["model_sha256"], hits["_at"], strict=True)
                for blob, sha, i in checks:
                    if sha256_hex(blob) != sha:
                        row = batch.slice(int(i), 1).to_pylist()[0]
                        raise _altered_error(keys, [row[k] for k in keys])
                rows = pa.Table.from_arrays(
                    [*(batch.column(k).take(at) for k in keys), chosen], names=[*keys, "model"]
                )
                for pos, spot in zip(hits["_pos"], out.write(rows), strict=True):
                    spots[int(pos)] = spot
    if len(spots) < len(todo):
        lost = todo[~todo["_pos"].isin(spots)]
        raise _missing_error(keys, wanted.merge(lost[["run_id", "model_sha256"]]))
    frame = pd.DataFrame(
        [(pos, shard, row) for pos, (shard, row) in spots.items()],
        columns=["_pos", "shard", "row"],
    )
    return _placed(wanted, models, frame)


def spark_shards(
    spark: SparkSession,
    store: TableStore,
    cfg: Config,
    wanted: pd.DataFrame,
    artifact_uri: str,
) -> pd.DataFrame:
    """Write the bytes of ``wanted`` (keys, run_id, model_sha256) into shards on the executors,
    each uploaded by its task to ``artifact_uri``; return ``wanted`` with ``shard`` and ``row``.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from manymodels.spark import to_pandas

    keys = list(cfg.data.keys)
    if wanted.empty:
        return wanted.assign(shard=pd.Series(dtype=object), row=pd.Series(dtype="int64"))
    models = _models_of(wanted)
    rows = store.read_spark(spark, store.ref("gold", LEDGER_TABLE), where=_bytes_rows(models))
    run = F.col("origin_run_id").alias("run_id")
    ledger = None
    for sha_col, bytes_col in _BYTES:
        if sha_col not in rows.columns or bytes_col not in rows.columns:
            continue
        part = rows.where(F.col(bytes_col).isNotNull()).select(
            *keys, run, F.col(sha_col).alias("model_sha256"), F.col(bytes_col).alias("model")
        )
        ledger = part if ledger is None else ledger.unionByName(part)
    assert ledger is not None  # the ledger always has model and model_sha256
    need = spark.createDataFrame(models[["run_id", "model_sha256", "_pos"]])
    found = ledger.join(need, ["run_id", "model_sha256"]).dropDuplicates(["_pos"])
    n_shards = max(1, math.ceil(len(models) / files.SHARD_ROWS))
    out_schema = T.StructType(
        [
            *[f for f in ledger.schema.fields if f.name in keys],
            T.StructField("_pos", T.LongType()),
            T.StructField("shard", T.StringType()),
            T.StructField("row", T.LongType()),
            T.StructField("problem", T.StringType()),
        ]
    )
    spots = to_pandas(
        found.select(*keys, "_pos", "model_sha256", "model")
        .repartitionByRange(n_shards, "_pos")
        .sortWithinPartitions("_pos")
        .mapInPandas(_task_writer(keys, artifact_uri), schema=out_schema)
    )
    bad = spots[spots["problem"].notna()]
    if len(bad):
        first = bad.iloc[0]
        raise _altered_error(keys, [first[k] for k in keys])
    lost = models[~models["_pos"].isin(spots["_pos"])]
    if len(lost):
        raise _missing_error(keys, wanted.merge(lost[["run_id", "model_sha256"]]))
    return _placed(wanted, models, spots[["_pos", "shard", "row"]])


def _task_writer(keys: list[str], artifact_uri: str) -> Any:
    """What each task runs: its rows -> one shard file, uploaded; (keys, shard, row) out."""

    def write(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pyarrow as pa
        from pyspark import TaskContext

        ctx = TaskContext.get()
        name = shard_name(ctx.partitionId() if ctx is not None else 0)
        placements: list[pd.DataFrame] = []
        rows = 0
        with tempfile.TemporaryDirectory(prefix="mm-shard-") as tmp:
            path = Path(tmp) / name
            writer: Any = None
            sink: Any = None
            try:
                for pdf in batches:
                    if pdf.empty:
                        continue
                    problem = pd.Series(None, index=pdf.index, dtype=object)
                    for i in pdf.index:
                        blob: Any = pdf.at[i, "model"]
                        if sha256_hex(bytes(blob)) != pdf.at[i, "model_sha256"]:
                            problem[i] = "altered"
                    good = pdf[problem.isna()]
                    if len(good):
                        table = pa.Table.from_pandas(good[keys], preserve_index=False)
                        table = table.append_column(
                            "model", pa.array(good["model"].map(bytes), type=pa.large_binary())
                        )
                        if writer is None:
                            sink = pa.OSFile(str(path), "wb")
                            writer = pa.ipc.new_file(sink, table.schema)
                        writer.write_table(table)
                    placed = pdf[[*keys, "_pos"]].copy()
                    placed["shard"] = name
                    placed["row"] = -1
                    placed.loc[good.index, "row"] = range(rows, rows + len(good))
                    placed["problem"] = problem
                    rows += len(good)
                    placements.append(placed)
            finally:
                if writer is not None:
                    writer.close()
                    sink.close()
            if rows:
                _upload(path, artifact_uri)
        yield from placements

    return write


def _upload(path: Path, artifact_uri: str) -> None:
    """Put one shard file into the version's artifact folder (any MLflow artifact store)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repo: Any = get_artifact_repository(artifact_uri)
    repo.log_artifact(str(path))
