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
import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal
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

Row = Literal["patient", "enrolment"]


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Kind:
    """What sort of value a field holds: how it is written as text (what `parse_fields` reads
    back), what a form asks for it with, what the API takes besides text, and how it is kept in
    its column."""

    write: Callable[[Any], str] = str
    input: str = "text"  # the form's <input type>, or "select"
    format: str | None = None  # the text's format, for the API's document
    json: type | None = None  # bool or int: a JSON value the API takes as well as text
    wrong_json: str | None = None  # what the API says about a value of the wrong JSON type
    bounds: tuple[int, int] | None = None  # the least and the most a number may be
    to_column: Callable[[Any], object] = _same
    from_column: Callable[[Any], object] = _same


MAX_PLAN_DAYS = 60  # a clinician's hold or restart, in days

TEXT = Kind()
PHONE = Kind(input="tel")
EMAIL = Kind(input="email")
PROCEDURE = Kind(input="select")  # one of the unit's procedures, known only from its config
CHOICE = Kind(input="select")
DATE = Kind(write=dt.date.isoformat, input="date", format="YYYY-MM-DD")
CLOCK = Kind(write=lambda clock: clock.strftime("%H:%M"), input="time", format="HH:MM, local")
ZONE = Kind(write=lambda zone: zone.key, to_column=lambda zone: zone.key, from_column=ZoneInfo)
YES_NO = Kind(
    write=lambda flag: "yes" if flag else "no", input="select", json=bool,
    wrong_json="give true or false",
)  # fmt: skip
DAYS = Kind(
    input="number", json=int, wrong_json="give a whole number of days", bounds=(0, MAX_PLAN_DAYS)
)


class Need(enum.Enum):
    OPTIONAL = "optional"
    REQUIRED = "required"
    # Required from booking systems (the API, CSV files), so that sending the same enrolment
    # again updates it instead of making a second; staff and the CLI may have one made.
    FROM_SYSTEMS = "required from booking systems"


@dataclass(frozen=True)
class Stored:
    """Where a field is kept: a column of the patient's row or of the enrolment's."""

    row: Row
    column: str


def on_patient(column: str) -> Stored:
    return Stored("patient", column)


def on_enrolment(column: str) -> Stored:
    return Stored("enrolment", column)


@dataclass(frozen=True)
class Group:
    """Fields the form shows together, under a legend and a word of explanation."""

    legend: str
    hint: str


@dataclass(frozen=True)
class EnrolmentField:
    name: str  # as in the Contracts: the CLI flag, the CSV column, the API's JSON key
    label: str  # what staff read beside it on the form
    parse: Callable[[str], object]  # stripped, non-empty text to the value; ValueError says why
    stored: Stored
    kind: Kind = TEXT
    # For staff, beside the form's field; `{default_timezone}` is filled in with the unit's.
    hint: str | None = None
    examples: tuple[object, ...] = ()  # for the API's document and the CLI's help
    need: Need = Need.OPTIONAL
    # Whether a new value changes what the patient receives, so that an update replans. Every
    # field but the booking reference (which an update never changes) does today; an update
    # that changes only fields that do not is taken as no change by `services.enrolments`,
    # so such a field needs storing there first (tests/test_services.py tries every field).
    changes_schedule: bool = True
    option: str | None = None  # its own option on `reminders enrol` and `preview`
    choices: tuple[str, ...] = ()  # the values a CHOICE may take
    unset: str = "Not given"  # what a form's list offers for no value
    group: Group | None = None


_MAX_NAME = 200
_MAX_LANGUAGE = 35  # the column's width; BCP 47 tags in use are far shorter
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")
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
    if not _DRUG.fullmatch(value):
        raise ValueError(f"{value!r} does not look like a medicine's name")
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
        hint="The patient's local time.", examples=("09:30",), need=Need.REQUIRED,
    ),
    EnrolmentField(
        "timezone", "Patient's time zone", parse_timezone, on_enrolment("timezone"), kind=ZONE,
        hint="Leave blank for {default_timezone}.", examples=("Europe/London",), option="--tz",
    ),
    EnrolmentField(
        "arrival", "Arrival time", parse_clock, on_enrolment("arrival"), kind=CLOCK,
        hint="Optional. Fasting counts back from it when given.", examples=("08:30",),
        option="--arrival",
    ),
    EnrolmentField(
        "sedation", "Sedation", parse_bool, on_enrolment("sedation"), kind=YES_NO,
        examples=(True, "no"), unset="As usual for this procedure",
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
            None if spec.kind.to_column is _same else spec.kind.to_column,
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
    arrival, start = parsed.get("arrival"), parsed.get("time")
    if arrival is not None and start is not None and arrival > start:
        problems.append("arrival: must be no later than the procedure time")
    if problems:
        raise InvalidEnrolment(problems)
    return Enrolment(**{"timezone": default_timezone, **parsed})
