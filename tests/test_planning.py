"""Task planning: balancing keys over tasks, call groups, bucket shares (pure, no Spark)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from manymodels.planning import BUCKET, CALL, balance, bucket_shares, call_groups, plan_tasks


def test_balance_spreads_a_giant_key_and_many_tiny_ones():
    weights = [1000.0] + [1.0] * 999
    buckets = balance(weights, 4)
    loads_ = np.bincount(buckets, weights=weights, minlength=4)
    assert buckets[0] not in buckets[1:]  # the giant key has a bucket to itself
    assert sorted(loads_)[:3] == [333.0, 333.0, 333.0]


def test_bucket_shares_start_small_peak_then_taper_to_the_last_task():
    shares = bucket_shares(16, cores=2, taper=0.125)
    assert shares.sum() == pytest.approx(1.0)
    assert shares[0] == shares[1] == pytest.approx(0.125 * shares.max())  # early progress
    assert shares[2] == shares.max() and (np.diff(shares[2:]) < 0).all()
    assert shares[-1] == pytest.approx(0.125 * shares.max())
    assert bucket_shares(4, cores=2).tolist() == [0.25] * 4  # too few tasks to shape
    weights = np.ones(10_000)
    loads_ = np.bincount(balance(weights, 16, shares), weights=weights, minlength=16)
    assert np.allclose(loads_ / weights.sum(), shares, atol=1e-3)


def test_call_groups_pack_whole_keys_up_to_the_row_limit():
    buckets = np.array([0, 1, 0, 0, 1, 0, 1])
    weights = np.array([40, 500, 40, 40, 10, 40, 10])
    calls = call_groups(buckets, weights, rows_per_call=100)
    # bucket 0: keys starting before row 100 share call 0, the fourth opens call 1;
    # bucket 1: the 500-row key has call 0 to itself, the two small ones share call 5
    assert calls.tolist() == [0, 0, 0, 0, 5, 1, 5]
    assert call_groups(buckets, weights, rows_per_call=0).tolist() == list(range(7))
    many = call_groups(np.zeros(1000, dtype=int), np.full(1000, 1095), rows_per_call=50_000)
    assert np.bincount(many).max() == 46 and np.bincount(many).min() > 0


def test_plan_tasks_labels_every_key_with_one_of_n_buckets_and_a_call():
    counts = pd.DataFrame({"store": [1, 1, 2, 2, 3], "item": [1, 2, 1, 2, 1]})
    counts["count"] = [500, 10, 10, 10, 10]
    plan = plan_tasks(counts, ["store", "item"], n_tasks=3, cores=2, rows_per_call=0)
    assert list(plan.columns) == ["store", "item", BUCKET, CALL]
    assert plan[BUCKET].nunique() == 3
    # the giant key has a bucket of its own
    giant = plan.loc[plan["item"].eq(1) & plan["store"].eq(1), BUCKET].iloc[0]
    assert (plan[BUCKET] == giant).sum() == 1
