"""Checks shared by the steps: required columns, named in one clear line."""

from __future__ import annotations

from collections.abc import Sequence

from manymodels.config import DataConfig
from manymodels.errors import DataError

__all__ = ["check_columns", "required_columns"]


def required_columns(data: DataConfig) -> dict[str, str]:
    """Source column → the config key that names it."""
    cols = {k: "data.keys" for k in data.keys}
    cols[data.time_col] = "data.time_col"
    cols[data.target_col] = "data.target_col"
    cols.update({r: "data.regressors" for r in data.regressors})
    return cols


def check_columns(found: Sequence[str], data: DataConfig, where: str = "the source") -> None:
    """Stop with one line naming the first missing column and the columns found."""
    for col, key in required_columns(data).items():
        if col not in found:
            spaced = any(c != c.strip() for c in found)
            shown = ", ".join(repr(c) if spaced else c for c in found if not c.startswith("_"))
            hint = ""
            if any(c != c.strip() and c.strip() == col for c in found):
                hint = (
                    " The header has spaces around its names (e.g. a space after each "
                    "comma): remove them from the header."
                )
            raise DataError(
                f"{where} has no column {col!r} (named by {key}); found columns: {shown}. "
                f"Fix the source or set {key} with --set.{hint}"
            )
