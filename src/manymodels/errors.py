"""The one exception tree of manymodels: every message says what was wrong and what to do."""

from __future__ import annotations

__all__ = [
    "BusyError",
    "ConfigError",
    "DataError",
    "IntegrityError",
    "ManyModelsError",
    "ModelError",
    "SetupError",
    "TableError",
    "ThresholdError",
]


class ManyModelsError(Exception):
    """Base class of every error manymodels raises on purpose."""


class ConfigError(ManyModelsError):
    """The configuration is wrong: an unknown key, a wrong type, a bad value."""


class DataError(ManyModelsError):
    """Input data is unusable: a missing column, an empty table, a wrong frequency."""


class TableError(ManyModelsError):
    """A table could not be read or written, or its name is not a safe identifier."""


class ModelError(ManyModelsError):
    """A model could not be fitted, serialized, verified or loaded."""


class IntegrityError(ModelError):
    """Model bytes failed verification (sha256 mismatch, refused payload): a security event."""


class ThresholdError(ManyModelsError):
    """Too many partitions failed: the job's error threshold was passed."""


class SetupError(ManyModelsError):
    """The machine lacks something the step needs (Java, pyspark, deltalake, ...)."""


class BusyError(ManyModelsError):
    """Another manymodels step is writing to the same home: wait for it or run later."""
