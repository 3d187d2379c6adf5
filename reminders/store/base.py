"""The declarative base every table builds on: instants kept in UTC on both databases, named
constraints, and defaults visible before a row is flushed."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any, ClassVar

from sqlalchemy import DateTime, MetaData, inspect
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Deterministic constraint names, so that a later migration can drop a constraint by name on
# PostgreSQL and SQLite alike instead of guessing what each database called it.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """An instant, always aware and in UTC on both sides of the database.

    A naive datetime is refused rather than assumed to be UTC: a local wall-clock time slipping
    in unnoticed would send a reminder an hour early or late for half the year. SQLite keeps no
    offset, so what comes back is naive and is given its UTC zone here.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetimes are not allowed; give {value!r} a time zone")
        value = value.astimezone(UTC)
        # SQLite stores the text of the datetime; without an offset every stored value has the
        # same shape, so comparisons between them stay correct.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {value!r}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # Any `Mapped[datetime]` column is an instant in UTC unless it says otherwise.
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}

    def __init__(self, **kwargs: Any) -> None:
        """Fill in constant column defaults at construction, not only at flush.

        The state machine and the services read `state`, `status` and `schedule_version` on rows
        that have not been flushed yet; they must see the value the database will get.
        """
        cls = type(self)
        for key, value in (_constant_defaults(cls) | kwargs).items():
            if not hasattr(cls, key):
                raise TypeError(f"{key!r} is an invalid keyword argument for {cls.__name__}")
            setattr(self, key, value)


@cache
def _constant_defaults(cls: type[Base]) -> dict[str, Any]:
    # Cached: a bulk import builds a million of these, and the mapper never changes.
    defaults = {}
    for attribute in inspect(cls).column_attrs:
        default = attribute.columns[0].default
        if default is not None and default.is_scalar:
            defaults[attribute.key] = getattr(default, "arg", None)
    return defaults


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
