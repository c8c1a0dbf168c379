"""Checks of a family's parameters: each names the family, the parameter and what it takes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from manymodels.errors import ConfigError

__all__ = ["check_choice", "check_float", "check_int"]


def check_int(family: str, name: str, value: Any, minimum: int) -> int:
    """``value`` as an int >= minimum (integral floats from hyperopt accepted)."""
    try:
        ok = not isinstance(value, bool) and float(value) == int(value) and int(value) >= minimum
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"{family}: {name} must be an integer >= {minimum}, not {value!r}")
    return int(value)


def check_float(family: str, name: str, value: Any, low: float, high: float = math.inf) -> float:
    """``value`` as a float in [low, high]."""
    try:
        ok = not isinstance(value, bool) and low <= float(value) <= high
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"{family}: {name} must be a number in [{low}, {high}], not {value!r}")
    return float(value)


def check_choice(family: str, name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``."""
    if not any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in choices):
        raise ConfigError(f"{family}: {name} must be one of {list(choices)}, not {value!r}")
    return value
