"""The sweeper (beat runs it every few seconds): recover work that stalled, so that losing
Redis or a worker loses and repeats nothing.

- A `queued` row whose task was lost goes back to `scheduled`.
- A `sending` row whose worker stopped before writing its words never reached the provider: it
  goes straight back (counted as a crash: a poison row ends failed, not in a loop).
- A `sending` row with its words written may have reached the provider: the provider is asked
  before anything is sent again, and the row is settled as sent, or put back.
- Then safety-critical instructions past their deadline that reached no one go on the call
  list (`escalation`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from reminders.config import Config
from reminders.delivery import compose, escalation
from reminders.delivery.send import load_reminders, tell_staff
from reminders.delivery.transports import DeliveryError, OutgoingMessage, Transports
from reminders.store import lifecycle
from reminders.store.db import session_scope
from reminders.store.lifecycle import Stalled

log = logging.getLogger(__name__)


def sweep(
    factory: sessionmaker[Session],
    config: Config,
    transports: Transports,
    *,
    clock: Callable[[], datetime],
) -> dict[str, int]:
    now = clock()
    # Well past a provider's timeout, so a send still in flight is never taken for stuck.
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
        stalled = lifecycle.stalled(session, cutoff)
        reminders = {r.id: r for r in load_reminders(session, [s.held.id for s in stalled])}
        asks = [
            (
                row,
                reminders[row.held.id].channel,
                compose.outgoing(reminders[row.held.id], config, now),
            )
            for row in stalled
        ]
    counts = {"requeued": requeued + len(released), "found": 0, "resent": 0, "unsure": 0,
              "failed": len(failed)}  # fmt: skip
    for row, channel, message in asks:
        outcome = _reconcile(factory, transports, row, channel, message, now)
        counts[outcome] += 1
    with session_scope(factory) as session:
        counts["escalated"] = escalation.escalate(session, now)
    return counts


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
