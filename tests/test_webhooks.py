"""Twilio's status callbacks, signed with the twilio package as Twilio signs them, posted to
the app: delivery status moves forward only, and nothing changes without a valid signature."""

from __future__ import annotations

import re
import secrets
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from fakes.smtp import FakeSmtp
from fakes.twilio import FakeTwilio
from fastapi.testclient import TestClient
from sqlalchemy import select
from twilio.request_validator import RequestValidator
from world import EMAIL, PHONE, World

from reminders.delivery import sweep
from reminders.interfaces.web.app import create_app
from reminders.settings import Settings
from reminders.store import models
from reminders.store.db import session_scope

URL = "https://reminders.example.org/webhooks/twilio/status"


@pytest.fixture
def client(w: World) -> TestClient:
    return TestClient(create_app(w.config.settings))


def post(client: TestClient, params: dict[str, str], *, token: str | None, url: str = URL) -> int:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if token is not None:
        headers["X-Twilio-Signature"] = RequestValidator(token).compute_signature(url, params)
    response = client.post("/webhooks/twilio/status", content=urlencode(params), headers=headers)
    return response.status_code


def sent_sms(w: World) -> models.Reminder:
    w.enrol(email=None)
    w.deliver()
    return next(r for r in w.reminders("sent") if r.rule == "booking-confirmation")


def receipt(sid: str, status: str, **extra: str) -> dict[str, str]:
    return {"MessageSid": sid, "MessageStatus": status, "To": PHONE, "AccountSid": "AC" + "0" * 32,
            "SmsStatus": status, **extra}  # fmt: skip


def status_of(w: World, reminder_id: int) -> tuple[str | None, str | None]:
    with session_scope(w.factory) as session:
        row = session.get(models.Reminder, reminder_id)
        assert row is not None
        return row.delivery_status, row.error_code


def test_receipts_move_status_forward_only(
    w: World, client: TestClient, fake_twilio: FakeTwilio
) -> None:
    reminder = sent_sms(w)
    assert reminder.delivery_status == "queued"
    sid, token = reminder.provider_id or "", fake_twilio.auth_token
    assert post(client, receipt(sid, "sent"), token=token) == 204
    assert status_of(w, reminder.id) == ("sent", None)
    assert post(client, receipt(sid, "delivered"), token=token) == 204
    assert status_of(w, reminder.id) == ("delivered", None)
    # Replayed and out of order: a late "sent" or "queued" never overwrites "delivered".
    for late in ("sent", "queued", "delivered"):
        assert post(client, receipt(sid, late), token=token) == 204
        assert status_of(w, reminder.id) == ("delivered", None)


def test_an_undelivered_message_is_recorded_for_staff(
    w: World, client: TestClient, fake_twilio: FakeTwilio
) -> None:
    reminder = sent_sms(w)
    params = receipt(reminder.provider_id or "", "undelivered", ErrorCode="30003")
    assert post(client, params, token=fake_twilio.auth_token) == 204
    assert status_of(w, reminder.id) == ("undelivered", "30003")
    with session_scope(w.factory) as session:
        items = session.scalars(select(models.AttentionItem)).all()
        assert [i.kind for i in items] == ["delivery-failed"]
        assert "was not delivered: undelivered (code 30003)" in items[0].message


@pytest.mark.parametrize(
    ("token", "url"),
    [
        (None, URL),  # no signature at all
        ("0" * 32, URL),  # signed with someone else's token
        ("OURS", "https://elsewhere.example.org/webhooks/twilio/status"),  # for another URL
    ],
)
def test_a_forged_or_missing_signature_is_refused_and_changes_nothing(
    w: World, client: TestClient, fake_twilio: FakeTwilio, token: str | None, url: str
) -> None:
    reminder = sent_sms(w)
    signer = fake_twilio.auth_token if token == "OURS" else token
    params = receipt(reminder.provider_id or "", "delivered")
    assert post(client, params, token=signer, url=url) == 403
    assert status_of(w, reminder.id) == ("queued", None)


def test_a_receipt_for_an_unknown_message_is_acknowledged(
    w: World, client: TestClient, fake_twilio: FakeTwilio
) -> None:
    assert post(client, receipt("SM" + "f" * 32, "delivered"), token=fake_twilio.auth_token) == 204


INBOUND = "https://reminders.example.org/webhooks/twilio/inbound"


def inbound(client: TestClient, token: str, body: str, **extra: str) -> tuple[int, str]:
    """A patient's message as Twilio posts it, each with its own MessageSid."""
    params = {"From": PHONE, "To": "+447911199999", "Body": body,
              "MessageSid": "SM" + secrets.token_hex(16), **extra}  # fmt: skip
    signature = RequestValidator(token).compute_signature(INBOUND, params)
    response = client.post(
        "/webhooks/twilio/inbound",
        content=urlencode(params),
        headers={"Content-Type": "application/x-www-form-urlencoded",
                 "X-Twilio-Signature": signature},
    )  # fmt: skip
    return response.status_code, response.text


def test_stop_then_a_due_reminder_goes_by_email_only_and_start_brings_sms_back(
    w: World, client: TestClient, fake_twilio: FakeTwilio
) -> None:
    token = fake_twilio.auth_token
    status, twiml = inbound(client, token, "Stop")
    assert status == 200 and twiml.endswith("<Response></Response>")  # Twilio confirms STOP
    w.enrol()
    w.deliver()
    assert fake_twilio.messages_to(PHONE) == []
    assert {r.channel for r in w.reminders("sent")} == {"email"}
    assert {r.cancel_reason for r in w.reminders("skipped")} == {"opted out"}

    assert inbound(client, token, "START")[0] == 200
    w.enrol(booking_ref="BK-2009")
    w.deliver()
    assert len(fake_twilio.messages_to(PHONE)) == 3


def test_help_is_answered_with_the_units_contact(w: World, client: TestClient,
                                                 fake_twilio: FakeTwilio) -> None:  # fmt: skip
    status, twiml = inbound(client, fake_twilio.auth_token, "help")
    assert status == 200
    assert "<Message>Pain Management Unit, Example General Hospital: call 020 7946 0000" in twiml


def test_a_free_text_reply_is_kept_for_staff(w: World, client: TestClient,
                                             fake_twilio: FakeTwilio) -> None:  # fmt: skip
    w.enrol(email=None)
    assert inbound(client, fake_twilio.auth_token, "Can I bring my daughter?")[0] == 200
    with session_scope(w.factory) as session:
        (item,) = session.scalars(select(models.AttentionItem)).all()
        assert item.kind == "reply" and item.enrolment_id is not None
        assert item.message == "Patient replied: Can I bring my daughter?"


def test_an_unsigned_inbound_message_changes_nothing(w: World, client: TestClient) -> None:
    response = client.post(
        "/webhooks/twilio/inbound",
        content=urlencode({"From": PHONE, "Body": "STOP"}),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 403
    with session_scope(w.factory) as session:
        assert session.scalars(select(models.OptOut)).all() == []


def test_21610_from_twilio_opts_the_number_out(w: World, fake_twilio: FakeTwilio) -> None:
    fake_twilio.fail_to[PHONE] = 21610
    w.enrol(email=None)
    w.deliver()
    with session_scope(w.factory) as session:
        (opt_out,) = session.scalars(select(models.OptOut)).all()
        assert (opt_out.channel, opt_out.destination) == ("sms", PHONE)


def unsubscribe_link(fake_smtp: FakeSmtp) -> str:
    header = str(fake_smtp.to(EMAIL)[0]["List-Unsubscribe"])
    return header.split(">")[0].removeprefix("<").removeprefix("https://reminders.example.org")


def test_the_email_unsubscribe_link_confirms_then_stops_email_only(
    w: World, client: TestClient, fake_twilio: FakeTwilio, fake_smtp: FakeSmtp
) -> None:
    w.enrol()
    w.deliver()
    path = unsubscribe_link(fake_smtp)
    page = client.get(path)
    assert page.status_code == 200 and 'method="post"' in page.text
    with session_scope(w.factory) as session:
        assert session.scalars(select(models.OptOut)).all() == []  # a GET changes nothing
    # What a mail client's one-click unsubscribe sends (RFC 8058).
    done = client.post(path, content="List-Unsubscribe=One-Click",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert done.status_code == 200 and "unsubscribed" in done.text
    emails_before, texts_before = len(fake_smtp.received), len(fake_twilio.messages)
    w.enrol(booking_ref="BK-2010")
    w.deliver()
    assert len(fake_smtp.received) == emails_before  # no more email
    assert len(fake_twilio.messages) == texts_before + 3  # texts carry on


def test_a_forged_unsubscribe_link_is_refused(w: World, client: TestClient) -> None:
    assert client.get("/unsubscribe/not-a-real-token").status_code == 404
    assert client.post("/unsubscribe/eyJwYXRpZW50IjoxfQ.forged").status_code == 404


def test_a_medication_instruction_that_never_arrived_goes_on_the_call_list(
    w: World, fake_twilio: FakeTwilio
) -> None:
    fake_twilio.fail_to[PHONE] = 21211
    start = w.clock.now + timedelta(days=3)
    w.enrol(email=None, date=start.date(), anticoagulant="warfarin",
            anticoagulant_hold_days=1, anticoagulant_restart_days=0,
            anticoagulant_hold_reason="One day, as haematology advised")  # fmt: skip
    w.deliver()  # the plan message fails at once
    w.clock.advance(days=3)
    sweep.sweep(w.factory, w.config, w.transports, clock=w.clock)
    with session_scope(w.factory) as session:
        calls = session.scalars(
            select(models.AttentionItem).where(models.AttentionItem.kind == "not-delivered")
        ).all()
    messages = {c.message for c in calls if c.needs_call}
    assert "Call the patient: 'anticoagulant-plan' did not reach them before it was needed." in (
        messages
    )


def test_logs_of_the_patient_side_carry_no_number_address_or_text(
    w: World, fake_twilio: FakeTwilio, fake_smtp: FakeSmtp, delivery_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    client = TestClient(
        create_app(Settings.from_env({**delivery_env, "REMINDERS_LOG_LEVEL": "DEBUG"}))
    )
    token = fake_twilio.auth_token
    fake_twilio.fail_to["+447911100011"] = 21211
    w.enrol()
    w.enrol(booking_ref="BK-2011", phone="+447911100011", email="other@example.org")
    w.deliver()
    sent = next(r for r in w.reminders("sent") if r.channel == "sms")
    post(client, receipt(sent.provider_id or "", "delivered"), token=token)
    inbound(client, token, "Can I bring my daughter?")
    inbound(client, token, "HELP")
    inbound(client, token, "STOP")
    client.post(unsubscribe_link(fake_smtp))
    output = capsys.readouterr().err
    assert "webhooks/twilio" in output or "reminder " in output  # there were logs to read
    secrets = [PHONE, PHONE.removeprefix("+"), "+447911100011", EMAIL, "other@example.org",
               "Can I bring my daughter?", sent.body[:40]]  # fmt: skip
    for secret in secrets:
        assert secret not in output, secret


def test_a_replayed_start_does_not_undo_a_later_stop(
    w: World, client: TestClient, fake_twilio: FakeTwilio
) -> None:
    """A signed START captured on the way and posted again after the patient's STOP: the
    same MessageSid, so it is recognised and changes nothing."""
    token = fake_twilio.auth_token
    start = "SM" + "5" * 32
    assert inbound(client, token, "START", MessageSid=start)[0] == 200
    assert inbound(client, token, "STOP")[0] == 200
    assert inbound(client, token, "START", MessageSid=start)[0] == 200  # the replay
    with session_scope(w.factory) as session:
        opted_out = session.scalars(select(models.OptOut.destination)).all()
    assert opted_out == [PHONE]
    w.enrol(email=None)
    w.deliver()
    assert fake_twilio.messages_to(PHONE) == []


def test_a_status_callback_changes_only_a_message_twilio_sent(
    w: World, client: TestClient, fake_twilio: FakeTwilio
) -> None:
    w.enrol(phone=None)
    w.deliver()
    email = next(r for r in w.reminders("sent") if r.channel == "email")
    assert email.provider_id and email.transport == "smtp"
    before = status_of(w, email.id)
    posted = post(client, receipt(email.provider_id, "undelivered", ErrorCode="30003"),
                  token=fake_twilio.auth_token)  # fmt: skip
    assert posted == 204
    assert status_of(w, email.id) == before


def test_an_old_unsubscribe_link_does_not_unsubscribe_whoever_has_the_id_now(
    w: World, client: TestClient, fake_smtp: FakeSmtp
) -> None:
    """After the retention purge an id can be someone else's (SQLite reuses them): the link is
    bound to the address it was sent to, so it unsubscribes nobody else."""
    w.enrol()
    w.deliver()
    path = unsubscribe_link(fake_smtp)
    with session_scope(w.factory) as session:  # the row now belongs to someone new
        patient = session.scalars(select(models.Patient)).one()
        patient.email = "someone.else@example.org"
    assert client.get(path).status_code == 404
    assert client.post(path, content="List-Unsubscribe=One-Click",
                       headers={"Content-Type": "application/x-www-form-urlencoded"}
                       ).status_code == 404  # fmt: skip
    with session_scope(w.factory) as session:
        assert session.scalars(select(models.OptOut)).all() == []


def test_the_unsubscribe_header_goes_over_the_wire_as_mail_programs_read_it(
    w: World, fake_smtp: FakeSmtp
) -> None:
    """Read from the raw bytes the mail server received: a parsed message decodes RFC 2047
    encoded words, which hid that the header was sent encoded (and so unusable)."""
    w.enrol()
    w.deliver()
    raw = fake_smtp.received[0].raw.decode("ascii")
    headers = raw.split("\r\n\r\n", 1)[0]
    line = next(h for h in headers.split("\r\n") if h.startswith("List-Unsubscribe:"))
    assert re.fullmatch(
        r"List-Unsubscribe: <https://reminders\.example\.org/unsubscribe/[A-Za-z0-9._-]+>, "
        r"<mailto:[^>]+\?subject=unsubscribe>",
        line,
    ), line
    assert "=?utf-8?" not in line
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in headers
