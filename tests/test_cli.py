"""The `reminders` command as a person at a terminal uses it: the installed console script, run
as a process, with a clean environment."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from factories import make_full_enrolment
from paths import PROJECT_ROOT

from reminders.core.enrolment import SCHEMA, Enrolment
from reminders.interfaces.cli import main

SCRIPT = Path(sys.executable).parent / "reminders"
NOW = "2026-11-20T10:00:00Z"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "REMINDERS_DATABASE_URL": f"sqlite:///{tmp_path / 'reminders.db'}",
    }


pytestmark = pytest.mark.slow  # each test runs the `reminders` command as a process


def run(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        env=env,
        cwd=cwd or env["HOME"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def preview(env: dict[str, str], *args: str) -> dict[str, object]:
    result = run(env, "preview", "--json", "--now", NOW, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_preview_json_follows_the_contract(env: dict[str, str]) -> None:
    data = preview(
        env,
        "--procedure", "sacroplasty", "--at", "2026-12-10T09:30", "--tz", "Europe/London",
        "--flag", "arrival=08:30", "--flag", "anticoagulant=warfarin",
        "--flag", "anticoagulant_hold_days=5", "--flag", "anticoagulant_restart_days=0",
    )  # fmt: skip
    assert set(data) == {"procedure", "starts_at", "reminders", "warnings"}
    assert data["procedure"] == "sacroplasty"
    assert data["starts_at"] == "2026-12-10T09:30:00+00:00"
    assert data["warnings"] == []
    reminders = data["reminders"]
    assert isinstance(reminders, list)
    sends = [r["send_at"] for r in reminders]
    assert sends == sorted(sends)
    for reminder in reminders:
        expected = {"rule", "channel", "send_at", "body"}
        if reminder["channel"] == "email":
            expected.add("subject")
        assert set(reminder) == expected
    stop = next(r for r in reminders if r["rule"] == "anticoagulant-stop" and r["channel"] == "sms")
    assert stop["send_at"] == "2026-12-04T18:00:00+00:00"
    assert "warfarin" in stop["body"]


def test_preview_times_carry_the_patients_own_offset(env: dict[str, str]) -> None:
    data = preview(env, "--procedure", "si-joint-denervation", "--at", "2027-06-10T09:30",
                   "--phone", "07911100003")  # fmt: skip
    assert data["starts_at"] == "2027-06-10T09:30:00+01:00"
    sends = {r["rule"]: r["send_at"] for r in data["reminders"]}  # type: ignore[attr-defined]
    assert sends["day-before"] == "2027-06-09T12:00:00+01:00"
    assert {r["channel"] for r in data["reminders"]} == {"sms"}  # type: ignore[attr-defined]


def test_preview_warns_about_a_late_plan(env: dict[str, str]) -> None:
    result = run(
        env, "preview", "--json", "--now", "2026-12-08T09:00:00Z",
        "--procedure", "sacroplasty", "--at", "2026-12-10T09:30",
        "--flag", "anticoagulant=apixaban", "--flag", "anticoagulant_hold_days=3",
    )  # fmt: skip
    data = json.loads(result.stdout)
    assert any("can no longer be honoured" in w for w in data["warnings"])


def test_preview_as_a_readable_table(env: dict[str, str]) -> None:
    result = run(env, "preview", "--procedure", "facet-joint-denervation",
                 "--at", "2026-12-10T09:30", "--now", NOW, "--email", "a@example.org")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Facet joint")
    assert "Monday 7 December, 10am  arrange-transport  [email]" in result.stdout
    assert "Subject:" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--procedure", "sacroplsty"], "procedure: 'sacroplsty' is not a known procedure"),
        (["--tz", "Europe/Lndon"], "timezone: 'Europe/Lndon' is not a known time zone"),
        (["--at", "2026-13-10T09:30"], "date: '2026-13-10' is not a date"),
        (["--at", "10/12/2026 09:30"], "--at: '10/12/2026 09:30' should be YYYY-MM-DDTHH:MM"),
        (["--flag", "sedaton=yes"], "--flag: unknown field 'sedaton'"),
        (["--flag", "sedation=maybe"], "sedation: 'maybe' is not one of true, false, yes, no"),
        (["--phone", "020 7946 0000"], "phone: this is not a mobile number"),
        (["--phone", "12345"], "phone: this is not a valid phone number"),
        (["--now", "yesterday"], "--now: 'yesterday' is not ISO 8601"),
        (["--flag", "anticoagulant_hold_days=5"], "give the drug in anticoagulant too"),
        (["--flag", "joint=knee"], "joint: sacroplasty does not take a joint"),
    ],
)
def test_bad_input_gets_one_line_and_a_non_zero_exit(
    env: dict[str, str], args: list[str], message: str
) -> None:
    base = {"--procedure": "sacroplasty", "--at": "2026-12-10T09:30"}
    for option, value in zip(args[::2], args[1::2], strict=True):
        if option in base:
            base[option] = value
    extra = [a for i, a in enumerate(args) if args[i - (i % 2)] not in base]
    argv = [item for pair in base.items() for item in pair]
    result = run(env, "preview", *argv, *extra)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("reminders preview: ")
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_option_is_one_line_too(env: dict[str, str]) -> None:
    result = run(env, "preview", "--at", "2026-12-10T09:30")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "reminders preview: the following arguments are required: --procedure "
        "(see reminders preview --help)"
    ]


def test_check_passes_on_the_shipped_configuration(env: dict[str, str]) -> None:
    result = run(env, "check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: 5 procedures")


@pytest.fixture
def broken(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    """A copy of the shipped configuration and templates for a test to break."""
    shutil.copytree(PROJECT_ROOT / "config", tmp_path / "config")
    shutil.copytree(PROJECT_ROOT / "templates", tmp_path / "templates")
    return {
        **env,
        "REMINDERS_CONFIG_DIR": str(tmp_path / "config"),
        "REMINDERS_TEMPLATES_DIR": str(tmp_path / "templates"),
    }


def test_check_fails_on_a_broken_template(broken: dict[str, str]) -> None:
    path = Path(broken["REMINDERS_TEMPLATES_DIR"]) / "en-GB" / "dressing" / "sms.txt"
    path.write_text("Hello {{ first_nme }}, you can take the dressing off tonight.")
    result = run(broken, "check")
    assert result.returncode == 1
    assert (
        "si-joint-denervation.yaml: rule 'dressing' (sms, en-GB): en-GB/dressing/sms.txt: "
        "UndefinedError: 'first_nme' is undefined"
    ) in result.stderr
    path.write_text("Hello {{ first_name }, unclosed")
    assert "TemplateSyntaxError" in run(broken, "check").stderr


def test_check_fails_on_an_sms_over_three_segments(broken: dict[str, str]) -> None:
    path = Path(broken["REMINDERS_TEMPLATES_DIR"]) / "en-GB" / "dressing" / "sms.txt"
    path.write_text("Hello {{ first_name }}. " + "Please keep the dressing dry. " * 16)
    result = run(broken, "check")
    assert result.returncode == 1
    assert "en-GB/dressing/sms.txt: the text takes 4 SMS segments" in result.stderr
    assert "the limit is 3. Shorten it." in result.stderr


def test_check_fails_on_an_unknown_template_or_field(broken: dict[str, str]) -> None:
    protocols = Path(broken["REMINDERS_CONFIG_DIR"]) / "protocols"
    # A shared rule file: the mistake is every procedure's that includes it.
    shared = protocols / "shared" / "fasting.yaml"
    shared.write_text(shared.read_text().replace("template: fasting\n", "template: fastng\n", 1))
    own = protocols / "sacroplasty.yaml"
    own.write_text(own.read_text().replace(
        "template: day-before-sacroplasty\n",
        "template: day-before-sacroplasty\n    when: {sedaton: true}\n", 1,
    ))  # fmt: skip
    result = run(broken, "check")
    assert result.returncode == 2
    assert "sacroplasty.yaml: rule 'fasting': unknown template 'fastng'" in result.stderr
    assert "joint-denervation.yaml: rule 'fasting': unknown template 'fastng'" in result.stderr
    assert "sacroplasty.yaml: rule 'day-before': field 'when': unknown field 'sedaton'" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_check_refuses_a_shared_rule_defined_again_in_a_protocol(broken: dict[str, str]) -> None:
    """Hazard H13: a protocol's own copy of the fasting rule would not get the next fix."""
    protocols = Path(broken["REMINDERS_CONFIG_DIR"]) / "protocols"
    fasting = (protocols / "shared" / "fasting.yaml").read_text().partition("rules:\n")[2]
    own = protocols / "sacroplasty.yaml"
    own.write_text(own.read_text().replace("rules:\n", "rules:\n" + fasting, 1))
    result = run(broken, "check")
    assert result.returncode == 2
    assert (
        "sacroplasty.yaml: rule 'fasting' is a shared rule (shared/fasting.yaml) defined again "
        "here; remove it and add 'fasting' to 'include'"
    ) in result.stderr
    assert "Traceback" not in result.stderr


def test_preview_refuses_a_name_too_long_for_a_text_in_one_line(env: dict[str, str]) -> None:
    """Hazard H14: the message that could not be sent is refused at the terminal, not later."""
    result = run(
        env, "preview", "--now", NOW, "--procedure", "sacroplasty", "--at", "2026-12-10T09:30",
        "--flag", "name=" + "Wolfeschlegelsteinhausenbergerdorff" * 4 + " Price",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("reminders preview: name, anticoagulant: a text to this ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_migrate_then_enrol_twice_gives_the_same_id(env: dict[str, str]) -> None:
    assert run(env, "migrate").returncode == 0
    args = ["enrol", "--procedure", "si-joint-denervation", "--name", "Rhys Evans",
            "--phone", "07911 100004", "--booking-ref", "BK-77"]  # fmt: skip
    first = run(env, *args, "--at", "2030-06-10T09:30")
    assert first.returncode == 0, first.stderr
    enrolment_id = first.stdout.strip()
    assert enrolment_id.isdigit()
    again = run(env, *args, "--at", "2030-06-11T09:30")  # a reschedule
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == enrolment_id


def test_enrol_on_an_unmigrated_database_says_what_to_do(env: dict[str, str]) -> None:
    result = run(env, "enrol", "--procedure", "si-joint-denervation", "--at", "2030-06-10T09:30",
                 "--name", "Rhys Evans", "--email", "rhys@example.org")  # fmt: skip
    assert result.returncode == 2
    assert "run `reminders migrate`" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_enrol_needs_a_way_to_reach_the_patient(env: dict[str, str]) -> None:
    run(env, "migrate")
    result = run(env, "enrol", "--procedure", "si-joint-denervation", "--at", "2030-06-10T09:30",
                 "--name", "Rhys Evans")  # fmt: skip
    assert result.returncode == 2
    assert "phone or email: give at least one" in result.stderr


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:////proc/no-such-dir/x/r.db", "reminders migrate: "),
        ("not a url", "reminders migrate: database: "),
        ("postgresql+psycopg://nobody@127.0.0.1:1/none", "reminders migrate: database: "),
    ],
)
def test_database_problems_are_one_line(env: dict[str, str], url: str, message: str) -> None:
    result = run({**env, "REMINDERS_DATABASE_URL": url}, "migrate")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(message)


def test_a_cancelled_booking_reference_is_refused_in_one_line(env: dict[str, str]) -> None:
    from reminders.config import Config
    from reminders.services import enrolments
    from reminders.store.db import make_engine, make_sessionmaker, session_scope
    from reminders.store.models import Enrolment

    run(env, "migrate")
    args = ["enrol", "--procedure", "sacroplasty", "--at", "2030-06-10T09:30", "--name", "Ann",
            "--email", "ann@example.org", "--booking-ref", "BK-9"]  # fmt: skip
    assert run(env, *args).returncode == 0
    engine = make_engine(env["REMINDERS_DATABASE_URL"])
    with session_scope(make_sessionmaker(engine)) as session:
        row = session.query(Enrolment).one()
        enrolments.cancel(session, Config.load(), row, now=row.enrolled_at, actor="test")
    engine.dispose()
    result = run(env, *args)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "reminders enrol: booking_ref: BK-9 belongs to a cancelled enrolment; "
        "use a new booking reference"
    )


@pytest.mark.parametrize("at", ["0001-01-01T00:30", "9999-12-31T23:30", "2020-12-11T09:30"])
def test_implausible_or_past_dates_are_refused(env: dict[str, str], at: str) -> None:
    run(env, "migrate")
    result = run(env, "enrol", "--procedure", "sacroplasty", "--at", at, "--name", "Ann",
                 "--email", "ann@example.org")  # fmt: skip
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def as_arguments(enrolment: Enrolment) -> list[str]:
    """Every field of the enrolment as `enrol` and `preview` take it: by its own option when it
    has one, and otherwise as --flag."""
    fields = enrolment.as_fields()
    args = ["--at", f"{fields.pop('date')}T{fields.pop('time')}"]
    for spec in SCHEMA:
        if spec.name in fields:
            value = fields.pop(spec.name)
            args += [spec.option, value] if spec.option else ["--flag", f"{spec.name}={value}"]
    assert fields == {}
    assert "--tz" in args and "--flag" in args  # both ways are tried
    return args


def test_enrol_takes_every_field_by_its_option_or_as_a_flag(env: dict[str, str]) -> None:
    from reminders.services.enrolments import as_enrolment
    from reminders.store.db import make_engine, make_sessionmaker, session_scope
    from reminders.store.models import Enrolment as Row

    enrolment = make_full_enrolment(on=date(2030, 6, 10))
    assert run(env, "migrate").returncode == 0
    result = run(env, "enrol", *as_arguments(enrolment))
    assert result.returncode == 0, result.stderr
    engine = make_engine(env["REMINDERS_DATABASE_URL"])
    with session_scope(make_sessionmaker(engine)) as session:
        assert as_enrolment(session.query(Row).one()) == enrolment
    engine.dispose()


def test_preview_takes_every_field_as_enrol_does(env: dict[str, str]) -> None:
    data = preview(env, *as_arguments(make_full_enrolment(on=date(2030, 6, 10))))
    assert (data["procedure"], data["starts_at"]) == (
        "joint-denervation", "2030-06-10T09:30:00+01:00"
    )  # fmt: skip


def test_version_says_which_release_is_installed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert re.fullmatch(r"reminders \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)
