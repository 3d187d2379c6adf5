"""The environment as PRODUCT.md (Contracts, Environment) names it: defaults, `.env`, groups that
are all there or not at all, and a one-line refusal naming the variable for anything malformed."""

from __future__ import annotations

import os
from datetime import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from paths import PROJECT_ROOT

import reminders
from reminders.core.clock import SendingWindow
from reminders.core.errors import ConfigError
from reminders.settings import Settings

TWILIO = {
    "TWILIO_ACCOUNT_SID": "AC00000000000000000000000000000001",
    "TWILIO_AUTH_TOKEN": "synthetic-twilio-token",
    "TWILIO_FROM": "+447911100001",
}
SMTP = {"SMTP_HOST": "mail.example.org", "MAIL_FROM": "Pain Unit <painunit@example.org>"}
PREFIXES = ("REMINDERS_", "TWILIO_", "SMTP_", "MAIL_FROM")


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A working directory of its own, and none of the project's variables in the process."""
    for name in list(os.environ):
        if name.startswith(PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults(clean: Path) -> None:
    settings = Settings.from_env({})
    assert settings.database_url == f"sqlite:///{clean / 'var' / 'reminders.db'}"
    assert settings.timezone == ZoneInfo("Europe/London")
    assert settings.sending_window is None  # the unit file's window then applies
    assert settings.retention_days == 90
    assert settings.log_level == "INFO"
    assert settings.secret_key is None
    assert settings.broker_url is None
    assert settings.public_url is None
    assert settings.twilio is None and settings.smtp is None
    assert settings.provider_timeout == 10 and settings.stuck_after == 60
    assert (settings.config_dir / "unit.yaml").is_file()
    assert (settings.config_dir / "protocols" / "sacroplasty.yaml").is_file()
    assert (settings.templates_dir / "en-GB" / "fasting" / "sms.txt").is_file()


def test_a_development_install_reads_the_repositorys_own_files(clean: Path) -> None:
    """The editable install of the README: a unit's edits to config/ and templates/ show."""
    if not Path(reminders.__file__).resolve().is_relative_to(PROJECT_ROOT):
        pytest.skip("reminders is not installed editable from this repository")
    settings = Settings.from_env({})
    assert settings.config_dir == PROJECT_ROOT / "config"
    assert settings.templates_dir == PROJECT_ROOT / "templates"


def test_values_are_read_and_typed(clean: Path) -> None:
    settings = Settings.from_env(
        {
            "REMINDERS_DATABASE_URL": "postgresql+psycopg://reminders@db/reminders",
            "REMINDERS_TIMEZONE": "America/New_York",
            "REMINDERS_SENDING_WINDOW": "09:00-17:30",
            "REMINDERS_CONFIG_DIR": str(clean / "unit-config"),
            "REMINDERS_TEMPLATES_DIR": str(clean / "unit-templates"),
            "REMINDERS_RETENTION_DAYS": "30",
            "REMINDERS_LOG_LEVEL": "debug",
            "REMINDERS_SECRET_KEY": "synthetic-secret-for-tests-only-0123456789",
            "REMINDERS_BROKER_URL": "redis://127.0.0.1:6379/0",
            "REMINDERS_PUBLIC_URL": "https://reminders.example.org/",
            "REMINDERS_PROVIDER_TIMEOUT_SECONDS": "2",
            "REMINDERS_STUCK_AFTER_SECONDS": "5",
        }
    )
    assert settings.database_url == "postgresql+psycopg://reminders@db/reminders"
    assert settings.timezone == ZoneInfo("America/New_York")
    assert settings.sending_window == SendingWindow(time(9), time(17, 30))
    assert settings.config_dir == clean / "unit-config"
    assert settings.templates_dir == clean / "unit-templates"
    assert settings.retention_days == 30
    assert settings.log_level == "DEBUG"
    assert settings.secret_key == "synthetic-secret-for-tests-only-0123456789"
    assert settings.broker_url == "redis://127.0.0.1:6379/0"
    assert settings.public_url == "https://reminders.example.org"
    assert settings.provider_timeout == 2 and settings.stuck_after == 5


def test_an_empty_value_is_unset_where_compose_writes_one(clean: Path) -> None:
    # docker-compose.yml passes `${VAR:-}` through, which arrives as an empty string.
    names = ("REMINDERS_DATABASE_URL", "REMINDERS_SENDING_WINDOW", "REMINDERS_CONFIG_DIR",
             "REMINDERS_TEMPLATES_DIR", "REMINDERS_BROKER_URL", "REMINDERS_PUBLIC_URL",
             *TWILIO, "TWILIO_MESSAGING_SERVICE_SID", "SMTP_HOST", "SMTP_USERNAME",
             "SMTP_PASSWORD", "MAIL_FROM")  # fmt: skip
    empty = Settings.from_env(dict.fromkeys(names, ""))
    default = Settings.from_env({})
    for name in ("database_url", "sending_window", "config_dir", "templates_dir"):
        assert getattr(empty, name) == getattr(default, name), name
    assert (empty.broker_url, empty.public_url, empty.twilio, empty.smtp) == (None,) * 4


def test_an_explicit_mapping_ignores_the_process_and_dot_env(
    clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMINDERS_TIMEZONE", "America/New_York")
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", TWILIO["TWILIO_ACCOUNT_SID"])
    (clean / ".env").write_text("REMINDERS_RETENTION_DAYS=7\nSMTP_HOST=mail.example.org\n")
    settings = Settings.from_env({"REMINDERS_LOG_LEVEL": "WARNING"})
    assert settings.timezone == ZoneInfo("Europe/London")
    assert settings.retention_days == 90
    assert settings.twilio is None and settings.smtp is None
    assert settings.log_level == "WARNING"


def test_the_environment_and_dot_env_the_environment_winning(
    clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean / ".env").write_text(
        "REMINDERS_TIMEZONE=Europe/Paris\n"
        "REMINDERS_RETENTION_DAYS=30\n"
        f"TWILIO_AUTH_TOKEN={TWILIO['TWILIO_AUTH_TOKEN']}\n"
        f"TWILIO_FROM={TWILIO['TWILIO_FROM']}\n"
        "TWILIO_MESSAGING_SERVICE_SID=MG00000000000000000000000000000001\n"
    )
    monkeypatch.setenv("REMINDERS_TIMEZONE", "America/New_York")
    # One group may come partly from each; the variable, not the group, is what wins.
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", TWILIO["TWILIO_ACCOUNT_SID"])
    monkeypatch.setenv("TWILIO_MESSAGING_SERVICE_SID", "")
    settings = Settings.from_env()
    assert settings.timezone == ZoneInfo("America/New_York")
    assert settings.retention_days == 30
    assert settings.twilio is not None
    assert settings.twilio.account_sid == TWILIO["TWILIO_ACCOUNT_SID"]
    assert settings.twilio.auth_token == TWILIO["TWILIO_AUTH_TOKEN"]
    assert settings.twilio.messaging_service_sid is None
    assert settings.twilio.from_number == TWILIO["TWILIO_FROM"]


def test_no_dot_env_is_no_error(clean: Path) -> None:
    assert Settings.from_env().retention_days == 90


def test_twilio_with_a_from_number(clean: Path) -> None:
    twilio = Settings.from_env(TWILIO).twilio
    assert twilio is not None
    assert twilio.account_sid == TWILIO["TWILIO_ACCOUNT_SID"]
    assert twilio.auth_token == TWILIO["TWILIO_AUTH_TOKEN"]
    assert twilio.from_number == "+447911100001"
    assert twilio.messaging_service_sid is None
    assert twilio.base_url == "https://api.twilio.com"


def test_the_messaging_service_wins_over_the_from_number(clean: Path) -> None:
    service = "MG00000000000000000000000000000001"
    twilio = Settings.from_env({**TWILIO, "TWILIO_MESSAGING_SERVICE_SID": service}).twilio
    assert twilio is not None
    assert twilio.messaging_service_sid == service
    assert twilio.from_number is None


def test_twilio_base_url_takes_scheme_host_and_port(clean: Path) -> None:
    twilio = Settings.from_env({**TWILIO, "TWILIO_BASE_URL": "http://127.0.0.1:8123/"}).twilio
    assert twilio is not None and twilio.base_url == "http://127.0.0.1:8123"
    # Alone it switches nothing on: a fake's address left in a .env sends nothing anywhere.
    assert Settings.from_env({"TWILIO_BASE_URL": "http://127.0.0.1:8123"}).twilio is None


HALF_TWILIO = (
    "TWILIO_*: set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and one of "
    "TWILIO_MESSAGING_SERVICE_SID or TWILIO_FROM, or none of them to record SMS only"
)


@pytest.mark.parametrize(
    "missing",
    [
        ("TWILIO_ACCOUNT_SID",),
        ("TWILIO_AUTH_TOKEN",),
        ("TWILIO_FROM",),
        ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"),
        ("TWILIO_AUTH_TOKEN", "TWILIO_FROM"),
    ],
)
def test_half_a_twilio_account_is_refused(clean: Path, missing: tuple[str, ...]) -> None:
    given = {name: value for name, value in TWILIO.items() if name not in missing}
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(given)
    assert str(refused.value) == HALF_TWILIO


def test_smtp_with_its_defaults(clean: Path) -> None:
    smtp = Settings.from_env(SMTP).smtp
    assert smtp is not None
    assert (smtp.host, smtp.port, smtp.starttls) == ("mail.example.org", 587, True)
    assert (smtp.username, smtp.password) == (None, None)
    assert smtp.mail_from == "Pain Unit <painunit@example.org>"


@pytest.mark.parametrize(
    ("value", "starttls"),
    [("true", True), ("YES", True), (" yes ", True), ("false", False), ("No", False)],
)  # fmt: skip
def test_smtp_starttls_reads_the_usual_words(clean: Path, value: str, starttls: bool) -> None:
    smtp = Settings.from_env({**SMTP, "SMTP_STARTTLS": value, "SMTP_PORT": " 25 "}).smtp
    assert smtp is not None
    assert (smtp.starttls, smtp.port) == (starttls, 25)


def test_smtp_variables_without_a_host_switch_nothing_on(clean: Path) -> None:
    settings = Settings.from_env({"SMTP_PORT": "not a port", "MAIL_FROM": SMTP["MAIL_FROM"]})
    assert settings.smtp is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REMINDERS_TIMEZONE": "Mars/Olympus_Mons"},
         "REMINDERS_TIMEZONE: 'Mars/Olympus_Mons' is not a known time zone; use an IANA name "
         "such as Europe/London"),
        ({"REMINDERS_TIMEZONE": "Etc"},
         "REMINDERS_TIMEZONE: 'Etc' is not a known time zone; use an IANA name such as "
         "Europe/London"),
        ({"REMINDERS_TIMEZONE": ""},
         "REMINDERS_TIMEZONE: '' is not a known time zone; use an IANA name such as Europe/London"),
        ({"REMINDERS_SENDING_WINDOW": "8-20"},
         "REMINDERS_SENDING_WINDOW: expected HH:MM-HH:MM such as 08:00-20:00, got '8-20'"),
        ({"REMINDERS_SENDING_WINDOW": "20:00-08:00"},
         "REMINDERS_SENDING_WINDOW: the window must end after it starts, got '20:00-08:00'"),
        ({"REMINDERS_RETENTION_DAYS": "ninety"},
         "REMINDERS_RETENTION_DAYS: expected a whole number, got 'ninety'"),
        ({"REMINDERS_RETENTION_DAYS": "-1"},
         "REMINDERS_RETENTION_DAYS: must be at least 0, got -1"),
        ({"REMINDERS_RETENTION_DAYS": "2.5"},
         "REMINDERS_RETENTION_DAYS: expected a whole number, got '2.5'"),
        ({"REMINDERS_PROVIDER_TIMEOUT_SECONDS": "0"},
         "REMINDERS_PROVIDER_TIMEOUT_SECONDS: must be at least 1, got 0"),
        ({"REMINDERS_STUCK_AFTER_SECONDS": ""},
         "REMINDERS_STUCK_AFTER_SECONDS: expected a whole number, got ''"),
        ({"REMINDERS_PUBLIC_URL": "https://reminders.example.org/callbacks"},
         "REMINDERS_PUBLIC_URL: expected scheme, host and optional port only, such as "
         "https://api.twilio.com, got 'https://reminders.example.org/callbacks'"),
        ({"REMINDERS_PUBLIC_URL": "reminders.example.org"},
         "REMINDERS_PUBLIC_URL: expected scheme, host and optional port only, such as "
         "https://api.twilio.com, got 'reminders.example.org'"),
        ({**TWILIO, "TWILIO_BASE_URL": "ftp://127.0.0.1"},
         "TWILIO_BASE_URL: expected scheme, host and optional port only, such as "
         "https://api.twilio.com, got 'ftp://127.0.0.1'"),
        ({**TWILIO, "TWILIO_BASE_URL": ""},
         "TWILIO_BASE_URL: expected scheme, host and optional port only, such as "
         "https://api.twilio.com, got ''"),
        ({"SMTP_HOST": "mail.example.org"},
         "MAIL_FROM: required with SMTP_HOST, the address emails come from"),
        ({**SMTP, "MAIL_FROM": ""},
         "MAIL_FROM: required with SMTP_HOST, the address emails come from"),
        ({**SMTP, "SMTP_PORT": "smtp"}, "SMTP_PORT: expected a whole number, got 'smtp'"),
        ({**SMTP, "SMTP_PORT": "0"}, "SMTP_PORT: must be at least 1, got 0"),
        ({**SMTP, "SMTP_STARTTLS": "maybe"},
         "SMTP_STARTTLS: 'maybe' is not one of true, false, yes, no"),
        ({**SMTP, "SMTP_STARTTLS": ""}, "SMTP_STARTTLS: '' is not one of true, false, yes, no"),
    ],
)  # fmt: skip
def test_a_malformed_value_is_refused_in_one_line_naming_it(
    clean: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    assert str(refused.value) == message


def test_a_malformed_value_in_dot_env_is_refused_too(clean: Path) -> None:
    (clean / ".env").write_text("REMINDERS_RETENTION_DAYS=forever\n")
    with pytest.raises(ConfigError, match=r"^REMINDERS_RETENTION_DAYS: expected a whole number"):
        Settings.from_env()


def test_secrets_stay_out_of_the_repr(clean: Path) -> None:
    settings = Settings.from_env(
        {
            **TWILIO,
            **SMTP,
            "SMTP_USERNAME": "painunit",
            "SMTP_PASSWORD": "synthetic-smtp-password",
            "REMINDERS_SECRET_KEY": "synthetic-secret-key-for-tests-only-0123456789",
        }
    )
    shown = repr(settings)
    assert "painunit" in shown  # the groups are there: the test looks in the right place
    for secret in (
        "synthetic-twilio-token",
        "synthetic-smtp-password",
        "synthetic-secret-key-for-tests-only-0123456789",
    ):
        assert secret not in shown
        assert secret not in repr(settings.twilio) + repr(settings.smtp)


# --- secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["x", "short-but-not-short-enough-0123"])
def test_a_weak_secret_key_is_refused_saying_how_to_make_one(key: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"REMINDERS_SECRET_KEY": key})
    assert str(refused.value) == (
        f"REMINDERS_SECRET_KEY: at least 32 characters, got {len(key)}; make one with: "
        "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
    )


def test_secrets_can_come_from_files_as_containers_give_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, token = tmp_path / "key", tmp_path / "token"
    key.write_text("k" * 40 + "\n")
    token.write_text("synthetic-auth-token\n")
    given = {
        "REMINDERS_SECRET_KEY_FILE": str(key), "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_AUTH_TOKEN_FILE": str(token), "TWILIO_FROM": "+447700900000",
    }  # fmt: skip
    for settings in (Settings.from_env(given), _from_environment(monkeypatch, given)):
        assert settings.secret_key == "k" * 40
        assert settings.twilio is not None and settings.twilio.auth_token == "synthetic-auth-token"
    # The variable itself wins over its file.
    direct = Settings.from_env({**given, "REMINDERS_SECRET_KEY": "d" * 32})
    assert direct.secret_key == "d" * 32


def _from_environment(monkeypatch: pytest.MonkeyPatch, given: dict[str, str]) -> Settings:
    monkeypatch.chdir(Path(__file__).parent)  # no .env here
    for name in list(os.environ):
        if name.startswith(("REMINDERS_", "TWILIO_", "SMTP_", "MAIL_")):
            monkeypatch.delenv(name)
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env()


def test_a_secret_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"REMINDERS_SECRET_KEY_FILE": str(tmp_path / "nowhere")})
    assert str(refused.value) == (
        f"REMINDERS_SECRET_KEY_FILE: cannot read {tmp_path / 'nowhere'}: No such file or directory"
    )
