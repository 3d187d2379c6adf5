"""The tables: UTC instants and the constraints that stop duplicates. (A reminder's states:
tests/test_lifecycle.py.)"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from reminders.store.models import (
    AuditEntry,
    Enrolment,
    OptOut,
    Patient,
    Reminder,
    UTCDateTime,
)

LONDON = ZoneInfo("Europe/London")
# 18:00 on a summer evening in London is 17:00 UTC.
PROCEDURE_START = datetime(2026, 6, 9, 18, 0, tzinfo=LONDON)


def make_patient(**overrides: Any) -> Patient:
    fields: dict[str, Any] = {
        "name": "Alice Example",
        "phone": "+447911123456",
        "email": "alice@example.org",
    }
    return Patient(**(fields | overrides))


def make_enrolment(patient: Patient | None = None, **overrides: Any) -> Enrolment:
    fields: dict[str, Any] = {
        "booking_ref": "BK-0001",
        "patient": patient or make_patient(),
        "procedure": "sacroplasty",
        "local_date": date(2026, 6, 9),
        "local_time": time(18, 0),
        "timezone": "Europe/London",
        "starts_at": PROCEDURE_START,
    }
    return Enrolment(**(fields | overrides))


def make_reminder(enrolment: Enrolment | None = None, **overrides: Any) -> Reminder:
    send_at = PROCEDURE_START - timedelta(days=2)
    fields: dict[str, Any] = {
        "enrolment": enrolment or make_enrolment(),
        "rule": "two-days-before",
        "channel": "sms",
        "send_at": send_at,
        "deadline": PROCEDURE_START,
        "expires_at": PROCEDURE_START,
        "schedule_version": 1,
        "template": "two-days-before",
        "template_version": "test",
        "language": "en-GB",
        "body": "Hello Alice, your appointment is on Tuesday 9 June at 18:00.",
    }
    return Reminder(**(fields | overrides))


def test_a_new_reminder_is_scheduled_before_it_is_ever_flushed() -> None:
    reminder = make_reminder()
    assert reminder.state == "scheduled"
    assert reminder.attempts == 0
    assert reminder.enrolment.status == "active"
    assert reminder.enrolment.schedule_version == 1


def test_instants_come_back_as_the_same_moment_in_utc(session: Session) -> None:
    new_york = datetime(2026, 3, 28, 23, 30, tzinfo=ZoneInfo("America/New_York"))
    reminder = make_reminder(send_at=new_york)
    session.add(reminder)
    session.commit()
    session.expire_all()

    stored = session.get_one(Reminder, reminder.id)
    assert stored.send_at == new_york
    assert stored.send_at.tzinfo is UTC
    assert stored.send_at == datetime(2026, 3, 29, 3, 30, tzinfo=UTC)
    assert stored.enrolment.starts_at == datetime(2026, 6, 9, 17, 0, tzinfo=UTC)
    assert stored.created_at.tzinfo is UTC


def test_instants_compare_as_moments_in_queries(session: Session) -> None:
    session.add(make_reminder(send_at=datetime(2026, 6, 7, 18, 0, tzinfo=LONDON)))
    session.commit()
    # The same moment written in another zone must find the row, and a moment a minute
    # earlier must not: SQLite compares the stored text, so both sides need the same shape.
    same_moment = datetime(2026, 6, 7, 19, 0, tzinfo=ZoneInfo("Europe/Paris"))
    assert session.scalars(select(Reminder.id).where(Reminder.send_at == same_moment)).all()
    earlier = same_moment - timedelta(minutes=1)
    assert not session.scalars(select(Reminder.id).where(Reminder.send_at <= earlier)).all()


def test_a_naive_datetime_is_refused_by_the_database_layer(session: Session) -> None:
    session.add(make_reminder(send_at=datetime(2026, 6, 7, 18, 0)))
    with pytest.raises(StatementError, match="naive datetimes are not allowed") as raised:
        session.flush()
    assert isinstance(raised.value.orig, ValueError)


@pytest.mark.parametrize("dialect", [SQLiteDialect(), PGDialect()])
def test_utc_datetime_refuses_naive_values(dialect: Any) -> None:
    with pytest.raises(ValueError, match="naive datetimes are not allowed"):
        UTCDateTime().process_bind_param(datetime(2026, 6, 7, 18, 0), dialect)


def test_booking_ref_is_unique(session: Session) -> None:
    session.add(make_enrolment(booking_ref="BK-0002"))
    session.commit()
    session.add(make_enrolment(booking_ref="BK-0002"))
    with pytest.raises(IntegrityError):
        session.commit()


def test_an_opt_out_is_recorded_once_per_channel_and_destination(session: Session) -> None:
    session.add(OptOut(channel="sms", destination="+447911123456", source="reply"))
    session.add(OptOut(channel="email", destination="+447911123456", source="reply"))
    session.commit()
    session.add(OptOut(channel="sms", destination="+447911123456", source="staff"))
    with pytest.raises(IntegrityError):
        session.commit()


def test_the_database_refuses_an_unknown_state(session: Session) -> None:
    session.add(make_reminder(state="lost"))
    with pytest.raises(IntegrityError):
        session.commit()


def test_foreign_keys_are_enforced(session: Session) -> None:
    # SQLite only checks them when told to per connection; this pins that make_engine does.
    enrolment = make_enrolment()
    session.add(enrolment)
    session.flush()
    enrolment.patient_id = 999_999
    with pytest.raises(IntegrityError):
        session.commit()


def test_reminders_are_listed_in_sending_order(session: Session) -> None:
    enrolment = make_enrolment()
    later = make_reminder(enrolment, rule="day-before", send_at=PROCEDURE_START - timedelta(1))
    earlier = make_reminder(enrolment, rule="week-before", send_at=PROCEDURE_START - timedelta(7))
    session.add_all([later, earlier])
    session.commit()
    session.expire_all()
    stored = session.get_one(Enrolment, enrolment.id)
    assert [r.rule for r in stored.reminders] == ["week-before", "day-before"]


def test_purging_a_patient_takes_their_rows_but_keeps_the_audit_log(session: Session) -> None:
    reminder = make_reminder()
    session.add(reminder)
    session.flush()
    session.add(
        AuditEntry(actor="bob@example.org", action="enrol", enrolment_id=reminder.enrolment_id)
    )
    session.commit()
    # A bulk delete, as the retention purge does it: the database, not the ORM, must cascade.
    session.execute(delete(Patient))
    session.commit()
    session.expire_all()
    assert session.scalars(select(Enrolment)).all() == []
    assert session.scalars(select(Reminder)).all() == []
    assert [(a.action, a.enrolment_id) for a in session.scalars(select(AuditEntry))] == [
        ("enrol", None)
    ]
