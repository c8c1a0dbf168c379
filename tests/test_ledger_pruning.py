"""Reads of one run's or one key's ledger rows open only the files and row groups holding them.

The assertions are on what a read selects (files, row groups, footers), never on time; the
figures at 10⁶ rows are in ``benchmarks/ledger_reads.py``.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pytest

from manymodels.tables import LocalDeltaStore

N_RUNS, N_KEYS, PARTS = 4, 1000, 4
META = ["store", "item", "run_id", "origin_run_id", "status", "model_sha256"]


def run_rows(run: int, n_keys: int = N_KEYS) -> pa.Table:
    """One run's ledger rows in no particular key order (as a fit stage writes them)."""
    order = [(i * 7919) % n_keys for i in range(n_keys)]
    models = [f"{run}:{i}".encode() * 20 for i in order]
    return pa.table(
        {
            "store": [f"s{i // 100}" for i in order],
            "item": [f"i{i % 100}" for i in order],
            "run_id": [f"run{run}"] * n_keys,
            "origin_run_id": [f"run{run}"] * n_keys,
            "status": ["ok"] * n_keys,
            "model": models,
            "model_sha256": [hashlib.sha256(m).hexdigest() for m in models],
        }
    )


def selected(store: LocalDeltaStore, columns: list[str], where: dict) -> tuple[set, int]:
    """The files and the number of row groups a read of ``columns`` and ``where`` opens."""
    return store.opens(store.ref("gold", "model_ledger"), columns=columns, where=where)


def run_files(store: LocalDeltaStore, *runs: int) -> set:
    """The data files holding rows of ``runs``, found by reading every file's run ids."""
    wanted = {f"run{r}" for r in runs}
    dataset = store._table(store.ref("gold", "model_ledger")).to_pyarrow_dataset()
    return {
        f.path
        for f in dataset.get_fragments()
        if wanted & set(f.to_table(columns=["run_id"])["run_id"].to_pylist())
    }


@pytest.fixture
def ledger(make_cfg) -> LocalDeltaStore:
    """A ledger of ``N_RUNS`` runs, each written as ``PARTS`` files (as a large run is)."""
    store = LocalDeltaStore(make_cfg())
    for run in range(N_RUNS):
        rows = run_rows(run)
        for part in range(PARTS):
            size = N_KEYS // PARTS
            store.append(store.ref("gold", "model_ledger"), rows.slice(part * size, size))
    return store


def test_one_runs_metadata_opens_that_runs_files_only(ledger):
    ref = ledger.ref("gold", "model_ledger")
    assert len(run_files(ledger, 2)) == PARTS
    # delta-rs drops the other runs' files before Arrow sees them
    dataset, _ = ledger._scan(ref, columns=META, where={"run_id": "run2"})
    assert {f.path for f in dataset.get_fragments()} == run_files(ledger, 2)
    assert selected(ledger, META, {"run_id": "run2"}) == (run_files(ledger, 2), PARTS)
    rows = ledger.read_arrow(ref, columns=META, where={"run_id": "run2"})
    assert rows.num_rows == N_KEYS and set(rows["run_id"].to_pylist()) == {"run2"}


def test_one_keys_model_reads_the_one_file_that_holds_it(ledger):
    ref = ledger.ref("gold", "model_ledger")
    where = {"run_id": "run1", "store": "s7", "item": "i42"}
    # keys are in no order: statistics alone keep every file of the run ...
    assert selected(ledger, ["model_sha256"], where)[0] == run_files(ledger, 1)
    # ... but with the bytes asked for, the key columns are scanned first
    files, groups = selected(ledger, ["model", "model_sha256"], where)
    assert groups == 1 and files <= run_files(ledger, 1)
    got = ledger.read_arrow(ref, columns=["model", "model_sha256"], where=where)
    assert got["model"].to_pylist() == [b"1:742" * 20]
    assert hashlib.sha256(got["model"][0].as_py()).hexdigest() == got["model_sha256"][0].as_py()


def test_a_sets_models_open_the_sets_runs_only(ledger):
    files, groups = selected(
        ledger, ["store", "item", "model"], {"origin_run_id": ["run0", "run3"]}
    )
    assert files == run_files(ledger, 0, 3) and groups == 2 * PARTS
    got = ledger.read_arrow(
        ledger.ref("gold", "model_ledger"),
        columns=["model"],
        where={"origin_run_id": ["run0", "run3"]},
    )
    assert got.num_rows == 2 * N_KEYS


def test_model_bytes_have_no_statistics_in_the_footer(ledger):
    dataset = ledger._table(ledger.ref("gold", "model_ledger")).to_pyarrow_dataset()
    for fragment in dataset.get_fragments():
        meta = fragment.metadata
        names = meta.schema.names
        for i in range(meta.num_row_groups):
            group = meta.row_group(i)
            stats = group.column(names.index("model")).statistics
            assert stats is None or not stats.has_min_max  # no copy of two models per file
            assert group.column(names.index("store")).statistics.has_min_max


def test_a_ledger_of_an_older_manymodels_reads_the_same_and_keeps_its_history(make_cfg):
    from deltalake import WriterProperties, write_deltalake

    store = LocalDeltaStore(make_cfg())
    ref = store.ref("gold", "model_ledger")
    small = WriterProperties(max_row_group_size=100)  # any layout: here 10 row groups a run
    for run in range(2):  # written as manymodels wrote it before
        write_deltalake(str(store.path(ref)), run_rows(run), mode="append", writer_properties=small)
    store.append(ref, run_rows(2))
    assert store.version(ref) == 2
    where = {"run_id": "run0", "store": "s3", "item": "i5"}
    assert selected(store, ["model"], where)[1] == 1  # the key's row group of ten
    assert store.read_arrow(ref, columns=["model"], where=where)["model"].to_pylist() == [
        b"0:305" * 20
    ]
    assert store.read_arrow(ref, columns=["model"], where={**where, "run_id": "run2"}).num_rows == 1
    assert store.read_arrow(ref, columns=["run_id"], version=1).num_rows == 2 * N_KEYS
    store.rollback(ref, 1)  # the step journal's rollback: time travel still works
    assert set(store.read_arrow(ref, columns=["run_id"])["run_id"].to_pylist()) == {"run0", "run1"}


def test_a_resumed_runs_merged_rows_stay_readable(ledger):
    # delta-rs's merge writes strings as string_view, which pyarrow cannot filter directly
    ref = ledger.ref("gold", "model_ledger")
    rows = run_rows(4)
    failed = pa.array(["failed"] + ["ok"] * (N_KEYS - 1))
    ledger.merge(ref, rows.set_column(4, "status", failed), on=["store", "item", "run_id"])
    where = {"run_id": "run4", "store": "s0", "item": "i1"}
    assert selected(ledger, ["model"], where)[0] == run_files(ledger, 4)
    got = ledger.read_arrow(ref, columns=["model", "run_id"], where=where)
    assert got["model"].to_pylist() == [b"4:1" * 20] and got.schema.field("run_id").type == "string"
    meta = ledger.read_arrow(ref, columns=["item"], where={"store": "s0", "item": ["i1", "i2"]})
    assert meta.num_rows == 2 * (N_RUNS + 1)
    # streamed as registration streams a set's bytes: the merged file is filtered too
    ok = {"origin_run_id": ["run0", "run4"], "status": "ok"}
    batches = list(ledger.read_batches(ref, columns=["model"], where=ok, batch_size=100))
    assert max(b.num_rows for b in batches) <= 100
    assert sum(b.num_rows for b in batches) == 2 * N_KEYS - 1
