"""The journal: the one writer of the staff's needs-attention list and of the audit log.

Every entry on either goes through here, so there is one answer to "will staff hear about this
twice?" (`KINDS`, below) and one shape for an audit entry. An audit entry outlives the patient's
data (the retention purge nulls its enrolment), so its detail never carries patient data: ids,
booking references and staff addresses only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, select, update
from sqlalchemy.orm import Session

from reminders.store import models
from reminders.store.copy import insert_rows

A = models.AttentionItem


@dataclass(frozen=True)
class Kind:
    """A kind of entry on the needs-attention list.

    `call`: whether it goes on the call list (None: the caller decides, as a failed message
    needs a call only when it was safety-critical). `once`: `open` adds it only if the same
    entry (kind, enrolment, words) is not already waiting; `ever` never adds it twice, even
    after it was dealt with (a missed deadline does not come round again); `always` adds every
    one (each patient reply is news). The reminder an entry links to is not part of its
    identity: a rescheduled message failing the same way is the same problem for staff.
    """

    title: str  # what staff read as the entry's label
    call: bool | None
    once: Literal["open", "ever", "always"]


KINDS: dict[str, Kind] = {
    "late-enrolment": Kind("Too late to send as planned", call=True, once="open"),
    "correction": Kind("The patient has an old instruction", call=True, once="open"),
    # A blood-thinner plan needs a clinician: none recorded, too late, or withdrawn by a change.
    "blood-thinner": Kind("A clinician must decide about a blood thinner", call=True, once="open"),
    "configuration": Kind("Messages are not going out", call=False, once="open"),
    # Open while a provider keeps failing; closed by the first message it takes again.
    "provider-trouble": Kind("The provider is failing", call=False, once="open"),
    "delivery-failed": Kind("Not delivered", call=None, once="open"),
    "fallback": Kind("Sent by email instead", call=None, once="open"),
    "not-delivered": Kind("Needed by now and not delivered", call=True, once="ever"),
    "opt-out": Kind("Opted out", call=False, once="always"),
    "reply": Kind("Patient replied", call=False, once="always"),
}


def note(
    session: Session,
    kind: str,
    message: str,
    *,
    now: datetime,
    enrolment_id: int | None = None,
    reminder_id: int | None = None,
    needs_call: bool | None = None,
) -> models.AttentionItem | None:
    """Put an entry on the needs-attention list, unless `KINDS` says it is already there.
    Returns the new entry, or None when it was a repeat."""
    rule = KINDS[kind]
    call = rule.call if rule.call is not None else bool(needs_call)
    if rule.once != "always":
        same = select(A.id).where(
            A.kind == kind,
            A.message == message,
            A.enrolment_id.is_(None) if enrolment_id is None else A.enrolment_id == enrolment_id,
        )
        if rule.once == "open":
            same = same.where(A.resolved_at.is_(None))
        if session.scalar(same.limit(1)) is not None:
            return None
    item = A(
        enrolment_id=enrolment_id,
        reminder_id=reminder_id,
        kind=kind,
        message=message,
        needs_call=call,
        created_at=now,
    )
    session.add(item)
    return item


def settle(session: Session, kind: str, message: str, *, now: datetime, by: str) -> int:
    """Close the open entries of `kind` saying `message`: the trouble they report is over.
    Returns how many were closed."""
    closed = session.execute(
        update(A)
        .where(A.kind == kind, A.message == message, A.resolved_at.is_(None))
        .values(resolved_at=now, resolved_by=by)
        .execution_options(synchronize_session=False)
    )
    return int(closed.rowcount)  # type: ignore[attr-defined]


def audit(
    session: Session,
    actor: str,
    action: str,
    *,
    now: datetime,
    enrolment_id: int | None = None,
    **detail: object,
) -> None:
    """Record who did what. `detail` must not carry patient data (see the module's note)."""
    session.add(models.AuditEntry(**audit_values(actor, action, now, enrolment_id, detail)))


def audit_values(
    actor: str, action: str, now: datetime, enrolment_id: int | None, detail: dict[str, object]
) -> dict[str, Any]:
    return {
        "at": now,
        "actor": actor,
        "action": action,
        "enrolment_id": enrolment_id,
        "detail": json.dumps(detail, default=str, sort_keys=True) if detail else None,
    }


def enrolled_many(
    connection: Connection,
    enrolled: list[tuple[int, str, str]],
    warnings: list[tuple[int, str]],
    calls: list[tuple[int, str]],
    *,
    now: datetime,
    actor: str,
) -> None:
    """What `note` and `audit` write for brand-new enrolments stored in bulk (the CSV import):
    each one's audit entry, given (enrolment id, booking reference, procedure), its
    late-enrolment warnings and its blood-thinner calls, given (enrolment id, words). The
    enrolments are new, so nothing can be waiting for them yet: de-duplication is only within
    the batch."""
    insert_rows(
        connection,
        models.AttentionItem,
        [
            {"enrolment_id": enrolment_id, "reminder_id": None, "kind": kind, "message": message,
             "needs_call": KINDS[kind].call, "created_at": now}
            for kind, notes in (("late-enrolment", warnings), ("blood-thinner", calls))
            for enrolment_id, message in dict.fromkeys(notes)
        ],
    )  # fmt: skip
    insert_rows(
        connection,
        models.AuditEntry,
        [
            audit_values(actor, "enrol", now, enrolment_id, {"booking_ref": ref, "procedure": slug})
            for enrolment_id, ref, slug in enrolled
        ],
    )
