"""Bring a database to the current schema, and refuse to run against one that is not there.

Used by `reminders migrate`, by `reminders up` and the containers on start, and by tests. It
works from any directory and needs no `alembic.ini`: the service may run from an installed copy.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from reminders.core.errors import ConfigError
from reminders.store.db import make_engine

# In the wheel beside this module (pyproject.toml); installed as files on disk, never zipped,
# so alembic can read it by path.
MIGRATIONS_DIR = Path(str(files("reminders.store") / "migrations"))


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # The option is read through configparser, which treats "%" as interpolation; a password
    # with a percent-encoded character would otherwise be mangled or refused.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def _scripts() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config)


def head_revision() -> str:
    head = _scripts().get_current_head()
    if head is None:
        raise ConfigError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def check_current(url: str) -> None:
    """Refuse to start against an old schema rather than fail later on a missing column."""
    current = current_revision(url)
    if current == head_revision():
        return
    known = {script.revision for script in _scripts().walk_revisions()}
    if current is not None and current not in known:
        # Migrating cannot help here: newer code has already moved the schema on.
        raise ConfigError(
            f"the database is at schema revision {current!r}, which this version of "
            "reminders does not know; run the newer version or restore the database"
        )
    raise ConfigError("the database is not at the current schema; run `reminders migrate`")
