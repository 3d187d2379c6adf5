"""Who holds which reminder: the last check before a request leaves (`go`), the rows a change
of plan may still replace, those in flight at the provider, and those the sweeper must ask the
provider about. Nothing here changes a reminder's state; that is `lifecycle`'s alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from sqlalchemy import and_, case, exists, func, literal, or_, select, update
from sqlalchemy.orm import Session

from reminders.store import models
from reminders.store.lifecycle import CANCELLED, SENDING, SKIPPED, Held, held_by

R = models.Reminder
E = models.Enrolment


def replaceable(reminder: models.Reminder) -> bool:
    """Pending, or in `sending` with its request not yet allowed to leave (`lifecycle.go`): a
    change of plan withdraws it, and it never counts as something the patient has."""
    return reminder.pending or (reminder.state == SENDING and reminder.requested_at is None)


def in_flight(reminder: models.Reminder) -> bool:
    """Its request was allowed to leave and its outcome is not known yet: it may reach the
    patient, so a change of plan neither stops it nor plans it again."""
    return reminder.state == SENDING and reminder.requested_at is not None


def lock_plan(session: Session, enrolment_id: int) -> list[models.Reminder]:
    """Lock an enrolment's reminders, in the order of their ids, and read them as they are now:
    a change of plan decides on states no worker can move under it (a worker's `begin` and
    `go` wait for the change to commit, and then see it). SQLite has one writer anyway."""
    return list(
        session.scalars(
            select(R)
            .where(R.enrolment_id == enrolment_id)
            .order_by(R.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )


class Stalled(NamedTuple):
    held: Held
    since: datetime  # when its request was allowed to leave
    unanswered: bool  # the provider did not answer (counts as its failure); else a crash
    asks: int  # times the provider could not say whether it has it


def stalled(session: Session, cutoff: datetime, now: datetime) -> list[Stalled]:
    """Rows in `sending` whose request was allowed to leave before `cutoff`, and that are due
    to be asked about (again): the provider may have them, so it is asked before anything is
    resent."""
    rows = session.execute(
        select(R.id, R.attempts, R.requested_at, R.error_message, R.asks)
        .where(
            R.state == SENDING,
            R.requested_at < cutoff,
            or_(R.ask_after.is_(None), R.ask_after <= now),
        )
        .order_by(R.id)
        .with_for_update(skip_locked=True)  # one its worker is settling now is not stalled
    )
    return [
        Stalled(Held(reminder_id, attempt), since or cutoff, error is not None, asks)
        for reminder_id, attempt, since, error, asks in rows
    ]


def ask_later(session: Session, held: Held, at: datetime) -> bool:
    """The provider could not say whether it has the message: ask again at `at`."""
    done = session.execute(
        update(R)
        .where(held_by(held), R.state == SENDING)
        .values(asks=R.asks + 1, ask_after=at)
        .returning(R.id)
        .execution_options(synchronize_session=False)
    ).first()
    return done is not None


# Why `go` refused: the row is no longer this worker's, or its lease has passed (the sweeper
# puts it back); or (state, reason) for a row that must not be sent at all.
ELSEWHERE = "elsewhere"
LEASE_PASSED = "lease passed"


def go(
    session: Session, held: Held, now: datetime | None, *, lease: timedelta
) -> datetime | str | tuple[str, str]:
    """The last check before a request leaves, committed with the time it was allowed to
    (`requested_at`), which it returns if it may go now. It goes only while this worker still
    holds the attempt within its lease, the enrolment is as it was when the words were written
    (its version: a reschedule, an edit or a cancellation moves it on), the destination has not
    opted out, and it is not worthless yet. `now`: the time, or None for PostgreSQL's own
    clock, read in the same round trip as the enrolment.

    The enrolment is read FOR SHARE, so a change under way is waited for and then seen; a
    change or a STOP that comes after this commits finds the request left (`in_flight`)."""
    found_version = session.execute(
        select(E.schedule_version, func.clock_timestamp() if now is None else literal(now))
        .where(E.id == select(R.enrolment_id).where(R.id == held.id).scalar_subquery())
        .with_for_update(read=True)
    ).first()
    if found_version is None:
        return ELSEWHERE  # purged meanwhile
    version, now = found_version
    now = now.astimezone(UTC)
    opted_out = exists().where(
        models.OptOut.channel == R.channel, models.OptOut.destination == R.destination
    )
    checks = {
        "held": and_(held_by(held), R.state == SENDING, R.requested_at.is_(None)),
        "lease": R.sending_at > literal(now - lease, R.sending_at.type),
        "version": R.schedule_version == version,
        "worth": R.expires_at > literal(now, R.expires_at.type),
        "allowed": ~opted_out,
    }
    if session.execute(
        update(R)
        .where(*checks.values())
        .values(requested_at=now)
        .returning(R.id)
        .execution_options(synchronize_session=False)
    ).first():
        return now
    found = session.execute(
        select(*(case((check, True), else_=False).label(n) for n, check in checks.items()))
        .where(R.id == held.id)
        .with_for_update()
    ).first()
    if found is None or not found.held:
        return ELSEWHERE
    if not found.version:
        return CANCELLED, "superseded"
    if not found.worth:
        return SKIPPED, "too late to be useful"
    if not found.allowed:
        return SKIPPED, "opted out"
    return LEASE_PASSED
