"""When people answer: the unit's phone (its opening hours, shut on bank holidays) and GP
surgeries. A message that asks a patient to call must not send them to a phone no one answers
without saying when to try, and a procedure booked when the unit is shut is worth a second
look by staff."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import holidays

from reminders.core.clock import SendingWindow, format_clock, format_day, in_window, localize
from reminders.core.protocols import WEEKDAYS, Unit

_SUBDIVISIONS = {"england-and-wales": "ENG", "scotland": "SCT", "northern-ireland": "NIR"}


@cache
def bank_holidays(region: str) -> holidays.HolidayBase:
    return holidays.country_holidays("GB", subdiv=_SUBDIVISIONS[region])


def _open(instant: datetime, unit: Unit, hours: SendingWindow, days: tuple[str, ...]) -> bool:
    zone = ZoneInfo(unit.timezone)
    local = instant.astimezone(zone)
    if WEEKDAYS[local.weekday()] not in days or local.date() in bank_holidays(unit.bank_holidays):
        return False
    return in_window(instant, hours, zone)


def unit_open(instant: datetime, unit: Unit) -> bool:
    return _open(instant, unit, unit.open_hours, unit.open_days)


def gp_open(instant: datetime, unit: Unit) -> bool:
    """Whether GP surgeries are normally open: weekdays in the unit's GP hours, bank holidays
    of the unit's region excepted. Otherwise patients are pointed to NHS 111."""
    return _open(instant, unit, unit.gp_hours, WEEKDAYS[:5])


def unit_opens(instant: datetime, unit: Unit) -> datetime:
    """When the unit's phone is next answered, from `instant` (itself, if open now)."""
    zone = ZoneInfo(unit.timezone)
    if unit_open(instant, unit):
        return instant
    day = instant.astimezone(zone).date()
    for _ in range(370):  # a year of shut days would be a configuration error, caught below
        opening = localize(day, unit.open_hours.start, zone)
        if opening >= instant and unit_open(opening, unit):
            return opening
        day += timedelta(days=1)
    raise ValueError(f"{unit.name} is never open: check open_days and open_hours")


def call_us(
    instant: datetime, unit: Unit, zone: ZoneInfo, *, phone: str | None = None, label: str = ""
) -> str:
    """How a message sent at `instant` asks the patient to phone: when, if the unit is shut.
    `zone` is the patient's, for the day and time shown (with `label` after the time);
    `phone`, the number as they dial it."""
    phone = phone or unit.phone
    if unit_open(instant, unit):
        return f"call us on {phone}"
    opens = unit_opens(instant, unit).astimezone(zone)
    when = f"{format_clock(opens.time())}{label} on {format_day(opens.date())}"
    return f"call us on {phone} from {when}"


def shut_at(start: datetime, unit: Unit) -> str | None:
    """Why the unit is shut at a procedure's start, for a staff warning; None if it is open."""
    zone = ZoneInfo(unit.timezone)
    local = start.astimezone(zone)
    holiday = bank_holidays(unit.bank_holidays).get(local.date())
    if holiday:
        return f"{format_day(local.date())} is a bank holiday ({holiday})"
    if not unit_open(start, unit):
        return f"the unit is shut at {format_clock(local.time())} on {format_day(local.date())}"
    return None
