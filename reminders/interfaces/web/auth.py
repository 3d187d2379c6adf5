"""Who is asking: staff sessions, roles and CSRF for the pages; the login and logout routes.

A session is Starlette's signed cookie (itsdangerous, keyed by REMINDERS_SECRET_KEY). It expires
after IDLE of inactivity (the cookie is re-signed on every response, so its age is the time since
the last request) and after LONGEST in all, whatever the activity, so a PC left logged in on a
ward does not stay logged in for days. Logging out ends every session of that user, not only this
browser's, because a signed cookie cannot be revoked one by one.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.datastructures import FormData

from reminders.interfaces.web.deps import DbSession, Now
from reminders.interfaces.web.rendering import page
from reminders.interfaces.web.throttle import Throttled, throttle
from reminders.services import accounts, logins
from reminders.store import models

IDLE = timedelta(minutes=30)
LONGEST = timedelta(hours=12)

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class SignedIn:
    id: int
    email: str
    role: str


class LoginRequired(Exception):
    """Raised by a staff route when nobody is logged in; the app sends them to /login."""


class NotAllowed(Exception):
    """A logged-in user without the role a page needs."""


class CsrfRefused(Exception):
    """A form post without this session's CSRF token."""


def csrf_token(request: Request) -> str:
    token: str | None = request.session.get("csrf")
    if token is None:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


def current_user(request: Request, session: DbSession, now: Now) -> models.User:
    user_id = request.session.get("user")
    began = request.session.get("began")
    if not isinstance(user_id, int) or not isinstance(began, (int, float)):
        raise LoginRequired
    began_at = datetime.fromtimestamp(began, UTC)
    user = session.get(models.User, user_id)
    if (
        user is None
        or user.disabled_at is not None
        or now - began_at > LONGEST
        or (user.sessions_valid_after is not None and began_at < user.sessions_valid_after)
    ):
        request.session.clear()
        raise LoginRequired
    # Touched on every request, so the cookie is signed afresh and its idle clock starts
    # again: Starlette re-sends the cookie only when the session changes, and without this a
    # busy user was logged out IDLE after logging in, however busy.
    request.session["seen"] = int(now.timestamp())
    request.state.user = user
    # What the pages show of the user, kept apart from the row: an error page is rendered after
    # the request's transaction has rolled back, when the row can no longer be read.
    request.state.signed_in = SignedIn(user.id, user.email, user.role)
    return user


StaffUser = Annotated[models.User, Depends(current_user)]


def admin_user(user: StaffUser) -> models.User:
    if user.role != "admin":
        raise NotAllowed
    return user


AdminUser = Annotated[models.User, Depends(admin_user)]


async def checked_form(request: Request) -> FormData:
    """The posted form, refused unless it carries the session's CSRF token.

    Reading the body is the only async work of a form post: the handlers themselves are plain
    functions, run in the thread pool, because a database call (or an argon2 hash) in an async
    handler stops the event loop, and with it every other request."""
    form = await request.form()
    given = form.get("csrf_token")
    expected = request.session.get("csrf")
    if not isinstance(given, str) or not expected or not hmac.compare_digest(given, expected):
        raise CsrfRefused
    return form


CheckedForm = Annotated[FormData, Depends(checked_form)]


def staff_form(user: StaffUser, form: CheckedForm) -> FormData:
    """The posted form of a logged-in user (the login is checked first, then the token).
    Every staff POST takes its fields from here."""
    return form


StaffForm = Annotated[FormData, Depends(staff_form)]


def admin_form(user: AdminUser, form: CheckedForm) -> FormData:
    """The posted form of a logged-in administrator."""
    return form


AdminForm = Annotated[FormData, Depends(admin_form)]


def _safe_next(target: str | None) -> str:
    # Only a path on this site: `next=https://elsewhere` would make the login page an open
    # redirect for phishing.
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    parts = urlsplit(target)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def login_redirect(request: Request) -> RedirectResponse:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = "/login" if here == "/" else f"/login?next={quote(here, safe='')}"
    return RedirectResponse(target, status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> Response:
    return page(request, "login.html", next=_safe_next(next), email="", error=None)


# A browser that has logged in to an account is not held by that address's slowdown
# (services/logins.py): a stranger can slow an address down, not keep its owner out.
DEVICE_COOKIE = "reminders_device"
DEVICE_DAYS = 180


def _devices(request: Request) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(request.app.state.settings.secret_key, salt="device")


def _trusted_device(request: Request, address: str) -> bool:
    value = request.cookies.get(DEVICE_COOKIE)
    if not value:
        return False
    try:
        known = _devices(request).loads(value, max_age=DEVICE_DAYS * 86400)
    except BadSignature:
        return False
    return isinstance(known, str) and known == address.strip().lower()


def _throttled(request: Request, exc: Exception, **context: Any) -> Response:
    seconds = getattr(exc, "seconds", 1)
    response = page(request, "login.html", error=str(exc), status_code=429, **context)
    response.headers["Retry-After"] = str(seconds)
    return response


def _login_throttle(request: Request) -> None:
    """Counted before the form is read: a flood is turned away for the price of a header."""
    request.state.throttled = None
    try:
        throttle(request).login(request)
    except Throttled as exc:
        request.state.throttled = exc


@router.post("/login", response_class=HTMLResponse, dependencies=[Depends(_login_throttle)])
def login(request: Request, now: Now, form: CheckedForm) -> Response:
    email = str(form.get("email") or "")
    password = str(form.get("password") or "")
    target = _safe_next(str(form.get("next") or ""))
    if request.state.throttled is not None:
        return _throttled(request, request.state.throttled, next=target, email=email)
    try:
        user = logins.log_in(
            request.app.state.sessions, email, password, now,
            trusted_device=_trusted_device(request, email), hashing=throttle(request).hash_slot(),
        )  # fmt: skip
    except (logins.TooManyAttempts, Throttled) as exc:
        return _throttled(request, exc, next=target, email=email)
    signed_in = (user.id, user.email) if user else None
    if signed_in is None:
        return page(
            request, "login.html", next=target, email=email,
            error="The email address or password is not right.", status_code=401,
        )  # fmt: skip
    # A fresh session (and CSRF token) at login, so a session planted before it is worthless.
    request.session.clear()
    request.session.update(user=signed_in[0], began=now.timestamp())
    csrf_token(request)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        DEVICE_COOKIE, _devices(request).dumps(signed_in[1].lower()),
        max_age=DEVICE_DAYS * 86400, httponly=True, samesite="lax",
        secure=(request.app.state.settings.public_url or "").startswith("https://"),
    )  # fmt: skip
    return response


@router.post("/logout")
def logout(request: Request, session: DbSession, now: Now, form: StaffForm) -> Response:
    user: models.User = request.state.user
    accounts.log_out(session, user, now)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)
