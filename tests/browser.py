"""A real browser for the staff pages: Debian's Chromium driven by Playwright, against the app
served by uvicorn on loopback.

Playwright's own browser download is not used (it is not reachable from a hospital network,
nor from here): the system's Chromium is. On a fresh Debian or Ubuntu machine where the tests
run as root, it is installed with apt the first time it is needed; anywhere else the browser
tests are skipped with the reason printed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from processes import wait_for

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# Without these, Chromium spends its first seconds trying to reach Google's services, which a
# closed network refuses; --no-sandbox because the tests may run as root in a container.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
# Dates and times in form fields as a UK hospital PC shows them (13/12/2026, 09:30). Chromium
# on Linux takes its language from the environment, not from --lang, and needs the en-GB
# strings of Debian's chromium-l10n; without them it falls back to the US format.
CHROMIUM_ENV = {"LANG": "en_GB.UTF-8", "LANGUAGE": "en_GB:en"}


def find_chromium() -> str | None:
    configured = os.environ.get("REMINDERS_CHROMIUM")
    if configured:
        return configured if Path(configured).exists() else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def install_chromium() -> str:
    """Install Debian's chromium with apt, as the test command promises on a fresh machine.
    Returns what went wrong, or "" when it is installed."""
    if shutil.which("apt-get") is None:
        return "no Chromium on PATH and no apt-get to install it (set REMINDERS_CHROMIUM)"
    if os.geteuid() != 0:
        return "no Chromium on PATH; install it with: sudo apt-get install chromium"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Several test processes may get here at once: the later ones wait for dpkg's lock.
    install = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-q",
               "--no-install-recommends", "chromium", "chromium-l10n"]  # fmt: skip
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        # A fresh image often has no package lists yet.
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
            return f"apt-get install chromium failed: {lines[-1]}"
    return ""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """The app under uvicorn in a thread, for as long as the block runs; yields its address."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), timeout=15, what="uvicorn")
    if not server.started:
        raise RuntimeError("uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
