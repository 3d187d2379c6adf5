"""The staff pages: upcoming procedures, search, enrol with a preview, the patient page with
reschedule, correct and cancel, the needs-attention list and the audit log.

Handlers read the form, call a service or a list query, and render; every rule lives in the
enrolments. Every route here needs a login (StaffUser, StaffForm or AdminUser); a form post also
needs its CSRF token (StaffForm).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
from collections import defaultdict
from datetime import date, datetime, time, timedelta
from typing import Any, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from reminders.config import Config
from reminders.core.clock import localize
from reminders.core.enrolment import (
    FIELDS,
    SCHEMA,
    InvalidEnrolment,
    parse_fields,
    required_fields,
)
from reminders.core.fields import PROCEDURE, YES_NO
from reminders.core.parsers import has_control_character, parse_clock, parse_date
from reminders.interfaces.web.auth import AdminUser, StaffForm, StaffUser
from reminders.interfaces.web.deps import AppConfig, DbSession, Now
from reminders.interfaces.web.rendering import flash, page
from reminders.services import attention, enrolments, planning, wording
from reminders.services.csvfile import neutralise
from reminders.services.preview import preview
from reminders.store import journal, models, queries
from reminders.store.base import utcnow

router = APIRouter(include_in_schema=False)
UPCOMING_DAYS = 7
MAX_ID = 2**31 - 1  # ids are INTEGER columns
SEARCH_MAX = 200  # characters of a search: a name is at most 200


class NotFound(Exception):
    pass


Row = TypeVar("Row", bound=models.Base)


def found(session: Session, model: type[Row], row_id: int) -> Row:
    """The row a page is about, or the "Not found" page (an id beyond what the database's
    ids can be, too: PostgreSQL would refuse to compare it)."""
    if not 0 < row_id <= MAX_ID:
        raise NotFound
    row = session.get(model, row_id)
    if row is None:
        raise NotFound
    return row


@router.get("/", response_class=HTMLResponse)
def upcoming(
    request: Request, user: StaffUser, session: DbSession, config: AppConfig, now: Now,
    start: str = "",
) -> Response:  # fmt: skip
    zone = config.zone
    try:
        first = parse_date(start) if start else now.astimezone(zone).date()
    except ValueError:  # an edited address: show this week rather than an error
        first = now.astimezone(zone).date()
    rows = queries.upcoming(
        session,
        localize(first, time(0), zone),
        localize(first + timedelta(days=UPCOMING_DAYS), time(0), zone),
    )
    days: dict[date, list[models.Enrolment]] = defaultdict(list)
    for row in rows:
        days[row.local_date].append(row)
    week = timedelta(days=UPCOMING_DAYS)
    return page(
        request, "upcoming.html", days=sorted(days.items()), first=first,
        previous=first - week, following=first + week, waiting=queries.waiting_count(session),
    )  # fmt: skip


@router.get("/search", response_class=HTMLResponse)
def search_form(request: Request, user: StaffUser) -> Response:
    return page(request, "search.html", query="", results=[], limit=queries.SEARCH_LIMIT)


# A search is posted, not put in the address: a name or a phone number in a URL stays in the
# browser's history, in proxies' logs and in the Referer of the next page.
@router.post("/search", response_class=HTMLResponse)
def search(request: Request, form: StaffForm, user: StaffUser, session: DbSession) -> Response:
    q = str(form.get("q") or "")[:SEARCH_MAX]
    if has_control_character(q):
        return page(
            request, "search.html", query="", results=[], limit=queries.SEARCH_LIMIT,
            error="q: the search has a control character (such as NUL) in it; type it again",
            status_code=422,
        )  # fmt: skip
    results = queries.search(session, q)
    # Who searched, and a keyed digest of what for: the same search can be matched against a
    # suspicion (a patient's name, digested the same way), and the log itself names nobody.
    key = request.app.state.settings.secret_key or ""
    digest = hmac.new(key.encode(), q.strip().lower().encode(), hashlib.sha256).hexdigest()
    journal.audit(
        session, user.email, "search", now=utcnow(), query=digest[:32], found=len(results)
    )
    if len(results) == 1 and q.strip().lower() == results[0].booking_ref.lower():
        return RedirectResponse(f"/enrolments/{results[0].id}", status_code=303)
    return page(request, "search.html", query=q, results=results, limit=queries.SEARCH_LIMIT)


# Enrolling ---------------------------------------------------------------------------------


def _fields(form: FormData) -> dict[str, str]:
    return {k: str(form.get(k) or "").strip() for k in FIELDS if str(form.get(k) or "").strip()}


def _problems(error: InvalidEnrolment) -> dict[str, str]:
    """Each problem against the field it is about, so the form shows it beside that field;
    a problem about no one field ("phone or email: ...") goes under "" for the summary."""
    by_field: dict[str, list[str]] = defaultdict(list)
    for problem in error.problems:
        name, sep, text = problem.partition(": ")
        if sep and name in FIELDS:
            by_field[name].append(text)
        else:
            by_field[""].append(problem)
    return {name: "; ".join(texts) for name, texts in by_field.items()}


def _options(config: Config) -> dict[str, list[tuple[str, str]]]:
    """What the form's lists offer, for the fields that are chosen from a list: value, words."""
    options: dict[str, list[tuple[str, str]]] = {}
    for spec in SCHEMA:
        if spec.kind is PROCEDURE:
            protocols = sorted(config.protocols.values(), key=lambda p: p.name)
            options[spec.name] = [(p.procedure, p.name) for p in protocols]
        elif spec.kind is YES_NO:
            options[spec.name] = [("yes", "Yes"), ("no", "No")]
        elif spec.choices:
            options[spec.name] = [(choice, choice.capitalize()) for choice in spec.choices]
    return options


def _enrol_page(
    request: Request, config: Config, *, values: dict[str, str], errors: dict[str, str] | None =
    None, result: Any = None, existing: models.Enrolment | None = None, status_code: int = 200,
) -> Response:  # fmt: skip
    return page(
        request, "enrol.html", fields=[spec for spec in SCHEMA if spec.on_form],
        options=_options(config),
        required=required_fields(from_system=False), values=values, errors=errors or {},
        preview=result, existing=existing, default_timezone=config.zone.key,
        status_code=status_code,
    )  # fmt: skip


@router.get("/enrol", response_class=HTMLResponse)
def enrol_form(
    request: Request, user: StaffUser, session: DbSession, config: AppConfig,
    enrolment: int | None = None,
) -> Response:  # fmt: skip
    """The empty form, or, with `?enrolment=ID`, that enrolment's fields to correct."""
    values: dict[str, str] = {}
    existing = None
    if enrolment is not None:
        existing = found(session, models.Enrolment, enrolment)
        values = planning.as_enrolment(existing).as_fields()
    return _enrol_page(request, config, values=values, existing=existing)


def _preview_or_errors(
    session: DbSession, config: Config, values: dict[str, str], now: datetime
) -> tuple[Any, dict[str, str], models.Enrolment | None]:
    try:
        enrolment = parse_fields(values, protocols=config.protocols, default_timezone=config.zone)
    except InvalidEnrolment as error:
        return None, _problems(error), None
    try:
        enrolments.future_start(enrolment, now, config.zone)
    except enrolments.EnrolmentRefused as error:
        return None, {"date": str(error).partition(": ")[2]}, None
    existing = None
    if enrolment.booking_ref:
        existing = session.scalar(
            select(models.Enrolment).where(models.Enrolment.booking_ref == enrolment.booking_ref)
        )
    try:
        return preview(config, enrolment, now), {}, existing
    except enrolments.EnrolmentRefused as error:
        return None, {"": str(error)}, existing


@router.post("/enrol/preview", response_class=HTMLResponse)
def enrol_preview(
    request: Request, form: StaffForm, session: DbSession, config: AppConfig, now: Now
) -> Response:
    """The preview alone, for the form's script to show as the fields are filled in."""
    values = _fields(form)
    result, errors, existing = _preview_or_errors(session, config, values, now)
    return page(
        request, "_preview.html", preview=result, errors=errors, existing=existing, live=True
    )


@router.post("/enrol", response_class=HTMLResponse)
def enrol(
    request: Request, form: StaffForm, session: DbSession, config: AppConfig, now: Now
) -> Response:
    user: models.User = request.state.user
    values = _fields(form)
    result, errors, existing = _preview_or_errors(session, config, values, now)
    if errors or form.get("action") != "save":
        return _enrol_page(
            request, config, values=values, errors=errors, result=result, existing=existing,
            status_code=422 if errors else 200,
        )  # fmt: skip
    enrolment = result.schedule.facts.enrolment
    try:
        # A savepoint: nothing of a refused enrolment is kept, and the request's transaction
        # still ends as it began (rolling it back here made its commit fail: a 500).
        with session.begin_nested():
            saved = enrolments.enrol(session, config, enrolment, now=now, actor=user.email)
    except enrolments.EnrolmentRefused as exc:
        return _enrol_page(
            request, config, values=values, errors={"": str(exc)}, result=result,
            existing=existing, status_code=422,
        )  # fmt: skip
    row = saved.enrolment
    if saved.created:
        flash(request, "Enrolled. Every reminder is below.")
    elif saved.rescheduled:
        flash(request, "Moved; every pending reminder follows.")
    else:
        flash(request, "Updated.")
    _warned(request, saved.warnings)
    return RedirectResponse(f"/enrolments/{row.id}", status_code=303)


def _warned(request: Request, warnings: list[str]) -> None:
    # Flash messages travel in the session cookie, which is signed, not encrypted: they carry
    # no patient data. The warnings themselves are on the patient page's needs-attention list.
    if warnings:
        count = "One thing needs" if len(warnings) == 1 else f"{len(warnings)} things need"
        flash(request, f"{count} attention: see the list on this page.", "warning")


# The patient page --------------------------------------------------------------------------


@router.get("/enrolments/{enrolment_id}", response_class=HTMLResponse)
def enrolment_page(
    request: Request, enrolment_id: int, user: StaffUser, session: DbSession, config: AppConfig
) -> Response:
    row = found(session, models.Enrolment, enrolment_id)
    items = session.scalars(
        select(models.AttentionItem)
        .where(models.AttentionItem.enrolment_id == row.id)
        .order_by(models.AttentionItem.created_at.desc())
    ).all()
    history = session.scalars(
        select(models.AuditEntry)
        .where(models.AuditEntry.enrolment_id == row.id, models.AuditEntry.action != "view")
        .order_by(models.AuditEntry.id.desc())
    ).all()
    # Who opened the record: a hospital must be able to say who accessed a patient's data.
    journal.audit(session, user.email, "view", now=utcnow(), enrolment_id=row.id)
    protocol = config.protocols.get(row.procedure)
    return page(
        request, "enrolment.html", row=row, items=items, history=history,
        procedure_name=protocol.name if protocol else row.procedure,
        words=wording.shown(config, list(row.reminders)),
    )  # fmt: skip


@router.post("/enrolments/{enrolment_id}/reschedule")
def reschedule(
    request: Request, enrolment_id: int, form: StaffForm, session: DbSession, config: AppConfig,
    now: Now,
) -> Response:  # fmt: skip
    user: models.User = request.state.user
    row = found(session, models.Enrolment, enrolment_id)
    here = f"/enrolments/{row.id}"
    try:
        new_date = parse_date(str(form.get("date") or ""))
        new_time = parse_clock(str(form.get("time") or ""))
        with session.begin_nested():  # nothing of a refused move is kept
            result = enrolments.reschedule(
                session, config, row, date=new_date, time=new_time, now=now, actor=user.email
            )
    except ValueError as exc:  # a bad date or time, or a refused reschedule
        # The reason names a field and its rule (a date in the past, a closed enrolment),
        # never the patient.
        reason = (
            f"this enrolment is {row.status}"
            if isinstance(exc, enrolments.EnrolmentClosed)
            else exc
        )
        flash(request, f"Not moved: {reason}", "warning")
        return RedirectResponse(here, status_code=303)
    if result.rescheduled:
        flash(request, "Moved; every pending reminder follows.")
    else:
        flash(request, "That is the time it already has; nothing changed.")
    _warned(request, result.warnings)
    return RedirectResponse(here, status_code=303)


@router.post("/enrolments/{enrolment_id}/cancel")
def cancel(
    request: Request, enrolment_id: int, form: StaffForm, session: DbSession, config: AppConfig,
    now: Now,
) -> Response:  # fmt: skip
    user: models.User = request.state.user
    row = found(session, models.Enrolment, enrolment_id)
    try:
        enrolments.cancel(session, config, row, now=now, actor=user.email)
    except enrolments.EnrolmentClosed:
        flash(request, f"Not cancelled: this enrolment is already {row.status}.", "warning")
    else:
        flash(
            request,
            "Cancelled. The patient is told, and nothing more of its plan will be sent.",
        )
    return RedirectResponse(f"/enrolments/{row.id}", status_code=303)


# Needs attention and the audit log ---------------------------------------------------------


@router.get("/attention", response_class=HTMLResponse)
def needs_attention(
    request: Request, user: StaffUser, session: DbSession, show: str = "all"
) -> Response:
    show = show if show in ("all", "calls", "done") else "all"
    items = queries.needs_attention(session, calls_only=show == "calls", resolved=show == "done")
    return page(request, "attention.html", items=items, show=show)


@router.post("/attention/{item_id}/resolve")
def resolve(
    request: Request, item_id: int, form: StaffForm, session: DbSession, now: Now
) -> Response:
    user: models.User = request.state.user
    item = found(session, models.AttentionItem, item_id)
    try:
        attention.resolve(session, item, now=now, actor=user.email)
    except attention.AlreadyResolved as exc:
        flash(request, str(exc), "warning")
    back = str(form.get("back") or "/attention")
    return RedirectResponse(back if back.startswith("/") and not back.startswith("//")
                            else "/attention", status_code=303)  # fmt: skip


@router.get("/audit", response_class=HTMLResponse)
def audit(
    request: Request, user: AdminUser, session: DbSession, before: int | None = None,
    actor: str = "", action: str = "", enrolment: int | None = None,
) -> Response:  # fmt: skip
    before = before if before is None or 0 < before <= MAX_ID else None
    enrolment = enrolment if enrolment is None or 0 < enrolment <= MAX_ID else None
    filters = {"actor": actor[:200], "action": action[:64], "enrolment_id": enrolment}
    entries = queries.audit_log(session, before=before, **filters)  # type: ignore[arg-type]
    return page(
        request, "audit.html", entries=entries, actor=actor, action=action,
        enrolment=enrolment or "", query=urlencode({k: v for k, v in
        {"actor": actor, "action": action, "enrolment": enrolment or ""}.items() if v}),
    )  # fmt: skip


@router.get("/audit.csv")
def audit_export(
    request: Request, user: AdminUser, session: DbSession, actor: str = "", action: str = "",
    enrolment: int | None = None,
) -> Response:  # fmt: skip
    """The audit log, filtered as on the page, as CSV: for an investigation or a records
    request. The export is itself audited."""
    enrolment = enrolment if enrolment is None or 0 < enrolment <= MAX_ID else None
    entries = queries.audit_log(
        session, limit=None, actor=actor[:200], action=action[:64], enrolment_id=enrolment
    )
    journal.audit(session, user.email, "audit-export", now=utcnow(), entries=len(entries))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "at", "actor", "action", "enrolment", "detail"])
    for e in entries:
        cells = [str(e.id), e.at.isoformat(), e.actor, e.action, str(e.enrolment_id or ""),
                 e.detail or ""]  # fmt: skip
        writer.writerow([neutralise(cell) for cell in cells])
    return Response(
        out.getvalue(), media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="audit.csv"'},
    )  # fmt: skip
