"""Direct tests of reminders/clock.py (local wall-clock arithmetic and NHS-style formatting) and
of the sending-window setting it works with."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from reminders.core.clock import (
    SendingWindow,
    format_clock,
    format_day,
    in_window,
    iso_local,
    localize,
    next_opening,
    parse_sending_window,
    previous_closing,
)
from reminders.core.errors import ConfigError

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
DEFAULT = parse_sending_window("08:00-20:00")
ALWAYS = parse_sending_window("00:00-24:00")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# --- localize: clock changes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "clock", "expected_utc", "expected_wall", "expected_offset"),
    [
        # London springs forward at 01:00 GMT on 29 March 2026: 01:30 never happens; moved
        # forward by the gap to 02:30 BST, which is 01:30 UTC.
        (LONDON, date(2026, 3, 29), time(1, 30), utc(2026, 3, 29, 1, 30), time(2, 30), 1),
        # London falls back at 02:00 BST on 25 October 2026: 01:30 happens twice; the first
        # (BST, 00:30 UTC) is meant.
        (LONDON, date(2026, 10, 25), time(1, 30), utc(2026, 10, 25, 0, 30), time(1, 30), 1),
        # New York springs forward at 02:00 EST on 8 March 2026: 02:30 becomes 03:30 EDT.
        (NEW_YORK, date(2026, 3, 8), time(2, 30), utc(2026, 3, 8, 7, 30), time(3, 30), -4),
        # New York falls back at 02:00 EDT on 1 November 2026: the first 01:30 is EDT.
        (NEW_YORK, date(2026, 11, 1), time(1, 30), utc(2026, 11, 1, 5, 30), time(1, 30), -4),
        # Ordinary days on either side, for contrast.
        (LONDON, date(2026, 6, 9), time(18, 0), utc(2026, 6, 9, 17, 0), time(18, 0), 1),
        (LONDON, date(2026, 12, 10), time(9, 30), utc(2026, 12, 10, 9, 30), time(9, 30), 0),
    ],
)
def test_localize_at_clock_changes(
    zone: ZoneInfo,
    day: date,
    clock: time,
    expected_utc: datetime,
    expected_wall: time,
    expected_offset: int,
) -> None:
    got = localize(day, clock, zone)
    where = f"{zone.key} {day} {clock}"
    assert got.tzinfo is not None, f"{where}: localize must return an aware datetime"
    # Compare in UTC: localize answers in the patient's zone, and PEP 495 makes `==` between
    # zones False for a wall time in a repeated hour, whatever instant it denotes.
    assert got.astimezone(UTC) == expected_utc, f"{where}: expected {expected_utc}, got {got}"
    local = got.astimezone(zone)
    assert local.time() == expected_wall, f"{where}: wall clock {local.time()}"
    assert local.date() == day, f"{where}: landed on {local.date()}"
    assert local.utcoffset() == timedelta(hours=expected_offset), f"{where}: {local.utcoffset()}"


def test_localize_round_trips_an_ordinary_wall_time() -> None:
    for zone in (LONDON, NEW_YORK, ZoneInfo("Australia/Lord_Howe"), ZoneInfo("Asia/Kolkata")):
        got = localize(date(2026, 7, 1), time(14, 45), zone).astimezone(zone)
        assert (got.date(), got.time()) == (date(2026, 7, 1), time(14, 45)), zone.key


# --- the sending window ----------------------------------------------------------------------


def local(zone: ZoneInfo, *args: int) -> datetime:
    """An instant given by an unambiguous local wall time in `zone`, in UTC."""
    return datetime(*args, tzinfo=zone).astimezone(UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("wall", "inside"),
    [
        ((7, 59, 59), False),
        ((8, 0, 0), True),
        ((12, 0, 0), True),
        ((20, 0, 0), True),  # the end is inclusive
        ((20, 0, 1), False),
        ((23, 30, 0), False),
        ((0, 0, 0), False),
        ((3, 0, 0), False),
    ],
)
def test_in_window_default_hours(wall: tuple[int, int, int], inside: bool) -> None:
    for zone in (LONDON, NEW_YORK):
        instant = local(zone, 2026, 6, 9, *wall)
        assert in_window(instant, DEFAULT, zone) is inside, f"{zone.key} {wall}"


def test_in_window_reads_the_patients_wall_clock_not_utc() -> None:
    # 19:30 UTC is 20:30 in London in summer (closed) but 15:30 in New York (open).
    instant = utc(2026, 6, 9, 19, 30)
    assert not in_window(instant, DEFAULT, LONDON)
    assert in_window(instant, DEFAULT, NEW_YORK)


def test_next_opening_and_previous_closing_inside_the_window_change_nothing() -> None:
    instant = local(LONDON, 2026, 6, 9, 13, 15)
    assert next_opening(instant, DEFAULT, LONDON) == instant
    assert previous_closing(instant, DEFAULT, LONDON) == instant
    edge = local(LONDON, 2026, 6, 9, 20, 0)
    assert next_opening(edge, DEFAULT, LONDON) == edge
    assert previous_closing(edge, DEFAULT, LONDON) == edge


@pytest.mark.parametrize(
    ("wall", "opening", "closing"),
    [
        # Late evening: opens tomorrow morning, closed at 20:00 this evening.
        ((2026, 6, 9, 22, 0), (2026, 6, 10, 8, 0), (2026, 6, 9, 20, 0)),
        # Just after midnight: opens this morning, closed at 20:00 the evening before.
        ((2026, 6, 10, 0, 30), (2026, 6, 10, 8, 0), (2026, 6, 9, 20, 0)),
        # Early morning.
        ((2026, 6, 10, 7, 59), (2026, 6, 10, 8, 0), (2026, 6, 9, 20, 0)),
        # Across the month and the year.
        ((2026, 12, 31, 23, 0), (2027, 1, 1, 8, 0), (2026, 12, 31, 20, 0)),
        ((2027, 1, 1, 1, 0), (2027, 1, 1, 8, 0), (2026, 12, 31, 20, 0)),
    ],
)
def test_next_opening_and_previous_closing_across_midnight(
    wall: tuple[int, ...], opening: tuple[int, ...], closing: tuple[int, ...]
) -> None:
    for zone in (LONDON, NEW_YORK):
        instant = local(zone, *wall)
        got_open = next_opening(instant, DEFAULT, zone)
        got_close = previous_closing(instant, DEFAULT, zone)
        assert got_open == local(zone, *opening), f"{zone.key} {wall}: opened {got_open}"
        assert got_close == local(zone, *closing), f"{zone.key} {wall}: closed {got_close}"
        assert in_window(got_open, DEFAULT, zone) and in_window(got_close, DEFAULT, zone)
        assert got_close < instant < got_open


def test_window_across_the_spring_change_keeps_wall_clock_hours() -> None:
    # 21:00 GMT on Saturday 28 March 2026; the clocks go forward overnight.
    evening = local(LONDON, 2026, 3, 28, 21, 0)
    opening = next_opening(evening, DEFAULT, LONDON)
    assert opening == utc(2026, 3, 29, 7, 0), f"08:00 BST is 07:00 UTC, got {opening}"
    assert opening - evening == timedelta(hours=10), "one night-time hour is lost"
    # 01:30 UTC on the Sunday is 02:30 BST (just after the gap).
    night = utc(2026, 3, 29, 1, 30)
    assert next_opening(night, DEFAULT, LONDON) == utc(2026, 3, 29, 7, 0)
    assert previous_closing(night, DEFAULT, LONDON) == utc(2026, 3, 28, 20, 0), "20:00 GMT"


def test_window_across_the_autumn_change_keeps_wall_clock_hours() -> None:
    evening = local(LONDON, 2026, 10, 24, 21, 0)  # 21:00 BST, 20:00 UTC
    opening = next_opening(evening, DEFAULT, LONDON)
    assert opening == utc(2026, 10, 25, 8, 0), f"08:00 GMT is 08:00 UTC, got {opening}"
    assert opening - evening == timedelta(hours=12), "one night-time hour is gained"
    # Both 01:30s of the repeated hour close at 20:00 BST the evening before.
    for night in (utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)):
        assert previous_closing(night, DEFAULT, LONDON) == utc(2026, 10, 24, 19, 0), night
        assert next_opening(night, DEFAULT, LONDON) == utc(2026, 10, 25, 8, 0), night


def test_window_across_new_york_changes() -> None:
    spring = local(NEW_YORK, 2026, 3, 7, 22, 0)  # EST
    assert next_opening(spring, DEFAULT, NEW_YORK) == utc(2026, 3, 8, 12, 0), "08:00 EDT"
    autumn = local(NEW_YORK, 2026, 10, 31, 22, 0)  # EDT
    assert next_opening(autumn, DEFAULT, NEW_YORK) == utc(2026, 11, 1, 13, 0), "08:00 EST"
    assert previous_closing(utc(2026, 11, 1, 6, 30), DEFAULT, NEW_YORK) == utc(2026, 11, 1, 0, 0)


@pytest.mark.parametrize(
    "instant",
    [
        utc(2026, 6, 9, 0, 0),
        utc(2026, 6, 9, 3, 17),
        utc(2026, 3, 29, 1, 30),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 25, 1, 30),
        utc(2026, 12, 31, 23, 59, 59),
    ],
)
def test_always_open_window(instant: datetime) -> None:
    assert ALWAYS.always_open
    for zone in (LONDON, NEW_YORK, ZoneInfo("Pacific/Chatham")):
        assert in_window(instant, ALWAYS, zone), f"{zone.key} {instant}"
        assert next_opening(instant, ALWAYS, zone) == instant, f"{zone.key} {instant}"
        assert previous_closing(instant, ALWAYS, zone) == instant, f"{zone.key} {instant}"


# --- formatting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "text"),
    [
        (date(2026, 12, 10), "Thursday 10 December"),
        (date(2026, 6, 1), "Monday 1 June"),
        (date(2027, 2, 28), "Sunday 28 February"),
    ],
)
def test_format_day(day: date, text: str) -> None:
    assert format_day(day) == text


@pytest.mark.parametrize(
    ("clock", "text"),
    [
        (time(9, 0), "9am"),
        (time(9, 30), "9:30am"),
        (time(14, 15), "2:15pm"),
        (time(12, 0), "midday"),
        (time(0, 0), "midnight"),
        (time(12, 30), "12:30pm"),
        (time(0, 5), "12:05am"),
        (time(23, 59), "11:59pm"),
        (time(13, 0), "1pm"),
    ],
)
def test_format_clock(clock: time, text: str) -> None:
    assert format_clock(clock) == text


def test_iso_local_uses_the_patients_offset_with_seconds() -> None:
    assert iso_local(utc(2026, 6, 9, 17, 0), LONDON) == "2026-06-09T18:00:00+01:00"
    assert iso_local(utc(2026, 12, 10, 9, 30), LONDON) == "2026-12-10T09:30:00+00:00"
    assert iso_local(utc(2026, 6, 9, 17, 0, 0), NEW_YORK) == "2026-06-09T13:00:00-04:00"


# --- REMINDERS_SENDING_WINDOW ----------------------------------------------------------------


def test_parse_sending_window_accepts_hours() -> None:
    assert parse_sending_window("08:00-20:00") == SendingWindow(time(8), time(20))
    assert str(parse_sending_window("08:00-20:00")) == "08:00-20:00"
    always = parse_sending_window("00:00-24:00")
    assert always.always_open
    assert str(always) == "00:00-24:00"


@pytest.mark.parametrize("value", ["8-20", "20:00-08:00", "25:00-26:00", "", "08:00 to 20:00"])
def test_parse_sending_window_refuses_with_the_variable_name(value: str) -> None:
    with pytest.raises(ConfigError, match="REMINDERS_SENDING_WINDOW"):
        parse_sending_window(value)
