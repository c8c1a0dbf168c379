"""Inside MLflow's scoring server the model set answers with the JSON records the server would
make of its frame (``registry.wire``): the very response body, built column by column. The
records of a real set are compared with its frame in ``test_registry.py``."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from mlflow.pyfunc.scoring_server import predictions_to_json

from manymodels.registry import pyfunc, wire


def body(predictions: object) -> str:
    out = io.StringIO()
    predictions_to_json(predictions, out)
    return out.getvalue()


@pytest.mark.parametrize(
    "stamps",
    [
        ["2018-01-01", "2018-01-02 13:00", None],
        ["2018-01-01 13:00:00.250", "2019-06-30 23:59:59.000001", None],
        [],
    ],
)
def test_dates_are_written_as_the_server_writes_timestamps(stamps: list[str | None]) -> None:
    values = pd.Series([pd.Timestamp(s) if s else pd.NaT for s in stamps], dtype="datetime64[ns]")
    frame = pd.DataFrame({"ds": values})
    records = [{"ds": d} for d in wire.iso_dates(values.to_numpy())]
    assert body(records) == body(frame)


def test_cells_are_written_as_the_server_writes_them() -> None:
    cells = [np.int64(3), np.float32(0.5), np.bool_(True), pd.Timestamp("2020-02-29"), "a", None]
    frame = pd.DataFrame({"v": pd.Series(cells, dtype=object)})
    assert body([{"v": wire.json_value(c)} for c in cells]) == body(frame)


@pytest.fixture
def server_flag(monkeypatch):
    """Sets MLflow's server flag; the cached reading is forgotten before and after."""

    def set_flag(flag: str) -> None:
        monkeypatch.setenv("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", flag)
        wire.in_scoring_server.cache_clear()

    yield set_flag
    wire.in_scoring_server.cache_clear()


def test_the_pyfunc_answers_records_only_inside_a_scoring_server(server_flag) -> None:
    asked = []

    class Store:
        def predict(self, frame: pd.DataFrame, errors: str) -> object:
            asked.append(("frame", errors))
            return frame

        def predict_records(self, frame: pd.DataFrame, errors: str) -> object:
            asked.append(("records", errors))
            return []

    model = pyfunc.pyfunc_class()()
    model._store = Store()
    request = pd.DataFrame({"store": [1], "item": ["a"], "horizon": [2.0]})
    for flag in ("", "true"):
        server_flag(flag)
        model.predict(None, request)
    assert asked == [("frame", "coerce"), ("records", "coerce")]


def test_future_grids_are_cached_read_only_and_equal_future_dates() -> None:
    from manymodels.periods import future_dates, future_grid

    for last, freq in ((pd.Timestamp("2024-01-31"), "M"), (np.datetime64("2024-03-03"), "W-SUN")):
        grid = future_grid(last, freq, 5)
        assert grid.dtype == "datetime64[ns]" and not grid.flags.writeable
        assert list(grid) == list(future_dates(pd.Timestamp(last), freq, 5).to_numpy())
        assert future_grid(pd.Timestamp(last), freq, 5) is grid  # one entry per grid
        with pytest.raises(ValueError):
            grid[0] = np.datetime64("2000-01-01")
