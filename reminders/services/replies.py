"""What a patient's text back means: STOP and its synonyms opt the number out of SMS, START
opts it back in, HELP asks who we are; anything else is a reply for staff to read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from xml.sax.saxutils import escape

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from reminders.core.protocols import Unit
from reminders.store import journal, lifecycle, models

# Twilio's own keyword lists (it confirms STOP and START to the patient itself).
STOP_WORDS = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"}
START_WORDS = {"START", "YES", "UNSTOP"}
HELP_WORDS = {"HELP", "INFO"}
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


@dataclass(frozen=True)
class Answer:
    twiml: str
    kind: str  # stop, start, help or reply


def keyword(body: str, opt_out_type: str | None) -> str:
    """Twilio's OptOutType when it sent one, else the message's single word."""
    if opt_out_type:
        return opt_out_type.strip().upper()
    words = body.strip().upper().split()
    return words[0].strip(".!") if len(words) == 1 else ""


# How long a message's id is remembered: a replay later than this would be handled again.
# The ids alone, no patient data.
REMEMBER_IDS = timedelta(days=400)


def forget_old_ids(session: Session, now: datetime) -> None:
    table = models.InboundMessage
    session.execute(delete(table).where(table.received_at < now - REMEMBER_IDS))


def first_time(session: Session, provider_id: str, now: datetime) -> bool:
    """Whether the message with this id is new; recorded as seen in the same transaction as
    what it changes, so that two deliveries of it at once cannot both be handled."""
    table = models.InboundMessage
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    # RETURNING, not the row count, which psycopg reports as 1 for a row left alone.
    added = session.scalar(
        insert(table)
        .values(provider_id=provider_id[:64], received_at=now)
        .on_conflict_do_nothing(index_elements=["provider_id"])
        .returning(table.provider_id)
    )
    return added is not None


def handle_inbound(
    session: Session, unit: Unit, *, sender: str, body: str, opt_out_type: str | None,
    now: datetime, provider_id: str = "",
) -> Answer:  # fmt: skip
    """What a patient's message does. A message the provider has delivered before (by its id,
    MessageSid) does nothing again: opt-outs and opt-ins are applied in the order they first
    arrived, never by a replay."""
    if provider_id and not first_time(session, provider_id, now):
        return Answer(EMPTY_TWIML, "repeat")
    word = keyword(body, opt_out_type)
    if word in STOP_WORDS:
        opt_out(session, "sms", sender, source="STOP reply", now=now)
        _note(session, sender, "opt-out", "Replied STOP: no more texts to this number.", now)
        return Answer(EMPTY_TWIML, "stop")
    if word in START_WORDS:
        session.execute(
            delete(models.OptOut).where(
                models.OptOut.channel == "sms", models.OptOut.destination == sender
            )
        )
        return Answer(EMPTY_TWIML, "start")
    if word in HELP_WORDS:
        text = (
            f"{unit.name}, {unit.hospital}: call {unit.phone} ({unit.opening_hours}). "
            "Reply STOP to stop these texts. If it is urgent, call NHS 111."
        )
        return Answer(
            '<?xml version="1.0" encoding="UTF-8"?>'
            f"<Response><Message>{escape(text)}</Message></Response>",
            "help",
        )
    _note(session, sender, "reply", f"Patient replied: {body.strip()[:1000]}", now)
    return Answer(EMPTY_TWIML, "reply")


def opt_out(
    session: Session, channel: str, destination: str, *, source: str, now: datetime
) -> None:
    exists = session.scalar(
        select(models.OptOut.id).where(
            models.OptOut.channel == channel, models.OptOut.destination == destination
        )
    )
    if exists is None:
        session.add(
            models.OptOut(channel=channel, destination=destination, source=source, created_at=now)
        )
        session.flush()
    # With the opt-out, in its transaction: nothing to them whose request has not left goes
    # after this commits (a worker's last check, `holds.go`, waits for it and then sees it).
    lifecycle.fence_opted_out(session, channel, destination)


def _note(session: Session, sender: str, kind: str, message: str, now: datetime) -> None:
    """Put it in front of staff, against the patient's latest enrolment with this number."""
    enrolment_id = session.scalar(
        select(models.Enrolment.id)
        .join(models.Patient)
        .where(models.Patient.phone == sender)
        .order_by(models.Enrolment.starts_at.desc())
        .limit(1)
    )
    journal.note(session, kind, message, now=now, enrolment_id=enrolment_id)
