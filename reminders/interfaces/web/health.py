"""What `/healthz` reports, and the gauges `/metrics` reads at scrape time, from the database
and the broker, so they are right whichever process did the work (web, worker or beat)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import and_, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from reminders.interfaces.tasks import Queues
from reminders.store import models
from reminders.store.db import database_now


def database_ok(sessions: sessionmaker[Session]) -> bool:
    try:
        with sessions() as session:
            session.execute(text("SELECT 1"))
        return True
    except Exception:  # any failure means "down"; the reason is for the logs, not the probe
        return False


def broker(url: str | None) -> redis.Redis | None:
    if not url:
        return None
    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)


def broker_ok(client: redis.Redis | None) -> bool:
    if client is None:
        return False
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def health(sessions: sessionmaker[Session], client: redis.Redis | None) -> dict[str, str]:
    checks = {
        "database": "ok" if database_ok(sessions) else "down",
        "broker": "ok" if broker_ok(client) else ("down" if client else "not configured"),
    }
    status = "ok" if all(v == "ok" for v in checks.values()) else "unavailable"
    return {"status": status, **checks}


class ReminderCollector(Collector):
    """What is true now, read at scrape time from the dispatcher's own index and the broker:
    work that is due and not yet claimed (the dispatcher is behind or stopped), and what is
    waiting in Redis. Counts of what happened are counted as it happens (`reminders.metrics`)."""

    def __init__(self, sessions: sessionmaker[Session], client: redis.Redis | None) -> None:
        self.sessions = sessions
        self.client = client

    def collect(self) -> Iterator[Any]:
        R = models.Reminder
        with self.sessions() as session:
            now = database_now(session)
            count, oldest = session.execute(
                select(func.count(), func.min(R.send_at)).where(
                    R.state == "scheduled", R.send_at <= now
                )
            ).one()
            minute, ten = now - timedelta(minutes=1), now - timedelta(minutes=10)
            ages = {
                "under 1m": R.sending_at >= minute,
                "1m to 10m": and_(R.sending_at < minute, R.sending_at >= ten),
                "over 10m": R.sending_at < ten,
            }
            sending = session.execute(
                select(*(func.count().filter(age) for age in ages.values())).where(
                    R.state == "sending"
                )
            ).one()
        by_age = GaugeMetricFamily(
            "reminders_sending",
            "Reminders in `sending` (a worker holds them, or the provider is being asked about "
            "them), by how long since the attempt began; none should stay there for long.",
            labels=["age"],
        )
        for age, n in zip(ages, sending, strict=True):
            by_age.add_metric([age], float(n))
        yield by_age
        due = GaugeMetricFamily(
            "reminders_due_unclaimed",
            "Reminders due now that the dispatcher has not claimed yet.",
        )
        due.add_metric([], float(count))
        yield due
        waited = GaugeMetricFamily(
            "reminders_oldest_due_seconds",
            "How long the oldest due and unclaimed reminder has waited (0 when none has).",
        )
        waited.add_metric([], _seconds_since(oldest, now))
        yield waited
        depth = GaugeMetricFamily(
            "reminders_queue_depth", "Tasks waiting in the broker, by queue.", labels=["queue"]
        )
        if self.client is not None:
            try:
                for queue in (Queues.DISPATCH, Queues.SEND):
                    depth.add_metric([queue], float(self.client.llen(queue)))
            except redis.RedisError:
                pass  # /healthz reports the broker; metrics go without the depth
        yield depth


def _seconds_since(then: datetime | None, now: datetime) -> float:
    if then is None:
        return 0.0
    # SQLite gives the aggregate back as text or a naive datetime, not through the column type.
    if isinstance(then, str):
        then = datetime.fromisoformat(then)
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return max(0.0, (now - then).total_seconds())
