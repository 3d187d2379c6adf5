"""Many rows at once, straight through the database driver: the CSV import's bulk path.

SQLAlchemy's executemany handles each parameter in Python, which for a hundred thousand
enrolments (a million reminders) cost more than the database's own work; here PostgreSQL gets
COPY in binary, and SQLite its driver's executemany with each column's own conversion.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, ColumnDefault, Connection, Table, func, select, text

from reminders.store import models


def insert_rows(
    connection: Connection,
    table: Table | type[models.Base],
    rows: list[dict[str, Any]],
    *,
    ids: bool = False,
) -> list[int]:
    """INSERT the rows, and return their ids in order when asked.

    Straight through the driver, not SQLAlchemy's executemany, whose handling of each
    parameter cost more than the database's work: on PostgreSQL by COPY in binary, on SQLite by
    the driver's executemany with each column's own conversion. The ids are taken first, as an
    INSERT would take them, so they are known in order."""
    table = table_of(table)
    if not rows:
        return []
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


def table_of(model: Table | type[models.Base]) -> Table:
    if isinstance(model, Table):
        return model
    table = model.__table__
    assert isinstance(table, Table)  # declarative models map tables, never other selectables
    return table
