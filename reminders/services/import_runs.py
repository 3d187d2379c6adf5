"""An upload from the staff pages, imported by a worker: the web request stores the file and
queues the run's id; the worker (`reminders.import_upload`) reads it back, imports it with
`imports.import_csv`, and keeps progress and refusals in the database (ImportRun,
ImportRefusal), so the page works whichever web process answers it.

Nothing of an import runs in the web process: a big or hostile file costs a worker's time, not
the staff pages' (and not the webhooks' database connections).
"""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import datetime
from typing import BinaryIO

from sqlalchemy import delete, update
from sqlalchemy.orm import Session, sessionmaker

from reminders.config import Config
from reminders.services import csvfile, imports
from reminders.store import models
from reminders.store.base import utcnow
from reminders.store.db import session_scope

log = logging.getLogger(__name__)


def store(
    session: Session, *, filename: str, content: bytes, total_rows: int, actor: str,
    now: datetime,
) -> int:  # fmt: skip
    """Keep an upload that passed `csvfile.open_csv` for a worker; returns the run's id."""
    run = models.ImportRun(
        filename=filename[:255], started_by=actor, started_at=now, heartbeat_at=now,
        total_rows=total_rows,
    )  # fmt: skip
    session.add(run)
    session.flush()
    session.add(models.ImportUpload(run_id=run.id, content=content))
    return run.id


def run(factory: sessionmaker[Session], config: Config, run_id: int) -> None:
    """Import the stored upload of `run_id`, once: its file is deleted as the import starts,
    so a redelivered task finds nothing to do."""
    with session_scope(factory) as session:
        upload = session.get(models.ImportUpload, run_id)
        if upload is None:
            return
        content = upload.content
        actor = upload_actor(session, run_id)
        session.execute(delete(models.ImportUpload).where(models.ImportUpload.run_id == run_id))
        session.execute(
            update(models.ImportRun)
            .where(models.ImportRun.id == run_id)
            .values(heartbeat_at=utcnow())
        )
    with tempfile.TemporaryFile() as spool:
        spool.write(content)
        del content
        _import(factory, config, spool, run_id, actor)


def upload_actor(session: Session, run_id: int) -> str:
    run_row = session.get(models.ImportRun, run_id)
    return run_row.started_by if run_row is not None else "unknown"


def _import(
    factory: sessionmaker[Session], config: Config, spool: BinaryIO, run_id: int, actor: str
) -> None:
    refused: list[imports.Refusal] = []
    refused_so_far = 0

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
                    heartbeat_at=utcnow(),
                )
            )
        refused.clear()

    status, problem, report = "finished", None, None
    try:
        report = imports.import_csv(
            factory, config, spool, now=utcnow(), actor=actor,
            on_refusal=refused.append, on_progress=progress,
        )  # fmt: skip
    except csvfile.UnusableFile as exc:
        status, problem = "unusable", f"Nothing was imported: {exc}"
    except imports.ImportInterrupted as exc:
        report, problem = exc.report, str(exc)
    except Exception:  # the page must not spin for ever
        log.exception("import %d failed", run_id)
        problem = "The import stopped because of an unexpected error."
    with session_scope(factory) as session:
        session.add_all(_refusal_rows(run_id, refused))
        session.execute(
            update(models.ImportRun)
            .where(models.ImportRun.id == run_id)
            .values(
                status=status,
                finished_at=utcnow(),
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
