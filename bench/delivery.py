"""Delivery benchmarks against PRODUCT.md's Targets, run by hand (results in docs/benchmarks.md).

    .venv/bin/python bench/delivery.py throughput [--count 20000]
    .venv/bin/python bench/delivery.py timeliness [--rate 50 --seconds 60]

Both start what a deployment runs: a Redis of their own, `celery -A worker worker -c 2` (two
worker processes) and one beat, on a fresh database (PostgreSQL at 127.0.0.1:5432 by default,
`--database sqlite` for a file), sending through the real `twilio` client to the fake Twilio of
the tests, which runs in this process and records when each message arrived.

throughput: COUNT reminders due at once; prints messages per second reaching the fake, from the
first arrival to the last, and checks none arrived twice.
timeliness: RATE reminders falling due per second for SECONDS; prints how late each reached the
fake after its due time (p50, p99, max).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fakes.twilio import FakeTwilio  # noqa: E402
from processes import CeleryProcess, RedisServer, wait_for  # noqa: E402
from sqlalchemy import func, insert, select, text  # noqa: E402

from reminders.store import models  # noqa: E402
from reminders.store.db import make_engine, make_sessionmaker, session_scope  # noqa: E402
from reminders.store.migrate import upgrade  # noqa: E402

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def fresh_database(kind: str, workdir: Path) -> tuple[str, str | None]:
    if kind == "sqlite":
        return f"sqlite:///{workdir / 'bench.db'}", None
    name = f"reminders_bench_{os.getpid()}_{secrets.token_hex(3)}"
    admin = make_engine(POSTGRES).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return POSTGRES.rsplit("/", 1)[0] + f"/{name}", name


def drop_database(name: str | None) -> None:
    if name is None:
        return
    admin = make_engine(POSTGRES).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def phone(i: int) -> str:
    return f"+4479111{i:05d}"


def insert_due(url: str, sends: list[datetime]) -> None:
    """One patient and one SMS reminder per send time, inserted in bulk; its words are
    written as it is sent, as every reminder's are."""
    assert len(sends) <= 100_000, "one mobile number a patient"
    engine = make_engine(url)
    now = datetime.now(UTC)
    later = max(sends) + timedelta(hours=3)
    with engine.begin() as connection:
        patients = [
            {"id": i + 1, "name": f"Patient {i}", "phone": phone(i),
             "language": "en-GB", "created_at": now, "updated_at": now}
            for i in range(len(sends))
        ]  # fmt: skip
        connection.execute(insert(models.Patient), patients)
        connection.execute(
            insert(models.Enrolment),
            [
                {"id": i + 1, "booking_ref": f"B{i}", "patient_id": i + 1,
                 "procedure": "si-joint-denervation", "local_date": later.date(),
                 "local_time": later.time().replace(microsecond=0), "timezone": "UTC",
                 "starts_at": later, "status": "active", "schedule_version": 1,
                 "enrolled_at": now, "updated_at": now}
                for i in range(len(sends))
            ],
        )  # fmt: skip
        connection.execute(
            insert(models.Reminder),
            [
                {"enrolment_id": i + 1, "rule": "booking-confirmation", "channel": "sms",
                 "state": "scheduled", "send_at": send_at, "deadline": later,
                 "expires_at": later, "schedule_version": 1,
                 "template": "booking-confirmation", "attempts": 0,
                 "safety_critical": False, "is_correction": False,
                 "created_at": now, "updated_at": now}
                for i, send_at in enumerate(sends)
            ],
        )  # fmt: skip
    engine.dispose()


def sent_count(url: str) -> int:
    engine = make_engine(url)
    with session_scope(make_sessionmaker(engine)) as session:
        count = session.scalar(
            select(func.count()).where(models.Reminder.state.in_(("sent", "failed", "skipped")))
        )
    engine.dispose()
    return int(count or 0)


def run(args: argparse.Namespace, sends: list[datetime], report: object) -> None:
    with tempfile.TemporaryDirectory() as tmp, FakeTwilio() as fake:
        workdir = Path(tmp)
        url, created = fresh_database(args.database, workdir)
        redis = RedisServer(workdir).start()
        try:
            upgrade(url)
            insert_due(url, sends)
            env = {
                "PATH": os.environ.get("PATH", ""),
                "REMINDERS_DATABASE_URL": url,
                "REMINDERS_BROKER_URL": redis.url,
                "REMINDERS_SENDING_WINDOW": "00:00-24:00",
                "TWILIO_ACCOUNT_SID": fake.account_sid,
                "TWILIO_AUTH_TOKEN": fake.auth_token,
                "TWILIO_MESSAGING_SERVICE_SID": "MG" + "0" * 32,
                "TWILIO_BASE_URL": fake.base_url,
            }
            processes = [
                CeleryProcess("worker", env, workdir / "worker.log", "-c", "2",
                              "--without-gossip", "--without-mingle", "--without-heartbeat",
                              "--loglevel", "WARNING"),
                CeleryProcess("beat", env, workdir / "beat.log", "--schedule",
                              str(workdir / "beat"), "--max-interval", "1"),
            ]  # fmt: skip
            for process in processes:
                process.start()
            try:
                wait_for(
                    lambda: sent_count(url) == len(sends),
                    timeout=args.timeout,
                    every=0.5,
                    what="every reminder to be sent",
                )
            finally:
                for process in processes:
                    process.stop()
            messages = fake.messages
            # One patient a reminder, each with a number of their own: a number twice is a
            # reminder sent twice.
            numbers = Counter(m["to"] for m in messages)
            duplicates = sum(n - 1 for n in numbers.values() if n > 1)
            print(f"reminders: {len(sends)}; messages at the fake: {len(messages)}; "
                  f"duplicates: {duplicates}")  # fmt: skip
            report(messages, sends)  # type: ignore[operator]
        finally:
            redis.stop()
            drop_database(created)


def throughput(args: argparse.Namespace) -> None:
    now = datetime.now(UTC)

    def report(messages: list[dict[str, object]], sends: list[datetime]) -> None:
        arrivals = sorted(float(m["received_at"]) for m in messages)  # type: ignore[arg-type]
        span = arrivals[-1] - arrivals[0]
        print(f"first to last arrival: {span:.2f} s; {len(arrivals) / span:.0f} messages/s "
              f"(target: 500/s or more)")  # fmt: skip

    run(args, [now] * args.count, report)


def timeliness(args: argparse.Namespace) -> None:
    start = datetime.now(UTC) + timedelta(seconds=15)  # time for the worker to start
    step = timedelta(seconds=1 / args.rate)
    sends = [start + step * i for i in range(int(args.rate * args.seconds))]

    def report(messages: list[dict[str, object]], sends: list[datetime]) -> None:
        due = {phone(i): s.timestamp() for i, s in enumerate(sends)}
        late = sorted(float(m["received_at"]) - due[str(m["to"])] for m in messages)  # type: ignore[arg-type]
        p99 = late[int(len(late) * 0.99) - 1]
        within = sum(1 for x in late if x <= 2.0) / len(late)
        print(f"lateness: p50 {statistics.median(late):.3f} s, p99 {p99:.3f} s, "
              f"max {late[-1]:.3f} s; within 2 s: {within:.2%} (target: 99%)")  # fmt: skip

    run(args, sends, report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--timeout", type=float, default=600)
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("throughput")
    one.add_argument("--count", type=int, default=20000)
    two = commands.add_parser("timeliness")
    two.add_argument("--rate", type=float, default=50)
    two.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    print(f"{args.command} on {args.database}, started {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    {"throughput": throughput, "timeliness": timeliness}[args.command](args)


if __name__ == "__main__":
    main()
