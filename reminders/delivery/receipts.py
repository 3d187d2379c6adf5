"""What the provider says later about a message it took: a delivery receipt, in our words
(the transport translates its provider's), moving the message forward only."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from reminders.store import journal, lifecycle


def record(
    session: Session, provider_id: str, status: str | None, error_code: str | None,
    now: datetime, *, transport: str,
) -> bool:  # fmt: skip
    """Apply a receipt from `transport` to the message it sent with this provider id; True if
    it changed. `status` is one of `lifecycle.RANK`'s, or None for one the transport does not
    know (ignored). Only that transport's messages: Twilio's callback with an email's id must
    not change the email."""
    if status not in lifecycle.RANK or not provider_id:
        return False
    reminder = lifecycle.receipt(session, provider_id, status, error_code, transport=transport)
    if reminder is None:
        return False
    if status in lifecycle.NOT_RECEIVED:
        journal.note(
            session, "delivery-failed",
            f"{reminder.rule} ({reminder.channel}) was not delivered: {status}"
            + (f" (code {error_code})" if error_code else ""),
            now=now, enrolment_id=reminder.enrolment_id, reminder_id=reminder.id,
            needs_call=reminder.safety_critical,
        )  # fmt: skip
    return True
