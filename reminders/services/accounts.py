"""Staff accounts and API tokens: creating them, and checking a password or a token.

Passwords are hashed with argon2id (`argon2-cffi`'s defaults, which follow RFC 9106's
recommendations) and re-hashed on login when those defaults change. API tokens are random and
shown once; only their SHA-256 is stored, which is enough because a token, unlike a password,
has 256 bits of entropy and cannot be guessed from a dictionary.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from reminders.core.parsers import has_control_character, parse_email
from reminders.store import journal, models

MIN_PASSWORD_LENGTH = 12
# A token's name is part of the actor the audit log records for what it does (`actor`), which
# has room for 200 characters.
MAX_TOKEN_NAME = 100

_hasher = PasswordHasher()


class AccountError(ValueError):
    """The account or token cannot be created as asked; the message says what to fix."""


def normalise_email(value: str) -> str:
    return parse_email(value).lower()


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"password: use at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


def add_user(
    session: Session, *, email: str, password: str, role: str, now: datetime, actor: str
) -> models.User:
    if role not in models.ROLES:
        raise AccountError(f"role: {role!r} is not one of {', '.join(models.ROLES)}")
    try:
        address = normalise_email(email)
    except ValueError as exc:
        raise AccountError(f"email: {exc}") from None
    if session.scalar(select(models.User).where(models.User.email == address)) is not None:
        raise AccountError(f"email: {address} already has an account")
    user = models.User(email=address, password_hash=hash_password(password), role=role)
    user.created_at = now
    session.add(user)
    session.flush()
    _audit(session, now, actor, "user-add", user, role=role)
    return user


def find_user(session: Session, email: str) -> models.User | None:
    return session.scalar(
        select(models.User).where(func.lower(models.User.email) == email.strip().lower())
    )


def _existing(session: Session, email: str) -> models.User:
    user = find_user(session, email)
    if user is None:
        raise AccountError(f"email: {email.strip()} has no account")
    return user


def _audit(
    session: Session, now: datetime, actor: str, action: str, user: models.User,
    role: str | None = None,
) -> None:  # fmt: skip
    """Whose account an administrator changed (staff addresses, not patient data)."""
    if role is None:
        journal.audit(session, actor, action, now=now, email=user.email)
    else:
        journal.audit(session, actor, action, now=now, email=user.email, role=role)


def reset_password(
    session: Session, *, email: str, password: str, now: datetime, actor: str
) -> models.User:
    """A new password, which also lifts a login slowdown and ends every session."""
    user = _existing(session, email)
    user.password_hash = hash_password(password)
    user.sessions_valid_after = now
    # The address's login slowdown goes with the old password.
    session.execute(
        delete(models.LoginAttempts).where(models.LoginAttempts.address == user.email.lower())
    )
    _audit(session, now, actor, "password-reset", user)
    return user


def change_password(
    session: Session, user: models.User, *, current: str, new: str, now: datetime
) -> None:
    """A member of staff's own change: the current password first. Ends every other session
    (the caller starts this one afresh)."""
    if not _verify(user.password_hash, current):
        raise AccountError("current password: that is not your current password")
    if new == current:
        raise AccountError("new password: choose one different from the current password")
    user.password_hash = hash_password(new)
    user.sessions_valid_after = now
    _audit(session, now, user.email, "password-change", user)


def new_password() -> str:
    """A password for an administrator to hand over: 16 characters from an alphabet without
    look-alikes (0/O, 1/l/I), in groups of four, about 90 bits."""
    return "-".join("".join(secrets.choice(_READABLE) for _ in range(4)) for _ in range(4))


_READABLE = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def set_disabled(
    session: Session, *, email: str, disabled: bool, now: datetime, actor: str
) -> models.User:
    """Switch an account off (someone who has left: no login, every session ended) or back on
    with the same password."""
    user = _existing(session, email)
    if disabled and user.disabled_at is None:
        _keep_an_admin(session, user)
        user.disabled_at = now
        user.sessions_valid_after = now
        _audit(session, now, actor, "user-disable", user)
    elif not disabled and user.disabled_at is not None:
        user.disabled_at = None
        _audit(session, now, actor, "user-enable", user)
    return user


def set_role(session: Session, *, email: str, role: str, now: datetime, actor: str) -> models.User:
    if role not in models.ROLES:
        raise AccountError(f"role: {role!r} is not one of {', '.join(models.ROLES)}")
    user = _existing(session, email)
    if user.role == role:
        return user
    _keep_an_admin(session, user)
    user.role = role
    _audit(session, now, actor, "user-role", user, role=role)
    return user


def _keep_an_admin(session: Session, leaving: models.User) -> None:
    """Refuse to leave the unit without an administrator who can log in."""
    if leaving.role != "admin" or leaving.disabled_at is not None:
        return
    others = session.scalar(
        select(func.count()).where(
            models.User.role == "admin",
            models.User.disabled_at.is_(None),
            models.User.id != leaving.id,
        )
    )
    if not others:
        raise AccountError(
            f"email: {leaving.email} is the only administrator left; make someone else an "
            "administrator first"
        )


def log_out(session: Session, user: models.User, now: datetime) -> None:
    """End every session of this user, here and on every other computer."""
    user.sessions_valid_after = now
    journal.audit(session, user.email, "logout", now=now)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class NewToken:
    token: models.ApiToken
    secret: str  # shown once, never stored


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def add_token(
    session: Session, *, name: str, now: datetime, actor: str, scope: str = "write"
) -> NewToken:
    if scope not in models.TOKEN_SCOPES:
        raise AccountError(f"scope: {scope!r} is not one of {', '.join(models.TOKEN_SCOPES)}")
    name = name.strip()
    if not name or len(name) > MAX_TOKEN_NAME or has_control_character(name):
        raise AccountError(
            f"name: give the booking system a name of at most {MAX_TOKEN_NAME} characters, "
            "on one line"
        )
    secret = "rmd_" + secrets.token_urlsafe(32)
    token = models.ApiToken(name=name, token_hash=_digest(secret), created_at=now, scope=scope)
    session.add(token)
    session.flush()
    journal.audit(session, actor, "token-add", now=now, token=token.id, scope=scope)
    return NewToken(token, secret)


def revoke_token(session: Session, *, token_id: int, now: datetime, actor: str) -> models.ApiToken:
    """Stop a token working, at once and for good (a booking system gets a new one)."""
    token = session.get(models.ApiToken, token_id)
    if token is None:
        raise AccountError(f"token: there is no token {token_id}")
    if token.revoked_at is None:
        token.revoked_at = now
        journal.audit(session, actor, "token-revoke", now=now, token=token.id)
    return token


def actor(token: models.ApiToken) -> str:
    """Who a token's requests are in the audit log: its id, which names it for good, and its
    name, which people read."""
    return f"api:{token.id}:{token.name}"[:200]


def token_for(session: Session, secret: str, now: datetime) -> models.ApiToken | None:
    """The live token with this secret, or None."""
    token = session.scalar(
        select(models.ApiToken).where(
            models.ApiToken.token_hash == _digest(secret), models.ApiToken.revoked_at.is_(None)
        )
    )
    if token is not None:
        token.last_used_at = now
    return token
