"""Where the tests find the repository's own files: the shipped config/ and templates/, the
Dockerfile and docker-compose.yml. The package itself no longer knows its source tree."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# What a wheel is built from; the Dockerfile copies exactly these (and the lock file) to build
# the image, and tests/test_packaging.py builds from a copy of them.
PACKAGE_SOURCES = ("pyproject.toml", "README.md", "worker.py", "reminders", "config", "templates")
