"""The sweeper (beat runs it every few seconds): recover work that stalled, so that losing
Redis or a worker loses and repeats nothing.

- A `queued` row whose task was lost goes back to `scheduled`.
- A `sending` row whose request was never allowed to leave (`holds.go`) never reached the
  provider: it goes straight back (counted as a crash: a poison row ends failed, not in a loop).
- A `sending` row whose request left may have reached the provider: the provider is asked
  before anything is sent again, and the row is settled as sent, or put back. When the
  provider cannot say (its list fails or hangs), it is asked again with backoff; after
  `outcome_unknown_after` the row is settled as failed, "outcome unknown", and never resent (it
  may have arrived): staff are told, on the call list at once if it is safety-critical.
- Then, whatever happened above, safety-critical instructions past their deadline that reached
  no one go on the call list (`escalation`).
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from reminders.config import Config
from reminders.delivery import compose, escalation
from reminders.delivery.send import load_reminders
from reminders.delivery.settle import tell_staff
from reminders.delivery.transports import DeliveryError, OutgoingMessage, Transports
from reminders.store import holds, lifecycle
from reminders.store.db import Clock, session_scope
from reminders.store.holds import Stalled

log = logging.getLogger(__name__)

# Asking again about a row the provider could not answer for: 5, 10, 20, 40, 60, 60... seconds.
ASK_BASE = timedelta(seconds=5)
ASK_CAP = timedelta(seconds=60)
UNKNOWN = (
    "outcome unknown: the provider could not say whether it has this message, so it is not "
    "sent again"
)


def sweep(
    factory: sessionmaker[Session],
    config: Config,
    transports: Transports,
    *,
    clock: Clock,
) -> dict[str, int]:
    counts: dict[str, int] = {}
    try:
        counts = _recover(factory, config, transports, clock)
    finally:
        # Escalation runs even when recovery failed part-way: a call list that stops filling
        # silently is the failure that matters most.
        with session_scope(factory) as session:
            counts["escalated"] = escalation.escalate(session, clock(session))
    return counts


def _recover(
    factory: sessionmaker[Session], config: Config, transports: Transports, clock: Clock
) -> dict[str, int]:
    now = clock()
    # Past the worker's lease (`Settings.stuck_after`): a send still in flight is never taken
    # for stuck.
    cutoff = now - timedelta(seconds=config.settings.stuck_after)
    with session_scope(factory) as session:
        requeued = len(lifecycle.requeue_lost(session, cutoff))
        released, failed = lifecycle.release_unwritten(session, cutoff, now)
        for reminder in load_reminders(session, failed):
            tell_staff(
                session,
                reminder,
                "delivery-failed",
                f"could not be sent: {reminder.error_message}",
                now,
            )
    with session_scope(factory) as session:
        # Read, then ask the provider outside any transaction: a slow provider must not hold
        # row locks that workers recording their own results would wait on.
        stalled = holds.stalled(session, cutoff, now)
        reminders = {r.id: r for r in load_reminders(session, [s.held.id for s in stalled])}
        asks = []
        for row in stalled:
            reminder = reminders[row.held.id]
            try:
                asks.append((row, reminder.channel, compose.outgoing(reminder, config, now)))
            except Exception:
                # One row that cannot be rebuilt must not stop the others being recovered.
                log.exception("could not rebuild reminder %s to ask about it", reminder.id)
    counts = {"requeued": requeued + len(released), "found": 0, "resent": 0, "unsure": 0,
              "unknown": 0, "failed": len(failed)}  # fmt: skip
    give_up = timedelta(seconds=config.settings.outcome_unknown_after)
    for row, channel, message in asks:
        outcome = _reconcile(factory, transports, row, channel, message, now)
        if outcome == "unsure":
            outcome = _ask_later(factory, row, now, give_up)
        counts[outcome] += 1
    return counts


def _ask_later(
    factory: sessionmaker[Session], row: Stalled, now: datetime, give_up: timedelta
) -> str:
    """The provider could not say: ask again later, with backoff, or give up once it has been
    unable to say for `give_up` since the request left."""
    with session_scope(factory) as session:
        if now - row.since < give_up:
            delay = min(ASK_BASE * 2**row.asks, ASK_CAP) * (1 + random.random() / 10)
            holds.ask_later(session, row.held, now + delay)
            return "unsure"
        if not lifecycle.unknown(session, row.held, UNKNOWN):
            return "unsure"  # settled meanwhile by its worker
        for reminder in load_reminders(session, [row.held.id]):
            # `tell_staff` puts a safety-critical one on the call list: a person can phone.
            tell_staff(session, reminder, "delivery-failed", UNKNOWN, now)
        return "unknown"


def _reconcile(
    factory: sessionmaker[Session], transports: Transports, row: Stalled, channel: str,
    message: OutgoingMessage, now: datetime,
) -> str:  # fmt: skip
    transport = transports.for_channel(channel)
    try:
        provider_id = transport.find_sent(message, row.since)
    except DeliveryError:
        return "unsure"  # the provider cannot tell now: ask again next sweep
    except Exception:
        # One row the provider's client chokes on must not end the sweep before the others
        # and the escalation below are done.
        log.exception("could not ask the provider about reminder %s", row.held.id)
        return "unsure"
    with session_scope(factory) as session:
        if provider_id is not None:
            done = lifecycle.sent(
                session, row.held, provider_id=provider_id, delivery_status=None,
                transport=transport.name, seconds=None, now=now,
            )  # fmt: skip
            return "found" if done else "unsure"
        # Not there: it never reached the provider. An unanswered request counts against the
        # provider, a worker that stopped with it against the row (a poison row ends failed).
        state = lifecycle.retry(
            session, row.held, at=now, counts="failures" if row.unanswered else "crashes",
            code=None, message="not sent: the provider did not have it",
        )  # fmt: skip
        if state == lifecycle.FAILED:
            for reminder in load_reminders(session, [row.held.id]):
                tell_staff(
                    session,
                    reminder,
                    "delivery-failed",
                    "could not be sent: it was tried too many times",
                    now,
                )
        return "resent" if state == lifecycle.SCHEDULED else "failed" if state else "unsure"
