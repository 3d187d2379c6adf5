"""Server-rendered staff pages: the Jinja2 environment, the filters the pages share, and
messages carried to the next page after a redirect."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from reminders.core.clock import format_clock

_templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
# Templates change with a release, not while the app runs: without this, Jinja2 checks every
# template file's modification time on every page.
_templates.env.auto_reload = False
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def short_day(day: date) -> str:
    """`Thu 10 Dec 2026`: short enough for a table column on a hospital PC's screen."""
    return f"{_DAYS[day.weekday()]} {day.day} {_MONTHS[day.month - 1]} {day.year}"


def local_time(instant: datetime | None, zone: str) -> str:
    """`Thu 10 Dec 2026, 9:30am` on the patient's wall clock: what staff read out on the phone."""
    if instant is None:
        return ""
    local = instant.astimezone(ZoneInfo(zone))
    return f"{short_day(local.date())}, {format_clock(local.time())}"


_templates.env.filters["short_day"] = short_day
_templates.env.filters["local_time"] = local_time
_templates.env.filters["clock"] = format_clock


def flash(request: Request, message: str, kind: str = "info") -> None:
    """A message for the next page the user sees, after a redirect."""
    request.session.setdefault("flash", []).append({"kind": kind, "message": message})


def page(
    request: Request, template: str, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    from reminders.interfaces.web.auth import csrf_token  # auth renders pages too

    messages = request.session.pop("flash", [])
    return _templates.TemplateResponse(
        request,
        template,
        {
            "user": getattr(request.state, "signed_in", None),
            "csrf_token": csrf_token(request),
            # Scripts run only with this response's nonce (headers.py, the CSP).
            "csp_nonce": getattr(request.state, "csp_nonce", ""),
            "messages": messages,
            "unit": request.app.state.unit,
            **context,
        },
        status_code=status_code,
    )
