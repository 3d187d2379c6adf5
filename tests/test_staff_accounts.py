"""Who may use the service, from the staff pages: an administrator adds, resets, switches off
and promotes accounts and revokes API tokens; everyone changes their own password; an upload
that a restart cut short says so instead of spinning for ever."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from staff import ALICE, BOB, PASSWORD, Staff

from reminders.store import models
from reminders.store.db import session_scope

_SECRET = re.compile(r'<code id="secret"[^>]*>([^<]+)</code>')


def shown_secret(html: str) -> str:
    match = _SECRET.search(html)
    assert match, "no secret on the page"
    return match.group(1)


def account_id(factory: sessionmaker[Session], email: str) -> int:
    with session_scope(factory) as session:
        found = session.scalar(select(models.User.id).where(models.User.email == email))
        assert found is not None
        return found


def audit_actions(factory: sessionmaker[Session]) -> list[tuple[str, str]]:
    with session_scope(factory) as session:
        entries = session.scalars(select(models.AuditEntry).order_by(models.AuditEntry.id))
        return [(entry.actor, entry.action) for entry in entries]


def test_only_administrators_reach_the_staff_accounts(alice: Staff, bob: Staff) -> None:
    assert alice.get("/admin/staff").status_code == 403
    assert "Staff accounts" not in alice.get("/").text  # not offered in the menu either
    page = bob.get("/admin/staff")
    assert page.status_code == 200 and ALICE in page.text and BOB in page.text
    refused = alice.post("/admin/staff", {"email": "eve@example.org", "role": "admin"}, page="/")
    assert refused.status_code == 403


def test_an_added_account_logs_in_with_the_password_shown_once(
    app: FastAPI, bob: Staff, factory: sessionmaker[Session]
) -> None:
    response = bob.post(
        "/admin/staff", {"email": "Carys.Lloyd@Example.org", "role": "staff"}, page="/admin/staff"
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert "carys.lloyd@example.org can now log in" in response.text
    password = shown_secret(response.text)
    with session_scope(factory) as session:  # only its hash is kept
        stored = session.scalar(
            select(models.User.password_hash).where(models.User.email == "carys.lloyd@example.org")
        )
        assert stored is not None and password not in stored
    carys = Staff(app)
    assert carys.login("carys.lloyd@example.org", password).status_code == 303
    assert carys.get("/").status_code == 200
    assert (BOB, "user-add") in audit_actions(factory)


def test_a_bad_address_is_refused_beside_the_form_and_kept_to_correct(bob: Staff) -> None:
    response = bob.post("/admin/staff", {"email": "carys@", "role": "staff"}, page="/admin/staff")
    assert response.status_code == 422
    assert 'role="alert"' in response.text and "email:" in response.text
    assert 'value="carys@"' in response.text
    again = bob.post("/admin/staff", {"email": ALICE, "role": "staff"}, page="/admin/staff")
    assert again.status_code == 422 and f"{ALICE} already has an account" in again.text


def test_switching_an_account_off_ends_its_sessions_at_once(
    app: FastAPI, alice: Staff, bob: Staff, factory: sessionmaker[Session]
) -> None:
    assert alice.get("/").status_code == 200
    target = f"/admin/staff/{account_id(factory, ALICE)}/disabled"
    switched = bob.follow(bob.post(target, {"disabled": "yes"}, page="/admin/staff"))
    assert f"{ALICE} is switched off" in switched.text and "switched off" in switched.text
    assert alice.get("/").status_code == 303  # the open session is over
    # ... and the password no longer works, refused in the same words as a wrong one.
    refused = Staff(app).login(ALICE)
    assert refused.status_code == 401 and "email address or password is not right" in refused.text

    bob.post(target, {"disabled": "no"}, page="/admin/staff")
    assert Staff(app).login(ALICE).status_code == 303
    assert [a for _, a in audit_actions(factory) if a.startswith("user-")][-2:] == [
        "user-disable",
        "user-enable",
    ]


def test_the_last_administrator_cannot_be_switched_off_or_made_staff(
    bob: Staff, factory: sessionmaker[Session]
) -> None:
    me = account_id(factory, BOB)
    for path, data in ((f"/admin/staff/{me}/disabled", {"disabled": "yes"}),
                       (f"/admin/staff/{me}/role", {"role": "staff"})):  # fmt: skip
        page = bob.follow(bob.post(path, data, page="/admin/staff"))
        assert "the only administrator left" in page.text
    assert bob.get("/admin/staff").status_code == 200  # still an administrator, still in


def test_a_reset_password_replaces_the_old_one_everywhere(
    app: FastAPI, alice: Staff, bob: Staff, factory: sessionmaker[Session]
) -> None:
    response = bob.post(
        f"/admin/staff/{account_id(factory, ALICE)}/password", {}, page="/admin/staff"
    )
    password = shown_secret(response.text)
    assert response.headers["cache-control"] == "no-store"
    assert alice.get("/").status_code == 303
    assert Staff(app).login(ALICE, PASSWORD).status_code == 401
    assert Staff(app).login(ALICE, password).status_code == 303


def test_changing_your_own_password_keeps_you_in_and_logs_out_the_rest(
    app: FastAPI, alice: Staff
) -> None:
    elsewhere = Staff(app)
    elsewhere.login()
    new = "a-new-synthetic-password-2"
    wrong = alice.post("/account", {"current": "not-it", "new": new, "again": new}, page="/account")
    assert wrong.status_code == 422 and "not your current password" in wrong.text
    typo = alice.post(
        "/account", {"current": PASSWORD, "new": new, "again": new + "x"}, page="/account"
    )
    assert typo.status_code == 422 and "not the same" in typo.text
    done = alice.follow(
        alice.post("/account", {"current": PASSWORD, "new": new, "again": new}, page="/account")
    )
    assert "Your password is changed" in done.text
    assert alice.get("/").status_code == 200
    assert elsewhere.get("/").status_code == 303
    assert Staff(app).login(ALICE, PASSWORD).status_code == 401
    assert Staff(app).login(ALICE, new).status_code == 303


def test_a_token_made_on_the_page_opens_the_api_until_revoked(
    bob: Staff, factory: sessionmaker[Session]
) -> None:
    response = bob.post("/admin/tokens", {"name": "Theatre booking"}, page="/admin/staff")
    secret = shown_secret(response.text)
    api = bob.client  # any client: the API goes by the bearer token, not the cookie
    headers = {"Authorization": f"Bearer {secret}"}
    query = {"booking_ref": "BK-1"}
    assert api.get("/api/v1/enrolments", params=query, headers=headers).status_code == 200
    with session_scope(factory) as session:
        token_id = session.scalar(select(models.ApiToken.id))
    page = bob.follow(bob.post(f"/admin/tokens/{token_id}/revoke", {}, page="/admin/staff"))
    assert "The token for Theatre booking no longer works" in page.text
    assert api.get("/api/v1/enrolments", params=query, headers=headers).status_code == 401
    assert (BOB, "token-revoke") in audit_actions(factory)


def test_an_upload_cut_short_by_a_restart_says_so_and_how_to_finish(
    alice: Staff, factory: sessionmaker[Session]
) -> None:
    # What a web process that ended part-way through an upload leaves behind: a run still
    # "running" whose last batch landed minutes ago, and one that is busy now.
    now = datetime.now(UTC)
    with session_scope(factory) as session:
        quiet = models.ImportRun(
            filename="monday.csv", started_by=ALICE, started_at=now - timedelta(minutes=10),
            heartbeat_at=now - timedelta(minutes=3), total_rows=2000, done_rows=500,
            landed=498, refused=2,
        )  # fmt: skip
        busy = models.ImportRun(
            filename="tuesday.csv", started_by=ALICE, started_at=now - timedelta(seconds=20),
            heartbeat_at=now - timedelta(seconds=1), total_rows=2000, done_rows=1000,
        )  # fmt: skip
        session.add_all([quiet, busy])
        session.flush()
        quiet_id, busy_id = quiet.id, busy.id
    stopped = alice.get(f"/import/{quiet_id}").text
    assert "This import stopped after 500 of 2000 rows" in stopped
    assert "498 landed and 2 were refused" in stopped and "import the same file again" in stopped
    assert 'http-equiv="refresh"' not in stopped  # nothing left to wait for
    running = alice.get(f"/import/{busy_id}").text
    assert "Importing: 1000 of 2000 rows" in running and 'http-equiv="refresh"' in running
    listed = alice.get("/import").text
    assert "stopped after 500 of 2000 rows" in listed and "running, 1000 of 2000 rows" in listed
