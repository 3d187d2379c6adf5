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
from datetime import datetime, timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from reminders import models
from reminders.enrolment import parse_email

MIN_PASSWORD_LENGTH = 12
# Failed logins allowed in a row before each further attempt must wait, and the longest wait.
FREE_ATTEMPTS = 5
MAX_WAIT = timedelta(minutes=15)

_hasher = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Verified against when the email is unknown, so that a wrong address takes as long to
    refuse as a wrong password and does not tell an attacker which addresses have accounts."""
    return _hasher.hash(secrets.token_urlsafe(16))


class AccountError(ValueError):
    """The account or token cannot be created as asked; the message says what to fix."""


class TooManyAttempts(Exception):
    def __init__(self, wait: timedelta) -> None:
        self.seconds = max(1, int(wait.total_seconds() + 0.999))
        super().__init__(
            f"Too many failed attempts. Try again in {self.seconds} seconds, "
            "or ask an administrator to reset your password."
        )


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
    session.add(
        models.AuditEntry(at=now, actor=actor, action="user-add", detail=f'{{"role": "{role}"}}')
    )
    return user


def reset_password(
    session: Session, *, email: str, password: str, now: datetime, actor: str
) -> models.User:
    """A new password, which also lifts a login slowdown and ends every session."""
    user = session.scalar(
        select(models.User).where(func.lower(models.User.email) == email.strip().lower())
    )
    if user is None:
        raise AccountError(f"email: {email.strip()} has no account")
    user.password_hash = hash_password(password)
    user.failed_logins = 0
    user.last_failed_at = None
    user.sessions_valid_after = now
    session.add(models.AuditEntry(at=now, actor=actor, action="password-reset"))
    return user


def wait_before_next_attempt(user: models.User, now: datetime) -> timedelta:
    """How long this account must wait before a password is checked again: nothing for the
    first few failures, then doubling from one second up to MAX_WAIT."""
    if user.failed_logins < FREE_ATTEMPTS or user.last_failed_at is None:
        return timedelta(0)
    wait = min(timedelta(seconds=2 ** (user.failed_logins - FREE_ATTEMPTS)), MAX_WAIT)
    return max(timedelta(0), user.last_failed_at + wait - now)


def authenticate(session: Session, email: str, password: str, now: datetime) -> models.User | None:
    """The user these credentials belong to, or None. Raises `TooManyAttempts` without
    checking the password while the account must wait."""
    address = email.strip().lower()
    user = session.scalar(select(models.User).where(func.lower(models.User.email) == address))
    if user is None:
        _verify(_dummy_hash(), password)
        return None
    wait = wait_before_next_attempt(user, now)
    if wait > timedelta(0):
        raise TooManyAttempts(wait)
    if not _verify(user.password_hash, password):
        user.failed_logins += 1
        user.last_failed_at = now
        return None
    user.failed_logins = 0
    user.last_failed_at = None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


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


def add_token(session: Session, *, name: str, now: datetime, actor: str) -> NewToken:
    name = name.strip()
    if not name or len(name) > 200:
        raise AccountError("name: give the booking system a name of at most 200 characters")
    secret = "rmd_" + secrets.token_urlsafe(32)
    token = models.ApiToken(name=name, token_hash=_digest(secret), created_at=now)
    session.add(token)
    session.flush()
    session.add(models.AuditEntry(at=now, actor=actor, action="token-add", detail=None))
    return NewToken(token, secret)


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
