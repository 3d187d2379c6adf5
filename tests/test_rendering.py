"""The words patients receive: what a clinician reads before signing a protocol off."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import date, datetime, time
from pathlib import Path

import pytest
from factories import ALWAYS_OPEN, make_enrolment, utc
from paths import PROJECT_ROOT

from reminders.config import Config
from reminders.core import sms
from reminders.core.enrolment import Enrolment
from reminders.core.rendering import Message, Renderer, RenderError
from reminders.core.schedule import compute_schedule

ENROLLED = utc(2026, 11, 20, 10, 0)


def messages(
    config: Config, enrolment: Enrolment, now: datetime = ENROLLED, renderer: Renderer | None = None
) -> dict[tuple[str, str], Message]:
    schedule = compute_schedule(
        config.protocols[enrolment.procedure], enrolment, now, ALWAYS_OPEN,
        medicines=config.medicines,
    )  # fmt: skip
    render = (renderer or config.renderer).render
    return {(r.rule, r.channel): render(r, schedule.facts) for r in schedule.reminders}


def sms_text(config: Config, enrolment: Enrolment, rule: str, **kwargs: object) -> str:
    return messages(config, enrolment, **kwargs)[(rule, "sms")].body  # type: ignore[arg-type]


WARFARIN = dict(
    procedure="sacroplasty", arrival=time(8, 30), anticoagulant="warfarin", hold_days=5,
    restart_days=0,
)  # fmt: skip


def test_the_stop_instruction_names_the_drug_and_the_local_dates(config: Config) -> None:
    found = messages(config, make_enrolment(**WARFARIN))  # type: ignore[arg-type]
    plan = found[("anticoagulant-plan", "sms")].body
    assert "warfarin" in plan
    assert "Friday 4 December" in plan  # the last dose
    assert "Saturday 5 December" in plan  # the first day without it
    assert "blood test" in plan  # warfarin stopped: clotting test first (sacroplasty leaflet)
    assert "aspirin" in plan
    stop = found[("anticoagulant-stop", "sms")].body
    assert "Friday 4 December" in stop and "warfarin" in stop
    restart = found[("anticoagulant-restart", "sms")].body
    assert "warfarin" in restart and "as your doctor" in restart


def test_fasting_gives_clock_times_worked_out_from_arrival(config: Config) -> None:
    text = sms_text(config, make_enrolment(**WARFARIN), "fasting")  # type: ignore[arg-type]
    assert "2:30am" in text  # arrival 8:30am less 6 hours
    assert "6:30am" in text  # less 2 hours
    email = messages(config, make_enrolment(**WARFARIN))[("fasting", "email")]  # type: ignore[arg-type]
    assert "2:30am" in email.body and "6:30am" in email.body


def test_without_a_plan_nobody_is_told_to_stop_a_medicine(config: Config) -> None:
    for slug in config.protocols:
        enrolment = make_enrolment(procedure=slug, anticoagulant="apixaban")
        found = messages(config, enrolment)
        unplanned = found[("anticoagulant-unplanned", "sms")].body
        assert "apixaban" in unplanned and "not stop" in unplanned.lower(), slug
        for (rule, _), message in found.items():
            lowered = message.body.lower()
            assert "last day to take" not in lowered, (slug, rule)
            assert "do not take it from" not in lowered, (slug, rule)


def test_si_joint_denervation_words(config: Config) -> None:
    found = messages(config, make_enrolment(procedure="si-joint-denervation"))
    assert "take you home" in found[("arrange-transport", "sms")].body
    day_before = found[("day-before", "sms")].body.lower()
    assert "medicines" in day_before and "pregnant" in day_before
    assert "dressing" in found[("dressing", "sms")].body.lower()
    pain = found[("pain-may-be-worse", "sms")].body
    assert "worse for a few days" in pain and "GP" in pain


def test_joint_denervation_words(config: Config) -> None:
    found = messages(config, make_enrolment(procedure="joint-denervation", joint="hip"))
    after = found[("after-care", "email")].body
    # 24 hours after sedation, counted from the end of the procedure (9:30am and 75 minutes):
    # never "normal activities today" the morning after an afternoon list.
    assert "From 10:45am on Friday 11 December" in after and "physio" in after.lower()
    assert "7 days" in found[("full-effect", "sms")].body


def test_si_joint_fusion_physiotherapy_words(config: Config) -> None:
    found = messages(config, make_enrolment(procedure="si-joint-fusion"))
    assert "physio" in found[("physiotherapy", "sms")].body.lower()


def test_sms_is_gsm7_first_name_only_and_no_clinical_detail(config: Config) -> None:
    for slug in config.protocols:
        enrolment = make_enrolment(
            procedure=slug, name="Siân O\u2019Brien-Jones", arrival=time(8, 30),
            anticoagulant="apixaban", hold_days=3, restart_days=1,
        )  # fmt: skip
        for (rule, channel), message in messages(config, enrolment).items():
            if channel != "sms":
                continue
            assert message.body.encode(sms.CODEC).decode(sms.CODEC) == message.body
            assert "Sian" in message.body and "Siân" not in message.body, (slug, rule)
            assert "Brien" not in message.body, (slug, rule)  # first name only
            assert config.protocols[slug].name.lower() not in message.body.lower(), (slug, rule)
            assert message.segments is not None and message.segments <= 3


def test_email_carries_the_full_name_the_units_details_and_escapes_html(config: Config) -> None:
    enrolment = make_enrolment(name="Siân <b>Jones</b>")
    email = messages(config, enrolment)[("booking-confirmation", "email")]
    assert email.subject and "\n" not in email.subject
    assert config.unit.phone in email.body  # the footer: who to call
    assert email.html is not None
    assert "<b>Jones</b>" not in email.html
    assert "Dear Siân &lt;b&gt;Jones&lt;/b&gt;," in email.html
    assert "020 7946 0000" in email.html


@pytest.mark.parametrize(
    ("procedure_day", "gp"),
    [
        (date(2026, 12, 10), True),  # pain advice on Friday 11 December at 10am
        (date(2026, 12, 11), False),  # Saturday: surgeries shut
        (date(2026, 12, 24), False),  # Christmas Day, a bank holiday
        (date(2027, 1, 1), False),  # pain advice on Saturday 2 January
        (date(2026, 8, 30), False),  # Monday 31 August, late summer bank holiday
    ],
)
def test_gp_advice_points_to_nhs_111_when_surgeries_are_shut(
    config: Config, procedure_day: date, gp: bool
) -> None:
    enrolment = make_enrolment(procedure="si-joint-denervation", on=procedure_day)
    text = sms_text(config, enrolment, "pain-may-be-worse", now=utc(2026, 8, 1))
    if gp:
        assert "contact your GP" in text, text
    else:
        assert "call NHS 111" in text and "contact your GP" not in text, text


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    root = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "templates", root)
    return root


def test_language_falls_back_to_its_base_then_to_en_gb(config: Config, templates: Path) -> None:
    welsh = templates / "cy" / "booking-confirmation"
    welsh.mkdir(parents=True)
    (welsh / "sms.txt").write_text(
        "Helo {{ first_name }}, mae eich apwyntiad ar {{ procedure_day }}."
    )
    renderer = Renderer(templates, config.unit)
    found = messages(config, make_enrolment(language="cy-GB", email=None), renderer=renderer)
    booking = found[("booking-confirmation", "sms")]
    assert booking.body.startswith("Helo Sian") and booking.language == "cy"
    assert found[("day-before", "sms")].language == "en-GB"
    french = messages(config, make_enrolment(language="fr", email=None), renderer=renderer)
    assert french[("booking-confirmation", "sms")].language == "en-GB"


def test_template_version_changes_with_the_template(config: Config, templates: Path) -> None:
    enrolment = make_enrolment(email=None)
    before = messages(config, enrolment, renderer=Renderer(templates, config.unit))
    path = templates / "en-GB" / "dressing" / "sms.txt"
    path.write_text(path.read_text() + " Thank you.")
    after = messages(config, enrolment, renderer=Renderer(templates, config.unit))
    assert (
        after[("dressing", "sms")].template_version != before[("dressing", "sms")].template_version
    )
    assert (
        after[("day-before", "sms")].template_version
        == before[("day-before", "sms")].template_version
    )


def test_a_template_using_a_value_its_rule_cannot_have_is_an_error(
    config: Config, templates: Path
) -> None:
    path = templates / "en-GB" / "dressing" / "sms.txt"
    path.write_text("Hello {{ first_name }}, keep taking {{ drug }}.")
    with pytest.raises(RenderError, match="'drug' is undefined"):
        messages(config, make_enrolment(), renderer=Renderer(templates, config.unit))


def test_sandbox_refuses_unsafe_template_code(config: Config, templates: Path) -> None:
    path = templates / "en-GB" / "dressing" / "sms.txt"
    path.write_text("{{ unit.__class__.__mro__ }}")
    with pytest.raises(RenderError, match=r"SecurityError: access to attribute '__class__'"):
        messages(config, make_enrolment(), renderer=Renderer(templates, config.unit))


def test_long_sms_is_a_configuration_error(config: Config, templates: Path) -> None:
    path = templates / "en-GB" / "dressing" / "sms.txt"
    path.write_text("Hello {{ first_name }}. " + "Keep the dressing dry tonight. " * 16)
    with pytest.raises(RenderError, match="takes 4 SMS segments"):
        messages(
            config, replace(make_enrolment(), email=None), renderer=Renderer(templates, config.unit)
        )


def test_included_parts_count_for_the_version_and_the_fingerprint(
    config: Config, templates: Path
) -> None:
    (templates / "en-GB" / "_parts").mkdir(exist_ok=True)
    part = templates / "en-GB" / "_parts" / "when.txt"
    part.write_text("on {{ procedure_day }}")
    (templates / "en-GB" / "dressing" / "sms.txt").write_text(
        'Hello {{ first_name }}, {% include "en-GB/_parts/when.txt" %}.'
    )
    renderer = Renderer(templates, config.unit)
    enrolment = make_enrolment(email=None)
    assert "procedure_day" in renderer.variables("dressing", "sms", "en-GB")
    before = messages(config, enrolment, renderer=renderer)[("dressing", "sms")]
    assert before.body == "Hello Sian, on Thursday 10 December."
    part.write_text("on {{ procedure_day }} at {{ procedure_time }}")
    after = messages(config, enrolment, renderer=Renderer(templates, config.unit))
    assert after[("dressing", "sms")].template_version != before.template_version
