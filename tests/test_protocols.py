"""Protocol files: the shipped ones load, and a clinician's mistake is reported in words that say
which file, which rule and which field to fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from paths import PROJECT_ROOT

from reminders.core.errors import ConfigError
from reminders.core.protocol_files import load_protocol, load_protocols, load_unit
from reminders.core.protocols import Offset

SHIPPED = (
    "si-joint-denervation",
    "joint-denervation",
    "facet-joint-denervation",
    "si-joint-fusion",
    "sacroplasty",
)
TEMPLATES = ("booking", "fasting", "stop")

MINIMAL = """\
procedure: {slug}
name: Test procedure
rules:
  - id: booking
    title: Confirms the appointment
    phase: before
    send: {{anchor: booking}}
    template: booking
{extra}
"""


def write(tmp_path: Path, text: str, slug: str = "test-procedure") -> Path:
    path = tmp_path / f"{slug}.yaml"
    path.write_text(text)
    return path


def load_text(tmp_path: Path, extra: str = "", *, slug: str = "test-procedure") -> object:
    return load_protocol(
        write(tmp_path, MINIMAL.format(slug=slug, extra=extra), slug), templates=TEMPLATES
    )


def problem(tmp_path: Path, extra: str = "", **kwargs: str) -> str:
    with pytest.raises(ConfigError) as raised:
        load_text(tmp_path, extra, **kwargs)
    return str(raised.value)


def test_every_shipped_procedure_loads() -> None:
    templates = [p.name for p in (PROJECT_ROOT / "templates" / "en-GB").iterdir() if p.is_dir()]
    protocols = load_protocols(PROJECT_ROOT / "config" / "protocols", templates=templates)
    assert sorted(protocols) == sorted(SHIPPED)
    assert protocols["sacroplasty"].anaesthesia == "sedation"
    assert protocols["joint-denervation"].anaesthesia == "sedation"
    assert protocols["si-joint-fusion"].anaesthesia == "general"  # surgery
    assert protocols["joint-denervation"].joints == ("knee", "hip", "shoulder")


def test_shipped_unit_file_loads() -> None:
    unit = load_unit(PROJECT_ROOT / "config" / "unit.yaml")
    assert unit.bank_holidays == "england-and-wales"
    assert str(unit.sending_window) == "08:00-20:00"


def test_a_minimal_protocol_loads(tmp_path: Path) -> None:
    protocol = load_text(tmp_path)
    assert protocol.rules[0].channels == ("sms", "email")  # type: ignore[attr-defined]


def test_unknown_template_names_file_rule_and_template(tmp_path: Path) -> None:
    extra = """\
  - id: fast-evening
    title: Fasting the evening before
    phase: before
    send: {anchor: procedure, offset: -1d, at: "18:00"}
    template: fastng
"""
    assert problem(tmp_path, extra) == (
        "test-procedure.yaml: rule 'fast-evening': unknown template 'fastng'"
    )


def test_unknown_condition_field_is_named(tmp_path: Path) -> None:
    extra = """\
  - id: fasting
    title: Fasting
    phase: before
    send: {anchor: procedure, offset: -1d, at: "18:00"}
    when: {sedaton: true}
    template: fasting
"""
    message = problem(tmp_path, extra)
    assert message.startswith(
        "test-procedure.yaml: rule 'fasting': field 'when': unknown field 'sedaton'"
    )
    assert "sedation" in message  # the known fields are listed, so the typo is obvious


def test_unknown_condition_value_is_named(tmp_path: Path) -> None:
    extra = """\
  - id: stop
    title: Stop
    phase: before
    send: {anchor: last-dose, at: "18:00"}
    when: {anticoagulant: stopped}
    template: stop
"""
    message = problem(tmp_path, extra)
    assert "rule 'stop': field 'when.anticoagulant': 'stopped' is not one of" in message


def test_misspelt_rule_field_is_named(tmp_path: Path) -> None:
    extra = """\
  - id: fasting
    title: Fasting
    phase: before
    send: {anchor: procedure, offset: -1d}
    template: fasting
    quiet_hour: earlier
"""
    assert problem(tmp_path, extra) == (
        "test-procedure.yaml: rule 'fasting': field 'quiet_hour': unknown field; "
        "check the spelling against docs/protocols.md"
    )


def test_bad_policy_value_shows_choices_and_what_was_given(tmp_path: Path) -> None:
    extra = """\
  - id: fasting
    title: Fasting
    phase: before
    send: {anchor: procedure, offset: -1d}
    template: fasting
    late: later
"""
    message = problem(tmp_path, extra)
    assert "rule 'fasting': field 'late':" in message
    assert "'skip', 'send-now' or 'warn'" in message
    assert "(got 'later')" in message


def test_bad_offset_explains_the_syntax(tmp_path: Path) -> None:
    extra = """\
  - id: fasting
    title: Fasting
    phase: before
    send: {anchor: procedure, offset: two days before}
    template: fasting
"""
    message = problem(tmp_path, extra)
    assert "rule 'fasting': field 'send.offset'" in message
    assert "-2d (days)" in message


def test_clock_time_with_an_hours_offset_is_refused(tmp_path: Path) -> None:
    extra = """\
  - id: fasting
    title: Fasting
    phase: before
    send: {anchor: arrival, offset: -6h, at: "18:00"}
    template: fasting
"""
    assert "'at' needs an offset in days or weeks" in problem(tmp_path, extra)


def test_unquoted_clock_time_is_still_understood(tmp_path: Path) -> None:
    # YAML 1.1 reads 18:00 as the number 1080; clinicians should not have to know that.
    extra = """\
  - id: fasting
    title: Fasting
    phase: before
    send: {anchor: procedure, offset: -1d, at: 18:00}
    template: fasting
"""
    protocol = load_text(tmp_path, extra)
    assert str(protocol.rules[1].send.at) == "18:00:00"  # type: ignore[attr-defined]


def test_missing_required_field(tmp_path: Path) -> None:
    extra = """\
  - id: fasting
    title: Fasting
    send: {anchor: procedure, offset: -1d}
    template: fasting
"""
    assert problem(tmp_path, extra) == (
        "test-procedure.yaml: rule 'fasting': field 'phase': required but missing"
    )


def test_after_care_needs_the_leaflets_red_flags(tmp_path: Path) -> None:
    """Hazard H9: after-care always says what to do about the warning signs."""
    extra = """\
  - id: stop
    title: After-care
    phase: after
    send: {anchor: procedure, offset: +1d, at: "10:00"}
    template: stop
"""
    assert "field 'red_flags': a procedure with after-care must list its leaflet's warning" in (
        problem(tmp_path, extra)
    )


def test_duplicate_rule_id(tmp_path: Path) -> None:
    extra = """\
  - id: booking
    title: Again
    phase: before
    send: {anchor: booking}
    template: booking
"""
    assert "rule 'booking': the id is used twice" in problem(tmp_path, extra)


def test_fasting_anchor_needs_fasting_hours(tmp_path: Path) -> None:
    extra = """\
  - id: fasting
    title: Fasting
    phase: before
    send: {anchor: food-stop, offset: -12h}
    template: fasting
"""
    assert "uses a fasting anchor but the protocol has no 'fasting'" in problem(tmp_path, extra)


def test_requires_must_name_a_rule(tmp_path: Path) -> None:
    extra = """\
  - id: stop
    title: Stop
    phase: before
    send: {anchor: booking}
    template: stop
    requires: [nothing-like-it]
"""
    assert "rule 'stop': requires unknown rule 'nothing-like-it'" in problem(tmp_path, extra)


def test_file_name_must_match_procedure(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.format(slug="sacroplasty", extra=""), "sacroplsty")
    with pytest.raises(ConfigError, match="'procedure' is 'sacroplasty' but the file is named"):
        load_protocol(path, templates=TEMPLATES)


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "procedure: x\nrules: [\n  - id: a\n")
    with pytest.raises(ConfigError, match=r"^test-procedure.yaml \(line \d+\): not valid YAML"):
        load_protocol(path)


def test_all_problems_in_a_directory_are_reported_together(tmp_path: Path) -> None:
    write(
        tmp_path,
        MINIMAL.format(slug="one", extra="").replace("template: booking", "template: bookng"),
        "one",
    )
    write(tmp_path, MINIMAL.format(slug="two", extra="").replace("phase: before", ""), "two")
    with pytest.raises(ConfigError) as raised:
        load_protocols(tmp_path, templates=TEMPLATES)
    lines = str(raised.value).splitlines()
    assert any(line.startswith("one.yaml: rule 'booking': unknown template") for line in lines)
    assert any(line.startswith("two.yaml: rule 'booking': field 'phase'") for line in lines)


def test_bad_unit_window_is_named(tmp_path: Path) -> None:
    text = (PROJECT_ROOT / "config" / "unit.yaml").read_text()
    path = tmp_path / "unit.yaml"
    path.write_text(text.replace('sending_window: "08:00-20:00"', 'sending_window: "8-20"'))
    with pytest.raises(ConfigError, match=r"unit\.yaml: field 'sending_window': expected HH:MM"):
        load_unit(path)


@pytest.mark.parametrize(
    ("text", "amount", "unit"),
    [("-2d", -2, "d"), ("+6w", 6, "w"), ("-6h", -6, "h"), ("30m", 30, "m"), ("0d", 0, "d")],
)
def test_offsets(text: str, amount: int, unit: str) -> None:
    assert Offset.parse(text) == Offset(amount, unit)  # type: ignore[arg-type]


@pytest.mark.parametrize(("at", "hour"), [('"18:00"', 18), ("18:00", 18), ('"9:30"', 9)])
def test_a_rules_clock_time_is_read_as_an_enrolments_is(tmp_path: Path, at: str, hour: int) -> None:
    extra = f"""\
  - id: fasting
    title: Fasting
    phase: before
    send: {{anchor: procedure, offset: -1d, at: {at}}}
    template: fasting
"""
    protocol = load_text(tmp_path, extra)
    assert protocol.rules[1].send.at.hour == hour  # type: ignore[attr-defined]


def test_a_rules_clock_time_is_refused_in_the_same_words_as_an_enrolments(tmp_path: Path) -> None:
    extra = """\
  - id: fasting
    title: Fasting
    phase: before
    send: {anchor: procedure, offset: -1d, at: "25:00"}
    template: fasting
"""
    assert problem(tmp_path, extra) == (
        "test-procedure.yaml: rule 'fasting': field 'send.at': '25:00' is not a time; "
        "write HH:MM in 24-hour local time, such as 09:30"
    )


def test_a_unit_time_zone_that_is_not_one_is_named(tmp_path: Path) -> None:
    text = (PROJECT_ROOT / "config" / "unit.yaml").read_text()
    path = tmp_path / "unit.yaml"
    path.write_text(text.replace("timezone: Europe/London", "timezone: Europe/Lndon"))
    with pytest.raises(ConfigError) as refused:
        load_unit(path)
    assert str(refused.value) == (
        "unit.yaml: field 'timezone': 'Europe/Lndon' is not a known time zone; "
        "use an IANA name such as Europe/London"
    )
