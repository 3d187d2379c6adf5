"""Settings from the environment (and an optional `.env`), read in one place and strictly.

A malformed value is refused with a message naming the variable, never guessed at: a typo in
`REMINDERS_SENDING_WINDOW` must not quietly let messages out at night. pydantic-settings finds
the variables; the types below decide what each may say; `Settings.from_env` turns pydantic's
report into the one line a person reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from reminders.core.clock import SendingWindow, parse_sending_window
from reminders.core.errors import ConfigError
from reminders.core.parsers import parse_bool, parse_timezone

# ConfigError is re-exported: `worker.py` and older callers import it from here.
__all__ = ["ConfigError", "Settings", "SmtpSettings", "TwilioSettings"]


def _time_zone(value: object) -> ZoneInfo:
    return parse_timezone(str(value))


def _true_or_false(value: object) -> bool:
    return parse_bool(str(value))


def _at_least(minimum: int) -> PlainValidator:
    def whole_number(value: object) -> int:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {value!r}") from None
        if number < minimum:
            raise ValueError(f"must be at least {minimum}, got {number}")
        return number

    return PlainValidator(whole_number)


MIN_SECRET_KEY = 32
MAKE_A_KEY = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


def _strong_key(value: str) -> str:
    # The key signs staff sessions, forms, device cookies and unsubscribe links: one short
    # enough to guess lets anyone sign in as anyone.
    if len(value) < MIN_SECRET_KEY:
        raise ConfigError(
            f"REMINDERS_SECRET_KEY: at least {MIN_SECRET_KEY} characters, got {len(value)}; "
            f"make one with: {MAKE_A_KEY}"
        )
    return value


def _base_url(value: str) -> str:
    parsed = urlsplit(value)
    if (
        parsed.scheme not in ("http", "https")
        or not parsed.hostname
        or parsed.path not in ("", "/")
    ):
        raise ValueError(
            "expected scheme, host and optional port only, such as "
            f"https://api.twilio.com, got {value!r}"
        )
    return value.rstrip("/")


TimeZone = Annotated[ZoneInfo, PlainValidator(_time_zone)]
TrueOrFalse = Annotated[bool, PlainValidator(_true_or_false)]
BaseUrl = Annotated[str, AfterValidator(_base_url)]
# parse_sending_window raises a ConfigError that already names REMINDERS_SENDING_WINDOW.
Window = Annotated[SendingWindow, PlainValidator(lambda value: parse_sending_window(str(value)))]


class TwilioSettings(BaseModel):
    """A Twilio account to send SMS through, complete or refused."""

    model_config = ConfigDict(frozen=True)

    account_sid: str = Field(validation_alias="TWILIO_ACCOUNT_SID")
    auth_token: str = Field(validation_alias="TWILIO_AUTH_TOKEN", repr=False)
    messaging_service_sid: str | None = Field(None, validation_alias="TWILIO_MESSAGING_SERVICE_SID")
    from_number: str | None = Field(None, validation_alias="TWILIO_FROM")
    base_url: BaseUrl = Field("https://api.twilio.com", validation_alias="TWILIO_BASE_URL")

    @model_validator(mode="before")
    @classmethod
    def _complete(cls, variables: dict[str, str]) -> dict[str, str | None]:
        sid, token = variables.get("TWILIO_ACCOUNT_SID"), variables.get("TWILIO_AUTH_TOKEN")
        service = variables.get("TWILIO_MESSAGING_SERVICE_SID")
        sender = variables.get("TWILIO_FROM")
        if not (sid and token and (service or sender)):
            raise ConfigError(
                "TWILIO_*: set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and one of "
                "TWILIO_MESSAGING_SERVICE_SID or TWILIO_FROM, or none of them to record SMS only"
            )
        return {
            **variables,
            # The Messaging Service wins when both are set (PRODUCT.md, Contracts).
            "TWILIO_MESSAGING_SERVICE_SID": service or None,
            "TWILIO_FROM": None if service else sender,
        }


class SmtpSettings(BaseModel):
    """A mail server to send email through, complete or refused."""

    model_config = ConfigDict(frozen=True)

    host: str = Field(validation_alias="SMTP_HOST")
    port: Annotated[int, _at_least(1)] = Field(587, validation_alias="SMTP_PORT")
    username: str | None = Field(None, validation_alias="SMTP_USERNAME")
    password: str | None = Field(None, validation_alias="SMTP_PASSWORD", repr=False)
    starttls: TrueOrFalse = Field(True, validation_alias="SMTP_STARTTLS")
    mail_from: str = Field(validation_alias="MAIL_FROM")

    @model_validator(mode="before")
    @classmethod
    def _complete(cls, variables: dict[str, str]) -> dict[str, str | None]:
        if not variables.get("MAIL_FROM"):
            raise ConfigError("MAIL_FROM: required with SMTP_HOST, the address emails come from")
        return {
            **variables,
            # docker-compose.yml passes these on empty when unset: no login then.
            "SMTP_USERNAME": variables.get("SMTP_USERNAME") or None,
            "SMTP_PASSWORD": variables.get("SMTP_PASSWORD") or None,
        }


# The provider groups, and the variables that switch each on: the others alone (a fake's
# TWILIO_BASE_URL, an SMTP_PORT left in a .env) configure nothing, as no account is named.
_GROUPS: dict[str, type[BaseModel]] = {"twilio": TwilioSettings, "smtp": SmtpSettings}
_SWITCHES = {
    "twilio": (
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_MESSAGING_SERVICE_SID",
        "TWILIO_FROM",
    ),
    "smtp": ("SMTP_HOST",),
}

# docker-compose.yml passes `${VAR:-}` on as an empty string, which for these means "not set";
# an empty time zone, number or switch is still refused.
_EMPTY_IS_UNSET = {
    "REMINDERS_DATABASE_URL",
    "REMINDERS_SENDING_WINDOW",
    "REMINDERS_CONFIG_DIR",
    "REMINDERS_TEMPLATES_DIR",
    "REMINDERS_BROKER_URL",
    "REMINDERS_PUBLIC_URL",
    "REMINDERS_METRICS_TOKEN",
}


# Secrets a container may be given as files (Docker and Kubernetes secrets): NAME_FILE names a
# file holding NAME's value, used when NAME itself is not set.
FILE_VARIABLES = (
    "REMINDERS_SECRET_KEY",
    "REMINDERS_DATABASE_URL",
    "REMINDERS_BROKER_URL",
    "REMINDERS_METRICS_TOKEN",
    "TWILIO_AUTH_TOKEN",
    "SMTP_PASSWORD",
)


def from_files(variables: Mapping[str, str | None]) -> dict[str, str]:
    """NAME for each NAME_FILE set while NAME is not, read from that file (one trailing line
    break taken off, as `echo` and editors leave one)."""
    found = {}
    for name in FILE_VARIABLES:
        path = variables.get(f"{name}_FILE")
        if not path or variables.get(name):
            continue
        try:
            found[name] = Path(path).read_text(encoding="utf-8").removesuffix("\n")
        except OSError as exc:
            raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
    return found


class _Files(PydanticBaseSettingsSource):
    """The variables `from_files` reads, top-level ones and provider groups alike."""

    def __init__(self, settings_cls: type[BaseSettings], variables: Mapping[str, str | None]):
        super().__init__(settings_cls)
        self.variables = variables

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads the files once

    def __call__(self) -> dict[str, Any]:
        files = from_files(self.variables)
        if not files:
            return {}
        groups = _Groups(self.settings_cls, {**self.variables, **files})()
        return {**files, **groups}


class _Groups(PydanticBaseSettingsSource):
    """Hands each provider group its variables together, so that the group is judged whole.

    pydantic-settings reads a field from one variable, or a nested one through a delimiter that
    TWILIO_FROM and MAIL_FROM do not follow; a group that is half set must be refused, not
    filled in field by field.
    """

    def __init__(self, settings_cls: type[BaseSettings], variables: Mapping[str, str | None]):
        super().__init__(settings_cls)
        self.variables = variables

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Part of the interface; __call__ reads whole groups instead of single fields.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        groups = {}
        for group, model in _GROUPS.items():
            names = [str(field.validation_alias) for field in model.model_fields.values()]
            found = {n: self.variables[n] for n in names if self.variables.get(n) is not None}
            if found:
                groups[group] = found
        return groups


def _shipped(name: str) -> Path:
    """`config/` or `templates/` as the package ships them, for a unit that has set no other."""
    shipped = files("reminders") / "defaults" / name
    # Installed as files on disk (a wheel or an editable install, never a zip), so a real path;
    # resolved, so that in a checkout messages name the repository's own config/ and templates/.
    return Path(str(shipped)).resolve()


def _local_database() -> str:
    return f"sqlite:///{Path('var').resolve() / 'reminders.db'}"


class Settings(BaseSettings):
    """Everything the environment says (PRODUCT.md, Contracts, Environment); read it with
    `Settings.from_env()`."""

    # Defaults are written below already in their final form, so only what was read is
    # validated; extra="ignore": a .env also holds docker-compose's own (POSTGRES_PASSWORD).
    model_config = SettingsConfigDict(
        env_file=".env", case_sensitive=True, extra="ignore", frozen=True, validate_default=False
    )

    database_url: str = Field(
        default_factory=_local_database, validation_alias="REMINDERS_DATABASE_URL"
    )
    timezone: TimeZone = Field(ZoneInfo("Europe/London"), validation_alias="REMINDERS_TIMEZONE")
    # None: take the unit file's window.
    sending_window: Window | None = Field(None, validation_alias="REMINDERS_SENDING_WINDOW")
    config_dir: Path = Field(
        default_factory=lambda: _shipped("config"), validation_alias="REMINDERS_CONFIG_DIR"
    )
    templates_dir: Path = Field(
        default_factory=lambda: _shipped("templates"), validation_alias="REMINDERS_TEMPLATES_DIR"
    )
    retention_days: Annotated[int, _at_least(0)] = Field(
        90, validation_alias="REMINDERS_RETENTION_DAYS"
    )
    log_level: Annotated[str, AfterValidator(str.upper)] = Field(
        "INFO", validation_alias="REMINDERS_LOG_LEVEL"
    )
    secret_key: Annotated[str, AfterValidator(_strong_key)] | None = Field(
        None, validation_alias="REMINDERS_SECRET_KEY", repr=False
    )
    broker_url: str | None = Field(None, validation_alias="REMINDERS_BROKER_URL")
    # When set, /metrics answers only `Authorization: Bearer <token>` (Prometheus'
    # `authorization` setting): it shows how many patients are waiting, and for what.
    metrics_token: str | None = Field(None, validation_alias="REMINDERS_METRICS_TOKEN", repr=False)
    public_url: BaseUrl | None = Field(None, validation_alias="REMINDERS_PUBLIC_URL")
    twilio: TwilioSettings | None = None
    smtp: SmtpSettings | None = None
    # Tuning for delivery; the defaults suit production, tests shorten them.
    # Seconds to wait for Twilio or the mail server.
    provider_timeout: Annotated[float, _at_least(1)] = Field(
        10.0, validation_alias="REMINDERS_PROVIDER_TIMEOUT_SECONDS"
    )
    # Seconds before the sweeper recovers a queued or sending row: a worker's lease on a row it
    # sends. Longer than any request can take (a connect and a read, each up to the provider's
    # timeout, and the moment between the last check and the request leaving), so that the
    # provider is never asked about a message whose request may still be on its way.
    stuck_after: Annotated[float, _at_least(1)] = Field(
        60.0, validation_alias="REMINDERS_STUCK_AFTER_SECONDS"
    )
    # Seconds the provider may be unable to say whether it has a message before the sweeper
    # gives up asking and settles it as "outcome unknown" (docs/reliability.md).
    outcome_unknown_after: Annotated[float, _at_least(1)] = Field(
        600.0, validation_alias="REMINDERS_OUTCOME_UNKNOWN_AFTER_SECONDS"
    )

    @model_validator(mode="after")
    def _lease_outlasts_a_request(self) -> Settings:
        longest = 2 * self.provider_timeout + 0.5
        if self.stuck_after <= longest:
            raise ConfigError(
                f"REMINDERS_STUCK_AFTER_SECONDS: must be more than {longest:g} seconds (twice "
                "REMINDERS_PROVIDER_TIMEOUT_SECONDS and half a second), so that a request "
                "still on its way is never taken for stuck"
            )
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """This process's settings: its environment, then a `.env` in the working directory
        (as docker-compose reads it), variable by variable. Given `environ`, that mapping's
        alone: tests and commands that build a child's environment need exactly what they
        wrote, whatever the process around them has set."""
        try:
            if environ is None:
                return cls()
            given = {**dict(environ), **from_files(environ)}
            sources = (InitSettingsSource(cls, init_kwargs=given), _Groups(cls, given))
            return cls(_build_sources=(sources, {}))
        except ValidationError as error:
            raise _one_line(error) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        assert isinstance(env_settings, EnvSettingsSource)
        assert isinstance(dotenv_settings, EnvSettingsSource)
        # Earlier sources win, variable by variable: the environment over .env.
        return (
            env_settings,
            _Groups(settings_cls, env_settings.env_vars),
            _Files(settings_cls, env_settings.env_vars),
            dotenv_settings,
            _Groups(settings_cls, dotenv_settings.env_vars),
        )

    @model_validator(mode="before")
    @classmethod
    def _drop_empty(cls, variables: dict[str, Any]) -> dict[str, Any]:
        return {
            name: value
            for name, value in variables.items()
            if value != "" or name not in _EMPTY_IS_UNSET
        }

    @field_validator("twilio", "smtp", mode="before")
    @classmethod
    def _switched_on(cls, variables: dict[str, str], info: ValidationInfo) -> dict[str, str] | None:
        switches = _SWITCHES[str(info.field_name)]
        return variables if any(variables.get(name) for name in switches) else None


def _one_line(error: ValidationError) -> ConfigError:
    """The first problem, as the sentence a person at a terminal or in a log reads."""
    first = error.errors()[0]
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, ConfigError):
        return cause  # written for a person already, naming its variables
    variable = first["loc"][-1] if first["loc"] else "settings"
    return ConfigError(f"{variable}: {cause if cause is not None else first['msg']}")
