"""The CSV upload page: the same import as `reminders import`, run by a worker while the page
shows its progress and then its row-by-row report (services/import_runs.py).

Progress and refusals are kept in the database (ImportRun, ImportRefusal), not in this process,
so the page works whichever web process answers it and the report outlives the request.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime

from celery import Celery
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from reminders.core.enrolment import FIELDS
from reminders.interfaces.tasks import Queues
from reminders.interfaces.web.auth import StaffForm, StaffUser
from reminders.interfaces.web.deps import DbSession, Now
from reminders.interfaces.web.pages import found
from reminders.interfaces.web.rendering import page
from reminders.services import csvfile, import_runs
from reminders.store import journal, models
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
def upload(request: Request, form: StaffForm, session: DbSession, now: Now) -> Response:
    user: models.User = request.state.user
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return _form(request, session, now, error="Choose a CSV file to import.")
    try:
        # Linear in the file's size, which the body limit caps (csvfile.MAX_BYTES); the import
        # itself runs in a worker.
        csv_file = csvfile.open_csv(upload.file)
        upload.file.seek(0)
        content = upload.file.read()
    except csvfile.UnusableFile as exc:
        return _form(request, session, now, error=f"Nothing was imported: {exc}")
    queue: Celery | None = request.app.state.celery
    if queue is None:
        return _form(
            request, session, now,
            error="Imports run in the worker, and no worker is set up: set REMINDERS_BROKER_URL "
            "(reminders up does), or use the reminders import command.",
        )  # fmt: skip
    with session_scope(request.app.state.sessions) as own:  # committed before it is queued
        run_id = import_runs.store(
            own, filename=upload.filename, content=content, total_rows=csv_file.rows_total,
            actor=user.email, now=now,
        )  # fmt: skip
    queue.send_task(
        "reminders.import_upload", args=[run_id], queue=Queues.IMPORT, exchange="",
        routing_key=Queues.IMPORT,
    )  # fmt: skip
    return RedirectResponse(f"/import/{run_id}", status_code=303)


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
def refused_rows(run_id: int, user: StaffUser, session: DbSession, now: Now) -> Response:
    """The refused rows as they were given, with the reason: to fix and upload again."""
    run = found(session, models.ImportRun, run_id)
    journal.audit(session, user.email, "download", now=now, run=run.id, refused=len(run.refusals))
    rows = [(r.line, r.reason, json.loads(r.row)) for r in run.refusals]
    columns = list(dict.fromkeys(key for _, _, row in rows for key in row))

    def lines() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow([csvfile.neutralise(c) for c in [*columns, "line", "reason"]])
        for line, reason, row in rows:
            cells = [*(row.get(c, "") for c in columns), str(line), reason]
            writer.writerow([csvfile.neutralise(cell) for cell in cells])
        yield buffer.getvalue()

    # Only safe characters in the header: the name came from the uploader's computer.
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", run.filename.rsplit(".", 1)[0]).strip("-.")
    stem = stem or "import"
    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{stem}.errors.csv"'},
    )
