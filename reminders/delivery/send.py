"""Sending: a worker takes a batch of claimed reminders and sends each at most once.

1. `begin`: the rows move to `sending`, committed before any provider is called, so a task
   delivered twice finds nothing left to do.
2. `prepare`: each row is checked again now that it is held (cancelled, moved, opted out, too
   late, the sending window shut), its words are written from the booking as it is now and
   kept on the row, and its message is built. A row that cannot be prepared (a template that
   raises, a bug) is put back on its own or failed; its batch-mates go on.
3. The messages go to the providers, outside any transaction, in parallel. Just before each
   request, `holds.go` checks and commits that it may leave (still held within its lease, the
   plan unchanged, not opted out, still worth sending, by the database's clock); the request
   must then leave within `LEAVE_WITHIN` by this process's monotonic clock, or it does not
   leave at all (`Unsent`): a worker paused in between cannot send after the sweeper has
   given its row to another.
4. `settle`: each outcome is recorded as soon as it is known, in a transaction of its own,
   only for the attempt this worker still holds.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from reminders.config import Config
from reminders.core.clock import in_window, next_opening
from reminders.core.facts import History
from reminders.core.protocols import Rule
from reminders.core.rendering import RenderError
from reminders.delivery import compose
from reminders.delivery.settle import crashed, provider_recovered, settle, tell_staff
from reminders.delivery.transports import (
    AmbiguousError,
    DeliveryError,
    OutgoingMessage,
    Sent,
    Transport,
    Transports,
)
from reminders.services import wording
from reminders.services.planning import history_of
from reminders.store import holds, lifecycle, models
from reminders.store.db import Clock, read_in_database, session_scope
from reminders.store.lifecycle import Held

log = logging.getLogger(__name__)

# Seconds, by this process's monotonic clock, from reading the database's time for `go` to the
# request leaving; later, it does not leave. Far less than the sweeper's patience with a row
# whose request left (`stuck_after`, less the provider's timeouts: see `Settings`).
LEAVE_WITHIN = 0.5
R = models.Reminder


def send_reminders(
    factory: sessionmaker[Session],
    config: Config,
    transports: Transports,
    ids: Sequence[int],
    *,
    clock: Clock,
    pool: ThreadPoolExecutor | None = None,
) -> dict[str, int]:
    """Send the queued reminders `ids`, each at most once. Returns counts by outcome."""
    with session_scope(factory) as session:
        held = lifecycle.begin(session, ids, clock(session))
    if not held:
        return {}
    counts: Counter[str] = Counter(held=len(held))
    with session_scope(factory) as session:
        ready = prepare(session, held, config, clock(session))
        # As prepared: what a sent message's record needs (it needs no more reading).
        prepared = {r.id: r for r in load_reminders(session, [h.id for h, _ in ready])}
    counts["skipped"] = len(held) - len(ready)
    lease = timedelta(seconds=config.settings.stuck_after)

    def go_send_settle(pair: tuple[Held, OutgoingMessage]) -> str:
        """One message: the last check, the request, and its outcome recorded at once, so that
        a worker killed a moment later leaves as little as possible unrecorded (an email's
        server cannot be asked later what it accepted)."""
        row, message = pair
        started = time.monotonic()
        with session_scope(factory) as session:
            at = None if read_in_database(clock) else clock(session)
            went = holds.go(session, row, at, lease=lease)
            if isinstance(went, tuple):
                lifecycle.stop(session, row, *went)
        if not isinstance(went, datetime):
            return "withheld"
        message = dataclasses.replace(message, leave_by=started + LEAVE_WITHIN)
        transport = transports.for_channel(message.channel)
        result, seconds = _send(transport, message)
        with session_scope(factory) as session:
            # The database's time, from when it let the request go: no round trip to read it.
            elapsed = timedelta(seconds=time.monotonic() - started)
            now = went + elapsed if read_in_database(clock) else clock(session)
            if isinstance(result, Sent):
                reminder = prepared[row.id]
            else:  # staff may be told, email tried instead: read it as it is now
                (reminder,) = load_reminders(session, [row.id])
            return settle(session, config, reminder, row, result, transport.name, seconds, now)

    # One patient's messages go one after another, in their planned order (the batch is in id
    # order): sent in parallel, a confirmation could arrive after the instruction it precedes.
    by_patient: dict[int, list[tuple[Held, OutgoingMessage]]] = {}
    for pair in ready:
        by_patient.setdefault(prepared[pair[0].id].enrolment_id, []).append(pair)

    def in_order(pairs: list[tuple[Held, OutgoingMessage]]) -> list[tuple[str, str]]:
        return [(go_send_settle(pair), pair[1].channel) for pair in pairs]

    mapper = pool.map if pool is not None else map
    outcomes = [one for group in mapper(in_order, by_patient.values()) for one in group]
    counts.update(name for name, _ in outcomes)
    took = {channel for name, channel in outcomes if name == "sent"}
    if took:
        with session_scope(factory) as session:
            now = clock(session)
            for channel in sorted(took):
                provider_recovered(session, channel, now)
    return dict(counts)


def load_reminders(session: Session, ids: Collection[int]) -> list[models.Reminder]:
    return list(
        session.scalars(
            select(R)
            .where(R.id.in_(list(ids)))
            .options(selectinload(R.enrolment).selectinload(models.Enrolment.patient))
            .order_by(R.id)
        )
    )


def prepare(
    session: Session, held: Sequence[Held], config: Config, now: datetime
) -> list[tuple[Held, OutgoingMessage]]:
    """The messages to send for rows this worker holds; the rest are stopped, put back or
    failed here, with their reason."""
    by_id = {row.id: row for row in held}
    reminders = load_reminders(session, by_id)
    # Wait for a reschedule or cancellation of these enrolments that is under way (it holds
    # the enrolment row FOR UPDATE) and read what it committed: otherwise a reminder it is
    # superseding could still go out with its old text (PostgreSQL; SQLite has one writer).
    # In the order of their ids, as every transaction that locks several enrolments takes them
    # (a CSV import does too): two that took them in different orders could deadlock.
    session.scalars(
        select(models.Enrolment)
        .where(models.Enrolment.id.in_({r.enrolment_id for r in reminders}))
        .order_by(models.Enrolment.id)
        .with_for_update(read=True)
        # Read again, they drop what was loaded with them: the patients come back in the same
        # round trip, not one query each.
        .options(selectinload(models.Enrolment.patient))
        .execution_options(populate_existing=True)
    ).all()
    opted_out = _opted_out(session, reminders)
    histories = _histories(session, {r.enrolment_id for r in reminders})
    ready = []
    for reminder in reminders:
        row = by_id[reminder.id]
        try:
            # Everything that can go wrong with one reminder happens in here, away from the
            # database: a surprise fails this reminder, not the batch's transaction.
            history = histories.get(reminder.enrolment_id, History())
            stop = why_not_send(
                reminder, now, (reminder.channel, compose.destination(reminder)) in opted_out,
                rule=_rule(config, reminder), history=history,
            )  # fmt: skip
            opening = None if stop else _window_opening(reminder, config, now)
            words = None if stop or opening else wording.write(config, reminder, history)
            message = compose.outgoing(reminder, config, now, words) if words else None
        except RenderError as exc:
            # A template or protocol changed under it since it was scheduled (the SMS was
            # checked then): it cannot go, and staff must tell the patient another way.
            if lifecycle.fail(session, row, code=None, message=str(exc), transport=None):
                tell_staff(
                    session, reminder, "delivery-failed", f"could not be written: {exc}", now
                )
            continue
        except Exception as exc:
            log.exception("reminder %s could not be prepared", reminder.id)
            crashed(session, reminder, row, now, f"it could not be prepared ({type(exc).__name__})")
            continue
        if stop is not None:
            lifecycle.stop(session, row, *stop)
        elif opening is not None:
            # A backlog after an outage must not reach patients at night: it waits for the
            # morning, or is dropped if it would be worthless by then.
            if opening < reminder.expires_at:
                lifecycle.retry(session, row, at=opening, counts=None, code=None, message=None)
            else:
                lifecycle.stop(session, row, lifecycle.SKIPPED, "too late to be useful")
        elif words is not None and message is not None:
            words["destination"] = message.to
            if lifecycle.write_words(session, row, words):
                ready.append((row, message))
    return ready


def why_not_send(
    reminder: models.Reminder, now: datetime, opted_out: bool, *, rule: Rule | None = None,
    history: History | None = None,
) -> tuple[str, str] | None:  # fmt: skip
    """(state, reason) when a reminder must not go after all, checked once it is held.
    `rule`: the reminder's rule in the protocol now; `history`: what reached the patient."""
    enrolment = reminder.enrolment
    notice = rule is not None and rule.phase == "notice"
    # A cancellation's own notice is the one message a cancelled enrolment still sends.
    if enrolment.status == models.ENROLMENT_CANCELLED and not notice:
        return lifecycle.CANCELLED, "enrolment cancelled"
    if reminder.schedule_version != enrolment.schedule_version:
        return lifecycle.CANCELLED, "superseded"
    if now >= reminder.expires_at:
        return lifecycle.SKIPPED, "too late to be useful"
    if compose.destination(reminder) is None:
        return lifecycle.SKIPPED, f"no {'mobile number' if reminder.channel == 'sms' else 'email'}"
    if opted_out:
        return lifecycle.SKIPPED, "opted out"
    if rule is not None and rule.only_if_sent and not (history or History()).has(rule.only_if_sent):
        # A restart for a patient never told to stop would be an instruction no clinician
        # gave them (a plan recorded too late, a stop message that never arrived).
        return lifecycle.SKIPPED, f"only after {' or '.join(rule.only_if_sent)} reached the patient"
    return None


def _rule(config: Config, reminder: models.Reminder) -> Rule | None:
    protocol = config.protocols.get(reminder.enrolment.procedure)
    return next((r for r in protocol.rules if r.id == reminder.rule), None) if protocol else None


def _histories(session: Session, enrolment_ids: Collection[int]) -> dict[int, History]:
    """What reached each patient so far, for a batch's enrolments, in one round trip."""
    sent = session.scalars(
        select(R).where(R.enrolment_id.in_(list(enrolment_ids)), R.state == lifecycle.SENT)
    ).all()
    by_enrolment: dict[int, list[models.Reminder]] = {}
    for reminder in sent:
        by_enrolment.setdefault(reminder.enrolment_id, []).append(reminder)
    return {enrolment_id: history_of(rows) for enrolment_id, rows in by_enrolment.items()}


def _opted_out(session: Session, reminders: Sequence[models.Reminder]) -> set[tuple[str, str]]:
    wanted = {(r.channel, compose.destination(r)) for r in reminders}
    destinations = [d for _, d in wanted if d]
    if not destinations:
        return set()
    rows = session.execute(
        select(models.OptOut.channel, models.OptOut.destination).where(
            models.OptOut.destination.in_(destinations)
        )
    )
    return {(channel, destination) for channel, destination in rows} & wanted


def _window_opening(reminder: models.Reminder, config: Config, now: datetime) -> datetime | None:
    """When the sending window next opens, if it is shut now for this reminder. A
    safety-critical correction or notice that the window would hold past its deadline may go
    within the unit's urgent window instead (it was put on the call list when planned)."""
    rule = _rule(config, reminder)
    zone = ZoneInfo(reminder.enrolment.timezone)
    if (rule is not None and rule.quiet_hours == "send") or in_window(now, config.window, zone):
        return None
    opening = next_opening(now, config.window, zone)
    urgent = reminder.safety_critical and (
        reminder.is_correction or (rule is not None and rule.phase == "notice")
    )
    if urgent and opening > reminder.deadline:
        if in_window(now, config.unit.urgent_window, zone):
            return None
        return min(opening, next_opening(now, config.unit.urgent_window, zone))
    return opening


def _send(transport: Transport, message: OutgoingMessage) -> tuple[Sent | DeliveryError, float]:
    """The outcome, and how long the provider took over it (for the provider-latency metric)."""
    started = time.perf_counter()
    try:
        outcome: Sent | DeliveryError = transport.send(message)
    except DeliveryError as exc:
        outcome = exc
    except Exception as exc:
        # A surprise from a client library may come after the provider took the message (a
        # garbled 201): settle it with the provider before any resend, as for a timeout.
        log.exception("unexpected error sending reminder %s", message.reminder_id)
        outcome = AmbiguousError(f"unexpected error: {type(exc).__name__}")
    return outcome, time.perf_counter() - started
