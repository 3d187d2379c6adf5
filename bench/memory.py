"""Memory benchmark against PRODUCT.md's "Scale in time" target, run by hand (results in
docs/benchmarks.md).

    .venv/bin/python bench/memory.py [--count 1000000] [--small-count 10000]
                                     [--eta-count 100000] [--seconds 60] [--warmup 25]

Two designs, each with a Redis of its own:

1. This project's: COUNT future reminders (send_at spread over the next 30 days, the first an
   hour away, so none falls due) in a fresh, migrated database, then `celery -A worker worker
   -c 2` and one beat started as bench/delivery.py starts them. For SECONDS it samples, every
   few seconds, the RSS of the worker's process tree and of the beat, and Redis's
   `used_memory` and the length of the `reminders.send` list, after a warm-up (WARMUP s)
   in which both pool processes run their first tasks and the sweeper its first sweep. The
   same is done first with SMALL_COUNT reminders, so the two can be compared: memory must not
   depend on COUNT.
2. The design the project avoids (one Celery task per reminder, published with an `eta`):
   ETA_COUNT tasks of a no-op task, due over the next 30 days, published to a fresh Redis;
   prints Redis's memory after publishing, and the worker's RSS once it holds them all
   (a Celery worker fetches ETA tasks at once and keeps them until due), per task and
   extrapolated to 1,000,000.

RSS of a worker tree is summed over its processes (the main process and its two children), so
pages the children share with the parent are counted in each; that is the same in every run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from delivery import drop_database, fresh_database
from processes import BIN, CeleryProcess, RedisServer, wait_for

from reminders.store.migrate import upgrade

MB = 1024 * 1024
SEND_QUEUE = "reminders.send"
PER_ENROLMENT = 10  # reminders per enrolment (and per patient), as a real schedule has several
CHUNK = 50_000  # rows per COPY chunk, so the rows are never all in this process at once


def _stop_on_sigterm(*_: object) -> None:
    raise SystemExit("terminated")  # so that every `finally` below cleans up


# --- sampling ----------------------------------------------------------------------------


def tree_rss(pid: int) -> int:
    """RSS of a process and all its descendants, in bytes."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        with suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


def redis_used(redis: RedisServer) -> int:
    return int(redis.client().info("memory")["used_memory"])


@dataclass
class Series:
    name: str
    unit: str = "MB"
    values: list[float] = field(default_factory=list)

    def line(self) -> str:
        v = self.values
        fmt = "{:,.1f}" if self.unit == "MB" else "{:,.0f}"
        parts = [
            f"start {fmt.format(v[0])}",
            f"end {fmt.format(v[-1])}",
            f"max {fmt.format(max(v))}",
            f"end - start {fmt.format(v[-1] - v[0])}",
        ]
        unit = f" {self.unit}" if self.unit else ""
        return f"  {self.name:<28}" + ", ".join(p + unit for p in parts)


# --- 1. this project's design --------------------------------------------------------------


def insert_future(url: str, count: int) -> float:
    """COUNT scheduled reminders, PER_ENROLMENT to an enrolment (and a patient), send_at spread
    evenly from an hour from now to 30 days from now, by COPY; returns the seconds taken
    (ANALYZE included, as a deployment's autovacuum would have run it)."""
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    now = datetime.now(UTC)
    first = now + timedelta(hours=1)
    span = timedelta(days=30) - timedelta(hours=1)
    later = now + timedelta(days=31)
    enrolments = (count + PER_ENROLMENT - 1) // PER_ENROLMENT
    started = time.perf_counter()
    with psycopg.connect(conninfo) as connection, connection.cursor() as cursor:
        with cursor.copy(
            "COPY patients (id, name, phone, language, created_at, updated_at) FROM STDIN"
        ) as copy:
            for i in range(enrolments):
                copy.write_row((i + 1, f"Patient {i}", f"+4479{i % 100_000_000:08d}", "en-GB",
                                now, now))  # fmt: skip
        with cursor.copy(
            "COPY enrolments (id, booking_ref, patient_id, procedure, local_date, local_time,"
            " timezone, starts_at, status, schedule_version, enrolled_at, updated_at) FROM STDIN"
        ) as copy:
            for i in range(enrolments):
                copy.write_row((i + 1, f"B{i}", i + 1, "si-joint-denervation", later.date(),
                                later.time().replace(microsecond=0), "UTC", later, "active", 1,
                                now, now))  # fmt: skip
        columns = (
            "enrolment_id, rule, channel, state, send_at, deadline, expires_at, schedule_version,"
            " template, template_version, language, body, attempts, safety_critical,"
            " is_correction, created_at, updated_at"
        )
        for start in range(0, count, CHUNK):
            with cursor.copy(f"COPY reminders ({columns}) FROM STDIN") as copy:
                for i in range(start, min(count, start + CHUNK)):
                    send_at = first + span * (i / count)
                    copy.write_row((i // PER_ENROLMENT + 1, "booking-confirmation", "sms",
                                    "scheduled", send_at, send_at + timedelta(hours=2),
                                    send_at + timedelta(hours=2), 1, "booking-confirmation",
                                    "bench", "en-GB", f"Benchmark message {i}", 0, False, False,
                                    now, now))  # fmt: skip
        connection.commit()
        connection.autocommit = True
        cursor.execute("ANALYZE")
        cursor.execute("SELECT count(*) FROM reminders WHERE state = 'scheduled'")
        (stored,) = cursor.fetchone()  # type: ignore[misc]
    assert stored == count, (stored, count)
    return time.perf_counter() - started


def worker_ready(process: CeleryProcess) -> bool:
    if process.process is not None and process.process.poll() is not None:
        raise RuntimeError(f"{process.kind} exited:\n{process.output()[-3000:]}")
    return " ready." in process.output()


def project_design(count: int, seconds: float, every: float, warmup: float) -> dict[str, Series]:
    print(f"\n== this project's design: {count:,} future reminders ==")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        url, created = fresh_database("postgresql", workdir)
        redis: RedisServer | None = None
        processes: list[CeleryProcess] = []
        try:
            upgrade(url)
            took = insert_future(url, count)
            print(f"inserted {count:,} reminders ({-(-count // PER_ENROLMENT):,} enrolments and "
                  f"patients) by COPY, ANALYZE included: {took:.1f} s "
                  f"({count / took:,.0f} reminders/s)")  # fmt: skip
            redis = RedisServer(workdir).start()
            env = {
                "PATH": os.environ.get("PATH", ""),
                "REMINDERS_DATABASE_URL": url,
                "REMINDERS_BROKER_URL": redis.url,
                "REMINDERS_SENDING_WINDOW": "00:00-24:00",
            }
            worker = CeleryProcess("worker", env, workdir / "worker.log", "-c", "2",
                                   "--without-gossip", "--without-mingle",
                                   "--without-heartbeat")  # fmt: skip
            beat = CeleryProcess("beat", env, workdir / "beat.log", "--schedule",
                                 str(workdir / "beat"), "--max-interval", "1")  # fmt: skip
            processes = [worker, beat]
            for process in processes:
                process.start()
            wait_for(lambda: worker_ready(worker), timeout=60, every=0.2, what="worker ready")
            assert worker.process is not None and beat.process is not None
            at_ready = tree_rss(worker.process.pid) / MB
            # Both pool processes set up their runtime (engine, transports) on their first
            # tasks, and the sweeper first runs up to 20 s in: start measuring after that.
            time.sleep(warmup)
            print(f"worker tree RSS at ready {at_ready:.1f} MB, after {warmup:.0f} s of warm-up "
                  f"{tree_rss(worker.process.pid) / MB:.1f} MB; measuring from here")  # fmt: skip
            series = {
                "worker": Series("worker tree RSS (3 procs)"),
                "beat": Series("beat RSS"),
                "redis": Series("Redis used_memory"),
                "send": Series(f"{SEND_QUEUE} length", unit=""),
                "dispatch": Series("reminders.dispatch length", unit=""),
            }
            client = redis.client()
            deadline = time.monotonic() + seconds
            while True:
                series["worker"].values.append(tree_rss(worker.process.pid) / MB)
                series["beat"].values.append(tree_rss(beat.process.pid) / MB)
                series["redis"].values.append(redis_used(redis) / MB)
                series["send"].values.append(float(client.llen(SEND_QUEUE)))
                series["dispatch"].values.append(float(client.llen("reminders.dispatch")))
                if time.monotonic() >= deadline:
                    break
                time.sleep(every)
            dispatched = worker.output().count("reminders.dispatch_due") // 2
            worker_procs = len(psutil.Process(worker.process.pid).children(recursive=True)) + 1
            series["worker"].name = f"worker tree RSS ({worker_procs} procs)"
            print(f"{len(series['worker'].values)} samples over {seconds:.0f} s, every "
                  f"{every:.0f} s; about {dispatched} dispatch_due runs logged "
                  "by the worker")  # fmt: skip
            for s in series.values():
                print(s.line())
            samples = " ".join(f"{v:.1f}" for v in series["worker"].values)
            print(f"  worker tree RSS samples (MB): {samples}")
            return series
        finally:
            for process in processes:
                process.stop()
            if redis is not None:
                redis.stop()
            drop_database(created)


# --- 2. one ETA task per reminder ----------------------------------------------------------

ETA_APP = '''
"""A no-op task, published once per reminder with an `eta`, as the Twilio tutorials do."""
import os

from celery import Celery

app = Celery("eta_bench", broker=os.environ["ETA_BENCH_BROKER"])
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="eta_bench.noop", ignore_result=True)
def noop(reminder_id):
    return None
'''


def start_eta_worker(workdir: Path, redis: RedisServer, log: Path) -> subprocess.Popen[bytes]:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(workdir),
           "ETA_BENCH_BROKER": redis.url}  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(BIN / "celery"), "-A", "eta_bench_app", "worker", "-c", "2", "--loglevel",
             "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"ETA worker exited:\n{log.read_text(errors='replace')[-3000:]}")
        return " ready." in log.read_text(errors="replace")

    wait_for(ready, timeout=60, every=0.2, what="ETA worker ready")
    return process


def stop_group(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def settled_rss(pid: int, every: float = 2.0, rounds: int = 3) -> float:
    """Worker tree RSS in MB once it has stopped moving by more than 1 MB between samples."""
    last = tree_rss(pid) / MB
    for _ in range(rounds * 5):
        time.sleep(every)
        now = tree_rss(pid) / MB
        if abs(now - last) < 1:
            return now
        last = now
    return last


def eta_design(eta_count: int, timeout: float) -> None:
    print(f"\n== one ETA task per reminder: {eta_count:,} tasks due over 30 days ==")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "eta_bench_app.py").write_text(ETA_APP)
        redis = RedisServer(workdir).start()
        worker: subprocess.Popen[bytes] | None = None
        os.environ["ETA_BENCH_BROKER"] = redis.url
        sys.path.insert(0, str(workdir))
        try:
            module = importlib.import_module("eta_bench_app")
            client = redis.client()
            empty_redis = redis_used(redis)

            # An idle worker on an empty queue, for the baseline.
            worker = start_eta_worker(workdir, redis, workdir / "idle.log")
            idle_rss = settled_rss(worker.pid)
            stop_group(worker)
            worker = None
            before = redis_used(redis)

            now = datetime.now(UTC)
            first = now + timedelta(hours=1)
            span = timedelta(days=30) - timedelta(hours=1)
            started = time.perf_counter()
            with module.app.producer_or_acquire() as producer:
                for i in range(eta_count):
                    module.noop.apply_async((i,), eta=first + span * (i / eta_count),
                                            producer=producer)  # fmt: skip
            published_in = time.perf_counter() - started
            after_publish = redis_used(redis)
            queued = int(client.llen("celery"))
            print(f"published {eta_count:,} ETA tasks in {published_in:.1f} s; "
                  f"'celery' list length {queued:,}")  # fmt: skip
            print(f"  Redis used_memory: empty {empty_redis / MB:.1f} MB, before publishing "
                  f"{before / MB:.1f} MB, after {after_publish / MB:.1f} MB: "
                  f"{(after_publish - before) / eta_count:,.0f} bytes per task")  # fmt: skip

            worker = start_eta_worker(workdir, redis, workdir / "loaded.log")
            started = time.perf_counter()
            wait_for(
                lambda: client.llen("celery") == 0 and client.hlen("unacked") == eta_count,
                timeout=timeout,
                every=1,
                what="the worker to take every ETA task",
            )
            fetched_in = time.perf_counter() - started
            loaded_rss = settled_rss(worker.pid)
            held = module.app.control.inspect(timeout=30).scheduled() or {}
            scheduled = sum(len(tasks) for tasks in held.values())
            in_redis = redis_used(redis)
            print(f"the worker took all {eta_count:,} in {fetched_in:.1f} s: 'celery' list "
                  f"length {client.llen('celery')}, 'unacked' hash {client.hlen('unacked'):,}, "
                  f"`celery inspect scheduled` {scheduled:,}")  # fmt: skip
            per_worker = (loaded_rss - idle_rss) * MB / eta_count
            per_redis = (in_redis - before) / eta_count
            print(f"  worker tree RSS: idle {idle_rss:.1f} MB, holding them {loaded_rss:.1f} MB: "
                  f"{per_worker:,.0f} bytes per task -> "
                  f"{per_worker * 1_000_000 / MB:,.0f} MB for 1,000,000")  # fmt: skip
            print(f"  Redis used_memory while the worker holds them (in 'unacked'): "
                  f"{in_redis / MB:.1f} MB: {per_redis:,.0f} bytes per task -> "
                  f"{per_redis * 1_000_000 / MB:,.0f} MB for 1,000,000")  # fmt: skip
        finally:
            stop_group(worker)
            redis.stop()
            sys.path.remove(str(workdir))
            sys.modules.pop("eta_bench_app", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--small-count", type=int, default=10_000,
                        help="run design 1 with this many first, to compare (0: skip)")  # fmt: skip
    parser.add_argument("--eta-count", type=int, default=100_000, help="0: skip design 2")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--every", type=float, default=5, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=25, help="seconds before the first")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    print(f"memory benchmark, started {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    runs = {}
    for count in [c for c in (args.small_count, args.count) if c]:
        runs[count] = project_design(count, args.seconds, args.every, args.warmup)
    if len(runs) == 2:
        (small, a), (big, b) = runs.items()
        print(f"\n{big:,} vs {small:,} reminders (end of run, MB): "
              f"worker {b['worker'].values[-1]:.1f} vs {a['worker'].values[-1]:.1f}, "
              f"beat {b['beat'].values[-1]:.1f} vs {a['beat'].values[-1]:.1f}, "
              f"Redis {b['redis'].values[-1]:.2f} vs {a['redis'].values[-1]:.2f}")  # fmt: skip
    if args.eta_count:
        eta_design(args.eta_count, args.timeout)


if __name__ == "__main__":
    main()
