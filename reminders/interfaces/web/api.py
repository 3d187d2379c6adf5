"""The JSON API for booking systems (PRODUCT.md, Contracts, HTTP), behind bearer tokens.

Handlers only parse, call a service and shape the answer; the rules live in `enrolment` (what a
valid enrolment is) and `services` (what enrolling, rescheduling and cancelling do). Every
refusal has one shape, `{"detail": ..., "problems": [...]}`, whatever refused it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
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
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException

from reminders.config import Config
from reminders.core.clock import iso_local
from reminders.core.enrolment import (
    FIELDS,
    SCHEMA,
    Enrolment,
    InvalidEnrolment,
    parse_fields,
    required_fields,
)
from reminders.core.parsers import (
    BOOKING_REF_MAX_LENGTH,
    BOOKING_REF_PATTERN,
    BOOKING_REF_RULE,
    has_control_character,
)
from reminders.core.rendering import Message
from reminders.interfaces.web.deps import AppConfig, Now
from reminders.services import accounts, enrolments, wording
from reminders.store import models
from reminders.store.db import locked_scope, session_scope

PREFIX = "/api/v1"


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        detail: str,
        problems: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.problems = list(problems)
        self.headers = dict(headers or {})


class Problem(BaseModel):
    """Why a request was refused: `detail` to show a person, `problems` one "field: what to
    fix" each."""

    detail: str
    problems: list[str] = Field(default_factory=list)


def _problem(
    status: int, detail: str, problems: Sequence[str] = (), **headers: str
) -> JSONResponse:
    body = Problem(detail=detail, problems=list(problems)).model_dump()
    return JSONResponse(body, status_code=status, headers=headers or None)


def _refusal(problems: Sequence[str]) -> str:
    return "; ".join(problems)


class ApiRoute(APIRoute):
    """Turns every refusal into a `Problem`. A route class rather than app-wide exception
    handlers, so that the staff pages and webhooks keep their own ways of saying no.

    This runs inside the request's dependencies, so a refusal caught here never reaches a
    session dependency's rollback; that is why the handlers open their own transactions.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_refusals(request: Request) -> Response:
            try:
                return await handle(request)
            except RequestValidationError as exc:
                problems = readable(exc.errors())
                return _problem(422, _refusal(problems), problems)
            except InvalidEnrolment as exc:
                return _problem(422, _refusal(exc.problems), exc.problems)
            except (enrolments.EnrolmentClosed, enrolments.EnrolmentConflict) as exc:
                return _problem(409, str(exc), [str(exc)])
            except enrolments.EnrolmentRefused as exc:
                return _problem(422, str(exc), [str(exc)])
            except ApiError as exc:
                return _problem(exc.status, exc.detail, exc.problems, **exc.headers)
            except HTTPException as exc:
                if exc.status_code != 400:
                    raise
                # FastAPI's answer to a body it could not decode (not UTF-8, say); it is the
                # same mistake as malformed JSON, which FastAPI answers with a 422.
                return _problem(422, _NOT_JSON, [_NOT_JSON])

        return handle_refusals


def readable(errors: Sequence[Any]) -> list[str]:
    """FastAPI's validation errors as "field: what to fix", one per field. The value sent is
    never repeated back: it may be a patient's number, and error bodies end up in logs."""
    problems: dict[str, str] = {}
    for error in errors:
        location = [str(part) for part in error.get("loc", ())]
        where, path = (location[0], location[1:]) if location else ("body", [])
        kind = str(error.get("type", ""))
        # A union (true or "yes") reports once per member; the field's name is enough.
        field = path[0] if path else where
        if kind == "extra_forbidden":
            problems[field] = f"unknown field {field} (known: {', '.join(FIELDS)})"
        elif kind == "json_invalid":
            problems["body"] = _NOT_JSON
        elif not path and where == "body":
            problems["body"] = "body: send a JSON object of enrolment fields"
        elif kind == "missing":
            problems.setdefault(field, f"{field}: required")
        elif field in _HINTS:
            problems.setdefault(field, f"{field}: {_HINTS[field]}")
        elif kind.endswith("_type"):
            problems.setdefault(field, f"{field}: give text (a JSON string)")
        else:
            message = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
            problems.setdefault(field, f"{field}: {message[:1].lower()}{message[1:]}")
    return list(problems.values())


_NOT_JSON = "body: this is not valid JSON in UTF-8"
# What to say about a field whatever is wrong with it: pydantic's own words ("Input should be a
# valid boolean", "String should match pattern ...") are not for a booking clerk.
_HINTS = {
    **{spec.name: spec.kind.wrong_json for spec in SCHEMA if spec.kind.wrong_json},
    "id": "give an enrolment's id, a whole number from 1",
    "booking_ref": BOOKING_REF_RULE,
}


# --- who is calling ------------------------------------------------------------------------

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="BearerToken",
    description="An API token made with `reminders token add --name NAME`.",
)


def booking_system(
    request: Request,
    now: Now,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The actor recorded in the audit log for this request, `api:<token name>`."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise ApiError(
            401, "Send an API token as 'Authorization: Bearer TOKEN'.", headers=challenge
        )
    # Its own short transaction: checking a token records when it was last used, and holding
    # that row's lock for a whole request would make one booking system's requests queue.
    with session_scope(request.app.state.sessions) as session:
        token = accounts.token_for(session, credentials.credentials, now)
        if token is None:
            raise ApiError(
                401, "This API token is not valid or has been revoked.", headers=challenge
            )
        return f"api:{token.name}"


def get_sessions(request: Request) -> sessionmaker[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessions
    return sessions


Actor = Annotated[str, Depends(booking_system)]
# Each handler runs its own transaction: a refusal rolls back as it leaves the block, before
# ApiRoute answers it, and the commit happens before the response is sent, so a client never
# gets a 201 for an enrolment that a failed commit lost. Writes read first (is this booking
# reference known? what are the fields now?), so they take `locked_scope`: on SQLite two at
# once would otherwise both read, and one fail or undo the other.
Sessions = Annotated[sessionmaker[Session], Depends(get_sessions)]


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
        fields=EnrolmentFields.model_validate(enrolments.as_enrolment(row).as_fields()),
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


# --- the routes ----------------------------------------------------------------------------

_REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No API token, or one that is not valid"},
    422: {"model": Problem, "description": "The request is not valid; `problems` says why"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No enrolment with this id"}
}
_CLOSED: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "The enrolment is cancelled or completed"}
}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {
        "model": Problem,
        "description": "The enrolment is cancelled or completed, or another request enrolled "
        "the same booking reference at the same moment (send it again: it updates that one)",
    }
}

router = APIRouter(
    prefix=PREFIX,
    tags=["enrolments"],
    route_class=ApiRoute,
    dependencies=[Depends(booking_system)],
    responses=_REFUSALS,
)

# The largest id the database's integer column holds; a larger one is refused, not looked up.
EnrolmentId = Annotated[int, Path(alias="id", ge=1, le=2**31 - 1)]
# The Contract's booking reference: what `parse_fields` accepts, so anything else is refused
# before it reaches the database (PostgreSQL refuses NUL in text outright).
BookingRef = Annotated[
    str, Query(min_length=1, max_length=BOOKING_REF_MAX_LENGTH, pattern=BOOKING_REF_PATTERN)
]


def _parse(config: Config, values: Mapping[str, str | None]) -> Enrolment:
    return parse_fields(
        values,
        protocols=config.protocols,
        default_timezone=config.settings.timezone,
        require_booking_ref=True,
    )


def _enrolment(session: Session, enrolment_id: int, *, lock: bool = False) -> models.Enrolment:
    row = session.get(models.Enrolment, enrolment_id, with_for_update=lock)
    if row is None:
        raise ApiError(404, f"There is no enrolment {enrolment_id}.")
    return row


@router.post(
    "/enrolments",
    response_model=EnrolmentOut,
    status_code=200,
    summary="Enrol a patient, or update the enrolment with this booking reference",
    responses={
        200: {"description": "An enrolment with this booking reference was updated, or was "
              "already like this"},
        201: {"model": EnrolmentOut, "description": "Enrolled",
              "headers": {"Location": {"schema": {"type": "string"},
                                       "description": "The new enrolment"}}},
        **_CONFLICT,
    },
)  # fmt: skip
def enrol(
    body: NewEnrolment,
    response: Response,
    sessions: Sessions,
    config: AppConfig,
    now: Now,
    actor: Actor,
) -> EnrolmentOut:
    enrolment = _parse(config, body.values())
    with locked_scope(sessions) as session:
        result = enrolments.enrol(session, config, enrolment, now=now, actor=actor)
        out = enrolment_out(result.enrolment, result.warnings)
    if result.created:
        response.status_code = 201
        response.headers["Location"] = out.links.self
    return out


@router.get(
    "/enrolments",
    response_model=list[EnrolmentOut],
    summary="Find the enrolment with a booking reference (an empty list when there is none)",
)
def find_enrolments(sessions: Sessions, booking_ref: BookingRef) -> list[EnrolmentOut]:
    with session_scope(sessions) as session:
        query = select(models.Enrolment).where(models.Enrolment.booking_ref == booking_ref)
        return [enrolment_out(row) for row in session.scalars(query)]


@router.get("/enrolments/{id}", response_model=EnrolmentOut, responses=_NOT_FOUND)
def get_enrolment(sessions: Sessions, enrolment_id: EnrolmentId) -> EnrolmentOut:
    with session_scope(sessions) as session:
        return enrolment_out(_enrolment(session, enrolment_id))


@router.patch(
    "/enrolments/{id}",
    response_model=EnrolmentOut,
    summary="Change some fields; a new date or time reschedules every pending reminder",
    responses={**_NOT_FOUND, **_CLOSED},
)
def change_enrolment(
    body: EnrolmentChanges,
    sessions: Sessions,
    config: AppConfig,
    now: Now,
    actor: Actor,
    enrolment_id: EnrolmentId,
) -> EnrolmentOut:
    changes = body.values()
    with locked_scope(sessions) as session:
        # Locked before it is read, so two changes at once cannot each undo the other's.
        row = _enrolment(session, enrolment_id, lock=True)
        if changes.get("booking_ref", row.booking_ref) != row.booking_ref:
            raise InvalidEnrolment(
                ["booking_ref: cannot be changed; cancel this enrolment and enrol with the new one"]
            )
        values = {**enrolments.as_enrolment(row).as_fields(), **changes}
        result = enrolments.enrol(session, config, _parse(config, values), now=now, actor=actor)
        return enrolment_out(result.enrolment, result.warnings)


@router.post(
    "/enrolments/{id}/cancel",
    response_model=EnrolmentOut,
    summary="Cancel the procedure: nothing more is sent for it",
    responses={**_NOT_FOUND, **_CLOSED},
)
def cancel_enrolment(
    sessions: Sessions, config: AppConfig, now: Now, actor: Actor, enrolment_id: EnrolmentId
) -> EnrolmentOut:
    with locked_scope(sessions) as session:
        row = _enrolment(session, enrolment_id)
        enrolments.cancel(session, config, row, now=now, actor=actor)
        return enrolment_out(row)


@router.get(
    "/enrolments/{id}/reminders",
    response_model=list[ReminderOut],
    summary="Every reminder of an enrolment, sent, pending or cancelled, by send time",
    responses=_NOT_FOUND,
)
def list_reminders(
    sessions: Sessions, config: AppConfig, enrolment_id: EnrolmentId
) -> list[ReminderOut]:
    with session_scope(sessions) as session:
        row = _enrolment(session, enrolment_id)
        zone = ZoneInfo(row.timezone)
        words = wording.shown(config, list(row.reminders))
        return [reminder_out(r, zone, words[r.id]) for r in row.reminders]
