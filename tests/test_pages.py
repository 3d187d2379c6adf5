"""The staff pages through the real app: who may see what, CSRF, login slowdown, and what a
booking clerk does: enrol with a preview, find, reschedule, cancel, deal with the list."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

from factories import make_full_enrolment
from fastapi import FastAPI
from processes import CeleryProcess, wait_for
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from staff import ALICE, BOB, PASSWORD, Staff, in_days

from reminders.core.enrolment import FIELDS, SCHEMA
from reminders.interfaces.web.deps import get_now
from reminders.services import logins, planning
from reminders.store import models
from reminders.store.db import session_scope

# Routes that answer without a staff login, each for its own reason (PRODUCT.md, Contracts).
PUBLIC = {
    "/login": "the login form itself",
    "/healthz": "probes",
    "/metrics": "Prometheus",
    "/openapi.json": "the API's description",
    "/webhooks/twilio/status": "Twilio, signed",
    "/webhooks/twilio/inbound": "Twilio, signed",
    "/unsubscribe/{value}": "a signed link in an email",
}


def every_route(app: FastAPI) -> list[Any]:
    """Each route with its full path; FastAPI 0.13x+ keeps included routers as wrappers."""
    routes: list[Any] = []
    for route in app.routes:
        expand = getattr(route, "effective_route_contexts", None)
        routes.extend(expand() if expand else [route])
    return routes


def staff_routes(app: FastAPI) -> list[tuple[str, str]]:
    routes = []
    for route in every_route(app):
        path = getattr(route, "path", "")
        if path in PUBLIC or path.startswith("/api/"):
            continue
        for method in sorted(getattr(route, "methods", None) or ()):
            if method != "HEAD":
                routes.append((method, re.sub(r"\{[^}]+\}", "1", path)))
    return routes


def test_every_staff_page_refuses_a_request_without_a_login(app: FastAPI) -> None:
    routes = staff_routes(app)
    assert ("GET", "/") in routes and ("POST", "/enrol") in routes  # the walk found the pages
    anonymous = Staff(app)
    for method, path in routes:
        response = anonymous.client.request(method, path)
        if method == "GET":
            assert response.status_code == 303, path
            assert response.headers["location"].startswith("/login"), path
        else:
            assert response.status_code == 401, (method, path)
            assert "Your session has ended" in response.text


def test_the_api_refuses_a_request_without_a_token(app: FastAPI) -> None:
    anonymous = Staff(app)
    api = [r for r in every_route(app) if r.path.startswith("/api/")]
    assert api, "no API routes found"
    for route in api:
        for method in route.methods:
            response = anonymous.client.request(method, re.sub(r"\{[^}]+\}", "1", route.path))
            assert response.status_code == 401, (method, route.path)


def test_a_form_post_without_its_csrf_token_is_refused(
    alice: Staff, bob: Staff, app: FastAPI, factory: sessionmaker[Session]
) -> None:
    enrolment_id = enrol(alice)
    for method, path in staff_routes(app):
        if method != "POST":
            continue
        path = path.replace("/1/", f"/{enrolment_id}/")
        for data in ({}, {"csrf_token": "forged"}):
            # An administrator, so that the admin forms get as far as their token too.
            response = bob.client.post(path, data=data)
            assert response.status_code == 403, path
            assert "This form has expired" in response.text
    with session_scope(factory) as session:  # the cancel above did nothing
        assert session.get(models.Enrolment, enrolment_id).status == "active"  # type: ignore[union-attr]


def test_login_needs_the_right_password_and_slows_down_after_repeated_failures(
    app: FastAPI, factory: sessionmaker[Session]
) -> None:
    # The app's clock, moved on by the test: argon2 takes long enough that on a busy machine
    # the real clock could let the wait pass before the next attempt.
    clock = [datetime.now(UTC)]
    app.dependency_overrides[get_now] = lambda: clock[0]
    staff = Staff(app)
    for _ in range(logins.FREE_ATTEMPTS):
        response = staff.login(password="not-the-password")
        assert response.status_code == 401
        assert "The email address or password is not right." in response.text
    # The next attempt is refused without checking, even with the right password.
    response = staff.login()
    assert response.status_code == 429
    assert "Too many failed attempts. Try again in 1 seconds" in response.text
    clock[0] += timedelta(seconds=1)  # the wait passes
    assert staff.login().status_code == 303
    assert staff.get("/").status_code == 200


def test_an_unknown_address_is_refused_in_the_same_words(app: FastAPI) -> None:
    response = Staff(app).login(email="nobody@example.org")
    assert response.status_code == 401
    assert "The email address or password is not right." in response.text


def test_logging_out_ends_the_session_even_for_a_copied_cookie(app: FastAPI, alice: Staff) -> None:
    copied = Staff(app)
    copied.client.cookies.update(alice.client.cookies)
    assert copied.get("/").status_code == 200
    assert alice.post("/logout", {}, page="/").headers["location"] == "/login"
    assert copied.get("/").status_code == 303


def test_the_login_page_does_not_redirect_to_another_site(app: FastAPI) -> None:
    staff = Staff(app)
    data = {"email": ALICE, "password": PASSWORD, "csrf_token": staff.token(),
            "next": "//evil.example.org/"}  # fmt: skip
    assert staff.client.post("/login", data=data).headers["location"] == "/"


def enrol(staff: Staff, **fields: str) -> int:
    data = {
        "booking_ref": "BK-7001", "name": "Megan Price", "phone": "07911 100050",
        "email": "megan.price@example.org", "procedure": "si-joint-denervation",
        "date": in_days(20).isoformat(), "time": "09:30", "action": "save", **fields,
    }  # fmt: skip
    response = staff.post("/enrol", data)
    assert response.status_code == 303, response.text[:2000]
    return int(response.headers["location"].rsplit("/", 1)[1])


def test_the_enrol_form_previews_the_whole_timeline_before_saving(
    alice: Staff, factory: sessionmaker[Session]
) -> None:
    day = in_days(20)
    fields = {
        "name": "Megan Price", "phone": "07911 100050", "procedure": "si-joint-denervation",
        "date": day.isoformat(), "time": "09:30", "anticoagulant": "Apixaban",
        "anticoagulant_hold_days": "3", "anticoagulant_restart_days": "1",
    }  # fmt: skip
    response = alice.post("/enrol", {**fields, "action": "preview"})
    assert response.status_code == 200
    page = response.text
    assert "What Megan Price will receive" in page
    assert "stop Apixaban" in page or "stop taking Apixaban" in page
    assert "Save and schedule" in page and 'id="save" hidden' not in page
    # The live preview the form's script asks for says the same.
    live = alice.post("/enrol/preview", fields)
    assert live.status_code == 200 and "What Megan Price will receive" in live.text
    with session_scope(factory) as session:
        assert session.scalar(select(func.count()).select_from(models.Enrolment)) == 0


def test_a_landline_is_refused_beside_its_field_and_nothing_is_saved(
    alice: Staff, factory: sessionmaker[Session]
) -> None:
    response = alice.post(
        "/enrol",
        {"name": "Megan Price", "phone": "020 7946 0000", "procedure": "sacroplasty",
         "date": in_days(10).isoformat(), "time": "09:30", "action": "save"},
    )  # fmt: skip
    assert response.status_code == 422
    assert 'id="phone-error"' in response.text and "not a mobile" in response.text
    with session_scope(factory) as session:
        assert session.scalar(select(func.count()).select_from(models.Enrolment)) == 0


def test_a_saved_enrolment_shows_every_reminder_in_local_time(alice: Staff) -> None:
    enrolment_id = enrol(alice)
    page = alice.get(f"/enrolments/{enrolment_id}").text
    assert "Megan Price" in page and "BK-7001" in page
    assert "scheduled" in page
    assert "9:30am" in page  # the procedure's start, on the patient's wall clock
    assert page.count("<details>") >= 5  # each reminder with its text


def test_search_finds_by_name_phone_and_booking_reference(alice: Staff) -> None:
    enrolment_id = enrol(alice)
    for query in ("megan", "07911100050", "+44 7911 100050"):
        page = alice.post("/search", {"q": query}, page="/search").text
        assert f'href="/enrolments/{enrolment_id}"' in page, query
    found = alice.post("/search", {"q": "bk-7001"}, page="/search")
    assert found.headers["location"] == f"/enrolments/{enrolment_id}"
    assert "Nobody matches" in alice.post("/search", {"q": "zzzz"}, page="/search").text


def test_upcoming_lists_procedures_by_day(alice: Staff) -> None:
    enrol(alice, date=in_days(2).isoformat())
    page = alice.get("/").text
    assert "Megan Price" in page


def test_reschedule_and_cancel_from_the_patient_page(
    alice: Staff, factory: sessionmaker[Session]
) -> None:
    enrolment_id = enrol(alice)
    here = f"/enrolments/{enrolment_id}"
    new_day = in_days(27)
    response = alice.post(
        f"{here}/reschedule", {"date": new_day.isoformat(), "time": "14:00"}, page=here
    )
    assert "Moved; every pending reminder follows." in alice.follow(response).text
    with session_scope(factory) as session:
        row = session.get(models.Enrolment, enrolment_id)
        assert row is not None and (row.local_date, row.local_time.hour) == (new_day, 14)
        assert {r.state for r in row.reminders} == {"scheduled", "cancelled"}
    page = alice.follow(alice.post(f"{here}/cancel", {}, page=here)).text
    assert "Cancelled. The patient is told, and nothing more of its plan will be sent" in page
    with session_scope(factory) as session:
        row = session.get(models.Enrolment, enrolment_id)
        assert row is not None and row.status == "cancelled"
        # Nothing more of the plan; the patient is told it is cancelled.
        plan = [r for r in row.reminders if r.rule != "appointment-cancelled"]
        assert {r.state for r in plan} == {"cancelled"}
        assert {r.state for r in row.reminders if r not in plan} == {"scheduled"}


def test_a_correction_goes_through_the_same_form_with_the_fields_filled_in(alice: Staff) -> None:
    enrolment_id = enrol(alice)
    form = alice.get(f"/enrol?enrolment={enrolment_id}").text
    assert 'value="Megan Price"' in form and 'value="+447911100050"' in form
    response = alice.post(
        "/enrol",
        {"booking_ref": "BK-7001", "name": "Megan Price", "phone": "07911 100051",
         "procedure": "si-joint-denervation", "date": in_days(20).isoformat(), "time": "09:30",
         "action": "save"},
    )  # fmt: skip
    assert response.headers["location"] == f"/enrolments/{enrolment_id}"
    assert "+447911100051" in alice.follow(response).text


class FormValues(HTMLParser):
    """What a browser would send from a page's form: each control's name and value (a list's
    chosen option), and the label of each control."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self.labels: dict[str, str] = {}
        self._select: str | None = None
        self._label: str | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = {key: value or "" for key, value in attrs}
        if tag == "input" and named.get("type") != "submit" and "name" in named:
            self.values[named["name"]] = named.get("value", "")
        elif tag == "select":
            self._select = named["name"]
            self.values[self._select] = ""
        elif tag == "option" and self._select and "selected" in named:
            self.values[self._select] = named["value"]
        elif tag == "label":
            self._label = named["for"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        elif tag == "label":
            self._label = None

    def handle_data(self, data: str) -> None:
        if self._label:
            self.labels[self._label] = self.labels.get(self._label, "") + data


def test_the_form_asks_for_every_field_of_the_schema_in_its_words(alice: Staff) -> None:
    form = FormValues(alice.get("/enrol").text)
    # Every field but the older `sedation`, which `anaesthesia` says better on the form.
    on_form = {spec.name for spec in SCHEMA if spec.on_form}
    assert on_form == set(FIELDS) - {"sedation"} and on_form <= set(form.values)
    labels = {name: text for name, text in form.labels.items() if name in FIELDS}
    assert labels == {spec.name: spec.label for spec in SCHEMA if spec.on_form}


def test_the_import_page_names_every_column_it_takes(alice: Staff) -> None:
    page = alice.get("/import").text
    assert "<strong>booking_ref, name, procedure, date, time</strong> are required" in page
    for name in FIELDS:
        assert re.search(rf"\b{name}\b", page), name


def test_every_field_goes_through_the_form_and_comes_back_to_correct(
    alice: Staff, factory: sessionmaker[Session]
) -> None:
    enrolment = make_full_enrolment(on=in_days(20), booking_ref="BK-7100")
    saved = alice.post("/enrol", {**enrolment.as_fields(), "action": "save"})
    enrolment_id = int(alice.follow(saved).url.path.rsplit("/", 1)[1])
    with session_scope(factory) as session:
        row = session.get(models.Enrolment, enrolment_id)
        assert row is not None and planning.as_enrolment(row) == enrolment
    form = FormValues(alice.get(f"/enrol?enrolment={enrolment_id}").text)
    given = {name: value for name, value in form.values.items() if name in FIELDS and value}
    shown = {k: v for k, v in enrolment.as_fields().items() if k != "sedation"}
    assert given == shown


def test_a_late_enrolment_warning_waits_on_the_list_until_someone_deals_with_it(
    alice: Staff, factory: sessionmaker[Session]
) -> None:
    # A plan to stop a drug 5 days before a procedure in 2 days cannot be kept.
    enrolment_id = enrol(
        alice, date=in_days(2).isoformat(), anticoagulant="Warfarin",
        anticoagulant_hold_days="5", anticoagulant_restart_days="0",
    )  # fmt: skip
    page = alice.get("/attention?show=calls").text
    assert "blood-thinner" in page and "Megan Price" in page
    with session_scope(factory) as session:
        item = session.scalar(select(models.AttentionItem))
        assert item is not None and item.enrolment_id == enrolment_id
        item_id = item.id
    alice.post(f"/attention/{item_id}/resolve", {"back": "/attention"}, page="/attention")
    assert "Nothing here." in alice.get("/attention").text
    done = alice.get("/attention?show=done").text
    assert ALICE in done
    with session_scope(factory) as session:
        item = session.get(models.AttentionItem, item_id)
        assert item is not None and item.resolved_by == ALICE


def test_only_admins_see_the_audit_log(app: FastAPI, alice: Staff) -> None:
    enrol(alice)
    assert alice.get("/audit").status_code == 403
    bob = Staff(app)
    bob.login(BOB)
    page = bob.get("/audit").text
    assert "enrol" in page and ALICE in page


def csv_text(rows: list[dict[str, str]]) -> bytes:
    columns = ["booking_ref", "name", "phone", "procedure", "date", "time"]
    lines = [",".join(columns)] + [",".join(row.get(c, "") for c in columns) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def test_an_uploaded_csv_lands_its_good_rows_and_reports_the_bad_one(
    worker_app: FastAPI, factory: sessionmaker[Session], import_worker: CeleryProcess
) -> None:
    alice = Staff(worker_app)
    assert alice.login().status_code == 303
    day = in_days(12).isoformat()
    good = [
        {"booking_ref": f"UP-{n}", "name": f"Patient {n}", "phone": f"07911 1001{n:02d}",
         "procedure": "facet-joint-denervation", "date": day, "time": "10:00"}
        for n in range(3)
    ]  # fmt: skip
    bad = {"booking_ref": "UP-9", "name": "Owen Hughes", "phone": "020 7946 0000",
           "procedure": "facet-joint-denervation", "date": day, "time": "10:00"}  # fmt: skip
    response = alice.client.post(
        "/import",
        data={"csrf_token": alice.token("/import")},
        files={"file": ("monday.csv", csv_text([*good, bad]), "text/csv")},
    )
    assert response.status_code == 303
    report_url = response.headers["location"]

    def finished() -> bool:
        with session_scope(factory) as session:
            run = session.scalar(select(models.ImportRun))
            return run is not None and run.status == "finished"

    wait_for(finished, timeout=30, what="the import to finish")
    page = alice.get(report_url).text
    assert "3 rows landed, 1 refused" in page
    assert "phone: this is not a mobile number" in page and "UP-9" in page
    errors = alice.get(f"{report_url}/errors.csv")
    assert errors.headers["content-disposition"] == 'attachment; filename="monday.errors.csv"'
    lines = errors.text.splitlines()
    assert lines[0] == "booking_ref,name,phone,procedure,date,time,line,reason"
    assert lines[1].startswith("UP-9,Owen Hughes,020 7946 0000,") and ",5," in lines[1]
    with session_scope(factory) as session:
        refs = session.scalars(select(models.Enrolment.booking_ref)).all()
        assert sorted(refs) == ["UP-0", "UP-1", "UP-2"]
        # The worker imported it, and the file it was handed is gone.
        assert session.scalar(select(func.count()).select_from(models.ImportUpload)) == 0
    assert "reminders.import_upload" in import_worker.output()


def test_without_a_worker_an_upload_is_refused_not_imported_in_the_web_process(
    alice: Staff, factory: sessionmaker[Session]
) -> None:
    rows = [{"booking_ref": "UP-1", "name": "Ceri Evans", "phone": "07911 100101",
             "procedure": "facet-joint-denervation", "date": in_days(12).isoformat(),
             "time": "10:00"}]  # fmt: skip
    response = alice.client.post(
        "/import",
        data={"csrf_token": alice.token("/import")},
        files={"file": ("monday.csv", csv_text(rows), "text/csv")},
    )
    assert response.status_code == 422
    assert "Imports run in the worker" in response.text
    with session_scope(factory) as session:
        assert session.scalar(select(func.count()).select_from(models.ImportRun)) == 0


def test_an_unusable_upload_lands_nothing_and_says_why(
    alice: Staff, factory: sessionmaker[Session]
) -> None:
    response = alice.client.post(
        "/import",
        data={"csrf_token": alice.token("/import")},
        files={"file": ("list.csv", b"name,date\nMegan Price,2030-01-01\n", "text/csv")},
    )
    assert response.status_code == 422
    assert "Nothing was imported" in response.text and "booking_ref" in response.text
    with session_scope(factory) as session:
        assert session.scalar(select(func.count()).select_from(models.ImportRun)) == 0
