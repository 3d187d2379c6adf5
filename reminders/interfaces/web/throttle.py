"""Limits on password checks, per client and for the whole web process (the `limits` library),
and on how many argon2 hashes run at once.

Each argon2 check takes 64 MiB and a good part of a second of a core: unthrottled, 40 parallel
logins took the web process from 123 MiB to 1 GiB and the API's answers from 0.3 s to 30 s.
The counts are kept in the web process (limits' memory storage): several web processes each
allow as much, which the limits below allow for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fastapi import Request
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

# A hospital's staff often share one address to the outside (NAT): the per-client limit allows
# a ward logging in together at the start of a shift.
LOGIN_PER_CLIENT = parse("30/minute")
LOGIN_EVERYONE = parse("120/minute")
# The current-password check on /account, per member of staff: a stolen session must not
# become a way to guess the password.
PASSWORD_CHECK_PER_USER = parse("5/15 minutes")
# argon2 hashes at once in this process (64 MiB each), and how long a login waits for one.
HASHES_AT_ONCE = 4
HASH_WAIT_SECONDS = 10.0


class Throttled(Exception):
    def __init__(self, seconds: int) -> None:
        self.seconds = max(1, seconds)
        super().__init__(f"Too many attempts from here. Try again in {self.seconds} seconds.")


@dataclass
class Throttle:
    limiter: MovingWindowRateLimiter
    hashing: threading.BoundedSemaphore

    @classmethod
    def in_memory(cls) -> Throttle:
        return cls(
            MovingWindowRateLimiter(MemoryStorage()), threading.BoundedSemaphore(HASHES_AT_ONCE)
        )

    def hit(self, limit: RateLimitItem, *keys: str) -> None:
        """Count one attempt against `limit` for `keys`, or raise Throttled if it is used up."""
        if not self.limiter.hit(limit, *keys):
            stats = self.limiter.get_window_stats(limit, *keys)
            raise Throttled(int(stats.reset_time - time.time()) + 1)

    def login(self, request: Request) -> None:
        self.hit(LOGIN_EVERYONE, "login")
        self.hit(LOGIN_PER_CLIENT, "login", client(request))

    def password_check(self, request: Request, user_id: int) -> None:
        self.hit(LOGIN_PER_CLIENT, "login", client(request))
        self.hit(PASSWORD_CHECK_PER_USER, "password-check", str(user_id))

    @contextmanager
    def hash_slot(self) -> Iterator[None]:
        """One of HASHES_AT_ONCE places to run argon2; Throttled if none frees in time."""
        if not self.hashing.acquire(timeout=HASH_WAIT_SECONDS):
            raise Throttled(5)
        try:
            yield
        finally:
            self.hashing.release()


def client(request: Request) -> str:
    """The client's address, as uvicorn gives it (behind a proxy, `--proxy-headers` with
    `--forwarded-allow-ips` makes it the address the proxy saw)."""
    return request.client.host if request.client else "unknown"


def throttle(request: Request) -> Throttle:
    found: Throttle = request.app.state.throttle
    return found
