"""Counting a reminder's changes for `/metrics` when, and only when, their transaction commits:
the lifecycle counts as it moves rows, and a rollback counts nothing."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Histogram
from sqlalchemy import event
from sqlalchemy.orm import Session

_COUNTS = "reminders.lifecycle.counts"


def count(session: Session, publish: Callable[[], object]) -> None:
    """Count a change when its transaction commits (`metrics`): a rollback counts nothing."""
    session.info.setdefault(_COUNTS, []).append(publish)


@event.listens_for(Session, "after_commit")
def _publish(session: Session) -> None:
    for publish in session.info.pop(_COUNTS, ()):
        publish()


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_COUNTS, None)


def observe(session: Session, histogram: Histogram, seconds: float | None) -> None:
    if seconds is not None:
        value = max(0.0, seconds)
        count(session, lambda: histogram.observe(value))
