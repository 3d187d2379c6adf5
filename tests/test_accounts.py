"""Staff accounts and API tokens from the terminal: `reminders user add|reset|disable|enable`
and `reminders token add|list|revoke`, as an IT administrator runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from reminders.interfaces.web.app import create_app
from reminders.services import logins
from reminders.settings import Settings
from reminders.store import models
from reminders.store.db import make_engine, make_sessionmaker, session_scope
from reminders.store.migrate import upgrade

SCRIPT = Path(sys.executable).parent / "reminders"
PASSWORD = "synthetic-password-1"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    url = f"sqlite:///{tmp_path / 'reminders.db'}"
    upgrade(url)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "REMINDERS_DATABASE_URL": url,
        "REMINDERS_SECRET_KEY": "synthetic-test-secret-for-tests-only-0123456789",
    }


pytestmark = pytest.mark.slow  # each test runs the `reminders` command as a process


def run(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], env=env, cwd=env["HOME"], input=stdin,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def user(env: dict[str, str], email: str) -> models.User | None:
    engine = make_engine(env["REMINDERS_DATABASE_URL"])
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            return session.scalar(select(models.User).where(models.User.email == email))
    finally:
        engine.dispose()


def test_user_add_reads_the_password_from_stdin_and_keeps_only_its_hash(
    env: dict[str, str],
) -> None:
    result = run(env, "user", "add", "--email", "Alice@Example.org", "--role", "admin",
                 "--password-stdin", stdin=PASSWORD + "\n")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "alice@example.org can now log in as admin"
    found = user(env, "alice@example.org")
    assert found is not None and found.role == "admin"
    assert PASSWORD not in found.password_hash and found.password_hash.startswith("$argon2id$")


@pytest.mark.parametrize(
    ("args", "stdin", "reason"),
    [
        (["--role", "staff", "--password-stdin"], "short\n", "password: use at least 12"),
        (["--role", "staff"], PASSWORD, "--password-stdin"),
        (["--role", "nurse", "--password-stdin"], PASSWORD, "invalid choice: 'nurse'"),
    ],
)
def test_user_add_refuses_in_one_line(
    env: dict[str, str], args: list[str], stdin: str, reason: str
) -> None:
    result = run(env, "user", "add", "--email", "bob@example.org", *args, stdin=stdin)
    assert result.returncode == 2
    assert reason in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert user(env, "bob@example.org") is None


def test_the_same_address_twice_is_refused(env: dict[str, str]) -> None:
    args = ("user", "add", "--email", "bob@example.org", "--role", "staff", "--password-stdin")
    assert run(env, *args, stdin=PASSWORD).returncode == 0
    again = run(env, *args, stdin=PASSWORD)
    assert again.returncode == 2
    assert "bob@example.org already has an account" in again.stderr


def test_reset_gives_a_new_password_and_lifts_the_slowdown(env: dict[str, str]) -> None:
    run(env, "user", "add", "--email", "bob@example.org", "--role", "staff",
        "--password-stdin", stdin=PASSWORD)  # fmt: skip
    engine = make_engine(env["REMINDERS_DATABASE_URL"])
    factory = make_sessionmaker(engine)
    now = datetime.now(UTC)

    def log_in(password: str) -> models.User | None:
        return logins.log_in(factory, "bob@example.org", password, now)

    for _ in range(logins.FREE_ATTEMPTS):
        assert log_in("wrong") is None
    with pytest.raises(logins.TooManyAttempts):
        log_in(PASSWORD)
    result = run(env, "user", "reset", "--email", "bob@example.org", "--password-stdin",
                 stdin="another-password-2")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert log_in(PASSWORD) is None
    assert log_in("another-password-2") is not None
    engine.dispose()


def test_a_token_is_printed_once_and_opens_the_api(env: dict[str, str]) -> None:
    result = run(env, "token", "add", "--name", "Booking system")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.startswith("rmd_") and "shown only once" in result.stderr
    engine = make_engine(env["REMINDERS_DATABASE_URL"])
    with session_scope(make_sessionmaker(engine)) as session:
        stored = session.scalars(select(models.ApiToken.token_hash)).all()
    engine.dispose()
    assert len(stored) == 1 and token not in stored[0]
    client = TestClient(create_app(Settings.from_env(env)))
    assert client.get("/api/v1/enrolments", params={"booking_ref": "BK-1"}).status_code == 401
    client.headers["Authorization"] = f"Bearer {token}"
    assert client.get("/api/v1/enrolments", params={"booking_ref": "BK-1"}).json() == []

    listed = run(env, "token", "list")
    number, name, used, state = listed.stdout.strip().split("\t")
    assert (name, state) == ("Booking system", "works") and used != "last used never"
    revoked = run(env, "token", "revoke", number)
    assert revoked.returncode == 0, revoked.stderr
    assert client.get("/api/v1/enrolments", params={"booking_ref": "BK-1"}).status_code == 401
    assert run(env, "token", "list").stdout.strip().split("\t")[-1].startswith("revoked ")
    missing = run(env, "token", "revoke", "99")
    assert missing.returncode == 2 and "there is no token 99" in missing.stderr


def test_a_switched_off_account_cannot_log_in_until_switched_on(env: dict[str, str]) -> None:
    for email, role in (("alice@example.org", "admin"), ("bob@example.org", "staff")):
        run(env, "user", "add", "--email", email, "--role", role, "--password-stdin",
            stdin=PASSWORD)  # fmt: skip
    engine = make_engine(env["REMINDERS_DATABASE_URL"])
    factory = make_sessionmaker(engine)
    now = datetime.now(UTC)

    def can_log_in(email: str) -> bool:
        return logins.log_in(factory, email, PASSWORD, now) is not None

    result = run(env, "user", "disable", "--email", "bob@example.org")
    assert result.stdout.strip() == "bob@example.org is switched off; their sessions have ended"
    assert not can_log_in("bob@example.org")
    assert run(env, "user", "enable", "--email", "bob@example.org").returncode == 0
    assert can_log_in("bob@example.org")
    # The only administrator stays: nobody else could switch accounts on again.
    last = run(env, "user", "disable", "--email", "alice@example.org")
    assert last.returncode == 2 and "the only administrator left" in last.stderr
    assert can_log_in("alice@example.org")
    engine.dispose()
