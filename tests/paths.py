"""Where the tests find the repository's own files: the shipped config/ and templates/, the
Dockerfile and docker-compose.yml. The package itself no longer knows its source tree."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
