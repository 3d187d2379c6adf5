"""Logging in: the password check, and the slowdown that makes guessing a password slow.

The check runs in three steps so that argon2 (64 MiB and a good part of a second) never runs
while a database connection is held: `claim` takes an attempt in one committed statement,
`verify` hashes with no connection, `settle` records what happened.

An attempt is taken before the password is checked, by one conditional UPDATE on the address's
row (`login_attempts`): parallel guesses cannot slip past the slowdown between a check and a
write, because the check is the write. After FREE_ATTEMPTS attempts without a good login, each
further attempt waits twice as long as the last, up to MAX_WAIT. Every address typed is counted
the same way, with or without an account, in the same time and the same words.

A stranger who knows a colleague's address can keep that address slowed down, but not the
colleague out: a browser that has logged in to the account before carries a signed device
cookie (interfaces/web/auth.py) and is not held by the address's slowdown (OWASP's "device
cookies"); it is still limited per client like any other.
"""

from __future__ import annotations

import secrets
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Case, ColumnElement, case, delete, literal, null, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from reminders.services.accounts import find_user
from reminders.store import journal, models
from reminders.store.base import UTCDateTime
from reminders.store.db import session_scope

# Attempts allowed in a row before each further attempt must wait, and the longest wait.
FREE_ATTEMPTS = 5
MAX_WAIT = timedelta(minutes=15)
# An address's count is forgotten this long after its last attempt (retention purge).
FORGET_AFTER = timedelta(days=1)

_hasher = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Verified against when the address has no usable account, so that it takes as long to
    refuse as a wrong password."""
    return _hasher.hash(secrets.token_urlsafe(16))


class TooManyAttempts(Exception):
    def __init__(self, wait: timedelta) -> None:
        self.seconds = max(1, int(wait.total_seconds() + 0.999))
        super().__init__(
            f"Too many failed attempts. Try again in {self.seconds} seconds, "
            "or ask an administrator to reset your password."
        )


@dataclass(frozen=True)
class Claim:
    """An attempt taken: what to check the password against, read before the hash runs."""

    address: str
    user_id: int | None  # None: no account, or a switched-off one (refused all the same)
    password_hash: str


def wait_after(attempts: int) -> timedelta:
    """How long the address waits after its `attempts`-th attempt in a row."""
    if attempts < FREE_ATTEMPTS:
        return timedelta(0)
    return min(timedelta(seconds=2 ** min(attempts - FREE_ATTEMPTS, 20)), MAX_WAIT)


def claim(session: Session, email: str, now: datetime, *, trusted_device: bool = False) -> Claim:
    """Take an attempt for `email`, or raise TooManyAttempts without checking anything.
    Commit before hashing: the row is locked until then."""
    address = email.strip().lower()[:320]
    if not trusted_device:
        _take(session, address, now)
    user = find_user(session, address)
    if user is None or user.disabled_at is not None:
        return Claim(address, None, _dummy_hash())
    return Claim(address, user.id, user.password_hash)


def verify(claim: Claim, password: str) -> bool:
    """The argon2 check, with no database connection held. False for an address without an
    account, after the same work."""
    try:
        good: bool = _hasher.verify(claim.password_hash, password)
    except (VerificationError, InvalidHashError):
        good = False
    return good and claim.user_id is not None


def settle(
    session: Session, claim: Claim, password: str, good: bool, now: datetime
) -> models.User | None:
    """Record the attempt: the user, after a good password, or None."""
    user = session.get(models.User, claim.user_id) if good and claim.user_id else None
    if user is None or user.disabled_at is not None or user.password_hash != claim.password_hash:
        journal.audit(session, "anonymous", "login-failed", now=now)
        return None
    forget(session, claim.address)
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    journal.audit(session, user.email, "login", now=now)
    return user


def log_in(
    factory: sessionmaker[Session], email: str, password: str, now: datetime, *,
    trusted_device: bool = False, hashing: AbstractContextManager[object] | None = None,
) -> models.User | None:  # fmt: skip
    """The three steps: the user these credentials belong to, or None; raises TooManyAttempts.
    `hashing` is held around the hash (the web app's limit on hashes at once)."""
    with session_scope(factory) as session:  # committed before the hash: no lock, no connection
        taken = claim(session, email, now, trusted_device=trusted_device)
    with hashing or nullcontext():
        good = verify(taken, password)
    with session_scope(factory) as session:
        return settle(session, taken, password, good, now)


def forget(session: Session, address: str) -> None:
    """Lift an address's slowdown: a good login, or an administrator's password reset."""
    session.execute(
        delete(models.LoginAttempts).where(models.LoginAttempts.address == address.lower())
    )


def purge(session: Session, now: datetime) -> None:
    """Forget addresses nobody has tried for a day (they are typed by anyone)."""
    session.execute(
        delete(models.LoginAttempts).where(models.LoginAttempts.last_at < now - FORGET_AFTER)
    )


def attempts_by_address(session: Session) -> dict[str, int]:
    """Attempts since the last good login, for the staff list."""
    table = models.LoginAttempts
    return {a: n for a, n in session.execute(select(table.address, table.attempts))}


def _take(session: Session, address: str, now: datetime) -> None:
    table = models.LoginAttempts
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(table)
        .values(address=address, attempts=0, last_at=now)
        .on_conflict_do_nothing(index_elements=["address"])
    )
    taken = session.execute(
        update(table)
        .where(
            table.address == address, or_(table.locked_until.is_(None), table.locked_until <= now)
        )
        .values(attempts=table.attempts + 1, last_at=now, locked_until=_locked_until(now))
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount == 0:  # type: ignore[attr-defined]
        row = session.get(table, address)
        locked_until = row.locked_until if row and row.locked_until else now
        raise TooManyAttempts(locked_until - now)


def _locked_until(now: datetime) -> Case[datetime]:
    """`locked_until` for the attempt being taken, from the count it brings the row to,
    in the same statement (so that no other attempt can come between)."""
    table = models.LoginAttempts
    taken = table.attempts + 1

    def at(wait: timedelta) -> ColumnElement[datetime]:
        return literal(now + wait, UTCDateTime())

    never: ColumnElement[datetime] = null().cast(UTCDateTime())  # no wait yet
    whens = [(taken < FREE_ATTEMPTS, never)]
    whens += [(taken == n, at(wait_after(n))) for n in range(FREE_ATTEMPTS, FREE_ATTEMPTS + 10)]
    return case(*whens, else_=at(MAX_WAIT))
