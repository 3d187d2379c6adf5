"""Delivery use cases: claim due reminders, send them once, recover from lost work.

The database is the source of truth and Redis only carries ids of work due now. The guarantees:
- a row is claimed (`scheduled` -> `queued`) by one conditional UPDATE, so two dispatchers never
  both take it;
- a send first moves the row to `sending` in a committed transaction, so a task delivered twice
  finds nothing to do;
- an attempt whose outcome is unknown stays `sending` until the provider has been asked;
- the sweeper puts back rows stuck in `queued` (a lost task) and reconciles rows stuck in
  `sending` (a killed worker) within `STUCK_AFTER`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload, sessionmaker

from reminders.config import Config
from reminders.core import ics, unsubscribe
from reminders.core.clock import in_window, next_opening
from reminders.core.rendering import RenderError
from reminders.delivery import escalation
from reminders.delivery.transports import (
    AmbiguousError,
    Attachment,
    ConfigurationError,
    DeliveryError,
    OutgoingMessage,
    PermanentError,
    Sent,
    Transport,
)
from reminders.delivery.transports.outbox import Outbox
from reminders.services import replies, wording
from reminders.services.enrolments import email_instead
from reminders.settings import Settings
from reminders.store import models
from reminders.store.db import locked_scope, session_scope

log = logging.getLogger(__name__)

CLAIM_LIMIT = 500
DISPATCH_ROUNDS = 4  # claims of CLAIM_LIMIT per dispatch run (beat runs one a second)
MAX_BACKLOG = 4000  # ids waiting in the broker beyond which no more are claimed
MAX_ATTEMPTS = 8
# 2, 4, 8, 16, 20, 20, 20 seconds: a provider hiccup costs seconds, and even a run of failures
# ends, sent or failed with its reason, within two minutes; a long outage is tried every 20 s.
RETRY_BASE = timedelta(seconds=2)
RETRY_CAP = timedelta(seconds=20)
CONFIGURATION_RETRY = timedelta(minutes=1)
R = models.Reminder


@dataclass(frozen=True)
class Transports:
    sms: Transport
    email: Transport

    def for_channel(self, channel: str) -> Transport:
        return self.sms if channel == "sms" else self.email

    @classmethod
    def from_settings(cls, settings: Settings) -> Transports:
        """Real providers where credentials are set; the outbox for a channel without."""
        from reminders.delivery.transports.smtp_email import SmtpEmail
        from reminders.delivery.transports.twilio_sms import TwilioSms

        callback = f"{settings.public_url}/webhooks/twilio/status" if settings.public_url else None
        timeout = settings.provider_timeout
        sms: Transport = (
            TwilioSms(settings.twilio, status_callback=callback, timeout=timeout)
            if settings.twilio
            else Outbox()
        )
        email: Transport = SmtpEmail(settings.smtp, timeout=timeout) if settings.smtp else Outbox()
        return cls(sms=sms, email=email)


def claim_due(session: Session, now: datetime, limit: int = CLAIM_LIMIT) -> list[int]:
    """Move up to `limit` due reminders from `scheduled` to `queued` and return their ids.

    One statement: on PostgreSQL the inner SELECT skips rows another dispatcher has locked
    (FOR UPDATE SKIP LOCKED), so two dispatchers share the work instead of queueing behind each
    other; SQLite runs one writer at a time, and the outer `state = 'scheduled'` makes a row
    claimable exactly once on both.
    """
    due = (
        select(R.id)
        .where(R.state == "scheduled", R.send_at <= now)
        .order_by(R.send_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claimed = session.scalars(
        update(R)
        .where(R.id.in_(due.scalar_subquery()), R.state == "scheduled")
        .values(state="queued", queued_at=now)
        .returning(R.id)
        .execution_options(synchronize_session=False)
    ).all()
    return sorted(claimed)


def dispatch(
    factory: sessionmaker[Session],
    publish: Callable[[Sequence[int]], None],
    *,
    clock: Callable[[], datetime],
    backlog: Callable[[], int],
) -> int:
    """Claim what is due and queue it, in rounds, each committed before it is queued (a task is
    never queued for a claim that could still roll back). A burst is claimed only as fast as
    workers take it: with `MAX_BACKLOG` ids already waiting, the rest stays in the database,
    so nothing sits in Redis long enough for the sweeper to take it for lost."""
    total = 0
    for _ in range(DISPATCH_ROUNDS):
        if backlog() >= MAX_BACKLOG:
            break
        with session_scope(factory) as session:
            ids = claim_due(session, clock())
        publish(ids)
        total += len(ids)
        if len(ids) < CLAIM_LIMIT:
            break
    return total


def begin_attempts(session: Session, ids: Sequence[int], now: datetime) -> dict[int, int]:
    """Take `queued` rows into `sending`, returning each one's attempt number; a row already
    taken (a task delivered twice, a second dispatcher's copy) is not returned, and so is not
    sent again."""
    if not ids:
        return {}
    rows = session.execute(
        update(R)
        .where(R.id.in_(ids), R.state == "queued")
        .values(state="sending", sending_at=now, attempts=R.attempts + 1)
        .returning(R.id, R.attempts)
        .execution_options(synchronize_session=False)
    )
    return dict(sorted((reminder_id, attempt) for reminder_id, attempt in rows))


def _load(session: Session, ids: Iterable[int]) -> list[models.Reminder]:
    return list(
        session.scalars(
            select(R)
            .where(R.id.in_(list(ids)))
            .options(selectinload(R.enrolment).selectinload(models.Enrolment.patient))
            .order_by(R.id)
        )
    )


def _opted_out(session: Session, reminders: Sequence[models.Reminder]) -> set[tuple[str, str]]:
    wanted = {(r.channel, _destination(r)) for r in reminders}
    destinations = [d for _, d in wanted if d]
    if not destinations:
        return set()
    rows = session.execute(
        select(models.OptOut.channel, models.OptOut.destination).where(
            models.OptOut.destination.in_(destinations)
        )
    )
    return {(channel, destination) for channel, destination in rows} & wanted


def _destination(reminder: models.Reminder) -> str | None:
    patient = reminder.enrolment.patient
    return patient.phone if reminder.channel == "sms" else patient.email


def why_not_send(
    reminder: models.Reminder, now: datetime, opted_out: bool
) -> tuple[str, str] | None:
    """(state, reason) when a reminder must not go after all, checked once it is held."""
    enrolment = reminder.enrolment
    if enrolment.status == models.ENROLMENT_CANCELLED:
        return "cancelled", "enrolment cancelled"
    if reminder.schedule_version != enrolment.schedule_version:
        return "cancelled", "superseded"
    if now >= reminder.expires_at:
        return "skipped", "too late to be useful"
    if _destination(reminder) is None:
        return "skipped", f"no {'mobile number' if reminder.channel == 'sms' else 'email'}"
    if opted_out:
        return "skipped", "opted out"
    return None


def outgoing(reminder: models.Reminder, config: Config, now: datetime) -> OutgoingMessage:
    """The message for a reminder whose words are written (`wording.write`)."""
    destination = _destination(reminder) or ""
    body = reminder.body
    assert body is not None, "a reminder's words are written before it is sent"
    if reminder.channel == "sms":
        return OutgoingMessage(reminder.id, "sms", destination, body)
    enrolment = reminder.enrolment
    attachments: tuple[Attachment, ...] = ()
    if reminder.send_at < enrolment.starts_at:
        calendar = ics.appointment(
            enrolment_id=enrolment.id,
            version=enrolment.schedule_version,
            starts_at=enrolment.starts_at,
            unit=config.unit,
            now=now,
        )
        attachments = (Attachment("appointment.ics", "text/calendar", calendar),)
    unsubscribe = config.unit.email or (
        config.settings.smtp.mail_from if config.settings.smtp else ""
    )
    return OutgoingMessage(
        reminder.id,
        "email",
        destination,
        body,
        subject=reminder.subject,
        html=reminder.body_html,
        attachments=attachments,
        headers=_unsubscribe_headers(config, reminder.enrolment.patient_id, unsubscribe),
    )


def _unsubscribe_headers(config: Config, patient_id: int, mailbox: str) -> dict[str, str]:
    """A signed one-click link (RFC 8058) where the app is reachable, and a mailto always."""
    settings = config.settings
    mailto = f"<mailto:{mailbox}?subject=unsubscribe>"
    if not (settings.public_url and settings.secret_key):
        return {"List-Unsubscribe": mailto}
    url = unsubscribe.link(settings.public_url, settings.secret_key, patient_id)
    return {
        "List-Unsubscribe": f"<{url}>, {mailto}",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def retry_delay(attempts: int, retry_after: float | None) -> timedelta:
    delay: timedelta = min(RETRY_BASE * 2 ** max(attempts - 1, 0), RETRY_CAP)
    if retry_after:
        delay = max(delay, timedelta(seconds=retry_after))
    return delay


def _attention(session: Session, reminder: models.Reminder, kind: str, message: str) -> None:
    session.add(
        models.AttentionItem(
            enrolment_id=reminder.enrolment_id,
            reminder_id=reminder.id,
            kind=kind,
            message=message,
            needs_call=reminder.safety_critical,
        )
    )


def _configuration_alert(session: Session, channel: str, error: DeliveryError) -> None:
    message = (
        f"{'SMS' if channel == 'sms' else 'Email'} is not being sent: {error}. Reminders are "
        "waiting; check the provider settings (TWILIO_* or SMTP_*)."
    )
    waiting = session.scalar(
        select(models.AttentionItem.id).where(
            models.AttentionItem.kind == "configuration",
            models.AttentionItem.message == message,
            models.AttentionItem.resolved_at.is_(None),
        )
    )
    if waiting is None:
        session.add(models.AttentionItem(kind="configuration", message=message, needs_call=False))


def record_outcome(
    session: Session,
    reminder: models.Reminder,
    outcome: Sent | DeliveryError,
    transport: str,
    now: datetime,
) -> None:
    reminder.transport = transport
    # Ids and codes only: never the destination or the text.
    log.info(
        "reminder %s (%s, %s) via %s: %s%s",
        reminder.id, reminder.rule, reminder.channel, transport,
        "sent" if isinstance(outcome, Sent) else type(outcome).__name__,
        f" code={outcome.code}" if isinstance(outcome, DeliveryError) and outcome.code else "",
    )  # fmt: skip
    if isinstance(outcome, Sent):
        reminder.move_to("sent")
        reminder.sent_at = now
        reminder.provider_id = outcome.provider_id
        reminder.delivery_status = outcome.delivery_status
        reminder.error_code = reminder.error_message = None
        return
    reminder.error_code = outcome.code
    reminder.error_message = str(outcome)
    if isinstance(outcome, AmbiguousError):
        return  # stays `sending`: the sweeper asks the provider before anything is resent
    if isinstance(outcome, ConfigurationError):
        # Our settings, not the patient's: wait, without using up an attempt, and say so once.
        reminder.attempts -= 1
        reminder.move_to("scheduled")
        reminder.send_at = now + CONFIGURATION_RETRY
        _configuration_alert(session, reminder.channel, outcome)
        return
    if not outcome.permanent:
        retry_at = now + retry_delay(reminder.attempts, outcome.retry_after)
        if reminder.attempts < MAX_ATTEMPTS and retry_at < reminder.expires_at:
            reminder.move_to("scheduled")
            reminder.send_at = retry_at
            return
    reminder.move_to("failed")
    if outcome.code == "21610" and reminder.destination:
        # The patient replied STOP at the carrier: honour it for every later reminder too.
        replies.opt_out(session, "sms", reminder.destination, source="Twilio 21610", now=now)
    what = "could not be sent" if outcome.permanent else "could not be sent in time"
    _attention(
        session, reminder, "delivery-failed",
        f"{reminder.rule} ({reminder.channel}) {what}: {outcome}"
        + (f" (code {outcome.code})" if outcome.code else ""),
    )  # fmt: skip


def prepare(
    session: Session, ids: Sequence[int], config: Config, now: datetime
) -> list[tuple[models.Reminder, OutgoingMessage]]:
    """The messages to send for reminders now held in `sending`; the rest are skipped or
    cancelled here, with their reason."""
    reminders = _load(session, ids)
    # Wait for a reschedule or cancellation of these enrolments that is under way (it holds
    # the enrolment row FOR UPDATE) and read what it committed: otherwise a reminder it is
    # superseding could still go out with its old text (PostgreSQL; SQLite has one writer).
    session.scalars(
        select(models.Enrolment)
        .where(models.Enrolment.id.in_({r.enrolment_id for r in reminders}))
        .with_for_update(read=True)
        # Read again, they drop what was loaded with them: the patients come back in the same
        # round trip, not one query each (a batch of 25 made 25 more round trips).
        .options(selectinload(models.Enrolment.patient))
        .execution_options(populate_existing=True)
    ).all()
    opted_out = _opted_out(session, reminders)
    ready = []
    for reminder in reminders:
        reminder.destination = _destination(reminder)
        stop = why_not_send(reminder, now, (reminder.channel, reminder.destination) in opted_out)
        if stop is not None:
            reminder.move_to(stop[0], reason=stop[1])
            continue
        opening = _window_opening(reminder, config, now)
        if opening is not None:
            # A backlog after an outage must not reach patients at night: it waits for the
            # morning, or is dropped if it would be worthless by then.
            if opening < reminder.expires_at:
                reminder.move_to("scheduled")
                reminder.send_at = opening
            else:
                reminder.move_to("skipped", reason="too late to be useful")
            continue
        try:
            wording.write(config, reminder)
        except RenderError as exc:
            # A template or protocol changed under it since it was scheduled (the SMS was
            # checked then): it cannot go, and staff must tell the patient another way.
            reminder.move_to("failed")
            reminder.error_message = str(exc)
            _attention(
                session, reminder, "delivery-failed",
                f"{reminder.rule} ({reminder.channel}) could not be written: {exc}",
            )  # fmt: skip
            continue
        ready.append((reminder, outgoing(reminder, config, now)))
    return ready


def _window_opening(reminder: models.Reminder, config: Config, now: datetime) -> datetime | None:
    """When the sending window next opens, if it is shut now for this reminder."""
    protocol = config.protocols.get(reminder.enrolment.procedure)
    rules = {rule.id: rule for rule in protocol.rules} if protocol else {}
    rule = rules.get(reminder.rule)
    zone = ZoneInfo(reminder.enrolment.timezone)
    if (rule is not None and rule.quiet_hours == "send") or in_window(now, config.window, zone):
        return None
    return next_opening(now, config.window, zone)


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
    _attention(session, reminder, "fallback", f"{reminder.rule}: the text failed. {note}")


def _send(transport: Transport, message: OutgoingMessage) -> tuple[Sent | DeliveryError, float]:
    """The outcome, and how long the provider took over it (for the provider-latency metric)."""
    started = time.perf_counter()
    outcome = _attempt(transport, message)
    return outcome, time.perf_counter() - started


def _attempt(transport: Transport, message: OutgoingMessage) -> Sent | DeliveryError:
    try:
        return transport.send(message)
    except DeliveryError as exc:
        return exc
    except Exception as exc:
        # A surprise from a client library may come after the provider took the message (a
        # garbled 201): settle it with the provider before any resend, as for a timeout.
        log.exception("unexpected error sending reminder %s", message.reminder_id)
        return AmbiguousError(f"unexpected error: {type(exc).__name__}")


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
        held = begin_attempts(session, ids, clock())
    if not held:
        return {}
    with session_scope(factory) as session:
        ready = [(r.id, message) for r, message in prepare(session, list(held), config, clock())]
    sends = [(message, transports.for_channel(message.channel)) for _, message in ready]
    mapper = pool.map if pool is not None else map
    results = list(mapper(lambda pair: _send(pair[1], pair[0]), sends))
    counts: dict[str, int] = {"held": len(held), "skipped": len(held) - len(ready)}
    with locked_scope(factory) as session:
        now = clock()
        # Every row of the batch locked in one statement, not one round trip each.
        rows = {
            r.id: r
            for r in session.scalars(
                select(R)
                .where(R.id.in_([reminder_id for reminder_id, _ in ready]))
                .order_by(R.id)
                .with_for_update()
            )
        }
        for (reminder_id, message), (result, seconds) in zip(ready, results, strict=True):
            reminder = rows.get(reminder_id)
            if reminder is None or (reminder.state, reminder.attempts) != (
                "sending",
                held[reminder_id],
            ):
                # Settled by the sweeper meanwhile. The task time limit (below the sweeper's
                # threshold) means it cannot also have been sent again; say so if it was.
                log.warning("reminder %s was settled elsewhere during its send", reminder_id)
                counts["settled-elsewhere"] = counts.get("settled-elsewhere", 0) + 1
                continue
            transport = transports.for_channel(message.channel).name
            record_outcome(session, reminder, result, transport, now)
            reminder.provider_seconds = seconds
            if isinstance(result, PermanentError) and reminder.channel == "sms":
                _email_instead(session, config, reminder, now)
            key = "sent" if isinstance(result, Sent) else type(result).__name__
            counts[key] = counts.get(key, 0) + 1
    return counts


def sweep(
    factory: sessionmaker[Session],
    config: Config,
    transports: Transports,
    *,
    clock: Callable[[], datetime],
) -> dict[str, int]:
    """Recover work that stalled: a `queued` row whose task was lost goes back to `scheduled`;
    a `sending` row whose worker died, or whose answer never came, is settled with the provider
    before it may be sent again."""
    now = clock()
    # Well past a provider's timeout, so a send still in flight is never taken for stuck.
    cutoff = now - timedelta(seconds=config.settings.stuck_after)
    with session_scope(factory) as session:
        requeued = len(
            session.scalars(
                update(R)
                .where(R.state == "queued", R.queued_at < cutoff)
                .values(state="scheduled")
                .returning(R.id)
                .execution_options(synchronize_session=False)
            ).all()
        )
        # A worker that died between taking a row into `sending` and writing its words never
        # reached the provider with it (the words are committed first): nothing to ask.
        requeued += len(
            session.scalars(
                update(R)
                .where(R.state == "sending", R.sending_at < cutoff, R.body.is_(None))
                .values(state="scheduled", send_at=now)
                .returning(R.id)
                .execution_options(synchronize_session=False)
            ).all()
        )
    with session_scope(factory) as session:
        # Read, then ask the provider outside any transaction: a slow provider must not hold
        # row locks that workers recording their own results would wait on.
        stuck = [
            (reminder.id, reminder.attempts, reminder.sending_at or cutoff, reminder.channel,
             outgoing(reminder, config, now))
            for reminder in _load(session, session.scalars(
                select(R.id).where(
                    R.state == "sending", R.sending_at < cutoff, R.body.is_not(None)
                )
            ).all())
        ]  # fmt: skip
    found = resent = unsure = 0
    for reminder_id, attempt, since, channel, message in stuck:
        transport = transports.for_channel(channel)
        try:
            provider_id = transport.find_sent(message, since)
        except DeliveryError:
            unsure += 1  # the provider cannot tell now: ask again next sweep
            continue
        with locked_scope(factory) as session:
            reminder = session.get(R, reminder_id, with_for_update=True)
            if reminder is None or (reminder.state, reminder.attempts) != ("sending", attempt):
                continue  # settled meanwhile by its own worker or another sweeper
            if provider_id is not None:
                record_outcome(session, reminder, Sent(provider_id, None), transport.name, now)
                found += 1
            else:
                reminder.move_to("scheduled")
                reminder.send_at = now
                resent += 1
    with session_scope(factory) as session:
        escalated = escalation.escalate(session, now)
    return {
        "requeued": requeued, "found": found, "resent": resent, "unsure": unsure,
        "escalated": escalated,
    }  # fmt: skip


# Twilio's message statuses, as the delivery_status we keep, and how far along each is: a
# receipt only ever moves a message forward, so a late or replayed "sent" never overwrites
# "delivered". Final statuses share the last rank.
_TWILIO_STATUS = {
    "accepted": "queued", "scheduled": "queued", "queued": "queued", "sending": "queued",
    "sent": "sent", "delivered": "delivered", "read": "delivered",
    "undelivered": "undelivered", "failed": "failed", "canceled": "failed",
}  # fmt: skip
_RANK = {None: -1, "queued": 0, "sent": 1, "delivered": 2, "undelivered": 2, "failed": 2}


def record_status(
    session: Session, provider_id: str, twilio_status: str, error_code: str | None
) -> bool:
    """Apply a delivery receipt to the message with this provider id; True if it changed."""
    status = _TWILIO_STATUS.get(twilio_status)
    reminder = session.scalar(select(R).where(R.provider_id == provider_id).with_for_update())
    if status is None or reminder is None:
        return False
    if _RANK[status] <= _RANK[reminder.delivery_status]:
        return False
    reminder.delivery_status = status
    if status in ("undelivered", "failed"):
        reminder.error_code = error_code
        reminder.error_message = f"the handset did not receive it ({status})"
        _attention(
            session, reminder, "delivery-failed",
            f"{reminder.rule} ({reminder.channel}) was not delivered: {status}"
            + (f" (code {error_code})" if error_code else ""),
        )  # fmt: skip
    return True
