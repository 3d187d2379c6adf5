"""Test data: synthetic patients only (UK mobiles in +447911 1xxxxx, addresses at example.org)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from functools import cache
from zoneinfo import ZoneInfo

from paths import PROJECT_ROOT

from reminders.core.clock import parse_sending_window
from reminders.core.enrolment import Enrolment
from reminders.core.protocol_files import load_protocols
from reminders.core.protocols import Protocol

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
DEFAULT_WINDOW = parse_sending_window("08:00-20:00")
ALWAYS_OPEN = parse_sending_window("00:00-24:00")


@cache
def shipped_protocols() -> dict[str, Protocol]:
    return load_protocols(PROJECT_ROOT / "config" / "protocols")


def protocol(slug: str) -> Protocol:
    return shipped_protocols()[slug]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def make_enrolment(
    *,
    procedure: str = "si-joint-denervation",
    on: date = date(2026, 12, 10),
    at: time = time(9, 30),
    zone: ZoneInfo = LONDON,
    name: str = "Siân Jones",
    phone: str | None = "+447911100001",
    email: str | None = "sian.jones@example.org",
    language: str = "en-GB",
    arrival: time | None = None,
    sedation: bool | None = None,
    joint: str | None = None,
    anticoagulant: str | None = None,
    hold_days: int | None = None,
    restart_days: int | None = None,
    enrolled_at: datetime | None = None,
    booking_ref: str = "BK-0001",
) -> Enrolment:
    return Enrolment(
        name=name,
        procedure=procedure,
        date=on,
        time=at,
        timezone=zone,
        booking_ref=booking_ref,
        phone=phone,
        email=email,
        language=language,
        arrival=arrival,
        sedation=sedation,
        joint=joint,
        anticoagulant=anticoagulant,
        anticoagulant_hold_days=hold_days,
        anticoagulant_restart_days=restart_days,
        enrolled_at=enrolled_at,
    )


def make_full_enrolment(*, on: date = date(2026, 12, 10), **changes: object) -> Enrolment:
    """An enrolment with every field of the schema given (a joint-denervation of the knee under
    sedation, with a clinician's plan for apixaban), for tests that every field gets through."""
    return make_enrolment(
        procedure="joint-denervation", on=on, joint="knee", arrival=time(8, 15),
        sedation=True, anticoagulant="Apixaban", hold_days=2, restart_days=1,
    ).with_changes(
        anaesthesia="sedation", anticoagulant_hold_reason="Short hold agreed with haematology",
        **changes,
    )  # fmt: skip
