"""What an enrolment field is: its kind of value (how it is written back, asked for on a form,
taken by the API, kept in its column), whether it is needed, and where it is stored. The fields
themselves are `SCHEMA` in `enrolment`."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo

Row = Literal["patient", "enrolment"]


def unchanged(value: Any) -> Any:
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
    to_column: Callable[[Any], object] = unchanged
    from_column: Callable[[Any], object] = unchanged


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
    on_form: bool = True  # False for a field kept only for what booking systems already send
