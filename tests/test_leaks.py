"""What leaves the service besides the pages themselves: files opened in a spreadsheet, the
session cookie, headers and caching. Synthetic data only."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy.orm import Session, sessionmaker
from staff import Staff, in_days

from reminders.interfaces.web.app import create_app
from reminders.services.csvfile import neutralise, restore
from reminders.settings import Settings
from reminders.store import models
from reminders.store.db import session_scope

FORMULAS = ['=HYPERLINK("http://evil.example","x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]


def _refused_run(factory: sessionmaker[Session], row: dict[str, str]) -> int:
    with session_scope(factory) as session:
        run = models.ImportRun(
            filename="monday.csv", started_by="alice@example.org", started_at=datetime.now(UTC),
            status="finished",
        )  # fmt: skip
        session.add(run)
        session.flush()
        session.add(
            models.ImportRefusal(
                run_id=run.id,
                line=2,
                booking_ref="BK-1",
                reason="phone: not a mobile",
                row=json.dumps(row),
            )
        )
        return run.id


def test_the_refused_rows_file_never_hands_a_spreadsheet_a_formula(
    alice: Staff, factory: sessionmaker[Session]
) -> None:
    row = {"booking_ref": "BK-1", "name": FORMULAS[0], "phone": "+44 113 496 0000",
           "notes": "-", **{f"x{n}": f for n, f in enumerate(FORMULAS)}}  # fmt: skip
    run_id = _refused_run(factory, row)
    text = alice.get(f"/import/{run_id}/errors.csv").text
    header, cells = list(csv.reader(io.StringIO(text)))
    written = dict(zip(header, cells, strict=True))
    for column, value in row.items():
        assert written[column] == "'" + value if value[0] in "=+-@\t\r" else value
        assert not written[column].startswith(("=", "+", "-", "@", "\t", "\r"))


@pytest.mark.parametrize("value", [*FORMULAS, "Megan Price", "'quoted", "07911 100001"])
def test_a_neutralised_cell_reads_back_as_it_was(value: str) -> None:
    assert restore(neutralise(value)) == value


# --- the session cookie --------------------------------------------------------------------


def session_cookie(staff: Staff) -> str:
    """What the signed (not encrypted) session cookie carries: readable by anyone who sees it."""
    value = staff.client.cookies["reminders_session"]
    data = value.split(".")[0]
    return base64.b64decode(data + "=" * (-len(data) % 4)).decode()


def test_flash_messages_carry_no_patient_data_in_the_session_cookie(alice: Staff) -> None:
    seen: list[str] = []

    def step(response: Response) -> Response:
        assert response.status_code == 303, response.text[:300]
        seen.append(session_cookie(alice))
        return alice.follow(response)

    # A late enrolment with a blood-thinner plan that cannot be kept: warnings as well.
    form = {
        "booking_ref": "BK-7001", "name": "Megan Price", "phone": "07911 100050",
        "procedure": "si-joint-denervation", "date": in_days(2).isoformat(), "time": "09:30",
        "anticoagulant": "Warfarin", "anticoagulant_hold_days": "5",
        "anticoagulant_restart_days": "0", "action": "save",
    }  # fmt: skip
    page = step(alice.post("/enrol", form))
    assert "Enrolled." in page.text and "attention: see the list on this page" in page.text
    here = str(page.url.path)
    step(alice.post(f"{here}/reschedule", {"date": in_days(3).isoformat(), "time": "10:00"},
                    page=here))  # fmt: skip
    step(alice.post(f"{here}/cancel", {}, page=here))
    step(alice.post(f"{here}/cancel", {}, page=here))  # again: refused
    step(alice.post(f"{here}/reschedule", {"date": in_days(4).isoformat(), "time": "10:00"},
                    page=here))  # fmt: skip
    assert any('"flash"' in cookie for cookie in seen)
    for cookie in seen:
        for patient_data in ("Megan", "Price", "BK-7001", "7911", "100050", "Warfarin"):
            assert patient_data not in cookie, cookie


# --- headers and caching -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/login", "/", "/enrol", "/import", "/search", "/healthz"])
def test_every_answer_carries_the_security_headers_and_is_not_cached(
    alice: Staff, path: str
) -> None:
    response = alice.get(path)
    headers = response.headers
    csp = headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert "script-src 'nonce-" in csp and "unsafe-inline" not in csp.split("style-src")[0]
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["cache-control"] == "no-store"
    assert "strict-transport-security" not in headers  # served over plain HTTP here


def test_scripts_run_only_with_the_nonce_of_their_response(alice: Staff) -> None:
    first, second = alice.get("/enrol"), alice.get("/enrol")
    nonces = []
    for response in (first, second):
        nonce = re.search(r"'nonce-([^']+)'", response.headers["content-security-policy"])
        assert nonce is not None
        assert f'<script nonce="{nonce.group(1)}">' in response.text
        assert "<script>" not in response.text and "onclick=" not in response.text
        nonces.append(nonce.group(1))
    assert nonces[0] != nonces[1]


def test_downloads_and_refusals_carry_them_too(
    alice: Staff, factory: sessionmaker[Session]
) -> None:
    run_id = _refused_run(factory, {"booking_ref": "BK-1", "name": "Megan Price"})
    download = alice.get(f"/import/{run_id}/errors.csv")
    assert download.headers["cache-control"] == "no-store"
    assert download.headers["x-content-type-options"] == "nosniff"
    too_big = alice.client.post("/login", content=b"x" * 20_000)
    assert too_big.status_code == 413 and too_big.headers["cache-control"] == "no-store"


def test_hsts_when_the_service_is_published_over_https(web_settings: Settings) -> None:
    settings = web_settings.model_copy(update={"public_url": "https://reminders.example.org"})
    app = create_app(settings)
    try:
        response = TestClient(app).get("/login")
    finally:
        app.state.sessions.kw["bind"].dispose()
    assert response.headers["strict-transport-security"].startswith("max-age=31536000")


def test_a_search_puts_no_patient_data_in_the_address(alice: Staff) -> None:
    form = re.search(r'<form[^>]*action="/search"[^>]*>', alice.get("/").text)
    assert form is not None and 'method="post"' in form.group(0)
    # An old bookmark with a name in it shows the empty form, not a search.
    page = alice.get("/search?q=Megan+Price").text
    assert "found for" not in page and "Megan Price" not in page


# --- the idle timeout ------------------------------------------------------------------------


def test_every_page_a_user_opens_starts_the_idle_clock_again(alice: Staff) -> None:
    """The session cookie expires after IDLE; it must be signed afresh (and so given a new
    age) by each request, not only when the session changed, or a busy user is logged out
    half an hour after logging in."""
    for path in ("/", "/enrol", "/attention"):
        cookie = alice.get(path).headers.get("set-cookie", "")
        assert cookie.startswith("reminders_session=") and "Max-Age=1800" in cookie, path
    assert alice.get("/").status_code == 200
