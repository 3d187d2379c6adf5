"""Drills across machines (issue 13), with real Celery workers and beats, a real Redis and
PostgreSQL (SQLite where it means something), and Twilio's fake on loopback: hosts whose clocks
disagree, a worker paused mid-burst for longer than its lease, a provider outage. In each: no
reminder sent twice, none lost, none left in `sending`. docs/reliability.md says what each
measured."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.twilio import FakeTwilio
from processes import CeleryProcess, wait_for
from sqlalchemy.orm import Session, sessionmaker
from test_workers import assert_each_sent_once, make_due, settled, states

pytestmark = pytest.mark.slow
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
