"""A linear model's recursion (``LinearPredictor``) forecasts what the generic step-by-step
recursion forecasts, for one series (plain floats) and many (stacked coefficients)."""

from __future__ import annotations

import numpy as np
import pytest

from manymodels.models.features import LinearPredictor, recursive_forecast


def _problem(
    seed: int, n: int, stacked: bool
) -> tuple[LinearPredictor, np.ndarray, np.ndarray, list[int], list[int]]:
    rng = np.random.default_rng(seed)
    lags = sorted({int(v) for v in rng.integers(1, 30, size=int(rng.integers(0, 8)))})
    windows = sorted({int(v) for v in rng.choice([7, 14, 28, 56], size=int(rng.integers(0, 3)))})
    n_exog, steps = int(rng.integers(0, 10)), int(rng.integers(1, 40))
    start = max([1, *lags, *windows])
    buffer = rng.normal(size=(n, start + steps))
    buffer[:, start:] = 0.0
    exog = rng.normal(size=(n, steps, n_exog))
    n_features = len(lags) + len(windows) + n_exog
    if stacked:
        model = LinearPredictor(rng.normal(size=(n, n_features)) * 0.1, rng.normal(size=n))
    else:
        model = LinearPredictor(rng.normal(size=n_features) * 0.1, float(rng.normal()))
    return model, buffer, exog, lags, windows


@pytest.mark.parametrize("n", [1, 3, 50])
@pytest.mark.parametrize("stacked", [False, True])
def test_a_linear_recursion_forecasts_what_the_generic_one_does(n: int, stacked: bool) -> None:
    for seed in range(40):
        model, buffer, exog, lags, windows = _problem(seed, n, stacked)
        fast, generic = buffer.copy(), buffer.copy()
        recursive_forecast(model, fast, exog, lags, windows)
        recursive_forecast(lambda x, m=model: m(x), generic, exog, lags, windows)
        assert not np.array_equal(fast, buffer)  # the steps were filled
        np.testing.assert_allclose(fast, generic, rtol=1e-12, atol=1e-12)


def test_one_series_alone_or_in_a_batch_gets_the_same_forecast() -> None:
    model, buffer, exog, lags, windows = _problem(7, 5, stacked=True)
    batch = buffer.copy()
    recursive_forecast(model, batch, exog, lags, windows)
    for i in range(5):
        alone = buffer[i : i + 1].copy()
        one = LinearPredictor(model.coef[i : i + 1], model.intercept[i : i + 1])
        recursive_forecast(one, alone, exog[i : i + 1], lags, windows)
        np.testing.assert_allclose(alone[0], batch[i], rtol=1e-12, atol=1e-12)
