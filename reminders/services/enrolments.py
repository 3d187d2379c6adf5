"""Use cases: enrol, reschedule, cancel, complete. The CLI, the web app and the API call these;
they call the pure core (schedule, rendering) and the store, and never the other way round.

Every function takes the caller's session and leaves committing to it, so one request or one CSV
row is one transaction.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from reminders.config import Config
from reminders.core.blood_thinners import (
    below_minimum,
    cancelled_call,
    moved_call,
    stopped_or_due,
)
from reminders.core.clock import localize
from reminders.core.enrolment import SCHEMA, Enrolment
from reminders.core.facts import Change
from reminders.core.rendering import RenderError, TooLong
from reminders.core.sms import MAX_SEGMENTS
from reminders.services.planning import (
    Replanned,
    add_notices,
    as_enrolment,
    expire,
    facts_of,
    replan,
)
from reminders.store import holds, journal, lifecycle, models

# How a change locks its enrolment (PostgreSQL's FOR NO KEY UPDATE): a worker preparing its
# reminders waits (FOR SHARE), but a worker recording an attention item or a fallback email for
# it does not (a new row referring to the enrolment takes FOR KEY SHARE): it may hold reminder
# rows the change is waiting for, and the two would deadlock.
CHANGING = {"key_share": True}

# Enrolment fields that, when changed, change what the patient receives.
_SCHEDULE_FIELDS = tuple(spec.name for spec in SCHEMA if spec.changes_schedule)


class EnrolmentRefused(ValueError):
    """The enrolment cannot be saved as asked; the message says what to fix."""


class EnrolmentClosed(EnrolmentRefused):
    """The booking reference belongs to a cancelled or completed enrolment."""


class EnrolmentConflict(EnrolmentRefused):
    """Another request enrolled the same new booking reference at the same moment; sent again,
    the request updates that enrolment."""


@contextmanager
def writable() -> Iterator[None]:
    """Refuse, while staff are still at the form, a plan with a message that cannot be written:
    the patient would otherwise miss it (hazard H15). A long name or medicine can make a text
    too long to send; a template broken since the last `reminders check`, any message."""
    try:
        yield
    except TooLong as exc:
        raise EnrolmentRefused(
            f"name, anticoagulant: a text to this patient would take {exc.segments} SMS "
            f"messages, more than the {MAX_SEGMENTS} we send; shorten the name (only the "
            "first name is used) or the medicine's name"
        ) from None
    except RenderError as exc:
        raise EnrolmentRefused(unwritable(exc)) from None


def unwritable(exc: RenderError) -> str:
    return f"a message for this patient could not be written ({exc})"


@dataclass
class EnrolResult:
    enrolment: models.Enrolment
    created: bool
    rescheduled: bool = False
    warnings: list[str] = field(default_factory=list)
    reminders: list[models.Reminder] = field(default_factory=list)  # newly scheduled


def new_booking_ref(now: datetime) -> str:
    return f"R{now:%y%m%d}-{secrets.token_hex(3).upper()}"


def _store_fields(row: models.Enrolment, enrolment: Enrolment, starts_at: datetime) -> None:
    for column, value in enrolment.columns("patient").items():
        setattr(row.patient, column, value)
    for column, value in enrolment.columns("enrolment").items():
        setattr(row, column, value)
    row.starts_at = starts_at


def _tell_staff(
    session: Session, row: models.Enrolment, replanned: Replanned, calls: list[str],
    now: datetime,
) -> None:  # fmt: skip
    for kind, messages in (
        ("late-enrolment", replanned.warnings),
        ("correction", replanned.corrections),
        ("blood-thinner", [*calls, *replanned.calls]),
    ):
        for message in messages:
            journal.note(session, kind, message, now=now, enrolment_id=row.id)


def _check_plan(
    session: Session, config: Config, row: models.Enrolment, actor: str, now: datetime
) -> None:
    """A hold shorter than the protocol's minimum needs the clinician's reason, and is
    recorded in the audit log (the reason itself stays on the enrolment: it is patient data)."""
    facts = facts_of(config, row)
    minimum = below_minimum(facts)
    if minimum is None:
        return
    if not row.anticoagulant_hold_reason:
        raise EnrolmentRefused(
            f"anticoagulant_hold_days: the {facts.protocol.name} protocol asks for a hold of at "
            f"least {minimum} days; for a shorter one, give the clinician's reason in "
            "anticoagulant_hold_reason"
        )
    journal.audit(
        session, actor, "short-hold", now=now, enrolment_id=row.id,
        hold_days=row.anticoagulant_hold_days, minimum=minimum,
    )  # fmt: skip


def future_start(enrolment: Enrolment, now: datetime, zone: ZoneInfo) -> datetime:
    """When the procedure starts, in UTC, its date and time being on the unit's clock
    (`zone`); refused if that has already passed."""
    starts_at = localize(enrolment.date, enrolment.time, zone).astimezone(UTC)
    if starts_at <= now:
        raise EnrolmentRefused("date, time: the procedure time has already passed")
    return starts_at


def enrol(
    session: Session, config: Config, enrolment: Enrolment, *, now: datetime, actor: str
) -> EnrolResult:
    """Enrol a patient, or update the enrolment with the same booking reference."""
    ref = enrolment.booking_ref or new_booking_ref(now)
    enrolment = enrolment.with_changes(booking_ref=ref)
    starts_at = future_start(enrolment, now, config.zone)
    row = session.scalar(
        select(models.Enrolment)
        .where(models.Enrolment.booking_ref == ref)
        .with_for_update(
            key_share=True  # see `CHANGING`
        )
    )
    if row is not None:
        return _update(session, config, row, enrolment, starts_at, now=now, actor=actor)
    row = models.Enrolment(
        booking_ref=ref,
        patient=models.Patient(name=enrolment.name),
        enrolled_at=now,
        status=models.ENROLMENT_ACTIVE,
        schedule_version=1,
    )
    _store_fields(row, enrolment, starts_at)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        # The same reference was enrolled by another request a moment ago; this transaction
        # is spoilt, and trying again will update that enrolment instead.
        raise EnrolmentConflict(
            f"booking_ref: {ref} was enrolled at the same moment by someone else; try again"
        ) from None
    _check_plan(session, config, row, actor, now)
    with writable():
        replanned = replan(session, config, row, now)
    _tell_staff(session, row, replanned, [], now)
    journal.audit(
        session, actor, "enrol", now=now, enrolment_id=row.id, booking_ref=ref,
        procedure=row.procedure,
    )  # fmt: skip
    return EnrolResult(
        row, created=True, warnings=[*replanned.warnings, *replanned.calls],
        reminders=replanned.added,
    )  # fmt: skip


def _update(
    session: Session,
    config: Config,
    row: models.Enrolment,
    enrolment: Enrolment,
    starts_at: datetime,
    *,
    now: datetime,
    actor: str,
) -> EnrolResult:
    if row.status != models.ENROLMENT_ACTIVE:
        raise EnrolmentClosed(
            f"booking_ref: {row.booking_ref} belongs to a {row.status} enrolment; "
            "use a new booking reference"
        )
    before = as_enrolment(row)
    after = enrolment.with_changes(enrolled_at=row.enrolled_at)
    if all(getattr(before, f) == getattr(after, f) for f in _SCHEDULE_FIELDS):
        return EnrolResult(row, created=False)
    moved = before.date != after.date or before.time != after.time
    previous = {"date": row.local_date, "time": row.local_time, "procedure": row.procedure}
    previous_start = row.starts_at
    calls: list[str] = []
    told = facts_of(config, row)
    same_plan = (after.anticoagulant_hold_days, after.anticoagulant_restart_days) == (
        before.anticoagulant_hold_days, before.anticoagulant_restart_days,
    )  # fmt: skip
    # A new time on the same day leaves every medicine date as it was; a new day does not.
    withdrawn = before.date != after.date and same_plan and stopped_or_due(told, now)
    if withdrawn:
        # The software never works out new medicine dates itself: the plan was the clinician's
        # for the old date. It is withdrawn, the patient is told the team will call, and new
        # dates go out once staff record a new plan (which then corrects the old ones).
        after = after.with_changes(
            anticoagulant_hold_days=None, anticoagulant_restart_days=None,
            anticoagulant_hold_reason=None,
        )  # fmt: skip
        calls.append(moved_call(told, after.date))
    _store_fields(row, after, starts_at)
    row.schedule_version += 1
    _check_plan(session, config, row, actor, now)
    with writable():
        replanned = replan(session, config, row, now, moved=moved)
        if moved:
            change = Change("moved", now, previous_start=previous_start)
            add_notices(session, config, row, change)
    _tell_staff(session, row, replanned, calls, now)
    action = "reschedule" if moved else "update"
    journal.audit(
        session, actor, action, now=now, enrolment_id=row.id, previous=previous,
        version=row.schedule_version,
    )  # fmt: skip
    if withdrawn:
        journal.audit(
            session, actor, "plan-withdrawn", now=now, enrolment_id=row.id,
            hold_days=before.anticoagulant_hold_days,
        )  # fmt: skip
    return EnrolResult(
        row,
        created=False,
        rescheduled=moved,
        warnings=[*replanned.warnings, *replanned.corrections, *replanned.calls, *calls],
        reminders=replanned.added,
    )


def reschedule(
    session: Session,
    config: Config,
    row: models.Enrolment,
    *,
    date: dt.date,
    time: dt.time,
    now: datetime,
    actor: str,
) -> EnrolResult:
    """Move the procedure; every pending reminder follows, and corrections go where needed."""
    session.refresh(row, with_for_update=CHANGING)
    enrolment = as_enrolment(row).with_changes(date=date, time=time)
    starts_at = localize(date, time, config.zone).astimezone(UTC)
    if starts_at <= now:
        raise EnrolmentRefused("date, time: the new procedure time has already passed")
    return _update(session, config, row, enrolment, starts_at, now=now, actor=actor)


def cancel(
    session: Session, config: Config, row: models.Enrolment, *, now: datetime, actor: str
) -> None:
    """Cancel the procedure: nothing more of its plan is sent, and the patient is told it is
    cancelled. A patient told, or due, to stop a blood thinner is told the team will call
    about restarting it, and goes on the call list: never silence."""
    # Held until commit: a worker preparing this enrolment's reminders waits, then sees this.
    session.refresh(row, with_for_update=CHANGING)
    if row.status != models.ENROLMENT_ACTIVE:
        raise EnrolmentClosed(f"enrolment {row.booking_ref} is already {row.status}")
    session.flush()
    facts = facts_of(config, row)
    calls = []
    if stopped_or_due(facts, now):
        calls.append(cancelled_call(facts, now.astimezone(facts.zone).date()))
    # Locked and read afresh, and withdrawn with the cancellation: pending, and held by a
    # worker whose request has not left (it finds them gone). The version moves on, so the
    # worker's last check (`holds.go`) refuses anything of the old plan; the cancellation's
    # own notice is of the new version.
    ending = [r for r in holds.lock_plan(session, row.id) if holds.replaceable(r)]
    lifecycle.withdraw(session, [r.id for r in ending], "enrolment cancelled")
    expire(session, ending)
    row.schedule_version += 1
    row.status = models.ENROLMENT_CANCELLED
    row.ended_at = now
    try:
        add_notices(session, config, row, Change("cancelled", now))
    except RenderError as exc:
        # The cancellation stands: a patient not told of it by message is told by phone.
        message = f"Tell the patient the procedure is cancelled: {unwritable(exc)}."
        journal.note(session, "correction", message, now=now, enrolment_id=row.id)
    for message in calls:
        journal.note(session, "blood-thinner", message, now=now, enrolment_id=row.id)
    journal.audit(session, actor, "cancel", now=now, enrolment_id=row.id)
    session.flush()
