"""One small interface for every provider (STYLE.md, lesson 1): a transport sends one message
and returns the provider's id, or raises a `DeliveryError` saying whether trying again can help.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from reminders.settings import Settings


@dataclass(frozen=True)
class OutgoingMessage:
    reminder_id: int
    channel: str  # sms or email
    to: str  # E.164 number or email address
    body: str  # SMS text, or the email's plain-text part
    subject: str | None = None
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    # By when (time.monotonic()) the request must leave, or not leave at all (`Unsent`): the
    # worker's last check that it may send holds only that long.
    leave_by: float | None = None

    def may_leave(self) -> None:
        """Raise `Unsent` if it is too late for the request to leave: called by a transport at
        the last moment before the provider can have the message."""
        if self.leave_by is not None and time.monotonic() > self.leave_by:
            raise Unsent("not sent: too long since the last check that it may go")


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str  # e.g. text/calendar
    data: bytes


@dataclass(frozen=True)
class Sent:
    provider_id: str
    delivery_status: str | None  # the provider's first status (queued, sent), if it gave one


class DeliveryError(Exception):
    """The provider did not take the message.

    permanent: trying again cannot help (an invalid number, a landline, an opted-out recipient);
    otherwise it is worth retrying later (a 500, a rate limit, a network error before the
    request left). `code` is the provider's own error code, shown to staff.
    """

    permanent = False

    def __init__(self, message: str, *, code: str | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class PermanentError(DeliveryError):
    permanent = True

    def __init__(self, message: str, *, code: str | None = None, opted_out: bool = False) -> None:
        super().__init__(message, code=code)
        # The recipient told the provider to stop (a STOP reply at the carrier): the transport
        # knows its provider's code for it, and later reminders to them are skipped.
        self.opted_out = opted_out


class TransientError(DeliveryError):
    pass


class Unsent(TransientError):
    """The request never left: too long had passed since the worker's last check that it may
    (it was paused, or starved). It goes again at once, counting against nothing."""


class ConfigurationError(TransientError):
    """The provider refused us, not the message (bad credentials, a refused sender): nothing is
    wrong with the reminder, so it waits without using up its attempts while staff fix it."""


class AmbiguousError(DeliveryError):
    """The request left but no answer came back: the provider may or may not have the message.
    It must be reconciled with the provider before anything is sent again."""


class Transport(Protocol):
    name: str

    def send(self, message: OutgoingMessage) -> Sent: ...

    def find_sent(self, message: OutgoingMessage, since: datetime) -> str | None:
        """The provider's id for `message` if the provider has it (sent since `since`), for
        reconciling an ambiguous attempt; None if it does not; raise `DeliveryError` if the
        provider cannot tell now."""
        ...


@dataclass(frozen=True)
class Transports:
    """The transport for each channel: the provider where one is configured, else the outbox
    (messages recorded, not sent, and shown as such)."""

    sms: Transport
    email: Transport

    def for_channel(self, channel: str) -> Transport:
        return self.sms if channel == "sms" else self.email

    @classmethod
    def from_settings(cls, settings: Settings) -> Transports:
        from reminders.delivery.transports.outbox import Outbox
        from reminders.delivery.transports.smtp_email import SmtpEmail
        from reminders.delivery.transports.twilio_sms import TwilioSms

        timeout = settings.provider_timeout
        sms: Transport = Outbox()
        if settings.twilio:
            # Receipts come back to where the web app takes them (`TwilioSms.STATUS_PATH`).
            callback = (
                f"{settings.public_url}{TwilioSms.STATUS_PATH}" if settings.public_url else None
            )
            sms = TwilioSms(settings.twilio, status_callback=callback, timeout=timeout)
        email: Transport = SmtpEmail(settings.smtp, timeout=timeout) if settings.smtp else Outbox()
        return cls(sms=sms, email=email)
