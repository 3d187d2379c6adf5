"""One parser for each kind of value, refusing it in the same words wherever it is typed: an
enrolment field, an environment variable, the API's query string, the staff's search."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from factories import make_enrolment

from reminders.config import Config
from reminders.core.enrolment import InvalidEnrolment, parse_fields
from reminders.core.errors import ConfigError
from reminders.settings import Settings

SMTP = {"SMTP_HOST": "127.0.0.1", "MAIL_FROM": "unit@example.org"}


def field_problem(config: Config, name: str, value: str) -> str:
    fields = {**make_enrolment().as_fields(), name: value}
    with pytest.raises(InvalidEnrolment) as refused:
        parse_fields(fields, protocols=config.protocols, default_timezone=ZoneInfo("UTC"))
    [problem] = refused.value.problems
    return problem


def setting_problem(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    return str(refused.value)


@pytest.mark.parametrize(("word", "meaning"), [("true", True), ("Yes", True), ("no", False)])
def test_a_setting_takes_yes_and_no_as_sedation_does(word: str, meaning: bool) -> None:
    smtp = Settings.from_env({**SMTP, "SMTP_STARTTLS": word}).smtp
    assert smtp is not None and smtp.starttls is meaning


@pytest.mark.parametrize("word", ["on", "1", "maybe"])
def test_a_setting_refuses_other_words_as_sedation_does(config: Config, word: str) -> None:
    refused = setting_problem({**SMTP, "SMTP_STARTTLS": word})
    assert refused == f"SMTP_STARTTLS: {word!r} is not one of true, false, yes, no"
    assert field_problem(config, "sedation", word) == refused.replace("SMTP_STARTTLS", "sedation")


@pytest.mark.parametrize("zone", ["Europe/Lndon", "Etc", "A" * 300])
def test_a_time_zone_is_refused_alike_as_a_setting_and_as_a_field(
    config: Config, zone: str
) -> None:
    refused = setting_problem({"REMINDERS_TIMEZONE": zone})
    assert refused.startswith(f"REMINDERS_TIMEZONE: {zone!r} is not a known time zone")
    assert field_problem(config, "timezone", zone) == refused.replace(
        "REMINDERS_TIMEZONE", "timezone"
    )
