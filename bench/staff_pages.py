"""Staff pages under load, against PRODUCT.md's "Staff pages" target, run by hand (results in
docs/benchmarks.md).

    .venv/bin/python bench/staff_pages.py [--count 1000000] [--users 20] [--seconds 60]
                                          [--workers 1] [--think 0]

A fresh PostgreSQL database gets COUNT stored reminders (10 to an enrolment, so COUNT/10
patients and enrolments, inserted by COPY as bench/memory.py does) and USERS staff accounts. The
web app runs as it is deployed (`uvicorn --factory reminders.interfaces.web.app:create_app`,
WORKERS processes) and USERS simulated staff, each logged in with a session of their own, ask
for pages for SECONDS, back to back or with THINK seconds between clicks: the enrol page, the
live preview of a filled-in enrol form, and a search by name, by phone number and by booking
reference, in turn. The client is one asyncio process on the same machine, so its own CPU use is
inside the figures. Prints p50, p95 and p99 per page and overall, and the ratio of p95 to the
100 ms target."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from browser import free_port
from delivery import drop_database, fresh_database
from memory import PER_ENROLMENT, insert_future
from processes import BIN, wait_for

from reminders.services import accounts
from reminders.store.db import make_engine, make_sessionmaker, session_scope
from reminders.store.migrate import upgrade

TARGET_MS = 100.0
PASSWORD = "benchmark-password-1"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def add_staff(url: str, users: int) -> list[str]:
    engine = make_engine(url)
    emails = [f"staff{n}@example.org" for n in range(users)]
    with session_scope(make_sessionmaker(engine)) as session:
        for email in emails:
            accounts.add_user(
                session, email=email, password=PASSWORD, role="staff",
                now=datetime.now(UTC), actor="bench",
            )  # fmt: skip
    engine.dispose()
    return emails


Request = tuple[str, str, str, dict[str, str] | None, dict[str, str] | None]


def requests_for(user: int, enrolments: int) -> list[Request]:
    """(kind, method, path, query, form) in the order a user asks for them."""
    patient = (user * 7919) % enrolments
    day = (datetime.now(UTC) + timedelta(days=20)).date().isoformat()
    form = {
        "name": "Megan Price", "phone": "07911 100050", "procedure": "si-joint-denervation",
        "date": day, "time": "09:30", "anticoagulant": "Apixaban",
        "anticoagulant_hold_days": "3", "anticoagulant_restart_days": "1",
    }  # fmt: skip
    return [
        ("enrol page", "GET", "/enrol", None, None),
        ("enrol preview", "POST", "/enrol/preview", None, form),
        # Searches are posted: patient data stays out of addresses.
        ("search by name", "POST", "/search", None, {"q": f"Patient {patient}"}),
        ("search by phone", "POST", "/search", None, {"q": f"+4479{patient:08d}"}),
        # One match: the answer is a redirect to the patient's page.
        ("search by booking ref", "POST", "/search", None, {"q": f"B{patient}"}),
    ]


async def staff_member(
    base: str, email: str, user: int, enrolments: int, until: float,
    timings: dict[str, list[float]], think: float,
) -> None:  # fmt: skip
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        token = _CSRF.search((await client.get("/login")).text)
        assert token
        response = await client.post(
            "/login", data={"email": email, "password": PASSWORD, "csrf_token": token.group(1)}
        )
        assert response.status_code == 303, response.text[:300]
        page = await client.get("/enrol")
        csrf = _CSRF.search(page.text)
        assert csrf
        plan = requests_for(user, enrolments)
        step = 0
        while time.monotonic() < until:
            kind, method, path, query, form = plan[step % len(plan)]
            step += 1
            data = {**form, "csrf_token": csrf.group(1)} if form else None
            started = time.perf_counter()
            response = await client.request(method, path, params=query, data=data)
            elapsed = (time.perf_counter() - started) * 1000
            assert response.status_code in (200, 303), (kind, response.status_code)
            timings[kind].append(elapsed)
            if think:
                # A person reads the page before the next click: from half to one and a half
                # times THINK, so the users do not fall into step.
                await asyncio.sleep(think * random.uniform(0.5, 1.5))


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="reminders stored")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument(
        "--think", type=float, default=0.0,
        help="seconds each user reads a page before the next (0: back to back, the worst case)",
    )  # fmt: skip
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        url, name = fresh_database("postgresql", Path(workdir))
        web = None
        try:
            upgrade(url)
            seconds = insert_future(url, args.count)
            enrolments = (args.count + PER_ENROLMENT - 1) // PER_ENROLMENT
            print(f"stored {args.count:,} reminders for {enrolments:,} enrolments "
                  f"in {seconds:.1f} s")  # fmt: skip
            emails = add_staff(url, args.users)
            env = {
                **os.environ,
                "REMINDERS_DATABASE_URL": url,
                "REMINDERS_SECRET_KEY": "benchmark-secret-for-benchmarks-only-0123456789",
                "REMINDERS_LOG_LEVEL": "WARNING",
            }
            port = free_port()
            log = open(Path(workdir) / "web.log", "wb")  # noqa: SIM115 - closed with the run
            web = subprocess.Popen(
                [str(BIN / "uvicorn"), "--factory", "reminders.interfaces.web.app:create_app",
                 "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers),
                 "--no-access-log"],
                env=env, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
            base = f"http://127.0.0.1:{port}"

            def up() -> bool:
                try:
                    return httpx.get(f"{base}/healthz", timeout=1).status_code in (200, 503)
                except httpx.HTTPError:
                    return False

            try:
                wait_for(up, timeout=60, what="the web app")
            except AssertionError:
                print((Path(workdir) / "web.log").read_text()[-3000:], file=sys.stderr)
                raise
            timings: dict[str, list[float]] = defaultdict(list)

            async def run(seconds: float) -> None:
                until = time.monotonic() + seconds
                await asyncio.gather(*(
                    staff_member(base, email, n, enrolments, until, timings, args.think)
                    for n, email in enumerate(emails)
                ))  # fmt: skip

            asyncio.run(run(min(10.0, args.seconds / 4)))  # warm-up: pools, caches, plans
            timings.clear()
            asyncio.run(run(args.seconds))
        finally:
            if web is not None:
                web.terminate()
                try:
                    web.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    web.kill()
            drop_database(name)

    everything = [t for values in timings.values() for t in values]
    print(f"{args.users} users (think {args.think:g} s) for {args.seconds:.0f} s, "
          f"{args.workers} uvicorn worker(s): "
          f"{len(everything):,} requests, {len(everything) / args.seconds:.0f}/s")  # fmt: skip
    print(f"{'page':<24}{'count':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for kind, values in [*sorted(timings.items()), ("all", everything)]:
        print(f"{kind:<24}{len(values):>8}{percentile(values, 50):>9.1f}"
              f"{percentile(values, 95):>9.1f}{percentile(values, 99):>9.1f}")  # fmt: skip
    p95 = percentile(everything, 95)
    print(f"p95 {p95:.1f} ms against the {TARGET_MS:.0f} ms target: {p95 / TARGET_MS:.2f}x")


if __name__ == "__main__":
    main()
