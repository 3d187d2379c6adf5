"""Sending: a worker takes a batch of claimed reminders and sends each at most once.

1. `begin`: the rows move to `sending`, committed before any provider is called, so a task
   delivered twice finds nothing left to do.
2. `prepare`: each row is checked again now that it is held (cancelled, moved, opted out, too
   late, the sending window shut), its words are written from the booking as it is now and
   kept on the row, and its message is built. A row that cannot be prepared (a template that
   raises, a bug) is put back on its own or failed; its batch-mates go on.
3. The messages go to the providers, outside any transaction, in parallel.
4. `settle`: each outcome is recorded, only for the attempt this worker still holds.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
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
from reminders.delivery.transports import (
    AmbiguousError,
    ConfigurationError,
    DeliveryError,
    OutgoingMessage,
    PermanentError,
    Sent,
    Transport,
    Transports,
)
from reminders.services import replies, wording
from reminders.services.planning import email_instead, history_of
from reminders.store import journal, lifecycle, models
from reminders.store.db import session_scope
from reminders.store.lifecycle import Held

log = logging.getLogger(__name__)

# 2, 4, 8, 16, 20, 20, 20 seconds: a provider hiccup costs seconds, and even a run of failures
# ends, sent or failed with its reason, within two minutes; a long outage is tried every 20 s.
RETRY_BASE = timedelta(seconds=2)
RETRY_CAP = timedelta(seconds=20)
CONFIGURATION_RETRY = timedelta(minutes=1)
R = models.Reminder


def send_reminders(
    factory: sessionmaker[Session],
    config: Config,
    transports: Transports,
    ids: Sequence[int],
    *,
    clock: Callable[[], datetime],
    pool: ThreadPoolExecutor | None = None,
) -> dict[str, int]:
    """Send the queued reminders `ids`, each at most once. Returns counts by outcome."""
    with session_scope(factory) as session:
        held = lifecycle.begin(session, ids, clock())
    if not held:
        return {}
    counts: Counter[str] = Counter(held=len(held))
    with session_scope(factory) as session:
        ready = prepare(session, held, config, clock())
    counts["skipped"] = len(held) - len(ready)
    mapper = pool.map if pool is not None else map
    results = list(
        mapper(lambda pair: _send(transports.for_channel(pair[1].channel), pair[1]), ready)
    )
    with session_scope(factory) as session:
        now = clock()
        rows = {r.id: r for r in load_reminders(session, [h.id for h, _ in ready])}
        for (row, message), (result, seconds) in zip(ready, results, strict=True):
            transport = transports.for_channel(message.channel).name
            counts[settle(session, config, rows[row.id], row, result, transport, seconds, now)] += 1
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
    session.scalars(
        select(models.Enrolment)
        .where(models.Enrolment.id.in_({r.enrolment_id for r in reminders}))
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
            _crashed(
                session, reminder, row, now, f"it could not be prepared ({type(exc).__name__})"
            )
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


def retry_delay(attempt: int, retry_after: float | None) -> timedelta:
    delay: timedelta = min(RETRY_BASE * 2 ** max(attempt - 1, 0), RETRY_CAP)
    if retry_after:
        delay = max(delay, timedelta(seconds=retry_after))
    # Up to a tenth more, at random: rows that failed together do not all come back together.
    return delay * (1 + random.random() / 10)


def settle(
    session: Session, config: Config, reminder: models.Reminder, row: Held,
    outcome: Sent | DeliveryError, transport: str, seconds: float | None, now: datetime,
) -> str:  # fmt: skip
    """Record what the provider said, if this worker still holds the attempt. Returns the
    outcome's name, for counting: `sent`, the error's class, or `settled-elsewhere`."""
    # Ids and codes only: never the destination or the text.
    log.info(
        "reminder %s (%s, %s) via %s: %s%s",
        reminder.id, reminder.rule, reminder.channel, transport,
        "sent" if isinstance(outcome, Sent) else type(outcome).__name__,
        f" code={outcome.code}" if isinstance(outcome, DeliveryError) and outcome.code else "",
    )  # fmt: skip
    if isinstance(outcome, Sent):
        held = lifecycle.sent(
            session, row, provider_id=outcome.provider_id, transport=transport, now=now,
            delivery_status=outcome.delivery_status, seconds=seconds,
        )  # fmt: skip
        return "sent" if held else _elsewhere(reminder)
    code, said = outcome.code, str(outcome)
    name = type(outcome).__name__
    if isinstance(outcome, AmbiguousError):
        # Stays `sending`: the sweeper asks the provider before anything is resent.
        held = lifecycle.unsure(
            session, row, code=code, message=said, transport=transport, seconds=seconds
        )
        return name if held else _elsewhere(reminder)
    if isinstance(outcome, PermanentError):
        if not lifecycle.fail(
            session, row, code=code, message=said, transport=transport, seconds=seconds
        ):
            return _elsewhere(reminder)
        if outcome.opted_out and reminder.destination:
            # The patient replied STOP at the carrier: honour it for every later reminder too.
            replies.opt_out(session, "sms", reminder.destination, source="provider", now=now)
        tell_staff(
            session, reminder, "delivery-failed", f"could not be sent: {_said(outcome)}", now
        )
        if reminder.channel == "sms":
            _email_instead(session, config, reminder, now)
        return name
    if isinstance(outcome, ConfigurationError):
        # Our settings, not the patient's: wait, without counting against the reminder, and
        # say so once.
        state = lifecycle.retry(
            session, row, at=now + CONFIGURATION_RETRY, counts=None, code=code, message=said,
            transport=transport, seconds=seconds,
        )  # fmt: skip
        journal.note(
            session, "configuration",
            f"{'SMS' if reminder.channel == 'sms' else 'Email'} is not being sent: {outcome}. "
            "Reminders are waiting; check the provider settings (TWILIO_* or SMTP_*).",
            now=now,
        )  # fmt: skip
    else:
        at = now + retry_delay(row.attempt, outcome.retry_after)
        state = lifecycle.retry(
            session, row, at=at, counts="failures", code=code, message=said,
            transport=transport, seconds=seconds,
        )  # fmt: skip
    if state is None:
        return _elsewhere(reminder)
    if state == lifecycle.FAILED:
        tell_staff(
            session,
            reminder,
            "delivery-failed",
            f"could not be sent in time: {_said(outcome)}",
            now,
        )
    return name


def _said(error: DeliveryError) -> str:
    return f"{error}" + (f" (code {error.code})" if error.code else "")


def _elsewhere(reminder: models.Reminder) -> str:
    # The sweeper settled this attempt meanwhile (this worker was slow or paused); what it
    # found is what counts.
    log.warning("reminder %s was settled elsewhere during its send", reminder.id)
    return "settled-elsewhere"


def _crashed(
    session: Session, reminder: models.Reminder, row: Held, now: datetime, why: str
) -> None:
    state = lifecycle.retry(
        session, row, at=now + retry_delay(row.attempt, None), counts="crashes", code=None,
        message=why,
    )  # fmt: skip
    if state == lifecycle.FAILED:
        tell_staff(session, reminder, "delivery-failed", f"could not be sent: {why}", now)


def tell_staff(
    session: Session, reminder: models.Reminder, kind: str, what: str, now: datetime
) -> None:
    journal.note(
        session, kind, f"{reminder.rule} ({reminder.channel}) {what}", now=now,
        enrolment_id=reminder.enrolment_id, reminder_id=reminder.id,
        needs_call=reminder.safety_critical,
    )  # fmt: skip


def _email_instead(
    session: Session, config: Config, reminder: models.Reminder, now: datetime
) -> None:
    fallback = email_instead(session, config, reminder, now)
    has_email = reminder.enrolment.patient.email is not None
    note = (
        "The same message is being sent by email instead."
        if fallback is not None
        else "The patient gets this message by email too."
        if has_email
        else "There is no email address to use instead."
    )
    journal.note(
        session, "fallback", f"{reminder.rule}: the text failed. {note}", now=now,
        enrolment_id=reminder.enrolment_id, reminder_id=reminder.id,
        needs_call=reminder.safety_critical,
    )  # fmt: skip
