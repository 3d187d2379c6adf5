"""What `/healthz` reports, and the gauges `/metrics` reads at scrape time, from the database
and the broker, so they are right whichever process did the work (web, worker or beat)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import and_, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from reminders.interfaces.tasks import HEARTBEAT_KEY, Queues
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


# Past these, /healthz answers 503: the dispatcher has not run for a minute (beat or every
# worker stopped), or a due reminder has waited two minutes without being claimed.
SILENT_AFTER = 60.0
LATE_AFTER = 120.0


def heartbeat_age(client: redis.Redis | None) -> float | None:
    """Seconds since the dispatcher last ran, or None if it never has (or the broker is
    unreachable)."""
    if client is None:
        return None
    try:
        beat = client.get(HEARTBEAT_KEY)
    except redis.RedisError:
        return None
    return max(0.0, time.time() - float(beat)) if beat is not None else None


def due_unclaimed(session: Session, now: datetime) -> tuple[int, float]:
    """Reminders due and not claimed, and how long the oldest has waited."""
    R = models.Reminder
    count, oldest = session.execute(
        select(func.count(), func.min(R.send_at)).where(R.state == "scheduled", R.send_at <= now)
    ).one()
    return int(count), _seconds_since(oldest, now)


def health(sessions: sessionmaker[Session], client: redis.Redis | None) -> dict[str, Any]:
    checks: dict[str, Any] = {
        "database": "ok" if database_ok(sessions) else "down",
        "broker": "ok" if broker_ok(client) else ("down" if client else "not configured"),
    }
    age = heartbeat_age(client)
    checks["dispatcher"] = (
        "not configured" if client is None
        else "ok" if age is not None and age <= SILENT_AFTER else "silent"
    )  # fmt: skip
    late = False
    if checks["database"] == "ok":
        try:
            with sessions() as session:
                count, oldest = due_unclaimed(session, database_now(session))
        except Exception:  # not migrated, or gone since: "down", the reason is for the logs
            checks["database"] = "down"
        else:
            checks["due_unclaimed"], checks["oldest_due_seconds"] = count, round(oldest, 1)
            late = oldest > LATE_AFTER
    ok = all(checks[k] == "ok" for k in ("database", "broker", "dispatcher")) and not late
    return {"status": "ok" if ok else "unavailable", **checks}


class ReminderCollector(Collector):
    """What is true now, read at scrape time from the dispatcher's own index and the broker:
    work that is due and not yet claimed (the dispatcher is behind or stopped), and what is
    waiting in Redis. Counts of what happened are counted as it happens (`reminders.metrics`)."""

    def __init__(self, sessions: sessionmaker[Session], client: redis.Redis | None) -> None:
        self.sessions = sessions
        self.client = client

    def collect(self) -> Iterator[Any]:
        A = models.AttentionItem
        R = models.Reminder
        with self.sessions() as session:
            now = database_now(session)  # one clock: the database's
            count, oldest = due_unclaimed(session, now)
            open_items = session.execute(
                select(A.kind, A.needs_call, func.count(), func.min(A.created_at))
                .where(A.resolved_at.is_(None))
                .group_by(A.kind, A.needs_call)
            ).all()
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
        for band, n in zip(ages, sending, strict=True):
            by_age.add_metric([band], float(n))
        yield by_age
        attention = GaugeMetricFamily(
            "reminders_attention_open",
            "Needs-attention items nobody has dealt with, by kind and whether a call is needed.",
            labels=["kind", "call"],
        )
        oldest_call = 0.0
        for kind, call, n, since in open_items:
            attention.add_metric([kind, "yes" if call else "no"], float(n))
            if call:
                oldest_call = max(oldest_call, _seconds_since(since, now))
        yield attention
        calls = GaugeMetricFamily(
            "reminders_call_list_oldest_seconds",
            "How long the oldest call-list item has waited for someone to ring (0 if none).",
        )
        calls.add_metric([], oldest_call)
        yield calls
        beat = GaugeMetricFamily(
            "reminders_dispatcher_heartbeat_age_seconds",
            "Seconds since the dispatcher last ran (absent if it never has).",
        )
        age = heartbeat_age(self.client)
        if age is not None:
            beat.add_metric([], age)
        yield beat
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
        waited.add_metric([], oldest)
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
