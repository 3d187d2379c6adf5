"""The JSON API for booking systems (PRODUCT.md, Contracts, HTTP) through the app, on SQLite
and PostgreSQL: bearer tokens, idempotent enrolment by booking reference, partial updates that
reschedule, cancellation, and refusals that say what to fix."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, get_args
from zoneinfo import ZoneInfo

import pytest
from factories import make_full_enrolment
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select

from reminders.core.enrolment import FIELDS, SCHEMA, required_fields
from reminders.core.parsers import parse_booking_ref
from reminders.interfaces.web import api_models
from reminders.interfaces.web.app import create_app
from reminders.services import accounts
from reminders.settings import Settings
from reminders.store import models
from reminders.store.db import session_scope

IN_THREE_WEEKS = date.today() + timedelta(days=21)
PHONE = "+447911100020"
EMAIL = "megan.price@example.org"
NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture
def app(database_url: str) -> FastAPI:
    # Open all day, so that what is scheduled "now" does not depend on when the tests run.
    return create_app(
        Settings.from_env(
            {
                "REMINDERS_DATABASE_URL": database_url,
                "REMINDERS_SENDING_WINDOW": "00:00-24:00",
                "REMINDERS_SECRET_KEY": "synthetic-test-secret-for-tests-only-0123456789",
            }
        )
    )


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def add_token(app: FastAPI, name: str = "booking-system", scope: str = "write") -> str:
    with session_scope(app.state.sessions) as session:
        now = datetime.now(UTC)
        return accounts.add_token(session, name=name, now=now, actor="test", scope=scope).secret


@pytest.fixture
def token(app: FastAPI) -> str:
    return add_token(app)


@pytest.fixture
def as_booking_system(client: TestClient, token: str) -> TestClient:
    client.headers["Authorization"] = f"Bearer {token}"
    return client


def megan(**changes: Any) -> dict[str, Any]:
    """A sacroplasty in three weeks, without sedation; `None` leaves a field out."""
    fields: dict[str, Any] = {
        "booking_ref": "BK-3001",
        "name": "Megan Price",
        "phone": PHONE,
        "email": EMAIL,
        "procedure": "sacroplasty",
        "date": IN_THREE_WEEKS.isoformat(),
        "time": "09:30",
        "sedation": False,
    }
    fields.update(changes)
    return {key: value for key, value in fields.items() if value is not None}


def enrol(client: TestClient, **changes: Any) -> Response:
    response: Response = client.post("/api/v1/enrolments", json=megan(**changes))
    return response


def reminders_of(client: TestClient, enrolment_id: int) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/enrolments/{enrolment_id}/reminders")
    assert response.status_code == 200, response.text
    reminders: list[dict[str, Any]] = response.json()
    return reminders


def count(app: FastAPI, table: type[models.Base]) -> int:
    with session_scope(app.state.sessions) as session:
        return session.scalar(select(func.count()).select_from(table)) or 0


def assert_refused(response: Response, status: int, *fields: str) -> list[str]:
    """The one shape of every refusal, with a problem naming each field."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"detail", "problems"}
    assert body["detail"] and isinstance(body["problems"], list)
    for field in fields:
        assert any(field in problem for problem in body["problems"]), body
    problems: list[str] = body["problems"]
    return problems


# --- tokens --------------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer rmd_not-a-token", "Basic dXNlcjpwYXNz"])
def test_a_request_without_a_valid_token_is_refused(
    app: FastAPI, client: TestClient, token: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    for method, path in [
        ("POST", "/api/v1/enrolments"),
        ("GET", "/api/v1/enrolments?booking_ref=BK-3001"),
        ("GET", "/api/v1/enrolments/1"),
        ("PATCH", "/api/v1/enrolments/1"),
        ("POST", "/api/v1/enrolments/1/cancel"),
        ("GET", "/api/v1/enrolments/1/reminders"),
    ]:
        response = client.request(method, path, json=megan(), headers=headers)
        assert_refused(response, 401)
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert count(app, models.Enrolment) == 0


def test_a_revoked_token_is_refused(app: FastAPI, client: TestClient, token: str) -> None:
    client.headers["Authorization"] = f"Bearer {token}"
    assert enrol(client).status_code == 201
    with session_scope(app.state.sessions) as session:
        for row in session.scalars(select(models.ApiToken)):
            row.revoked_at = datetime.now(UTC)
    response = client.get("/api/v1/enrolments?booking_ref=BK-3001")
    assert_refused(response, 401)
    assert "revoked" in response.json()["detail"]


def test_a_read_only_token_reads_and_cannot_change_anything(
    app: FastAPI, as_booking_system: TestClient
) -> None:
    enrolment_id = enrol(as_booking_system).json()["id"]
    reader = TestClient(app)
    reader.headers["Authorization"] = f"Bearer {add_token(app, 'clinic-dashboard', 'read')}"
    assert reader.get(f"/api/v1/enrolments/{enrolment_id}").status_code == 200
    for response in (
        reader.post("/api/v1/enrolments", json=megan(booking_ref="BK-3999")),
        reader.patch(f"/api/v1/enrolments/{enrolment_id}", json={"time": "11:00"}),
        reader.post(f"/api/v1/enrolments/{enrolment_id}/cancel"),
    ):
        assert_refused(response, 403)
        assert "may only read" in response.json()["detail"]
    got = as_booking_system.get(f"/api/v1/enrolments/{enrolment_id}").json()
    assert got["status"] == "active"
    with session_scope(app.state.sessions) as session:
        assert session.scalar(select(func.count()).select_from(models.Enrolment)) == 1


def test_the_audit_log_names_the_booking_system(
    app: FastAPI, as_booking_system: TestClient
) -> None:
    enrolment_id = enrol(as_booking_system).json()["id"]
    as_booking_system.post(f"/api/v1/enrolments/{enrolment_id}/cancel")
    with session_scope(app.state.sessions) as session:
        entries = session.execute(
            select(models.AuditEntry.action, models.AuditEntry.actor).where(
                models.AuditEntry.enrolment_id == enrolment_id
            )
        ).all()
        used = session.scalar(select(models.ApiToken.last_used_at))
        token_id = session.scalar(select(models.ApiToken.id))
    actor = f"api:{token_id}:booking-system"  # which token, for good, and its name
    assert sorted(entries) == [("cancel", actor), ("enrol", actor)]
    assert used is not None


# --- enrolling -----------------------------------------------------------------------------


def test_enrolling_twice_with_one_booking_ref_updates_and_never_duplicates(
    app: FastAPI, as_booking_system: TestClient
) -> None:
    first = enrol(as_booking_system)
    assert first.status_code == 201, first.text
    created = first.json()
    assert first.headers["Location"] == created["links"]["self"]
    assert created["booking_ref"] == "BK-3001" and created["status"] == "active"
    assert created["starts_at"].startswith(f"{IN_THREE_WEEKS.isoformat()}T09:30:00")
    assert created["fields"]["phone"] == PHONE and created["fields"]["sedation"] == "no"
    reminders = count(app, models.Reminder)

    # A retry, as a booking system makes after a timeout: the same enrolment, unchanged.
    again = enrol(as_booking_system)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == created["id"]
    assert "Location" not in again.headers
    assert (count(app, models.Enrolment), count(app, models.Reminder)) == (1, reminders)

    # The same reference with a corrected name updates that enrolment.
    corrected = enrol(as_booking_system, name="Megan Pryce")
    assert corrected.status_code == 200
    assert corrected.json()["id"] == created["id"]
    assert corrected.json()["fields"]["name"] == "Megan Pryce"
    assert count(app, models.Enrolment) == 1


def test_enrolments_sent_at_once_with_one_booking_ref_make_one_enrolment(
    app: FastAPI, as_booking_system: TestClient
) -> None:
    # Retries that overlap, as a booking system's do when the first request seemed to hang.
    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(lambda _: enrol(as_booking_system), range(4)))
    statuses = sorted(r.status_code for r in responses)
    # One creates it; the others find it (200) or, when they inserted at the very same moment,
    # are told to send again (409), which then finds it.
    assert statuses.count(201) == 1 and set(statuses) <= {200, 201, 409}, statuses
    assert len({r.json()["id"] for r in responses if r.status_code < 300}) == 1
    assert count(app, models.Enrolment) == 1


def test_an_enrolment_is_found_by_booking_ref_and_by_id(as_booking_system: TestClient) -> None:
    created = enrol(as_booking_system).json()
    found = as_booking_system.get("/api/v1/enrolments", params={"booking_ref": "BK-3001"})
    assert found.status_code == 200
    assert [e["id"] for e in found.json()] == [created["id"]]
    by_id = as_booking_system.get(created["links"]["self"])
    assert by_id.status_code == 200
    assert by_id.json() == {**created, "warnings": []}
    nobody = as_booking_system.get("/api/v1/enrolments", params={"booking_ref": "BK-9999"})
    assert (nobody.status_code, nobody.json()) == (200, [])


def test_json_booleans_and_integers_are_taken_as_the_fields_text(
    as_booking_system: TestClient,
) -> None:
    response = enrol(
        as_booking_system,
        sedation=True,
        anticoagulant="warfarin",
        anticoagulant_hold_days=5,
        anticoagulant_restart_days=0,
    )
    assert response.status_code == 201, response.text
    fields = response.json()["fields"]
    assert (fields["sedation"], fields["anticoagulant_hold_days"]) == ("yes", "5")
    assert fields["anticoagulant_restart_days"] == "0"
    rules = {r["rule"] for r in reminders_of(as_booking_system, response.json()["id"])}
    assert {"anticoagulant-plan", "anticoagulant-stop", "fasting"} <= rules


def test_a_booking_system_must_send_a_booking_ref(
    app: FastAPI, as_booking_system: TestClient
) -> None:
    problems = assert_refused(enrol(as_booking_system, booking_ref=None), 422, "booking_ref")
    assert problems == ["booking_ref: required"]
    assert count(app, models.Enrolment) == 0


def test_a_landline_is_refused_naming_phone(app: FastAPI, as_booking_system: TestClient) -> None:
    response = enrol(as_booking_system, phone="01632 960001")
    assert_refused(response, 422, "phone")
    assert "01632" not in response.text  # a patient's number is never echoed back
    assert count(app, models.Enrolment) == 0


def test_every_problem_is_listed_at_once(as_booking_system: TestClient) -> None:
    response = enrol(as_booking_system, email="not-an-address", time="25:00", sedation="maybe")
    problems = assert_refused(response, 422, "email", "time", "sedation")
    assert len(problems) == 3


def test_an_unknown_field_is_refused_with_a_reason(
    app: FastAPI, as_booking_system: TestClient
) -> None:
    response = as_booking_system.post("/api/v1/enrolments", json={**megan(), "nhs_no": "123"})
    [problem] = assert_refused(response, 422, "nhs_no")
    assert problem.startswith("unknown field nhs_no (known: booking_ref, name,")
    assert count(app, models.Enrolment) == 0


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'{"name": ', "body: this is not valid JSON in UTF-8"),
        (b"\xff\xfe", "body: this is not valid JSON in UTF-8"),
        (b'["BK-3001"]', "body: send a JSON object of enrolment fields"),
        (b"", "body: send a JSON object of enrolment fields"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused(
    as_booking_system: TestClient, body: bytes, problem: str
) -> None:
    response = as_booking_system.post(
        "/api/v1/enrolments", content=body, headers={"Content-Type": "application/json"}
    )
    assert assert_refused(response, 422) == [problem]


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"sedation": 1}, "sedation: give true or false"),
        ({"anticoagulant_hold_days": 2.5}, "anticoagulant_hold_days: give a whole number of days"),
        ({"name": ["Megan"]}, "name: give text (a JSON string)"),
        ({"name": "Megan\x00Price"}, "name: must not contain control characters"),
        ({"anticoagulant": "warfarin", "anticoagulant_hold_days": -1}, "anticoagulant_hold_days:"),
    ],
)
def test_a_value_of_the_wrong_kind_is_refused_by_name(
    as_booking_system: TestClient, changes: dict[str, Any], problem: str
) -> None:
    [found] = assert_refused(enrol(as_booking_system, **changes), 422)
    assert found.startswith(problem)


def test_a_procedure_in_the_past_is_refused(as_booking_system: TestClient) -> None:
    yesterday = (date.today() - timedelta(days=1)).isoformat()
    assert_refused(enrol(as_booking_system, date=yesterday), 422, "already passed")


def test_a_time_zone_that_is_a_directory_is_refused(app: FastAPI, token: str) -> None:
    client = TestClient(app, raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {token}"
    assert_refused(enrol(client, timezone="Etc"), 422, "timezone")


def test_every_field_of_the_schema_is_taken_and_answered_back(
    as_booking_system: TestClient,
) -> None:
    fields = make_full_enrolment(on=IN_THREE_WEEKS, booking_ref="BK-3100").as_fields()
    response = as_booking_system.post("/api/v1/enrolments", json=fields)
    assert response.status_code == 201, response.text
    assert response.json()["fields"] == fields
    # The same in JSON's own types where the API takes them: an update that changes nothing.
    typed = {**fields, "sedation": True, "anticoagulant_hold_days": 2}
    again = as_booking_system.post("/api/v1/enrolments", json=typed)
    assert again.status_code == 200, again.text
    assert again.json()["fields"] == fields


@pytest.mark.parametrize(
    "ref", ["BK-1", "a/b_c.d-e", "A" * 64, "A" * 65, "-BK", "BK 1", "BKé1", "BK:1", ""]
)
def test_a_booking_reference_is_refused_alike_in_the_query_and_in_an_enrolment(
    as_booking_system: TestClient, ref: str
) -> None:
    try:
        parse_booking_ref(ref)
    except ValueError:
        good = False
    else:
        good = True
    found = as_booking_system.get("/api/v1/enrolments", params={"booking_ref": ref})
    assert found.status_code == (200 if good else 422), found.text
    enrolled = enrol(as_booking_system, booking_ref=ref)
    if good:
        assert enrolled.status_code == 201, enrolled.text
    else:
        [problem] = assert_refused(enrolled, 422)
        assert problem.startswith("booking_ref: ")


@pytest.mark.parametrize("character", ["\x00", "\t", "\n", "\x1b", "\x7f"])
def test_a_control_character_is_refused_in_any_text(
    as_booking_system: TestClient, character: str
) -> None:
    [problem] = assert_refused(enrol(as_booking_system, name=f"Megan{character}Price"), 422)
    assert problem == "name: must not contain control characters such as line breaks"


def test_a_language_longer_than_its_column_is_refused_not_a_server_error(
    as_booking_system: TestClient,
) -> None:
    tag = "en-" + "-".join(["abcdefgh"] * 4)
    assert_refused(enrol(as_booking_system, language=tag), 422, "language")


# --- changing and cancelling ---------------------------------------------------------------


def test_a_new_date_reschedules_the_pending_reminders(as_booking_system: TestClient) -> None:
    created = enrol(as_booking_system).json()
    before = {r["id"]: r for r in reminders_of(as_booking_system, created["id"])}
    later = IN_THREE_WEEKS + timedelta(days=7)

    response = as_booking_system.patch(created["links"]["self"], json={"date": later.isoformat()})
    assert response.status_code == 200, response.text
    moved = response.json()
    assert moved["id"] == created["id"]
    assert moved["starts_at"].startswith(f"{later.isoformat()}T09:30:00")
    assert moved["fields"]["name"] == "Megan Price"  # fields not sent are kept

    after = reminders_of(as_booking_system, created["id"])
    superseded = [r for r in after if r["id"] in before and r["state"] == "cancelled"]
    assert superseded and {r["cancel_reason"] for r in superseded} == {"superseded"}
    new = [r for r in after if r["id"] not in before]
    assert new and {r["state"] for r in new} == {"scheduled"}
    day_before = [r for r in new if r["rule"] == "day-before"]
    assert {r["send_at"][:16] for r in day_before} == {f"{later - timedelta(days=1)}T12:00"}
    assert all(r["state"] != "scheduled" for r in after if r["id"] in before and
               r["rule"] == "day-before")  # fmt: skip


def test_a_partial_update_can_remove_a_field_but_not_change_the_booking_ref(
    as_booking_system: TestClient,
) -> None:
    path = enrol(as_booking_system).json()["links"]["self"]
    removed = as_booking_system.patch(path, json={"email": None})
    assert removed.status_code == 200, removed.text
    assert removed.json()["fields"]["email"] is None
    assert {r["channel"] for r in reminders_of(as_booking_system, removed.json()["id"])
            if r["state"] == "scheduled"} == {"sms"}  # fmt: skip

    assert_refused(as_booking_system.patch(path, json={"phone": None}), 422, "phone or email")
    assert_refused(
        as_booking_system.patch(path, json={"booking_ref": "BK-3002"}), 422, "booking_ref"
    )
    assert_refused(as_booking_system.patch(path, json={"surname": "Price"}), 422, "surname")
    unchanged = as_booking_system.get(path).json()
    assert (unchanged["booking_ref"], unchanged["fields"]["phone"]) == ("BK-3001", PHONE)


def test_cancelling_stops_every_pending_reminder_once(
    app: FastAPI, as_booking_system: TestClient
) -> None:
    created = enrol(as_booking_system).json()
    response = as_booking_system.post(created["links"]["cancel"])
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    reminders = reminders_of(as_booking_system, created["id"])
    assert reminders
    # Every reminder of the plan stops; the one thing still to go is the patient's notice
    # that it is cancelled (tests/test_clinical_safety.py reads its words).
    plan = [r for r in reminders if r["rule"] != "appointment-cancelled"]
    assert plan and {(r["state"], r["cancel_reason"]) for r in plan} == {
        ("cancelled", "enrolment cancelled")
    }
    notices = [r for r in reminders if r["rule"] == "appointment-cancelled"]
    assert notices and {r["state"] for r in notices} == {"scheduled"}

    assert_refused(as_booking_system.post(created["links"]["cancel"]), 409, "already cancelled")
    later = (IN_THREE_WEEKS + timedelta(days=1)).isoformat()
    assert_refused(as_booking_system.patch(created["links"]["self"], json={"date": later}), 409)
    assert_refused(enrol(as_booking_system), 409, "BK-3001")
    assert count(app, models.Enrolment) == 1


def test_an_unknown_enrolment_is_not_found(as_booking_system: TestClient) -> None:
    for method, path in [
        ("GET", "/api/v1/enrolments/4242"),
        ("PATCH", "/api/v1/enrolments/4242"),
        ("POST", "/api/v1/enrolments/4242/cancel"),
        ("GET", "/api/v1/enrolments/4242/reminders"),
    ]:
        assert_refused(as_booking_system.request(method, path, json={}), 404)
    assert_refused(as_booking_system.get("/api/v1/enrolments/0"), 422, "id")
    assert_refused(as_booking_system.get("/api/v1/enrolments/99999999999"), 422, "id")
    assert_refused(as_booking_system.get("/api/v1/enrolments/abc"), 422, "id")


# --- times ---------------------------------------------------------------------------------


def test_times_are_shown_in_the_patients_own_offset(as_booking_system: TestClient) -> None:
    created = enrol(as_booking_system, timezone="America/New_York").json()
    # 9:30 on the unit's clock (UTC here) is 4:30 or 5:30 in New York.
    start = datetime.combine(IN_THREE_WEEKS, time(9, 30), tzinfo=UTC).astimezone(NEW_YORK)
    assert created["starts_at"] == start.isoformat()
    reminders = reminders_of(as_booking_system, created["id"])
    assert reminders
    for reminder in reminders:
        send_at = datetime.fromisoformat(reminder["send_at"])
        assert send_at.utcoffset() == send_at.astimezone(NEW_YORK).utcoffset(), reminder
        assert len(reminder["send_at"]) == len("2026-06-09T18:00:00+01:00")
    day_before = next(r for r in reminders if r["rule"] == "day-before")
    local = datetime.fromisoformat(day_before["send_at"])
    assert (local.date(), local.time()) == (IN_THREE_WEEKS - timedelta(days=1), time(12, 0))


# --- the document --------------------------------------------------------------------------


def test_the_request_and_answer_use_the_contracts_field_names() -> None:
    assert list(api_models.EnrolmentChanges.model_fields) == list(FIELDS)
    assert list(api_models.NewEnrolment.model_fields) == list(FIELDS)
    assert list(api_models.EnrolmentFields.model_fields) == list(FIELDS)
    fields = api_models.ReminderOut.model_fields
    assert get_args(fields["state"].annotation) == models.REMINDER_STATES
    assert get_args(fields["channel"].annotation) == models.CHANNELS
    statuses = get_args(fields["delivery_status"].annotation)
    assert get_args(statuses[0]) == models.DELIVERY_STATUSES
    assert get_args(api_models.EnrolmentOut.model_fields["status"].annotation) == (
        models.ENROLMENT_STATUSES
    )


def test_the_document_gives_each_field_its_examples_and_format(client: TestClient) -> None:
    models_ = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("EnrolmentChanges", "NewEnrolment", "EnrolmentFields"):
        assert list(models_[name]["properties"]) == list(FIELDS), name
    for name in ("EnrolmentChanges", "NewEnrolment"):
        properties = models_[name]["properties"]
        for spec in SCHEMA:
            assert properties[spec.name]["examples"] == list(spec.examples), spec.name
            assert properties[spec.name].get("description") == spec.kind.format, spec.name
    assert models_["NewEnrolment"]["required"] == list(required_fields(from_system=True))
    assert "required" not in models_["EnrolmentChanges"]
    # An answer always carries what is stored whatever was sent: language and timezone too.
    assert models_["EnrolmentFields"]["required"] == [
        "booking_ref", "name", "language", "procedure", "date", "time", "timezone",
    ]  # fmt: skip


def test_the_openapi_document_declares_the_bearer_token(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["BearerToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token made with `reminders token add --name NAME`.",
    }
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert operation["security"] == [{"BearerToken": []}], (method, path)
            assert {"401", "422"} <= set(operation["responses"]), (method, path)
