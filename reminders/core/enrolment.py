"""An enrolment as the schedule sees it, and the one schema of its fields.

CLI flags, CSV columns and API JSON all carry the same field names (PRODUCT.md, Contracts).
`SCHEMA` says everything about each field once: its name, what staff read on the form, how it is
parsed and written back, where it is stored, whether it changes the schedule, whether it is
required. The field list, `parse_fields`, `Enrolment.as_fields`, the stored columns, the API's
models, the CLI's options, the CSV columns and the staff form are all made from it, so adding a
field is one entry here, its attribute on `Enrolment` and its column (tests/test_enrolment.py
checks that these agree). Every value comes through `parse_fields`, so it is refused the same
way, with the same words, wherever it was typed.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

from reminders.core.fields import (
    CHOICE,
    CLOCK,
    DATE,
    DAYS,
    EMAIL,
    MAX_PLAN_DAYS,
    PHONE,
    PROCEDURE,
    YES_NO,
    ZONE,
    EnrolmentField,
    Group,
    Need,
    Row,
    on_enrolment,
    on_patient,
    unchanged,
)
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
from reminders.core.protocols import ANAESTHESIA, Protocol

_MAX_NAME = 200
_MAX_LANGUAGE = 35  # the column's width; BCP 47 tags in use are far shorter
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")
# A medicine's name, as short as a text message can carry among its instructions: names in use
# (with a strength, "rivaroxaban 20mg") are far shorter.
_MAX_DRUG = 40
_DRUG = re.compile(r"[A-Za-z][A-Za-z0-9 ()'.-]{1,99}")


def _parse_name(value: str) -> str:
    if len(value) > _MAX_NAME:
        raise ValueError(f"at most {_MAX_NAME} characters")
    return value


def _parse_language(value: str) -> str:
    if len(value) > _MAX_LANGUAGE or not _LANGUAGE.fullmatch(value):
        raise ValueError(f"{value!r} is not a BCP 47 tag such as en-GB")
    return value


def _parse_drug(value: str) -> str:
    if len(value) > _MAX_DRUG:
        raise ValueError(
            f"at most {_MAX_DRUG} characters, so that the texts can carry it; give the "
            "medicine's name only, such as warfarin"
        )
    if not _DRUG.fullmatch(value):
        raise ValueError(f"{value!r} does not look like a medicine's name")
    return value


def _parse_anaesthesia(value: str) -> str:
    lowered = value.lower()
    if lowered not in ANAESTHESIA:
        raise ValueError(f"{value!r} is not one of {', '.join(ANAESTHESIA)}")
    return lowered


_MAX_REASON = 500


def _parse_reason(value: str) -> str:
    if len(value) > _MAX_REASON:
        raise ValueError(f"at most {_MAX_REASON} characters")
    return value


def _parse_days(value: str) -> int:
    # isascii: str.isdigit also says yes to "²", which int() refuses.
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_PLAN_DAYS:
        raise ValueError(f"{value!r} is not a whole number of days from 0 to {MAX_PLAN_DAYS}")
    return int(value)


_BLOOD_THINNER = Group(
    "Blood thinner",
    "Fill in the hold days only when a clinician has ordered it. Without them, the patient is "
    "told to speak to the team and not to stop on their own.",
)

SCHEMA: tuple[EnrolmentField, ...] = (
    EnrolmentField(
        "booking_ref", "Booking reference", parse_booking_ref, on_enrolment("booking_ref"),
        hint="From the booking system. Leave blank to have one made.",
        examples=("BK-20260610-0042",), need=Need.FROM_SYSTEMS,
        option="--booking-ref",
    ),
    EnrolmentField(
        "name", "Patient's full name", _parse_name, on_patient("name"),
        examples=("Alex Smith",), need=Need.REQUIRED, option="--name",
    ),
    EnrolmentField(
        "phone", "Mobile number", parse_phone, on_patient("phone"), kind=PHONE,
        hint="A UK mobile, such as 07911 100001, or +44…",
        examples=("07911 123456", "+447911123456"), option="--phone",
    ),
    EnrolmentField(
        "email", "Email address", parse_email, on_patient("email"), kind=EMAIL,
        hint="At least one of mobile and email.", examples=("alex.smith@example.org",),
        option="--email",
    ),
    EnrolmentField(
        "language", "Language", _parse_language, on_patient("language"),
        hint="Leave blank for en-GB.", examples=("en-GB",), option="--language",
    ),
    EnrolmentField(
        # Checked against the unit's procedures in `parse_fields`: they come from its config.
        "procedure", "Procedure", str, on_enrolment("procedure"), kind=PROCEDURE,
        examples=("sacroplasty",), need=Need.REQUIRED, option="--procedure",
        unset="Choose a procedure",
    ),
    EnrolmentField(
        "date", "Date", parse_date, on_enrolment("local_date"), kind=DATE,
        examples=("2030-06-10",), need=Need.REQUIRED,
    ),
    EnrolmentField(
        "time", "Start time", parse_clock, on_enrolment("local_time"), kind=CLOCK,
        hint="On the unit's clock ({default_timezone}).", examples=("09:30",), need=Need.REQUIRED,
    ),
    EnrolmentField(
        "timezone", "Patient's time zone", parse_timezone, on_enrolment("timezone"), kind=ZONE,
        hint="Where the patient will be: their messages keep their clock. Leave blank for "
        "{default_timezone}.",
        examples=("Europe/London",), option="--tz",
    ),
    EnrolmentField(
        "arrival", "Arrival time", parse_clock, on_enrolment("arrival"), kind=CLOCK,
        hint="Optional. Fasting counts back from it when given.", examples=("08:30",),
        option="--arrival",
    ),
    EnrolmentField(
        # The older way to say it: true means sedation, false a local anaesthetic.
        "sedation", "Sedation", parse_bool, on_enrolment("sedation"), kind=YES_NO,
        examples=(True, "no"), unset="As usual for this procedure", on_form=False,
    ),
    EnrolmentField(
        "anaesthesia", "Anaesthetic", _parse_anaesthesia, on_enrolment("anaesthesia"),
        kind=CHOICE, choices=ANAESTHESIA, examples=("sedation",),
        hint="Local, sedation or general; fasting and after-care advice follow it.",
        unset="As usual for this procedure",
    ),
    EnrolmentField(
        # Checked against the procedure's own joints in `parse_fields`.
        "joint", "Joint", str, on_enrolment("joint"), kind=CHOICE,
        choices=("knee", "hip", "shoulder"), hint="Joint denervation only.", examples=("knee",),
    ),
    EnrolmentField(
        "anticoagulant", "Medicine", _parse_drug, on_enrolment("anticoagulant"),
        hint="Such as apixaban or warfarin.", examples=("warfarin",), group=_BLOOD_THINNER,
    ),
    EnrolmentField(
        "anticoagulant_hold_days", "Days to stop before", _parse_days,
        on_enrolment("anticoagulant_hold_days"), kind=DAYS, hint="0 means keep taking it.",
        examples=(5,), group=_BLOOD_THINNER,
    ),
    EnrolmentField(
        "anticoagulant_restart_days", "Days after to restart", _parse_days,
        on_enrolment("anticoagulant_restart_days"), kind=DAYS,
        hint="0 means the evening of the procedure.", examples=(0,), group=_BLOOD_THINNER,
    ),
    EnrolmentField(
        "anticoagulant_hold_reason", "Reason for a shorter hold", _parse_reason,
        on_enrolment("anticoagulant_hold_reason"),
        hint="Only when the clinician chose a hold shorter than the procedure's minimum.",
        examples=("Mechanical heart valve: haematology advised 3 days",), group=_BLOOD_THINNER,
    ),
)  # fmt: skip

FIELDS = tuple(spec.name for spec in SCHEMA)


class InvalidEnrolment(ValueError):
    """One or more fields are wrong; `problems` holds one "field: what to fix" per field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Enrolment:
    """One attribute for each field of `SCHEMA`, typed, for the schedule to read."""

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
    anaesthesia: str | None = None  # local, sedation or general; None: the procedure's
    sedation: bool | None = None  # the older field: anaesthesia is derived from it if not given
    joint: str | None = None
    anticoagulant: str | None = None
    anticoagulant_hold_days: int | None = None
    anticoagulant_restart_days: int | None = None
    anticoagulant_hold_reason: str | None = None  # a clinician's reason for a short hold
    enrolled_at: dt.datetime | None = field(default=None, compare=False)

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(c for c, contact in (("sms", self.phone), ("email", self.email)) if contact)

    def with_changes(self, **changes: object) -> Enrolment:
        return replace(self, **changes)  # type: ignore[arg-type]

    def as_fields(self) -> dict[str, str]:
        """The enrolment as field values that `parse_fields` reads back to an equal one: what an
        edit form is filled with, and what a partial API update is merged into. Fields not
        given are left out."""
        values = ((spec, getattr(self, spec.name)) for spec in SCHEMA)
        return {spec.name: spec.kind.write(value) for spec, value in values if value is not None}

    def columns(self, row: Row) -> dict[str, object]:
        """The fields kept on the patient's or the enrolment's row, by column."""
        values: dict[str, object] = {}
        for name, column, convert in _COLUMNS[row]:
            value = getattr(self, name)
            values[column] = value if convert is None or value is None else convert(value)
        return values

    @classmethod
    def from_columns(
        cls, patient: object, enrolment: object, *, enrolled_at: dt.datetime | None
    ) -> Enrolment:
        """The enrolment kept in these rows (a patient's and an enrolment's, or anything with
        their columns as attributes)."""
        rows: dict[Row, object] = {"patient": patient, "enrolment": enrolment}
        values: dict[str, Any] = {}
        for spec in SCHEMA:
            value = getattr(rows[spec.stored.row], spec.stored.column)
            values[spec.name] = None if value is None else spec.kind.from_column(value)
        return cls(**values, enrolled_at=enrolled_at)


# Each row's fields, column and conversion (None: kept as it is), worked out once: the CSV import
# asks for the columns of a hundred thousand enrolments.
_COLUMNS: dict[Row, tuple[tuple[str, str, Callable[[Any], object] | None], ...]] = {
    row: tuple(
        (
            spec.name,
            spec.stored.column,
            None if spec.kind.to_column is unchanged else spec.kind.to_column,
        )
        for spec in SCHEMA
        if spec.stored.row == row
    )
    for row in ("patient", "enrolment")
}


def _required(spec: EnrolmentField, *, from_system: bool) -> bool:
    return spec.need is Need.REQUIRED or (from_system and spec.need is Need.FROM_SYSTEMS)


def required_fields(*, from_system: bool) -> tuple[str, ...]:
    """The fields that must be given: by a booking system (an API call, a CSV file), or by
    staff and the CLI."""
    return tuple(spec.name for spec in SCHEMA if _required(spec, from_system=from_system))


def parse_fields(
    values: Mapping[str, str | None],
    *,
    protocols: Mapping[str, Protocol],
    default_timezone: ZoneInfo,
    require_booking_ref: bool = False,
) -> Enrolment:
    """Check every field and build an `Enrolment`, or raise `InvalidEnrolment` listing every
    problem at once (booking staff fix a row in one go, not one error at a time).
    `require_booking_ref`: the values come from a booking system (see `Need.FROM_SYSTEMS`)."""
    problems: list[str] = []
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        problems.append(f"unknown field {', '.join(unknown)} (known: {', '.join(FIELDS)})")
    given = {k: v.strip() for k, v in values.items() if k in FIELDS and v and v.strip()}
    parsed: dict[str, Any] = {}
    for spec in SCHEMA:
        text = given.get(spec.name)
        if text is None:
            if _required(spec, from_system=require_booking_ref):
                problems.append(f"{spec.name}: required")
        elif has_control_character(text):
            problems.append(f"{spec.name}: contains a control character; type it again")
        else:
            try:
                parsed[spec.name] = spec.parse(text)
            except ValueError as exc:
                problems.append(f"{spec.name}: {exc}")

    # What one field allows depends on another, or on the unit's procedures.
    protocol = protocols.get(parsed.get("procedure", ""))
    if "procedure" in parsed and protocol is None:
        problems.append(
            f"procedure: {parsed['procedure']!r} is not a known procedure "
            f"(known: {', '.join(sorted(protocols))})"
        )
    if "phone" not in given and "email" not in given:
        problems.append("phone or email: give at least one, so the patient can be reached")
    joint = parsed.get("joint")
    if joint is not None and protocol is not None:
        if not protocol.joints:
            problems.append(f"joint: {protocol.procedure} does not take a joint")
        elif joint not in protocol.joints:
            problems.append(f"joint: {joint!r} is not one of {', '.join(protocol.joints)}")
    if "anticoagulant_hold_days" in given and "anticoagulant" not in given:
        problems.append("anticoagulant_hold_days: give the drug in anticoagulant too")
    if "anticoagulant_restart_days" in given and "anticoagulant_hold_days" not in given:
        problems.append(
            "anticoagulant_restart_days: only with a clinician's plan (anticoagulant_hold_days)"
        )
    sedation, anaesthesia = parsed.get("sedation"), parsed.get("anaesthesia")
    if sedation is not None and anaesthesia is not None:
        # Either may be given; the facts read `sedation` when `anaesthesia` is not.
        said = "sedation" if sedation else "local"
        if anaesthesia != said:
            problems.append(
                f"sedation: says {said} but anaesthesia says {anaesthesia}; give anaesthesia only"
            )
    if "anticoagulant_hold_reason" in given and "anticoagulant_hold_days" not in given:
        problems.append(
            "anticoagulant_hold_reason: only with a clinician's plan (anticoagulant_hold_days)"
        )
    arrival, start = parsed.get("arrival"), parsed.get("time")
    if arrival is not None and start is not None and arrival > start:
        problems.append("arrival: must be no later than the procedure time")
    if problems:
        raise InvalidEnrolment(problems)
    return Enrolment(**{"timezone": default_timezone, **parsed})
