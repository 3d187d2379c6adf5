"""Brand-new enrolments written in bulk, for the CSV import: a few multi-row statements (COPY
on PostgreSQL) for a whole batch instead of a dozen statements a row, which is what makes
100,000 rows take minutes rather than hours. tests/test_import.py checks that the rows are
exactly those `services.enrolments.enrol` writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from reminders.core.enrolment import Enrolment
from reminders.store import journal, models
from reminders.store.copy import insert_rows


@dataclass(frozen=True)
class Planned:
    """What a new enrolment will be stored as: worked out away from the database (and, with
    workers, in another process), so it holds only values that pickle."""

    enrolment: Enrolment
    starts_at: datetime
    reminders: list[dict[str, object]]  # the columns of each reminder's row
    warnings: list[str]  # for the needs-attention list, each once
    calls: list[str] = field(default_factory=list)  # for the call list (blood thinners)


def insert_new(session: Session, plans: list[Planned], *, now: datetime, actor: str) -> None:
    """Store brand-new enrolments (their booking references are not stored yet) with a few
    bulk statements for them all: exactly what `services.enrol` writes for each (patient,
    enrolment, reminders, late-enrolment warnings on the call list, the audit entry), in a
    fraction of the statements. Raises IntegrityError when another writer has stored one of
    the booking references meanwhile."""
    # Core inserts on the tables, not the ORM's bulk insert: that one leaves out a row's None
    # values so that server defaults apply, which splits a batch into a statement for every
    # run of rows with the same empty columns (an SMS has no subject, an email has one).
    connection = session.connection()
    patient_ids = insert_rows(
        connection,
        models.Patient,
        [plan.enrolment.columns("patient") for plan in plans],
        ids=True,
    )
    enrolment_ids = insert_rows(
        connection,
        models.Enrolment,
        [
            _enrolment_values(plan.enrolment, plan.starts_at, patient_id, now)
            for plan, patient_id in zip(plans, patient_ids, strict=True)
        ],
        ids=True,
    )
    reminders = [
        {**values, "enrolment_id": enrolment_id}
        for plan, enrolment_id in zip(plans, enrolment_ids, strict=True)
        for values in plan.reminders
    ]
    insert_rows(connection, models.Reminder, reminders)
    # As `services.enrolments.enrol` files them: late-enrolment warnings on the call list,
    # and who enrolled.
    journal.enrolled_many(
        connection,
        [
            (enrolment_id, plan.enrolment.booking_ref or "", plan.enrolment.procedure)
            for plan, enrolment_id in zip(plans, enrolment_ids, strict=True)
        ],
        [
            (enrolment_id, message)
            for plan, enrolment_id in zip(plans, enrolment_ids, strict=True)
            for message in plan.warnings
        ],
        [
            (enrolment_id, message)
            for plan, enrolment_id in zip(plans, enrolment_ids, strict=True)
            for message in plan.calls
        ],
        now=now,
        actor=actor,
    )


def _enrolment_values(
    enrolment: Enrolment, starts_at: datetime, patient_id: int, now: datetime
) -> dict[str, object]:
    return {
        **enrolment.columns("enrolment"),
        "patient_id": patient_id,
        "starts_at": starts_at,
        "status": models.ENROLMENT_ACTIVE,
        "schedule_version": 1,
        "enrolled_at": now,
    }
