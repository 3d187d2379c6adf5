"""The staff pages in a real browser (headless Chromium): what a booking clerk does in a day.

The screenshots of the enrol page and the patient page in docs/ come from here: run with
REMINDERS_SCREENSHOT_DIR=docs/screenshots to refresh them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from browser import serve
from playwright.sync_api import Page, expect
from processes import CeleryProcess, RedisServer
from staff import ALICE, PASSWORD, add_staff, in_days

from reminders.config import Config
from reminders.core.enrolment import parse_fields
from reminders.interfaces.web.app import create_app
from reminders.services.preview import preview
from reminders.settings import Settings
from reminders.store.db import make_engine, make_sessionmaker
from reminders.store.migrate import upgrade

pytestmark = pytest.mark.browser  # headless Chromium against a live server

# A CI machine busy with other tests can take seconds over a page; waiting longer costs nothing
# when the page is quick.
expect.set_options(timeout=20_000)


@dataclass
class Live:
    url: str
    shots: Path
    settings: Settings


@pytest.fixture
def live(tmp_path: Path, redis_server: RedisServer) -> Iterator[Live]:
    url = f"sqlite:///{tmp_path / 'reminders.db'}"
    upgrade(url)
    engine = make_engine(url)
    add_staff(make_sessionmaker(engine))
    engine.dispose()
    settings = Settings.from_env(
        {
            "REMINDERS_DATABASE_URL": url,
            "REMINDERS_SECRET_KEY": "synthetic-test-secret-for-tests-only-0123456789",
            "REMINDERS_SENDING_WINDOW": "00:00-24:00",
            "REMINDERS_BROKER_URL": redis_server.url,
        }
    )
    shots = Path(os.environ.get("REMINDERS_SCREENSHOT_DIR") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    with serve(create_app(settings)) as address:
        yield Live(address, shots, settings)


@pytest.fixture
def page(chromium: Any, live: Live) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


def expected_timeline(live: Live, fields: dict[str, str]) -> list[Any]:
    """What the preview should list: the same enrolment through the pure core."""
    config = Config.load(live.settings)
    enrolment = parse_fields(
        fields, protocols=config.protocols, default_timezone=config.settings.timezone
    )
    return preview(config, enrolment, datetime.now(UTC)).items


def log_in(page: Page, live: Live) -> None:
    page.goto(f"{live.url}/")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    # Keyboard only: the email field has the focus, Tab reaches the password, Enter sends.
    page.keyboard.type(ALICE)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Upcoming procedures")).to_be_visible()


def test_enrol_with_the_preview_find_reschedule_and_cancel(page: Page, live: Live) -> None:
    fields = {
        "booking_ref": "BK-8001", "name": "Megan Price", "phone": "07911 100070",
        "email": "megan.price@example.org", "procedure": "si-joint-denervation",
        "date": in_days(21).isoformat(), "time": "09:30", "arrival": "08:30",
        "anaesthesia": "sedation",
        "anticoagulant": "Apixaban", "anticoagulant_hold_days": "3",
        "anticoagulant_restart_days": "1",
    }  # fmt: skip
    log_in(page, live)
    page.get_by_role("link", name="Enrol", exact=True).click()
    page.get_by_label("Booking reference").fill("BK-8001")
    page.get_by_label("Patient's full name").fill("Megan Price")
    page.get_by_label("Mobile number").fill("07911 100070")
    page.get_by_label("Email address").fill("megan.price@example.org")
    page.get_by_label("Procedure", exact=True).select_option("si-joint-denervation")
    page.get_by_label("Date", exact=True).fill(in_days(21).isoformat())
    page.get_by_label("Start time").fill("09:30")
    page.get_by_label("Arrival time").fill("08:30")
    page.get_by_label("Anaesthetic").select_option("sedation")
    page.get_by_label("Medicine").fill("Apixaban")
    page.get_by_label("Days to stop before").fill("3")
    page.get_by_label("Days after to restart").fill("1")

    # The preview follows the form without a click: the whole timeline, before saving.
    preview = page.locator("#preview")
    expect(preview).to_contain_text("What Megan Price will receive")
    expect(preview).to_contain_text("Apixaban")
    expect(preview.get_by_role("row")).to_have_count(len(expected_timeline(live, fields)) + 1)
    save = page.get_by_role("button", name="Save and schedule")
    expect(save).to_be_visible()
    page.screenshot(path=live.shots / "enrol.png", full_page=True)

    save.click()
    expect(page.get_by_role("heading", name="Megan Price")).to_be_visible()
    expect(page.get_by_role("status").first).to_contain_text("Enrolled. Every reminder is below.")
    expect(page.get_by_role("cell", name="scheduled").first).to_be_visible()
    page.screenshot(path=live.shots / "patient.png", full_page=True)

    # Found again from the search box on every page.
    page.get_by_role("link", name="Upcoming", exact=True).click()
    search = page.get_by_placeholder("Name, phone or booking ref")
    search.fill("07911100070")
    search.press("Enter")
    page.get_by_role("link", name="Megan Price").click()

    page.get_by_label("New date").fill(in_days(28).isoformat())
    page.get_by_label("New start time").fill("14:00")
    page.get_by_role("button", name="Reschedule").click()
    expect(page.get_by_role("status").first).to_contain_text("Moved")
    expect(page.locator("dl.facts")).to_contain_text("2pm")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel procedure").click()
    cancelled = "Cancelled. The patient is told, and nothing more of its plan will be sent."
    expect(page.get_by_text(cancelled)).to_be_visible()
    expect(page.locator("dl.facts")).to_contain_text("cancelled")
    expect(page.get_by_role("button", name="Reschedule")).to_have_count(0)


def test_import_a_csv_with_a_bad_row(page: Page, live: Live, tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "REMINDERS_DATABASE_URL": live.settings.database_url,
        "REMINDERS_BROKER_URL": live.settings.broker_url or "",
        "REMINDERS_SECRET_KEY": "synthetic-test-secret-for-tests-only-0123456789",
    }
    worker = CeleryProcess("worker", env, tmp_path / "worker.log", "--concurrency", "1").start()
    try:
        _import_a_csv_with_a_bad_row(page, live, tmp_path)
    finally:
        worker.stop()


def _import_a_csv_with_a_bad_row(page: Page, live: Live, tmp_path: Path) -> None:
    day = in_days(3).isoformat()  # within the week the upcoming page shows
    csv_file = tmp_path / "tuesday.csv"
    csv_file.write_text(
        "booking_ref,name,phone,procedure,date,time\n"
        f"BK-8101,Owen Hughes,07911 100080,sacroplasty,{day},09:00\n"
        f"BK-8102,Siân Jones,07911 100081,sacroplasty,{day},10:00\n"
        f"BK-8103,Rhys Evans,07911 100082,sacroplasty,{day},25:00\n",
        encoding="utf-8",
    )
    log_in(page, live)
    page.get_by_role("link", name="Import CSV").click()
    page.get_by_label("CSV file").set_input_files(csv_file)
    page.get_by_role("button", name="Import").click()
    # The report page refreshes itself until the import is done.
    expect(page.get_by_text("2 rows landed, 1 refused")).to_be_visible()
    expect(page.get_by_role("cell", name="BK-8103")).to_be_visible()
    expect(page.locator("table")).to_contain_text("time:")
    page.get_by_role("link", name="Upcoming", exact=True).click()
    expect(page.get_by_role("link", name="Siân Jones")).to_be_visible()
