"""Staff at the web app, for tests: named people (alice works on bookings, bob leads the unit),
and a client that logs in and fills in forms the way a browser does, CSRF token included."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy.orm import Session, sessionmaker

from reminders.services import accounts
from reminders.store.db import session_scope

ALICE = "alice@example.org"
BOB = "bob@example.org"
PASSWORD = "synthetic-password-1"  # synthetic, for tests only

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def add_staff(factory: sessionmaker[Session]) -> None:
    with session_scope(factory) as session:
        now = datetime.now(UTC)
        accounts.add_user(
            session, email=ALICE, password=PASSWORD, role="staff", now=now, actor="test"
        )
        accounts.add_user(
            session, email=BOB, password=PASSWORD, role="admin", now=now, actor="test"
        )


def in_days(days: int) -> date:
    return (datetime.now(UTC) + timedelta(days=days)).date()


class Staff:
    """A browser's view of the app: cookies kept, forms posted with their token."""

    def __init__(self, app: FastAPI) -> None:
        self.client = TestClient(app, follow_redirects=False)

    def token(self, path: str = "/login") -> str:
        match = _CSRF.search(self.client.get(path).text)
        assert match, f"no CSRF token on {path}"
        return match.group(1)

    def login(self, email: str = ALICE, password: str = PASSWORD) -> Response:
        data = {"email": email, "password": password, "csrf_token": self.token(), "next": "/"}
        return self.client.post("/login", data=data)

    def post(self, path: str, data: dict[str, str], *, page: str = "/enrol") -> Response:
        return self.client.post(path, data={**data, "csrf_token": self.token(page)})

    def get(self, path: str) -> Response:
        return self.client.get(path)

    def follow(self, response: Response) -> Response:
        assert response.status_code == 303, response.text[:500]
        return self.client.get(response.headers["location"])
