"""`reminders up` as a person starts it on a laptop, and the health endpoint it serves."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
from fastapi.testclient import TestClient
from processes import BIN, RedisServer, free_port, wait_for
from test_lifecycle import reminder as make_reminder

from reminders.interfaces.tasks import HEARTBEAT_KEY
from reminders.interfaces.up import kept_key
from reminders.interfaces.web.app import create_app
from reminders.settings import Settings
from reminders.store.db import make_engine, make_sessionmaker
from reminders.store.migrate import upgrade

pytestmark = pytest.mark.drill  # the whole service started as processes

SECRET = {"REMINDERS_SECRET_KEY": "synthetic-test-secret-for-tests-only-0123456789"}


def healthz(port: int) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)
    except OSError:
        return 0, {}


def test_up_runs_everything_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    # No settings at all, but the sending window: this test must pass at any hour.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
           "REMINDERS_SENDING_WINDOW": "00:00-24:00"}  # fmt: skip
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen([str(BIN / "reminders"), "up", "--port", str(port)], cwd=tmp_path,
                          env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for(lambda: healthz(port)[0] == 200, timeout=90, what="/healthz to answer 200")
        assert healthz(port)[1] == {
            "status": "ok", "database": "ok", "broker": "ok", "dispatcher": "ok",
            "due_unclaimed": 0, "oldest_due_seconds": 0.0,
        }  # fmt: skip
        key = tmp_path / "var" / "secret-key"  # kept for the next run: see below
        assert key.stat().st_mode & 0o777 == 0o600
        started = psutil.Process(up.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in started)
        assert "redis-server" in names and "worker" in names and "beat" in names
        assert "uvicorn" in names

        start = datetime.now(UTC) + timedelta(hours=2)
        enrol = subprocess.run(
            [str(BIN / "reminders"), "enrol", "--procedure", "facet-joint-denervation",
             "--at", start.strftime("%Y-%m-%dT%H:%M"), "--tz", "UTC", "--name", "Owen Hughes",
             "--phone", "07911 100030", "--email", "owen@example.org"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert enrol.returncode == 0, enrol.stderr
        database = tmp_path / "var" / "reminders.db"

        def recorded() -> list[tuple[str, str, str]]:
            with sqlite3.connect(database) as db:
                return db.execute(
                    "SELECT channel, state, transport FROM reminders WHERE state = 'sent'"
                ).fetchall()

        wait_for(lambda: len(recorded()) == 6, timeout=60, what="the outbox to record six")
        assert set(recorded()) == {("sms", "sent", "outbox"), ("email", "sent", "outbox")}

        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0
        for process in started:
            assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE, (
                f"left running: {process.cmdline()}"
            )
    finally:
        if up.poll() is None:
            up.kill()
        log.close()
    assert "Staff pages: http://127.0.0.1:" in (tmp_path / "up.log").read_text()
    assert "No staff accounts yet. Add one" in (tmp_path / "up.log").read_text()


def test_healthz_names_the_broker_when_redis_is_down(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    client = _app_with_broker(redis_server, tmp_path)
    redis_server.client().set(HEARTBEAT_KEY, time.time())  # a dispatcher that just ran
    healthy = {"status": "ok", "database": "ok", "broker": "ok", "dispatcher": "ok",
               "due_unclaimed": 0, "oldest_due_seconds": 0.0}  # fmt: skip
    assert client.get("/healthz").json() == healthy
    redis_server.stop()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {**healthy, "status": "unavailable", "broker": "down",
                               "dispatcher": "silent"}  # fmt: skip
    redis_server.start()
    redis_server.client().set(HEARTBEAT_KEY, time.time())
    assert client.get("/healthz").status_code == 200


def _app_with_broker(redis_server: RedisServer, tmp_path: Path) -> TestClient:
    settings = Settings.from_env(
        {
            "REMINDERS_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
            "REMINDERS_BROKER_URL": redis_server.url,
            **SECRET,
        }
    )
    upgrade(settings.database_url)
    return TestClient(create_app(settings))


def test_a_silent_dispatcher_makes_healthz_unwell_and_shows_in_metrics(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    client = _app_with_broker(redis_server, tmp_path)
    response = client.get("/healthz")  # never ran
    assert (response.status_code, response.json()["dispatcher"]) == (503, "silent")
    redis_server.client().set(HEARTBEAT_KEY, time.time() - 61)  # stopped a minute ago
    response = client.get("/healthz")
    assert (response.status_code, response.json()["dispatcher"]) == (503, "silent")
    metrics = client.get("/metrics").text
    age = re.search(r"^reminders_dispatcher_heartbeat_age_seconds ([0-9.]+)$", metrics, re.M)
    assert age is not None and 60 < float(age.group(1)) < 120


def test_a_due_reminder_nobody_claims_makes_healthz_unwell(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    client = _app_with_broker(redis_server, tmp_path)
    redis_server.client().set(HEARTBEAT_KEY, time.time())
    factory = make_sessionmaker(make_engine(f"sqlite:///{tmp_path / 'r.db'}"))
    with factory() as session:
        make_reminder(session, "scheduled", send_at=datetime.now(UTC) - timedelta(minutes=3))
    factory.kw["bind"].dispose()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["due_unclaimed"] == 1
    assert 170 < response.json()["oldest_due_seconds"] < 240
    metrics = client.get("/metrics").text
    assert re.search(r"^reminders_due_unclaimed 1\.0$", metrics, re.M)


def test_metrics_are_prometheus_text_with_the_projects_prefix(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"REMINDERS_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}", **SECRET}
    )
    upgrade(settings.database_url)
    response = TestClient(create_app(settings)).get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    names = {line.split()[2] for line in response.text.splitlines() if line.startswith("# TYPE")}
    assert names and all(name.startswith("reminders_") for name in names)
    assert "reminders_lateness_seconds" in names


@pytest.mark.parametrize("path", ["/nowhere", "/healthz/../../etc/passwd"])
def test_unknown_pages_leak_nothing(tmp_path: Path, path: str) -> None:
    settings = Settings.from_env(
        {"REMINDERS_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}", **SECRET}
    )
    response = TestClient(create_app(settings)).get(path)
    assert response.status_code == 404
    assert "Traceback" not in response.text


def test_up_keeps_its_secret_key_so_a_restart_logs_nobody_out(tmp_path: Path) -> None:
    first = kept_key(tmp_path)
    assert len(first) >= 32
    assert kept_key(tmp_path) == first  # the next run signs with the same key
    Settings.from_env({"REMINDERS_SECRET_KEY": first})  # and it is strong enough


def test_metrics_want_their_token_when_one_is_set(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "REMINDERS_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
            "REMINDERS_METRICS_TOKEN": "synthetic-metrics-token",
            **SECRET,
        }
    )
    upgrade(settings.database_url)
    client = TestClient(create_app(settings))
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", headers={"Authorization": "Bearer another"})
    assert wrong.status_code == 401
    right = client.get("/metrics", headers={"Authorization": "Bearer synthetic-metrics-token"})
    assert right.status_code == 200 and "reminders_due_unclaimed" in right.text
