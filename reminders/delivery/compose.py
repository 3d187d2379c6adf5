"""A reminder whose words are written, as the message a transport sends: the SMS text, or the
email with its calendar invitation and its unsubscribe headers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from reminders.config import Config
from reminders.core import ics, unsubscribe
from reminders.core.clock import localize
from reminders.delivery.transports import Attachment, OutgoingMessage
from reminders.services.planning import change_of
from reminders.store import models


def destination(reminder: models.Reminder) -> str | None:
    """Where the reminder goes now: the patient's mobile or email address, if they have one."""
    patient = reminder.enrolment.patient
    return patient.phone if reminder.channel == "sms" else patient.email


def outgoing(
    reminder: models.Reminder,
    config: Config,
    now: datetime,
    words: Mapping[str, object] | None = None,
) -> OutgoingMessage:
    """The message for a reminder: with `words` just written (`wording.write`), or the words
    kept on its row."""
    if words is None:
        words = {
            "body": reminder.body,
            "subject": reminder.subject,
            "body_html": reminder.body_html,
        }
    to = destination(reminder) or ""
    body = words["body"]
    assert isinstance(body, str), "a reminder's words are written before it is sent"
    subject, html = words.get("subject"), words.get("body_html")
    if reminder.channel == "sms":
        return OutgoingMessage(reminder.id, "sms", to, body)
    enrolment = reminder.enrolment
    attachments: tuple[Attachment, ...] = ()
    change = change_of(reminder)
    cancelled = change is not None and change.event == "cancelled"
    if reminder.send_at < enrolment.starts_at or cancelled:
        zone = config.zone  # the procedure's date and times are on the unit's clock
        calendar = ics.appointment(
            enrolment_id=enrolment.id,
            version=enrolment.schedule_version,
            starts_at=enrolment.starts_at,
            arrival=(
                localize(enrolment.local_date, enrolment.arrival, zone)
                if enrolment.arrival else None
            ),
            unit=config.unit,
            now=now,
            cancelled=cancelled,
        )  # fmt: skip
        attachments = (Attachment("appointment.ics", "text/calendar", calendar),)
    mailbox = config.unit.email or (config.settings.smtp.mail_from if config.settings.smtp else "")
    return OutgoingMessage(
        reminder.id,
        "email",
        to,
        body,
        subject=subject if isinstance(subject, str) else None,
        html=html if isinstance(html, str) else None,
        attachments=attachments,
        headers=_unsubscribe_headers(config, enrolment.patient_id, to, mailbox),
    )


def _unsubscribe_headers(
    config: Config, patient_id: int, address: str, mailbox: str
) -> dict[str, str]:
    """A signed one-click link (RFC 8058) where the app is reachable, and a mailto always."""
    settings = config.settings
    mailto = f"<mailto:{mailbox}?subject=unsubscribe>"
    if not (settings.public_url and settings.secret_key):
        return {"List-Unsubscribe": mailto}
    url = unsubscribe.link(settings.public_url, settings.secret_key, patient_id, address)
    return {
        "List-Unsubscribe": f"<{url}>, {mailto}",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
