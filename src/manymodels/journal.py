"""The step journal: every step that writes is wholly done or wholly undone.

A step (``ingest``, ``clean``, ``train``, ``promote``, ``score``) writes several tables and,
for some, MLflow aliases. Before its first write it records, under the home's lock, in
``<home>/_journal/step.json``: the version of each table it may write (or that the table did
not exist) and the versions the aliases ``challenger`` and ``champion`` point at. Removing that
file is the step's commit point, after its last write. If the process dies in between —
whatever kills it and wherever — the file stays, and the next step on the home (which holds the
lock, so the dead step cannot still be writing) rolls the interrupted one back first:

- each table is restored to its recorded version (a Delta ``RESTORE``, itself one commit), or
  dropped if the step created it;
- the aliases are pointed back at their recorded versions (a version the step registered is
  left, immutable and unaliased);
- MLflow runs the step left ``RUNNING`` are ended as ``FAILED``.

The result is the state before the interrupted step; re-running it then does the step whole.
Spark Parquet tables (``tables.format=parquet``) have no versions and are not rolled back: use
Delta wherever a half-written step matters.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from manymodels.config import Config
from manymodels.errors import IntegrityError, ThresholdError

__all__ = ["STEP_TABLES", "journaled", "recover"]

log = logging.getLogger(__name__)

#: The tables each step may write, as (layer, table).
STEP_TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "ingest": (("bronze", "sales_raw"),),
    "clean": (
        ("silver", "sales"),
        ("silver", "sales_quarantine"),
        ("silver", "sales_future"),
        ("silver", "sales__clean_stage"),  # the Spark clean's staging table (clean_spark.py)
    ),
    "train": (("gold", "model_ledger"),),
    "promote": (("gold", "promotions"), ("gold", "model_quality")),
    "score": (
        ("gold", "score_output"),
        ("gold", "score_failures"),
        ("gold", "predictions"),
        ("gold", "forecast_summary"),
    ),
}
#: Errors a step raises after recording its outcome on purpose (the failures it counted, the
#: keys whose bytes failed verification): what it wrote stands, e.g. the ledger rows
#: ``train --resume`` continues from, or gold.score_failures naming tampered keys.
DECIDED: tuple[type[BaseException], ...] = (ThresholdError, IntegrityError)
#: The steps that move aliases.
_ALIAS_STEPS = {"train": ("challenger",), "promote": ("champion", "challenger")}


@dataclass
class Entry:
    """What an unfinished step had touched, and the state to return to."""

    step: str
    pid: int
    started: float
    tables: dict[str, int | None] = field(default_factory=dict)  # "layer.table" -> version
    aliases: dict[str, int | None] = field(default_factory=dict)


def _path(cfg: Config) -> Path:
    return cfg.home_path / "_journal" / "step.json"


def _write(path: Path, entry: Entry) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(entry)))
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)  # atomic: the journal is whole or absent


def _read(path: Path) -> Entry | None:
    try:
        return Entry(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:  # a torn write cannot happen (os.replace); be loud
        log.warning("ignoring an unreadable step journal %s: %s", path, exc)
        return None


def _store(cfg: Config) -> Any:
    from manymodels.tables import open_store

    return open_store(cfg)


def _aliases(cfg: Config, names: Sequence[str]) -> dict[str, int | None]:
    from manymodels.registry import get_alias_version

    return {a: get_alias_version(cfg, a) for a in names}


def recover(cfg: Config, store: Any = None) -> Entry | None:
    """Roll back the step a dead process left unfinished on this home (call under the lock)."""
    path = _path(cfg)
    entry = _read(path)
    if entry is None:
        return None
    log.warning(
        "the `%s` step of process %s (started %s) did not finish: rolling it back",
        entry.step,
        entry.pid,
        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry.started)),
    )
    _undo(cfg, entry, store or _store(cfg))
    path.unlink(missing_ok=True)
    return entry


def _undo(cfg: Config, entry: Entry, store: Any) -> list[str]:
    """Return every table and alias to its recorded state; the names of those that moved."""
    moved = []
    for name, version in entry.tables.items():
        layer, table = name.split(".", 1)
        ref = store.ref(layer, table)
        now = store.version(ref) if store.exists(ref) else None
        if now != version:
            store.rollback(ref, version)
            moved.append(name)
    if entry.aliases and _aliases(cfg, list(entry.aliases)) != entry.aliases:
        _restore_aliases(cfg, entry.aliases)
        moved.append("aliases")
    _fail_open_runs(cfg, entry)
    return moved


def _restore_aliases(cfg: Config, aliases: dict[str, int | None]) -> None:
    from manymodels.registry.client import client_for

    client = client_for(cfg)
    name = cfg.mlflow.model_name
    for alias, version in aliases.items():
        try:
            if version is None:
                client.delete_registered_model_alias(name, alias)
            else:
                client.set_registered_model_alias(name, alias, str(version))
        except Exception as exc:  # a registry that never had the model: nothing to undo
            log.debug("alias %s of %s not restored: %s", alias, name, exc)


def _fail_open_runs(cfg: Config, entry: Entry) -> None:
    """End as FAILED the runs of this home's experiment left RUNNING since the step began."""
    from manymodels.registry.client import client_for, experiment_id

    client = client_for(cfg)
    since = int(entry.started * 1000) - 1000
    runs = client.search_runs(
        [experiment_id(cfg)],
        filter_string=f"attributes.status = 'RUNNING' AND attributes.start_time >= {since}",
    )
    for run in runs:
        client.set_terminated(run.info.run_id, status="FAILED")
        client.set_tag(run.info.run_id, "manymodels.ended_by", "rollback of an interrupted step")


@contextmanager
def journaled(cfg: Config, step: str) -> Iterator[None]:
    """Run ``step`` wholly or not at all (call under the home's lock); see the module doc."""
    recover(cfg)
    tables = STEP_TABLES.get(step)
    if not tables:
        yield
        return
    store = _store(cfg)
    entry = Entry(step=step, pid=os.getpid(), started=time.time())
    for layer, table in tables:
        ref = store.ref(layer, table)
        entry.tables[f"{layer}.{table}"] = store.version(ref) if store.exists(ref) else None
    if step in _ALIAS_STEPS:
        entry.aliases = _aliases(cfg, _ALIAS_STEPS[step])
    path = _path(cfg)
    _write(path, entry)
    try:
        yield
    except DECIDED:
        raise  # the step stopped on purpose and recorded why: its writes stand
    except BaseException as exc:
        # a step that breaks undoes its partial writes now, not at the next run
        moved = _undo(cfg, entry, store)
        if moved:
            log.warning("`%s` stopped (%s): rolled back %s", step, exc, ", ".join(moved))
        raise
    finally:
        path.unlink(missing_ok=True)  # the commit point
