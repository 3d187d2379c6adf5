"""One small interface for every provider (STYLE.md, lesson 1): a transport sends one message
and returns the provider's id, or raises a `DeliveryError` saying whether trying again can help.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


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


class TransientError(DeliveryError):
    permanent = False


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
