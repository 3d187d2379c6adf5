"""The Celery app: `celery -A worker worker` and `celery -A worker beat`.

Configured from the environment names of PRODUCT.md (Contracts); it refuses to start without
REMINDERS_BROKER_URL rather than fall back to a broker nobody chose.
"""

from __future__ import annotations

import sys
from datetime import timedelta

from celery import Celery
from celery.schedules import crontab
from celery.signals import setup_logging
from kombu import Queue

from reminders import logs
from reminders.interfaces.tasks import Queues
from reminders.settings import ConfigError, Settings

try:
    settings = Settings.from_env()
except ConfigError as exc:
    sys.exit(f"worker: {exc}")
if not settings.broker_url:
    sys.exit(
        "worker: REMINDERS_BROKER_URL is not set; point it at Redis, "
        "e.g. redis://localhost:6379/0 (reminders up starts one for you)"
    )


@setup_logging.connect
def _logging(**_: object) -> None:
    # Connected, this replaces Celery's own logging set-up: task logs, worker errors and
    # tracebacks all go through the masking handler.
    logs.configure(settings.log_level)


app = Celery("reminders", broker=settings.broker_url, include=["reminders.interfaces.tasks"])
app.conf.update(
    task_queues=[Queue(Queues.DISPATCH), Queue(Queues.SEND), Queue(Queues.IMPORT)],
    task_default_queue=Queues.DISPATCH,
    task_routes={
        "reminders.dispatch_due": {"queue": Queues.DISPATCH},
        "reminders.sweep": {"queue": Queues.DISPATCH},
        "reminders.purge": {"queue": Queues.DISPATCH},
        "reminders.send_reminders": {"queue": Queues.SEND},
        "reminders.import_upload": {"queue": Queues.IMPORT},
    },
    # A task is acknowledged when it has finished, and a worker takes one at a time, so a
    # worker that dies mid-batch leaves its batch to be redelivered; the guarded send makes the
    # redelivery harmless.
    # A backstop: a task still running past this is killed. What keeps a slow or paused worker
    # from sending what the sweeper has since given to another is the last check before each
    # request (`holds.go`, by the database's clock) and `send.LEAVE_WITHIN`, not this limit,
    # which each host measures by its own clock.
    task_time_limit=max(5, int(settings.stuck_after) - 5),
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    result_backend=None,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    # Unacknowledged tasks come back after this long; the sweeper recovers rows sooner anyway.
    broker_transport_options={"visibility_timeout": 300},
    worker_hijack_root_logger=False,
    timezone="UTC",
    beat_schedule={
        "dispatch": {
            "task": "reminders.dispatch_due",
            "schedule": timedelta(seconds=1),
            # No `expires`: Celery stamps it with beat's own clock and the worker compares it
            # with its own, so a beat whose clock is behind would have every dispatch thrown
            # away as stale. A dispatch that waited is harmless: it claims what is due then.
        },
        "purge": {
            "task": "reminders.purge",
            "schedule": crontab(hour=3, minute=17),  # daily, at a quiet hour
            "options": {"expires": 3600},
        },
        "sweep": {
            "task": "reminders.sweep",
            # Often enough that stuck work is recovered well within two minutes of a fault.
            "schedule": timedelta(seconds=max(1.0, min(20.0, settings.stuck_after / 3))),
        },
    },
)
