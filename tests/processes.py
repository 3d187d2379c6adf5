"""Real processes for delivery tests: a Redis server of the tests' own, and Celery workers and
beats started exactly as a deployment starts them (`celery -A worker ...`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis
from paths import PROJECT_ROOT

from reminders.interfaces.up import free_port, redis_binary

BIN = Path(sys.executable).parent


def wait_for(
    condition: Callable[[], object], *, timeout: float, every: float = 0.05, what: str = ""
) -> None:
    """Poll until `condition()` is true: the event is a row or a message appearing in another
    process, which has no notification to wait on."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(every)


class RedisServer:
    """A throwaway Redis on a free port, which tests may flush, stop and start."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, timeout=10, what="redis to answer PING")
        return self

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


class CeleryProcess:
    """`celery -A worker worker|beat` in its own process group, so that SIGKILL reaches the
    worker's children as a crash would."""

    def __init__(self, kind: str, env: dict[str, str], log: Path, *args: str) -> None:
        self.kind, self.env, self.log, self.args = kind, env, log, args
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> CeleryProcess:
        command = [str(BIN / "celery"), "-A", "worker", self.kind, "--loglevel", "INFO", *self.args]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=PROJECT_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL the whole group: no warm shutdown, tasks in hand are lost mid-flight."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None
