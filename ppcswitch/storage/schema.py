"""What every table shares: the declarative base, aware-UTC datetimes, 64-bit ids.

The bottom of the storage layer: the table modules (models.py, models_*.py) import it, it imports
none of them.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import BigInteger, DateTime, Integer
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Stores UTC; always returns aware UTC datetimes (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            # A naive time is ambiguous; refusing it keeps every stored time honest.
            raise ValueError(f"naive datetime {value!r}: use timezone-aware UTC datetimes")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


# SQLite only auto-increments an INTEGER PRIMARY KEY, not a BIGINT one.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


def by_shape(changes, columns) -> dict[tuple[str, ...], list[tuple[tuple, dict[str, int]]]]:
    """Changes to rows of totals, given as (row key, {column: delta}), added up per row and grouped by
    the columns that changed: one multi-row upsert per group (a row appears once per statement, which
    PostgreSQL's ON CONFLICT requires). Rows whose deltas are all 0 are left out."""
    rows: dict[tuple, dict[str, int]] = {}
    changed: dict[tuple, set[str]] = {}
    for key, deltas in changes:
        into = rows.setdefault(key, dict.fromkeys(columns, 0))
        for column, delta in deltas.items():
            if delta:
                into[column] += delta
                changed.setdefault(key, set()).add(column)
    shapes: dict[tuple[str, ...], list[tuple[tuple, dict[str, int]]]] = {}
    for key, names in changed.items():
        shapes.setdefault(tuple(sorted(names)), []).append((key, rows[key]))
    return shapes
