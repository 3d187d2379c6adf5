"""Local wall-clock arithmetic in a patient's time zone, and British English formatting of it.

Everything here is pure. Times are aware `datetime`s; the schedule works in UTC and comes here to
reason about the patient's calendar.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from reminders.core.errors import ConfigError

_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


@dataclass(frozen=True)
class SendingWindow:
    """Local wall-clock hours in which messages may go out; `end` is inclusive.

    `00:00-24:00` means "any time" and is represented by `start == time.min, end is None`.
    """

    start: time
    end: time | None

    @property
    def always_open(self) -> bool:
        return self.start == time.min and self.end is None

    def __str__(self) -> str:
        end = "24:00" if self.end is None else self.end.strftime("%H:%M")
        return f"{self.start.strftime('%H:%M')}-{end}"


_WINDOW = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


def parse_sending_window(value: str, *, source: str = "REMINDERS_SENDING_WINDOW") -> SendingWindow:
    match = _WINDOW.match(value.strip())
    if not match:
        raise ConfigError(f"{source}: expected HH:MM-HH:MM such as 08:00-20:00, got {value!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
        raise ConfigError(f"{source}: {value!r} is not a valid pair of clock times")
    start = time(h1, m1)
    end = None if h2 == 24 else time(h2, m2)
    if end is not None and end <= start:
        raise ConfigError(f"{source}: the window must end after it starts, got {value!r}")
    return SendingWindow(start, end)


# A pure function asked the same few questions again and again (a day's list has its
# procedures on a few days and times; the sending window opens at 08:00 every day): kept, as a
# CSV import asks it a million times.
@lru_cache(maxsize=16384)
def localize(day: date, clock: time, zone: ZoneInfo, *, fold: int = 0) -> datetime:
    """The instant at which `zone`'s wall clock shows `clock` on `day`.

    Deliberate choices at clock changes: a wall time that does not exist (01:30 on the night the
    clocks go forward) is moved forward by the gap (02:30), because a reminder a little late is
    better than one an hour early at night; a wall time that happens twice (01:30 on the night
    they go back) means the first of the two (unless `fold=1` asks for the second), so nothing
    slips past a deadline.
    """
    naive = datetime.combine(day, clock)
    # fold=0 on a non-existent time uses the offset from before the change; going through UTC
    # then shows the wall time moved forward by the gap, which is the choice above.
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC).astimezone(zone)
    if first.replace(tzinfo=None) != naive:
        return first
    # `fold` lets a wall time copied from a known instant keep which of two it was.
    return naive.replace(tzinfo=zone, fold=fold).astimezone(UTC).astimezone(zone)


def as_local(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone)


def in_window(instant: datetime, window: SendingWindow, zone: ZoneInfo) -> bool:
    if window.always_open:
        return True
    wall = instant.astimezone(zone).time()
    return window.start <= wall and (window.end is None or wall <= window.end)


def next_opening(instant: datetime, window: SendingWindow, zone: ZoneInfo) -> datetime:
    """The first instant at or after `instant` that is inside the window."""
    if in_window(instant, window, zone):
        return instant
    local = instant.astimezone(zone)
    day = local.date() if local.time() < window.start else local.date() + timedelta(days=1)
    return localize(day, window.start, zone).astimezone(UTC)


def previous_closing(instant: datetime, window: SendingWindow, zone: ZoneInfo) -> datetime:
    """The last instant at or before `instant` that is inside the window."""
    if in_window(instant, window, zone):
        return instant
    # A window open until 24:00 closes at the last minute of the day.
    end = window.end or time(23, 59)
    local = instant.astimezone(zone)
    day = local.date() if local.time() > end else local.date() - timedelta(days=1)
    return localize(day, end, zone).astimezone(UTC)


def format_day(day: date) -> str:
    """`Thursday 10 December`: the NHS style for dates in patient letters."""
    return f"{_DAYS[day.weekday()]} {day.day} {_MONTHS[day.month - 1]}"


def format_clock(clock: time) -> str:
    """`9am`, `9:30am`, `2:15pm`, `midday`, `midnight`: the NHS style for times."""
    if clock.hour == 0 and clock.minute == 0:
        return "midnight"
    if clock.hour == 12 and clock.minute == 0:
        return "midday"
    hour = clock.hour % 12 or 12
    suffix = "am" if clock.hour < 12 else "pm"
    minutes = f":{clock.minute:02d}" if clock.minute else ""
    return f"{hour}{minutes}{suffix}"


def format_moment(instant: datetime, zone: ZoneInfo) -> str:
    """`9:30am on Thursday 10 December`, in the patient's zone.

    Midnight is named by the day it ends, `midnight at the end of Wednesday 9 December`:
    "midnight on Thursday" is read by some as the start of Thursday and by others as its end,
    and a fasting or blood-thinner instruction must not be read a day out.
    """
    local = instant.astimezone(zone)
    if local.time() == time(0):
        return f"midnight at the end of {format_day(local.date() - timedelta(days=1))}"
    return f"{format_clock(local.time())} on {format_day(local.date())}"


def iso_local(instant: datetime, zone: ZoneInfo) -> str:
    """ISO 8601 with seconds in the patient's own offset: `2026-06-09T18:00:00+01:00`."""
    return instant.astimezone(zone).isoformat(timespec="seconds")
