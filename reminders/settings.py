"""Settings from the environment (and an optional `.env`), read in one place and strictly.

A malformed value is refused with a message naming the variable, never guessed at: a typo in
`REMINDERS_SENDING_WINDOW` must not quietly let messages out at night.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from dotenv import find_dotenv, load_dotenv

from reminders.core.clock import SendingWindow, parse_sending_window
from reminders.core.errors import ConfigError
from reminders.core.parsers import parse_bool, parse_timezone

PROJECT_ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def _parsed(parse: Callable[[str], T], value: str, *, source: str) -> T:
    """A value read by the core's own parser (the same words as an enrolment field takes), its
    refusal naming the variable."""
    try:
        return parse(value)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def parse_int(value: str, *, source: str, minimum: int = 0) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise ConfigError(f"{source}: expected a whole number, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{source}: must be at least {minimum}, got {number}")
    return number


@dataclass(frozen=True)
class TwilioSettings:
    account_sid: str
    auth_token: str = field(repr=False)
    messaging_service_sid: str | None
    from_number: str | None
    base_url: str


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)
    starttls: bool
    mail_from: str


def parse_base_url(value: str, *, source: str) -> str:
    parsed = urlsplit(value)
    if (
        parsed.scheme not in ("http", "https")
        or not parsed.hostname
        or parsed.path not in ("", "/")
    ):
        raise ConfigError(
            f"{source}: expected scheme, host and optional port only, such as "
            f"https://api.twilio.com, got {value!r}"
        )
    return value.rstrip("/")


def _twilio(env: Mapping[str, str]) -> TwilioSettings | None:
    sid, token = env.get("TWILIO_ACCOUNT_SID"), env.get("TWILIO_AUTH_TOKEN")
    service, sender = env.get("TWILIO_MESSAGING_SERVICE_SID"), env.get("TWILIO_FROM")
    if not any((sid, token, service, sender)):
        return None
    if not (sid and token and (service or sender)):
        raise ConfigError(
            "TWILIO_*: set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and one of "
            "TWILIO_MESSAGING_SERVICE_SID or TWILIO_FROM, or none of them to record SMS only"
        )
    return TwilioSettings(
        account_sid=sid,
        auth_token=token,
        # The Messaging Service wins when both are set (PRODUCT.md, Contracts).
        messaging_service_sid=service or None,
        from_number=None if service else sender,
        base_url=parse_base_url(
            env.get("TWILIO_BASE_URL", "https://api.twilio.com"), source="TWILIO_BASE_URL"
        ),
    )


def _smtp(env: Mapping[str, str]) -> SmtpSettings | None:
    host = env.get("SMTP_HOST")
    if not host:
        return None
    mail_from = env.get("MAIL_FROM")
    if not mail_from:
        raise ConfigError("MAIL_FROM: required with SMTP_HOST, the address emails come from")
    return SmtpSettings(
        host=host,
        port=parse_int(env.get("SMTP_PORT", "587"), source="SMTP_PORT", minimum=1),
        username=env.get("SMTP_USERNAME") or None,
        password=env.get("SMTP_PASSWORD") or None,
        starttls=_parsed(parse_bool, env.get("SMTP_STARTTLS", "true"), source="SMTP_STARTTLS"),
        mail_from=mail_from,
    )


@dataclass(frozen=True)
class Settings:
    database_url: str
    timezone: ZoneInfo
    sending_window: SendingWindow | None  # None: take the unit file's window
    config_dir: Path
    templates_dir: Path
    retention_days: int
    log_level: str
    secret_key: str | None
    broker_url: str | None
    public_url: str | None
    twilio: TwilioSettings | None
    smtp: SmtpSettings | None
    # Tuning for delivery; the defaults suit production, tests shorten them.
    provider_timeout: float = 10.0  # seconds to wait for Twilio or the mail server
    stuck_after: float = 60.0  # seconds before the sweeper recovers a queued or sending row

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        if environ is None:
            # The .env of the directory the command runs in, as docker-compose reads it; real
            # environment variables win over it.
            load_dotenv(find_dotenv(usecwd=True), override=False)
            environ = dict(os.environ)
        env = environ
        window = env.get("REMINDERS_SENDING_WINDOW")
        public = env.get("REMINDERS_PUBLIC_URL")
        return cls(
            database_url=env.get("REMINDERS_DATABASE_URL")
            or f"sqlite:///{Path('var').resolve() / 'reminders.store.db'}",
            timezone=_parsed(
                parse_timezone,
                env.get("REMINDERS_TIMEZONE", "Europe/London"),
                source="REMINDERS_TIMEZONE",
            ),
            sending_window=parse_sending_window(window) if window else None,
            config_dir=Path(env.get("REMINDERS_CONFIG_DIR") or PROJECT_ROOT / "config"),
            templates_dir=Path(env.get("REMINDERS_TEMPLATES_DIR") or PROJECT_ROOT / "templates"),
            retention_days=parse_int(
                env.get("REMINDERS_RETENTION_DAYS", "90"), source="REMINDERS_RETENTION_DAYS"
            ),
            log_level=env.get("REMINDERS_LOG_LEVEL", "INFO").upper(),
            secret_key=env.get("REMINDERS_SECRET_KEY"),
            broker_url=env.get("REMINDERS_BROKER_URL") or None,
            public_url=parse_base_url(public, source="REMINDERS_PUBLIC_URL") if public else None,
            twilio=_twilio(env),
            smtp=_smtp(env),
            provider_timeout=parse_int(
                env.get("REMINDERS_PROVIDER_TIMEOUT_SECONDS", "10"),
                source="REMINDERS_PROVIDER_TIMEOUT_SECONDS",
                minimum=1,
            ),
            stuck_after=parse_int(
                env.get("REMINDERS_STUCK_AFTER_SECONDS", "60"),
                source="REMINDERS_STUCK_AFTER_SECONDS",
                minimum=1,
            ),
        )
