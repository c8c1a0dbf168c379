"""Forecasting model families behind one interface, their registry and their bytes."""

from manymodels.models import (  # noqa: F401  (registers the families)
    baselines,
    ensemble,
    intermittent,
    prophet,
    regression,
    sklearn,
    stats,
)
from manymodels.models.base import FAMILIES, Forecaster, get_family
from manymodels.models.serialize import dumps, loads, loads_any, read_header, sha256_hex
from manymodels.models.spec import ForecastSpec, RegressorOption

__all__ = [
    "FAMILIES",
    "ForecastSpec",
    "Forecaster",
    "RegressorOption",
    "dumps",
    "get_family",
    "loads",
    "loads_any",
    "read_header",
    "sha256_hex",
]
