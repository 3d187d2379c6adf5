"""How Alembic reaches the database, whether run by `alembic`, `reminders migrate` or a test.

The URL is taken, in order, from a connection handed over in `config.attributes["connection"]`,
from `sqlalchemy.url` set programmatically (see `reminders.store.migrate.alembic_config`),
and from the service's own settings, so every route migrates the database the service will
actually use.
"""

from __future__ import annotations

import logging.config
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection

from reminders.settings import Settings
from reminders.store.db import make_engine
from reminders.store.models import Base, UTCDateTime

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    # Only for the `alembic` command: keep the service's and pytest's loggers alive.
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    return config.get_main_option("sqlalchemy.url") or Settings.from_env().database_url


def render_item(kind: str, item: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    # Revisions must not import the application, which will have changed by the time an old
    # revision runs; UTCDateTime is a plain timestamp with a time zone as far as SQL knows.
    if kind == "type" and isinstance(item, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite can alter little in place; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    """`alembic upgrade --sql`: print the SQL for a DBA instead of running it."""
    url = database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    engine = make_engine(database_url())
    try:
        with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # A batch migration drops and recreates tables; with foreign keys on, SQLite
                # would cascade that drop into the rows that reference it. The pragma only
                # takes effect outside a transaction, hence before the migration's own.
                connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
                connection.commit()
            run_migrations(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
