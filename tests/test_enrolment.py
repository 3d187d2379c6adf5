"""The enrolment's one schema, its fields' one parser, and the inverses made from it: the text
that fills edit forms and API updates, and the columns an enrolment is stored in."""

from __future__ import annotations

import dataclasses
from datetime import time
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from factories import make_enrolment, make_full_enrolment

from reminders.config import Config
from reminders.core.enrolment import (
    FIELDS,
    SCHEMA,
    Enrolment,
    InvalidEnrolment,
    parse_fields,
    required_fields,
)
from reminders.store import models


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


def test_every_field_of_the_schema_is_an_attribute_of_an_enrolment() -> None:
    attributes = {f.name for f in dataclasses.fields(Enrolment) if f.compare}
    assert attributes == set(FIELDS)


CONTRACT = (
    "booking_ref", "name", "phone", "email", "language", "procedure", "date", "time",
    "timezone", "arrival", "sedation", "joint", "anticoagulant", "anticoagulant_hold_days",
    "anticoagulant_restart_days",
)  # fmt: skip


def test_the_fields_are_the_contracts_in_its_order() -> None:
    assert tuple(f for f in FIELDS if f in CONTRACT) == CONTRACT == (
        "booking_ref", "name", "phone", "email", "language", "procedure", "date", "time",
        "timezone", "arrival", "sedation", "joint", "anticoagulant", "anticoagulant_hold_days",
        "anticoagulant_restart_days",
    )  # fmt: skip
    # The fields added since (PRODUCT.md, Contracts: identity, anaesthesia), in the schema's
    # order, each beside the fields it belongs with.
    assert [f for f in FIELDS if f not in CONTRACT] == ["anaesthesia", "anticoagulant_hold_reason"]
    assert required_fields(from_system=True) == ("booking_ref", "name", "procedure", "date", "time")
    assert required_fields(from_system=False) == ("name", "procedure", "date", "time")


def test_an_enrolment_with_every_field_given_reads_back_through_its_fields(config: Config) -> None:
    enrolment = make_full_enrolment()
    fields = enrolment.as_fields()
    assert list(fields) == list(FIELDS)  # every field written, none left at its default
    again = parse_fields(fields, protocols=config.protocols, default_timezone=ZoneInfo("UTC"))
    assert again == enrolment


def test_every_field_is_kept_in_a_column_and_read_back_from_it() -> None:
    enrolment = make_full_enrolment(timezone=ZoneInfo("America/New_York"))
    patient = SimpleNamespace(**enrolment.columns("patient"))
    row = SimpleNamespace(**enrolment.columns("enrolment"))
    assert Enrolment.from_columns(patient, row, enrolled_at=None) == enrolment
    assert row.timezone == "America/New_York"  # the zone's name, as the column holds it


def test_every_field_has_its_column_on_the_model() -> None:
    tables = {"patient": models.Patient.__table__, "enrolment": models.Enrolment.__table__}
    for spec in SCHEMA:
        assert spec.stored.column in tables[spec.stored.row].c, spec.name


@pytest.mark.parametrize("character", ["\x00", "\t", "\n", "\r", "\x1b", "\x7f"])
def test_every_control_character_is_refused_in_any_field(character: str, config: Config) -> None:
    # Inside the value: around it, a tab or a line break is only space, and trimmed.
    for name, value in make_full_enrolment().as_fields().items():
        fields = {**make_full_enrolment().as_fields(), name: f"{value}{character}{value}"}
        with pytest.raises(InvalidEnrolment) as refused:
            parse_fields(fields, protocols=config.protocols, default_timezone=ZoneInfo("UTC"))
        assert refused.value.problems == [f"{name}: contains a control character; type it again"]


def test_a_language_tag_longer_than_its_column_is_refused(config: Config) -> None:
    tag = "en-" + "-".join(["abcdefgh"] * 4)
    assert len(tag) > models.Patient.__table__.c.language.type.length  # type: ignore[attr-defined]
    fields = {**make_enrolment().as_fields(), "language": tag}
    with pytest.raises(InvalidEnrolment) as refused:
        parse_fields(fields, protocols=config.protocols, default_timezone=ZoneInfo("UTC"))
    assert refused.value.problems == [f"language: {tag!r} is not a BCP 47 tag such as en-GB"]


def test_a_day_count_in_other_digits_is_refused_in_words(config: Config) -> None:
    fields = {**make_full_enrolment().as_fields(), "anticoagulant_hold_days": "²"}
    with pytest.raises(InvalidEnrolment) as refused:
        parse_fields(fields, protocols=config.protocols, default_timezone=ZoneInfo("UTC"))
    assert refused.value.problems == [
        "anticoagulant_hold_days: '²' is not a whole number of days from 0 to 60"
    ]
