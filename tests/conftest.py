"""Shared fixtures. Database tests run on SQLite and PostgreSQL alike, because production runs
on PostgreSQL and development on SQLite, and their differences (time zones, locking, constraint
checks) are exactly where reminder bugs hide.

Any test that takes `session`, `db_engine` or `database_url` runs once per backend, against a
database migrated to head and emptied after the test. PostgreSQL comes from
`REMINDERS_TEST_POSTGRES_URL`; when it cannot be reached those runs are skipped with the reason.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import profiles  # noqa: F401  (loads the Hypothesis profile before any test module)
import pytest
from fakes.smtp import FakeSmtp
from fakes.twilio import FakeTwilio
from fastapi import FastAPI
from processes import CeleryProcess, RedisServer
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool
from staff import BOB, Staff, add_staff
from world import World, make_world

from reminders.config import Config
from reminders.interfaces.web.app import create_app
from reminders.settings import Settings
from reminders.store.db import make_engine, make_sessionmaker
from reminders.store.migrate import upgrade
from reminders.store.models import Base

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgresql")


def url_text(url: URL) -> str:
    # str(url) masks the password, which would then be used as the password.
    return url.render_as_string(hide_password=False)


class PostgresServer:
    """Creates throwaway databases on the test server and drops them at the end of the run."""

    def __init__(self, admin: Engine) -> None:
        self.admin = admin
        self.created: list[str] = []

    def create_database(self) -> str:
        name = f"reminders_test_{os.getpid()}_{secrets.token_hex(4)}"
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return url_text(self.admin.url.set(database=name))

    def drop_database(self, url: str) -> None:
        name = make_url(url).database
        assert name in self.created, f"{name} was not created by these tests"
        # FORCE: a test that failed half-way may still hold a connection open.
        with self.admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.created.remove(name)


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> Iterator[PostgresServer]:
    url = make_url(os.environ.get("REMINDERS_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    admin = create_engine(
        url,
        isolation_level="AUTOCOMMIT",  # CREATE DATABASE refuses to run inside a transaction
        poolclass=NullPool,
        connect_args={"connect_timeout": 3},
    )
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as error:
        admin.dispose()
        reason = str(error.orig or error).strip().splitlines()[0]
        message = f"PostgreSQL not reachable at {url.render_as_string()}: {reason}"
        if os.environ.get("CI") == "true":
            _shout(request, f"SKIPPING POSTGRESQL TESTS: {message}")
        pytest.skip(message)
    server = PostgresServer(admin)
    yield server
    for name in list(server.created):
        server.drop_database(url_text(url.set(database=name)))
    admin.dispose()


def _shout(request: pytest.FixtureRequest, line: str) -> None:
    """Print past pytest's output capture, so a CI log shows the skip as it happens."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if capture is None or reporter is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line, yellow=True, bold=True)


@pytest.fixture(scope="session")
def _postgresql_engine(postgres_server: PostgresServer) -> Iterator[Engine]:
    url = postgres_server.create_database()
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def _sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'reminders.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def delete_all_rows(engine: Engine) -> None:
    tables = Base.metadata.sorted_tables
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Fail rather than hang if a test left a transaction open on a table.
            connection.execute(text("SET LOCAL lock_timeout = '10s'"))
            names = ", ".join(connection.dialect.identifier_preparer.quote(t.name) for t in tables)
            connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(tables):
                connection.execute(table.delete())


@pytest.fixture(params=BACKENDS)
def db_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """An engine on a migrated database of each backend, emptied after the test."""
    engine: Engine = request.getfixturevalue(f"_{request.param}_engine")
    yield engine
    delete_all_rows(engine)


@pytest.fixture
def database_url(db_engine: Engine) -> str:
    """The URL of that database, for code under test that builds its own engine."""
    return url_text(db_engine.url)


@pytest.fixture
def session(db_engine: Engine) -> Iterator[Session]:
    with make_sessionmaker(db_engine)() as session:
        yield session


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of each backend with no schema at all, for migration tests."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database()
    yield url
    server.drop_database(url)


@pytest.fixture(scope="session")
def config() -> Config:
    """The shipped configuration (config/ and templates/ of this repository), read with no
    environment, so a developer's own .env or REMINDERS_* variables cannot change a test."""
    return Config.load(Settings.from_env({}))


# --- delivery: the outside world on loopback, and a Redis of the tests' own -------------------


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    """Twilio's Messages API on loopback; every request is checked against Twilio's OpenAPI
    description, and a test fails if the project sent anything Twilio would not accept."""
    with FakeTwilio() as fake:
        yield fake
        assert fake.violations == [], fake.violations


@pytest.fixture
def fake_smtp() -> Iterator[FakeSmtp]:
    with FakeSmtp() as smtp:
        yield smtp


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def delivery_env(
    database_url: str, fake_twilio: FakeTwilio, fake_smtp: FakeSmtp, redis_server: RedisServer,
    tmp_path: Path,
) -> dict[str, str]:  # fmt: skip
    """The environment a deployment would set, pointing at the fakes; tests run at any hour,
    so the sending window is open all day. The unit keeps UTC, as most tests' patients do, so
    that their times read the same all year (tests/clinic.py keeps the real unit's London)."""
    (tmp_path / "metrics").mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "REMINDERS_DATABASE_URL": database_url,
        "REMINDERS_BROKER_URL": redis_server.url,
        "REMINDERS_SENDING_WINDOW": "00:00-24:00",
        "REMINDERS_TIMEZONE": "UTC",
        "REMINDERS_PUBLIC_URL": "https://reminders.example.org",
        "REMINDERS_SECRET_KEY": "synthetic-test-secret-for-tests-only-0123456789",
        "REMINDERS_PROVIDER_TIMEOUT_SECONDS": "2",
        "REMINDERS_STUCK_AFTER_SECONDS": "5",
        # Where worker processes count what they do, as a deployment shares it with the web.
        "PROMETHEUS_MULTIPROC_DIR": str((tmp_path / "metrics").resolve()),
        "TWILIO_ACCOUNT_SID": fake_twilio.account_sid,
        "TWILIO_AUTH_TOKEN": fake_twilio.auth_token,
        "TWILIO_MESSAGING_SERVICE_SID": "MG" + "0" * 32,
        "TWILIO_BASE_URL": fake_twilio.base_url,
        **fake_smtp.env,
    }


@pytest.fixture
def w(db_engine: Engine, delivery_env: dict[str, str]) -> World:
    """The delivery world (tests/world.py) on each database, pointing at the fakes."""
    return make_world(db_engine, delivery_env)


@pytest.fixture
def web_settings(database_url: str) -> Settings:
    """The web app's settings on each database; tests run at any hour, so the sending window
    is open all day. The unit keeps UTC, as for `delivery_env`."""
    return Settings.from_env(
        {
            "REMINDERS_DATABASE_URL": database_url,
            "REMINDERS_SECRET_KEY": "synthetic-test-secret-for-tests-only-0123456789",
            "REMINDERS_SENDING_WINDOW": "00:00-24:00",
            "REMINDERS_TIMEZONE": "UTC",
        }
    )


# The staff web app with two accounts (tests/staff.py): alice (staff) and bob (admin).
@pytest.fixture
def factory(db_engine: Engine) -> sessionmaker[Session]:
    factory = make_sessionmaker(db_engine)
    add_staff(factory)
    return factory


@pytest.fixture
def app(web_settings: Settings, factory: sessionmaker[Session]) -> Iterator[FastAPI]:
    app = create_app(web_settings)
    yield app
    # Its pool's connections go with the test, not when the garbage collector gets to them:
    # PostgreSQL's connections are shared with everything else running tests on this machine.
    app.state.sessions.kw["bind"].dispose()


@pytest.fixture
def alice(app: FastAPI) -> Staff:
    staff = Staff(app)
    assert staff.login().status_code == 303
    return staff


@pytest.fixture
def bob(app: FastAPI) -> Staff:
    staff = Staff(app)
    assert staff.login(BOB).status_code == 303
    return staff


@pytest.fixture
def import_worker(delivery_env: dict[str, str], tmp_path: Path) -> Iterator[CeleryProcess]:
    """A real Celery worker on the imports' queue: uploads on the staff pages are imported by
    a worker, never in the web process."""
    process = CeleryProcess(
        "worker", delivery_env, tmp_path / "import-worker.log",
        "--concurrency", "1", "--queues", "reminders.import",
    ).start()  # fmt: skip
    yield process
    process.stop()


@pytest.fixture
def worker_app(
    delivery_env: dict[str, str], factory: sessionmaker[Session], import_worker: CeleryProcess
) -> Iterator[FastAPI]:
    """The staff web app with a broker and a worker behind it, as `reminders up` runs it."""
    keep = ("REMINDERS_DATABASE_URL", "REMINDERS_BROKER_URL", "REMINDERS_SECRET_KEY")
    env = {name: delivery_env[name] for name in keep}
    env.update(REMINDERS_SENDING_WINDOW="00:00-24:00", REMINDERS_TIMEZONE="UTC")
    app = create_app(Settings.from_env(env))
    yield app
    app.state.sessions.kw["bind"].dispose()


@pytest.fixture(scope="session")
def chromium(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Headless Chromium under Playwright, from the system's package (tests/browser.py)."""
    from browser import CHROMIUM_ARGS, CHROMIUM_ENV, find_chromium, install_chromium
    from playwright.sync_api import sync_playwright

    path = find_chromium()
    if path is None:
        _shout(request, "Chromium not found: installing Debian's chromium for the browser tests")
        problem = install_chromium()
        path = find_chromium()
        if path is None:
            message = f"SKIPPING BROWSER TESTS: {problem or 'Chromium still not found'}"
            _shout(request, message)
            pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=path, headless=True, args=CHROMIUM_ARGS,
            env={**os.environ, **CHROMIUM_ENV},
        )  # fmt: skip
        yield browser
        browser.close()
