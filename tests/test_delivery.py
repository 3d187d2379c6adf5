"""Delivery through the real twilio client and smtplib to servers on loopback, on SQLite and
PostgreSQL: each reminder sent once, retried when that can help, never when it cannot, and
settled with the provider when an answer was lost. (tests/test_workers.py runs the same through
real Celery workers and Redis.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
from fakes.smtp import FakeSmtp
from fakes.twilio import FakeTwilio
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from reminders import delivery, models, services
from reminders.config import Config
from reminders.db import make_sessionmaker, session_scope
from reminders.enrolment import Enrolment
from reminders.settings import Settings
from reminders.transports import OutgoingMessage, Sent

PHONE = "+447911100010"
EMAIL = "megan.price@example.org"


class Clock:
    """The time the delivery code sees; tests move it on instead of waiting."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def factory(db_engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(db_engine)


@pytest.fixture
def live_config(delivery_env: dict[str, str]) -> Config:
    return Config.load(Settings.from_env(delivery_env))


@pytest.fixture
def transports(live_config: Config) -> delivery.Transports:
    return delivery.Transports.from_settings(live_config.settings)


def enrol_same_day(
    factory: sessionmaker[Session], config: Config, clock: Clock, **fields: object
) -> int:
    """A sacroplasty three hours from now: its booking, transport and day-before messages
    are all due at once."""
    start = (clock.now + timedelta(hours=3)).astimezone(UTC)
    values: dict[str, object] = dict(
        name="Megan Price", procedure="sacroplasty", date=start.date(), time=start.time(),
        timezone=__import__("zoneinfo").ZoneInfo("UTC"), booking_ref="BK-2001",
        phone=PHONE, email=EMAIL, sedation=False,
    )  # fmt: skip
    values.update(fields)
    with session_scope(factory) as session:
        result = services.enrol(
            session,
            config,
            Enrolment(**values),
            now=clock.now,
            actor="alice",  # type: ignore[arg-type]
        )
        return result.enrolment.id


def deliver(
    factory: sessionmaker[Session], config: Config, transports: delivery.Transports, clock: Clock
) -> dict[str, int]:
    """One dispatcher round and the sends it queues, in this process."""
    with session_scope(factory) as session:
        ids = delivery.claim_due(session, clock.now)
    return delivery.send_reminders(factory, config, transports, ids, clock=clock)


def reminders(factory: sessionmaker[Session], *states: str) -> list[models.Reminder]:
    with session_scope(factory) as session:
        query = select(models.Reminder).order_by(models.Reminder.id)
        if states:
            query = query.where(models.Reminder.state.in_(states))
        return list(session.scalars(query))


def due_now(factory: sessionmaker[Session], clock: Clock) -> list[models.Reminder]:
    return [r for r in reminders(factory, "scheduled") if r.send_at <= clock.now]


def test_due_reminders_reach_twilio_and_the_mail_server_once(
    factory: sessionmaker[Session],
    live_config: Config,
    transports: delivery.Transports,
    clock: Clock,
    fake_twilio: FakeTwilio,
    fake_smtp: FakeSmtp,
) -> None:
    enrol_same_day(factory, live_config, clock)
    due = due_now(factory, clock)
    sms_due = [r for r in due if r.channel == "sms"]
    assert {r.rule for r in sms_due} == {"booking-confirmation", "arrange-transport", "day-before"}

    counts = deliver(factory, live_config, transports, clock)
    assert counts["sent"] == len(due), (counts, [r.error_message for r in reminders(factory)])

    texts = fake_twilio.messages_to(PHONE)
    assert sorted(m["body"] for m in texts) == sorted(r.body for r in sms_due)
    for message in texts:
        assert message["messaging_service_sid"] == "MG" + "0" * 32
        assert message["status_callback"] == (
            "https://reminders.example.org/webhooks/twilio/status"
        )
    emails = fake_smtp.to(EMAIL)
    assert len(emails) == len(due) - len(sms_due)
    check_email(emails[0])

    sent = reminders(factory, "sent")
    assert {r.id for r in sent} == {r.id for r in due}
    by_sid = {m["sid"] for m in texts}
    assert {r.provider_id for r in sent if r.channel == "sms"} == by_sid
    assert {r.transport for r in sent} == {"twilio", "smtp"}
    assert all(r.attempts == 1 and r.sent_at == clock.now for r in sent)

    # The same batch delivered again (a redelivered task) sends nothing.
    again = delivery.send_reminders(
        factory, live_config, transports, [r.id for r in due], clock=clock
    )
    assert again == {}
    assert len(fake_twilio.messages) == len(sms_due)
    assert len(fake_smtp.received) == len(due) - len(sms_due)


def check_email(email: EmailMessage) -> None:
    assert email["Subject"]
    assert email["List-Unsubscribe"] == "<mailto:painunit@example.org?subject=unsubscribe>"
    assert email["Message-ID"].startswith("<reminder-")
    kinds = [part.get_content_type() for part in email.walk()]
    assert "text/plain" in kinds and "text/html" in kinds and "text/calendar" in kinds
    calendar = next(p for p in email.walk() if p.get_content_type() == "text/calendar")
    assert "BEGIN:VEVENT" in calendar.get_content()
    plain = email.get_body(preferencelist=("plain",))
    assert plain is not None and "020 7946 0000" in plain.get_content()


def test_a_row_is_claimed_once(
    factory: sessionmaker[Session], live_config: Config, clock: Clock
) -> None:
    enrol_same_day(factory, live_config, clock)
    with session_scope(factory) as first:
        claimed = delivery.claim_due(first, clock.now)
    with session_scope(factory) as second:
        assert delivery.claim_due(second, clock.now) == []
    assert claimed and {r.state for r in reminders(factory) if r.id in claimed} == {"queued"}


def test_cancelled_opted_out_and_worthless_reminders_are_not_sent(
    factory: sessionmaker[Session],
    live_config: Config,
    transports: delivery.Transports,
    clock: Clock,
    fake_twilio: FakeTwilio,
    fake_smtp: FakeSmtp,
) -> None:
    # Opted out of SMS after the reminders were queued: email still goes.
    enrol_same_day(factory, live_config, clock)
    with session_scope(factory) as session:
        ids = delivery.claim_due(session, clock.now)
        session.add(models.OptOut(channel="sms", destination=PHONE, source="STOP reply"))
    delivery.send_reminders(factory, live_config, transports, ids, clock=clock)
    assert fake_twilio.messages == []
    assert len(fake_smtp.received) == len(ids) // 2
    skipped = reminders(factory, "skipped")
    assert {r.channel for r in skipped} == {"sms"}
    assert {r.cancel_reason for r in skipped} == {"opted out"}

    # Cancelled while queued: the cancellation wins.
    other = enrol_same_day(factory, live_config, clock, booking_ref="BK-2002",
                           phone="+447911100011", email="o@example.org")  # fmt: skip
    with session_scope(factory) as session:
        ids = delivery.claim_due(session, clock.now)
        row = session.get(models.Enrolment, other)
        assert row is not None
        services.cancel(session, live_config, row, now=clock.now, actor="alice")
    assert delivery.send_reminders(factory, live_config, transports, ids, clock=clock) == {}
    assert fake_twilio.messages_to("+447911100011") == []

    # Worthless by the time a worker gets to it (the queue was stuck for hours).
    enrol_same_day(factory, live_config, clock, booking_ref="BK-2003",
                   phone="+447911100012", email="w@example.org")  # fmt: skip
    with session_scope(factory) as session:
        ids = delivery.claim_due(session, clock.now)
    clock.advance(hours=4)
    counts = delivery.send_reminders(factory, live_config, transports, ids, clock=clock)
    assert counts == {"held": len(ids), "skipped": len(ids)}
    assert fake_twilio.messages_to("+447911100012") == []
    late = [r for r in reminders(factory, "skipped") if r.id in ids]
    assert {r.cancel_reason for r in late} == {"too late to be useful"}


def test_500_and_429_are_retried_with_backoff_and_sent_once(
    factory: sessionmaker[Session],
    live_config: Config,
    transports: delivery.Transports,
    clock: Clock,
    fake_twilio: FakeTwilio,
) -> None:
    enrol_same_day(factory, live_config, clock, email=None)
    fake_twilio.script(["500", "429"])
    counts = deliver(factory, live_config, transports, clock)
    assert counts["TransientError"] == 2
    waiting = [r for r in reminders(factory, "scheduled") if r.error_code]
    assert {r.error_code for r in waiting} == {"20500", "20429"}
    assert all(r.send_at == clock.now + delivery.RETRY_BASE for r in waiting)
    assert deliver(factory, live_config, transports, clock).get("sent") is None  # not yet due
    clock.advance(seconds=2)
    assert deliver(factory, live_config, transports, clock)["sent"] == 2
    assert len(fake_twilio.messages) == 3
    bodies = [m["body"] for m in fake_twilio.messages]
    assert len(set(bodies)) == 3
    assert {r.attempts for r in reminders(factory, "sent") if r.rule != "day-before"} >= {2}


def test_permanent_errors_are_recorded_for_staff_and_never_retried(
    factory: sessionmaker[Session],
    live_config: Config,
    transports: delivery.Transports,
    clock: Clock,
    fake_twilio: FakeTwilio,
) -> None:
    enrol_same_day(factory, live_config, clock, email=None)
    fake_twilio.fail_to[PHONE] = 21211
    deliver(factory, live_config, transports, clock)
    failed = reminders(factory, "failed")
    assert len(failed) == 3
    assert {(r.error_code, r.error_message) for r in failed} == {
        ("21211", "invalid 'To' phone number")
    }
    clock.advance(hours=1)
    assert deliver(factory, live_config, transports, clock) == {}
    assert fake_twilio.requests["create"] == 3
    with session_scope(factory) as session:
        items = session.scalars(select(models.AttentionItem)).all()
        assert [i.kind for i in items] == ["delivery-failed"] * 3
        assert "invalid 'To' phone number (code 21211)" in items[0].message


def test_a_timeout_after_twilio_accepted_is_settled_without_a_second_message(
    factory: sessionmaker[Session],
    live_config: Config,
    transports: delivery.Transports,
    clock: Clock,
    fake_twilio: FakeTwilio,
) -> None:
    enrol_same_day(factory, live_config, clock, email=None)
    fake_twilio.accept_timeout_delay = 4  # longer than the project's 2-second timeout
    fake_twilio.script(["timeout-after-accept", "ok", "timeout-before-accept"])
    counts = deliver(factory, live_config, transports, clock)
    assert counts["AmbiguousError"] == 2 and counts["sent"] == 1
    stuck = reminders(factory, "sending")
    assert len(stuck) == 2
    assert len(fake_twilio.messages) == 2  # one accepted before its timeout, one answered

    # Not yet stuck for long enough: the sweeper leaves in-flight work alone.
    assert delivery.sweep(factory, live_config, transports, clock=clock)["found"] == 0
    clock.advance(seconds=6)
    swept = delivery.sweep(factory, live_config, transports, clock=clock)
    assert swept == {"requeued": 0, "found": 1, "resent": 1, "unsure": 0}
    deliver(factory, live_config, transports, clock)
    assert len(reminders(factory, "sent")) == 3
    bodies = [m["body"] for m in fake_twilio.messages]
    assert len(bodies) == len(set(bodies)) == 3


def test_the_sweeper_puts_back_work_whose_task_was_lost(
    factory: sessionmaker[Session],
    live_config: Config,
    transports: delivery.Transports,
    clock: Clock,
) -> None:
    enrol_same_day(factory, live_config, clock)
    with session_scope(factory) as session:
        claimed = delivery.claim_due(session, clock.now)  # and the task never arrives
    clock.advance(seconds=6)
    assert delivery.sweep(factory, live_config, transports, clock=clock)["requeued"] == len(claimed)
    assert deliver(factory, live_config, transports, clock)["sent"] == len(claimed)


def test_without_credentials_messages_are_recorded_not_sent(
    factory: sessionmaker[Session], clock: Clock
) -> None:
    config = Config.load(Settings.from_env({"REMINDERS_SENDING_WINDOW": "00:00-24:00"}))
    enrol_same_day(factory, config, clock)
    outbox = delivery.Transports.from_settings(config.settings)
    counts = deliver(factory, config, outbox, clock)
    sent = reminders(factory, "sent")
    assert counts["sent"] == len(sent) > 0
    assert {r.transport for r in sent} == {"outbox"}


def test_a_reschedule_takes_effect_on_work_already_queued(
    factory: sessionmaker[Session],
    live_config: Config,
    transports: delivery.Transports,
    clock: Clock,
    fake_twilio: FakeTwilio,
) -> None:
    enrol_same_day(factory, live_config, clock, email=None)
    with session_scope(factory) as session:
        queued = delivery.claim_due(session, clock.now)
    # Moved to next week while the old reminders sat in Redis.
    enrol_same_day(
        factory, live_config, clock, email=None, date=(clock.now + timedelta(days=7)).date()
    )
    assert delivery.send_reminders(factory, live_config, transports, queued, clock=clock) == {}
    assert {r.cancel_reason for r in reminders(factory, "cancelled")} == {"superseded"}
    deliver(factory, live_config, transports, clock)
    texts = [m["body"] for m in fake_twilio.messages]
    assert texts and all("Megan" in body for body in texts)
    new_date = f"{(clock.now + timedelta(days=7)).day} "
    assert all(new_date in body for body in texts if "appointment" in body)


def test_a_refused_email_address_is_recorded_and_not_retried(
    factory: sessionmaker[Session],
    live_config: Config,
    transports: delivery.Transports,
    clock: Clock,
    fake_smtp: FakeSmtp,
) -> None:
    enrol_same_day(factory, live_config, clock, phone=None)
    fake_smtp.refuse[EMAIL] = "550 5.1.1 No such user"
    deliver(factory, live_config, transports, clock)
    failed = reminders(factory, "failed")
    assert len(failed) == 3
    assert {r.error_code for r in failed} == {"550"}
    assert all("No such user" in (r.error_message or "") for r in failed)
    assert fake_smtp.received == []


def test_a_connection_cut_after_twilio_accepted_is_settled_not_resent(
    factory: sessionmaker[Session],
    live_config: Config,
    transports: delivery.Transports,
    clock: Clock,
    fake_twilio: FakeTwilio,
) -> None:
    enrol_same_day(factory, live_config, clock, email=None)
    fake_twilio.script(["reset-after-accept"])
    counts = deliver(factory, live_config, transports, clock)
    assert counts["AmbiguousError"] == 1
    clock.advance(seconds=6)
    assert delivery.sweep(factory, live_config, transports, clock=clock)["found"] == 1
    bodies = [m["body"] for m in fake_twilio.messages]
    assert len(bodies) == len(set(bodies)) == 3
    assert len(reminders(factory, "sent")) == 3


def test_a_late_result_never_overwrites_a_newer_attempt(
    factory: sessionmaker[Session],
    live_config: Config,
    transports: delivery.Transports,
    clock: Clock,
    fake_twilio: FakeTwilio,
) -> None:
    """A first attempt's send is slow; meanwhile the sweeper puts the row back and a second
    attempt takes it. When the slow send returns, its result must not be recorded over the
    second attempt's."""
    enrol_same_day(factory, live_config, clock, email=None)
    second: dict[int, int] = {}

    class Slow:
        name = "twilio"

        def send(self, message: OutgoingMessage) -> Sent:
            if not second:  # once, while the first attempt is in flight
                clock.advance(seconds=6)
                delivery.sweep(factory, live_config, transports, clock=clock)
                with session_scope(factory) as session:
                    again = delivery.claim_due(session, clock.now)
                    second.update(delivery.begin_attempts(session, again, clock.now))
            return transports.sms.send(message)

        def find_sent(self, message: OutgoingMessage, since: datetime) -> str | None:
            return None  # nothing has reached Twilio yet when the sweeper asks

    slow = delivery.Transports(sms=Slow(), email=transports.email)
    counts = deliver(factory, live_config, slow, clock)
    assert counts["settled-elsewhere"] == 3
    rows = [r for r in reminders(factory) if r.id in second]
    assert len(rows) == 3 and {(r.state, r.attempts) for r in rows} == {("sending", 2)}
    assert all(r.provider_id is None for r in rows)


def test_wrong_credentials_keep_reminders_waiting_and_tell_staff_once(
    factory: sessionmaker[Session],
    delivery_env: dict[str, str],
    clock: Clock,
    fake_twilio: FakeTwilio,
) -> None:
    config = Config.load(Settings.from_env({**delivery_env, "TWILIO_AUTH_TOKEN": "wrong"}))
    enrol_same_day(factory, config, clock, email=None)
    wrong = delivery.Transports.from_settings(config.settings)
    for _ in range(3):
        deliver(factory, config, wrong, clock)
        clock.advance(minutes=1)
    waiting = reminders(factory, "scheduled")
    assert len([r for r in waiting if r.error_code == "20003"]) == 3
    assert all(r.attempts == 0 for r in waiting)
    with session_scope(factory) as session:
        items = session.scalars(select(models.AttentionItem)).all()
        assert [i.kind for i in items] == ["configuration"]
        assert items[0].message.startswith("SMS is not being sent: Twilio refused our account")
