"""The dispatcher (beat runs it every second): claim what is due and queue it for workers.

Redis only ever carries ids of work due now; the database is the source of truth. A claim is
committed before its ids are queued, so a task is never queued for a claim that could still
roll back, and a task lost on the way is put back by the sweeper.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy.orm import Session, sessionmaker

from reminders.store import lifecycle
from reminders.store.db import Clock, session_scope

CLAIM_LIMIT = 500
DISPATCH_ROUNDS = 4  # claims of CLAIM_LIMIT per dispatch run (beat runs one a second)
MAX_BACKLOG = 4000  # ids waiting in the broker beyond which no more are claimed


def dispatch(
    factory: sessionmaker[Session],
    publish: Callable[[Sequence[int]], None],
    *,
    clock: Clock,
    backlog: Callable[[], int],
) -> int:
    """Claim what is due and queue it, in rounds. A burst is claimed only as fast as workers
    take it: with `MAX_BACKLOG` ids already waiting, the rest stays in the database, so nothing
    sits in Redis long enough for the sweeper to take it for lost.

    `publish` gets a list of ids to send together. A row that stopped a worker before (a
    possible poison row) goes in a list of its own, so that it cannot take its batch-mates
    down with it again."""
    total = 0
    for _ in range(DISPATCH_ROUNDS):
        if backlog() >= MAX_BACKLOG:
            break
        with session_scope(factory) as session:
            # Due by the database's clock: a beat or worker whose own clock is behind would
            # otherwise see nothing due.
            claimed = lifecycle.claim(session, clock(session), CLAIM_LIMIT)
        publish([row.id for row in claimed if not row.crashes])
        for row in claimed:
            if row.crashes:
                publish([row.id])
        total += len(claimed)
        if len(claimed) < CLAIM_LIMIT:
            break
    return total
