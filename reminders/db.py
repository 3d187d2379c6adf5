"""Engines and sessions, configured the same way for the web app, workers, CLI and tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

# How long an SQLite writer waits for another process's lock before giving up. The web app,
# the worker and beat all share one file under `reminders up`; without a wait they would fail
# with "database is locked" whenever two of them write at once.
SQLITE_BUSY_TIMEOUT_MS = 15_000
IMMEDIATE = "reminders_sqlite_immediate"


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # hide_parameters: an error's text must not carry a patient's number into the logs.
        return create_engine(parsed, hide_parameters=True)
    database = parsed.database
    in_memory = not database or database == ":memory:" or database.startswith("file:")
    if not in_memory and database is not None:
        # The default database lives under ./var/, which a fresh checkout does not have yet.
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, hide_parameters=True)
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_immediate)
    return engine


def _begin_immediate(connection: Any) -> None:
    # A transaction opened by `locked_scope` takes SQLite's write lock when it begins, not at
    # its first write: a worker that reads a reminder's state and then records an outcome must
    # not find another process changed the row in between (PostgreSQL gets this from
    # SELECT ... FOR UPDATE). Others begin as SQLite always does, so readers do not queue.
    immediate = connection.get_execution_options().get(IMMEDIATE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite would otherwise issue its own deferred BEGIN; `_begin_immediate` does instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # SQLite ignores foreign keys unless asked, per connection; without this a reminder
        # could outlive its enrolment in development and tests but not on PostgreSQL.
        cursor.execute("PRAGMA foreign_keys=ON")
        # WAL lets the web app read while a worker writes; it is a no-op for in-memory files.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    # Rows are often read after commit (to enqueue their ids, to render a page); expiring them
    # would cost a query each and fail outright once the session is closed.
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit if the block finishes, roll back if it raises."""
    with factory() as session, session.begin():
        yield session


@contextmanager
def locked_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Like `session_scope`, for a read-then-write that must not interleave with another
    process's: on SQLite the transaction holds the write lock from its start."""
    with factory() as session, session.begin():
        session.connection(execution_options={IMMEDIATE: True})
        yield session
