"""Dealing with an entry on the needs-attention list."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from reminders.store import journal, models


class AlreadyResolved(ValueError):
    pass


def resolve(session: Session, item: models.AttentionItem, *, now: datetime, actor: str) -> None:
    """Mark an entry dealt with, saying who dealt with it and when."""
    if item.resolved_at is not None:
        raise AlreadyResolved(f"{item.resolved_by} already dealt with this")
    item.resolved_at = now
    item.resolved_by = actor
    journal.audit(
        session, actor, "resolve", now=now, enrolment_id=item.enrolment_id, kind=item.kind,
        item=item.id,
    )  # fmt: skip
