"""Use cases: enrol, reschedule, cancel, complete. The CLI, the web app and the API call these;
they call the pure core (schedule, rendering) and the store, and never the other way round.

Every function takes the caller's session and leaves committing to it, so one request or one CSV
row is one transaction.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from reminders.config import Config
from reminders.core.clock import localize
from reminders.core.enrolment import SCHEMA, Enrolment
from reminders.core.rendering import enrolment_context, template_context
from reminders.core.schedule import (
    PlannedReminder,
    Schedule,
    compute_schedule,
    facts_for,
    plan_corrections,
    review_sent,
)
from reminders.store import journal, lifecycle, models

# Enrolment fields that, when changed, change what the patient receives.
_SCHEDULE_FIELDS = tuple(spec.name for spec in SCHEMA if spec.changes_schedule)
_DELIVERED_STATES = ("sending", "sent")


class EnrolmentRefused(ValueError):
    """The enrolment cannot be saved as asked; the message says what to fix."""


class EnrolmentClosed(EnrolmentRefused):
    """The booking reference belongs to a cancelled or completed enrolment."""


class EnrolmentConflict(EnrolmentRefused):
    """Another request enrolled the same new booking reference at the same moment; sent again,
    the request updates that enrolment."""


@dataclass
class EnrolResult:
    enrolment: models.Enrolment
    created: bool
    rescheduled: bool = False
    warnings: list[str] = field(default_factory=list)
    reminders: list[models.Reminder] = field(default_factory=list)  # newly scheduled


def new_booking_ref(now: datetime) -> str:
    return f"R{now:%y%m%d}-{secrets.token_hex(3).upper()}"


def as_enrolment(row: models.Enrolment) -> Enrolment:
    """The stored enrolment as the pure core sees it."""
    return Enrolment.from_columns(row.patient, row, enrolled_at=row.enrolled_at)


def _store_fields(row: models.Enrolment, enrolment: Enrolment, starts_at: datetime) -> None:
    for column, value in enrolment.columns("patient").items():
        setattr(row.patient, column, value)
    for column, value in enrolment.columns("enrolment").items():
        setattr(row, column, value)
    row.starts_at = starts_at


def _warn(
    session: Session, row: models.Enrolment, kind: str, messages: list[str], now: datetime
) -> None:
    for message in messages:
        journal.note(session, kind, message, now=now, enrolment_id=row.id)


def reminder_values(
    config: Config, schedule: Schedule, planned: PlannedReminder, version: int,
    shared: Mapping[str, Any] | None = None,
) -> dict[str, object]:  # fmt: skip
    """The columns of a planned reminder's row: for `models.Reminder` here, and for the CSV
    import's bulk insert of brand-new enrolments. Its words are written when it is sent
    (`wording`); an SMS is written now too, only to refuse one over the segment limit while
    staff can still do something about it (RenderError). `shared`: as for `template_context`."""
    if planned.channel == "sms":
        facts = schedule.facts
        renderer = config.renderer
        context = template_context(facts, planned.send_at, renderer.unit, shared)
        renderer.render_with(planned.template, planned.channel, facts, context)
    return {
        "rule": planned.rule,
        "channel": planned.channel,
        "state": lifecycle.INITIAL,
        "send_at": planned.send_at,
        "deadline": planned.deadline,
        "expires_at": planned.expires,
        "schedule_version": version,
        "template": planned.template,
        "safety_critical": planned.safety_critical,
        "is_correction": planned.is_correction,
    }


def _reminder_row(
    config: Config, schedule: Schedule, planned: PlannedReminder, version: int
) -> models.Reminder:
    return models.Reminder(**reminder_values(config, schedule, planned, version))


def _same(row: models.Reminder, new: models.Reminder) -> bool:
    keys = ("rule", "channel", "send_at", "template", "is_correction")
    return all(getattr(row, k) == getattr(new, k) for k in keys)


def _expire(session: Session, reminders: list[models.Reminder]) -> None:
    """Forget what was read of rows the lifecycle has just changed with a set-based UPDATE."""
    for reminder in reminders:
        session.expire(reminder)


def _replan(
    session: Session, config: Config, row: models.Enrolment, now: datetime
) -> tuple[list[models.Reminder], list[str], list[str]]:
    """Recompute every pending reminder; sent ones stay as history. Returns the new rows, the
    warnings about timing, and the warnings about corrections."""
    protocol = config.protocols[row.procedure]
    enrolment = as_enrolment(row)
    sent: dict[tuple[str, str], str | None] = {}
    for reminder in sorted(row.reminders, key=lambda r: (r.sent_at or r.send_at, r.id or 0)):
        if reminder.state in _DELIVERED_STATES:
            sent[(reminder.rule, reminder.channel)] = reminder.fingerprint  # the latest wins
    facts = facts_for(protocol, enrolment, row.enrolled_at)
    review = review_sent(
        protocol,
        facts,
        sent,
        lambda rule, channel: config.renderer.fingerprint(rule.template, channel, facts, now),
    )
    schedule = compute_schedule(
        protocol,
        enrolment,
        now,
        config.window,
        delivered=review.unchanged,
        corrected=review.corrected,
    )
    corrections = plan_corrections(
        protocol, facts, [*review.corrected, *review.withdrawn], now, config.window
    )
    version = row.schedule_version
    shared = enrolment_context(schedule.facts, config.renderer.unit)
    wanted = [
        models.Reminder(**reminder_values(config, schedule, planned, version, shared))
        for planned in [*schedule.reminders, *corrections.reminders]
    ]
    added: list[models.Reminder] = []
    kept: list[models.Reminder] = []
    for new in wanted:
        twin = next(
            (r for r in row.reminders if r.pending and r not in kept and _same(r, new)), None
        )
        if twin is not None:
            kept.append(twin)
        else:
            added.append(new)
    session.flush()
    # A row a worker took into `sending` since it was read is left to the worker, which finds
    # the enrolment moved on and stops it.
    superseded = [r for r in row.reminders if r.pending and r not in kept]
    lifecycle.carry_over(session, [r.id for r in kept], version)
    lifecycle.withdraw(session, [r.id for r in superseded], "superseded")
    _expire(session, [*kept, *superseded])
    row.reminders.extend(added)
    session.flush()
    return added, schedule.warnings, corrections.warnings


def future_start(enrolment: Enrolment, now: datetime) -> datetime:
    """When the procedure starts, in UTC; refused if that has already passed."""
    starts_at = localize(enrolment.date, enrolment.time, enrolment.timezone).astimezone(UTC)
    if starts_at <= now:
        raise EnrolmentRefused("date, time: the procedure time has already passed")
    return starts_at


def enrol(
    session: Session, config: Config, enrolment: Enrolment, *, now: datetime, actor: str
) -> EnrolResult:
    """Enrol a patient, or update the enrolment with the same booking reference."""
    ref = enrolment.booking_ref or new_booking_ref(now)
    enrolment = enrolment.with_changes(booking_ref=ref)
    starts_at = future_start(enrolment, now)
    row = session.scalar(
        select(models.Enrolment).where(models.Enrolment.booking_ref == ref).with_for_update()
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
    added, warnings, _ = _replan(session, config, row, now)
    _warn(session, row, "late-enrolment", warnings, now)
    journal.audit(
        session, actor, "enrol", now=now, enrolment_id=row.id, booking_ref=ref,
        procedure=row.procedure,
    )  # fmt: skip
    return EnrolResult(row, created=True, warnings=warnings, reminders=added)


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
    _store_fields(row, after, starts_at)
    row.schedule_version += 1
    added, warnings, correction_warnings = _replan(session, config, row, now)
    _warn(session, row, "late-enrolment", warnings, now)
    _warn(session, row, "correction", correction_warnings, now)
    action = "reschedule" if moved else "update"
    journal.audit(
        session, actor, action, now=now, enrolment_id=row.id, previous=previous,
        version=row.schedule_version,
    )  # fmt: skip
    return EnrolResult(
        row,
        created=False,
        rescheduled=moved,
        warnings=[*warnings, *correction_warnings],
        reminders=added,
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
    session.refresh(row, with_for_update=True)
    enrolment = as_enrolment(row).with_changes(date=date, time=time)
    starts_at = localize(date, time, enrolment.timezone).astimezone(UTC)
    if starts_at <= now:
        raise EnrolmentRefused("date, time: the new procedure time has already passed")
    return _update(session, config, row, enrolment, starts_at, now=now, actor=actor)


def _close(
    session: Session, row: models.Enrolment, status: str, now: datetime, actor: str, *,
    action: str, phases: tuple[str, ...], protocol_rules: Mapping[str, str], reason: str,
) -> None:  # fmt: skip
    # Held until commit: a worker preparing this enrolment's reminders waits, then sees this.
    session.refresh(row, with_for_update=True)
    if row.status != models.ENROLMENT_ACTIVE:
        raise EnrolmentClosed(f"enrolment {row.booking_ref} is already {row.status}")
    session.flush()
    ending = [
        r for r in row.reminders if r.pending and protocol_rules.get(r.rule, "before") in phases
    ]
    lifecycle.withdraw(session, [r.id for r in ending], reason)
    _expire(session, ending)
    row.status = status
    row.ended_at = now
    journal.audit(session, actor, action, now=now, enrolment_id=row.id)
    session.flush()


def cancel(
    session: Session, config: Config, row: models.Enrolment, *, now: datetime, actor: str
) -> None:
    """Cancel the procedure: nothing more is sent for it."""
    rules = {rule.id: rule.phase for rule in config.protocols[row.procedure].rules}
    _close(
        session, row, models.ENROLMENT_CANCELLED, now, actor,
        action="cancel", phases=("before", "after"), protocol_rules=rules,
        reason="enrolment cancelled",
    )  # fmt: skip


def complete(
    session: Session, config: Config, row: models.Enrolment, *, now: datetime, actor: str
) -> None:
    """The procedure took place: reminders meant for before it stop, after-care goes on."""
    rules = {rule.id: rule.phase for rule in config.protocols[row.procedure].rules}
    _close(
        session, row, models.ENROLMENT_COMPLETED, now, actor,
        action="complete", phases=("before",), protocol_rules=rules, reason="procedure done",
    )  # fmt: skip


def email_instead(
    session: Session, config: Config, reminder: models.Reminder, now: datetime
) -> models.Reminder | None:
    """After an SMS fails for good, the same instruction by email, once, if the patient has an
    address and is not already getting this one by email. Returns the new reminder, if any."""
    row = reminder.enrolment
    if not row.patient.email or row.status == models.ENROLMENT_CANCELLED:
        return None
    if now >= reminder.expires_at:
        return None
    live = ("scheduled", "queued", "sending", "sent")
    if any(r.rule == reminder.rule and r.channel == "email" and r.state in live
           for r in row.reminders):  # fmt: skip
        return None
    protocol = config.protocols[row.procedure]
    facts = facts_for(protocol, as_enrolment(row), row.enrolled_at)
    planned = PlannedReminder(
        rule=reminder.rule, channel="email", send_at=now, deadline=reminder.deadline,
        expires=reminder.expires_at, template=reminder.template,
        safety_critical=reminder.safety_critical, is_correction=reminder.is_correction,
    )  # fmt: skip
    fallback = _reminder_row(config, Schedule(facts), planned, row.schedule_version)
    row.reminders.append(fallback)
    return fallback
