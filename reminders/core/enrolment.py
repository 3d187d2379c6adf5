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
from datetime import time
from zoneinfo import ZoneInfo

from reminders.core.parsers import (
    has_control_character,
    parse_booking_ref,
    parse_bool,
    parse_clock,
    parse_date,
    parse_email,
    parse_phone,
    parse_timezone,
)
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


_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")
_DRUG = re.compile(r"^[A-Za-z][A-Za-z0-9 ()'.-]{1,99}$")


def _parse_days(value: str) -> int:
    if not value.strip().isdigit() or int(value) > _MAX_PLAN_DAYS:
        raise ValueError(f"{value!r} is not a whole number of days from 0 to {_MAX_PLAN_DAYS}")
    return int(value)


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
        if has_control_character(value):
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
    take("booking_ref", parse_booking_ref)
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
