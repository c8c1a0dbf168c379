"""Progress of the long Spark stages (fit, score): done, failed, rate and ETA.

Two sources, one report:

- **classic Spark**: two accumulators (keys done, keys failed) that the tasks add to, read by a
  driver thread every few seconds — exact counts while the stage runs;
- **Spark Connect** (Databricks serverless, standard-access clusters): accumulators do not
  exist there, so a progress handler (``SparkSession.registerProgressHandler``, Spark 4) receives
  the server's stage updates; keys done are estimated from the tasks completed of the stage
  that runs the fits (each task holds one bucket of keys) and failures are counted at the end.
  The handler is removed when the stage ends, so the caller's session is left as it was.

Reports go to a callback if one is given, else to the ``manymodels.progress`` logger. When
nothing in the process has configured logging (a fresh notebook or script), the lines go to
standard error anyway, so progress shows without set-up; once logging is configured it is
the caller's to route or silence.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from manymodels.spark import is_connect

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["Progress", "ProgressCallback", "StageProgress", "log_progress"]

log = logging.getLogger("manymodels.progress")

_FALLBACK = logging.StreamHandler(sys.stderr)
_FALLBACK.setFormatter(logging.Formatter("%(asctime)s manymodels: %(message)s", "%H:%M:%S"))


@dataclass(frozen=True)
class Progress:
    """Where a stage stands. ``failed`` is None while unknown (Spark Connect counts it at the
    end); ``estimated`` says ``done`` comes from completed tasks, not counted keys."""

    step: str
    done: int
    total: int
    failed: int | None
    seconds: float
    estimated: bool = False
    finished: bool = False

    @property
    def rate(self) -> float:
        """Keys per second so far."""
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the rate so far (None before the first key is done)."""
        if self.finished or self.done >= self.total:
            return 0.0
        return (self.total - self.done) / self.rate if self.rate > 0 else None

    def line(self) -> str:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        about = "~" if self.estimated and not self.finished else ""
        failed = "failures counted at the end" if self.failed is None else f"{self.failed:,} failed"
        eta = self.eta_seconds
        left = "" if self.finished or eta is None else f", ETA {_duration(eta)}"
        return (
            f"{self.step}: {about}{self.done:,}/{self.total:,} keys ({pct:.0f}%), {failed}, "
            f"{self.rate:.1f} keys/s{left}"
        )


ProgressCallback = Callable[[Progress], None]


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def log_progress(progress: Progress) -> None:
    """The default report: one line on ``manymodels.progress``, or on stderr when no logging
    is configured anywhere in the process."""
    if log.hasHandlers():
        log.info(progress.line())
        return
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, progress.line(), (), None)
    _FALLBACK.setStream(sys.stderr)  # the current stderr (a notebook swaps it per cell)
    _FALLBACK.handle(record)


class StageProgress:
    """Reports a stage's progress while it runs (``with StageProgress(...) as p: <action>``).

    ``counters`` is what the stage's tasks add to (pass it to the UDF): a pair of accumulators
    on classic Spark, None on Spark Connect. ``tasks`` is the number of tasks of the stage that
    runs the keys (one bucket each): Spark Connect's estimate follows that stage.
    """

    def __init__(
        self,
        spark: SparkSession,
        step: str,
        total: int,
        tasks: int,
        callback: ProgressCallback | None = None,
        every: float = 10.0,
    ) -> None:
        self.spark, self.step, self.total, self.tasks = spark, step, total, tasks
        self.callback = callback or log_progress
        self.every = every
        self.connect = is_connect(spark)
        self.counters: tuple[Any, Any] | None = None
        if not self.connect:
            sc = spark.sparkContext
            self.counters = (sc.accumulator(0), sc.accumulator(0))
        self.started = time.perf_counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_report = 0.0
        self._tasks_done = 0
        self._lock = threading.Lock()

    # -- the two sources

    def _counted(self) -> tuple[int, int | None, bool]:
        if self.counters is not None:
            return int(self.counters[0].value), int(self.counters[1].value), False
        with self._lock:
            share = self._tasks_done / self.tasks if self.tasks else 0.0
        return int(self.total * share), None, True

    def _on_connect_update(
        self,
        stages: Iterable[Any] | None,
        inflight_tasks: int = 0,
        operation_id: str | None = None,
        done: bool = False,
    ) -> None:
        """Spark Connect's progress handler: follow the last stage with one task per bucket."""
        ours = [s for s in (stages or []) if s.num_tasks == self.tasks]
        if ours:
            stage = max(ours, key=lambda s: s.stage_id)
            with self._lock:
                self._tasks_done = max(self._tasks_done, int(stage.num_completed_tasks))
        now = time.perf_counter()
        if now - self._last_report >= self.every:
            self._last_report = now
            self.report()

    def snapshot(self, finished: bool = False) -> Progress:
        done, failed, estimated = self._counted()
        return Progress(
            step=self.step,
            done=min(done, self.total),
            total=self.total,
            failed=failed,
            seconds=time.perf_counter() - self.started,
            estimated=estimated,
            finished=finished,
        )

    def report(self) -> None:
        try:
            self.callback(self.snapshot())
        except Exception:  # a broken callback never stops the job
            logging.getLogger(__name__).exception("the progress callback raised")

    def finish(self, done: int, failed: int) -> Progress:
        """The final report, with the counts read from the stage's output."""
        final = Progress(
            step=self.step,
            done=done,
            total=self.total,
            failed=failed,
            seconds=time.perf_counter() - self.started,
            finished=True,
        )
        self.callback(final)
        return final

    # -- context

    def __enter__(self) -> StageProgress:
        self.started = self._last_report = time.perf_counter()
        if self.connect:
            cast(Any, self.spark).registerProgressHandler(self._on_connect_update)
        else:
            self._thread = threading.Thread(
                target=self._poll, name="manymodels-progress", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.connect:
            cast(Any, self.spark).removeProgressHandler(self._on_connect_update)
        elif self._thread is not None:
            self._thread.join(timeout=2)

    def _poll(self) -> None:
        while not self._stop.wait(self.every):
            self.report()
