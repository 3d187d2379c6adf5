"""Logs never carry a full phone number, email address or message body."""

from __future__ import annotations

import json
import logging

import pytest

from reminders.logs import MaskingFormatter, mask


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("to +447911123456 now", "to +*********456 now"),
        ("call 07911 123456", "call ********456"),
        ("call 07911-123-456", "call ********456"),
        ("rhys.evans@example.org bounced", "r***@example.org bounced"),
        ("<reminder-12@example.org>", "<r***@example.org>"),
        ("reminder 1234 at 2026-12-10 09:30:00", "reminder 1234 at 2026-12-10 09:30:00"),
        ("port 6379, pid 12345", "port 6379, pid 12345"),
    ],
)
def test_mask(text: str, masked: str) -> None:
    assert mask(text) == masked


def test_json_lines_mask_messages_and_exceptions() -> None:
    formatter = MaskingFormatter(json_lines=True)
    try:
        raise ValueError("could not send to +447911123456 (megan@example.org)")
    except ValueError:
        record = logging.LogRecord(
            "reminders.delivery.send", logging.ERROR, __file__, 1, "failed for %s",
            ("+447911100010",),
            exc_info=__import__("sys").exc_info(),
        )  # fmt: skip
    line = formatter.format(record)
    entry = json.loads(line)
    assert entry["level"] == "ERROR" and entry["logger"] == "reminders.delivery.send"
    assert entry["message"] == "failed for +*********010"
    assert "+447911123456" not in line and "megan@" not in line
    assert "+*********456" in entry["exception"]


def test_query_strings_are_dropped_because_they_carry_numbers_and_names() -> None:
    assert mask("GET /Messages.json?To=%2B447911123456&PageSize=50") == "GET /Messages.json?..."
    assert mask('"GET /search?q=Megan+Price HTTP/1.1" 200') == '"GET /search?... HTTP/1.1" 200'


def test_numbers_in_urls_are_masked_too() -> None:
    assert mask("POST /2010-04-01/Accounts/AC1/Messages.json To=%2B447911123456") == (
        "POST /2010-04-01/Accounts/AC1/Messages.json To=+*********456"
    )
