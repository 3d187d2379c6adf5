"""Drills across machines (issue 13), with real Celery workers and beats, a real Redis and
PostgreSQL (SQLite where it means something), and Twilio's fake on loopback: hosts whose clocks
disagree, a worker paused mid-burst for longer than its lease, a provider outage. In each: no
reminder sent twice, none lost, none left in `sending`. docs/reliability.md says what each
measured."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.smtp import FakeSmtp
from fakes.twilio import FakeTwilio
from processes import CeleryProcess, wait_for
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from test_workers import assert_each_sent_once, make_due, settled, states

from reminders.interfaces.tasks import SEND_THREADS
from reminders.store import models
from reminders.store.db import session_scope

pytestmark = pytest.mark.drill  # real workers and beats, some with skewed clocks, paused
LEASE = 5  # REMINDERS_STUCK_AFTER_SECONDS in the tests' environment (conftest.py)


SKEWED = Path(__file__).resolve().parent / "skewed"  # sitecustomize.py: a host's clock, off


class Hosts:
    """Workers and beats, each as if on a host of its own: its own clock (`skew`, in seconds:
    tests/skewed/sitecustomize.py moves every wall-clock read in the process, and leaves the
    monotonic clock alone, as a host's is)."""

    def __init__(self, env: dict[str, str], directory: Path) -> None:
        self.env, self.directory = env, directory
        self.started: list[CeleryProcess] = []

    def start(self, kind: str, *, skew: float = 0) -> CeleryProcess:
        n = len(self.started)
        if kind == "worker":
            args: tuple[str, ...] = ("-c", "2", "-n", f"w{n}@%h", "--without-gossip",
                                     "--without-mingle", "--without-heartbeat")  # fmt: skip
        else:
            args = ("--schedule", str(self.directory / f"beat-{n}"), "--max-interval", "1")
        env = dict(self.env)
        if skew:
            env |= {"PYTHONPATH": str(SKEWED), "REMINDERS_TEST_CLOCK_SKEW": str(skew)}
        process = CeleryProcess(kind, env, self.directory / f"{kind}-{n}.log", *args)
        self.started.append(process.start())
        return process

    def stop(self) -> None:
        for process in self.started:
            process.stop()


@pytest.fixture
def hosts(delivery_env: dict[str, str], tmp_path: Path) -> Iterator[Hosts]:
    started = Hosts(delivery_env, tmp_path)
    yield started
    started.stop()


def on_postgresql(factory: sessionmaker[Session]) -> bool:
    return factory.kw["bind"].dialect.name == "postgresql"


def test_hosts_whose_clocks_disagree_send_each_reminder_once(
    hosts: Hosts, fake_twilio: FakeTwilio, factory: sessionmaker[Session]
) -> None:
    """A worker two minutes behind, one two minutes ahead, and the only beat two minutes
    behind: every lease, due and deadline decision goes by the database's clock, so they
    agree. (SQLite is one machine's file: one clock already.)"""
    if not on_postgresql(factory):
        pytest.skip("SQLite: the database is a file on one machine, with that machine's clock")
    fake_twilio.create_delay = 0.05  # requests in flight while leases are decided
    make_due(factory, 600)
    hosts.start("worker", skew=-120)
    hosts.start("worker", skew=+120)
    hosts.start("beat", skew=-120)
    started = time.monotonic()
    wait_for(settled(factory, 600), timeout=90, what="all 600 settled despite the clocks")
    print(f"600 reminders settled in {time.monotonic() - started:.1f}s with skewed clocks")
    assert_each_sent_once(fake_twilio, factory, 600)


def test_a_worker_paused_past_its_lease_sends_nothing_twice(
    hosts: Hosts, fake_twilio: FakeTwilio, factory: sessionmaker[Session]
) -> None:
    """A whole worker stopped mid-burst (a VM freeze, a long pause) with requests waiting to
    leave, for longer than its lease; the sweeper gives its rows to another worker; then it
    wakes. Its requests must not leave."""
    fake_twilio.create_delay = 0.2  # a slow provider: many requests waiting in each worker
    make_due(factory, 300)
    paused = hosts.start("worker")
    hosts.start("beat")
    wait_for(lambda: len(fake_twilio.messages) >= 40, timeout=60, what="the burst to start")
    assert paused.process is not None
    os.killpg(paused.process.pid, signal.SIGSTOP)
    try:
        assert states(factory)["sending"] > 0, "nothing in flight when paused: the drill is moot"
        hosts.start("worker")
        # The fault is a pause of twice the lease (5 s here): time itself must pass. On
        # PostgreSQL the other worker carries on meanwhile; an SQLite file is one machine's,
        # and a process paused inside a write holds it until it wakes.
        time.sleep(2 * LEASE)
    finally:
        os.killpg(paused.process.pid, signal.SIGCONT)
    woke = time.monotonic()
    wait_for(settled(factory, 300), timeout=90, what="all 300 settled after the pause")
    print(f"all 300 settled {time.monotonic() - woke:.1f}s after the paused worker woke")
    before = len(fake_twilio.messages)
    paused.stop()  # a warm shutdown: it finishes what it held when it was paused
    print(f"after the pause: {len(fake_twilio.messages) - before} requests from the woken worker")
    assert_each_sent_once(fake_twilio, factory, 300)


def test_a_provider_outage_delays_and_loses_nothing(
    hosts: Hosts, fake_twilio: FakeTwilio, factory: sessionmaker[Session]
) -> None:
    """Every request fails (503) for a while, then the provider heals: every reminder is sent
    once, none failed for running out of attempts, and staff were told while it lasted."""
    fake_twilio.set_fault_rates(error_503=1.0)
    make_due(factory, 200)
    hosts.start("worker")
    hosts.start("beat")
    wait_for(
        lambda: fake_twilio.outcomes["503"] >= 600, timeout=90, what="three failures a reminder"
    )
    assert states(factory)["failed"] == 0
    healed = time.monotonic()
    fake_twilio.set_fault_rates()
    wait_for(settled(factory, 200), timeout=90, what="all 200 settled after the outage")
    print(f"200 reminders sent {time.monotonic() - healed:.1f}s after the provider healed")
    assert_each_sent_once(fake_twilio, factory, 200)


def test_a_worker_killed_mid_email_burst_repeats_almost_nothing(
    hosts: Hosts, fake_smtp: FakeSmtp, factory: sessionmaker[Session]
) -> None:
    """SMTP cannot be asked what it accepted, so an email whose worker was killed between the
    server's acceptance and the record of it goes again (with the same Message-ID). Each
    outcome is recorded the moment it is known, so that window is one message per sending
    thread at most, and in practice far less (docs/reliability.md)."""
    make_due(factory, 450)
    with session_scope(factory) as session:
        session.execute(update(models.Reminder).values(channel="email"))
        for patient in session.scalars(select(models.Patient)):
            patient.email = f"patient.{patient.id}@example.org"
    first = hosts.start("worker")
    hosts.start("beat")
    wait_for(lambda: len(fake_smtp.received) >= 100, timeout=60, what="the burst to start")
    first.kill()
    assert states(factory)["sent"] < 450, "the burst finished before the kill: too small"
    hosts.start("worker")
    wait_for(settled(factory, 450), timeout=120, what="all 450 settled after the kill")
    ids = Counter(str(r.message["Message-ID"]) for r in fake_smtp.received)
    twice = sum(1 for n in ids.values() if n > 1)
    print(f"emails sent twice after a kill mid-burst: {twice} of 450")
    assert len(ids) == 450 and states(factory) == Counter({"sent": 450})
    assert twice <= 2 * SEND_THREADS  # at most one per sending thread of the killed worker
