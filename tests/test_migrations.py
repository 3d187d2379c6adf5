"""The migrations build exactly the schema the models describe, and can be undone."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from reminders.core.errors import ConfigError
from reminders.store.db import make_engine
from reminders.store.migrate import (
    check_current,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from reminders.store.models import Base

APPLICATION_TABLES = set(Base.metadata.tables)


def table_names(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_models_describe_the_tables_we_expect() -> None:
    assert sorted(APPLICATION_TABLES) == [
        "api_tokens",
        "attention_items",
        "audit_entries",
        "enrolments",
        "import_refusals",
        "import_runs",
        "import_uploads",
        "inbound_messages",
        "login_attempts",
        "opt_outs",
        "patients",
        "purged_totals",
        "reminders",
        "users",
    ]


def test_upgrade_downgrade_and_upgrade_again(empty_database_url: str) -> None:
    url = empty_database_url
    assert current_revision(url) is None

    upgrade(url)
    assert table_names(url) == APPLICATION_TABLES | {"alembic_version"}
    assert current_revision(url) == head_revision()

    downgrade(url)
    assert table_names(url) <= {"alembic_version"}
    assert current_revision(url) is None

    upgrade(url)
    assert table_names(url) == APPLICATION_TABLES | {"alembic_version"}


# Made by the migration on PostgreSQL when pg_trgm is available, so not in the models, which
# describe what every database has.
POSTGRES_ONLY = {"ix_patients_name_trigram"}


def not_postgres_only(obj: object, name: str | None, kind: str, *_: object) -> bool:
    return not (kind == "index" and name in POSTGRES_ONLY)


def test_migrated_schema_matches_the_models(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "compare_type": True,
                    "compare_server_default": True,
                    "include_object": not_postgres_only,
                },
            )
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == [], "models and migrations disagree; write a migration"


def test_check_current_refuses_an_unmigrated_database(empty_database_url: str) -> None:
    with pytest.raises(ConfigError, match="run `reminders migrate`"):
        check_current(empty_database_url)


def test_check_current_refuses_a_database_from_newer_code(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = 'from-the-future'"))
    finally:
        engine.dispose()
    with pytest.raises(ConfigError, match="'from-the-future', which this version"):
        check_current(empty_database_url)


def test_check_current_accepts_a_migrated_database(database_url: str) -> None:
    check_current(database_url)
