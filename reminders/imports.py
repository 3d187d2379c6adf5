"""Bulk enrolment from a CSV file: the day's list from the booking system, for the
`reminders import` command and the staff pages' upload.

The file is checked as a whole before anything lands (`open_csv`: encoding, header, CSV
structure), so an unusable file changes nothing. Then rows are read a batch at a time, and each
row lands completely or not at all: good rows land, a bad row becomes a `Refusal` with the
reason, handed to the caller once its batch is committed. Only one batch is in memory, so memory
stays flat however long the file, and a crash loses at most that batch; importing the same file
again updates, never duplicates, because enrolment is idempotent by booking reference.

Encoding: UTF-8, with or without the byte-order mark Excel writes for "CSV UTF-8". A file that
is not UTF-8 anywhere but is Windows-1252 throughout is read as Windows-1252, which is what
Excel's plain "CSV (Comma delimited)" writes on a UK Windows PC (Siân is the byte 0xE2 there,
never valid UTF-8); the report says so. The whole file is checked before that decision, never a
guess from its first lines, so an accented name further down is not garbled. Anything else is
refused with what to do instead.

Patient data never reaches a log: only counts and line numbers.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import multiprocessing
import os
import re
import shutil
import signal
import tempfile
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any, BinaryIO

from sqlalchemy import ColumnDefault, Connection, Table, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from reminders import models, services
from reminders.config import Config
from reminders.enrolment import FIELDS, Enrolment, InvalidEnrolment, parse_fields
from reminders.rendering import RenderError
from reminders.schedule import compute_schedule
from reminders.settings import Settings

log = logging.getLogger(__name__)

REQUIRED = ("booking_ref", "name", "procedure", "date", "time")
# Rows per commit: small enough that a crash loses little and a page watching the progress sees
# it move, large enough that commits are not what the import spends its time on.
BATCH_ROWS = 500
# Below this, worker processes would take longer to start than the work they would share.
POOL_MIN_ROWS = 5 * BATCH_ROWS
# New enrolments between refreshes of PostgreSQL's statistics of the table (see `_analyze`).
ANALYZE_EVERY = 10_000
_CHUNK = 1 << 20
_SAVE_AS = "in Excel, use File > Save As and choose 'CSV UTF-8 (Comma delimited)'"
# Bytes that Windows-1252 leaves undefined: a file holding one is not Windows-1252 either.
_NOT_CP1252 = re.compile(rb"[\x81\x8d\x8f\x90\x9d]")
_MAGIC = (
    (b"PK\x03\x04", "an Excel workbook (.xlsx) or another zip file, not CSV"),
    (b"\xd0\xcf\x11\xe0", "an old Excel workbook (.xls), not CSV"),
    (b"%PDF", "a PDF, not CSV"),
    (b"\xff\xfe", "UTF-16 text (Excel's 'Unicode Text'), not CSV"),
    (b"\xfe\xff", "UTF-16 text, not CSV"),
)


class UnusableFile(ValueError):
    """The file cannot be imported at all; nothing has landed. The message says what to fix."""


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


class CsvFile:
    """A CSV file that has passed every check that can be made before anything lands."""

    def __init__(
        self, stream: BinaryIO, encoding: str, columns: list[str], fields: dict[str, str],
        rows_total: int,
    ) -> None:  # fmt: skip
        self._stream = stream
        self._encoding = encoding
        self.columns = columns  # one name per column, unique: blank or repeated ones numbered
        self.fields = fields  # enrolment field -> its column
        self.rows_total = rows_total  # data rows, blank lines not counted

    @property
    def encoding(self) -> str:
        return "windows-1252" if self._encoding == "cp1252" else "utf-8"

    @property
    def bytes_read(self) -> int:
        return self._stream.tell()

    def rows(self) -> Generator[tuple[int, dict[str, str], bool], None, None]:
        """(line, cells by column, whether there were more cells than columns) for every
        non-blank data row, read as the caller asks for them."""
        self._stream.seek(0)
        decoded = io.TextIOWrapper(self._stream, encoding=self._encoding, newline="")
        try:
            reader = csv.reader(decoded)
            _header(reader)  # checked by open_csv
            width = len(self.columns)
            line = reader.line_num + 1
            for cells in reader:
                start, line = line, reader.line_num + 1
                if not any(cell.strip() for cell in cells):
                    continue  # a blank line, or a spreadsheet's empty row of commas
                extra = cells[width:]
                row = dict(zip(self.columns, cells + [""] * (width - len(cells)), strict=False))
                for index, cell in enumerate(extra, start=width + 1):
                    row[f"column {index}"] = cell
                yield start, row, any(cell.strip() for cell in extra)
        finally:
            decoded.detach()  # the stream is the caller's to close


def open_csv(stream: BinaryIO) -> CsvFile:
    """Check `stream` (a file opened in binary mode) as a CSV of enrolments: encoding, header,
    structure, at least one row. Raises UnusableFile saying what to fix."""
    if not stream.seekable():
        # Every check reads the whole file before the import reads it again; a pipe or an
        # upload that cannot seek is copied to a temporary file first, never into memory.
        # It has no name, so it goes when the CsvFile reading it does.
        spool = tempfile.TemporaryFile()  # noqa: SIM115
        shutil.copyfileobj(stream, spool, _CHUNK)
        stream = spool
    stream.seek(0)
    encoding = _encoding_of(stream)
    stream.seek(0)
    decoded = io.TextIOWrapper(stream, encoding=encoding, newline="")
    try:
        reader = csv.reader(decoded)
        header = _header(reader)
        columns, fields = _columns(header)
        rows = 0
        try:
            for cells in reader:
                if any(cell.strip() for cell in cells):
                    rows += 1
        except csv.Error as exc:
            raise UnusableFile(
                f"line {reader.line_num}: the file is not valid CSV ({exc}); a value that "
                "contains quotes or line breaks must be in double quotes"
            ) from None
    finally:
        decoded.detach()
    if rows == 0:
        raise UnusableFile("the file has a header but no rows to import")
    return CsvFile(stream, encoding, columns, fields, rows)


def _encoding_of(stream: BinaryIO) -> str:
    first = stream.read(_CHUNK)
    if not first.lstrip(codecs.BOM_UTF8).strip():
        raise UnusableFile("the file is empty; it needs a header row and at least one row")
    for magic, what in _MAGIC:
        if first.startswith(magic):
            raise UnusableFile(f"this is {what}; {_SAVE_AS}")
    utf8 = codecs.getincrementaldecoder("utf-8")()
    is_utf8, is_cp1252 = True, True
    chunk = first
    while chunk:
        if b"\x00" in chunk:
            raise UnusableFile(f"this is not a text file; {_SAVE_AS}")
        if is_utf8:
            try:
                utf8.decode(chunk)
            except UnicodeDecodeError:
                is_utf8 = False
        is_cp1252 = is_cp1252 and not _NOT_CP1252.search(chunk)
        chunk = stream.read(_CHUNK)
    if is_utf8:
        try:
            utf8.decode(b"", final=True)
        except UnicodeDecodeError:
            is_utf8 = False  # the file ends part-way through a character
    if is_utf8:
        return "utf-8-sig"  # takes off Excel's byte-order mark, if there is one
    if is_cp1252:
        return "cp1252"
    raise UnusableFile(f"the file is neither UTF-8 nor Windows-1252 text; {_SAVE_AS}")


def _header(reader: Iterator[list[str]]) -> list[str]:
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                return cells
    except csv.Error as exc:
        raise UnusableFile(f"the header row is not valid CSV ({exc})") from None
    raise UnusableFile("the file is empty; it needs a header row and at least one row")


def _columns(header: list[str]) -> tuple[list[str], dict[str, str]]:
    columns: list[str] = []
    fields: dict[str, str] = {}
    for number, cell in enumerate(header, start=1):
        name = cell.strip()
        field = name.lower()
        if field in FIELDS:
            if field in fields:
                raise UnusableFile(
                    f"the column {field} appears twice (columns {columns.index(fields[field]) + 1}"
                    f" and {number}); keep one"
                )
            fields[field] = name
        if not name or name in columns:
            name = f"column {number}"
        columns.append(name)
    missing = [name for name in REQUIRED if name not in fields]
    if missing:
        delimited = ";" in ",".join(header) and len(header) == 1
        hint = (
            "the columns are separated by semicolons, not commas; " + _SAVE_AS
            if delimited
            else f"the header row must name the columns: {', '.join(REQUIRED)} are required"
        )
        raise UnusableFile(f"no {', '.join(missing)} column; {hint}")
    return columns, fields


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
        _Planner(config, workers) as planner,
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


@dataclass(frozen=True)
class _Planned:
    """What a new enrolment will be stored as: worked out away from the database (and, with
    workers, in another process), so it holds only values that pickle."""

    enrolment: Enrolment
    starts_at: datetime
    reminders: list[dict[str, object]]  # the columns of each reminder's row
    warnings: list[str]  # for the call list, each once


# What checking a row gives: the reason it is refused; the enrolment, when its booking
# reference is stored already (`enrol` updates it here); or a new enrolment's plan.
_Checked = str | Enrolment | _Planned


def _check(config: Config, values: dict[str, str], stored: bool, now: datetime) -> _Checked:
    try:
        enrolment = parse_fields(
            values,
            protocols=config.protocols,
            default_timezone=config.settings.timezone,
            require_booking_ref=True,
        )
    except InvalidEnrolment as exc:
        return "; ".join(exc.problems)
    return enrolment if stored else _plan(config, enrolment, now)


def _plan(config: Config, enrolment: Enrolment, now: datetime) -> _Planned | str:
    """A new enrolment's schedule and messages, as `services.enrol` makes them, or the reason
    it cannot be enrolled."""
    enrolment = enrolment.with_changes(enrolled_at=now)
    try:
        starts_at = services.future_start(enrolment, now)
        schedule = compute_schedule(
            config.protocols[enrolment.procedure], enrolment, now, config.window
        )
        reminders = [
            services.reminder_values(config, schedule, planned, 1) for planned in schedule.reminders
        ]
    except services.EnrolmentRefused as exc:
        return str(exc)
    except RenderError as exc:
        return _unwritable(exc)
    return _Planned(enrolment, starts_at, reminders, list(dict.fromkeys(schedule.warnings)))


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


def _check_in_worker(rows: list[tuple[dict[str, str], bool]], now: datetime) -> list[_Checked]:
    assert _worker_config is not None, "started without _start_worker"
    return [_check(_worker_config, values, stored, now) for values, stored in rows]


class _Planner:
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

    def __enter__(self) -> _Planner:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(
        self, rows: list[tuple[dict[str, str], bool]], now: datetime
    ) -> Future[list[_Checked]]:
        """Check (values, whether the booking reference is stored) for each row."""
        if self._pool is not None:
            return self._pool.submit(_check_in_worker, rows, now)
        done: Future[list[_Checked]] = Future()
        try:
            done.set_result([_check(self.config, values, stored, now) for values, stored in rows])
        except Exception as exc:  # raised where a worker's would be: when the batch lands
            done.set_exception(exc)
        return done


@dataclass
class _Batch:
    first_line: int
    size: int
    bytes_read: int
    refusals: list[Refusal]  # found while reading
    rows: list[_Row]  # the rest, each checked in `checked`
    versions: dict[str, int]  # schedule versions of the references stored already
    checked: Future[list[_Checked]]


def _prepare(
    session: Session, csv_file: CsvFile, lines: list[tuple[int, dict[str, str], bool]],
    seen: dict[str, int], planner: _Planner, now: datetime,
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
    new: list[tuple[_Row, _Planned]] = []
    for row, checked in zip(batch.rows, batch.checked.result(), strict=True):
        if isinstance(checked, str):
            outcome.refusals.append(row.refusal(checked))
        elif isinstance(checked, _Planned):
            new.append((row, checked))
        else:
            stored.append((row, checked))
    # Whatever the bulk path could not insert (another writer enrolled one of these references
    # a moment ago) goes through `enrol` one row at a time, like the rows already stored.
    leftover = _land_new(session, new, outcome, now=now, actor=actor)
    for row, enrolment in [*stored, *leftover]:
        version = batch.versions.get(row.ref or "")
        _land_one(session, config, row, enrolment, version, outcome, now=now, actor=actor)
    return outcome


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


def _unwritable(exc: RenderError) -> str:
    return f"a message for this patient could not be written ({exc})"


def _land_one(
    session: Session, config: Config, row: _Row, enrolment: Enrolment, version: int | None,
    outcome: _Outcome, *, now: datetime, actor: str,
) -> None:  # fmt: skip
    try:
        # A savepoint per row: a row that fails part-way leaves nothing behind, and the rows
        # before it in the batch stay.
        with session.begin_nested():
            result = services.enrol(session, config, enrolment, now=now, actor=actor)
    except services.EnrolmentRefused as exc:
        outcome.refusals.append(row.refusal(str(exc)))
        return
    except RenderError as exc:
        outcome.refusals.append(row.refusal(_unwritable(exc)))
        return
    if result.created:
        outcome.created += 1
    elif result.enrolment.schedule_version != version:
        outcome.updated += 1
    else:
        outcome.unchanged += 1
    outcome.warnings += len(result.warnings)


def _land_new(
    session: Session, plans: list[tuple[_Row, _Planned]], outcome: _Outcome, *,
    now: datetime, actor: str,
) -> list[tuple[_Row, Enrolment]]:  # fmt: skip
    """Enrol rows whose booking references are not stored yet, with a few multi-row INSERTs
    for the whole batch instead of a dozen statements per row: what makes 100,000 rows take
    minutes rather than hours. Writes exactly what `services.enrol` writes for a new
    enrolment (tests/test_import.py compares the two). Returns the rows it could not insert
    because another writer stored one of their references first."""
    if not plans:
        return []
    try:
        with session.begin_nested():
            _insert(session, plans, now=now, actor=actor)
    except IntegrityError:
        return [(row, plan.enrolment) for row, plan in plans]
    outcome.created += len(plans)
    outcome.warnings += sum(len(plan.warnings) for _, plan in plans)
    return []


def _insert(
    session: Session, plans: list[tuple[_Row, _Planned]], *, now: datetime, actor: str
) -> None:
    # Core inserts on the tables, not the ORM's bulk insert: that one leaves out a row's None
    # values so that server defaults apply, which splits a batch into a statement for every
    # run of rows with the same empty columns (an SMS has no subject, an email has one).
    connection = session.connection()
    patient_ids = _insert_many(
        connection,
        _table(models.Patient),
        [
            {
                "name": plan.enrolment.name,
                "phone": plan.enrolment.phone,
                "email": plan.enrolment.email,
                "language": plan.enrolment.language,
            }
            for _, plan in plans
        ],
        ids=True,
    )
    enrolment_ids = _insert_many(
        connection,
        _table(models.Enrolment),
        [
            _enrolment_values(plan.enrolment, plan.starts_at, patient_id, now)
            for (_, plan), patient_id in zip(plans, patient_ids, strict=True)
        ],
        ids=True,
    )
    reminders = [
        {**values, "enrolment_id": enrolment_id}
        for (_, plan), enrolment_id in zip(plans, enrolment_ids, strict=True)
        for values in plan.reminders
    ]
    if reminders:
        _insert_many(connection, _table(models.Reminder), reminders)
    # As services.enrol files them: late-enrolment warnings on the call list, and who enrolled.
    attention = [
        {"enrolment_id": enrolment_id, "kind": "late-enrolment", "message": message,
         "needs_call": True, "created_at": now}
        for (_, plan), enrolment_id in zip(plans, enrolment_ids, strict=True)
        for message in plan.warnings
    ]  # fmt: skip
    if attention:
        connection.execute(insert(_table(models.AttentionItem)), attention)
    _insert_many(
        connection,
        _table(models.AuditEntry),
        [
            {"at": now, "actor": actor, "action": "enrol", "enrolment_id": enrolment_id,
             "detail": json.dumps({"booking_ref": plan.enrolment.booking_ref,
                                   "procedure": plan.enrolment.procedure}, sort_keys=True)}
            for (_, plan), enrolment_id in zip(plans, enrolment_ids, strict=True)
        ],
    )  # fmt: skip


def _insert_many(
    connection: Connection, table: Table, rows: list[dict[str, Any]], *, ids: bool = False
) -> list[int]:
    """INSERT the rows, and return their ids in order when asked.

    On PostgreSQL with COPY, which takes a fraction of the time of an INSERT per row for the
    reminders' wide rows (an email's HTML is a few kilobytes); the ids are then taken from the
    table's sequence first, which is what an INSERT would do, so they are known in order."""
    if connection.dialect.name != "postgresql":
        if not ids:
            connection.execute(insert(table), rows)
            return []
        returning = insert(table).returning(table.c.id, sort_by_parameter_order=True)
        return list(connection.scalars(returning, rows))
    new_ids: list[int] = []
    if ids:
        new_ids = list(
            connection.scalars(
                text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) "
                     "FROM generate_series(1, :count)"),
                {"table": table.name, "count": len(rows)},
            )
        )  # fmt: skip
        rows = [{"id": new_id, **row} for new_id, row in zip(new_ids, rows, strict=True)]
    names = list(rows[0])
    # COPY skips SQLAlchemy, so the defaults it would fill in (created_at, updated_at) are
    # filled in here; a column with neither a value nor a default gets its server default.
    defaults: dict[str, object] = {}
    for column in table.columns:
        default = column.default
        if column.key in rows[0] or not isinstance(default, ColumnDefault):
            continue
        defaults[column.key] = default.arg if default.is_scalar else default.arg(None)
    quote = connection.dialect.identifier_preparer.quote
    columns = ", ".join(quote(name) for name in [*names, *defaults])
    dbapi: Any = connection.connection.dbapi_connection
    with (
        dbapi.cursor() as cursor,
        cursor.copy(f"COPY {quote(table.name)} ({columns}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row([*(row[name] for name in names), *defaults.values()])
    return new_ids


def _table(model: type[models.Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)  # declarative models map tables, never other selectables
    return table


def _enrolment_values(
    enrolment: Enrolment, starts_at: datetime, patient_id: int, now: datetime
) -> dict[str, object]:
    return {
        "booking_ref": enrolment.booking_ref,
        "patient_id": patient_id,
        "procedure": enrolment.procedure,
        "local_date": enrolment.date,
        "local_time": enrolment.time,
        "timezone": enrolment.timezone.key,
        "starts_at": starts_at,
        "arrival": enrolment.arrival,
        "sedation": enrolment.sedation,
        "joint": enrolment.joint,
        "anticoagulant": enrolment.anticoagulant,
        "anticoagulant_hold_days": enrolment.anticoagulant_hold_days,
        "anticoagulant_restart_days": enrolment.anticoagulant_restart_days,
        "status": models.ENROLMENT_ACTIVE,
        "schedule_version": 1,
        "enrolled_at": now,
    }
