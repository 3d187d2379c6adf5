"""Scheduling benchmark against PRODUCT.md's Target, run by hand (results in docs/benchmarks.md).

    .venv/bin/python bench/import_csv.py [--rows 100000] [--small-rows 10000]
                                         [--database postgresql|sqlite]

1. Writes a synthetic day's list of ROWS patients (UK mobiles in +447911 1xxxxx, addresses at
   example.org; about two in three with an email as well, one in five with a clinician's
   blood-thinner plan, procedures two to ten weeks away), which schedules about ten reminders
   a patient: 100,000 rows make about 1,000,000 reminders.
2. Runs `reminders import` on it, the installed command as staff run it, in a process of its
   own, on a fresh, migrated database (PostgreSQL at 127.0.0.1:5432, or an SQLite file); times
   it from start to exit and samples the RSS of it and its worker processes (one a CPU) every
   0.1 s. The same is done first with SMALL_ROWS rows on another fresh database, so the peaks
   can be compared: memory must not grow with the file.
3. Copies every row the import wrote (patients, enrolments, reminders, audit entries,
   call-list entries) into a third fresh database with the driver's own `executemany`, in one
   transaction, timing only the inserts: the floor for writing those rows from Python.
   Prints both times and their ratio (the Target: under 60 s, and within 3x).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent))

from delivery import drop_database, fresh_database

from reminders.store import models
from reminders.store.db import make_engine
from reminders.store.migrate import upgrade

MB = 1024 * 1024
SCRIPT = Path(sys.executable).parent / "reminders"
PROCEDURES = ("si-joint-denervation", "joint-denervation", "facet-joint-denervation",
              "si-joint-fusion", "sacroplasty")  # fmt: skip
FIRST = ("Siân", "Rhys", "Aisha", "Tom", "Priya", "Oliver", "Mei", "Kwame", "Zoë", "Dafydd",
         "Grace", "Mohammed", "Niamh", "Sam", "Ewa", "Callum")  # fmt: skip
LAST = ("Jones", "Evans", "Khan", "Smith", "Patel", "O'Brien", "Nowak", "Williams", "Okafor",
        "Taylor", "Brown", "Davies", "Murphy", "Wilson")  # fmt: skip
HEADER = ("booking_ref", "name", "phone", "email", "procedure", "date", "time", "arrival", "joint",
          "anticoagulant", "anticoagulant_hold_days", "anticoagulant_restart_days")  # fmt: skip
# The tables the import writes, parents first, as the copy must insert them.
TABLES = (models.Patient, models.Enrolment, models.Reminder, models.AuditEntry,
          models.AttentionItem)  # fmt: skip
CHUNK = 5_000  # rows per executemany in the copy, so the copy's memory stays flat too


def day_list(rows: int, today: date, seed: int = 1) -> Iterator[dict[str, str]]:
    pick = random.Random(seed)
    for i in range(rows):
        procedure = PROCEDURES[i % len(PROCEDURES)]
        hour, minute = pick.randrange(8, 17), pick.choice((0, 15, 30, 45))
        row = {
            "booking_ref": f"BENCH-{i:07d}",
            "name": f"{pick.choice(FIRST)} {pick.choice(LAST)}",
            "phone": f"07911 1{i % 100_000:05d}",
            "email": f"patient{i}@example.org" if pick.random() < 0.65 else "",
            "procedure": procedure,
            "date": (today + timedelta(days=pick.randrange(14, 70))).isoformat(),
            "time": f"{hour:02d}:{minute:02d}",
            "arrival": f"{hour - 1:02d}:{minute:02d}" if pick.random() < 0.5 else "",
            "joint": pick.choice(("knee", "hip", "shoulder")) if procedure == "joint-denervation"
            else "",
        }  # fmt: skip
        plan = pick.random()
        if plan < 0.2:
            row.update(anticoagulant=pick.choice(("warfarin", "apixaban")),
                       anticoagulant_hold_days=str(pick.choice((3, 5))),
                       anticoagulant_restart_days="1")  # fmt: skip
        elif plan < 0.25:
            row["anticoagulant"] = "clopidogrel"  # no plan yet: "speak to us, do not stop"
        yield row


def write_day_list(path: Path, rows: int) -> int:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, HEADER, lineterminator="\r\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(day_list(rows, date.today()))
    return path.stat().st_size


@dataclass
class Run:
    seconds: float
    peak_rss: int
    output: str


def tree_rss(process: psutil.Process) -> int:
    """RSS of the import and the worker processes it starts, in bytes."""
    total = 0
    try:
        family = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for member in family:
        with suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total


def run_import(url: str, path: Path) -> Run:
    """`reminders import` as a process of its own; the RSS of it and its workers sampled every
    0.1 s."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(path.parent),
        "REMINDERS_DATABASE_URL": url,
        # Procedures weeks away: the window only moves send times, which costs the same.
        "REMINDERS_SENDING_WINDOW": "08:00-20:00",
    }
    peak = 0
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(SCRIPT), "import", str(path)], env=env, cwd=path.parent,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    watched = psutil.Process(process.pid)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.append(process.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    while process.poll() is None:
        peak = max(peak, tree_rss(watched))
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    reader.join()
    if process.returncode != 0:
        raise SystemExit(f"reminders import exited {process.returncode}:\n{''.join(output)}")
    return Run(seconds, peak, "".join(output).strip())


def counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    with engine.connect() as connection:
        found = {
            model.__tablename__: int(
                connection.scalar(select(func.count()).select_from(model)) or 0
            )
            for model in TABLES
        }
    engine.dispose()
    return found


def raw_copy(source_url: str, target_url: str) -> float:
    """Every row of TABLES from the imported database into a fresh one, through the DB-API's
    own `executemany`, in one transaction; returns the seconds spent in `executemany` and the
    commit (reading the rows back is not counted)."""
    source, target = make_engine(source_url), make_engine(target_url)
    spent = 0.0
    with source.connect() as reading, target.connect() as writing:
        cursor: Any = writing.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        style = "%s" if target.dialect.name == "postgresql" else "?"
        for model in TABLES:
            table = model.__table__
            names = [column.name for column in table.columns]
            sql = (f"INSERT INTO {table.name} ({', '.join(names)}) "
                   f"VALUES ({', '.join([style] * len(names))})")  # fmt: skip
            # Straight from the driver, so the values are what the database gave.
            read: Any = reading.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            read.execute(f"SELECT {', '.join(names)} FROM {table.name} ORDER BY id")
            while chunk := read.fetchmany(CHUNK):
                began = time.perf_counter()
                cursor.executemany(sql, chunk)
                spent += time.perf_counter() - began
            read.close()
        began = time.perf_counter()
        writing.connection.dbapi_connection.commit()  # type: ignore[union-attr]
        spent += time.perf_counter() - began
    source.dispose()
    target.dispose()
    return spent


def fresh(kind: str, workdir: Path, label: str) -> tuple[str, str | None]:
    folder = workdir / label
    folder.mkdir()
    url, created = fresh_database(kind, folder)
    upgrade(url)
    return url, created


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--small-rows", type=int, default=10_000)
    args = parser.parse_args()
    print(f"import on {args.database}, started {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    created: list[str | None] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        try:
            runs: dict[int, Run] = {}
            for rows in dict.fromkeys((args.small_rows, args.rows)):
                url, name = fresh(args.database, workdir, f"import-{rows}")
                created.append(name)
                path = workdir / f"list-{rows}.csv"
                size = write_day_list(path, rows)
                runs[rows] = run_import(url, path)
                found = counts(url)
                print(f"{rows:,} rows ({size / MB:.1f} MB): {runs[rows].seconds:.1f} s, "
                      f"{rows / runs[rows].seconds:,.0f} rows/s, peak RSS "
                      f"{runs[rows].peak_rss / MB:.0f} MB; wrote {found}")  # fmt: skip
                print(f"  reminders import said: {runs[rows].output}")
            copy_url, name = fresh(args.database, workdir, "copy")
            created.append(name)
            raw = raw_copy(url, copy_url)
            total = sum(counts(copy_url).values())
            big = runs[args.rows]
            print(f"raw executemany of the same {total:,} rows in one transaction: {raw:.1f} s")
            print(f"import {big.seconds:.1f} s / raw {raw:.1f} s = {big.seconds / raw:.2f}x "
                  f"(target: under 60 s and within 3x)")  # fmt: skip
            small = runs[args.small_rows]
            print(f"peak RSS: {small.peak_rss / MB:.0f} MB for {args.small_rows:,} rows, "
                  f"{big.peak_rss / MB:.0f} MB for {args.rows:,} rows "
                  f"({(big.peak_rss - small.peak_rss) / MB:+.0f} MB)")  # fmt: skip
        finally:
            for name in created:
                drop_database(name)


if __name__ == "__main__":
    main()
