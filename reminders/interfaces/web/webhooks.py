"""Webhooks Twilio calls: no login, a valid `X-Twilio-Signature` instead. The handlers only
check and record; the rules live in `reminders.delivery.receipts` and `reminders.services.replies`,
and Twilio's own words are translated by its transport."""

from __future__ import annotations

from html import escape
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import HTMLResponse
from twilio.request_validator import RequestValidator

from reminders.core import unsubscribe
from reminders.delivery import receipts
from reminders.delivery.transports.twilio_sms import TwilioSms
from reminders.services import replies
from reminders.settings import Settings
from reminders.store import models
from reminders.store.db import session_scope
from reminders.store.models import utcnow

router = APIRouter()
STATUS_PATH = TwilioSms.STATUS_PATH
INBOUND_PATH = TwilioSms.INBOUND_PATH


async def signed_form(request: Request, settings: Settings, path: str) -> dict[str, str] | None:
    """The form Twilio posted, or None if it is not signed with our auth token for exactly
    `{REMINDERS_PUBLIC_URL}{path}` (what we told Twilio to call)."""
    if settings.twilio is None or settings.public_url is None:
        return None
    try:
        text = (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        # Twilio sends percent-encoded ASCII; anything else is not Twilio.
        raise HTTPException(400, "body: the form is not UTF-8 text") from None
    # Blank values count in the signature, so keep them.
    form = dict(parse_qsl(text, keep_blank_values=True))
    signature = request.headers.get("X-Twilio-Signature", "")
    validator = RequestValidator(settings.twilio.auth_token)
    if not validator.validate(f"{settings.public_url}{path}", form, signature):
        return None
    return form


FORBIDDEN = Response("Forbidden", status_code=403, media_type="text/plain")


# The handlers below are plain functions, run in the thread pool: their database work would
# otherwise block the event loop, and with it every other request, while a connection is found.
# Only reading the body is async, in these dependencies.
async def _status_form(request: Request) -> dict[str, str] | None:
    return await signed_form(request, request.app.state.settings, STATUS_PATH)


async def _inbound_form(request: Request) -> dict[str, str] | None:
    return await signed_form(request, request.app.state.settings, INBOUND_PATH)


@router.post(STATUS_PATH, include_in_schema=False)
def twilio_status(
    request: Request, form: Annotated[dict[str, str] | None, Depends(_status_form)]
) -> Response:
    if form is None:
        return FORBIDDEN
    with session_scope(request.app.state.sessions) as session:
        receipts.record(
            session,
            form.get("MessageSid", ""),
            TwilioSms.delivery_status(form.get("MessageStatus", "")),
            form.get("ErrorCode") or None,
            utcnow(),
            transport=TwilioSms.name,
        )
    return Response(status_code=204)


@router.post(INBOUND_PATH, include_in_schema=False)
def twilio_inbound(
    request: Request, form: Annotated[dict[str, str] | None, Depends(_inbound_form)]
) -> Response:
    if form is None:
        return FORBIDDEN
    with session_scope(request.app.state.sessions) as session:
        answer = replies.handle_inbound(
            session,
            request.app.state.unit,
            sender=form.get("From", ""),
            body=form.get("Body", ""),
            opt_out_type=form.get("OptOutType") or None,
            now=utcnow(),
            provider_id=form.get("MessageSid") or form.get("SmsSid") or "",
        )
    return Response(answer.twiml, media_type="application/xml")


_PAGE = """<!DOCTYPE html>
<html lang="en-GB"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title></head>
<body style="font-family: Arial, sans-serif; max-width: 36em; margin: 2em auto; padding: 0 1em;">
<h1>{title}</h1>{body}</body></html>"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=escape(title), body=body), status_code=status)


def _patient_email(request: Request, value: str) -> tuple[int, str] | None:
    settings: Settings = request.app.state.settings
    named = unsubscribe.patient_of(settings.secret_key or "", value)
    if named is None or not settings.secret_key:
        return None
    patient_id, bound = named
    with session_scope(request.app.state.sessions) as session:
        patient = session.get(models.Patient, patient_id)
        if patient is None or not patient.email:
            return None
        if not unsubscribe.sent_to(settings.secret_key, bound, patient.email):
            return None  # the id is someone else's now, or the address has changed
        return patient_id, patient.email


@router.get("/unsubscribe/{value}", include_in_schema=False)
def unsubscribe_page(request: Request, value: str) -> HTMLResponse:
    """Confirm first: mail scanners follow links, and must not unsubscribe anyone."""
    if _patient_email(request, value) is None:
        return _page("Link not recognised", "<p>This link is not valid any more.</p>", 404)
    return _page(
        "Stop reminder emails",
        "<p>You will no longer get reminder emails from us. Texts are not affected.</p>"
        f'<form method="post" action="/unsubscribe/{escape(value)}">'
        '<button type="submit">Stop reminder emails</button></form>',
    )


@router.post("/unsubscribe/{value}", include_in_schema=False)
def unsubscribe_now(request: Request, value: str) -> HTMLResponse:
    """The confirm button and mail clients' one-click unsubscribe (RFC 8058) both land here."""
    found = _patient_email(request, value)
    if found is None:
        return _page("Link not recognised", "<p>This link is not valid any more.</p>", 404)
    with session_scope(request.app.state.sessions) as session:
        replies.opt_out(session, "email", found[1], source="unsubscribe link", now=utcnow())
    return _page(
        "You have been unsubscribed",
        "<p>We will not send you reminder emails any more. "
        "If this was a mistake, please call us.</p>",
    )
