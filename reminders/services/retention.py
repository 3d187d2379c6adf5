"""Purging patient data once an episode is over (REMINDERS_RETENTION_DAYS after it ended).

An episode ends when its enrolment is cancelled or completed, or, left active, when its
procedure and its last reminder are behind it. What goes: the enrolment, its reminders and
call-list entries, and the patient if nothing else refers to them; and CSV uploads (with the
rows they refused) started that long ago. What stays: counts of the purged reminders (for the
metrics), the audit log (which holds no patient data), and opt-outs, because a patient who
replied STOP must never be texted again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from reminders.services import logins, replies
from reminders.store import journal, models

R, E = models.Reminder, models.Enrolment


@dataclass(frozen=True)
class Purged:
    enrolments: int
    reminders: int
    patients: int


def episodes_over(session: Session, cutoff: datetime) -> list[int]:
    still_pending = select(R.enrolment_id).where(R.state.in_(models.PENDING_STATES))
    last_reminder = (
        select(R.enrolment_id, func.max(R.send_at).label("last"))
        .group_by(R.enrolment_id)
        .subquery()
    )
    ended = or_(
        E.ended_at < cutoff,
        (E.status == models.ENROLMENT_ACTIVE)
        & (E.starts_at < cutoff)
        & E.id.not_in(still_pending)
        & or_(last_reminder.c.last.is_(None), last_reminder.c.last < cutoff),
    )
    query = select(E.id).outerjoin(last_reminder, last_reminder.c.enrolment_id == E.id)
    return list(session.scalars(query.where(ended)))


def purge(session: Session, *, now: datetime, retention_days: int, actor: str) -> Purged:
    cutoff = now - timedelta(days=retention_days)
    logins.purge(session, now)
    replies.forget_old_ids(session, now)
    # The rows an upload refused are patient data too, with no episode of their own: they go
    # when the upload is as old as an ended episode would be.
    session.execute(
        delete(models.ImportRun)
        .where(models.ImportRun.started_at < cutoff)
        .execution_options(synchronize_session=False)
    )
    ids = episodes_over(session, cutoff)
    if not ids:
        return Purged(0, 0, 0)
    counts = session.execute(
        select(R.state, R.channel, R.transport, func.count())
        .where(R.enrolment_id.in_(ids))
        .group_by(R.state, R.channel, R.transport)
    ).all()
    for state, channel, transport, count in counts:
        key = {"state": state, "channel": channel, "transport": transport or "none"}
        total = session.scalar(select(models.PurgedTotal).filter_by(**key))
        if total is None:
            total = models.PurgedTotal(**key, count=0)
            session.add(total)
        total.count += count
    patients = set(session.scalars(select(E.patient_id).where(E.id.in_(ids))))
    # The database cascades to reminders and call-list entries, and nulls the audit links.
    session.execute(delete(E).where(E.id.in_(ids)).execution_options(synchronize_session=False))
    orphans = [
        p for p in patients
        if session.scalar(select(func.count()).where(E.patient_id == p)) == 0
    ]  # fmt: skip
    session.execute(delete(models.Patient).where(models.Patient.id.in_(orphans)))
    purged = Purged(len(ids), sum(c for *_, c in counts), len(orphans))
    journal.audit(
        session, actor, "purge", now=now, enrolments=purged.enrolments,
        reminders=purged.reminders, patients=purged.patients, ended_before=f"{cutoff:%Y-%m-%d}",
    )  # fmt: skip
    return purged
