"""Delivery through the real twilio client and smtplib to servers on loopback, on SQLite and
PostgreSQL: each reminder sent once, retried when that can help, never when it cannot, and
settled with the provider when an answer was lost. (tests/test_workers.py runs the same through
real Celery workers and Redis.)"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from email.message import EmailMessage

from fakes.smtp import FakeSmtp
from fakes.twilio import FakeTwilio
from fastapi.testclient import TestClient
from scrape import grown, metric_values
from sqlalchemy import select, update
from world import EMAIL, PHONE, World, claim_due

from reminders.config import Config
from reminders.core.clock import format_day
from reminders.delivery import send, settle, sweep
from reminders.delivery.transports import OutgoingMessage, Sent, Transports
from reminders.interfaces.web.app import create_app
from reminders.services import enrolments
from reminders.settings import Settings
from reminders.store import lifecycle, models
from reminders.store.db import session_scope


def test_due_reminders_reach_twilio_and_the_mail_server_once(
    w: World, fake_twilio: FakeTwilio, fake_smtp: FakeSmtp
) -> None:
    w.enrol()
    due = w.due_now()
    sms_due = [r for r in due if r.channel == "sms"]
    assert {r.rule for r in sms_due} == {"booking-confirmation", "arrange-transport", "day-before"}

    shown = w.words()  # what the patient page says they will get
    counts = w.deliver()
    assert counts["sent"] == len(due), (counts, [r.error_message for r in w.reminders()])

    texts = fake_twilio.messages_to(PHONE)
    assert sorted(m["body"] for m in texts) == sorted(shown[r.id] for r in sms_due)
    # ... and what was sent is kept, with the version of the templates that wrote it.
    sent = {r.id: r for r in w.reminders("sent")}
    assert all(sent[r.id].body == shown[r.id] and sent[r.id].template_version for r in due)
    for message in texts:
        assert message["messaging_service_sid"] == "MG" + "0" * 32
        assert message["status_callback"] == (
            "https://reminders.example.org/webhooks/twilio/status"
        )
    emails = fake_smtp.to(EMAIL)
    assert len(emails) == len(due) - len(sms_due)
    check_email(emails[0])

    sent = w.reminders("sent")
    assert {r.id for r in sent} == {r.id for r in due}
    by_sid = {m["sid"] for m in texts}
    assert {r.provider_id for r in sent if r.channel == "sms"} == by_sid
    assert {r.transport for r in sent} == {"twilio", "smtp"}
    assert all(r.attempts == 1 and r.sent_at == w.clock.now for r in sent)

    # The same batch delivered again (a redelivered task) sends nothing.
    again = send.send_reminders(
        w.factory, w.config, w.transports, [r.id for r in due], clock=w.clock
    )
    assert again == {}
    assert len(fake_twilio.messages) == len(sms_due)
    assert len(fake_smtp.received) == len(due) - len(sms_due)


def check_email(email: EmailMessage) -> None:
    assert email["Subject"]
    link, mailto = str(email["List-Unsubscribe"]).split(", ")
    assert link.startswith("<https://reminders.example.org/unsubscribe/")
    assert mailto == "<mailto:painunit@example.org?subject=unsubscribe>"
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert email["Message-ID"].startswith("<reminder-")
    kinds = [part.get_content_type() for part in email.walk()]
    assert "text/plain" in kinds and "text/html" in kinds and "text/calendar" in kinds
    calendar = next(p for p in email.walk() if p.get_content_type() == "text/calendar")
    assert "BEGIN:VEVENT" in calendar.get_content()
    plain = email.get_body(preferencelist=("plain",))
    assert plain is not None and "020 7946 0000" in plain.get_content()


def test_a_row_is_claimed_once(w: World) -> None:
    w.enrol()
    with session_scope(w.factory) as first:
        claimed = claim_due(first, w.clock.now)
    with session_scope(w.factory) as second:
        assert claim_due(second, w.clock.now) == []
    assert claimed and {r.state for r in w.reminders() if r.id in claimed} == {"queued"}


def test_cancelled_opted_out_and_worthless_reminders_are_not_sent(
    w: World, fake_twilio: FakeTwilio, fake_smtp: FakeSmtp
) -> None:
    # Opted out of SMS after the reminders were queued: email still goes.
    w.enrol()
    with session_scope(w.factory) as session:
        ids = claim_due(session, w.clock.now)
        session.add(models.OptOut(channel="sms", destination=PHONE, source="STOP reply"))
    send.send_reminders(w.factory, w.config, w.transports, ids, clock=w.clock)
    assert fake_twilio.messages == []
    assert len(fake_smtp.received) == len(ids) // 2
    skipped = w.reminders("skipped")
    assert {r.channel for r in skipped} == {"sms"}
    assert {r.cancel_reason for r in skipped} == {"opted out"}

    # Cancelled while queued: the cancellation wins.
    other = w.enrol(booking_ref="BK-2002",
                           phone="+447911100011", email="o@example.org")  # fmt: skip
    with session_scope(w.factory) as session:
        ids = claim_due(session, w.clock.now)
        row = session.get(models.Enrolment, other)
        assert row is not None
        enrolments.cancel(session, w.config, row, now=w.clock.now, actor="alice")
    assert send.send_reminders(w.factory, w.config, w.transports, ids, clock=w.clock) == {}
    assert fake_twilio.messages_to("+447911100011") == []
    # ... and what goes instead is the notice that it is cancelled.
    w.deliver()
    (notice,) = fake_twilio.messages_to("+447911100011")
    assert "has been cancelled" in notice["body"]

    # Worthless by the time a worker gets to it (the queue was stuck for hours).
    w.enrol(booking_ref="BK-2003",
                   phone="+447911100012", email="w@example.org")  # fmt: skip
    with session_scope(w.factory) as session:
        ids = claim_due(session, w.clock.now)
    w.clock.advance(hours=4)
    counts = send.send_reminders(w.factory, w.config, w.transports, ids, clock=w.clock)
    assert counts == {"held": len(ids), "skipped": len(ids)}
    assert fake_twilio.messages_to("+447911100012") == []
    late = [r for r in w.reminders("skipped") if r.id in ids]
    assert {r.cancel_reason for r in late} == {"too late to be useful"}


def test_500_and_429_are_retried_with_backoff_and_sent_once(
    w: World, fake_twilio: FakeTwilio
) -> None:
    w.enrol(email=None)
    fake_twilio.script(["500", "429"])
    counts = w.deliver()
    assert counts["TransientError"] == 2
    waiting = [r for r in w.reminders("scheduled") if r.error_code]
    assert {r.error_code for r in waiting} == {"20500", "20429"}
    # After the first backoff, with up to a tenth more so that they do not all come back at once.
    base = w.clock.now + settle.RETRY_BASE
    assert all(base <= r.send_at <= base + settle.RETRY_BASE / 10 for r in waiting)
    assert w.deliver().get("sent") is None  # not yet due
    w.clock.advance(seconds=2.2)
    assert w.deliver()["sent"] == 2
    assert len(fake_twilio.messages) == 3
    bodies = [m["body"] for m in fake_twilio.messages]
    assert len(set(bodies)) == 3
    assert {r.attempts for r in w.reminders("sent") if r.rule != "day-before"} >= {2}


def test_permanent_errors_are_recorded_for_staff_and_never_retried(
    w: World, fake_twilio: FakeTwilio
) -> None:
    w.enrol(email=None)
    fake_twilio.fail_to[PHONE] = 21211
    w.deliver()
    failed = w.reminders("failed")
    assert len(failed) == 3
    assert {(r.error_code, r.error_message) for r in failed} == {
        ("21211", "invalid 'To' phone number")
    }
    w.clock.advance(hours=1)
    assert w.deliver() == {}
    assert fake_twilio.requests["create"] == 3
    with session_scope(w.factory) as session:
        items = session.scalars(select(models.AttentionItem)).all()
        failed = [i for i in items if i.kind == "delivery-failed"]
        assert len(failed) == 3
        assert "invalid 'To' phone number (code 21211)" in failed[0].message
        notes = {i.message.split(": ", 1)[1] for i in items if i.kind == "fallback"}
        assert notes == {"the text failed. There is no email address to use instead."}


def test_a_timeout_after_twilio_accepted_is_settled_without_a_second_message(
    w: World, fake_twilio: FakeTwilio
) -> None:
    w.enrol(email=None)
    fake_twilio.accept_timeout_delay = 4  # longer than the project's 2-second timeout
    fake_twilio.script(["timeout-after-accept", "ok", "timeout-before-accept"])
    counts = w.deliver()
    assert counts["AmbiguousError"] == 2 and counts["sent"] == 1
    stuck = w.reminders("sending")
    assert len(stuck) == 2
    assert len(fake_twilio.messages) == 2  # one accepted before its timeout, one answered

    # Not yet stuck for long enough: the sweeper leaves in-flight work alone.
    assert sweep.sweep(w.factory, w.config, w.transports, clock=w.clock)["found"] == 0
    w.clock.advance(seconds=6)
    swept = sweep.sweep(w.factory, w.config, w.transports, clock=w.clock)
    assert swept == {
        "requeued": 0, "found": 1, "resent": 1, "unsure": 0, "unknown": 0, "failed": 0,
        "escalated": 0,
    }  # fmt: skip
    w.deliver()
    assert len(w.reminders("sent")) == 3
    bodies = [m["body"] for m in fake_twilio.messages]
    assert len(bodies) == len(set(bodies)) == 3


def test_the_sweeper_puts_back_work_whose_task_was_lost(w: World) -> None:
    w.enrol()
    with session_scope(w.factory) as session:
        claimed = claim_due(session, w.clock.now)  # and the task never arrives
    w.clock.advance(seconds=6)
    assert sweep.sweep(w.factory, w.config, w.transports, clock=w.clock)["requeued"] == len(claimed)
    assert w.deliver()["sent"] == len(claimed)


def test_the_sweeper_puts_back_work_whose_worker_died_before_writing_it(
    w: World, fake_twilio: FakeTwilio
) -> None:
    w.enrol(email=None)
    with session_scope(w.factory) as session:
        claimed = claim_due(session, w.clock.now)
    with session_scope(w.factory) as session:  # taken into `sending`, and then the kill
        held = {h.id: h.attempt for h in lifecycle.begin(session, claimed, w.clock.now)}
    assert held and {r.body for r in w.reminders("sending")} == {None}
    w.clock.advance(seconds=6)
    swept = sweep.sweep(w.factory, w.config, w.transports, clock=w.clock)
    assert swept["requeued"] == len(held)
    assert w.deliver()["sent"] == len(held)
    assert len(fake_twilio.messages) == len(held)  # each once


def test_without_credentials_messages_are_recorded_not_sent(w: World) -> None:
    config = Config.load(Settings.from_env({"REMINDERS_SENDING_WINDOW": "00:00-24:00"}))
    w.enrol(config=config)
    outbox = Transports.from_settings(config.settings)
    counts = w.deliver(config=config, transports=outbox)
    sent = w.reminders("sent")
    assert counts["sent"] == len(sent) > 0
    assert {r.transport for r in sent} == {"outbox"}


def test_a_reschedule_takes_effect_on_work_already_queued(
    w: World, fake_twilio: FakeTwilio
) -> None:
    w.enrol(email=None)
    with session_scope(w.factory) as session:
        queued = claim_due(session, w.clock.now)
    old_day = (w.clock.now + timedelta(hours=3)).date()  # as w.enrol books it
    new_day = old_day + timedelta(days=7)
    # Moved to next week while the old reminders sat in Redis.
    w.enrol(email=None, date=new_day)
    # What no longer applies (the day-before message for the old date) is not sent; what
    # does (the booking confirmation, due now either way) goes, with the new date in it.
    send.send_reminders(w.factory, w.config, w.transports, queued, clock=w.clock)
    assert {r.cancel_reason for r in w.reminders("cancelled")} == {"superseded"}
    assert "day-before" in {r.rule for r in w.reminders("cancelled")}
    w.deliver()
    texts = [m["body"] for m in fake_twilio.messages]
    assert texts and all("Megan" in body for body in texts)
    appointments = [body for body in texts if "appointment" in body]
    assert appointments and all(format_day(new_day) in body for body in appointments)
    # No message puts the appointment on the old day; the notice of the move says it was.
    assert not any(f"is on {format_day(old_day)}" in body for body in texts)
    (moved,) = [body for body in texts if "has moved" in body]
    assert f"It was on {format_day(old_day)}" in moved


def test_a_refused_email_address_is_recorded_and_not_retried(w: World, fake_smtp: FakeSmtp) -> None:
    w.enrol(phone=None)
    fake_smtp.refuse[EMAIL] = "550 5.1.1 No such user"
    w.deliver()
    failed = w.reminders("failed")
    assert len(failed) == 3
    assert {r.error_code for r in failed} == {"550"}
    assert all("No such user" in (r.error_message or "") for r in failed)
    assert fake_smtp.received == []


def test_a_connection_cut_after_twilio_accepted_is_settled_not_resent(
    w: World, fake_twilio: FakeTwilio
) -> None:
    w.enrol(email=None)
    fake_twilio.script(["reset-after-accept"])
    counts = w.deliver()
    assert counts["AmbiguousError"] == 1
    w.clock.advance(seconds=6)
    assert sweep.sweep(w.factory, w.config, w.transports, clock=w.clock)["found"] == 1
    bodies = [m["body"] for m in fake_twilio.messages]
    assert len(bodies) == len(set(bodies)) == 3
    assert len(w.reminders("sent")) == 3


def test_a_late_result_never_overwrites_a_newer_attempt(w: World, fake_twilio: FakeTwilio) -> None:
    """A first attempt's send is slow; meanwhile the sweeper puts the row back and a second
    attempt takes it. When the slow send returns, its result must not be recorded over the
    second attempt's."""
    w.enrol(email=None)
    second: dict[int, int] = {}

    class Slow:
        name = "twilio"

        def send(self, message: OutgoingMessage) -> Sent:
            if not second:  # once, while the first attempt is in flight
                w.clock.advance(seconds=6)
                sweep.sweep(w.factory, w.config, w.transports, clock=w.clock)
                with session_scope(w.factory) as session:
                    again = claim_due(session, w.clock.now)
                    second.update(
                        {h.id: h.attempt for h in lifecycle.begin(session, again, w.clock.now)}
                    )
            return w.transports.sms.send(message)

        def find_sent(self, message: OutgoingMessage, since: datetime) -> str | None:
            return None  # nothing has reached Twilio yet when the sweeper asks

    slow = Transports(sms=Slow(), email=w.transports.email)
    counts = w.deliver(transports=slow)
    # The slow one's result is not recorded; its batch-mates never leave at all, as their
    # worker's last check finds the rows are no longer its own.
    assert counts["settled-elsewhere"] == 1 and counts["withheld"] == 2
    rows = [r for r in w.reminders() if r.id in second]
    assert len(rows) == 3 and {(r.state, r.attempts) for r in rows} == {("sending", 2)}
    assert all(r.provider_id is None for r in rows)


def test_wrong_credentials_keep_reminders_waiting_and_tell_staff_once(
    w: World, delivery_env: dict[str, str], fake_twilio: FakeTwilio
) -> None:
    config = Config.load(Settings.from_env({**delivery_env, "TWILIO_AUTH_TOKEN": "wrong"}))
    w.enrol(config=config, email=None)
    wrong = Transports.from_settings(config.settings)
    for _ in range(3):
        w.deliver(config=config, transports=wrong)
        w.clock.advance(minutes=1)
    waiting = w.reminders("scheduled")
    assert len([r for r in waiting if r.error_code == "20003"]) == 3
    # Our settings, not the reminders': none of those attempts counts against them.
    assert all(r.failures == 0 and r.crashes == 0 for r in waiting)
    with session_scope(w.factory) as session:
        items = session.scalars(select(models.AttentionItem)).all()
        assert [i.kind for i in items] == ["configuration"]
        assert items[0].message.startswith("SMS is not being sent: Twilio refused our account")


def test_a_safety_critical_instruction_not_delivered_by_its_deadline_goes_on_the_call_list(
    w: World, fake_twilio: FakeTwilio
) -> None:
    # Fasting instructions for a sedated patient with only a mobile, which Twilio refuses.
    fake_twilio.fail_to[PHONE] = 21211
    w.enrol(email=None, sedation=True)
    w.deliver()
    fasting = next(r for r in w.reminders() if r.rule == "fasting")
    assert fasting.state == "failed" and fasting.deadline < w.clock.now
    assert sweep.sweep(w.factory, w.config, w.transports, clock=w.clock)["escalated"] == 1
    assert sweep.sweep(w.factory, w.config, w.transports, clock=w.clock)["escalated"] == 0
    with session_scope(w.factory) as session:
        calls = session.scalars(
            select(models.AttentionItem).where(models.AttentionItem.kind == "not-delivered")
        ).all()
        assert [(c.needs_call, c.message) for c in calls] == [
            (True, "Call the patient: 'fasting' did not reach them before it was needed.")
        ]


def test_an_sms_refused_for_good_goes_by_email_once_and_staff_see_why(
    w: World, fake_twilio: FakeTwilio, fake_smtp: FakeSmtp
) -> None:
    fake_twilio.fail_to[PHONE] = 21211
    w.enrol()
    # The booking confirmation's email twin is taken away, as for a rule that texts only.
    with session_scope(w.factory) as session:
        twin = session.scalars(
            select(models.Reminder).where(
                models.Reminder.rule == "booking-confirmation", models.Reminder.channel == "email"
            )
        ).one()
        session.delete(twin)
    w.deliver()
    w.deliver()  # the email sent instead is due at once
    emails = fake_smtp.to(EMAIL)
    subjects = Counter(str(e["Subject"]) for e in emails)
    assert len(emails) == 3 and set(subjects.values()) == {1}  # one each, none twice
    confirmation = [r for r in w.reminders("sent") if r.rule == "booking-confirmation"]
    assert [r.channel for r in confirmation] == ["email"]
    with session_scope(w.factory) as session:
        notes = sorted(
            i.message
            for i in session.scalars(
                select(models.AttentionItem).where(models.AttentionItem.kind == "fallback")
            )
        )
    assert notes == [
        "arrange-transport: the text failed. The patient gets this message by email too.",
        "booking-confirmation: the text failed. The same message is being sent by email instead.",
        "day-before: the text failed. The patient gets this message by email too.",
    ]


def test_metrics_count_each_send_as_it_happens(w: World) -> None:
    """Counted when sent, in this process (tests/test_workers.py checks the counts of worker
    processes add up)."""
    scrape = TestClient(create_app(w.config.settings))
    before = metric_values(scrape.get("/metrics").text)
    w.enrol()
    w.deliver()
    with session_scope(w.factory) as session:
        sent = session.scalars(select(models.Reminder).where(models.Reminder.state == "sent")).all()
        assert sent and all(r.provider_seconds is not None for r in sent)
    after = metric_values(scrape.get("/metrics").text)
    grew = grown(before, after)
    assert grew["reminders_provider_latency_seconds_count"] == len(sent)
    assert grew["reminders_lateness_seconds_count"] == len(sent)
    sms = sum(r.channel == "sms" for r in sent)
    assert grew['reminders_messages_total{channel="sms",state="sent"}'] == sms
    assert grew['reminders_messages_total{channel="email",state="sent"}'] == len(sent) - sms
    assert after["reminders_due_unclaimed"] == 0


def test_a_row_that_cannot_be_prepared_fails_alone_after_three_tries(
    w: World, fake_twilio: FakeTwilio
) -> None:
    """A poison row: its stored time zone is not one the zone database knows (corrupted, or
    removed from tzdata), so preparing it raises. Its batch-mates go once; it is tried on its
    own a few times, then failed with its reason and put on the staff's list."""
    w.enrol(email=None)
    poisoned = w.enrol(email=None, booking_ref="BK-2002", phone="+447911100011")
    with session_scope(w.factory) as session:
        session.execute(
            update(models.Enrolment)
            .where(models.Enrolment.id == poisoned)
            .values(timezone="Mars/Olympus_Mons")
        )
    first = w.deliver()
    assert first["sent"] == 3 and first["skipped"] == 3  # the healthy patient's three
    for _ in range(lifecycle.MAX_CRASHES - 1):
        w.clock.advance(seconds=30)
        with session_scope(w.factory) as session:
            claimed = lifecycle.claim(session, w.clock.now, 100)
        assert claimed and all(row.crashes >= 1 for row in claimed)  # so each goes alone
        send.send_reminders(
            w.factory, w.config, w.transports, [c.id for c in claimed], clock=w.clock
        )
    w.clock.advance(seconds=30)
    assert w.deliver() == {}  # nothing left to try: no loop
    failed = w.reminders("failed")
    assert len(failed) == 3 and all(r.crashes == lifecycle.MAX_CRASHES for r in failed)
    assert all(
        "could not be prepared (ZoneInfoNotFoundError)" in (r.error_message or "") for r in failed
    )
    assert sorted(m["to"] for m in fake_twilio.messages) == [PHONE] * 3
    with session_scope(w.factory) as session:
        items = session.scalars(select(models.AttentionItem)).all()
    assert len(items) == 3 and {i.kind for i in items} == {"delivery-failed"}
    assert all(i.enrolment_id == poisoned and "could not be prepared" in i.message for i in items)
