"""Progress reports: the line, the default that shows without set-up, Spark Connect's estimate."""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

from manymodels.progress import Progress, StageProgress, log_progress


def test_the_line_has_done_failed_rate_and_eta():
    p = Progress("train", done=25, total=100, failed=2, seconds=10.0)
    assert p.rate == 2.5 and p.eta_seconds == 30.0
    assert p.line() == "train: 25/100 keys (25%), 2 failed, 2.5 keys/s, ETA 30 s"
    guess = Progress("train", 50, 100, None, 10.0, estimated=True)
    assert guess.line().startswith("train: ~50/100 keys (50%), failures counted at the end")
    done = Progress("score", 100, 100, 0, 4.0, finished=True)
    assert done.line() == "score: 100/100 keys (100%), 0 failed, 25.0 keys/s"


def test_progress_shows_on_stderr_when_nothing_configured_logging(monkeypatch, capsys):
    monkeypatch.setattr(logging.root, "handlers", [])
    log_progress(Progress("fit", 1, 4, 0, 1.0))
    assert "manymodels: fit: 1/4 keys (25%)" in capsys.readouterr().err


def test_configured_logging_gets_the_lines_instead(caplog, capsys):
    with caplog.at_level(logging.INFO, logger="manymodels.progress"):
        log_progress(Progress("fit", 1, 4, 0, 1.0))
    assert "fit: 1/4 keys" in caplog.text
    assert "manymodels: fit" not in capsys.readouterr().err


def test_spark_connect_progress_follows_the_stage_with_one_task_per_bucket():
    seen: list[Progress] = []
    tracker = StageProgress.__new__(StageProgress)  # no session: feed the handler directly
    tracker.__dict__.update(
        step="train", total=200, tasks=16, callback=seen.append, every=0.0, connect=True,
        counters=None, started=0.0, _last_report=0.0, _tasks_done=0,
        _lock=threading.Lock(),
    )  # fmt: skip
    scan = SimpleNamespace(stage_id=0, num_tasks=2, num_completed_tasks=2)
    fits = SimpleNamespace(stage_id=3, num_tasks=16, num_completed_tasks=4)
    tracker._on_connect_update(stages=[scan, fits], inflight_tasks=2, operation_id="x", done=False)
    assert seen[-1].done == 50 and seen[-1].estimated and seen[-1].failed is None
    final = tracker.finish(200, 3)
    assert final.finished and final.failed == 3 and seen[-1] is final
