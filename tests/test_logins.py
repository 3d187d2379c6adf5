"""Guessing passwords, and keeping others out: the per-address slowdown is one atomic statement,
behaves the same for addresses without an account, and cannot keep a colleague out of their
own account; per-client and overall limits turn a flood away before any hashing; the
current-password check on /account is limited too."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from fastapi import FastAPI
from limits import parse
from sqlalchemy.orm import Session, sessionmaker
from staff import ALICE, PASSWORD, Staff

from reminders.interfaces.web import throttle
from reminders.interfaces.web.deps import get_now
from reminders.services import logins
from reminders.store.db import session_scope


def test_parallel_guesses_cannot_slip_past_the_slowdown(factory: sessionmaker[Session]) -> None:
    """Sixty guesses at once: before, each read the count before any wrote it, and all were
    checked; now the count is taken in one conditional UPDATE, so only the free ones are."""
    now = datetime.now(UTC)

    def guess(_: int) -> bool:
        try:
            with session_scope(factory) as session:
                logins.claim(session, ALICE, now)
        except logins.TooManyAttempts:
            return False
        return True

    with ThreadPoolExecutor(12) as pool:
        taken = list(pool.map(guess, range(60)))
    assert taken.count(True) == logins.FREE_ATTEMPTS


def test_an_address_without_an_account_is_slowed_down_in_the_same_words(app: FastAPI) -> None:
    # The clock stands still: on a busy machine, a second spent hashing would end the wait.
    still = datetime.now(UTC)
    app.dependency_overrides[get_now] = lambda: still
    real, made_up = Staff(app), Staff(app)
    for _ in range(logins.FREE_ATTEMPTS):
        assert real.login(password="not-the-password").status_code == 401
        assert made_up.login(email="nobody@example.org").status_code == 401
    refused_real = real.login(password="not-the-password")
    refused_made_up = made_up.login(email="nobody@example.org")
    assert refused_real.status_code == refused_made_up.status_code == 429
    assert "Too many failed attempts. Try again in 1 seconds" in refused_real.text
    assert "Too many failed attempts. Try again in 1 seconds" in refused_made_up.text


def test_a_stranger_cannot_keep_a_colleague_out_of_their_account(app: FastAPI) -> None:
    alices_pc = Staff(app)
    assert alices_pc.login().status_code == 303  # alice has logged in here before
    alices_pc.post("/logout", {}, page="/")
    stranger = Staff(app)
    for _ in range(logins.FREE_ATTEMPTS + 3):
        stranger.login(password="not-the-password")
    assert stranger.login().status_code == 429  # the address is slowed down for strangers
    assert alices_pc.login().status_code == 303  # but not on alice's own computer
    assert alices_pc.get("/").status_code == 200


def test_a_flood_from_one_client_is_refused_before_any_password_is_checked(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(throttle, "LOGIN_PER_CLIENT", parse("3/minute"))
    client = Staff(app)
    for n in range(3):
        assert client.login(email=f"guess-{n}@example.org").status_code == 401
    refused = client.login()  # even the right password: nothing is checked
    assert refused.status_code == 429
    assert "Too many attempts from here. Try again in" in refused.text
    assert 1 <= int(refused.headers["retry-after"]) <= 60


def test_the_whole_web_process_takes_only_so_many_logins_a_minute(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(throttle, "LOGIN_EVERYONE", parse("2/minute"))
    assert Staff(app).login(email="one@example.org").status_code == 401
    assert Staff(app).login(email="two@example.org").status_code == 401
    assert Staff(app).login().status_code == 429


def test_the_current_password_check_on_the_account_page_is_limited(alice: Staff) -> None:
    def change(current: str) -> int:
        data = {"current": current, "new": "a-new-password-9", "again": "a-new-password-9"}
        return alice.post("/account", data, page="/account").status_code

    limit = throttle.PASSWORD_CHECK_PER_USER.amount
    assert [change("a-wrong-guess-0") for _ in range(limit)] == [422] * limit
    assert change(PASSWORD) == 429  # the right one too: nothing is checked now
