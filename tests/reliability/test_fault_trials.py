"""Fault trials: a step killed anywhere, then re-run, ends exactly as an untouched run does.

10 seeded trials run by default: clean and promote 4 each, train and score 1 each. Those two
start a JVM per run, so CI kills each once, at the half-state that matters most (train between
its ledger commit and the challenger alias, score after gold.predictions commits, before the
summary); ``MANYMODELS_TRIALS=<n per step>`` runs that many more per step (seeds 0..n-1).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fault_harness import STEPS, Saved, prepare, trial

#: step -> seeds. Seed 5 arms train's before-alias:challenger and score's
#: after-commit:gold.predictions fault points (see ``fault_harness.trial``). Seeds 0, 3, 7, 8
#: kill clean at a random moment, before silver.sales commits and after quarantine and future
#: rows commit; promote at a random moment, before the champion alias moves and after
#: gold.promotions and gold.model_quality commit: the half-states between its writes.
DEFAULT: dict[str, list[int]] = {
    "clean": [0, 3, 7, 8],
    "train": [5],
    "promote": [0, 3, 7, 8],
    "score": [5],
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Saved:
    return prepare(tmp_path_factory.mktemp("trials"))


@pytest.fixture(scope="module")
def references(saved: Saved) -> dict[str, dict]:
    for step in STEPS:
        ref = saved.after[step]
        assert ref["running_runs"] == 0 and ref["duplicates"] == 0, (step, ref)
    return saved.after


def _trials(seeds: dict[str, list[int]], saved: Saved, references: dict[str, dict]) -> None:
    results = [
        trial(saved, step, seed, references[step])
        for step, chosen in seeds.items()
        for seed in chosen
    ]
    bad = [r for r in results if not r.same]
    summary = (
        f"{len(results)} trials, {sum(r.killed for r in results)} killed, {len(bad)} mismatches"
    )
    print(summary)
    Path(os.environ.get("MANYMODELS_TRIALS_LOG", os.devnull)).write_text(
        summary + "\n" + "\n".join(f"{r.step} seed={r.seed} {r.how}: {r.diff}" for r in results)
    )
    assert not bad, "\n".join(f"{r.step} seed={r.seed} {r.how}: {r.diff}" for r in bad)


def test_seeded_fault_trials(saved, references):
    _trials(DEFAULT, saved, references)


@pytest.mark.slow
@pytest.mark.skipif(
    "MANYMODELS_TRIALS" not in os.environ,
    reason="the long trial set: MANYMODELS_TRIALS=<n per step> pytest tests/reliability -m slow",
)
def test_many_fault_trials(saved, references):
    n = int(os.environ["MANYMODELS_TRIALS"])
    _trials({step: list(range(n)) for step in STEPS}, saved, references)
