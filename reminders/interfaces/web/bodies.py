"""How big a request body may be, by route, enforced before the body is read.

A body the size of which is declared (Content-Length) and too big is refused with 413 before a
byte of it is read; one sent in chunks is counted as it arrives and refused when it passes the
limit. Without this, 100 MB posted to the inbound webhook took 600 MiB of the web process before
the signature was checked, and a multipart post to /login was spooled to disk before its CSRF
token was.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reminders.services.csvfile import MAX_BYTES

KIB = 1024
# A form, a JSON enrolment or a webhook is a few kilobytes; an upload is a CSV file.
DEFAULT_LIMIT = 64 * KIB
LIMITS = {
    "/import": MAX_BYTES + 256 * KIB,  # the file, and the multipart around it
    "/webhooks/": 32 * KIB,  # Twilio's fields; an SMS body is at most 1,600 characters
    "/login": 8 * KIB,
}


def limit_for(path: str) -> int:
    for prefix, limit in LIMITS.items():
        if path == prefix or (prefix.endswith("/") and path.startswith(prefix)):
            return limit
    return DEFAULT_LIMIT


def _too_big(limit: int) -> str:
    return f"The request is too large: at most {limit // KIB} KB here."


class BodyLimit:
    """ASGI middleware: the limit of `limit_for(path)` on every request's body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length < 0 or length > limit:
                status = 413 if length > limit else 400
                text = _too_big(limit) if status == 413 else "Content-Length is not a number."
                await PlainTextResponse(text, status_code=status)(scope, receive, send)
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside the route's reading of the body: the app answers 413.
                    raise HTTPException(413, _too_big(limit))
            return message

        await self.app(scope, counted, send)
