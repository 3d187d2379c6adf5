"""The backup and restore the README documents, done for real on the test PostgreSQL: a dump of
a live database restored into an empty one, and the service sends from the restored copy."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import PostgresServer
from fakes.smtp import FakeSmtp
from fakes.twilio import FakeTwilio
from processes import BIN, CeleryProcess, RedisServer, wait_for
from sqlalchemy.engine import make_url

from reminders.store.migrate import upgrade

PHONE = "+447911100031"


def libpq(url: str) -> str:
    """The URL as pg_dump and pg_restore take it (no SQLAlchemy driver name)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def databases(postgres_server: PostgresServer) -> Iterator[tuple[str, str]]:
    for tool in ("pg_dump", "pg_restore"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian: apt-get install postgresql-client)")
    live, restored = postgres_server.create_database(), postgres_server.create_database()
    yield live, restored
    postgres_server.drop_database(live)
    postgres_server.drop_database(restored)


def test_a_restored_dump_sends_what_was_due(
    databases: tuple[str, str], tmp_path: Path, redis_server: RedisServer,
    fake_twilio: FakeTwilio, fake_smtp: FakeSmtp,
) -> None:  # fmt: skip
    live, restored = databases
    upgrade(live)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "REMINDERS_DATABASE_URL": live,
        "REMINDERS_BROKER_URL": redis_server.url,
        "REMINDERS_SENDING_WINDOW": "00:00-24:00",
        "REMINDERS_TIMEZONE": "UTC",
        "REMINDERS_PUBLIC_URL": "https://reminders.example.org",
        "REMINDERS_SECRET_KEY": "synthetic-test-secret-for-tests-only-0123456789",
        "TWILIO_ACCOUNT_SID": fake_twilio.account_sid,
        "TWILIO_AUTH_TOKEN": fake_twilio.auth_token,
        "TWILIO_MESSAGING_SERVICE_SID": "MG" + "0" * 32,
        "TWILIO_BASE_URL": fake_twilio.base_url,
        **fake_smtp.env,
    }
    start = datetime.now(UTC) + timedelta(hours=2)
    enrol = subprocess.run(
        [str(BIN / "reminders"), "enrol", "--procedure", "facet-joint-denervation",
         "--at", start.strftime("%Y-%m-%dT%H:%M"), "--tz", "UTC", "--name", "Owen Hughes",
         "--phone", "07911 100031"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert enrol.returncode == 0, enrol.stderr
    dump = tmp_path / "reminders.dump"
    with dump.open("wb") as out:
        subprocess.run(["pg_dump", "-Fc", libpq(live)], stdout=out, check=True, timeout=120)
    subprocess.run(
        ["pg_restore", "--no-owner", "-d", libpq(restored), str(dump)], check=True, timeout=120
    )
    # The service comes back on the restored database only (the live one could be gone).
    env["REMINDERS_DATABASE_URL"] = restored
    worker = CeleryProcess("worker", env, tmp_path / "worker.log", "-c", "1").start()
    beat = CeleryProcess(
        "beat", env, tmp_path / "beat.log", "--schedule", str(tmp_path / "beat-schedule")
    ).start()
    try:
        wait_for(lambda: len(fake_twilio.messages_to(PHONE)) >= 1, timeout=90,
                 what="the booking confirmation sent from the restored database")  # fmt: skip
    finally:
        beat.stop()
        worker.stop()
    assert "Owen" in fake_twilio.messages_to(PHONE)[0]["body"]
