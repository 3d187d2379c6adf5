"""Patient data is purged once the retention period after an episode is over; counts, the
audit log and opt-outs stay."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from factories import make_enrolment, utc
from fastapi.testclient import TestClient
from scrape import grown, metric_values
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from reminders.config import Config
from reminders.interfaces.web.app import create_app
from reminders.services import enrolments, retention
from reminders.settings import Settings
from reminders.store import models

ENROLLED = utc(2026, 11, 20, 10)


SECRET = {"REMINDERS_SECRET_KEY": "synthetic-test-secret-for-tests-only-0123456789"}


def count(session: Session, model: type[models.Base]) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_purge_after_the_retention_period_keeps_counts_audit_and_opt_outs(
    session: Session, config: Config, database_url: str
) -> None:
    scrape = TestClient(
        create_app(Settings.from_env({"REMINDERS_DATABASE_URL": database_url, **SECRET}))
    )
    start = metric_values(scrape.get("/metrics").text)
    over = enrolments.enrol(
        session, config, make_enrolment(booking_ref="OLD-1"), now=ENROLLED, actor="alice"
    ).enrolment
    enrolments.cancel(session, config, over, now=ENROLLED, actor="alice")
    current = make_enrolment(booking_ref="NEW-1", phone="+447911100040", on=date(2027, 3, 1),
                             at=time(9, 30))  # fmt: skip
    enrolments.enrol(session, config, current, now=ENROLLED, actor="alice")
    session.add(models.OptOut(channel="sms", destination="+447911100001", source="STOP reply"))
    session.commit()
    reminders_before = count(session, models.Reminder)

    # 89 days after the cancellation: nothing goes yet.
    early = retention.purge(session, now=ENROLLED + timedelta(days=89), retention_days=90,
                            actor="retention")  # fmt: skip
    assert early == retention.Purged(0, 0, 0)
    purged = retention.purge(session, now=ENROLLED + timedelta(days=91), retention_days=90,
                             actor="retention")  # fmt: skip
    session.commit()

    assert purged.enrolments == 1 and purged.patients == 1 and purged.reminders > 0
    assert count(session, models.Enrolment) == 1
    assert count(session, models.Reminder) == reminders_before - purged.reminders
    assert count(session, models.OptOut) == 1  # STOP is honoured for ever
    actions = session.scalars(select(models.AuditEntry.action)).all()
    assert actions.count("purge") == 1 and actions.count("enrol") == 2
    totals = session.scalars(select(models.PurgedTotal)).all()
    assert sum(t.count for t in totals) == purged.reminders
    # The plan's reminders were cancelled; the notice of the cancellation was never sent here
    # (no worker runs in this test), and is purged with the rest.
    assert {t.state for t in totals} == {"cancelled", "scheduled"}

    # Counted when they were cancelled, and still counted once their rows are gone.
    counted = grown(start, metric_values(scrape.get("/metrics").text))
    cancelled = sum(v for k, v in counted.items() if 'state="cancelled"' in k)
    assert cancelled == sum(t.count for t in totals if t.state == "cancelled")


def test_an_upload_and_the_rows_it_refused_go_after_the_retention_period(
    session: Session,
) -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    for started in (now - timedelta(days=91), now - timedelta(days=10)):
        run = models.ImportRun(filename="list.csv", started_by="alice@example.org",
                               started_at=started, status="finished")  # fmt: skip
        run.refusals.append(
            models.ImportRefusal(line=2, reason="phone: not a mobile", row='{"name": "x"}')
        )
        session.add(run)
    session.flush()
    retention.purge(session, now=now, retention_days=90, actor="retention")
    session.expire_all()
    assert [r.started_at for r in session.scalars(select(models.ImportRun))] == [
        now - timedelta(days=10)
    ]
    assert count(session, models.ImportRefusal) == 1
