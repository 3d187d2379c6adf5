"""The fake Twilio, driven by the real `twilio` client: it must answer as Twilio's description says,
refuse what Twilio would refuse, and fail in the ways the reliability drills need."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
import requests
from fakes.messages import segments
from fakes.twilio import FakeTwilio
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

TESTS = Path(__file__).resolve().parent
PATIENT = "+447911100001"
OTHER_PATIENT = "+447911100002"
UNIT_NUMBER = "+447911100000"
SERVICE_SID = "MG" + "0123456789abcdef" * 2
CALLBACK = "https://reminders.example.org/webhooks/twilio/status"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(autouse=True)
def no_twilio_edge(monkeypatch: pytest.MonkeyPatch) -> None:
    # The client rewrites the host name of every URL when these are set, loopback included.
    monkeypatch.delenv("TWILIO_EDGE", raising=False)
    monkeypatch.delenv("TWILIO_REGION", raising=False)


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio() as server:
        yield server
        assert server.violations == [], "requests that Twilio's description forbids"


def client_for(fake: FakeTwilio, *, timeout: float | None = 5.0) -> Client:
    client = Client(
        fake.account_sid, fake.auth_token, http_client=TwilioHttpClient(timeout=timeout)
    )
    client.api.base_url = fake.base_url
    return client


@pytest.fixture
def client(fake: FakeTwilio) -> Client:
    return client_for(fake)


def raw_get(fake: FakeTwilio, path: str, **params: str) -> requests.Response:
    return requests.get(
        fake.base_url + path,
        params=params,
        auth=(fake.account_sid, fake.auth_token),
        timeout=5,
    )


def messages_path(fake: FakeTwilio) -> str:
    return f"/2010-04-01/Accounts/{fake.account_sid}/Messages.json"


# -- creating, fetching, listing -----------------------------------------------------------------


def test_create_from_a_number(fake: FakeTwilio, client: Client) -> None:
    message = client.messages.create(to=PATIENT, from_=UNIT_NUMBER, body="Your procedure is at 9.")

    assert message.sid.startswith("SM") and len(message.sid) == 34
    assert message.status == "queued"
    assert message.direction == "outbound-api"
    assert message.to == PATIENT and message.from_ == UNIT_NUMBER
    assert message.num_segments == "1"
    assert message.date_created is not None and message.date_created.tzinfo is not None
    assert message.uri == f"/2010-04-01/Accounts/{fake.account_sid}/Messages/{message.sid}.json"
    [recorded] = fake.messages_to(PATIENT)
    assert recorded["sid"] == message.sid
    assert recorded["from"] == UNIT_NUMBER
    assert recorded["body"] == "Your procedure is at 9."
    assert recorded["status_callback"] is None
    assert fake.requests["create"] == 1
    assert fake.outcomes["created"] == 1


def test_create_with_a_messaging_service_and_status_callback(
    fake: FakeTwilio, client: Client
) -> None:
    message = client.messages.create(
        to=PATIENT,
        messaging_service_sid=SERVICE_SID,
        status_callback=CALLBACK,
        body="Please do not eat after 07:00.",
    )

    # Twilio picks the sender from the service's pool after answering, so it says so.
    assert message.from_ is None
    assert message.num_segments == "0"
    assert message.messaging_service_sid == SERVICE_SID
    [recorded] = fake.messages
    assert recorded["messaging_service_sid"] == SERVICE_SID
    assert recorded["status_callback"] == CALLBACK
    assert recorded["params"] == {
        "To": PATIENT,
        "MessagingServiceSid": SERVICE_SID,
        "StatusCallback": CALLBACK,
        "Body": "Please do not eat after 07:00.",
    }


def test_answers_match_twilios_description(fake: FakeTwilio) -> None:
    created = requests.post(
        fake.base_url + messages_path(fake),
        data={"To": PATIENT, "From": UNIT_NUMBER, "Body": "Hello", "StatusCallback": CALLBACK},
        auth=(fake.account_sid, fake.auth_token),
        timeout=5,
    )
    assert created.status_code == 201
    body = created.json()
    assert fake.spec.check_response("CreateMessage", 201, body) == []
    # RFC 2822 in GMT, as Twilio writes it: "Thu, 24 Aug 2023 05:01:45 +0000".
    assert body["date_created"].endswith(" +0000")
    assert body["date_sent"] == body["date_created"]

    fetched = raw_get(fake, f"/2010-04-01/Accounts/{fake.account_sid}/Messages/{body['sid']}.json")
    assert fetched.status_code == 200
    assert fake.spec.check_response("FetchMessage", 200, fetched.json()) == []
    assert fetched.json() == body

    listed = raw_get(fake, messages_path(fake), To=PATIENT)
    assert fake.spec.check_response("ListMessage", 200, listed.json()) == []
    assert listed.json()["messages"] == [body]


def test_the_response_check_is_not_vacuous(fake: FakeTwilio) -> None:
    broken = {"sid": "XX1", "status": "posted", "date_created": "2026-06-09T18:00:00Z"}
    problems = fake.spec.check_response("CreateMessage", 201, broken)
    assert {problem.split(":")[0] for problem in problems} == {"sid", "status", "date_created"}


def test_fetch(fake: FakeTwilio, client: Client) -> None:
    created = client.messages.create(to=PATIENT, from_=UNIT_NUMBER, body="Hello")

    fetched = client.messages(created.sid).fetch()

    assert (fetched.sid, fetched.to, fetched.body, fetched.status) == (
        created.sid,
        PATIENT,
        "Hello",
        "queued",
    )
    assert fake.requests["fetch"] == 1


def test_fetch_of_an_unknown_message_is_404(fake: FakeTwilio, client: Client) -> None:
    with pytest.raises(TwilioRestException) as raised:
        client.messages("SM" + "0" * 32).fetch()
    assert (raised.value.status, raised.value.code) == (404, 20404)


def test_list_by_recipient_and_date_sent(fake: FakeTwilio, client: Client) -> None:
    clock = Clock(datetime(2026, 6, 8, 9, 0, tzinfo=UTC))
    fake.clock = clock
    early = client.messages.create(to=PATIENT, from_=UNIT_NUMBER, body="early")
    clock.now += timedelta(hours=2)
    client.messages.create(to=OTHER_PATIENT, from_=UNIT_NUMBER, body="someone else")
    late = client.messages.create(to=PATIENT, from_=UNIT_NUMBER, body="late")
    clock.now += timedelta(days=1)
    next_day = client.messages.create(to=PATIENT, from_=UNIT_NUMBER, body="next day")

    after_ten = client.messages.list(to=PATIENT, date_sent_after=datetime(2026, 6, 8, 10, 0))
    assert [m.sid for m in after_ten] == [next_day.sid, late.sid]  # newest first, as Twilio

    # The boundary is inclusive, to the second.
    at_eleven = client.messages.list(to=PATIENT, date_sent_after=datetime(2026, 6, 8, 11, 0))
    assert [m.sid for m in at_eleven] == [next_day.sid, late.sid]

    before = client.messages.list(to=PATIENT, date_sent_before=datetime(2026, 6, 8, 10, 0))
    assert [m.sid for m in before] == [early.sid]

    on_the_day = raw_get(fake, messages_path(fake), To=PATIENT, DateSent="2026-06-08").json()
    assert [m["sid"] for m in on_the_day["messages"]] == [late.sid, early.sid]

    assert [m.sid for m in client.messages.list(from_=UNIT_NUMBER, to=OTHER_PATIENT)] != []
    assert client.messages.list(to="+447911100099") == []


def test_list_pages_through_everything(fake: FakeTwilio, client: Client) -> None:
    sids = [
        client.messages.create(to=PATIENT, from_=UNIT_NUMBER, body=f"number {n}").sid
        for n in range(7)
    ]

    listed = client.messages.list(to=PATIENT, page_size=3)

    assert [m.sid for m in listed] == sids[::-1]
    assert fake.requests["list"] == 3  # pages of 3, 3 and 1

    first = raw_get(fake, messages_path(fake), To=PATIENT, PageSize="3").json()
    assert (first["page"], first["page_size"], first["start"], first["end"]) == (0, 3, 0, 2)
    assert first["previous_page_uri"] is None
    assert first["next_page_uri"].endswith(f"Page=1&PageToken=PA{sids[4]}")
    second = requests.get(
        fake.base_url + first["next_page_uri"], auth=(fake.account_sid, fake.auth_token), timeout=5
    ).json()
    assert [m["sid"] for m in second["messages"]] == sids[3::-1][:3]
    assert (second["page"], second["start"], second["end"]) == (1, 3, 5)
    back = requests.get(
        fake.base_url + second["previous_page_uri"],
        auth=(fake.account_sid, fake.auth_token),
        timeout=5,
    ).json()
    assert back["messages"] == first["messages"]


# -- what Twilio refuses ------------------------------------------------------------------------


@pytest.mark.parametrize("code", [21211, 21614, 21610])
def test_permanent_failure_for_a_destination(fake: FakeTwilio, client: Client, code: int) -> None:
    fake.fail_to[PATIENT] = code

    with pytest.raises(TwilioRestException) as raised:
        client.messages.create(to=PATIENT, from_=UNIT_NUMBER, body="Hello")

    assert (raised.value.status, raised.value.code) == (400, code)
    assert fake.messages == []
    assert fake.outcomes[str(code)] == 1
    client.messages.create(to=OTHER_PATIENT, from_=UNIT_NUMBER, body="still fine for others")


def test_a_number_that_cannot_exist_is_21211(fake: FakeTwilio, client: Client) -> None:
    # Ofcom's drama range: valid E.164 syntax, but no real mobile.
    with pytest.raises(TwilioRestException) as raised:
        client.messages.create(to="+447700900123", from_=UNIT_NUMBER, body="Hello")
    assert raised.value.code == 21211
    assert fake.violations == []  # Twilio's answer to a bad number, not a malformed request


def test_malformed_request_is_a_violation(fake: FakeTwilio) -> None:
    response = requests.post(
        fake.base_url + messages_path(fake),
        data={"From": UNIT_NUMBER, "Body": "no recipient", "StatusCallBack": CALLBACK},
        auth=(fake.account_sid, fake.auth_token),
        timeout=5,
    )

    assert response.status_code == 400
    error = response.json()
    assert set(error) == {"code", "message", "more_info", "status"}
    assert error["status"] == 400
    assert error["more_info"] == f"https://www.twilio.com/docs/errors/{error['code']}"
    violations = fake.take_violations()
    assert {(v["field"], v["location"]) for v in violations} == {
        ("To", "body"),
        ("StatusCallBack", "body"),  # misspelt: Twilio would drop it without a word
    }
    assert all(v["operation"] == "CreateMessage" for v in violations)
    assert fake.messages == []


def send(**params: str) -> dict[str, str]:
    return {"To": PATIENT, "From": UNIT_NUMBER, "Body": "Hello", **params}


@pytest.mark.parametrize(
    ("params", "field", "code"),
    [
        (send(To="07911 100001"), "To", 21211),  # national format: E.164 is the contract
        ({"To": PATIENT, "Body": "Hello"}, "From", 21603),
        ({"To": PATIENT, "From": UNIT_NUMBER}, "Body", 21602),
        (send(Body="x" * 1601), "Body", 21617),
        (send(StatusCallback="/webhooks/twilio/status"), "StatusCallback", 21609),
        (send(MessagingServiceSid="MG123"), "MessagingServiceSid", 0),
        (send(ValidityPeriod="soon"), "ValidityPeriod", 0),
        (send(SmartEncoded="yes"), "SmartEncoded", 0),
    ],
)
def test_what_twilio_would_refuse(
    fake: FakeTwilio, params: dict[str, str], field: str, code: int
) -> None:
    response = requests.post(
        fake.base_url + messages_path(fake),
        data=params,
        auth=(fake.account_sid, fake.auth_token),
        timeout=5,
    )
    assert response.status_code == 400
    if code:
        assert response.json()["code"] == code
    violations = fake.take_violations()
    assert violations and all(violation["field"] == field for violation in violations)
    assert fake.messages == []


def test_bad_list_parameters_are_violations(fake: FakeTwilio) -> None:
    response = raw_get(fake, messages_path(fake), PageSize="5000", Sort="asc")
    assert response.status_code == 400
    assert {v["field"] for v in fake.take_violations()} == {"PageSize", "Sort"}


def test_wrong_credentials_are_401(fake: FakeTwilio) -> None:
    impostor = Client(fake.account_sid, "not-the-token")
    impostor.api.base_url = fake.base_url

    with pytest.raises(TwilioRestException) as raised:
        impostor.messages.create(to=PATIENT, from_=UNIT_NUMBER, body="Hello")

    assert (raised.value.status, raised.value.code) == (401, 20003)
    assert fake.messages == []
    assert fake.outcomes["401"] == 1


def test_unknown_endpoint_is_a_violation(fake: FakeTwilio) -> None:
    response = raw_get(fake, f"/2010-04-01/Accounts/{fake.account_sid}/Calls.json")
    assert response.status_code == 404
    assert response.json()["code"] == 20404
    [violation] = fake.take_violations()
    assert violation["request"].startswith("GET /2010-04-01/")


# -- injected faults -----------------------------------------------------------------------------


def test_script_of_faults(fake: FakeTwilio, client: Client) -> None:
    fake.script(["500", "429", "21614", "ok"])

    with pytest.raises(TwilioRestException) as server_error:
        client.messages.create(to=PATIENT, from_=UNIT_NUMBER, body="1")
    with pytest.raises(TwilioRestException) as rate_limited:
        client.messages.create(to=PATIENT, from_=UNIT_NUMBER, body="2")
    with pytest.raises(TwilioRestException) as not_mobile:
        client.messages.create(to=PATIENT, from_=UNIT_NUMBER, body="3")
    sent = client.messages.create(to=PATIENT, from_=UNIT_NUMBER, body="4")
    after_script = client.messages.create(to=PATIENT, from_=UNIT_NUMBER, body="5")

    assert (server_error.value.status, server_error.value.code) == (500, 20500)
    assert (rate_limited.value.status, rate_limited.value.code) == (429, 20429)
    assert (not_mobile.value.status, not_mobile.value.code) == (400, 21614)
    assert [m["sid"] for m in fake.messages] == [sent.sid, after_script.sid]
    assert fake.outcomes == {"500": 1, "429": 1, "21614": 1, "created": 2}


def test_rate_limit_says_when_to_retry(fake: FakeTwilio) -> None:
    fake.script(["429"])
    response = requests.post(
        fake.base_url + messages_path(fake),
        data={"To": PATIENT, "From": UNIT_NUMBER, "Body": "Hello"},
        auth=(fake.account_sid, fake.auth_token),
        timeout=5,
    )
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1"
    assert response.json()["code"] == 20429


def test_unknown_script_outcome_is_refused(fake: FakeTwilio) -> None:
    with pytest.raises(ValueError, match="unknown outcome"):
        fake.script(["ok", "explode"])


def test_timeout_after_accept_leaves_the_message_created(fake: FakeTwilio) -> None:
    fake.accept_timeout_delay = 2.0
    fake.script(["timeout-after-accept"])
    impatient = client_for(fake, timeout=0.3)

    started = time.monotonic()
    with pytest.raises(requests.exceptions.Timeout):
        impatient.messages.create(to=PATIENT, from_=UNIT_NUMBER, body="Stop warfarin today.")
    assert time.monotonic() - started < 1.5

    # The ambiguous case the send must reconcile: no answer, yet the message exists.
    [listed] = client_for(fake).messages.list(to=PATIENT)
    assert listed.body == "Stop warfarin today."
    assert fake.messages[0]["fault"] == "timeout-after-accept"
    assert fake.outcomes["timeout-after-accept"] == 1


def test_a_patient_client_gets_the_late_answer(fake: FakeTwilio) -> None:
    fake.accept_timeout_delay = 0.2
    fake.script(["timeout-after-accept"])
    message = client_for(fake, timeout=5).messages.create(to=PATIENT, from_=UNIT_NUMBER, body="x")
    assert fake.message(message.sid)["fault"] == "timeout-after-accept"


def test_timeout_before_accept_creates_nothing(fake: FakeTwilio) -> None:
    fake.accept_timeout_delay = 2.0
    fake.script(["timeout-before-accept"])
    with pytest.raises(requests.exceptions.Timeout):
        client_for(fake, timeout=0.3).messages.create(to=PATIENT, from_=UNIT_NUMBER, body="x")
    assert client_for(fake).messages.list(to=PATIENT) == []


def test_reset_after_accept(fake: FakeTwilio, client: Client) -> None:
    fake.script(["reset-after-accept"])
    with pytest.raises(requests.exceptions.ConnectionError):
        client.messages.create(to=PATIENT, from_=UNIT_NUMBER, body="x")
    assert len(client.messages.list(to=PATIENT)) == 1
    # The client's pool drops the dead connection and carries on.
    client.messages.create(to=PATIENT, from_=UNIT_NUMBER, body="y")


def outcomes_at_random_rates(seed: int, sends: int = 300) -> list[str]:
    with FakeTwilio(accept_timeout_delay=0.01) as fake:
        fake.set_fault_rates(error_500=0.2, accept_then_timeout=0.05, rate_limit=0.02, seed=seed)
        client = client_for(fake)
        seen = []
        for n in range(sends):
            try:
                client.messages.create(to=PATIENT, from_=UNIT_NUMBER, body=str(n))
                seen.append("created")
            except TwilioRestException as error:
                seen.append(str(error.status))
        assert fake.violations == []
        timeouts = fake.outcomes["timeout-after-accept"]
        return [*seen, f"timeouts={timeouts}"]


def test_random_faults_repeat_with_the_seed() -> None:
    first, again, other = (outcomes_at_random_rates(seed) for seed in (1, 1, 2))

    assert first == again
    assert first != other
    assert 0.12 < first.count("500") / 300 < 0.28
    assert 0 < first.count("429") < 20
    assert first[-1] != "timeouts=0"


def test_fault_rates_are_checked(fake: FakeTwilio) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        fake.set_fault_rates(error_501=0.1)
    with pytest.raises(ValueError, match="more than 1"):
        fake.set_fault_rates(error_500=0.7, rate_limit=0.5)


def test_reset_forgets_everything(fake: FakeTwilio, client: Client) -> None:
    client.messages.create(to=PATIENT, from_=UNIT_NUMBER, body="x")
    fake.fail_to[OTHER_PATIENT] = 21610
    fake.script(["500"])

    fake.reset()

    assert (fake.messages, fake.requests, fake.outcomes, fake.fail_to) == ([], {}, {}, {})
    client.messages.create(to=OTHER_PATIENT, from_=UNIT_NUMBER, body="x")


# -- delivery receipts ---------------------------------------------------------------------------


def test_update_status_posts_a_signed_status_callback(fake: FakeTwilio, client: Client) -> None:
    received: list[tuple[str, dict[str, str], str]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            params = dict(parse_qsl(body, keep_blank_values=True))
            received.append((self.path, params, self.headers["X-Twilio-Signature"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    receiver = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{receiver.server_address[1]}/webhooks/twilio/status"
        message = client.messages.create(
            to=PATIENT, messaging_service_sid=SERVICE_SID, status_callback=url, body="Hello"
        )
        assert fake.update_status(message.sid, "undelivered", error_code=30003) == 204
    finally:
        receiver.shutdown()
        receiver.server_close()

    [(path, params, signature)] = received
    assert path == "/webhooks/twilio/status"
    assert params["MessageSid"] == message.sid
    assert params["MessageStatus"] == "undelivered"
    assert params["ErrorCode"] == "30003"
    assert RequestValidator(fake.auth_token).validate(url, params, signature)
    fetched = client.messages(message.sid).fetch()
    assert (fetched.status, fetched.error_code) == ("undelivered", 30003)


# -- load and processes --------------------------------------------------------------------------


def test_a_thousand_creates_from_eight_threads(fake: FakeTwilio, client: Client) -> None:
    numbers = [f"+4479111{n:05d}" for n in range(1000)]

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        sids = list(
            pool.map(
                lambda to: client.messages.create(to=to, from_=UNIT_NUMBER, body="Hello").sid,
                numbers,
            )
        )
    elapsed = time.perf_counter() - started

    print(f"\nFakeTwilio: 1000 creates from 8 threads in {elapsed:.2f} s, {1000 / elapsed:.0f}/s")
    assert len(set(sids)) == 1000
    assert sorted(m["to"] for m in fake.messages) == numbers
    assert fake.connections_opened <= 10  # kept alive: about one per thread, not per request


def test_runs_as_its_own_process() -> None:
    process = subprocess.Popen(
        [sys.executable, str(TESTS / "fakes" / "twilio.py"), "--port", "0", "--print-url"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": ""},
    )
    try:
        assert process.stdout is not None
        address = json.loads(process.stdout.readline())
        client = Client(address["account_sid"], address["auth_token"])
        client.api.base_url = address["base_url"]
        client.messages.create(to=PATIENT, from_=UNIT_NUMBER, body="from another process")
        state = requests.get(address["base_url"] + "/_fake/state", timeout=5).json()
        assert [m["body"] for m in state["messages"]] == ["from another process"]
        assert state["violations"] == []
    finally:
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=10)
    assert process.returncode == 0, errors
    assert json.loads(errors.strip().splitlines()[-1])["outcomes"] == {"created": 1}


# -- pieces --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "parts"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # the euro sign takes two GSM-7 septets
        ("€" * 81, 2),
        ("Siân" + "a" * 66, 1),  # â is not GSM-7: the whole message becomes UCS-2
        ("Siân" + "a" * 67, 2),
    ],
)
def test_segments(body: str, parts: int) -> None:
    assert segments(body) == parts


def test_the_copy_of_the_description_is_what_extract_makes(tmp_path: Path) -> None:
    source = TESTS.parent.parent / "shared" / "twilio-openapi" / "twilio_api_v2010.json"
    if not source.is_file():
        pytest.skip(f"Twilio's full description is not at {source}")
    output = tmp_path / "messages.openapi.json"
    subprocess.run(
        [sys.executable, str(TESTS / "data" / "twilio" / "extract.py"), "--output", str(output)],
        check=True,
        capture_output=True,
    )
    copy = TESTS / "data" / "twilio" / "messages.openapi.json"
    assert output.read_text() == copy.read_text()
