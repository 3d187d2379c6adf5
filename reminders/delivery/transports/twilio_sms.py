"""SMS through Twilio's Messages API, with the real `twilio` client."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import requests
from requests.adapters import HTTPAdapter
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from urllib3.exceptions import NewConnectionError

from reminders.delivery.transports import (
    AmbiguousError,
    ConfigurationError,
    DeliveryError,
    OutgoingMessage,
    PermanentError,
    Sent,
    TransientError,
)
from reminders.settings import TwilioSettings

CONNECTIONS = 32

_leaving = threading.local()  # this thread's `may_leave`, while its Messages request is built


class _LastMoment(HTTPAdapter):
    """Checks that the request may still leave as it is handed to the connection, after the
    client has built it: a worker paused while building it sends nothing when it wakes."""

    def send(self, *args: object, **kwargs: object) -> requests.Response:
        check: Callable[[], None] | None = getattr(_leaving, "check", None)
        if check is not None:
            check()
        return super().send(*args, **kwargs)  # type: ignore[arg-type]


# Errors about our account or sender, not the patient: wrong credentials, a From number or
# Messaging Service that is not ours or not set up.
CONFIGURATION_CODES = {20003, 20404, 21603, 21606, 21704}
RECONCILE_LOOKBACK = 50  # newest messages to one number checked when settling an attempt

OPTED_OUT = 21610  # the recipient replied STOP to this sender at the carrier
# Twilio errors that no retry can cure: the destination itself is wrong or has refused.
# https://www.twilio.com/docs/api/errors
PERMANENT_CODES = {
    21211: "invalid 'To' phone number",
    21214: "'To' number cannot be reached",
    21408: "permission to send to this region is not enabled",
    OPTED_OUT: "the recipient has replied STOP to this sender",
    21612: "the 'To' number cannot receive messages from this sender",
    21614: "'To' number is not a valid mobile number",
    30003: "unreachable destination handset",
    30005: "unknown destination handset",
    30006: "landline or unreachable carrier",
}
# The client logs every request's parameters (the patient's number and the message text) at
# INFO; patient data never goes to the logs.
logging.getLogger("twilio.http_client").setLevel(logging.WARNING)


# Twilio's message statuses in our words (lifecycle.RANK): Twilio has more steps than staff
# need to see.
STATUSES = {
    "accepted": "queued", "scheduled": "queued", "queued": "queued", "sending": "queued",
    "sent": "sent", "delivered": "delivered", "read": "delivered",
    "undelivered": "undelivered", "failed": "failed", "canceled": "failed",
}  # fmt: skip


class TwilioSms:
    name = "twilio"
    # Where Twilio posts its receipts and patients' replies, under REMINDERS_PUBLIC_URL; the
    # web app serves these paths and checks Twilio's signature against them.
    STATUS_PATH = "/webhooks/twilio/status"
    INBOUND_PATH = "/webhooks/twilio/inbound"

    @staticmethod
    def delivery_status(twilio_status: str) -> str | None:
        """Twilio's status in our words, or None for one we do not know."""
        return STATUSES.get(twilio_status)

    def __init__(
        self, settings: TwilioSettings, *, status_callback: str | None, timeout: float
    ) -> None:
        self.settings = settings
        self.status_callback = status_callback
        # Long enough for a slow day, short enough not to hold a worker; a timeout after the
        # request left is reconciled, never blindly retried. The client has none by default.
        http_client = TwilioHttpClient(timeout=timeout)
        # One kept-alive connection per sending thread: the client's default pool keeps 10
        # for http:// and cpu+4 for https://, and the rest would reconnect on every message.
        for scheme in ("http://", "https://"):
            http_client.session.mount(scheme, _LastMoment(pool_maxsize=CONNECTIONS))
        self.client = Client(settings.account_sid, settings.auth_token, http_client=http_client)
        # The package does not read TWILIO_BASE_URL; the Api domain's base_url is where every
        # Messages request goes (tests point it at a fake on loopback).
        self.client.api.base_url = settings.base_url

    def send(self, message: OutgoingMessage) -> Sent:
        sender: dict[str, str] = (
            {"messaging_service_sid": self.settings.messaging_service_sid}
            if self.settings.messaging_service_sid
            else {"from_": self.settings.from_number or ""}
        )
        if self.status_callback:
            sender["status_callback"] = self.status_callback
        message.may_leave()  # before the request is built, and again as it leaves
        _leaving.check = message.may_leave
        try:
            created = self.client.messages.create(to=message.to, body=message.body, **sender)
        except TwilioRestException as exc:
            raise _error(exc) from None
        except requests.exceptions.RequestException as exc:
            if _never_sent(exc):
                raise TransientError(f"could not reach Twilio: {type(exc).__name__}") from None
            # Anything else (a read timeout, a connection cut after the request was written,
            # a garbled answer) may have left Twilio holding the message.
            raise AmbiguousError(f"no answer from Twilio: {type(exc).__name__}") from None
        finally:
            _leaving.check = None
        return Sent(provider_id=str(created.sid), delivery_status=created.status)

    def find_sent(self, message: OutgoingMessage, since: datetime) -> str | None:
        """Ask Twilio whether it has this message: one to the same number with the same text,
        created since shortly before the attempt began.

        Filtered by number only: a message still queued at Twilio (a Messaging Service holds
        them) has no send date yet, so a DateSent filter would miss it and cause a resend.
        """
        after = since - timedelta(minutes=1)
        try:
            recent = self.client.messages.list(to=message.to, limit=RECONCILE_LOOKBACK)
        except TwilioRestException as exc:
            raise TransientError(f"Twilio could not list messages: {exc.status}") from None
        except TwilioException as exc:
            # The client's paging raises the base class (a page it cannot read, say).
            raise TransientError(f"Twilio could not list messages: {type(exc).__name__}") from None
        except requests.exceptions.RequestException as exc:
            raise TransientError(f"could not reach Twilio: {type(exc).__name__}") from None
        for candidate in recent:
            created = candidate.date_created
            if candidate.body == message.body and (created is None or created >= after):
                return str(candidate.sid)
        return None


def _never_sent(exc: requests.exceptions.RequestException) -> bool:
    """Only failures to connect prove the request never left: no connection, no name, a
    connect timeout, a failed TLS handshake."""
    if isinstance(exc, (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError)):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError)


def _error(exc: TwilioRestException) -> DeliveryError:
    code = str(exc.code) if exc.code else None
    if exc.status == 429 or (exc.status or 0) >= 500:
        return TransientError(f"Twilio answered {exc.status}", code=code or str(exc.status))
    if exc.code in PERMANENT_CODES:
        return PermanentError(PERMANENT_CODES[exc.code], code=code, opted_out=exc.code == OPTED_OUT)
    if exc.status in (401, 403) or exc.code in CONFIGURATION_CODES:
        return ConfigurationError(
            f"Twilio refused our account settings ({exc.status})", code=code or str(exc.status)
        )
    return PermanentError(f"Twilio refused the message ({exc.status})", code=code)
