"""What `/healthz` and `/metrics` report, read from the database and the broker at request
time, so they are right whichever process did the work (web, worker or beat)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from reminders.interfaces.tasks import Queues
from reminders.store import models

LATENESS_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
PROVIDER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


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
    """Prometheus metrics computed from the reminders table at scrape time."""

    def __init__(self, sessions: sessionmaker[Session], client: redis.Redis | None) -> None:
        self.sessions = sessions
        self.client = client

    def collect(self) -> Iterator[Any]:
        R = models.Reminder
        by_state = GaugeMetricFamily(
            "reminders_reminders", "Reminders by state.", labels=["state", "channel"]
        )
        outcomes = GaugeMetricFamily(
            "reminders_sends",
            "Reminders handed to a transport or given up on, by outcome, channel and transport.",
            labels=["outcome", "channel", "transport"],
        )
        states: Counter[tuple[str, str]] = Counter()
        sends: Counter[tuple[str, str, str]] = Counter()
        with self.sessions() as session:
            for state, channel, transport, count in session.execute(
                select(R.state, R.channel, R.transport, func.count()).group_by(
                    R.state, R.channel, R.transport
                )
            ):
                states[(state, channel)] += count
                if state in ("sent", "failed"):
                    sends[(state, channel, transport or "none")] += count
            for total in session.scalars(select(models.PurgedTotal)):
                # Purged with their patients' data; still counted.
                states[(total.state, total.channel)] += total.count
                if total.state in ("sent", "failed"):
                    sends[(total.state, total.channel, total.transport)] += total.count
            lateness = self._lateness(session)
            provider = self._provider_latency(session)
        for (state, channel), count in sorted(states.items()):
            by_state.add_metric([state, channel], count)
        for outcome_labels, count in sorted(sends.items()):
            outcomes.add_metric(list(outcome_labels), count)
        yield by_state
        yield outcomes
        yield lateness
        yield provider
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

    def _lateness(self, session: Session) -> HistogramMetricFamily:
        """How long after its due time each sent reminder went, as a histogram."""
        R = models.Reminder
        return _histogram(
            session,
            "reminders_lateness_seconds",
            "Seconds from a reminder's due time to its sending.",
            _seconds_between(session, R.sent_at, R.send_at),
            LATENESS_BUCKETS,
            R.state == "sent",
            R.sent_at.is_not(None),
        )

    def _provider_latency(self, session: Session) -> HistogramMetricFamily:
        """How long the provider took over each attempt that ended (sent or failed)."""
        R = models.Reminder
        return _histogram(
            session,
            "reminders_provider_latency_seconds",
            "Seconds the provider (Twilio, the mail server) took over a send.",
            R.provider_seconds,
            PROVIDER_BUCKETS,
            R.provider_seconds.is_not(None),
        )


def _histogram(
    session: Session, name: str, documentation: str, value: Any, buckets: tuple[float, ...],
    *where: Any,
) -> HistogramMetricFamily:  # fmt: skip
    counts = session.execute(
        select(
            *(func.sum(case((value <= b, 1), else_=0)) for b in buckets),
            func.count(),
            func.coalesce(func.sum(value), 0),
        ).where(*where)
    ).one()
    *in_buckets, total, seconds = counts
    family = HistogramMetricFamily(name, documentation)
    family.add_metric(
        [],
        [(str(b), float(n or 0)) for b, n in zip(buckets, in_buckets, strict=True)]
        + [("+Inf", float(total))],
        float(seconds),
    )
    return family


def _seconds_between(session: Session, later: Any, earlier: Any) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", later - earlier)
    # SQLite keeps instants as text; julianday counts days.
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0
