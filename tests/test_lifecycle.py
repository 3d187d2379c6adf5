"""A reminder's life (reminders/store/lifecycle.py), on SQLite and PostgreSQL: each move takes
only rows in its source states; a worker settles only the attempt it still holds; the caps
end a row that keeps failing; receipts only move forward. And the one-writer rule: no other
module writes a reminder's state, an attention item or an audit entry."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from reminders.store import holds, journal, lifecycle, models

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
R = models.Reminder


def reminder(session: Session, state: str = "scheduled", **values: object) -> int:
    """One SMS reminder in `state` (put there directly: this is the setup, not a move)."""
    enrolment = models.Enrolment(
        booking_ref=f"BK-{len(session.scalars(select(models.Enrolment.id)).all())}",
        patient=models.Patient(name="Megan Price", phone="+447911100010"),
        procedure="sacroplasty",
        local_date=date(2026, 12, 10),
        local_time=time(9, 30),
        timezone="Europe/London",
        starts_at=NOW + timedelta(days=9),
        enrolled_at=NOW - timedelta(days=1),
    )
    row = R(
        rule="booking-confirmation", channel="sms", send_at=NOW, deadline=NOW + timedelta(days=9),
        expires_at=NOW + timedelta(days=9), schedule_version=1, template="booking-confirmation",
    )  # fmt: skip
    enrolment.reminders.append(row)
    session.add(enrolment)
    session.flush()
    session.execute(update(R).where(R.id == row.id).values(state=state, **values))
    session.commit()
    return row.id


def fetch(session: Session, reminder_id: int) -> models.Reminder:
    session.expire_all()
    found = session.get(R, reminder_id)
    assert found is not None
    return found


def taken(session: Session, reminder_id: int) -> lifecycle.Held:
    session.execute(update(R).where(R.id == reminder_id).values(state="queued"))
    (held,) = lifecycle.begin(session, [reminder_id], NOW)
    return held


def test_the_moves_name_only_real_states() -> None:
    for move in lifecycle.MOVES.values():
        assert {*move.sources, move.target} <= set(models.REMINDER_STATES)
    # Nothing leaves a final state.
    final = {"sent", "failed", "cancelled", "skipped"}
    assert not any(set(move.sources) & final for move in lifecycle.MOVES.values())


@pytest.mark.parametrize("state", models.REMINDER_STATES)
def test_only_a_due_scheduled_row_is_claimed(session: Session, state: str) -> None:
    due = reminder(session, state)
    later = reminder(session, "scheduled", send_at=NOW + timedelta(minutes=1))
    claimed = lifecycle.claim(session, NOW, 10)
    assert claimed == ([lifecycle.Claimed(due, 0)] if state == "scheduled" else [])
    assert fetch(session, later).state == "scheduled"


def test_a_task_delivered_twice_begins_once(session: Session) -> None:
    reminder_id = reminder(session, "queued")
    assert lifecycle.begin(session, [reminder_id], NOW) == [lifecycle.Held(reminder_id, 1)]
    assert lifecycle.begin(session, [reminder_id], NOW) == []
    assert fetch(session, reminder_id).state == "sending"


def test_a_worker_settles_only_the_attempt_it_still_holds(session: Session) -> None:
    reminder_id = reminder(session)
    first = taken(session, reminder_id)
    # The sweeper took it back and another worker began a second attempt meanwhile.
    session.execute(update(R).where(R.id == reminder_id).values(state="queued"))
    second = lifecycle.begin(session, [reminder_id], NOW)[0]
    assert second.attempt == first.attempt + 1
    late = {"transport": "twilio", "seconds": 0.1}
    assert not lifecycle.sent(
        session, first, provider_id="SM1", delivery_status=None, now=NOW, **late
    )
    assert not lifecycle.fail(session, first, code="21211", message="invalid", **late)
    assert not lifecycle.unsure(session, first, code=None, message="timeout", **late)
    assert (
        lifecycle.retry(session, first, at=NOW, counts="failures", code=None, message=None) is None
    )
    assert not lifecycle.stop(session, first, lifecycle.SKIPPED, "opted out")
    assert not lifecycle.write_words(session, first, {"body": "stale words"})
    row = fetch(session, reminder_id)
    assert (row.state, row.attempts, row.provider_id, row.body) == ("sending", 2, None, None)
    assert lifecycle.sent(
        session, second, provider_id="SM2", delivery_status="queued", now=NOW, **late
    )
    assert fetch(session, reminder_id).provider_id == "SM2"


def test_a_sent_reminder_never_moves_again(session: Session) -> None:
    reminder_id = reminder(session)
    held = taken(session, reminder_id)
    assert lifecycle.sent(
        session, held, provider_id="SM1", delivery_status=None, transport="twilio",
        seconds=None, now=NOW,
    )  # fmt: skip
    assert lifecycle.retry(session, held, at=NOW, counts=None, code=None, message=None) is None
    assert lifecycle.withdraw(session, [reminder_id], "superseded") == []
    assert lifecycle.requeue_lost(session, NOW + timedelta(hours=1)) == []
    assert fetch(session, reminder_id).state == "sent"


def test_a_row_that_keeps_stopping_its_worker_is_failed_at_the_crash_cap(
    session: Session,
) -> None:
    reminder_id = reminder(session)
    ends = []
    cap = lifecycle.MAX_CRASHES
    for _ in range(cap):
        held = taken(session, reminder_id)
        ends.append(
            lifecycle.retry(session, held, at=NOW, counts="crashes", code=None, message="boom")
        )
    assert ends == ["scheduled"] * (cap - 1) + ["failed"]
    row = fetch(session, reminder_id)
    assert (row.state, row.crashes, row.error_message) == ("failed", cap, "boom")


def test_a_failing_provider_is_tried_until_the_reminder_is_worthless(session: Session) -> None:
    """An outage of minutes delays a reminder; only its expiry fails it (no count does)."""
    reminder_id = reminder(session)
    for attempt in range(30):
        held = taken(session, reminder_id)
        at = NOW + timedelta(minutes=attempt)
        assert lifecycle.retry(
            session, held, at=at, counts="failures", code="20500", message="500"
        ) == "scheduled"  # fmt: skip
    held = taken(session, reminder_id)
    worthless = NOW + timedelta(days=9)
    assert lifecycle.retry(
        session, held, at=worthless, counts="failures", code="20500", message="500"
    ) == "failed"  # fmt: skip
    assert fetch(session, reminder_id).failures == 31


def test_waiting_for_the_window_or_our_settings_counts_against_nothing(session: Session) -> None:
    reminder_id = reminder(session)
    for _ in range(lifecycle.MAX_CRASHES + 2):
        held = taken(session, reminder_id)
        assert lifecycle.retry(
            session, held, at=NOW, counts=None, code="20003", message="credentials"
        ) == "scheduled"  # fmt: skip
    row = fetch(session, reminder_id)
    assert (row.failures, row.crashes, row.attempts) == (0, 0, lifecycle.MAX_CRASHES + 2)


def test_a_retry_past_the_expiry_fails_instead(session: Session) -> None:
    reminder_id = reminder(session)
    held = taken(session, reminder_id)
    end = NOW + timedelta(days=9)
    assert (
        lifecycle.retry(session, held, at=end, counts=None, code=None, message="later") == "failed"
    )


def test_withdraw_stops_all_but_a_request_that_has_left(session: Session) -> None:
    """A change of plan withdraws pending rows and rows a worker holds whose request has not
    been let go; one whose request left may reach the patient, and is left to its worker."""
    pending = [reminder(session, "scheduled"), reminder(session, "queued")]
    held = reminder(session, "sending")
    flying = reminder(session, "sending", requested_at=NOW)
    withdrawn = [*pending, held]
    assert lifecycle.withdraw(session, [*withdrawn, flying], "superseded") == withdrawn
    assert [fetch(session, r).cancel_reason for r in withdrawn] == ["superseded"] * 3
    assert fetch(session, flying).state == "sending"


LEASE = timedelta(minutes=1)


def test_go_lets_a_request_leave_only_while_everything_still_holds(session: Session) -> None:
    """The last check before a request leaves, and what it says when the answer is no."""
    ok = reminder(session)
    held = taken(session, ok)
    session.execute(update(R).where(R.id == ok).values(destination="+447911100010"))
    assert holds.go(session, held, NOW, lease=LEASE) == NOW
    assert fetch(session, ok).requested_at == NOW
    assert holds.go(session, held, NOW, lease=LEASE) == holds.ELSEWHERE  # once only

    def refused(why: object, **change: object) -> None:
        reminder_id = reminder(session)
        held = taken(session, reminder_id)
        session.execute(update(R).where(R.id == reminder_id).values(
            destination="+447911100010", **change))  # fmt: skip
        assert holds.go(session, held, NOW, lease=LEASE) == why
        assert fetch(session, reminder_id).requested_at is None

    refused((lifecycle.CANCELLED, "superseded"), schedule_version=0)
    refused((lifecycle.SKIPPED, "too late to be useful"), expires_at=NOW)
    refused(holds.LEASE_PASSED, sending_at=NOW - LEASE)
    session.add(models.OptOut(channel="sms", destination="+447911100010", source="STOP reply"))
    refused((lifecycle.SKIPPED, "opted out"))


def test_an_opt_out_stops_what_a_worker_holds_but_has_not_let_go(session: Session) -> None:
    waiting = reminder(session, "scheduled")
    held = reminder(session, "sending")
    flying = reminder(session, "sending", requested_at=NOW)
    assert lifecycle.fence_opted_out(session, "sms", "+447911100010") == [held]
    assert lifecycle.fence_opted_out(session, "email", "megan.price@example.org") == []
    session.commit()
    assert [fetch(session, r).state for r in (waiting, held, flying)] == [
        "scheduled", "skipped", "sending",
    ]  # fmt: skip
    assert fetch(session, held).cancel_reason == "opted out"


def test_the_sweeper_counts_a_stopped_worker_as_a_crash(session: Session) -> None:
    reminder_id = reminder(session)
    for crash in range(1, lifecycle.MAX_CRASHES + 1):
        taken(session, reminder_id)
        released, failed = lifecycle.release_unwritten(session, NOW + timedelta(minutes=5), NOW)
        assert (released, failed) == (
            ([], [reminder_id]) if crash == lifecycle.MAX_CRASHES else ([reminder_id], [])
        )
    row = fetch(session, reminder_id)
    assert (row.state, row.crashes) == ("failed", lifecycle.MAX_CRASHES)
    assert row.error_message and "stopped" in row.error_message


def test_receipts_only_move_a_message_forward(session: Session) -> None:
    reminder_id = reminder(
        session, "sent", provider_id="SM1", delivery_status="queued", transport="twilio"
    )

    def receipt(provider_id: str, status: str, code: str | None = None) -> object:
        return lifecycle.receipt(session, provider_id, status, code, transport="twilio")

    assert receipt("SM1", "delivered") is not None
    assert receipt("SM1", "sent") is None  # late: changes nothing
    assert receipt("SM1", "failed", "30003") is None  # final already
    # Another transport's message with that id (an email's): not Twilio's to change.
    assert lifecycle.receipt(session, "SM1", "failed", "30003", transport="smtp") is None
    assert receipt("SM-unknown", "delivered") is None
    assert fetch(session, reminder_id).delivery_status == "delivered"


def test_the_journal_says_a_waiting_entry_once(session: Session) -> None:
    notes = [
        journal.note(session, "late-enrolment", "Too late.", now=NOW),
        journal.note(session, "late-enrolment", "Too late.", now=NOW),
        journal.note(session, "reply", "Thanks", now=NOW),
        journal.note(session, "reply", "Thanks", now=NOW),
    ]
    assert [n is not None for n in notes] == [True, False, True, True]
    assert notes[0] is not None and notes[0].needs_call
    notes[0].resolved_at = NOW
    assert journal.note(session, "late-enrolment", "Too late.", now=NOW) is not None
    ever = journal.note(session, "not-delivered", "Call.", now=NOW)
    assert ever is not None
    ever.resolved_at = NOW
    assert journal.note(session, "not-delivered", "Call.", now=NOW) is None


PACKAGE = Path(__file__).resolve().parent.parent / "reminders"
# A state written anywhere: an assignment to `.state`, or `state=`/`"state":` with a value.
STATE_WRITE = re.compile(r"\.state\s*=[^=]|\bstate\s*=\s*[\"']|[\"']state[\"']\s*:\s*[\"']")


def sources(*excluded: str) -> dict[str, str]:
    return {
        str(path.relative_to(PACKAGE)): path.read_text()
        for path in PACKAGE.rglob("*.py")
        if "migrations" not in path.parts and path.name not in excluded
    }


def test_only_the_lifecycle_writes_a_reminders_state() -> None:
    writers = [name for name, text in sources("lifecycle.py").items() if STATE_WRITE.search(text)]
    assert writers == []


def test_only_the_journal_writes_attention_items_and_audit_entries() -> None:
    writers = [
        name
        for name, text in sources("journal.py").items()
        if re.search(r"\b(AttentionItem|AuditEntry)\(", text) and not name.endswith("models.py")
    ]
    assert writers == []
