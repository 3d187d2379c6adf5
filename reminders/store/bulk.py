"""Brand-new enrolments written in bulk, for the CSV import: a few multi-row statements (COPY
on PostgreSQL) for a whole batch instead of a dozen statements a row, which is what makes
100,000 rows take minutes rather than hours. tests/test_import.py checks that the rows are
exactly those `services.enrol` writes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, ColumnDefault, Connection, Table, func, insert, select, text
from sqlalchemy.orm import Session

from reminders.core.enrolment import Enrolment
from reminders.store import models


@dataclass(frozen=True)
class Planned:
    """What a new enrolment will be stored as: worked out away from the database (and, with
    workers, in another process), so it holds only values that pickle."""

    enrolment: Enrolment
    starts_at: datetime
    reminders: list[dict[str, object]]  # the columns of each reminder's row
    warnings: list[str]  # for the call list, each once


def insert_new(session: Session, plans: list[Planned], *, now: datetime, actor: str) -> None:
    """Store brand-new enrolments (their booking references are not stored yet) with a few
    bulk statements for them all: exactly what `services.enrol` writes for each (patient,
    enrolment, reminders, late-enrolment warnings on the call list, the audit entry), in a
    fraction of the statements. Raises IntegrityError when another writer has stored one of
    the booking references meanwhile."""
    # Core inserts on the tables, not the ORM's bulk insert: that one leaves out a row's None
    # values so that server defaults apply, which splits a batch into a statement for every
    # run of rows with the same empty columns (an SMS has no subject, an email has one).
    connection = session.connection()
    patient_ids = _insert_rows(
        connection,
        _table(models.Patient),
        [plan.enrolment.columns("patient") for plan in plans],
        ids=True,
    )
    enrolment_ids = _insert_rows(
        connection,
        _table(models.Enrolment),
        [
            _enrolment_values(plan.enrolment, plan.starts_at, patient_id, now)
            for plan, patient_id in zip(plans, patient_ids, strict=True)
        ],
        ids=True,
    )
    reminders = [
        {**values, "enrolment_id": enrolment_id}
        for plan, enrolment_id in zip(plans, enrolment_ids, strict=True)
        for values in plan.reminders
    ]
    if reminders:
        _insert_rows(connection, _table(models.Reminder), reminders)
    # As services.enrol files them: late-enrolment warnings on the call list, and who enrolled.
    attention = [
        {"enrolment_id": enrolment_id, "kind": "late-enrolment", "message": message,
         "needs_call": True, "created_at": now}
        for plan, enrolment_id in zip(plans, enrolment_ids, strict=True)
        for message in plan.warnings
    ]  # fmt: skip
    if attention:
        connection.execute(insert(_table(models.AttentionItem)), attention)
    _insert_rows(
        connection,
        _table(models.AuditEntry),
        [
            {"at": now, "actor": actor, "action": "enrol", "enrolment_id": enrolment_id,
             "detail": json.dumps({"booking_ref": plan.enrolment.booking_ref,
                                   "procedure": plan.enrolment.procedure}, sort_keys=True)}
            for plan, enrolment_id in zip(plans, enrolment_ids, strict=True)
        ],
    )  # fmt: skip


def _insert_rows(
    connection: Connection, table: Table, rows: list[dict[str, Any]], *, ids: bool = False
) -> list[int]:
    """INSERT the rows, and return their ids in order when asked.

    Straight through the driver, not SQLAlchemy's executemany, whose handling of each
    parameter cost more than the database's work: on PostgreSQL by COPY in binary, on SQLite by
    the driver's executemany with each column's own conversion. The ids are taken first, as an
    INSERT would take them, so they are known in order."""
    new_ids = _take_ids(connection, table, len(rows)) if ids else []
    if new_ids:
        rows = [{"id": new_id, **row} for new_id, row in zip(new_ids, rows, strict=True)]
    names = list(rows[0])
    # The driver skips SQLAlchemy, so the defaults it would fill in (created_at, updated_at)
    # are filled in here; a column with neither a value nor a default gets its server default.
    defaults: dict[str, object] = {}
    for column in table.columns:
        default = column.default
        if column.key in rows[0] or not isinstance(default, ColumnDefault):
            continue
        defaults[column.key] = default.arg if default.is_scalar else default.arg(None)
    columns = [table.columns[name] for name in [*names, *defaults]]
    quote = connection.dialect.identifier_preparer.quote
    listed = ", ".join(quote(column.name) for column in columns)
    dbapi: Any = connection.connection.dbapi_connection
    if connection.dialect.name == "postgresql":
        with (
            dbapi.cursor() as cursor,
            cursor.copy(f"COPY {quote(table.name)} ({listed}) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            # Binary: formatting a million rows' timestamps as text took most of this
            # process's time (15 times what the binary form takes). It needs the types.
            copy.set_types([_pg_type(connection, column) for column in columns])
            for row in rows:
                copy.write_row([*(row[name] for name in names), *defaults.values()])
        return new_ids
    dialect = connection.dialect
    # The dialect's own form of each type: SQLite keeps dates and times as text.
    convert = [column.type.dialect_impl(dialect).bind_processor(dialect) for column in columns]
    own = list(zip(names, convert[: len(names)], strict=True))
    extra = zip(convert[len(names) :], defaults.values(), strict=True)
    fixed = [f(value) if f else value for f, value in extra]
    values = [[*(f(row[n]) if f else row[n] for n, f in own), *fixed] for row in rows]
    cursor = dbapi.cursor()
    try:
        cursor.executemany(
            f"INSERT INTO {quote(table.name)} ({listed}) VALUES ({', '.join('?' * len(columns))})",
            values,
        )
    finally:
        cursor.close()
    return new_ids


def _take_ids(connection: Connection, table: Table, count: int) -> list[int]:
    if connection.dialect.name == "postgresql":
        return list(
            connection.scalars(
                text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) "
                     "FROM generate_series(1, :count)"),
                {"table": table.name, "count": count},
            )
        )  # fmt: skip
    # SQLite: what it would give them (the largest rowid plus one: no table here has
    # AUTOINCREMENT), in the transaction that inserts them; should another writer get in
    # between, the primary key refuses the batch rather than an id being given twice.
    first = (connection.scalar(select(func.max(table.c.id))) or 0) + 1
    return list(range(first, first + count))


def _pg_type(connection: Connection, column: Column[Any]) -> str:
    """The column's PostgreSQL type as psycopg names it: "varchar", "timestamp with time
    zone", "integer"."""
    return column.type.compile(connection.dialect).split("(")[0].lower()


def _table(model: type[models.Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)  # declarative models map tables, never other selectables
    return table


def _enrolment_values(
    enrolment: Enrolment, starts_at: datetime, patient_id: int, now: datetime
) -> dict[str, object]:
    return {
        **enrolment.columns("enrolment"),
        "patient_id": patient_id,
        "starts_at": starts_at,
        "status": models.ENROLMENT_ACTIVE,
        "schedule_version": 1,
        "enrolled_at": now,
    }
