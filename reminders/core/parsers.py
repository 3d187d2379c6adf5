"""One parser for each kind of value that people and booking systems type: time zones, yes or
no, clock times, dates, phone numbers, email addresses and booking references, and the one check
for control characters.

Each raises ValueError whose words say what to fix; the caller adds where the value came from
(an enrolment field, an environment variable, a protocol file), so the same value is refused in
the same words wherever it was typed. Pure: nothing here reads settings or the database.
"""

from __future__ import annotations

import re
from datetime import date, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from email_validator import EmailNotValidError, validate_email

_YEARS = (2000, 2100)  # outside this, a typo rather than a booking
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The one vocabulary for yes and no, the Contract's for `sedation`; environment variables such
# as SMTP_STARTTLS take the same words, so a setting reads like a field.
_TRUE, _FALSE = ("true", "yes"), ("false", "no")
_MOBILE = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)

# A booking reference: what booking systems send, and safe in a URL, a file name and a CSV cell.
# Given as a pattern and a length so the API's document can state the same rule.
BOOKING_REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9/_.-]*$"
BOOKING_REF_MAX_LENGTH = 64
BOOKING_REF_RULE = f"use letters, digits and - / _ . only, at most {BOOKING_REF_MAX_LENGTH}"
_BOOKING_REF = re.compile(BOOKING_REF_PATTERN)


def parse_timezone(value: str) -> ZoneInfo:
    try:
        return ZoneInfo(value)
    # OSError: a directory of the zone database ("Etc") or a name too long for a file name.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"{value!r} is not a known time zone; use an IANA name such as Europe/London"
        ) from None


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{value!r} is not one of true, false, yes, no")


def parse_clock(value: str) -> time:
    """A local wall-clock time, HH:MM in 24 hours (9:30 is read as 09:30)."""
    match = _CLOCK.fullmatch(value.strip())
    if match and int(match[1]) < 24 and int(match[2]) < 60:
        return time(int(match[1]), int(match[2]))
    raise ValueError(f"{value!r} is not a time; write HH:MM in 24-hour local time, such as 09:30")


def parse_date(value: str) -> date:
    if _DATE.fullmatch(value.strip()):
        try:
            parsed = date.fromisoformat(value.strip())
        except ValueError:
            pass
        else:
            if not _YEARS[0] <= parsed.year <= _YEARS[1]:
                raise ValueError(f"{value!r} is not a plausible procedure date")
            return parsed
    raise ValueError(f"{value!r} is not a date; write YYYY-MM-DD, such as 2026-06-10")


def parse_phone(value: str) -> str:
    """A UK or international mobile number in E.164; landlines are refused (SMS cannot reach
    them). The number is never echoed back, so errors can be logged safely."""
    try:
        number = phonenumbers.parse(value, "GB")
    except phonenumbers.NumberParseException:
        raise ValueError(
            "this is not a phone number; write it as 07911 123456 or +447911123456"
        ) from None
    # A mobile type is only ever found for a valid number, so a mobile needs no other check
    # (a CSV import checks a hundred thousand).
    kind = phonenumbers.number_type(number)
    if kind not in _MOBILE and not phonenumbers.is_valid_number(number):
        raise ValueError("this is not a valid phone number; check the digits")
    if kind not in _MOBILE:
        raise ValueError(
            "this is not a mobile number, so it cannot receive texts; give a mobile, "
            "or leave phone empty and give an email"
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def parse_email(value: str) -> str:
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"this is not a usable email address ({exc})") from None


def parse_booking_ref(value: str) -> str:
    if len(value) > BOOKING_REF_MAX_LENGTH or not _BOOKING_REF.fullmatch(value):
        raise ValueError(BOOKING_REF_RULE)
    return value


def has_control_character(value: str) -> bool:
    """A NUL, a line break or a stray escape, most often from a copy and paste: PostgreSQL
    refuses NUL in text outright, a line break in a name breaks an SMS's layout, and no value a
    person types here needs one."""
    return _CONTROL.search(value) is not None
