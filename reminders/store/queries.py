"""What staff look things up by: procedures coming up, a search, the needs-attention list, the
audit log. Read-only queries, shared by the staff pages and anything else that lists."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload

from reminders.core.parsers import parse_phone
from reminders.store import models

E, P = models.Enrolment, models.Patient
SEARCH_LIMIT = 50


def upcoming(session: Session, start: datetime, end: datetime) -> list[models.Enrolment]:
    """Active enrolments whose procedure starts in [start, end), soonest first."""
    return list(
        session.scalars(
            select(E)
            .options(joinedload(E.patient))
            .where(E.starts_at >= start, E.starts_at < end, E.status == models.ENROLMENT_ACTIVE)
            .order_by(E.starts_at, E.id)
        )
    )


def _phone(text: str) -> str | None:
    """The E.164 form of a number typed the way staff type them (07911 100001, +44...), when
    it is one: every stored number went through the same parser."""
    try:
        return parse_phone(text)
    except ValueError:
        return None


def search(session: Session, text: str) -> list[models.Enrolment]:
    """Enrolments matching a booking reference, a phone number, or part of a name: newest
    procedure first, cancelled and completed ones included (staff look those up too).

    A booking reference is looked for first, on its own: it is one index lookup, where part of
    a name has to be looked for across every patient (with a trigram index on PostgreSQL)."""
    text = text.strip()
    if not text:
        return []
    newest_first = (
        select(E).join(E.patient).options(joinedload(E.patient)).order_by(E.starts_at.desc())
    )
    by_ref = list(session.scalars(newest_first.where(func.lower(E.booking_ref) == text.lower())))
    if by_ref:
        return by_ref
    phone = _phone(text)
    if phone is not None:
        return list(session.scalars(newest_first.where(P.phone == phone).limit(SEARCH_LIMIT)))
    # Escape LIKE's wildcards: a name typed with % or _ means those characters.
    pattern = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    named = func.lower(P.name).like(f"%{pattern}%", escape="\\")
    return list(session.scalars(newest_first.where(named).limit(SEARCH_LIMIT)))


def needs_attention(
    session: Session, *, calls_only: bool = False, resolved: bool = False
) -> list[models.AttentionItem]:
    A = models.AttentionItem
    query = (
        select(A)
        .options(joinedload(A.enrolment).joinedload(E.patient), joinedload(A.reminder))
        .where(A.resolved_at.is_not(None) if resolved else A.resolved_at.is_(None))
    )
    if calls_only:
        query = query.where(A.needs_call.is_(True))
    order = A.resolved_at.desc() if resolved else A.created_at
    return list(session.scalars(query.order_by(order, A.id).limit(500)))


def waiting_count(session: Session) -> int:
    A = models.AttentionItem
    return session.scalar(select(func.count()).where(A.resolved_at.is_(None))) or 0


def audit_log(
    session: Session, *, before: int | None = None, limit: int | None = 100,
    actor: str = "", action: str = "", enrolment_id: int | None = None,
) -> list[models.AuditEntry]:  # fmt: skip
    """Newest first; `actor`, `action` and `enrolment_id` narrow it down (an administrator
    answering "who looked at this patient?")."""
    A = models.AuditEntry
    query = select(A).order_by(A.id.desc()).limit(limit)
    if before is not None:
        query = query.where(A.id < before)
    if actor:
        query = query.where(func.lower(A.actor) == actor.strip().lower())
    if action:
        query = query.where(A.action == action.strip())
    if enrolment_id is not None:
        query = query.where(A.enrolment_id == enrolment_id)
    return list(session.scalars(query))
