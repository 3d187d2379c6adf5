"""The JSON API fuzzed from its own OpenAPI document (PRODUCT.md, Reliability drills): whatever
a booking system sends, with a valid token, the answer is never a server error, and always
one the document describes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from profiles import examples
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from reminders.interfaces.web.app import create_app
from reminders.services import accounts
from reminders.settings import Settings
from reminders.store.db import session_scope
from reminders.store.migrate import upgrade

pytestmark = pytest.mark.slow  # a fuzzer: a hundred requests and more per operation


def make_app(database_url: str) -> FastAPI:
    return create_app(
        Settings.from_env(
            {
                "REMINDERS_DATABASE_URL": database_url,
                "REMINDERS_SENDING_WINDOW": "00:00-24:00",
                "REMINDERS_SECRET_KEY": "synthetic-test-secret-for-tests-only-0123456789",
            }
        )
    )


# Read at import, as schemathesis needs the operations to parametrize the test; this app only
# serves the document (it never opens its in-memory database). The requests go to `api` below.
schema = schemathesis.openapi.from_asgi("/openapi.json", make_app("sqlite://"))


@dataclass
class Api:
    app: FastAPI
    headers: dict[str, str]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Api:
    """The app on an SQLite database of its own, and a booking system's token."""
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'reminders.db'}"
    upgrade(url)
    app = make_app(url)
    with session_scope(app.state.sessions) as session:
        new = accounts.add_token(session, name="fuzzer", now=datetime.now(UTC), actor="test")
    return Api(app, {"Authorization": f"Bearer {new.secret}"})


@settings(
    max_examples=examples(100),
    derandomize=True,  # the same cases on every run, so CI does not fail by luck
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@schema.parametrize()
def test_no_request_gets_a_server_error(case: schemathesis.Case[Any], api: Api) -> None:
    case.call_and_validate(
        app=api.app,
        headers=api.headers,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )


def test_the_document_describes_only_the_api() -> None:
    paths = set(schema.raw_schema["paths"])
    assert paths == {
        "/api/v1/enrolments",
        "/api/v1/enrolments/{id}",
        "/api/v1/enrolments/{id}/cancel",
        "/api/v1/enrolments/{id}/reminders",
    }
