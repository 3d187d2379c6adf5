"""Recording what the provider said about a send (`settle`), for the attempt the worker still
holds: sent; failed for good, with staff told (and email tried instead of a refused SMS); or put
back to go again with backoff, until the reminder is worthless."""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from reminders.config import Config
from reminders.delivery.transports import (
    AmbiguousError,
    ConfigurationError,
    DeliveryError,
    PermanentError,
    Sent,
    Unsent,
)
from reminders.services import replies
from reminders.services.planning import email_instead
from reminders.store import journal, lifecycle, models
from reminders.store.lifecycle import Held

log = logging.getLogger(__name__)

# 2, 4, 8, 16, 20, 20, 20 seconds: a provider hiccup costs seconds; an outage is tried every 20
# seconds (with jitter) until it ends or the reminder is worthless (its `expires_at`).
RETRY_BASE = timedelta(seconds=2)
RETRY_CAP = timedelta(seconds=20)
CONFIGURATION_RETRY = timedelta(minutes=1)
# Failures in a row of one reminder after which staff are told the provider is failing; the
# entry closes itself when the provider takes a message again (`provider_recovered`).
TROUBLE_AFTER = 3
TROUBLE = {
    channel: f"{what} are failing at the provider: reminders are waiting and are tried again "
    "until they are no longer useful. Safety-critical ones not delivered by their deadline go "
    "on the call list."
    for channel, what in (("sms", "Texts"), ("email", "Emails"))
}


def provider_recovered(session: Session, channel: str, now: datetime) -> None:
    journal.settle(
        session, "provider-trouble", TROUBLE[channel], now=now, by="reminders: a message went"
    )


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
    if isinstance(outcome, Unsent):
        # It never left (this worker was too slow or paused after its last check): again at
        # once, counting against nothing.
        state = lifecycle.retry(
            session, row, at=now, counts=None, code=None, message=said, transport=transport
        )
    elif isinstance(outcome, ConfigurationError):
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
        if state == lifecycle.SCHEDULED and reminder.failures + 1 >= TROUBLE_AFTER:
            journal.note(session, "provider-trouble", TROUBLE[reminder.channel], now=now)
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


def crashed(
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
