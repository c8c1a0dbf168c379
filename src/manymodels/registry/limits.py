"""How much one prediction request may ask for: a bound on its rows and on its forecast rows.

A server reads the whole request before the model sees it, so the bound that protects memory
at the door belongs to the server in front (Databricks Model Serving refuses bodies over
16 MB; put a proxy with a body limit in front of a self-hosted ``mlflow models serve``). What
the model set bounds is the work a readable request asks for: more than
``$MANYMODELS_SERVE_MAX_ROWS`` input rows (default 10,000), or more than
``$MANYMODELS_SERVE_MAX_OUTPUT`` forecast rows (default 1,000,000: keys × horizon) is refused
before any model is loaded, with a message saying which bound and how to split the request.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from manymodels.errors import ModelError
from manymodels.registry.predict import as_numbers
from manymodels.registry.store import Store, positive_setting

__all__ = ["MAX_OUTPUT_ENV", "MAX_ROWS_ENV", "check_request_size"]

MAX_ROWS_ENV = "MANYMODELS_SERVE_MAX_ROWS"
MAX_OUTPUT_ENV = "MANYMODELS_SERVE_MAX_OUTPUT"
_DEFAULTS = {MAX_ROWS_ENV: 10_000, MAX_OUTPUT_ENV: 1_000_000}


def _limit(env: str) -> int:
    return positive_setting(None, env, _DEFAULTS[env], f"${env}")


def check_request_size(store: Store, frame: pd.DataFrame) -> None:
    """ModelError when ``frame`` asks for more rows or forecast rows than the bounds allow."""
    max_rows = _limit(MAX_ROWS_ENV)
    if len(frame) > max_rows:
        raise ModelError(
            f"the request holds {len(frame):,} rows; at most {max_rows:,} are served per request "
            f"(${MAX_ROWS_ENV}): split it"
        )
    if "horizon" not in frame.columns or not len(frame):
        return
    horizon = as_numbers(frame["horizon"])
    asked = float(np.nansum(np.clip(horizon, 0, None)))
    max_output = _limit(MAX_OUTPUT_ENV)
    if asked > max_output:
        biggest = float(np.nanmax(horizon))
        raise ModelError(
            f"the request asks for {asked:,.0f} forecast rows (horizons up to {biggest:,.0f}); "
            f"at most {max_output:,} are served per request (${MAX_OUTPUT_ENV}): ask for fewer "
            "keys or a shorter horizon per request"
        )
