"""Bulk enrolment from a CSV file: the day's list from the booking system, for the
`reminders import` command and the staff pages' upload.

The file is checked as a whole before anything lands (`csvfile.open_csv`: encoding, header, CSV
structure), so an unusable file changes nothing. Then rows are read a batch at a time, and each
row lands completely or not at all: good rows land, a bad row becomes a `Refusal` with the
reason, handed to the caller once its batch is committed. Only one batch is in memory, so memory
stays flat however long the file, and a crash loses at most that batch; importing the same file
again updates, never duplicates, because enrolment is idempotent by booking reference.

Patient data never reaches a log: only counts and line numbers.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import BinaryIO

from sqlalchemy import select, text
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from reminders.config import Config
from reminders.core.enrolment import Enrolment
from reminders.services import enrolments
from reminders.services.csvfile import CsvFile, open_csv
from reminders.services.import_rows import Checked, Planner
from reminders.store import models
from reminders.store.bulk import Planned, insert_new

log = logging.getLogger(__name__)

# Rows per commit: small enough that a crash loses little and a page watching the progress sees
# it move, large enough that commits are not what the import spends its time on.
BATCH_ROWS = 500
# Below this, worker processes would take longer to start than the work they would share.
POOL_MIN_ROWS = 5 * BATCH_ROWS
# New enrolments between refreshes of PostgreSQL's statistics of the table (see `_analyze`).
ANALYZE_EVERY = 10_000


class ImportInterrupted(RuntimeError):
    """Something other than a bad row stopped the import part-way (the database went away, a
    bug); the original error is the `__cause__`, for the caller to log. Rows before `line` have
    landed, and `report` counts them: importing the same file again finishes the job, as rows
    that landed are updated, not duplicated."""

    def __init__(self, line: int, report: ImportReport, cause: BaseException) -> None:
        self.line = line
        self.report = report
        detail = (str(cause).strip().splitlines() or [""])[0][:200]
        super().__init__(
            f"stopped by an unexpected error ({type(cause).__name__}: {detail}) in the rows "
            f"from line {line}; the {report.landed} rows that landed before them stay. Import "
            "the same file again to finish: rows that landed are updated, not duplicated"
        )


@dataclass(frozen=True)
class Refusal:
    """A row that did not land, and why, in words for the person who will fix it."""

    line: int  # where the row starts in the file; the header is line 1
    booking_ref: str | None
    reason: str
    row: dict[str, str]  # the row's cells by column (CsvFile.columns), in the file's order


@dataclass
class ImportReport:
    encoding: str  # "utf-8" or "windows-1252", as the file was read
    rows: int = 0  # data rows read so far, blank lines not counted
    created: int = 0
    updated: int = 0  # an enrolment with this booking reference existed and was changed
    unchanged: int = 0  # it existed and the row said nothing new
    refused: int = 0
    warnings: int = 0  # late-enrolment warnings, which are also on the needs-attention list

    @property
    def landed(self) -> int:
        return self.created + self.updated + self.unchanged


def import_csv(
    factory: sessionmaker[Session],
    config: Config,
    source: BinaryIO | CsvFile,
    *,
    now: datetime,
    actor: str,
    on_refusal: Callable[[Refusal], None],
    on_progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
) -> ImportReport:
    """Enrol every good row of `source`; hand each bad one to `on_refusal`, in line order.

    `source` is a file opened in binary mode, or what `open_csv` made of one (to check the file
    before starting the import elsewhere, such as in a background thread). `on_progress` gets
    (bytes read, rows done) after each committed batch, so a progress bar can go by the file's
    size. With `workers` above 1, a file of more than a few batches has its messages written
    in that many processes (see `_Planner`). Raises UnusableFile before anything lands, and
    ImportInterrupted if something other than a bad row stops it part-way.
    """
    csv_file = source if isinstance(source, CsvFile) else open_csv(source)
    report = ImportReport(encoding=csv_file.encoding)
    seen: dict[str, int] = {}  # booking reference -> the line that had it first
    if csv_file.rows_total < POOL_MIN_ROWS:
        workers = 1  # starting processes would take longer than the work
    with (
        closing(csv_file.rows()) as rows,
        factory() as session,
        Planner(config, workers) as planner,
    ):
        # Batches prepared (read, checked, their messages being written) ahead of the one
        # landing, so that worker processes always have one to work on.
        waiting: deque[_Batch] = deque()

        def land_oldest() -> None:
            batch = waiting.popleft()
            try:
                outcome = _land(session, config, batch, now=now, actor=actor)
                session.commit()
            except Exception as exc:
                session.rollback()
                raise ImportInterrupted(batch.first_line, report, exc) from exc
            session.expunge_all()  # what has landed need not stay in memory
            if _grown(session, report.created, report.created + outcome.created):
                _analyze(session)
            report.rows += batch.size
            report.created += outcome.created
            report.updated += outcome.updated
            report.unchanged += outcome.unchanged
            report.warnings += outcome.warnings
            report.refused += len(outcome.refusals)
            for refusal in sorted(outcome.refusals, key=lambda r: r.line):
                on_refusal(refusal)
            if on_progress is not None:
                on_progress(batch.bytes_read, report.rows)

        while lines := list(islice(rows, BATCH_ROWS)):
            try:
                waiting.append(_prepare(session, csv_file, lines, seen, planner, now))
            except Exception as exc:
                session.rollback()
                unlanded = waiting[0].first_line if waiting else lines[0][0]
                raise ImportInterrupted(unlanded, report, exc) from exc
            if len(waiting) > planner.ahead:
                land_oldest()
        while waiting:
            land_oldest()
    log.info(
        "import finished: %d rows, %d created, %d updated, %d unchanged, %d refused",
        report.rows, report.created, report.updated, report.unchanged, report.refused,
    )  # fmt: skip
    return report


def _grown(session: Session, created_before: int, created: int) -> bool:
    return (
        session.get_bind().dialect.name == "postgresql"
        and created // ANALYZE_EVERY > created_before // ANALYZE_EVERY
    )


def _analyze(session: Session) -> None:
    """Bring PostgreSQL's statistics of the enrolments up to date. Looking up a batch's
    booking references is an index scan only once the planner knows how big the table is;
    while a big import grows it faster than autovacuum notices, the planner scans the whole
    table for every batch instead, and 100,000 rows took four times as long."""
    session.execute(text(f"ANALYZE {models.Enrolment.__tablename__}"))
    session.commit()


@dataclass
class _Outcome:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    warnings: int = 0
    refusals: list[Refusal] = field(default_factory=list)


@dataclass(frozen=True)
class _Row:
    """A row that has passed the checks made while reading; its values are parsed with the
    messages written, in a worker when there are workers."""

    line: int
    cells: dict[str, str]
    ref: str | None  # as typed, trimmed
    values: dict[str, str]  # enrolment field -> value

    def refusal(self, reason: str) -> Refusal:
        return Refusal(self.line, self.ref, reason, self.cells)


@dataclass
class _Batch:
    first_line: int
    size: int
    bytes_read: int
    refusals: list[Refusal]  # found while reading
    rows: list[_Row]  # the rest, each checked in `checked`
    versions: dict[str, int]  # schedule versions of the references stored already
    checked: Future[list[Checked]]


def _prepare(
    session: Session, csv_file: CsvFile, lines: list[tuple[int, dict[str, str], bool]],
    seen: dict[str, int], planner: Planner, now: datetime,
) -> _Batch:  # fmt: skip
    refusals: list[Refusal] = []
    rows: list[_Row] = []
    for line, cells, overflowing in lines:
        row = _read_row(csv_file, line, cells, overflowing, seen)
        if isinstance(row, Refusal):
            refusals.append(row)
        else:
            rows.append(row)
    # Read before the batches ahead of this one have landed: none of them can hold these
    # references, as a reference repeated in the file is refused above.
    stored = session.execute(
        select(models.Enrolment.booking_ref, models.Enrolment.schedule_version).where(
            models.Enrolment.booking_ref.in_([row.ref for row in rows if row.ref])
        )
    )
    versions = {ref: version for ref, version in stored}
    return _Batch(
        first_line=lines[0][0],
        size=len(lines),
        bytes_read=csv_file.bytes_read,
        refusals=refusals,
        rows=rows,
        versions=versions,
        checked=planner.submit([(row.values, row.ref in versions) for row in rows], now),
    )


def _land(
    session: Session, config: Config, batch: _Batch, *, now: datetime, actor: str
) -> _Outcome:
    outcome = _Outcome(refusals=list(batch.refusals))
    stored: list[tuple[_Row, Enrolment]] = []
    new: list[tuple[_Row, Planned]] = []
    for row, checked in zip(batch.rows, batch.checked.result(), strict=True):
        if isinstance(checked, str):
            outcome.refusals.append(row.refusal(checked))
        elif isinstance(checked, Planned):
            new.append((row, checked))
        else:
            stored.append((row, checked))
    # Whatever the bulk path could not insert (another writer enrolled one of these references
    # a moment ago) goes through `enrol` one row at a time, like the rows already stored.
    leftover = _land_new(session, new, outcome, now=now, actor=actor)
    _lock_in_order(session, [row.ref for row, _ in [*stored, *leftover] if row.ref])
    for row, enrolment in [*stored, *leftover]:
        version = batch.versions.get(row.ref or "")
        _land_one(session, config, row, enrolment, version, outcome, now=now, actor=actor)
    return outcome


def _lock_in_order(session: Session, refs: list[str]) -> None:
    """Lock the enrolments a batch updates, and their reminders, in the order of their ids
    before changing any: a worker sending some of them locks them in that order too, so a file
    in any row order cannot deadlock with it (PostgreSQL aborts one of two transactions that
    wait for each other; SQLite has one writer)."""
    if not refs:
        return
    ids = select(models.Enrolment.id).where(models.Enrolment.booking_ref.in_(refs))
    session.execute(ids.order_by(models.Enrolment.id).with_for_update(key_share=True)).all()
    session.execute(
        select(models.Reminder.id)
        .where(models.Reminder.enrolment_id.in_(ids.scalar_subquery()))
        .order_by(models.Reminder.id)
        .with_for_update()
    ).all()


def _read_row(
    csv_file: CsvFile, line: int, cells: dict[str, str], overflowing: bool, seen: dict[str, int]
) -> _Row | Refusal:
    """The checks that need the whole file or the raw text, made as the rows are read."""
    values = {field: cells[column] for field, column in csv_file.fields.items()}
    ref = values["booking_ref"].strip() or None
    if ref is not None:
        first = seen.setdefault(ref, line)
        if first != line:
            reason = f"booking_ref: {ref} is already on line {first} of this file"
            return Refusal(line, ref, reason, cells)
    if overflowing:
        reason = (
            f"this row has more values than the header has columns ({len(csv_file.columns)}); "
            "a value that contains a comma must be in double quotes"
        )
        return Refusal(line, ref, reason, cells)
    broken = [name for name, value in values.items() if "\n" in value or "\r" in value]
    if broken:
        # Most often a double quote opened and never closed, which carries the rows after it
        # into one value: refusing the row shows where, instead of losing those rows quietly.
        reason = (
            f"{', '.join(broken)}: a line break inside the value; check this row for a "
            "double quote that is not closed"
        )
        return Refusal(line, ref, reason, cells)
    return _Row(line, cells, ref, values)


def _land_one(
    session: Session, config: Config, row: _Row, enrolment: Enrolment, version: int | None,
    outcome: _Outcome, *, now: datetime, actor: str,
) -> None:  # fmt: skip
    try:
        # A savepoint per row: a row that fails part-way leaves nothing behind, and the rows
        # before it in the batch stay.
        with session.begin_nested():
            result = enrolments.enrol(session, config, enrolment, now=now, actor=actor)
    except enrolments.EnrolmentRefused as exc:
        outcome.refusals.append(row.refusal(str(exc)))
        return
    except DataError as exc:
        # A value the checks let through and the database does not take (a bug in the checks):
        # this row is refused, and the rows after it still land.
        log.warning("line %d refused by the database: %s", row.line, type(exc.orig).__name__)
        outcome.refusals.append(
            row.refusal("the database refused a value of this row; check each field's length")
        )
        return
    if result.created:
        outcome.created += 1
    elif result.enrolment.schedule_version != version:
        outcome.updated += 1
    else:
        outcome.unchanged += 1
    outcome.warnings += len(result.warnings)


def _land_new(
    session: Session, plans: list[tuple[_Row, Planned]], outcome: _Outcome, *,
    now: datetime, actor: str,
) -> list[tuple[_Row, Enrolment]]:  # fmt: skip
    """Enrol rows whose booking references are not stored yet, all at once (`bulk`). Returns
    the rows it could not insert because another writer stored one of their references
    first."""
    if not plans:
        return []
    try:
        with session.begin_nested():
            insert_new(session, [plan for _, plan in plans], now=now, actor=actor)
    except (IntegrityError, DataError):
        # Another writer was first, or a row the database refuses: one at a time, so that only
        # that row is refused.
        return [(row, plan.enrolment) for row, plan in plans]
    outcome.created += len(plans)
    outcome.warnings += sum(len(plan.warnings) + len(plan.calls) for _, plan in plans)
    return []
