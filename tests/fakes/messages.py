"""The fake Twilio's messages: what it keeps, how it writes a Message resource, and how it lists
them (Twilio's filters and page tokens). Thread-safe."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Mapping
from datetime import UTC, date, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

from fakes.openapi import parse_twilio_date

API_VERSION = "2010-04-01"
DATE_FILTERS = ("DateSent", "DateSent<", "DateSent>")

GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = set("^{}\\[~]|€\f")


def segments(body: str) -> int:
    """How many SMS parts Twilio bills for `body` (GSM-7 160/153, else UCS-2 70/67)."""
    if not body:
        return 1
    if all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in body):
        length = sum(2 if char in GSM7_EXTENSION else 1 for char in body)
        single, part = 160, 153
    else:
        length = len(body.encode("utf-16-le")) // 2
        single, part = 70, 67
    return 1 if length <= single else -(-length // part)


def rfc2822(moment: datetime | None) -> str | None:
    """Twilio's way with dates: "Thu, 24 Aug 2023 05:01:45 +0000"."""
    return None if moment is None else format_datetime(moment.astimezone(UTC))


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def resource(message: Mapping[str, Any]) -> dict[str, Any]:
    """A kept message as Twilio's api.v2010.account.message."""
    uri = f"/{API_VERSION}/Accounts/{message['account_sid']}/Messages/{message['sid']}"
    return {
        "account_sid": message["account_sid"],
        "api_version": API_VERSION,
        "body": message["body"],
        "date_created": rfc2822(message["date_created"]),
        "date_sent": rfc2822(message["date_sent"]),
        "date_updated": rfc2822(message["date_updated"]),
        "direction": message["direction"],
        "error_code": message["error_code"],
        "error_message": None,
        "from": message["from"],
        "messaging_service_sid": message["messaging_service_sid"],
        "num_media": "0",
        "num_segments": str(message["num_segments"]),
        "price": None,
        "price_unit": "USD",
        "sid": message["sid"],
        "status": message["status"],
        "subresource_uris": {"media": f"{uri}/Media.json", "feedback": f"{uri}/Feedback.json"},
        "to": message["to"],
        "uri": f"{uri}.json",
    }


def date_matches(sent: datetime | None, operator: str, wanted: date | datetime | None) -> bool:
    """Twilio's DateSent filters: a bare date compares days, a date and time compares seconds;
    DateSent> and DateSent< include the boundary (on or after, on or before)."""
    if sent is None or wanted is None:
        return False
    if isinstance(wanted, datetime):
        wanted = wanted if wanted.tzinfo else wanted.replace(tzinfo=UTC)
        left: date | datetime = sent
    else:
        left = sent.astimezone(UTC).date()
    if operator == "DateSent":
        return left == wanted
    return left >= wanted if operator == "DateSent>" else left <= wanted


class MessageStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []
        self._by_sid: dict[str, dict[str, Any]] = {}

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()
            self._by_sid.clear()

    def add(self, message: dict[str, Any]) -> dict[str, Any]:
        """Keep `message`; answers its resource."""
        with self._lock:
            message = {**message, "index": len(self._messages)}
            self._messages.append(message)
            self._by_sid[message["sid"]] = message
            return resource(message)

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(message) for message in self._messages]

    def get(self, sid: str) -> dict[str, Any] | None:
        with self._lock:
            message = self._by_sid.get(sid)
            return None if message is None else dict(message)

    def update(self, sid: str, **changes: Any) -> dict[str, Any]:
        with self._lock:
            message = self._by_sid[sid]
            message.update(changes)
            return dict(message)

    def resources(self) -> list[dict[str, Any]]:
        with self._lock:
            return [resource(message) for message in self._messages]

    def page(self, path: str, query: Mapping[str, str]) -> dict[str, Any] | None:
        """One page of Twilio's ListMessageResponse for `query` (already validated), newest
        first; None when the PageToken names no message we have."""
        filters = {name: query[name] for name in ("To", "From") if name in query}
        dates = {name: parse_twilio_date(query[name]) for name in DATE_FILTERS if name in query}
        size = int(query.get("PageSize", 50))
        number = int(query.get("Page", 0))
        token = query.get("PageToken")

        def wanted(message: Mapping[str, Any]) -> bool:
            return all(message[name.lower()] == value for name, value in filters.items()) and all(
                date_matches(message["date_sent"], name, value) for name, value in dates.items()
            )

        with self._lock:
            matching = [message for message in reversed(self._messages) if wanted(message)]
            if token:
                # Twilio's tokens name a message: PA<sid> is the page after the one that ended
                # with it, PB<sid> the page before the one that began with it. Unlike page numbers
                # they stay right while new messages arrive.
                anchor = self._by_sid.get(token[2:])
                if anchor is None or token[:2] not in ("PA", "PB"):
                    return None
                if token.startswith("PA"):
                    items = [m for m in matching if m["index"] < anchor["index"]][:size]
                else:
                    items = [m for m in matching if m["index"] > anchor["index"]][-size:]
                more = bool(items) and any(m["index"] < items[-1]["index"] for m in matching)
            else:
                items = matching[number * size : (number + 1) * size]
                more = len(matching) > (number + 1) * size
            resources = [resource(message) for message in items]

        def page_uri(page_number: int, page_token: str | None) -> str:
            params = {**filters, **{name: query[name] for name in dates}}
            params.update({"PageSize": str(size), "Page": str(page_number)})
            if page_token:
                params["PageToken"] = page_token
            return f"{path}?{urlencode(params)}"

        start = number * size
        return {
            "end": start + max(len(items) - 1, 0),
            "first_page_uri": page_uri(0, None),
            "messages": resources,
            "next_page_uri": page_uri(number + 1, "PA" + items[-1]["sid"]) if more else None,
            "page": number,
            "page_size": size,
            "previous_page_uri": (
                page_uri(number - 1, "PB" + items[0]["sid"]) if number > 0 and items else None
            ),
            "start": start,
            "uri": page_uri(number, token),
        }
