"""The JSON API for booking systems (PRODUCT.md, Contracts, HTTP), behind bearer tokens: who
is calling, and the routes. What they take and answer is `api_models`; how they refuse,
`api_refusals`.

Handlers only parse, call a service and shape the answer; the rules live in `enrolment` (what a
valid enrolment is) and `services` (what enrolling, rescheduling and cancelling do). Every
refusal has one shape, `{"detail": ..., "problems": [...]}`, whatever refused it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from reminders.config import Config
from reminders.core.enrolment import (
    Enrolment,
    InvalidEnrolment,
    parse_fields,
)
from reminders.core.parsers import (
    BOOKING_REF_MAX_LENGTH,
    BOOKING_REF_PATTERN,
)
from reminders.interfaces.web.api_models import (
    PREFIX,
    EnrolmentChanges,
    EnrolmentOut,
    NewEnrolment,
    ReminderOut,
    enrolment_out,
    reminder_out,
)
from reminders.interfaces.web.api_refusals import ApiError, ApiRoute, Problem
from reminders.interfaces.web.deps import AppConfig, Now
from reminders.services import accounts, enrolments, planning, wording
from reminders.store import models
from reminders.store.db import locked_scope, session_scope

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
    """The actor recorded in the audit log for this request, `api:<token id>:<token name>`."""
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
        request.state.api_scope = token.scope
        return accounts.actor(token)


def writing_system(request: Request, actor: Annotated[str, Depends(booking_system)]) -> str:
    """The actor of a request that changes enrolments: its token must be allowed to."""
    if request.state.api_scope != "write":
        raise ApiError(403, "This API token may only read enrolments; ask for one that writes.")
    return actor


def get_sessions(request: Request) -> sessionmaker[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessions
    return sessions


Actor = Annotated[str, Depends(writing_system)]
# Each handler runs its own transaction: a refusal rolls back as it leaves the block, before
# ApiRoute answers it, and the commit happens before the response is sent, so a client never
# gets a 201 for an enrolment that a failed commit lost. Writes read first (is this booking
# reference known? what are the fields now?), so they take `locked_scope`: on SQLite two at
# once would otherwise both read, and one fail or undo the other.
Sessions = Annotated[sessionmaker[Session], Depends(get_sessions)]


# --- the routes ----------------------------------------------------------------------------

_REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No API token, or one that is not valid"},
    403: {"model": Problem, "description": "The token may only read (a write was asked for)"},
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
        default_timezone=config.zone,
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
        values = {**planning.as_enrolment(row).as_fields(), **changes}
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
