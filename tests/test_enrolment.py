"""The enrolment fields' one parser, and its inverse that fills edit forms and API updates."""

from __future__ import annotations

from datetime import time
from zoneinfo import ZoneInfo

import pytest
from factories import make_enrolment

from reminders.config import Config
from reminders.core.enrolment import Enrolment, InvalidEnrolment, parse_fields


@pytest.mark.parametrize(
    "enrolment",
    [
        make_enrolment(),
        make_enrolment(phone=None, zone=ZoneInfo("America/New_York"), sedation=False),
        make_enrolment(
            procedure="joint-denervation",
            joint="knee",
            arrival=time(8, 15),
            sedation=True,
            anticoagulant="Apixaban",
            hold_days=2,
            restart_days=0,
            email=None,
        ),
    ],
)
def test_as_fields_reads_back_to_the_same_enrolment(enrolment: Enrolment, config: Config) -> None:
    again = parse_fields(
        enrolment.as_fields(), protocols=config.protocols, default_timezone=ZoneInfo("UTC")
    )
    assert again == enrolment


def test_as_fields_leaves_out_what_was_not_given() -> None:
    fields = make_enrolment(email=None, arrival=None).as_fields()
    assert "email" not in fields and "arrival" not in fields and "sedation" not in fields


@pytest.mark.parametrize("zone", ["Etc", "Europe", "A" * 300, "Mars/Olympus_Mons"])
def test_a_zone_that_is_not_a_zone_is_refused_in_words(zone: str, config: Config) -> None:
    fields = {**make_enrolment().as_fields(), "timezone": zone}
    with pytest.raises(InvalidEnrolment) as refused:
        parse_fields(fields, protocols=config.protocols, default_timezone=ZoneInfo("UTC"))
    assert refused.value.problems[0].startswith("timezone: ")


def test_a_control_character_is_refused_not_stored(config: Config) -> None:
    fields = {**make_enrolment().as_fields(), "name": "Megan\x00 Price"}
    with pytest.raises(InvalidEnrolment) as refused:
        parse_fields(fields, protocols=config.protocols, default_timezone=ZoneInfo("UTC"))
    assert refused.value.problems == ["name: contains a control character; type it again"]
