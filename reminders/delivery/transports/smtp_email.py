"""Email through an SMTP server, with `smtplib` and `email.message`."""

from __future__ import annotations

import contextlib
import smtplib
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, parseaddr

from reminders.delivery.transports import (
    AmbiguousError,
    ConfigurationError,
    OutgoingMessage,
    PermanentError,
    Sent,
    TransientError,
)
from reminders.settings import SmtpSettings


def message_id(reminder_id: int, mail_from: str) -> str:
    """The same Message-ID for every attempt at one reminder, so that if an interrupted attempt
    did reach the server, mail systems can tell a second copy for what it is."""
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "reminders.invalid"
    return f"<reminder-{reminder_id}@{domain}>"


# Lines up to RFC 5322's limit of 998: at the default 78, the List-Unsubscribe header's long
# URL (one word, no space to fold at) was folded into RFC 2047 encoded words, which mail
# programs do not decode in that header, so one-click unsubscribe (RFC 8058) never worked.
WIRE = SMTP.clone(max_line_length=998)


def build(message: OutgoingMessage, mail_from: str) -> EmailMessage:
    email = EmailMessage()
    email["From"] = mail_from
    email["To"] = message.to
    email["Subject"] = message.subject or ""
    email["Date"] = formatdate(localtime=False)
    email["Message-ID"] = message_id(message.reminder_id, mail_from)
    for name, value in message.headers.items():
        email[name] = value
    email.set_content(message.body)
    if message.html:
        email.add_alternative(message.html, subtype="html")
    for attachment in message.attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        email.add_attachment(
            attachment.data, maintype=maintype, subtype=subtype, filename=attachment.filename
        )
    return email


class SmtpEmail:
    name = "smtp"

    def __init__(self, settings: SmtpSettings, *, timeout: float) -> None:
        self.settings = settings
        self.timeout = timeout

    def send(self, message: OutgoingMessage) -> Sent:
        email = build(message, self.settings.mail_from)
        settings = self.settings
        delivered_data = accepted = False
        smtp = None
        try:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=self.timeout)
            if settings.starttls:
                smtp.starttls()
            if settings.username:
                smtp.login(settings.username, settings.password or "")
            smtp.ehlo_or_helo_if_needed()
            # A refused sender is our configuration, not the patient's address: try later.
            code, _reply = smtp.mail(parseaddr(settings.mail_from)[1])
            if code >= 400:
                raise ConfigurationError(
                    f"the mail server refused our sender: {code}", code=str(code)
                )
            _check(*smtp.rcpt(message.to), what="the address")
            # The last moment before the server can have the message: everything before the
            # text itself is undone by hanging up.
            message.may_leave()
            delivered_data = True
            # SMTP lines end in CRLF; smtplib fixes line endings of text, not of bytes.
            _check(*smtp.data(email.as_bytes(policy=WIRE)), what="the message")
            accepted = True
        except (PermanentError, TransientError):
            raise
        except smtplib.SMTPAuthenticationError as exc:
            raise ConfigurationError(
                f"the mail server refused our login: {exc.smtp_code}", code=str(exc.smtp_code)
            ) from None
        except smtplib.SMTPResponseException as exc:
            _check(exc.smtp_code, exc.smtp_error, what="the message")
            raise TransientError(f"unexpected mail server reply {exc.smtp_code}") from None
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            # Once the message text has gone, a broken connection may still have delivered it.
            error = AmbiguousError if delivered_data else TransientError
            raise error(f"no answer from the mail server: {type(exc).__name__}") from None
        finally:
            if smtp is not None and accepted:
                # Accepted: hang up without the goodbye (QUIT is one more round trip), so the
                # worker records it at once. A worker killed between the server's acceptance
                # and that record sends it again (the server cannot be asked what it has):
                # that window is kept as short as it can be (docs/reliability.md).
                smtp.close()
            elif smtp is not None:
                # A failed goodbye changes nothing.
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    smtp.quit()
        return Sent(f"smtp-{message.reminder_id}", delivery_status=None)

    def find_sent(self, message: OutgoingMessage, since: datetime) -> str | None:
        # SMTP cannot be asked what it accepted. Sending again, with the same Message-ID, is
        # chosen over losing the reminder.
        return None


def _check(code: int, reply: bytes | str, *, what: str) -> None:
    """Raise for a 4xx (try later) or 5xx (refused for good) reply; pass anything else."""
    if code < 400:
        return
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
    error = PermanentError if code >= 500 else TransientError
    verb = "refused" if code >= 500 else "deferred"
    raise error(f"the mail server {verb} {what}: {code} {text.strip()[:200]}", code=str(code))
