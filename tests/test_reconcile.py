"""When the provider cannot be asked, and when it cannot send (issue 13), on SQLite and
PostgreSQL, through the real twilio client to the fake on loopback, on the tests' clock:
reconciliation asks again with backoff and ends every row within a bounded time, the call list
still fills, and an outage delays reminders (telling staff while it lasts) instead of failing
them for good."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fakes.twilio import FakeTwilio
from fastapi.testclient import TestClient
from scrape import metric_values
from sqlalchemy import select
from test_changes_win import deliver_with_change
from world import World

from reminders.delivery import sweep
from reminders.interfaces.web.app import create_app
from reminders.store import models
from reminders.store.db import session_scope

A = models.AttentionItem


def swept(w: World) -> dict[str, int]:
    return sweep.sweep(w.factory, w.config, w.transports, clock=w.clock)


def attention(w: World, kind: str) -> list[models.AttentionItem]:
    with session_scope(w.factory) as session:
        return list(session.scalars(select(A).where(A.kind == kind).order_by(A.id)))


@pytest.mark.parametrize("fault", [500, "hang"])
def test_a_provider_that_cannot_say_is_asked_again_then_the_outcome_is_unknown(
    w: World, fake_twilio: FakeTwilio, delivery_env: dict[str, str], fault: int | str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    w.enrol(email=None, sedation=True)  # its fasting instruction is safety-critical
    due = w.due_now()
    fake_twilio.accept_timeout_delay = 3  # past the 2-second timeout
    fake_twilio.script(["timeout-after-accept"] * len(due))
    assert w.deliver()["AmbiguousError"] == len(due)

    # /metrics shows the rows waiting in `sending`, by how long.
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    web = TestClient(create_app(w.config.settings))
    scraped = metric_values(web.get("/metrics").text)
    assert scraped['reminders_sending{age="under 1m"}'] == len(due)
    assert scraped['reminders_sending{age="over 10m"}'] == 0

    # The Messages list fails (or hangs past the timeout): nobody can say. The sweep still
    # puts the missed fasting instruction on the call list.
    fake_twilio.fail_list = fault
    w.clock.advance(seconds=6)
    first = swept(w)
    assert first["unsure"] == len(due) and first["escalated"] == 1
    fake_twilio.fail_list = 500
    asked = fake_twilio.requests["list"]
    assert swept(w)["unsure"] == 0  # not asked again before its backoff
    assert fake_twilio.requests["list"] == asked

    # Asked again, less and less often, until it has been unknown for too long; never resent.
    give_up = timedelta(seconds=w.config.settings.outcome_unknown_after)
    started = w.clock.now
    while w.reminders("sending"):
        w.clock.advance(seconds=10)
        swept(w)
        assert w.clock.now - started < give_up + timedelta(minutes=2), "still in sending"
    # Every 10 seconds that would be 60 questions a row; with backoff to a minute, 14 at most.
    assert fake_twilio.requests["list"] - asked <= 14 * len(due)
    failed = w.reminders("failed")
    assert len(failed) == len(due)
    assert all(r.error_message and r.error_message.startswith("outcome unknown") for r in failed)
    assert len(fake_twilio.messages) == len(due)
    told = attention(w, "delivery-failed")
    assert len(told) == len(due)
    calls = {item.reminder_id for item in told if item.needs_call}
    assert calls == {r.id for r in failed if r.safety_critical} and calls


def test_an_outage_delays_reminders_tells_staff_and_loses_nothing(
    w: World, fake_twilio: FakeTwilio
) -> None:
    w.enrol(email=None)
    due = len(w.due_now())
    fake_twilio.set_fault_rates(error_503=1.0)
    for _ in range(15):  # far more failures than any fixed count would allow
        w.deliver()
        w.clock.advance(seconds=25)
    assert len(w.reminders("scheduled")) >= due and not w.reminders("failed")
    (trouble,) = attention(w, "provider-trouble")
    assert trouble.resolved_at is None and trouble.message.startswith("Texts are failing")

    fake_twilio.set_fault_rates()  # it heals
    w.deliver()
    assert len(fake_twilio.messages) == due
    assert len({m["body"] for m in fake_twilio.messages}) == due
    (trouble,) = attention(w, "provider-trouble")
    assert trouble.resolved_at is not None


def test_nothing_worthless_is_sent_at_the_last_moment(w: World, fake_twilio: FakeTwilio) -> None:
    """A reminder that becomes worthless while its batch is being sent (after its words were
    written) does not leave: the last check before each request goes by the clock then."""
    w.enrol(email=None)
    due = w.due_now()
    with session_scope(w.factory) as session:
        last = session.get(models.Reminder, due[-1].id)
        assert last is not None
        last.expires_at = w.clock.now + timedelta(seconds=2)
    counts = deliver_with_change(w, lambda: w.clock.advance(seconds=3))  # within the lease
    assert counts["withheld"] == 1 and counts["sent"] == len(due) - 1
    (skipped,) = w.reminders("skipped")
    assert (skipped.id, skipped.cancel_reason) == (due[-1].id, "too late to be useful")
    assert len(fake_twilio.messages) == len(due) - 1
