"""The enrolment fields' one parser, and its inverse that fills edit forms and API updates."""

from __future__ import annotations

from datetime import time
from zoneinfo import ZoneInfo

import pytest
from factories import make_enrolment

from reminders.config import Config
from reminders.enrolment import Enrolment, parse_fields


@pytest.mark.parametrize(
    "enrolment",
    [
        make_enrolment(),
        make_enrolment(phone=None, zone=ZoneInfo("America/New_York"), sedation=False),
        make_enrolment(
            procedure="joint-denervation", joint="knee", arrival=time(8, 15), sedation=True,
            anticoagulant="Apixaban", hold_days=2, restart_days=0, email=None,
        ),  # fmt: skip
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
