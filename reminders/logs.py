"""Logging for every process (CLI, web, worker, beat): one JSON object per line when not on a
terminal, readable lines on one; and, everywhere, phone numbers and email addresses masked.

Our own code logs ids, never a patient's details or a message's text; the masking is the
safety net for everything else that reaches a log line (a library's message, an exception's
text, a value in a traceback), applied to the final formatted line so nothing escapes it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

# E.164 (+447911123456) and UK national forms (07911 123456, 07911-123-456), with spaces.
_PHONE = re.compile(r"(?<![\w+])(\+\d[\d \-]{6,17}\d|0\d{3,4}[ \-]?\d{3}[ \-]?\d{3,4})(?!\w)")
_QUERY = re.compile(r"(?<=[\w/])\?[^\s\"']+")
_URL_PLUS = re.compile(r"%2B(?=\d)", re.IGNORECASE)
_EMAIL = re.compile(r"(?<![\w.+-])([\w.+-])[\w.+-]*@([\w-]+(?:\.[\w-]+)+)")


def _mask_phone(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    if len(digits) < 9:  # a short number is a date, a port or an id, not a phone
        return match.group(0)
    keep = digits[-3:]
    return ("+" if match.group(0).startswith("+") else "") + "*" * (len(digits) - 3) + keep


def mask(text: str) -> str:
    """`+447911123456` -> `+*********456`; `rhys.evans@example.org` -> `r***@example.org`;
    a URL's query string -> `?...` (a staff search carries a patient's name there)."""
    text = _QUERY.sub("?...", text)
    text = _URL_PLUS.sub("+", text)  # a number in a URL's query string: To=%2B447911...
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    return _PHONE.sub(_mask_phone, text)


class MaskingFormatter(logging.Formatter):
    def __init__(self, *, json_lines: bool) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        if not self.json_lines:
            return mask(super().format(record))
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.processName,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return mask(json.dumps(entry, ensure_ascii=False, default=str))


QUIET_EVERY_TICK = ("celery.beat", "celery.app.trace", "celery.worker.strategy")


def configure(level: str = "INFO", *, json_lines: bool | None = None) -> None:
    """Route every logger through one masking handler on stderr."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(MaskingFormatter(json_lines=json_lines))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Uvicorn and Celery bring handlers of their own; send them through ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # Quiet when idle: Celery says at INFO that each task was sent, received and succeeded,
    # which for the dispatcher every second and the sweeper every few was three lines a second
    # (58 MB a day) about nothing. Failures still show (WARNING and above); what the tasks
    # change, they log themselves.
    for name in QUIET_EVERY_TICK:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
