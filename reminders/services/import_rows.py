"""Checking a CSV import's rows and working out new enrolments' schedules and messages, in this
process or in worker processes: most of a big import's time, so it is shared across cores
while the importing process reads the file and writes to the database."""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import datetime

from reminders.config import Config
from reminders.core.blood_thinners import below_minimum
from reminders.core.enrolment import Enrolment, InvalidEnrolment, parse_fields
from reminders.core.rendering import enrolment_context
from reminders.core.schedule import compute_schedule
from reminders.services import enrolments, planning
from reminders.settings import Settings
from reminders.store.bulk import Planned

# What checking a row gives: the reason it is refused; the enrolment, when its booking
# reference is stored already (`enrol` updates it here); or a new enrolment's plan.
Checked = str | Enrolment | Planned


def check_row(config: Config, values: dict[str, str], stored: bool, now: datetime) -> Checked:
    try:
        enrolment = parse_fields(
            values,
            protocols=config.protocols,
            default_timezone=config.zone,
            require_booking_ref=True,
        )
    except InvalidEnrolment as exc:
        return "; ".join(exc.problems)
    return enrolment if stored else plan_new(config, enrolment, now)


def plan_new(config: Config, enrolment: Enrolment, now: datetime) -> Checked:
    """A new enrolment's schedule and messages, as `enrolments.enrol` makes them, or the reason
    it cannot be enrolled. One with a hold shorter than its protocol's minimum goes through
    `enrolments.enrol` itself (the enrolment comes back), which checks and audits it."""
    enrolment = enrolment.with_changes(enrolled_at=now)
    protocol = config.protocols[enrolment.procedure]
    try:
        starts_at = enrolments.future_start(enrolment, now, config.zone)
        schedule = compute_schedule(
            protocol, enrolment, now, config.window, medicines=config.medicines,
            unit=config.unit, unit_zone=config.zone,
        )  # fmt: skip
        if below_minimum(schedule.facts) is not None:
            return enrolment
        with enrolments.writable():
            shared = enrolment_context(schedule.facts, config.renderer.unit)
            reminders = [
                planning.reminder_values(config, schedule, planned, 1, shared)
                for planned in schedule.reminders
            ]
    except enrolments.EnrolmentRefused as exc:
        return str(exc)
    return Planned(
        enrolment, starts_at, reminders, list(dict.fromkeys(schedule.warnings)),
        list(dict.fromkeys(schedule.calls)),
    )  # fmt: skip


_worker_config: Config | None = None


def _start_worker(settings: Settings) -> None:
    global _worker_config
    # Ctrl-C at the terminal reaches every process in the group: the import stops the workers
    # itself, rather than each printing a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Below the importing process and the database's own, which are what every batch waits
    # for in the end: with as many workers as CPUs, PostgreSQL otherwise gets half a core and
    # the import is no faster for the extra processes.
    os.nice(10)
    _worker_config = Config.load(settings)


def _check_in_worker(rows: list[tuple[dict[str, str], bool]], now: datetime) -> list[Checked]:
    assert _worker_config is not None, "started without _start_worker"
    return [check_row(_worker_config, values, stored, now) for values, stored in rows]


class Planner:
    """Parses rows and, for new enrolments, works out their schedules and writes their
    messages: rendering a million messages is most of a big import's time, and one process
    uses one core. With workers, batches are handed to that many processes (started fresh,
    each loading the configuration from the same settings), while this one reads the file
    and writes to the database."""

    def __init__(self, config: Config, workers: int) -> None:
        self.config = config
        self.ahead = workers if workers > 1 else 0
        self._pool: ProcessPoolExecutor | None = None
        if workers > 1:
            self._pool = ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),  # no fork of a threaded app
                initializer=_start_worker,
                initargs=(config.settings,),
            )

    def __enter__(self) -> Planner:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(
        self, rows: list[tuple[dict[str, str], bool]], now: datetime
    ) -> Future[list[Checked]]:
        """Check (values, whether the booking reference is stored) for each row."""
        if self._pool is not None:
            return self._pool.submit(_check_in_worker, rows, now)
        done: Future[list[Checked]] = Future()
        try:
            done.set_result(
                [check_row(self.config, values, stored, now) for values, stored in rows]
            )
        except Exception as exc:  # raised where a worker's would be: when the batch lands
            done.set_exception(exc)
        return done
