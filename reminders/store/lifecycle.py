"""A reminder's life: the only code that changes `Reminder.state` (and `delivery_status`).

Every change is one conditional UPDATE generated from `MOVES`: the row moves only if it is
still in one of the move's source states (and, for a row a worker holds, still at the attempt
that worker began). Zero rows back means someone else got there first: another dispatcher, the
sweeper, a reschedule. That, not a lock held across a provider call, is what keeps a message
from going out twice while dispatchers, workers, sweepers and staff all touch the same rows.

The limits are here too, so that no caller can forget them: a row whose provider keeps failing
is tried until it is worthless (`expires_at`), and one that keeps stopping the worker sending
it (`MAX_CRASHES`, a poison row) is failed with its reason instead of being tried for ever.
Callers tell staff (`journal`); this module only moves rows and says which moved.

A request leaves only after `go` has committed, in one short statement, that the worker still
holds the row within its lease, the plan is unchanged, the patient has not opted out and it is
still worth sending; a change of plan or a STOP withdraws, in its own transaction, every row
whose request has not been let go (`withdraw`, `fence_opted_out`). Whichever commits first
wins, and the other sees it.

It lives with the store because enrolments (a reschedule withdraws pending rows) and delivery
both move reminders.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, and_, case, literal, or_, select, update
from sqlalchemy.orm import Session

from reminders import metrics
from reminders.store import models
from reminders.store.counting import count, observe

R = models.Reminder
SCHEDULED, QUEUED, SENDING, SENT, FAILED, CANCELLED, SKIPPED = models.REMINDER_STATES
PENDING = models.PENDING_STATES
INITIAL = SCHEDULED  # where every new reminder starts

# The provider's transient failures (a 500, a rate limit, an answer that never came and the
# provider then did not have the message) have no cap: a reminder is tried until it is worthless
# (its `expires_at`), so an outage of minutes delays it instead of failing it for good.

# Times a worker stopped (killed, timed out, or raised unexpectedly) while it held the row. A
# batch-mate of a poison row is caught once with it; from then on a row that has crashed is
# sent on its own (`claim` says which), so only the poison row reaches this.
MAX_CRASHES = 3


@dataclass(frozen=True)
class Move:
    sources: tuple[str, ...]
    target: str
    why: str


MOVES: dict[str, Move] = {
    "claim": Move((SCHEDULED,), QUEUED, "due: the dispatcher takes it for a worker"),
    "begin": Move((QUEUED,), SENDING, "a worker takes it, committed before the provider call"),
    "requeue": Move((QUEUED,), SCHEDULED, "its task was lost: the sweeper puts it back"),
    "retry": Move((SENDING,), SCHEDULED, "it certainly did not reach the patient: later"),
    "sent": Move((SENDING,), SENT, "the provider took it"),
    "fail": Move((SENDING,), FAILED, "it cannot be sent; the reason is kept for staff"),
    "stop": Move((SENDING,), CANCELLED, "at sending: the enrolment is cancelled or moved"),
    "drop": Move((SENDING,), SKIPPED, "at sending: opted out, too late, no way to reach them"),
    "withdraw": Move(
        (*PENDING, SENDING), CANCELLED,
        "the enrolment is cancelled or moved, before its request left (`unrequested`)",
    ),
    "opt-out": Move(
        (*PENDING, SENDING), SKIPPED, "opted out, before its request left (`unrequested`)"
    ),
    "unknown": Move((SENDING,), FAILED, "the provider could not say, for too long, if it has it"),
}  # fmt: skip
E = models.Enrolment


class Held(NamedTuple):
    """A row a worker took into `sending`, at its attempt number: the fence that keeps a late
    or paused worker from settling an attempt that is no longer its own."""

    id: int
    attempt: int


def _move(session: Session, name: str, *where: ColumnElement[bool], **values: Any) -> list[int]:
    """Apply the move `name` to the rows in its source states that match `where`; the ids of
    those that moved."""
    return sorted(row.id for row in _moving(session, name, *where, **values))


FINAL = (SENT, FAILED, CANCELLED, SKIPPED)


def _moving(
    session: Session,
    name: str,
    *where: ColumnElement[bool],
    returning: tuple[Any, ...] = (),
    ordered: bool = True,
    skip_locked: bool = False,
    **values: Any,
) -> list[Any]:
    """`_move`, returning each moved row's id, channel and due time, then `returning`.

    `ordered`: the rows are locked in the order of their ids first (PostgreSQL; SQLite has one
    writer), as every statement that locks several reminders does: two of them that took the
    same rows in different orders (an import and a batch being sent) could each wait for the
    other for ever, and one would be aborted for a deadlock. `skip_locked`: rows someone holds
    a lock on are left for next time (the sweeper's way: a worker paused inside a transaction
    must not stop every other row being recovered)."""
    move = MOVES[name]
    if ordered:
        locked = (
            select(R.id)
            .where(R.state.in_(move.sources), *where)
            .order_by(R.id)
            .with_for_update(skip_locked=skip_locked)
        )
        where = (R.id.in_(locked.scalar_subquery()), *where)
    rows = list(
        session.execute(
            update(R)
            .where(R.state.in_(move.sources), *where)
            .values(state=move.target, **values)
            .returning(R.id, R.channel, R.send_at, *returning)
            .execution_options(synchronize_session=False)
        )
    )
    if move.target in FINAL:
        for row in rows:
            count(session, metrics.MESSAGES.labels(row.channel, move.target).inc)
    return rows


def held_by(held: Held) -> ColumnElement[bool]:
    """The fence: the row, at the attempt this worker began."""
    return and_(R.id == held.id, R.attempts == held.attempt)


# A row whose request has not been allowed to leave (`go`): pending, or taken by a worker that
# has not yet committed its last check. A change of plan can still stop it.
def _unrequested() -> ColumnElement[bool]:
    return or_(R.state != SENDING, R.requested_at.is_(None))


# --- the dispatcher and the worker -----------------------------------------------------------


class Claimed(NamedTuple):
    id: int
    crashes: int  # above 0: it stopped a worker before, so it is sent on its own


def claim(session: Session, now: datetime, limit: int) -> list[Claimed]:
    """Take up to `limit` due reminders for sending, oldest first.

    On PostgreSQL the inner SELECT skips rows another dispatcher has locked (FOR UPDATE SKIP
    LOCKED), so two dispatchers share the work instead of queueing behind each other; SQLite
    runs one writer at a time. The outer state check makes a row claimable exactly once."""
    due = (
        select(R.id)
        .where(R.state == SCHEDULED, R.send_at <= now)
        .order_by(R.send_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    # Locked by the SELECT above, in due order; SKIP LOCKED means it never waits for a row.
    rows = _moving(
        session, "claim", R.id.in_(due.scalar_subquery()), queued_at=now,
        returning=(R.crashes,), ordered=False,
    )  # fmt: skip
    return sorted(Claimed(row.id, row.crashes) for row in rows)


def begin(session: Session, ids: Sequence[int], now: datetime) -> list[Held]:
    """Take queued rows into `sending` for this worker. A row already taken (a task delivered
    twice, a second dispatcher's copy) is not returned, and so is not sent again. The last
    attempt's error is cleared, so what is found on a stalled row is this attempt's."""
    if not ids:
        return []
    rows = _moving(
        session, "begin", R.id.in_(ids), sending_at=now, attempts=R.attempts + 1,
        error_code=None, error_message=None, requested_at=None, asks=0, ask_after=None,
        returning=(R.attempts,),
    )  # fmt: skip
    return sorted(Held(row.id, row.attempts) for row in rows)


def write_words(session: Session, held: Held, words: dict[str, object]) -> bool:
    """Keep what the reminder says on its row, as it is about to go; False if the worker no
    longer holds it (then it must not be sent)."""
    done = session.execute(
        update(R)
        .where(held_by(held), R.state == SENDING)
        .values(**words)
        .returning(R.id)
        .execution_options(synchronize_session=False)
    ).first()
    return done is not None


def sent(
    session: Session, held: Held, *, provider_id: str, delivery_status: str | None,
    transport: str, seconds: float | None, now: datetime,
) -> bool:  # fmt: skip
    rows = _moving(
        session, "sent", held_by(held), sent_at=now, provider_id=provider_id,
        delivery_status=delivery_status, transport=transport, provider_seconds=seconds,
        error_code=None, error_message=None,
    )  # fmt: skip
    for row in rows:
        observe(session, metrics.LATENESS, (now - row.send_at).total_seconds())
        observe(session, metrics.PROVIDER_LATENCY, seconds)
    return bool(rows)


def unsure(
    session: Session, held: Held, *, code: str | None, message: str, transport: str,
    seconds: float | None,
) -> bool:  # fmt: skip
    """The request left and no answer came: the row stays `sending`, with the error, until the
    sweeper has asked the provider (`stalled`)."""
    done = session.execute(
        update(R)
        .where(held_by(held), R.state == SENDING)
        .values(
            error_code=code,
            error_message=message,
            transport=transport,
            provider_seconds=seconds,
        )
        .returning(R.id)
        .execution_options(synchronize_session=False)
    ).first()
    if done is not None:
        observe(session, metrics.PROVIDER_LATENCY, seconds)
    return done is not None


def fail(
    session: Session, held: Held, *, code: str | None, message: str, transport: str | None,
    seconds: float | None = None,
) -> bool:  # fmt: skip
    moved = _move(
        session, "fail", held_by(held), error_code=code, error_message=message,
        transport=transport, provider_seconds=seconds,
    )  # fmt: skip
    if moved:
        observe(session, metrics.PROVIDER_LATENCY, seconds)
    return bool(moved)


def retry(
    session: Session, held: Held, *, at: datetime, counts: str | None, code: str | None,
    message: str | None, transport: str | None = None, seconds: float | None = None,
) -> str | None:  # fmt: skip
    """Put the row back to go again at `at`. `counts` says what the attempt counts against:
    "failures" (the provider's), "crashes" (the worker's), or None (nothing went wrong with
    the reminder: the sending window was shut, our own settings were wrong). Returns the state
    it ended in: `scheduled`, or `failed` when `at` is past its expiry or the crash cap is
    reached; None when the worker no longer holds it."""
    values: dict[str, Any] = {
        "error_code": code, "error_message": message, "transport": transport,
        "provider_seconds": seconds,
    }  # fmt: skip
    worthless = literal(at, R.send_at.type) >= R.expires_at
    if counts == "crashes":
        values[counts] = R.crashes + 1
        if _move(session, "fail", held_by(held), (R.crashes + 1 >= MAX_CRASHES) | worthless,
                 **values):  # fmt: skip
            observe(session, metrics.PROVIDER_LATENCY, seconds)
            return FAILED
    elif counts == "failures":
        values[counts] = R.failures + 1
    if counts != "crashes" and _move(session, "fail", held_by(held), worthless, **values):
        observe(session, metrics.PROVIDER_LATENCY, seconds)
        return FAILED
    rows = _moving(session, "retry", held_by(held), send_at=at, **values)
    for row in rows:
        retried = metrics.RETRIES.labels(row.channel, counts or "nothing")
        count(session, retried.inc)
        observe(session, metrics.PROVIDER_LATENCY, seconds)
    return SCHEDULED if rows else None


def stop(session: Session, held: Held, state: str, reason: str) -> bool:
    """Found at sending that it must not go: `cancelled` (the enrolment changed) or `skipped`
    (opted out, too late, no way to reach them), with the reason."""
    name = "stop" if state == CANCELLED else "drop"
    return bool(_move(session, name, held_by(held), cancel_reason=reason))


# --- the sweeper ------------------------------------------------------------------------------


def requeue_lost(session: Session, cutoff: datetime) -> list[int]:
    """Queued before `cutoff` and never taken: its task was lost (a flushed Redis)."""
    return sorted(
        row.id for row in _moving(session, "requeue", R.queued_at < cutoff, skip_locked=True)
    )


def release_unwritten(
    session: Session, cutoff: datetime, now: datetime
) -> tuple[list[int], list[int]]:
    """Rows taken into `sending` before `cutoff` whose request was never allowed to leave
    (`go` commits that first): their worker stopped or stalled before it could reach the
    provider, so they go back at once, and a worker that wakes up later finds them gone. Each
    counts as a crash; returns (put back, failed at the crash cap)."""
    stalled = (R.state == SENDING, R.sending_at < cutoff, R.requested_at.is_(None))
    message = "the worker sending it stopped before it was sent, more than once"
    failed = _moving(
        session, "fail", *stalled, R.crashes + 1 >= MAX_CRASHES,
        crashes=R.crashes + 1, error_message=message, skip_locked=True,
    )  # fmt: skip
    released = _moving(
        session, "retry", *stalled, crashes=R.crashes + 1, send_at=now, skip_locked=True
    )
    return sorted(row.id for row in released), sorted(row.id for row in failed)


def unknown(session: Session, held: Held, message: str) -> bool:
    """Give up asking: the outcome is unknown. It is not sent again (it may have reached the
    patient); the caller tells staff."""
    return bool(_move(session, "unknown", held_by(held), error_message=message))


# --- enrolments change ------------------------------------------------------------------------


def withdraw(session: Session, ids: Iterable[int], reason: str) -> list[int]:
    """Cancel reminders of a cancelled or moved enrolment whose request has not been allowed
    to leave: pending ones, and those a worker holds but has not yet let go (`go`), which then
    finds them gone. Atomic with the change that calls it."""
    wanted = list(ids)
    if not wanted:
        return []
    return _move(session, "withdraw", R.id.in_(wanted), _unrequested(), cancel_reason=reason)


def fence_opted_out(session: Session, channel: str, destination: str) -> list[int]:
    """A destination has just opted out: every reminder to it whose request has not been
    allowed to leave is locked, and one a worker holds is skipped at once. Pending ones stay
    (a START puts the patient back), and are skipped when they are sent: `go` reads the
    opt-out this change commits."""
    column = models.Patient.phone if channel == "sms" else models.Patient.email
    theirs = select(E.id).join(models.Patient).where(column == destination).scalar_subquery()
    to_them = (
        R.channel == channel,
        or_(R.destination == destination, R.enrolment_id.in_(theirs)),
        _unrequested(),
    )
    session.execute(
        select(R.id).where(R.state.in_((*PENDING, SENDING)), *to_them)
        .order_by(R.id).with_for_update()
    ).all()  # fmt: skip
    return _move(session, "opt-out", R.state == SENDING, *to_them, cancel_reason="opted out")


def carry_over(session: Session, ids: Iterable[int], version: int) -> list[int]:
    """Reminders a reschedule keeps as they are, under the enrolment's new version: pending
    ones, and those in flight (if one fails, it is tried again under the new plan)."""
    wanted = list(ids)
    if not wanted:
        return []
    return sorted(
        session.scalars(
            update(R)
            .where(R.id.in_(wanted), R.state.in_((*PENDING, SENDING)))
            .values(schedule_version=version)
            .returning(R.id)
            .execution_options(synchronize_session=False)
        )
    )


# --- what the provider says later -------------------------------------------------------------

# How far along each delivery status is: a receipt only ever moves a message forward, so a
# late or replayed "sent" never overwrites "delivered". Final statuses share the last rank.
RANK = {"queued": 0, "sent": 1, "delivered": 2, "undelivered": 2, "failed": 2}
NOT_RECEIVED = ("undelivered", "failed")


def receipt(
    session: Session, provider_id: str, status: str, error_code: str | None, *, transport: str
) -> models.Reminder | None:
    """Record a delivery receipt (in our words, `RANK`) for the message the provider knows by
    `provider_id`; the reminder if it moved on, None if the receipt was old news."""
    rank = case(*((R.delivery_status == name, value) for name, value in RANK.items()), else_=-1)
    values: dict[str, Any] = {"delivery_status": status}
    if status in NOT_RECEIVED:
        values |= {
            "error_code": error_code,
            "error_message": f"the handset did not receive it ({status})",
        }
    moved = session.scalar(
        update(R)
        .where(R.provider_id == provider_id, R.transport == transport, rank < RANK[status])
        .values(**values)
        .returning(R.id)
        .execution_options(synchronize_session=False)
    )
    if moved is None:
        return None
    count(session, metrics.RECEIPTS.labels(status).inc)
    return session.get(R, moved, populate_existing=True)
