"""An enrolment as the schedule sees it, and the one parser of enrolment fields.

CLI flags, CSV columns and API JSON all carry the same field names (PRODUCT.md, Contracts), and all
come through `parse_fields`, so a value is refused the same way, with the same words, wherever it
was typed.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from reminders.core.protocols import Protocol

FIELDS = (
    "booking_ref",
    "name",
    "phone",
    "email",
    "language",
    "procedure",
    "date",
    "time",
    "timezone",
    "arrival",
    "sedation",
    "joint",
    "anticoagulant",
    "anticoagulant_hold_days",
    "anticoagulant_restart_days",
)

_MAX_PLAN_DAYS = 60
_YEARS = (2000, 2100)  # outside this, a typo rather than a booking


class InvalidEnrolment(ValueError):
    """One or more fields are wrong; `problems` holds one "field: what to fix" per field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Enrolment:
    name: str
    procedure: str
    date: dt.date
    time: dt.time
    timezone: ZoneInfo
    booking_ref: str | None = None
    phone: str | None = None  # E.164
    email: str | None = None
    language: str = "en-GB"
    arrival: dt.time | None = None
    sedation: bool | None = None  # None: the procedure's default
    joint: str | None = None
    anticoagulant: str | None = None
    anticoagulant_hold_days: int | None = None
    anticoagulant_restart_days: int | None = None
    enrolled_at: dt.datetime | None = field(default=None, compare=False)

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(c for c, contact in (("sms", self.phone), ("email", self.email)) if contact)

    def with_changes(self, **changes: object) -> Enrolment:
        return replace(self, **changes)  # type: ignore[arg-type]

    def as_fields(self) -> dict[str, str]:
        """The enrolment as field values that `parse_fields` reads back to an equal one: what an
        edit form is filled with, and what a partial API update is merged into. Fields left at
        their default are left out."""
        values: dict[str, object | None] = {
            "booking_ref": self.booking_ref,
            "name": self.name,
            "phone": self.phone,
            "email": self.email,
            "language": self.language,
            "procedure": self.procedure,
            "date": self.date.isoformat(),
            "time": self.time.strftime("%H:%M"),
            "timezone": self.timezone.key,
            "arrival": self.arrival.strftime("%H:%M") if self.arrival else None,
            "sedation": None if self.sedation is None else ("yes" if self.sedation else "no"),
            "joint": self.joint,
            "anticoagulant": self.anticoagulant,
            "anticoagulant_hold_days": self.anticoagulant_hold_days,
            "anticoagulant_restart_days": self.anticoagulant_restart_days,
        }
        return {key: str(value) for key, value in values.items() if value is not None}


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")
_BOOKING_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9/_.-]{0,63}$")
_DRUG = re.compile(r"^[A-Za-z][A-Za-z0-9 ()'.-]{1,99}$")
_TRUE, _FALSE = {"true", "yes"}, {"false", "no"}
_MOBILE = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)


def parse_date(value: str) -> date:
    if _DATE.match(value):
        try:
            parsed = date.fromisoformat(value)
        except ValueError:
            pass
        else:
            if not _YEARS[0] <= parsed.year <= _YEARS[1]:
                raise ValueError(f"{value!r} is not a plausible procedure date")
            return parsed
    raise ValueError(f"{value!r} is not a date; write YYYY-MM-DD, such as 2026-06-10")


def parse_clock(value: str) -> time:
    match = _CLOCK.match(value)
    if match and int(match[1]) < 24 and int(match[2]) < 60:
        return time(int(match[1]), int(match[2]))
    raise ValueError(f"{value!r} is not a time; write HH:MM in 24-hour local time, such as 09:30")


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


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{value!r} is not one of true, false, yes, no")


def _parse_days(value: str) -> int:
    if not value.strip().isdigit() or int(value) > _MAX_PLAN_DAYS:
        raise ValueError(f"{value!r} is not a whole number of days from 0 to {_MAX_PLAN_DAYS}")
    return int(value)


def parse_timezone(value: str) -> ZoneInfo:
    try:
        return ZoneInfo(value)
    # OSError: a directory of the zone database ("Etc") or a name too long for a file name.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"{value!r} is not a known time zone; use an IANA name such as Europe/London"
        ) from None


def parse_fields(
    values: Mapping[str, str | None],
    *,
    protocols: Mapping[str, Protocol],
    default_timezone: ZoneInfo,
    require_booking_ref: bool = False,
) -> Enrolment:
    """Check every field and build an `Enrolment`, or raise `InvalidEnrolment` listing every
    problem at once (booking staff fix a row in one go, not one error at a time)."""
    problems: list[str] = []
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        problems.append(f"unknown field {', '.join(unknown)} (known: {', '.join(FIELDS)})")
    raw = {k: v.strip() for k, v in values.items() if k in FIELDS and v and v.strip()}
    for name, value in list(raw.items()):
        if _CONTROL.search(value):
            # A NUL or a stray escape from a copy and paste: PostgreSQL refuses NUL outright,
            # and no field of an enrolment needs one.
            problems.append(f"{name}: contains a control character; type it again")
            del raw[name]
    parsed: dict[str, object] = {}

    def take(name: str, parse: object) -> None:
        if name in raw:
            try:
                parsed[name] = parse(raw[name])  # type: ignore[operator]
            except ValueError as exc:
                problems.append(f"{name}: {exc}")

    for name in ("name", "procedure", "date", "time"):
        if name not in raw and not any(p.startswith(f"{name}: ") for p in problems):
            problems.append(f"{name}: required")
    if require_booking_ref and "booking_ref" not in raw:
        problems.append("booking_ref: required")
    if "booking_ref" in raw and not _BOOKING_REF.match(raw["booking_ref"]):
        problems.append("booking_ref: use letters, digits and - / _ . only, at most 64")
    if "name" in raw and len(raw["name"]) > 200:
        problems.append("name: at most 200 characters")
    protocol = protocols.get(raw.get("procedure", ""))
    if "procedure" in raw and protocol is None:
        problems.append(
            f"procedure: {raw['procedure']!r} is not a known procedure "
            f"(known: {', '.join(sorted(protocols))})"
        )
    take("date", parse_date)
    take("time", parse_clock)
    take("arrival", parse_clock)
    take("timezone", parse_timezone)
    take("phone", parse_phone)
    take("email", parse_email)
    take("sedation", parse_bool)
    take("anticoagulant_hold_days", _parse_days)
    take("anticoagulant_restart_days", _parse_days)
    if "language" in raw and not _LANGUAGE.match(raw["language"]):
        problems.append(f"language: {raw['language']!r} is not a BCP 47 tag such as en-GB")
    if "phone" not in raw and "email" not in raw:
        problems.append("phone or email: give at least one, so the patient can be reached")

    joint = raw.get("joint")
    if joint is not None and protocol is not None:
        if not protocol.joints:
            problems.append(f"joint: {protocol.procedure} does not take a joint")
        elif joint not in protocol.joints:
            problems.append(f"joint: {joint!r} is not one of {', '.join(protocol.joints)}")
    drug = raw.get("anticoagulant")
    if drug is not None and not _DRUG.match(drug):
        problems.append(f"anticoagulant: {drug!r} does not look like a medicine's name")
    if "anticoagulant_hold_days" in raw and drug is None:
        problems.append("anticoagulant_hold_days: give the drug in anticoagulant too")
    if "anticoagulant_restart_days" in raw and "anticoagulant_hold_days" not in raw:
        problems.append(
            "anticoagulant_restart_days: only with a clinician's plan (anticoagulant_hold_days)"
        )
    arrival, start = parsed.get("arrival"), parsed.get("time")
    if isinstance(arrival, time) and isinstance(start, time) and arrival > start:
        problems.append("arrival: must be no later than the procedure time")
    if problems:
        raise InvalidEnrolment(problems)

    return Enrolment(
        name=raw["name"],
        procedure=raw["procedure"],
        date=parsed["date"],  # type: ignore[arg-type]
        time=parsed["time"],  # type: ignore[arg-type]
        timezone=parsed.get("timezone", default_timezone),  # type: ignore[arg-type]
        booking_ref=raw.get("booking_ref"),
        phone=parsed.get("phone"),  # type: ignore[arg-type]
        email=parsed.get("email"),  # type: ignore[arg-type]
        language=raw.get("language", "en-GB"),
        arrival=arrival,  # type: ignore[arg-type]
        sedation=parsed.get("sedation"),  # type: ignore[arg-type]
        joint=joint,
        anticoagulant=drug,
        anticoagulant_hold_days=parsed.get("anticoagulant_hold_days"),  # type: ignore[arg-type]
        anticoagulant_restart_days=parsed.get("anticoagulant_restart_days"),  # type: ignore[arg-type]
    )
