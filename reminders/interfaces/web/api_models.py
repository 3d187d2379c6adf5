"""What the API takes and answers: the request and answer models, made from the enrolment
schema so that a field is described once (core/enrolment.py), and the conversions from rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    create_model,
)

from reminders.core.clock import iso_local
from reminders.core.enrolment import (
    SCHEMA,
    required_fields,
)
from reminders.core.parsers import (
    has_control_character,
)
from reminders.core.rendering import Message
from reminders.services import planning
from reminders.store import models

PREFIX = "/api/v1"


# --- what is sent --------------------------------------------------------------------------


def _printable(value: str) -> str:
    # The core's check, in words for a booking system's developer rather than for staff typing.
    if has_control_character(value):
        raise ValueError("must not contain control characters such as line breaks")
    return value


Text = Annotated[StrictStr, AfterValidator(_printable)]


class EnrolmentBody(BaseModel):
    """What the request models made from the schema share: unknown fields are refused, and the
    fields sent are read as text."""

    model_config = ConfigDict(extra="forbid")

    def values(self) -> dict[str, str | None]:
        """The fields that were sent, as the text `parse_fields` reads; None for a `null`."""
        values: dict[str, str | None] = {}
        for name in self.model_fields_set:
            value = getattr(self, name)
            if isinstance(value, bool):
                value = "true" if value else "false"
            values[name] = None if value is None else str(value)
        return values


# JSON values the API takes besides text, strictly: a JSON 1 is not a yes.
_STRICT: dict[type, Any] = {bool: StrictBool, int: StrictInt}


def _request_model(name: str, doc: str, *, required: Sequence[str]) -> type[EnrolmentBody]:
    definitions: dict[str, Any] = {}
    for spec in SCHEMA:
        taken: Any = Text if spec.kind.json is None else _STRICT[spec.kind.json] | Text
        described, examples = spec.kind.format, list(spec.examples)
        if spec.name in required:
            definitions[spec.name] = (taken, Field(description=described, examples=examples))
        else:
            definitions[spec.name] = (
                taken | None,
                Field(default=None, description=described, examples=examples),
            )
    return create_model(name, __base__=EnrolmentBody, __doc__=doc, **definitions)


# Made from the schema at import, so the type checker sees only what the handlers use of them.
if TYPE_CHECKING:
    EnrolmentChanges = EnrolmentBody
    NewEnrolment = EnrolmentBody
else:
    EnrolmentChanges = _request_model(
        "EnrolmentChanges",
        "Enrolment fields, named as in the Contracts. Text as the CLI and CSV take it; sedation\n"
        "may also be a JSON boolean and the day counts JSON integers. `null` removes a field.",
        required=(),
    )
    NewEnrolment = _request_model(
        "NewEnrolment",
        "A booking system's enrolment. `booking_ref` is required, so that a retry updates the\n"
        "enrolment it made instead of making a second.",
        required=required_fields(from_system=True),
    )


# --- what is answered ----------------------------------------------------------------------


# Strings, not datetimes: pydantic would write a UTC offset as "Z", and the Contract's format is
# the patient's own offset written out, `2026-06-09T18:00:00+01:00`.
_LOCAL_TIME = "ISO 8601 with seconds, in the patient's own UTC offset"


def _answer_model() -> type[BaseModel]:
    # A field is answered as null only when its column may be empty: language and timezone
    # always have a value once stored, though a request may leave them out.
    tables = {"patient": models.Patient.__table__, "enrolment": models.Enrolment.__table__}
    definitions: dict[str, Any] = {}
    for spec in SCHEMA:
        if tables[spec.stored.row].c[spec.stored.column].nullable:
            definitions[spec.name] = (str | None, None)
        else:
            definitions[spec.name] = (str, ...)
    return create_model(
        "EnrolmentFields",
        __doc__="The enrolment as it is stored, in the text form the API and CSV accept back.",
        **definitions,
    )


if TYPE_CHECKING:
    EnrolmentFields = BaseModel
else:
    EnrolmentFields = _answer_model()


class EnrolmentLinks(BaseModel):
    self: str
    reminders: str
    cancel: str


class EnrolmentOut(BaseModel):
    id: int
    booking_ref: str
    status: Literal["active", "cancelled", "completed"]
    procedure: str
    starts_at: str = Field(description=_LOCAL_TIME, json_schema_extra={"format": "date-time"})
    fields: EnrolmentFields
    warnings: list[str] = Field(
        default_factory=list,
        description="For staff, about this change (a reminder already too late to send); "
        "only on a write",
    )
    links: EnrolmentLinks


_WORDS = (
    "as sent, or for a pending reminder as it would be written now (its words are written as "
    "it is sent); null for one that never went, or whose words cannot be written (then "
    "`error_message` says why)"
)


class ReminderOut(BaseModel):
    id: int
    rule: str
    channel: Literal["sms", "email"]
    send_at: str = Field(description=_LOCAL_TIME, json_schema_extra={"format": "date-time"})
    state: Literal["scheduled", "queued", "sending", "sent", "failed", "cancelled", "skipped"]
    cancel_reason: str | None
    is_correction: bool
    delivery_status: Literal["queued", "sent", "delivered", "undelivered", "failed"] | None
    transport: str | None
    subject: str | None = Field(description="An email's subject; " + _WORDS)
    body: str | None = Field(description="The text (an email's plain-text part); " + _WORDS)
    sent_at: str | None = Field(description=_LOCAL_TIME, json_schema_extra={"format": "date-time"})
    error_code: str | None
    error_message: str | None


def enrolment_out(row: models.Enrolment, warnings: Sequence[str] = ()) -> EnrolmentOut:
    zone = ZoneInfo(row.timezone)
    here = f"{PREFIX}/enrolments/{row.id}"
    return EnrolmentOut(
        id=row.id,
        booking_ref=row.booking_ref,
        status=row.status,
        procedure=row.procedure,
        starts_at=iso_local(row.starts_at, zone),
        fields=EnrolmentFields.model_validate(planning.as_enrolment(row).as_fields()),
        warnings=list(warnings),
        links=EnrolmentLinks(self=here, reminders=f"{here}/reminders", cancel=f"{here}/cancel"),
    )


def reminder_out(
    reminder: models.Reminder, zone: ZoneInfo, words: Message | str | None
) -> ReminderOut:
    message = words if isinstance(words, Message) else None
    return ReminderOut(
        id=reminder.id,
        rule=reminder.rule,
        channel=reminder.channel,
        send_at=iso_local(reminder.send_at, zone),
        state=reminder.state,
        cancel_reason=reminder.cancel_reason,
        is_correction=reminder.is_correction,
        delivery_status=reminder.delivery_status,
        transport=reminder.transport,
        subject=message.subject if message else None,
        body=message.body if message else None,
        sent_at=iso_local(reminder.sent_at, zone) if reminder.sent_at else None,
        error_code=reminder.error_code,
        error_message=words if isinstance(words, str) else reminder.error_message,
    )
