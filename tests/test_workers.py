"""Delivery through real Celery workers and beats (`celery -A worker ...`), a real Redis and a
real database, to Twilio and SMTP fakes on loopback; and the reliability drills of PRODUCT.md:
a worker killed mid-burst, Redis flushed mid-burst, two beats at once, a faulty provider. In every
one: nothing sent twice, nothing lost."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fakes.smtp import FakeSmtp
from fakes.twilio import FakeTwilio
from fastapi.testclient import TestClient
from paths import PROJECT_ROOT
from processes import BIN, CeleryProcess, RedisServer, wait_for
from scrape import metric_values
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from reminders.interfaces.tasks import HEARTBEAT_KEY, Queues
from reminders.interfaces.web.app import create_app
from reminders.services import accounts
from reminders.settings import Settings
from reminders.store import lifecycle, models
from reminders.store.db import make_sessionmaker, session_scope

pytestmark = pytest.mark.drill  # real Celery workers and beats, seconds each

Start = Callable[..., CeleryProcess]
SETTLED = ("sent", "failed", "skipped", "cancelled")


@pytest.fixture
def factory(db_engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(db_engine)


@pytest.fixture
def celery(delivery_env: dict[str, str], tmp_path: Path) -> Iterator[Start]:
    """Start `celery -A worker worker` or `... beat` with the deployment's environment."""
    started: list[CeleryProcess] = []

    def start(kind: str, *args: str) -> CeleryProcess:
        n = len(started)
        if kind == "worker":
            args = ("-c", "2", "-n", f"w{n}@%h", "--without-gossip", "--without-mingle",
                    "--without-heartbeat", *args)  # fmt: skip
        else:
            args = ("--schedule", str(tmp_path / f"beat-{n}"), "--max-interval", "1", *args)
        process = CeleryProcess(kind, delivery_env, tmp_path / f"{kind}-{n}.log", *args)
        started.append(process.start())
        return process

    yield start
    for process in started:
        process.stop()


def make_due(factory: sessionmaker[Session], count: int, *, start: int = 0) -> list[int]:
    """`count` patients, each with one SMS reminder due now and a mobile number of their own,
    so that any message sent twice shows up in the fake's records."""
    now = datetime.now(UTC)
    later = now + timedelta(hours=3)
    with session_scope(factory) as session:
        for i in range(start, start + count):
            enrolment = models.Enrolment(
                booking_ref=f"BULK-{i}",
                patient=models.Patient(name=f"Patient {i}", phone=f"+4479111{i:05d}"),
                procedure="si-joint-denervation",
                local_date=later.date(),
                local_time=later.time().replace(microsecond=0),
                timezone="UTC",
                starts_at=later,
                enrolled_at=now,
            )
            enrolment.reminders.append(
                models.Reminder(
                    rule="booking-confirmation",
                    channel="sms",
                    send_at=now,
                    deadline=later,
                    expires_at=later,
                    schedule_version=1,
                    template="booking-confirmation",
                )
            )
            session.add(enrolment)
    return list(range(start, start + count))


def states(factory: sessionmaker[Session]) -> Counter[str]:
    with session_scope(factory) as session:
        rows = session.execute(
            select(models.Reminder.state, func.count()).group_by(models.Reminder.state)
        )
        return Counter({state: count for state, count in rows})


def settled(factory: sessionmaker[Session], total: int) -> Callable[[], bool]:
    return lambda: sum(states(factory)[s] for s in SETTLED) == total


def assert_each_sent_once(fake: FakeTwilio, factory: sessionmaker[Session], total: int) -> None:
    numbers = Counter(m["to"] for m in fake.messages)
    twice = {number: n for number, n in numbers.items() if n > 1}
    assert twice == {}, f"sent more than once: {twice}"
    assert len(numbers) == total
    assert states(factory) == Counter({"sent": total})


def test_the_worker_refuses_to_start_without_a_broker() -> None:
    result = subprocess.run(
        [str(BIN / "celery"), "-A", "worker", "worker"],
        env={"PATH": os.environ.get("PATH", "")},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "worker: REMINDERS_BROKER_URL is not set; point it at Redis, e.g. "
        "redis://localhost:6379/0 (reminders up starts one for you)"
    ]


def test_every_named_queue_is_consumed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMINDERS_BROKER_URL", "redis://127.0.0.1:1/0")  # never connected to
    worker = importlib.import_module("worker")
    named = {v for k, v in vars(Queues).items() if not k.startswith("_")}
    consumed = {queue.name for queue in worker.app.conf.task_queues}
    routed = {route["queue"] for route in worker.app.conf.task_routes.values()}
    assert named == consumed == routed


def test_a_same_day_enrolment_is_delivered_by_worker_and_beat(
    celery: Start, delivery_env: dict[str, str], fake_twilio: FakeTwilio, fake_smtp: FakeSmtp,
    factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    start = datetime.now(UTC) + timedelta(hours=3)
    result = subprocess.run(
        [
            str(BIN / "reminders"),
            "enrol",
            "--procedure",
            "si-joint-denervation",
            "--at",
            start.strftime("%Y-%m-%dT%H:%M"),
            "--tz",
            "UTC",
            "--name",
            "Rhys Evans",
            "--phone",
            "07911 100020",
            "--email",
            "rhys.evans@example.org",
        ],
        env=delivery_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    worker_process = celery("worker")
    beat_process = celery("beat")
    wait_for(lambda: states(factory)["sent"] == 6, timeout=60, what="six messages sent")
    texts = fake_twilio.messages_to("+447911100020")
    assert len(texts) == 3 and all("Rhys" in m["body"] for m in texts)
    assert len(fake_smtp.to("rhys.evans@example.org")) == 3
    assert states(factory) == Counter({"sent": 6, "scheduled": 4})  # after-care still to come

    # The web app adds up what the worker's processes counted as they sent.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", delivery_env["PROMETHEUS_MULTIPROC_DIR"])
    settings = Settings.from_env(delivery_env)
    counted = metric_values(TestClient(create_app(settings)).get("/metrics").text)
    assert counted['reminders_messages_total{channel="sms",state="sent"}'] == 3
    assert counted['reminders_messages_total{channel="email",state="sent"}'] == 3
    assert counted["reminders_provider_latency_seconds_count"] == 6

    # Nothing of the patient's reached the logs of the processes that did the work.
    output = worker_process.output() + beat_process.output()
    assert "reminder " in output and " via twilio: sent" in output  # there are logs to check
    for secret in ("+447911100020", "07911 100020", "447911100020", "rhys.evans@example.org"):
        assert secret not in output
    for message in texts:
        assert message["body"] not in output
        assert message["body"][:40] not in output


@contextmanager
def told_to_stop(
    celery: Start, delivery_env: dict[str, str], fake_twilio: FakeTwilio, ref: str, phone: str,
    day: date,
) -> Iterator[tuple[TestClient, Any, Callable[[], list[str]]]]:  # fmt: skip
    """Worker and beat running, and a patient enrolled through the API on a warfarin plan, told
    (by the booking and the plan) to stop it: the API client, the answer, and their texts."""
    celery("worker")
    celery("beat")
    app = create_app(Settings.from_env(delivery_env))
    with TestClient(app) as api:
        with session_scope(app.state.sessions) as session:
            token = accounts.add_token(session, name="pas", now=datetime.now(UTC), actor="t")
        api.headers["Authorization"] = f"Bearer {token.secret}"
        created = api.post("/api/v1/enrolments", json={
            "booking_ref": ref, "name": "Megan Price", "phone": phone,
            "procedure": "sacroplasty", "date": day.isoformat(), "time": "09:30",
            "anticoagulant": "warfarin", "anticoagulant_hold_days": 5,
            "anticoagulant_restart_days": 0,
        })  # fmt: skip
        assert created.status_code == 201, created.text
        told = lambda: [m["body"] for m in fake_twilio.messages_to(phone)]  # noqa: E731
        wait_for(lambda: len(told()) == 2, timeout=60, what="the booking and the plan sent")
        assert "stop warfarin" in told()[1]
        yield api, created, told


def test_h1_a_booking_cancelled_after_a_stop_instruction_through_a_real_worker(
    celery: Start, delivery_env: dict[str, str], fake_twilio: FakeTwilio,
    factory: sessionmaker[Session],
) -> None:  # fmt: skip
    """Hazard H1 (docs/clinical-safety.md) end to end on the real clock: a booking system
    enrols a patient told to stop warfarin, then cancels; worker and beat do the sending."""
    day = (datetime.now(UTC) + timedelta(days=10)).date()
    phone = "+447911100090"
    stopping = told_to_stop(celery, delivery_env, fake_twilio, "BK-H1", phone, day)
    with stopping as (api, created, told):
        cancelled = api.post(f"/api/v1/enrolments/{created.json()['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
    wait_for(lambda: len(told()) == 3, timeout=60, what="the cancellation sent")
    assert told()[2].startswith(
        f"Hello Megan, your appointment on {day:%A} {day.day} {day:%B} at 9:30am has been "
        "cancelled. You were asked to stop warfarin: our team will call you about when to "
        "start it again."
    )
    with session_scope(factory) as session:
        calls = session.scalars(
            select(models.AttentionItem.message).where(models.AttentionItem.needs_call)
        ).all()
        pending = session.scalar(select(func.count()).where(models.Reminder.state == "scheduled"))
    assert pending == 0
    (call,) = calls
    assert call.startswith("Urgent, a clinician must decide: the procedure on ")
    assert "the patient was told to stop warfarin" in call


def test_h2_a_booking_moved_after_a_stop_instruction_through_a_real_worker(
    celery: Start, delivery_env: dict[str, str], fake_twilio: FakeTwilio,
    factory: sessionmaker[Session],
) -> None:  # fmt: skip
    """Hazard H2 end to end on the real clock: a patient told to stop warfarin is moved a week
    later through the API; the worker tells them the team will call, and works out no dates."""
    day = (datetime.now(UTC) + timedelta(days=10)).date()
    later = day + timedelta(days=7)
    phone = "+447911100091"
    stopping = told_to_stop(celery, delivery_env, fake_twilio, "BK-H2", phone, day)
    with stopping as (api, created, told):
        moved = api.patch(
            f"/api/v1/enrolments/{created.json()['id']}", json={"date": later.isoformat()}
        )
        assert moved.status_code == 200, moved.text
    wait_for(lambda: len(told()) == 3, timeout=60, what="the move sent")
    assert told()[2].startswith(
        f"Hello Megan, your appointment has moved. It was on {day:%A} {day.day} {day:%B} at "
        f"9:30am. It is now on {later:%A} {later.day} {later:%B} at 9:30am. The dates we gave "
        "you for warfarin may no longer be right: our team will call you about it."
    )
    with session_scope(factory) as session:
        calls = session.scalars(
            select(models.AttentionItem.message).where(models.AttentionItem.needs_call)
        ).all()
        planned = session.scalars(
            select(models.Reminder.rule).where(models.Reminder.state == "scheduled")
        ).all()
    (call,) = calls
    assert call.startswith("Urgent, a clinician must decide: the procedure moved from ")
    # Until a clinician records a new plan, nothing tells the patient when to stop or restart.
    assert planned and not {"anticoagulant-stop", "anticoagulant-restart"} & set(planned)


def test_two_beats_at_once_send_each_reminder_once(
    celery: Start, fake_twilio: FakeTwilio, factory: sessionmaker[Session]
) -> None:
    # More than one claim's worth, so the two beats' dispatchers really do compete.
    make_due(factory, 1500)
    celery("worker")
    celery("beat")
    celery("beat")
    wait_for(settled(factory, 1500), timeout=90, what="all 1500 settled")
    assert_each_sent_once(fake_twilio, factory, 1500)


def test_a_worker_killed_mid_burst_loses_and_repeats_nothing(
    celery: Start, fake_twilio: FakeTwilio, factory: sessionmaker[Session]
) -> None:
    make_due(factory, 1000)
    first = celery("worker")
    celery("beat")
    wait_for(lambda: len(fake_twilio.messages) >= 150, timeout=60, what="the burst to start")
    first.kill()
    assert states(factory)["sent"] < 1000, "the burst finished before the kill: too small"
    celery("worker")
    wait_for(settled(factory, 1000), timeout=120, what="all 1000 settled after the kill")
    assert_each_sent_once(fake_twilio, factory, 1000)


def test_redis_flushed_mid_burst_loses_nothing(
    celery: Start, fake_twilio: FakeTwilio, factory: sessionmaker[Session],
    redis_server: RedisServer,
) -> None:  # fmt: skip
    make_due(factory, 1000)
    celery("worker")
    celery("beat")
    wait_for(lambda: len(fake_twilio.messages) >= 150, timeout=60, what="the burst to start")
    redis_server.client().flushall()
    wait_for(settled(factory, 1000), timeout=120, what="all 1000 settled after the flush")
    assert_each_sent_once(fake_twilio, factory, 1000)


def test_a_faulty_provider_still_gets_each_message_once(
    celery: Start, fake_twilio: FakeTwilio, factory: sessionmaker[Session]
) -> None:
    # PRODUCT.md's drill: 20% of requests fail, 5% time out after Twilio accepted, 2% are
    # rate-limited. Everything ends sent within two minutes, nothing twice.
    fake_twilio.accept_timeout_delay = 3  # past the workers' 2-second timeout
    fake_twilio.set_fault_rates(error_500=0.2, accept_then_timeout=0.05, rate_limit=0.02, seed=7)
    make_due(factory, 300)
    celery("worker")
    celery("beat")
    wait_for(settled(factory, 300), timeout=120, what="all 300 settled despite faults")
    assert fake_twilio.outcomes["500"] > 0 and fake_twilio.outcomes["timeout-after-accept"] > 0
    assert_each_sent_once(fake_twilio, factory, 300)


def test_a_poison_row_fails_alone_and_its_batch_mates_go_once(
    celery: Start, delivery_env: dict[str, str], fake_twilio: FakeTwilio,
    factory: sessionmaker[Session], tmp_path: Path,
) -> None:  # fmt: skip
    """A message that stops the worker sending it, every time: a template that never finishes
    for one patient's data, until the task's time limit kills the process. It must not take
    its batch-mates with it more than once, nor be tried for ever."""
    templates = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "templates", templates)
    sms = templates / "en-GB" / "booking-confirmation" / "sms.txt"
    endless = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    sms.write_text(f'{{% if first_name == "Poison" %}}{endless}{{% endif %}}' + sms.read_text())
    delivery_env["REMINDERS_TEMPLATES_DIR"] = str(templates)
    make_due(factory, 20)
    with session_scope(factory) as session:
        first = select(models.Enrolment.patient_id).where(models.Enrolment.booking_ref == "BULK-0")
        session.execute(
            update(models.Patient)
            .where(models.Patient.id == first.scalar_subquery())
            .values(name="Poison Pill")
        )
    celery("worker")
    celery("beat")
    wait_for(settled(factory, 20), timeout=120, what="the 19 sent and the poison row failed")
    numbers = Counter(m["to"] for m in fake_twilio.messages)
    assert len(numbers) == 19 and set(numbers.values()) == {1}
    with session_scope(factory) as session:
        poison = session.scalars(
            select(models.Reminder).where(models.Reminder.state == "failed")
        ).one()
        assert poison.enrolment.patient.name == "Poison Pill"
        assert poison.crashes == lifecycle.MAX_CRASHES and poison.attempts == lifecycle.MAX_CRASHES
        items = session.scalars(select(models.AttentionItem)).all()
        assert [(i.kind, i.reminder_id) for i in items] == [("delivery-failed", poison.id)]
        assert "stopped before it was sent" in items[0].message


def test_tasks_are_not_left_in_redis_for_future_reminders(
    celery: Start, factory: sessionmaker[Session], redis_server: RedisServer
) -> None:
    """Redis holds only work due now: a month of future reminders queues nothing."""
    make_due(factory, 50)
    with session_scope(factory) as session:
        session.execute(
            models.Reminder.__table__.update().values(
                send_at=datetime.now(UTC) + timedelta(days=30)
            )
        )
    celery("beat")
    worker_process = celery("worker")
    wait_for(lambda: "ready." in worker_process.output(), timeout=60, what="the worker")
    client = redis_server.client()
    # The heartbeat is left by a dispatch that has finished (Celery's own "succeeded" line is
    # no longer logged at INFO: quiet when idle).
    wait_for(lambda: client.get(HEARTBEAT_KEY) is not None, timeout=30,
             what="a dispatch to finish")  # fmt: skip
    assert client.llen(Queues.SEND) == 0
    assert states(factory) == Counter({"scheduled": 50})


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def test_idle_worker_and_beat_are_quiet_and_the_dispatcher_leaves_a_heartbeat(
    celery: Start, redis_server: RedisServer
) -> None:
    """About three INFO lines a second while nothing happened (58 MB a day): now only what
    changes is logged, and the dispatcher's heartbeat is how anyone sees it is running."""
    worker, beat = celery("worker"), celery("beat")
    client = redis_server.client()
    wait_for(lambda: client.get(HEARTBEAT_KEY) is not None, timeout=60, what="a heartbeat")
    first = float(client.get(HEARTBEAT_KEY) or 0)
    wait_for(lambda: float(client.get(HEARTBEAT_KEY) or 0) >= first + 3, timeout=60,
             what="three more seconds of dispatching")  # fmt: skip
    for process in (worker, beat):
        # The worker's banner lists its tasks once, as "  . reminders.dispatch_due".
        ticks = [line for line in process.output().splitlines()
                 if ("dispatch_due" in line or "reminders.sweep" in line)
                 and not line.startswith("  . ")]  # fmt: skip
        assert ticks == [], ticks[:5]
