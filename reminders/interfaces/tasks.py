"""Celery tasks: a few lines each, ids in, a delivery call out (STYLE.md, lesson 2).

Task names and queue names are part of the deployment (queued messages and running beats refer
to them) and never change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from celery import shared_task
from celery.signals import worker_process_init
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from reminders.config import Config
from reminders.delivery import dispatch, send, sweep
from reminders.delivery.transports import Transports
from reminders.services import import_runs, retention
from reminders.settings import Settings
from reminders.store.db import DatabaseClock, make_engine, make_sessionmaker, session_scope
from reminders.store.models import utcnow as now

log = logging.getLogger(__name__)


class Queues:
    """Every queue, named once; `worker.py` consumes all of them (a test checks)."""

    DISPATCH = "reminders.dispatch"  # the periodic dispatcher and sweeper: small and frequent
    SEND = "reminders.send"  # batches of reminder ids to send now
    IMPORT = "reminders.import"  # CSV files uploaded on the staff pages, one run per task


# Set by every finished run of the dispatcher: /healthz and /metrics read its age, so a stopped
# beat (and with it every reminder, blood-thinner ones included) is seen within a minute.
HEARTBEAT_KEY = "reminders:dispatcher:heartbeat"

SEND_BATCH = 25  # ids per send task: one claim and one commit per batch, sends in parallel
SEND_THREADS = 16  # provider calls in flight per worker process; they mostly wait on the network


@dataclass
class Runtime:
    """What a worker process needs, built lazily in that process: engines and HTTP sessions
    must not be shared across the fork that creates Celery's worker processes."""

    settings: Settings = field(default_factory=Settings.from_env)

    @cached_property
    def config(self) -> Config:
        return Config.load(self.settings)

    @cached_property
    def engine(self) -> Engine:
        # A worker inside a transaction for as long as a lease is paused or frozen: the
        # database ends its session, and the rows it locked go back to the sweeper.
        return make_engine(
            self.settings.database_url, idle_in_transaction=self.settings.stuck_after
        )

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_sessionmaker(self.engine)

    @cached_property
    def clock(self) -> DatabaseClock:
        # Every lease, due and deadline decision goes by the database's time, whatever this
        # host's clock says.
        return DatabaseClock(self.engine)

    @cached_property
    def transports(self) -> Transports:
        return Transports.from_settings(self.settings)

    @cached_property
    def pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="send")


_runtime: Runtime | None = None


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = Runtime()
    return _runtime


@worker_process_init.connect
def _fresh_runtime(**_: Any) -> None:
    global _runtime
    _runtime = None


def publish_send(ids: Sequence[int]) -> None:
    """Queue `ids` for sending, in batches.

    Published to the anonymous exchange, straight onto the queue's list: kombu routes a named
    exchange through a binding set in Redis, and if Redis loses its data that set is gone and
    publishes are dropped silently until something declares the queue again
    (celery/celery#10566). Rows whose task is lost anyway are put back by the sweeper.
    """
    for start in range(0, len(ids), SEND_BATCH):
        send_reminders.apply_async(
            args=[list(ids[start : start + SEND_BATCH])],
            queue=Queues.SEND,
            exchange="",
            routing_key=Queues.SEND,
        )


@shared_task(name="reminders.dispatch_due", ignore_result=True, bind=True)
def dispatch_due(self: Any) -> int:
    """Claim what is due and queue it; runs every second from beat."""
    rt = runtime()

    def backlog() -> int:
        with self.app.connection_for_read() as connection:
            depth = connection.default_channel.client.llen(Queues.SEND)
        return int(depth) * SEND_BATCH

    claimed = dispatch.dispatch(rt.sessions, publish_send, clock=rt.clock, backlog=backlog)
    # Set when a run has finished: a dispatcher that fails every time is not alive.
    with self.app.connection_for_write() as connection:
        connection.default_channel.client.set(HEARTBEAT_KEY, time.time())
    if claimed:  # what changed, not that it looked
        log.info("dispatched %d reminders", claimed)
    return claimed


@shared_task(name="reminders.send_reminders", ignore_result=True, acks_late=True)
def send_reminders(ids: list[int]) -> dict[str, int]:
    rt = runtime()
    return send.send_reminders(
        rt.sessions, rt.config, rt.transports, ids, clock=rt.clock, pool=rt.pool
    )


@shared_task(name="reminders.sweep", ignore_result=True)
def sweep_stalled() -> dict[str, int]:
    rt = runtime()
    return sweep.sweep(rt.sessions, rt.config, rt.transports, clock=rt.clock)


@shared_task(name="reminders.purge", ignore_result=True)
def purge() -> dict[str, int]:
    """Daily: remove patient data whose retention period is over."""
    rt = runtime()
    with session_scope(rt.sessions) as session:
        purged = retention.purge(
            session, now=now(), retention_days=rt.settings.retention_days, actor="retention"
        )
    return {"enrolments": purged.enrolments, "reminders": purged.reminders}


# An import of a long day list outlives the sends' time limit (task_time_limit in worker.py),
# which exists to stop a slow send racing the sweeper; an import has no such race.
IMPORT_TIME_LIMIT = 3600


@shared_task(name="reminders.import_upload", ignore_result=True, time_limit=IMPORT_TIME_LIMIT)
def import_upload(run_id: int) -> None:
    """Import a CSV file uploaded on the staff pages (services/import_runs.py)."""
    rt = runtime()
    import_runs.run(rt.sessions, rt.config, run_id)
