"""Table addresses and row predicates: validated identifiers, Arrow filters and safe SQL."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from manymodels.errors import TableError

__all__ = ["Predicate", "TableRef", "check_ident", "predicate_expression", "predicate_sql"]

Predicate = Mapping[str, Any]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def check_ident(part: str, what: str) -> str:
    """``part`` if it is a safe SQL identifier, else a :class:`TableError` naming ``what``."""
    if not isinstance(part, str) or not _IDENT.match(part):
        raise TableError(
            f"{what} {part!r} is not a safe identifier: use letters, digits and underscores, "
            "starting with a letter or underscore"
        )
    return part


@dataclass(frozen=True)
class TableRef:
    """A validated table address: optional catalog, schema (layer) and table name."""

    schema: str
    table: str
    catalog: str | None = None

    def __post_init__(self) -> None:
        check_ident(self.schema, "schema name")
        check_ident(self.table, "table name")
        if self.catalog is not None:
            check_ident(self.catalog, "catalog name")

    @property
    def name(self) -> str:
        parts = (
            [self.catalog, self.schema, self.table] if self.catalog else [self.schema, self.table]
        )
        return ".".join(parts)

    @property
    def quoted(self) -> str:
        return ".".join(f"`{p}`" for p in self.name.split("."))

    def __str__(self) -> str:
        return self.name


#: Characters that mean nothing special inside a Spark SQL string literal (no quote, no
#: backslash escape, no ``${...}`` variable substitution): such values are written as they are.
_SPARK_PLAIN = re.compile(r"^[A-Za-z0-9 _.,:+\-=@/#%]*$")
#: The identifier quote of each SQL dialect a predicate is written for.
_DIALECTS = {"`": "spark", '"': "ansi"}


def _sql_string(text: str, dialect: str) -> str:
    """A string literal that reads back as exactly ``text`` in ``dialect``.

    - ``ansi`` (delta-rs predicates, parsed by DataFusion): standard SQL, where a quote is
      doubled and a backslash is an ordinary character.
    - ``spark`` (Spark SQL: ``where``, Delta's ``replaceWhere``): a backslash starts an escape
      (unless ``spark.sql.parser.escapedStringLiterals`` is set), ``''`` is two adjacent
      literals, not a quote, and ``${...}`` may be substituted. A value with any character
      outside a plain set is therefore written as its UTF-8 bytes,
      ``CAST(X'<hex>' AS STRING)``, which reads the same under every parser setting.
    """
    if dialect == "ansi":
        return "'" + text.replace("'", "''") + "'"
    if _SPARK_PLAIN.match(text):
        return f"'{text}'"
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise TableError(f"predicate value {text!r} is not valid text") from None
    return f"CAST(X'{data.hex().upper()}' AS STRING)"


def _sql_literal(value: Any, dialect: str = "ansi") -> str:
    if value is None:
        raise TableError("a predicate value may not be null")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise TableError(f"a predicate value must be a finite number, not {value!r}")
        return repr(value)
    if isinstance(value, (dt.date, dt.datetime, pd.Timestamp)):
        value = str(value)
    return _sql_string(str(value), dialect)


def _predicate_terms(predicate: Predicate) -> list[tuple[str, list[Any] | None, Any]]:
    """Checked ``(column, values or None, value)`` terms of ``{column: value or values}``.

    ``values`` is the sorted list when the predicate gives a collection (``None`` otherwise);
    column names are validated and null values refused, for every way a predicate is used.
    """
    if not predicate:
        raise TableError("a predicate must name at least one column")
    terms: list[tuple[str, list[Any] | None, Any]] = []
    for col, value in predicate.items():
        ident = check_ident(col, "column name")
        many = isinstance(value, (list, tuple, set, frozenset))
        values = sorted(value, key=str) if many else None
        if any(v is None for v in (values if values is not None else [value])):
            raise TableError("a predicate value may not be null")
        terms.append((ident, values, value))
    return terms


def predicate_expression(predicate: Predicate) -> Any:
    """The Arrow dataset filter of ``{column: value or list of values}`` (all must hold)."""
    import pyarrow.compute as pc

    expr = None
    for col, values, value in _predicate_terms(predicate):
        field = pc.field(col)
        if values is None:
            clause = field == value
        else:
            clause = field.isin(values) if values else pc.scalar(False)
        expr = clause if expr is None else expr & clause
    return expr


def predicate_sql(predicate: Predicate, quote: str) -> str:
    """A safe SQL predicate from ``{column: value or list of values}``.

    ``quote`` names the dialect: a backtick for Spark SQL, a double quote for delta-rs
    (DataFusion, standard SQL); string values are escaped as that dialect reads them.
    """
    dialect = _DIALECTS.get(quote)
    if dialect is None:
        raise TableError(f'unknown identifier quote {quote!r}; use ` (Spark SQL) or " (delta-rs)')
    clauses = []
    for col, values, value in _predicate_terms(predicate):
        ident = f"{quote}{col}{quote}"
        if values is None:
            clauses.append(f"{ident} = {_sql_literal(value, dialect)}")
        elif values:
            literals = ", ".join(_sql_literal(v, dialect) for v in values)
            clauses.append(f"{ident} IN ({literals})")
        else:
            clauses.append("false")
    return " AND ".join(clauses)
