"""A fake Twilio Messages API: a real HTTP server on loopback for the real `twilio` client.

    with FakeTwilio() as fake:
        client = Client(fake.account_sid, fake.auth_token)
        client.api.base_url = fake.base_url
        client.messages.create(to="+447911100001", from_="+447911100000", body="Hello")
        assert fake.messages_to("+447911100001")[0]["body"] == "Hello"
        assert fake.violations == []

Every request is checked against Twilio's OpenAPI description (tests/data/twilio/); what breaks it
is kept in `fake.violations` and answered 400, so tests fail on requests real Twilio would refuse.
Faults (server errors, rate limits, a timeout after the message was accepted) are injected by
destination, by script or at random rates with a seed, for the reliability drills.

Also runs on its own, for benchmarks and drills across processes:

    python tests/fakes/twilio.py --port 0 --print-url [--fault-rates error_500=0.2 --seed 1]

prints {"base_url", "account_sid", "auth_token", "pid"} as one JSON line, then serves until SIGTERM
or SIGINT. GET {base_url}/_fake/state answers the messages, counters and violations as JSON.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a script, this file's directory comes first on sys.path, and this file, named
    # twilio.py, would hide the real twilio package. Put tests/ there instead, so that `fakes`
    # imports as a package, as it does under pytest.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import base64
import binascii
import hmac
import json
import os
import random
import secrets
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import phonenumbers

from fakes.loopback import LoopbackServer, Reply
from fakes.messages import API_VERSION, MessageStore, new_sid, resource, segments
from fakes.openapi import CHANNEL_ADDRESS, E164, SPEC_PATH, MessagesSpec, Problem

__all__ = ["FakeTwilio"]

# Outcomes a script may name, one per create request. A five-digit Twilio error code is allowed
# too: it is answered 400 with that code, a permanent refusal.
SCRIPT_OUTCOMES = (
    "ok",
    "500",  # server error, message not created
    "503",  # service unavailable, message not created
    "429",  # rate limited (Retry-After: 1, code 20429), message not created
    "timeout-after-accept",  # created, then no answer for accept_timeout_delay
    "timeout-before-accept",  # no answer for accept_timeout_delay, then 503; not created
    "reset-after-accept",  # created, then the connection is closed without an answer
)
RATE_NAMES = {
    "error_500": "500",
    "error_503": "503",
    "rate_limit": "429",
    "accept_then_timeout": "timeout-after-accept",
    "reset_after_accept": "reset-after-accept",
}

ERROR_MESSAGES = {
    20001: "Invalid parameter",
    20003: "Authenticate",
    20004: "Method not allowed",
    20404: "The requested resource {path} was not found",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    20503: "Service Unavailable",
    21211: "The 'To' number {to} is not a valid phone number.",
    21212: "The 'From' number {from_} is not a valid phone number, shortcode, or alphanumeric "
    "sender ID.",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the 'To' "
    "number: {to}.",
    21602: "Message body is required.",
    21603: "A 'From' or 'MessagingServiceSid' parameter is required to send a message.",
    21604: "A 'To' phone number is required.",
    21609: "Invalid StatusCallback URL.",
    21610: "Attempt to send to unsubscribed recipient",
    21612: "The 'To' phone number: {to}, is not currently reachable using the 'From' phone "
    "number: {from_} via SMS.",
    21614: "'To' number {to} is not a valid mobile number",
    21617: "The concatenated message body exceeds the 1600 character limit.",
}
# The code Twilio gives when the description is broken in this field; 20001 otherwise.
FIELD_ERROR_CODES = {"To": 21211, "From": 21212, "StatusCallback": 21609, "Body": 21602}
MISSING_FIELD_CODES = {"To": 21604}
KINDS = {"CreateMessage": "create", "FetchMessage": "fetch", "ListMessage": "list"}


def twilio_error(
    status: int, code: int, headers: dict[str, str] | None = None, **details: Any
) -> Reply:
    """Twilio's error body, which the client turns into TwilioRestException(status, code)."""
    template = ERROR_MESSAGES.get(code, f"Error {code}")
    try:
        message = template.format(**details)
    except KeyError:
        message = template
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return Reply(status, body, headers or {})


class FakeTwilio:
    """Twilio's Messages API on 127.0.0.1, with faults on demand. Thread-safe; a context manager.

    Attributes: base_url, account_sid, auth_token, fail_to (number -> Twilio error code),
    accept_timeout_delay (seconds), fail_list (a status or "hang"),
    create_delay (seconds), clock (callable returning an aware datetime), spec.
    Introspection (copies): messages, messages_to(number), message(sid), requests (Counter by
    kind: create, fetch, list, other), outcomes (Counter of what happened to create requests:
    created, invalid, 401, 500, 429, timeout-after-accept, 21211...), violations,
    take_violations(), connections_opened, state().
    """

    def __init__(
        self,
        *,
        account_sid: str | None = None,
        auth_token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], datetime] | None = None,
        accept_timeout_delay: float = 3.0,
        spec_path: Path = SPEC_PATH,
    ) -> None:
        self.account_sid = account_sid or new_sid("AC")
        self.auth_token = auth_token or secrets.token_hex(16)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.accept_timeout_delay = accept_timeout_delay
        self.fail_to: dict[str, int] = {}
        # The Messages list (what reconciliation asks) failing with this HTTP status, or
        # hanging for `accept_timeout_delay` when "hang"; None: it answers.
        self.fail_list: int | str | None = None
        # Seconds every create request takes to be answered (the message exists at once): a
        # slow provider, so that a burst has many requests in flight.
        self.create_delay = 0.0
        self.spec = MessagesSpec(spec_path)
        self._address = (host, port)
        self._server: LoopbackServer | None = None
        self._store = MessageStore()
        self._lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self._requests: Counter[str] = Counter()
        self._outcomes: Counter[str] = Counter()
        self._violations: list[dict[str, Any]] = []
        self._script: deque[str] = deque()
        self._rates: list[tuple[float, str]] = []
        self._random = random.Random(0)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeTwilio:
        if self._server is None:
            host, port = self._address
            self._server = LoopbackServer(self.handle, host=host, port=port)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def __enter__(self) -> FakeTwilio:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeTwilio is not running: use it as a context manager")
        return self._server.base_url

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted: far fewer than requests when the client keeps them alive."""
        return self._server.connections_opened if self._server else 0

    # -- fault injection -------------------------------------------------------------------------

    def script(self, outcomes: Iterable[str]) -> None:
        """Outcomes for the next create requests, one each, in order; then back to normal.
        Replaces what is left of an earlier script. Only authenticated, valid requests use one."""
        entries = [str(outcome) for outcome in outcomes]
        for entry in entries:
            if entry not in SCRIPT_OUTCOMES and not (entry.isdigit() and len(entry) == 5):
                raise ValueError(f"unknown outcome {entry!r}; use one of {SCRIPT_OUTCOMES}")
        with self._lock:
            self._script = deque(entries)

    def set_fault_rates(self, *, seed: int | None = 0, **rates: float) -> None:
        """Fractions of create requests that fail each way, e.g. error_500=0.2,
        accept_then_timeout=0.05, rate_limit=0.02. One draw per create request from a generator
        seeded with `seed`, so the sequence of outcomes repeats from run to run."""
        table = []
        total = 0.0
        for name, rate in rates.items():
            if name not in RATE_NAMES:
                raise ValueError(f"unknown fault {name!r}; use one of {sorted(RATE_NAMES)}")
            if rate < 0:
                raise ValueError(f"{name} must not be negative")
            total += rate
            table.append((total, RATE_NAMES[name]))
        if total > 1:
            raise ValueError("fault rates add up to more than 1")
        with self._lock:
            self._rates = table
            self._random = random.Random(seed)

    def reset(self) -> None:
        """Forget messages, counters, violations and faults (fail_to included)."""
        self._store.clear()
        with self._lock:
            self._clear()
            self.fail_to.clear()
            self.fail_list, self.create_delay = None, 0.0

    # -- introspection ---------------------------------------------------------------------------

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every message created, oldest first: sid, to, from, messaging_service_sid, body,
        status_callback, status, num_segments, date_created (datetime)..., params (the form as
        sent) and fault (None, or the fault that hit its create request)."""
        return self._store.all()

    def messages_to(self, number: str) -> list[dict[str, Any]]:
        return [message for message in self._store.all() if message["to"] == number]

    def message(self, sid: str) -> dict[str, Any]:
        message = self._store.get(sid)
        if message is None:
            raise KeyError(sid)
        return message

    @property
    def requests(self) -> Counter[str]:
        with self._lock:
            return Counter(self._requests)

    @property
    def outcomes(self) -> Counter[str]:
        with self._lock:
            return Counter(self._outcomes)

    @property
    def violations(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(violation) for violation in self._violations]

    def take_violations(self) -> list[dict[str, Any]]:
        """The violations so far, forgetting them: for tests that provoke some on purpose, so
        that a fixture can still assert at the end that none are left."""
        with self._lock:
            taken, self._violations = self._violations, []
            return taken

    def state(self) -> dict[str, Any]:
        """Everything, as JSON-able data (what GET /_fake/state answers)."""
        messages = self._store.resources()
        with self._lock:
            return {
                "messages": messages,
                "requests": dict(self._requests),
                "outcomes": dict(self._outcomes),
                "violations": [dict(violation) for violation in self._violations],
                "connections_opened": self.connections_opened,
            }

    # -- delivery --------------------------------------------------------------------------------

    def update_status(
        self,
        sid: str,
        status: str,
        *,
        error_code: int | None = None,
        send_callback: bool = True,
        timeout: float = 10.0,
    ) -> int | None:
        """Move a message on (sent, delivered, undelivered, failed...) and, if it has a status
        callback, POST Twilio's signed status callback there. Returns the callback's HTTP status."""
        message = self._store.update(
            sid, status=status, error_code=error_code, date_updated=self._now()
        )
        url = message["status_callback"]
        if not send_callback or not url:
            return None
        params = {
            "AccountSid": message["account_sid"],
            "ApiVersion": API_VERSION,
            "MessageSid": sid,
            "MessageStatus": status,
            "SmsSid": sid,
            "SmsStatus": status,
            "To": message["to"],
        }
        if message["from"]:
            params["From"] = message["from"]
        if message["messaging_service_sid"]:
            params["MessagingServiceSid"] = message["messaging_service_sid"]
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        # Imported here because tests that never deliver need neither.
        import requests
        from twilio.request_validator import RequestValidator

        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        response = requests.post(
            url,
            data=params,
            headers={"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1"},
            timeout=timeout,
        )
        return int(response.status_code)

    # -- requests --------------------------------------------------------------------------------

    def _now(self) -> datetime:
        # Twilio's dates have whole seconds; keeping more would make DateSent filters disagree
        # with the dates the client reads back.
        return self.clock().astimezone(UTC).replace(microsecond=0)

    def _violation(self, request: str, operation: str | None, problem: Problem) -> None:
        with self._lock:
            self._violations.append(
                {
                    "request": request,
                    "operation": operation,
                    "location": problem.location,
                    "field": problem.field,
                    "message": problem.message,
                }
            )

    def _count(self, outcome: str) -> None:
        with self._lock:
            self._outcomes[outcome] += 1

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Answer one HTTP request (what the loopback server calls)."""
        try:
            return self._handle(method, target, headers, body)
        except Exception as error:  # the fake's own bug: make it fail the test, not hide
            problem = Problem("fake", None, f"FakeTwilio crashed: {error!r}", "crash")
            self._violation(f"{method} {target}", None, problem)
            return twilio_error(500, 20500)

    def _handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        parts = urlsplit(target)
        path, request = parts.path, f"{method} {parts.path}"
        if path == "/_fake/state" and method == "GET":
            return Reply(200, self.state())

        operation, path_params, path_known = self.spec.find(method, path)
        kind = KINDS.get(operation.operation_id, "other") if operation else "other"
        with self._lock:
            self._requests[kind] += 1

        if not self._authenticated(headers.get("Authorization", ""), path_params):
            if kind == "create":
                self._count("401")
            return twilio_error(401, 20003, {"WWW-Authenticate": 'Basic realm="Twilio API"'})
        if operation is None:
            self._violation(request, None, Problem("path", None, "not in the description"))
            return twilio_error(405, 20004) if path_known else twilio_error(404, 20404, path=path)
        if kind == "other":
            message = f"the fake does not implement {operation.operation_id}"
            self._violation(request, operation.operation_id, Problem("path", None, message))
            return twilio_error(501, 20001)

        query = parse_qs(parts.query, keep_blank_values=True)
        form = None
        if operation.body_schema is not None:
            form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        problems = self.spec.check_request(
            operation, path_params, query, form, headers.get("Content-Type")
        )
        if kind == "create" and not problems:
            problems = self._twilio_rules(form or {})
        if problems:
            for problem in problems:
                self._violation(request, operation.operation_id, problem)
            if kind == "create":
                self._count("invalid")
            return self._refusal(problems[0], form or {})

        if kind == "create":
            return self._create({name: values[-1] for name, values in (form or {}).items()})
        if kind == "list" and self.fail_list == "hang":
            return Reply(503, delay=self.accept_timeout_delay, after_delay=twilio_error(503, 20503))
        if kind == "list" and isinstance(self.fail_list, int):
            return twilio_error(self.fail_list, 20000 + self.fail_list)
        if kind == "fetch":
            found = self._store.get(path_params["Sid"])
            if found is None:
                return twilio_error(404, 20404, path=path)
            return Reply(200, resource(found))
        page = self._store.page(path, {name: values[-1] for name, values in query.items()})
        return twilio_error(400, 20001) if page is None else Reply(200, page)

    def _authenticated(self, header: str, path_params: Mapping[str, str]) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return (
            hmac.compare_digest(user, self.account_sid)
            and hmac.compare_digest(password, self.auth_token)
            and path_params.get("AccountSid", self.account_sid) == self.account_sid
        )

    def _twilio_rules(self, form: Mapping[str, Sequence[str]]) -> list[Problem]:
        """What Twilio refuses although the description allows it (the description cannot say
        "From or MessagingServiceSid")."""
        problems = []
        to = form.get("To", [""])[-1]
        if not (E164.fullmatch(to) or CHANNEL_ADDRESS.fullmatch(to)):
            message = f"To {to!r} is not in E.164 format"
            problems.append(Problem("body", "To", message, "format", 21211))
        if not form.get("From") and not form.get("MessagingServiceSid"):
            problems.append(Problem("body", "From", ERROR_MESSAGES[21603], "one-of", 21603))
        if not form.get("Body") and not form.get("MediaUrl") and not form.get("ContentSid"):
            problems.append(Problem("body", "Body", ERROR_MESSAGES[21602], "one-of", 21602))
        if len(form.get("Body", [""])[-1]) > 1600:
            problems.append(Problem("body", "Body", ERROR_MESSAGES[21617], "maxLength", 21617))
        return problems

    def _refusal(self, problem: Problem, form: Mapping[str, Sequence[str]]) -> Reply:
        if problem.code is not None:
            code = problem.code
        elif problem.validator == "required":
            code = MISSING_FIELD_CODES.get(problem.field or "", 20001)
        else:
            code = FIELD_ERROR_CODES.get(problem.field or "", 20001)
        given = {name: values[-1] for name, values in form.items() if values}
        reply = twilio_error(400, code, to=given.get("To", ""), from_=given.get("From", ""))
        reply.body["message"] += f" ({problem.message})"
        return reply

    def _next_outcome(self) -> str:
        with self._lock:
            if self._script:
                return self._script.popleft()
            if self._rates:
                draw = self._random.random()
                for bound, outcome in self._rates:
                    if draw < bound:
                        return outcome
            return "ok"

    def _create(self, params: dict[str, str]) -> Reply:
        outcome = self._next_outcome()
        to, from_ = params["To"], params.get("From")
        if outcome in ("500", "503"):
            self._count(outcome)
            return twilio_error(int(outcome), 20000 + int(outcome))
        if outcome == "429":
            self._count(outcome)
            return twilio_error(429, 20429, {"Retry-After": "1"})
        if outcome == "timeout-before-accept":
            self._count(outcome)
            late = twilio_error(503, 20503)
            return Reply(503, delay=self.accept_timeout_delay, after_delay=late)
        if outcome.isdigit():  # a Twilio error code from the script
            self._count(outcome)
            return twilio_error(400, int(outcome), to=to, from_=from_)

        code = self.fail_to.get(to)
        if code is None and E164.fullmatch(to) and not _possible_number(to):
            code = 21211
        if code is not None:
            self._count(str(code))
            return twilio_error(400, code, to=to, from_=from_)

        now = self._now()
        body = params.get("Body", "")
        created = self._store.add(
            {
                "sid": new_sid("SM"),
                "account_sid": self.account_sid,
                "to": to,
                "from": from_,
                "messaging_service_sid": params.get("MessagingServiceSid"),
                "body": body,
                "status_callback": params.get("StatusCallback"),
                "status": "queued",
                "direction": "outbound-api",
                "num_segments": segments(body),
                "error_code": None,
                "date_created": now,
                "date_updated": now,
                "date_sent": now,
                "params": params,
                "fault": None if outcome == "ok" else outcome,
                # Precise arrival time, for timeliness benchmarks (Twilio's own dates are
                # whole seconds).
                "received_at": time.time(),
            }
        )
        with self._lock:
            self._outcomes["created"] += 1
            if outcome != "ok":
                self._outcomes[outcome] += 1
        if from_ is None:
            # A Messaging Service picks the sender after the create call answers, and only then
            # are segments counted; Twilio says 0 until then.
            created["num_segments"] = "0"
        reply = Reply(201, created, delay=self.create_delay)
        if outcome == "timeout-after-accept":
            reply.delay = self.accept_timeout_delay
        elif outcome == "reset-after-accept":
            reply.reset = True
        return reply


def _possible_number(number: str) -> bool:
    try:
        return bool(phonenumbers.is_valid_number(phonenumbers.parse(number)))
    except phonenumbers.NumberParseException:
        return False


def _parse_rates(text: str) -> dict[str, float]:
    rates = {}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        rates[name.strip()] = float(value)
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A fake Twilio Messages API on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--print-url", action="store_true", help="print the address as JSON")
    parser.add_argument("--account-sid")
    parser.add_argument("--auth-token")
    parser.add_argument(
        "--fault-rates",
        type=_parse_rates,
        default={},
        metavar="NAME=RATE,...",
        help=f"e.g. error_500=0.2,accept_then_timeout=0.05,rate_limit=0.02; {sorted(RATE_NAMES)}",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--accept-timeout-delay", type=float, default=3.0)
    args = parser.parse_args(argv)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    fake = FakeTwilio(
        account_sid=args.account_sid,
        auth_token=args.auth_token,
        host=args.host,
        port=args.port,
        accept_timeout_delay=args.accept_timeout_delay,
    )
    try:
        fake.set_fault_rates(seed=args.seed, **args.fault_rates)
    except ValueError as error:
        parser.error(str(error))
    with fake:
        if args.print_url:
            address = {
                "base_url": fake.base_url,
                "account_sid": fake.account_sid,
                "auth_token": fake.auth_token,
                "pid": os.getpid(),
            }
            print(json.dumps(address), flush=True)
        while not stop.wait(0.5):
            pass
        summary = {key: value for key, value in fake.state().items() if key != "messages"}
    summary["violations"] = len(summary["violations"])
    print(json.dumps(summary), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
