"""Engines and sessions, configured the same way for the web app, workers, CLI and tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

# How long an SQLite writer waits for another process's lock before giving up. The web app,
# the worker and beat all share one file under `reminders up`; without a wait they would fail
# with "database is locked" whenever two of them write at once.
SQLITE_BUSY_TIMEOUT_MS = 15_000
POOL_SIZE = 20
POOL_OVERFLOW = 10
# A worker's sending threads (16 a process) each hold a connection only for a short
# transaction before and after their request: a few connections serve them all, and a
# deployment's worker processes together stay well inside PostgreSQL's max_connections.
WORKER_POOL_SIZE = 4
WORKER_POOL_OVERFLOW = 2


def make_engine(url: str, *, idle_in_transaction: float | None = None) -> Engine:
    """`idle_in_transaction`: seconds after which PostgreSQL ends a session that sits inside a
    transaction doing nothing (a worker paused or frozen mid-transaction), so that the rows it
    locked are not held for as long as its connection lingers (workers set it)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        if idle_in_transaction is not None:
            timeout = f"-c idle_in_transaction_session_timeout={int(idle_in_transaction * 1000)}"
            return create_engine(
                parsed, hide_parameters=True, pool_size=WORKER_POOL_SIZE,
                max_overflow=WORKER_POOL_OVERFLOW, pool_pre_ping=True,
                connect_args={"options": timeout},
            )  # fmt: skip
        # hide_parameters: an error's text must not carry a patient's number into the logs.
        # A pool as large as the requests one web process serves at once (FastAPI runs up to
        # 40 handlers in threads): beyond pool_size, SQLAlchemy opens a connection per checkout
        # and closes it after, and PostgreSQL starts a process for each; that cost, not the
        # queries, made the staff pages slow under 20 concurrent users.
        return create_engine(
            parsed, hide_parameters=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW
        )
    database = parsed.database
    in_memory = not database or database == ":memory:" or database.startswith("file:")
    if not in_memory and database is not None:
        # The default database lives under ./var/, which a fresh checkout does not have yet.
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, hide_parameters=True)
    event.listen(engine, "connect", _configure_sqlite_connection)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
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
    process's: PostgreSQL gets that from the caller's SELECT ... FOR UPDATE; on SQLite the
    transaction takes the write lock as it begins (BEGIN IMMEDIATE) rather than at its first
    write, by which time another process may have changed what it read."""
    with factory() as session, session.begin():
        connection = session.connection()
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        yield session


class Clock(Protocol):
    """The time every lease, due and deadline decision is made by. Given the session a
    decision is made in, it may read the time there."""

    def __call__(self, session: Session | None = None) -> datetime: ...


class DatabaseClock:
    """The database's time, so that workers and beats on hosts whose clocks disagree still make
    one set of decisions: a worker whose clock is behind would otherwise send what another
    worker's lease still covers, and a beat's clock decides nothing either (PostgreSQL's
    `clock_timestamp()`). An SQLite file is on this machine, and its time is this machine's."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgresql = engine.dialect.name == "postgresql"

    def __call__(self, session: Session | None = None) -> datetime:
        if not self.postgresql:
            return datetime.now(UTC)
        if session is not None:
            return database_now(session)
        with self.engine.connect() as connection:
            return _now(connection)


def read_in_database(clock: Clock) -> bool:
    """Whether `clock` is PostgreSQL's, which a statement can read as it runs (a round trip
    saved where every message counts)."""
    return isinstance(clock, DatabaseClock) and clock.postgresql


def database_now(session: Session) -> datetime:
    """The database's time now, read in `session` (see `DatabaseClock`)."""
    connection = session.connection()
    return _now(connection) if connection.dialect.name == "postgresql" else datetime.now(UTC)


def _now(connection: Connection) -> datetime:
    now = connection.execute(text("SELECT clock_timestamp()")).scalar_one()
    return now.astimezone(UTC)  # type: ignore[no-any-return]
