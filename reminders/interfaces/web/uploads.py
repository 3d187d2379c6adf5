"""The CSV upload page: the same import as `reminders import`, run in the background while the
page shows its progress and then its row-by-row report.

Progress and refusals are kept in the database (ImportRun, ImportRefusal), not in this process,
so the page works whichever web process answers it and the report outlives the request.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import UploadFile

from reminders.config import Config
from reminders.core.enrolment import FIELDS
from reminders.interfaces.web.auth import StaffForm, StaffUser
from reminders.interfaces.web.deps import AppConfig, DbSession, Now
from reminders.interfaces.web.pages import found
from reminders.interfaces.web.rendering import page
from reminders.services import csvfile, imports
from reminders.store import models
from reminders.store.db import session_scope

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
RECENT = 20


@router.get("/import", response_class=HTMLResponse)
def upload_form(request: Request, user: StaffUser, session: DbSession, now: Now) -> Response:
    return _form(request, session, now, error=None)


def _form(request: Request, session: Session, now: datetime, *, error: str | None) -> Response:
    runs = session.scalars(
        select(models.ImportRun).order_by(models.ImportRun.id.desc()).limit(RECENT)
    ).all()
    return page(
        request, "import.html", runs=runs, now=now, error=error, required=csvfile.REQUIRED,
        optional=[name for name in FIELDS if name not in csvfile.REQUIRED],
        status_code=422 if error else 200,
    )  # fmt: skip


@router.post("/import", response_class=HTMLResponse)
def upload(
    request: Request, form: StaffForm, session: DbSession, config: AppConfig, now: Now
) -> Response:
    user: models.User = request.state.user
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return _form(request, session, now, error="Choose a CSV file to import.")
    # The upload's own file goes when the request ends; the import outlives it.
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the import thread
    shutil.copyfileobj(upload.file, spool)
    try:
        csv_file = csvfile.open_csv(spool)
    except csvfile.UnusableFile as exc:
        spool.close()
        return _form(request, session, now, error=f"Nothing was imported: {exc}")
    run = models.ImportRun(
        filename=upload.filename[:255], started_by=user.email, started_at=now,
        heartbeat_at=now, total_rows=csv_file.rows_total,
    )  # fmt: skip
    factory: sessionmaker[Session] = request.app.state.sessions
    with session_scope(factory) as own:  # committed before the thread looks for it
        own.add(run)
        own.flush()
        run_id = run.id
    threading.Thread(
        target=_run, args=(factory, config, csv_file, spool, run_id, user.email),
        name=f"import-{run_id}", daemon=True,
    ).start()  # fmt: skip
    return RedirectResponse(f"/import/{run_id}", status_code=303)


def _run(
    factory: sessionmaker[Session], config: Config, csv_file: csvfile.CsvFile, spool: IO[bytes],
    run_id: int, actor: str,
) -> None:  # fmt: skip
    refused: list[imports.Refusal] = []
    refused_so_far = 0

    def keep(refusal: imports.Refusal) -> None:
        refused.append(refusal)

    def progress(_bytes: int, rows: int) -> None:
        # Called after each committed batch: the refusals of that batch, and how far it got.
        nonlocal refused_so_far
        refused_so_far += len(refused)
        with session_scope(factory) as session:
            session.add_all(_refusal_rows(run_id, refused))
            session.execute(
                update(models.ImportRun)
                .where(models.ImportRun.id == run_id)
                .values(
                    done_rows=rows,
                    landed=rows - refused_so_far,
                    refused=refused_so_far,
                    heartbeat_at=datetime.now(UTC),
                )
            )
        refused.clear()

    problem = None
    try:
        report = imports.import_csv(
            factory, config, csv_file, now=datetime.now(UTC), actor=actor,
            on_refusal=keep, on_progress=progress,
        )  # fmt: skip
    except imports.ImportInterrupted as exc:
        report, problem = exc.report, str(exc)
    except Exception:  # the thread has no caller to tell; the page must not spin for ever
        log.exception("import %d failed", run_id)
        report, problem = None, "The import stopped because of an unexpected error."
    finally:
        spool.close()
    with session_scope(factory) as session:
        session.add_all(_refusal_rows(run_id, refused))
        session.execute(
            update(models.ImportRun)
            .where(models.ImportRun.id == run_id)
            .values(
                status="finished",
                finished_at=datetime.now(UTC),
                done_rows=report.rows if report else models.ImportRun.done_rows,
                landed=report.landed if report else 0,
                refused=report.refused if report else 0,
                problem=problem,
            )
        )


def _refusal_rows(run_id: int, refusals: list[imports.Refusal]) -> list[models.ImportRefusal]:
    return [
        models.ImportRefusal(
            run_id=run_id,
            line=r.line,
            booking_ref=r.booking_ref[:200] if r.booking_ref else None,
            reason=r.reason,
            row=json.dumps(r.row, ensure_ascii=False),
        )
        for r in refusals
    ]


@router.get("/import/{run_id}", response_class=HTMLResponse)
def import_report(
    request: Request, run_id: int, user: StaffUser, session: DbSession, now: Now
) -> Response:
    run = found(session, models.ImportRun, run_id)
    return page(
        request, "import_run.html", run=run, stopped=run.stopped(now),
        refusals=run.refusals[:1000],
    )  # fmt: skip


@router.get("/import/{run_id}/errors.csv")
def refused_rows(run_id: int, user: StaffUser, session: DbSession) -> Response:
    """The refused rows as they were given, with the reason: to fix and upload again."""
    run = found(session, models.ImportRun, run_id)
    rows = [(r.line, r.reason, json.loads(r.row)) for r in run.refusals]
    columns = list(dict.fromkeys(key for _, _, row in rows for key in row))

    def lines() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow([*columns, "line", "reason"])
        for line, reason, row in rows:
            writer.writerow([*(row.get(c, "") for c in columns), line, reason])
        yield buffer.getvalue()

    # Only safe characters in the header: the name came from the uploader's computer.
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", run.filename.rsplit(".", 1)[0]).strip("-.")
    stem = stem or "import"
    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{stem}.errors.csv"'},
    )
