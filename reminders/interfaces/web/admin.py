"""Who may use the service: staff accounts and API tokens for administrators, and each person's
own password.

An administrator adds an account and gets a password to hand over, shown once; resets a
forgotten one the same way; switches off the account of someone who has left (every session
ends at once) and revokes a booking system's token. Every change is in the audit log, and
`accounts` refuses to leave the unit without an administrator who can log in.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from reminders.interfaces.web.auth import AdminForm, AdminUser, StaffForm, StaffUser
from reminders.interfaces.web.deps import DbSession, Now
from reminders.interfaces.web.pages import found
from reminders.interfaces.web.rendering import flash, page
from reminders.interfaces.web.throttle import Throttled, throttle
from reminders.services import accounts, logins
from reminders.store import models

router = APIRouter(include_in_schema=False)
STAFF = "/admin/staff"


@router.get(STAFF, response_class=HTMLResponse)
def staff_accounts(request: Request, user: AdminUser, session: DbSession) -> Response:
    return _accounts_page(request, session)


def _accounts_page(
    request: Request, session: Session, *, error: str | None = None, email: str = "",
    token_error: str | None = None, token_name: str = "",
) -> Response:  # fmt: skip
    users = session.scalars(select(models.User).order_by(models.User.email)).all()
    tokens = session.scalars(select(models.ApiToken).order_by(models.ApiToken.id)).all()
    return page(
        request, "staff.html", users=users, tokens=tokens, roles=models.ROLES,
        attempts=logins.attempts_by_address(session),
        error=error, email=email, token_error=token_error, token_name=token_name,
        status_code=422 if error or token_error else 200,
    )  # fmt: skip


def _shown_once(request: Request, heading: str, secret: str, text: str) -> Response:
    response = page(request, "secret.html", heading=heading, secret=secret, text=text)
    response.headers["Cache-Control"] = "no-store"  # not kept by the browser or a proxy
    return response


@router.post(STAFF, response_class=HTMLResponse)
def add_account(request: Request, form: AdminForm, session: DbSession, now: Now) -> Response:
    admin: models.User = request.state.user
    email = str(form.get("email") or "").strip()
    password = accounts.new_password()
    try:
        user = accounts.add_user(
            session, email=email, password=password, role=str(form.get("role") or ""),
            now=now, actor=admin.email,
        )  # fmt: skip
    except accounts.AccountError as exc:
        return _accounts_page(request, session, error=str(exc), email=email)
    return _shown_once(
        request, f"{user.email} can now log in", password,
        f"Give this password to {user.email} in person or by phone, not by email. "
        "They can change it under “Your account” once they have logged in.",
    )  # fmt: skip


@router.post(STAFF + "/{user_id}/password", response_class=HTMLResponse)
def reset_password(
    request: Request, user_id: int, form: AdminForm, session: DbSession, now: Now
) -> Response:
    admin: models.User = request.state.user
    user = found(session, models.User, user_id)
    password = accounts.new_password()
    accounts.reset_password(
        session, email=user.email, password=password, now=now, actor=admin.email
    )
    return _shown_once(
        request, f"A new password for {user.email}", password,
        f"Give it to {user.email} in person or by phone. Their old password no longer works, "
        "and they have been logged out everywhere.",
    )  # fmt: skip


@router.post(STAFF + "/{user_id}/disabled")
def switch(
    request: Request, user_id: int, form: AdminForm, session: DbSession, now: Now
) -> Response:
    admin: models.User = request.state.user
    user = found(session, models.User, user_id)
    off = form.get("disabled") == "yes"
    try:
        accounts.set_disabled(session, email=user.email, disabled=off, now=now, actor=admin.email)
    except accounts.AccountError as exc:
        flash(request, str(exc), "warning")
    else:
        flash(
            request,
            f"{user.email} is switched off and logged out everywhere."
            if off
            else f"{user.email} can log in again with their password.",
        )
    return RedirectResponse(STAFF, status_code=303)


@router.post(STAFF + "/{user_id}/role")
def change_role(
    request: Request, user_id: int, form: AdminForm, session: DbSession, now: Now
) -> Response:
    admin: models.User = request.state.user
    user = found(session, models.User, user_id)
    role = str(form.get("role") or "")
    try:
        accounts.set_role(session, email=user.email, role=role, now=now, actor=admin.email)
    except accounts.AccountError as exc:
        flash(request, str(exc), "warning")
    else:
        flash(request, f"{user.email} is now {'an administrator' if role == 'admin' else 'staff'}.")
    return RedirectResponse(STAFF, status_code=303)


@router.post("/admin/tokens", response_class=HTMLResponse)
def add_token(request: Request, form: AdminForm, session: DbSession, now: Now) -> Response:
    admin: models.User = request.state.user
    name = str(form.get("name") or "")
    try:
        new = accounts.add_token(
            session, name=name, now=now, actor=admin.email, scope=str(form.get("scope") or "write")
        )
    except accounts.AccountError as exc:
        return _accounts_page(request, session, token_error=str(exc), token_name=name)
    return _shown_once(
        request, f"A token for {new.token.name}", new.secret,
        "Put it in the booking system's settings now. It works until it is revoked here.",
    )  # fmt: skip


@router.post("/admin/tokens/{token_id}/revoke")
def revoke_token(
    request: Request, token_id: int, form: AdminForm, session: DbSession, now: Now
) -> Response:
    admin: models.User = request.state.user
    token = found(session, models.ApiToken, token_id)
    accounts.revoke_token(session, token_id=token.id, now=now, actor=admin.email)
    flash(request, f"The token for {token.name} no longer works.")
    return RedirectResponse(STAFF, status_code=303)


@router.get("/account", response_class=HTMLResponse)
def own_account(request: Request, user: StaffUser) -> Response:
    return page(request, "account.html", error=None)


@router.post("/account", response_class=HTMLResponse)
def change_password(request: Request, form: StaffForm, session: DbSession, now: Now) -> Response:
    user: models.User = request.state.user
    new = str(form.get("new") or "")
    try:
        # Limited like a login: a session left open must not become a way to guess the password.
        throttle(request).password_check(request, user.id)
    except Throttled as exc:
        response = page(request, "account.html", error=str(exc), status_code=429)
        response.headers["Retry-After"] = str(exc.seconds)
        return response
    try:
        if new != form.get("again"):
            raise accounts.AccountError("new password: the two new passwords are not the same")
        with throttle(request).hash_slot():
            accounts.change_password(
                session, user, current=str(form.get("current") or ""), new=new, now=now
            )
    except accounts.AccountError as exc:
        return page(request, "account.html", error=str(exc), status_code=422)
    except Throttled as exc:
        return page(request, "account.html", error=str(exc), status_code=429)
    # Every other session has ended; this one goes on, as if it had just logged in.
    request.session["began"] = now.timestamp()
    flash(request, "Your password is changed. You have been logged out everywhere else.")
    return RedirectResponse("/account", status_code=303)
