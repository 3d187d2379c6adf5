"""`reminders import FILE.csv`: a day's list enrolled from the terminal, with a progress bar,
refused rows written to FILE.errors.csv and a summary (PRODUCT.md, Contracts: exit 0, 1 or 2)."""

from __future__ import annotations

import csv
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from reminders.config import Config
from reminders.interfaces.cli import EXIT_USAGE, UsageError, parse_now
from reminders.services.csvfile import UnusableFile, neutralise, open_csv
from reminders.services.imports import ImportInterrupted, ImportReport, Refusal, import_csv
from reminders.store.db import make_engine, make_sessionmaker
from reminders.store.migrate import check_current


class _ErrorsFile:
    """FILE.errors.csv: refused rows as they were given, with the line and the reason first.
    Opened at the first refusal, so a clean import leaves none; each row is written as it is
    refused, so what the import found survives a crash. A byte-order mark makes Excel show
    accented names as typed, and the importer reads it back, so fixed rows can be imported
    straight from this file."""

    def __init__(self, source: Path, columns: list[str]) -> None:
        stem = source.name[:-4] if source.name.lower().endswith(".csv") else source.name
        self.path = source.with_name(f"{stem}.errors.csv")
        self.columns = columns
        self.written = 0
        self._stack = ExitStack()
        self._writer: Any = None

    def write(self, refusal: Refusal) -> None:
        if self._writer is None:
            out = self._stack.enter_context(self.path.open("w", encoding="utf-8-sig", newline=""))
            self._writer = csv.writer(out)
            self._writer.writerow([neutralise(c) for c in ["line", "reason", *self.columns]])
        cells = [refusal.line, refusal.reason, *refusal.row.values()]
        self._writer.writerow([neutralise(str(cell)) for cell in cells])
        self.written += 1

    def close(self) -> None:
        self._stack.close()


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def _import_summary(report: ImportReport, errors: _ErrorsFile) -> list[str]:
    detail = f"{report.created:,} new, {report.updated:,} updated"
    if report.unchanged:
        detail += f", {report.unchanged:,} unchanged"
    summary = f"{_count(report.landed, 'row')} landed ({detail})"
    if report.refused:
        summary += f"; {report.refused:,} refused, see {errors.path}"
    lines = [summary]
    if report.warnings:
        warnings = _count(report.warnings, "late-enrolment warning")
        lines.append(f"{warnings} for staff: see the needs-attention list.")
    return lines


def import_file(path: Path) -> int:
    with ExitStack() as cleanup:
        stream = cleanup.enter_context(path.open("rb"))
        try:
            csv_file = open_csv(stream)
        except UnusableFile as exc:
            raise UsageError(f"{path.name}: {exc}. Nothing was imported.") from None
        config = Config.load()
        check_current(config.settings.database_url)
        engine = make_engine(config.settings.database_url)
        cleanup.callback(engine.dispose)
        errors = _ErrorsFile(path, csv_file.columns)
        cleanup.callback(errors.close)
        console = Console(stderr=True)
        progress = cleanup.enter_context(
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=console,
                disable=not console.is_terminal,
            )
        )
        task = progress.add_task(f"Importing {path.name}", total=path.stat().st_size)
        done = [0]  # rows in committed batches

        def show(bytes_read: int, rows: int) -> None:
            progress.update(task, completed=bytes_read)
            done[0] = rows

        try:
            report = import_csv(
                make_sessionmaker(engine),
                config,
                csv_file,
                now=parse_now(None),
                actor="cli",
                on_refusal=errors.write,
                on_progress=show,
                # A worker a CPU writes the messages, most of the work; a few are enough, as
                # this process and the database's have their own share to do.
                workers=min(os.cpu_count() or 1, 4),
            )
        except KeyboardInterrupt:
            print(
                f"reminders import: {path.name}: stopped after {_count(done[0], 'row')}, which "
                "have landed or been refused. Import the same file again to finish: rows that "
                "landed are updated, not duplicated",
                file=sys.stderr,
            )
            return 130  # as the shell reports a command stopped by Ctrl-C
        except ImportInterrupted as exc:
            print(f"reminders import: {path.name}: {exc}", file=sys.stderr)
            if errors.written:
                print(
                    f"reminders import: rows refused so far are in {errors.path}", file=sys.stderr
                )
            return EXIT_USAGE
    if report.encoding != "utf-8":
        print(
            f"Note: {path.name} is not UTF-8, so it was read as Windows-1252 (what Excel's "
            "'CSV (Comma delimited)' writes); check that accented names look right.",
            file=sys.stderr,
        )
    if not report.refused and errors.path.exists():
        errors.path.unlink()
        print(f"Removed {errors.path}, left by an earlier import.", file=sys.stderr)
    for line in _import_summary(report, errors):
        print(line)
    return 1 if report.refused else 0
