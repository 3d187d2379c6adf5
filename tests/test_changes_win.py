"""Changes win (issue 13): a reschedule, an edit, a cancellation or a STOP that commits while a
batch is being sent stops everything of the old plan whose request has not left, and the new
plan still has every reminder that was due. On SQLite and PostgreSQL, through the real twilio
client to the fake on loopback; the change is made from inside the provider call of the first
message of the batch, which is the moment the issue's races hit."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, time, timedelta

import pytest
from fakes.twilio import FakeTwilio
from sqlalchemy import select
from world import PHONE, World, claim_due

from reminders.core.clock import format_day
from reminders.delivery import send
from reminders.delivery.transports import OutgoingMessage, Sent, Transports
from reminders.services import enrolments, replies
from reminders.store import lifecycle, models
from reminders.store.db import session_scope


class ChangeMidBatch:
    """Twilio, with `change` made (and committed) as the batch's first request leaves."""

    name = "twilio"

    def __init__(self, w: World, change: Callable[[], None]) -> None:
        self.w, self.change, self.requests = w, change, 0

    def send(self, message: OutgoingMessage) -> Sent:
        self.requests += 1
        if self.requests == 1:
            self.change()
        return self.w.transports.sms.send(message)

    def find_sent(self, message: OutgoingMessage, since: datetime) -> str | None:
        return self.w.transports.sms.find_sent(message, since)


def deliver_with_change(w: World, change: Callable[[], None]) -> dict[str, int]:
    changing = ChangeMidBatch(w, change)
    return w.deliver(transports=Transports(sms=changing, email=w.transports.email))


def test_a_reschedule_mid_batch_stops_the_old_plan_and_sends_the_new(
    w: World, fake_twilio: FakeTwilio
) -> None:
    w.enrol(email=None)
    assert len(w.due_now()) == 3
    old_day = (w.clock.now + timedelta(hours=3)).date()
    new_day = old_day + timedelta(days=7)
    counts = deliver_with_change(w, lambda: w.enrol(email=None, date=new_day) and None)
    # The first request had left when the change committed; the other two never do.
    assert len(fake_twilio.messages) == 1
    assert (counts["sent"], counts["withheld"]) == (1, 2)
    assert {r.cancel_reason for r in w.reminders("cancelled")} == {"superseded"}
    w.deliver()
    texts = [m["body"] for m in fake_twilio.messages[1:]]
    assert texts and any("has moved" in body for body in texts)
    dated = [body for body in texts if "appointment" in body and "has moved" not in body]
    assert all(format_day(old_day) not in body for body in dated)


def test_a_cancellation_mid_batch_stops_the_rest_and_the_notice_goes(
    w: World, fake_twilio: FakeTwilio
) -> None:
    enrolment_id = w.enrol(email=None)

    def cancel() -> None:
        with session_scope(w.factory) as session:
            row = session.get(models.Enrolment, enrolment_id)
            assert row is not None
            enrolments.cancel(session, w.config, row, now=w.clock.now, actor="alice")

    counts = deliver_with_change(w, cancel)
    assert len(fake_twilio.messages) == 1 and counts["withheld"] == 2
    w.deliver()
    assert len(fake_twilio.messages) == 2
    assert "cancelled" in fake_twilio.messages[1]["body"]
    assert {r.cancel_reason for r in w.reminders("cancelled")} == {"enrolment cancelled"}


def test_a_stop_mid_batch_stops_every_text_still_to_leave(
    w: World, fake_twilio: FakeTwilio
) -> None:
    w.enrol(email=None)

    def stop() -> None:
        with session_scope(w.factory) as session:
            replies.handle_inbound(
                session, w.config.unit, sender=PHONE, body="STOP", opt_out_type=None,
                now=w.clock.now,
            )  # fmt: skip

    counts = deliver_with_change(w, stop)
    assert len(fake_twilio.messages_to(PHONE)) == 1 and counts["withheld"] == 2
    assert {r.cancel_reason for r in w.reminders("skipped")} == {"opted out"}
    w.clock.advance(minutes=5)
    w.deliver()
    assert len(fake_twilio.messages_to(PHONE)) == 1


def test_a_reschedule_while_a_batch_is_prepared_loses_nothing(
    w: World, fake_twilio: FakeTwilio
) -> None:
    """The worker has taken the rows (`sending`) and not yet let them go; the change withdraws
    them at once, and the new plan sends every one that was due, once."""
    w.enrol(email=None)
    with session_scope(w.factory) as session:
        held = lifecycle.begin(session, claim_due(session, w.clock.now), w.clock.now)
    assert len(held) == 3
    new_day = (w.clock.now + timedelta(hours=3)).date() + timedelta(days=7)
    w.enrol(email=None, date=new_day)
    assert {h.id for h in held} <= {r.id for r in w.reminders("cancelled")}
    with session_scope(w.factory) as session:  # the worker carries on
        assert send.prepare(session, held, w.config, w.clock.now) == []
    w.deliver()
    sent = {r.rule for r in w.reminders("sent")}
    # Due now under the new plan: the confirmation (never received) and the notice of the move.
    assert "booking-confirmation" in sent and len(fake_twilio.messages) == len(sent)


def test_a_change_read_before_a_worker_took_the_rows_still_loses_nothing(
    w: World, fake_twilio: FakeTwilio
) -> None:
    """The issue's lost reminders: a change that read the plan while the rows were queued,
    and then a worker took them before the change wrote. The change locks and reads the plan
    again before deciding, so what it keeps is what it sees."""
    if w.factory.kw["bind"].dialect.name == "sqlite":
        pytest.skip("SQLite: one writer; a change that read before another's write is refused")
    enrolment_id = w.enrol(email=None)
    new_day = (w.clock.now + timedelta(hours=3)).date() + timedelta(days=7)
    with w.factory() as change, change.begin():
        row = change.get(models.Enrolment, enrolment_id)
        assert row is not None and len(row.reminders) >= 3  # read while queued...
        with session_scope(w.factory) as worker:  # ... then a worker takes them
            lifecycle.begin(worker, claim_due(worker, w.clock.now), w.clock.now)
        enrolments.reschedule(
            change, w.config, row, date=new_day, time=row.local_time, now=w.clock.now,
            actor="alice",
        )  # fmt: skip
    w.deliver()
    assert "booking-confirmation" in {r.rule for r in w.reminders("sent")}
    assert w.reminders("sending", "queued") == []


def test_an_edit_during_a_retried_attempt_keeps_every_message_due(
    w: World, fake_twilio: FakeTwilio
) -> None:
    w.enrol(email=None)
    fake_twilio.script(["500", "500", "500"])
    assert w.deliver()["TransientError"] == 3
    w.enrol(email=None, arrival=time(5, 0))  # adding an arrival time: a new plan
    w.clock.advance(seconds=30)
    w.deliver()
    texts = {r.rule: r for r in w.reminders("sent")}
    assert {"booking-confirmation", "arrange-transport", "day-before"} <= set(texts)
    with session_scope(w.factory) as session:
        due = session.scalars(
            select(models.Reminder).where(models.Reminder.send_at <= w.clock.now)
        ).all()
    assert all(r.state in ("sent", "cancelled") for r in due)
