"""Safety-critical instructions (a blood-thinner stop, fasting) that did not reach the patient
by their deadline go on the staff's call list, with the number to ring and what was missed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from reminders.store import journal, models
from reminders.store.lifecycle import NOT_RECEIVED

R = models.Reminder


def reached_patient(reminder: models.Reminder) -> bool:
    """Sent, and not reported back as undelivered (email and the outbox report nothing)."""
    return reminder.state == "sent" and reminder.delivery_status not in NOT_RECEIVED


def escalate(session: Session, now: datetime) -> int:
    """Add a call-list entry for each safety-critical instruction past its deadline that no
    channel delivered; once per rule and enrolment. Returns how many were added."""
    overdue = session.scalars(
        select(R)
        .where(R.safety_critical.is_(True), R.deadline < now, R.state != "cancelled")
        .options(selectinload(R.enrolment).selectinload(models.Enrolment.patient))
    ).all()
    by_rule: dict[tuple[int, str], list[models.Reminder]] = {}
    for reminder in overdue:
        by_rule.setdefault((reminder.enrolment_id, reminder.rule), []).append(reminder)
    added = 0
    for (enrolment_id, rule), reminders in by_rule.items():
        if any(reached_patient(r) for r in reminders):
            continue
        if reminders[0].enrolment.status == models.ENROLMENT_CANCELLED:
            continue
        message = f"Call the patient: '{rule}' did not reach them before it was needed."
        item = journal.note(
            session, "not-delivered", message, now=now, enrolment_id=enrolment_id,
            reminder_id=reminders[0].id,
        )  # fmt: skip
        added += item is not None
    return added
