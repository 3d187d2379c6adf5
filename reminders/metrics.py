"""Prometheus metrics, counted when things happen (a message sent, failed, receipted), not by
scanning the reminders table on every scrape.

The counts are made where a reminder changes (`store.lifecycle`), and published when the
transaction that made the change commits, so a rollback counts nothing. Workers, beat and the
web app are separate processes: with `PROMETHEUS_MULTIPROC_DIR` set (prometheus_client's own
variable; `reminders up` and docker-compose.yml set it to a directory they all share) each
writes its counts there and `/metrics` adds them up. Without it, a process counts only what it
did itself, which is what a test that sends and scrapes in one process wants.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.multiprocess import MultiProcessCollector

# The `_created` series double every counter for nothing a dashboard here uses.
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry()

MESSAGES = Counter(
    "reminders_messages",
    "Reminders that reached an end, by channel and how: sent, failed (with a reason for "
    "staff), skipped (opted out, too late, no contact) or cancelled (enrolment cancelled or "
    "moved).",
    ["channel", "state"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "reminders_retries",
    "Attempts put back to go again, by channel and what counted against them: the "
    "provider's failures, a worker's crashes, or nothing (the sending window, our settings).",
    ["channel", "cause"],
    registry=REGISTRY,
)
RECEIPTS = Counter(
    "reminders_receipts",
    "Delivery receipts that moved a message on, by the status they gave.",
    ["status"],
    registry=REGISTRY,
)
LATENESS = Histogram(
    "reminders_lateness_seconds",
    "Seconds from a reminder's due time to the provider taking it.",
    buckets=(0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0),
    registry=REGISTRY,
)
PROVIDER_LATENCY = Histogram(
    "reminders_provider_latency_seconds",
    "Seconds the provider (Twilio, the mail server) took over a send.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)


def exposed(extra: Iterable[object] = ()) -> CollectorRegistry:
    """The registry `/metrics` shows: every process's counts (or this process's), and the
    collectors in `extra` (gauges read at scrape time)."""
    registry = CollectorRegistry()
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    else:
        registry.register(REGISTRY)
    for collector in extra:
        registry.register(collector)  # type: ignore[arg-type]
    return registry
