"""Webhooks Twilio calls: no login, a valid `X-Twilio-Signature` instead. The handlers only
check and record; the rules live in `reminders.delivery`."""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from twilio.request_validator import RequestValidator

from reminders import delivery, replies
from reminders.db import session_scope
from reminders.models import utcnow
from reminders.settings import Settings

router = APIRouter()
STATUS_PATH = "/webhooks/twilio/status"


async def signed_form(request: Request, settings: Settings, path: str) -> dict[str, str] | None:
    """The form Twilio posted, or None if it is not signed with our auth token for exactly
    `{REMINDERS_PUBLIC_URL}{path}` (what we told Twilio to call)."""
    if settings.twilio is None or settings.public_url is None:
        return None
    # Blank values count in the signature, so keep them.
    form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
    signature = request.headers.get("X-Twilio-Signature", "")
    validator = RequestValidator(settings.twilio.auth_token)
    if not validator.validate(f"{settings.public_url}{path}", form, signature):
        return None
    return form


@router.post(STATUS_PATH, include_in_schema=False)
async def twilio_status(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    form = await signed_form(request, settings, STATUS_PATH)
    if form is None:
        return Response("Forbidden", status_code=403, media_type="text/plain")
    with session_scope(request.app.state.sessions) as session:
        delivery.record_status(
            session,
            form.get("MessageSid", ""),
            form.get("MessageStatus", ""),
            form.get("ErrorCode") or None,
        )
    return Response(status_code=204)


INBOUND_PATH = "/webhooks/twilio/inbound"


@router.post(INBOUND_PATH, include_in_schema=False)
async def twilio_inbound(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    form = await signed_form(request, settings, INBOUND_PATH)
    if form is None:
        return Response("Forbidden", status_code=403, media_type="text/plain")
    with session_scope(request.app.state.sessions) as session:
        answer = replies.handle_inbound(
            session,
            request.app.state.unit,
            sender=form.get("From", ""),
            body=form.get("Body", ""),
            opt_out_type=form.get("OptOutType") or None,
            now=utcnow(),
        )
    return Response(answer.twiml, media_type="application/xml")
