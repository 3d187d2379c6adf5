"""`reminders import FILE.csv` and the importer behind it, on SQLite and PostgreSQL: good rows
land, bad rows are refused with a reason in FILE.errors.csv, an unusable file lands nothing,
and importing again updates instead of duplicating. Synthetic patients only."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from factories import make_full_enrolment
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from reminders.config import Config
from reminders.core.enrolment import FIELDS, parse_fields
from reminders.core.schedule import compute_schedule
from reminders.interfaces.cli import main
from reminders.services import enrolments, imports, planning, wording
from reminders.services.csvfile import UnusableFile, open_csv
from reminders.services.imports import ImportInterrupted, Refusal, import_csv
from reminders.settings import Settings
from reminders.store import models
from reminders.store.db import make_sessionmaker

HEADER = ["booking_ref", "name", "phone", "email", "procedure", "date", "time",
          "anticoagulant", "anticoagulant_hold_days", "anticoagulant_restart_days",
          "notes"]  # fmt: skip
PROCEDURES = ["si-joint-denervation", "joint-denervation", "facet-joint-denervation",
              "si-joint-fusion", "sacroplasty"]  # fmt: skip
TODAY = date.today()


def days(n: int) -> str:
    return (TODAY + timedelta(days=n)).isoformat()


def weekday(n: int) -> str:
    """`days(n)`, or the Monday after when that is a weekend: a list has its procedures when
    the unit is open (a weekend one gets a warning for staff)."""
    day = TODAY + timedelta(days=n)
    return (day + timedelta(days=7 - day.weekday() if day.weekday() >= 5 else 0)).isoformat()


def patient(i: int, **changes: str) -> dict[str, str]:
    """Row i of a day's list: a synthetic patient with a UK mobile, some with email and a
    clinician's blood-thinner plan, procedures 10 to 40 days away."""
    row = {
        "booking_ref": f"BK-{i:05d}",
        "name": f"Patient{i} Jones",
        "phone": f"07911 1{i:05d}",
        "email": f"patient{i}@example.org" if i % 3 == 0 else "",
        "procedure": PROCEDURES[i % len(PROCEDURES)],
        "date": weekday(10 + i % 30),
        "time": f"{9 + i % 8:02d}:{30 * (i % 2):02d}",
        "anticoagulant": "apixaban" if i % 7 == 0 else "",
        "anticoagulant_hold_days": "5" if i % 7 == 0 else "",
        "anticoagulant_restart_days": "1" if i % 7 == 0 else "",
        "notes": "",
    }
    row.update(changes)
    return row


def write_csv(path: Path, rows: list[dict[str, str]], *, header: list[str] = HEADER,
              encoding: str = "utf-8", newline: str = "\r\n") -> Path:  # fmt: skip
    with path.open("w", encoding=encoding, newline="") as out:
        writer = csv.DictWriter(out, header, lineterminator=newline, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The environment `reminders import` runs in, on the test's database; returns the
    directory to put files in. The sending window is open all day, so that tests do not depend
    on the hour they run at."""
    monkeypatch.chdir(tmp_path)  # no developer's .env
    monkeypatch.setenv("REMINDERS_DATABASE_URL", database_url)
    monkeypatch.setenv("REMINDERS_SENDING_WINDOW", "00:00-24:00")
    for name in ("REMINDERS_TIMEZONE", "REMINDERS_CONFIG_DIR", "REMINDERS_TEMPLATES_DIR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@dataclass
class Run:
    code: int
    out: str
    err: str


def run_import(path: Path, capsys: pytest.CaptureFixture[str]) -> Run:
    code = main(["import", str(path)])
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def count(session: Session, model: type[models.Base]) -> int:
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def read_errors(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as errors:
        return list(csv.DictReader(errors))


# --- the day's list: 1,000 rows, 50 of them broken -------------------------------------------

# What staff get wrong, and what the errors file must say about it.
BREAKAGES: list[tuple[dict[str, str], str]] = [
    ({"date": "2027-02-30"}, "date: '2027-02-30' is not a date"),
    ({"phone": "0113 496 0000"}, "phone: this is not a mobile number"),
    ({"procedure": "knee-replacement"}, "procedure: 'knee-replacement' is not a known procedure"),
    ({"name": ""}, "name: required"),
    ({"phone": "", "email": ""}, "phone or email: give at least one"),
    ({"date": days(-1)}, "date, time: the procedure time has already passed"),
    ({}, "is already on line"),  # the booking reference of the row before
    ({"anticoagulant_hold_days": "five", "anticoagulant": "warfarin"},
     "anticoagulant_hold_days: 'five' is not a whole number of days"),
    ({"time": "25:00"}, "time: '25:00' is not a time"),
    ({"phone": "", "email": "not-an-email"}, "email: this is not a usable email address"),
]  # fmt: skip


def day_list(size: int = 1000) -> tuple[list[dict[str, str]], dict[int, str]]:
    """`size` rows and, by line, what is wrong with the one in twenty that are broken."""
    rows: list[dict[str, str]] = []
    broken: dict[int, str] = {}
    for i in range(size):
        row = patient(i)
        if i % 20 == 7:
            changes, reason = BREAKAGES[(i // 20) % len(BREAKAGES)]
            row.update(changes)
            if not changes:
                row["booking_ref"] = rows[-1]["booking_ref"]
            broken[i + 2] = reason  # the header is line 1
        rows.append(row)
    return rows, broken


def test_a_day_list_with_broken_rows_lands_the_good_ones_and_says_why_for_the_rest(
    cli: Path, session: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    rows, broken = day_list(1000)
    path = write_csv(cli / "list.csv", rows)

    result = run_import(path, capsys)

    assert result.code == 1, result.err
    errors_path = cli / "list.errors.csv"
    assert result.out.splitlines()[0] == (
        f"950 rows landed (950 new, 0 updated); 50 refused, see {errors_path}"
    )
    assert "Traceback" not in result.err
    refused = read_errors(errors_path)
    assert list(refused[0]) == ["line", "reason", *HEADER]
    assert [int(r["line"]) for r in refused] == sorted(broken)
    for refusal in refused:
        line = int(refusal["line"])
        assert broken[line] in refusal["reason"], refusal
        original = rows[line - 2]
        assert {k: refusal[k] for k in HEADER} == original  # the row as it was given
    repeated = next(r for r in refused if "is already on line" in r["reason"])
    assert repeated["reason"] == (
        f"booking_ref: {repeated['booking_ref']} is already on line "
        f"{int(repeated['line']) - 1} of this file"
    )

    assert count(session, models.Enrolment) == 950
    assert count(session, models.Patient) == 950
    landed = {r["booking_ref"] for i, r in enumerate(rows) if i + 2 not in broken}
    stored = session.scalars(select(models.Enrolment)).all()
    assert {e.booking_ref for e in stored} == landed
    config = Config.load(Settings.from_env({}))
    for enrolment in stored:
        reminders = enrolment.reminders
        assert reminders and {r.state for r in reminders} == {"scheduled"}
        after = {rule.id for rule in config.protocols[enrolment.procedure].rules
                 if rule.phase == "after"}  # fmt: skip
        assert all(r.send_at < enrolment.starts_at or r.rule in after for r in reminders)
        channels = {r.channel for r in reminders if r.rule == "booking-confirmation"}
        assert channels == ({"sms", "email"} if enrolment.patient.email else {"sms"})
    first = next(e for e in stored if e.booking_ref == "BK-00000")
    confirmation = next(
        r for r in first.reminders if r.rule == "booking-confirmation" and r.channel == "sms"
    )
    assert wording.compose(config, confirmation)[0].body.startswith("Hello Patient0,")
    audit = session.scalars(select(models.AuditEntry.action).distinct()).all()
    assert audit == ["enrol"]


def test_importing_the_same_file_again_updates_and_never_duplicates(
    cli: Path, session: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [patient(i) for i in range(12)]
    path = write_csv(cli / "list.csv", rows)
    assert run_import(path, capsys).code == 0
    reminders = count(session, models.Reminder)

    again = run_import(path, capsys)
    assert again.code == 0, again.err
    assert again.out.splitlines()[0] == "12 rows landed (0 new, 0 updated, 12 unchanged)"
    assert (count(session, models.Enrolment), count(session, models.Reminder)) == (12, reminders)

    rows[3]["time"] = "16:45"  # moved
    rows[5]["name"] = "Patient5 Evans-Jones"  # corrected
    write_csv(path, rows)
    moved = run_import(path, capsys)
    assert moved.code == 0, moved.err
    assert moved.out.splitlines()[0] == "12 rows landed (0 new, 2 updated, 10 unchanged)"
    assert count(session, models.Enrolment) == 12
    enrolment = session.scalars(
        select(models.Enrolment).where(models.Enrolment.booking_ref == rows[3]["booking_ref"])
    ).one()
    assert enrolment.local_time.strftime("%H:%M") == "16:45"
    assert enrolment.schedule_version == 2
    states = {(r.state, r.cancel_reason) for r in enrolment.reminders}
    assert states == {("scheduled", None), ("cancelled", "superseded")}


def test_when_every_row_lands_the_errors_file_of_an_earlier_run_is_removed(
    cli: Path, session: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [patient(i) for i in range(5)]
    rows[2]["procedure"] = "sacroplsty"
    path = write_csv(cli / "Monday list.CSV", rows)
    first = run_import(path, capsys)
    assert first.code == 1
    errors_path = cli / "Monday list.errors.csv"
    assert [r["booking_ref"] for r in read_errors(errors_path)] == ["BK-00002"]

    rows[2]["procedure"] = "sacroplasty"
    write_csv(path, rows)
    fixed = run_import(path, capsys)
    assert fixed.code == 0, fixed.err
    assert fixed.out.splitlines() == ["5 rows landed (1 new, 0 updated, 4 unchanged)"]
    assert not errors_path.exists()
    assert f"Removed {errors_path}" in fixed.err
    assert count(session, models.Enrolment) == 5


def test_fixed_rows_can_be_imported_straight_from_the_errors_file(
    cli: Path, session: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [patient(i) for i in range(4)]
    rows[1]["phone"] = "0113 496 0000"
    path = write_csv(cli / "list.csv", rows)
    assert run_import(path, capsys).code == 1
    errors_path = cli / "list.errors.csv"
    refused = read_errors(errors_path)
    refused[0]["phone"] = "07911 100001"
    write_csv(errors_path, refused, header=list(refused[0]))
    again = run_import(errors_path, capsys)
    assert again.code == 0, again.err
    assert again.out.splitlines() == ["1 row landed (1 new, 0 updated)"]
    assert count(session, models.Enrolment) == 4


# --- unusable files: exit 2, one line, nothing lands ------------------------------------------

GOOD_ROW = "BK-1,Sian Jones,sacroplasty,{date},09:30,07911 100001\r\n"
GOOD_HEADER = "booking_ref,name,procedure,date,time,phone\r\n"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "the file is empty"),
        (b"\r\n\r\n", "the file is empty"),
        (GOOD_HEADER.encode(), "the file has a header but no rows to import"),
        (b"booking_ref,name,date,time,phone\r\nBK-1,A B,2027-01-01,09:30,07911100001\r\n",
         "no procedure column; the header row must name the columns: booking_ref, name, "
         "procedure, date, time are required"),
        (b"BK-1,Sian Jones,sacroplasty,2027-01-01,09:30,07911100001\r\n",
         "no booking_ref, name, procedure, date, time column"),
        (b"booking_ref;name;procedure;date;time\r\nBK-1;A B;sacroplasty;2027-01-01;09:30\r\n",
         "the columns are separated by semicolons, not commas"),
        (b"booking_ref,name,procedure,date,time,Name\r\nBK-1,A,sacroplasty,2027-01-01,09:30,A\r\n",
         "the column name appears twice (columns 2 and 6); keep one"),
        (b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 40, "this is an Excel workbook (.xlsx)"),
        (b"\xff\xfeb\x00o\x00", "this is UTF-16 text"),
        (GOOD_HEADER.encode() + b"BK-1,A\x00B,sacroplasty", "this is not a text file"),
        (GOOD_HEADER.encode() + b"BK-1,Si\x81n \xe2\x82,sacroplasty,2027-01-01,09:30,1\r\n",
         "the file is neither UTF-8 nor Windows-1252 text"),
    ],
)  # fmt: skip
def test_an_unusable_file_exits_2_with_one_line_and_lands_nothing(
    cli: Path, session: Session, capsys: pytest.CaptureFixture[str], content: bytes, reason: str
) -> None:
    path = cli / "list.csv"
    path.write_bytes(content.replace(b"{date}", days(20).encode()))
    result = run_import(path, capsys)
    assert result.code == 2
    assert result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("reminders import: list.csv: ")
    assert reason in lines[0]
    assert lines[0].endswith("Nothing was imported.")
    assert count(session, models.Enrolment) == 0
    assert not (cli / "list.errors.csv").exists()


def test_a_missing_file_exits_2_with_one_line(
    cli: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_import(cli / "nowhere.csv", capsys)
    assert result.code == 2
    assert result.err.splitlines() == [
        f"reminders import: No such file or directory: {cli / 'nowhere.csv'}"
    ]


def test_a_bad_line_far_down_the_file_is_found_before_anything_lands(
    cli: Path, session: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    """The encoding is decided on the whole file, not its first megabyte: a Windows-1252 name
    on the last line must not be found after the rows before it have landed as UTF-8."""
    rows = [patient(i, notes="Ward round notes. " * 120) for i in range(600)]
    rows[-1]["name"] = "Siân Jones"
    path = write_csv(cli / "list.csv", rows, encoding="cp1252")
    assert path.stat().st_size > 1 << 20
    result = run_import(path, capsys)
    assert result.code == 0, result.err
    assert "read as Windows-1252" in result.err
    assert (
        session.scalar(select(models.Patient.name).where(models.Patient.phone == "+447911100599"))
        == "Siân Jones"
    )


# --- what Excel and booking systems write ----------------------------------------------------


def test_excel_files_in_either_encoding_keep_accented_names(
    cli: Path, session: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    names = ["Siân Jones", "Zoë Brontë", "Ffion O\u2019Brien"]
    for encoding, bom, name in (("utf-8-sig", True, "utf8.csv"), ("cp1252", False, "ansi.csv")):
        rows = [patient(i, name=n, booking_ref=f"{name[:4]}-{i}") for i, n in enumerate(names)]
        path = write_csv(cli / name, rows, encoding=encoding)
        assert path.read_bytes().startswith(b"\xef\xbb\xbf") is bom
        result = run_import(path, capsys)
        assert result.code == 0, result.err
        assert ("read as Windows-1252" in result.err) is (encoding == "cp1252")
    stored = session.scalars(select(models.Patient.name).order_by(models.Patient.id)).all()
    assert stored == names * 2


def test_columns_in_any_order_any_case_with_others_ignored_and_blank_lines_skipped(
    cli: Path, session: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    date = days(20)
    content = (
        "\n"
        f" Time ,PROCEDURE,Ward,name,Booking_Ref,date,phone,Comments\n"
        f"09:30,sacroplasty,B4,Siân Jones,BK-1,{date},07911 100001,\"first line\nsecond, line\"\n"
        "\n"
        ",,,,,,,\n"
        f"10:00,sacroplasty,B4,Rhys Evans,BK-2,{date},not a phone,\n"
        f"11:00,sacroplasty,B4,\"Evans\nRhys\",BK-3,{date},07911 100003,\n"
    )  # fmt: skip
    path = cli / "list.csv"
    path.write_text(content, encoding="utf-8")
    result = run_import(path, capsys)
    assert result.code == 1, result.err
    assert result.out.splitlines()[0].startswith("1 row landed (1 new, 0 updated); 2 refused")
    refused = read_errors(cli / "list.errors.csv")
    # Physical lines: a blank line, the header, then a row whose quoted value spans two.
    assert [(r["line"], r["Booking_Ref"]) for r in refused] == [("7", "BK-2"), ("8", "BK-3")]
    assert list(refused[0]) == [
        "line", "reason", "Time", "PROCEDURE", "Ward", "name", "Booking_Ref", "date", "phone",
        "Comments",
    ]  # fmt: skip
    assert refused[0]["Ward"] == "B4"
    assert refused[1]["reason"] == (
        "name: a line break inside the value; check this row for a double quote that is not closed"
    )
    assert session.scalar(select(models.Patient.name)) == "Siân Jones"


# --- a row lands completely or not at all -----------------------------------------------------


def test_a_row_that_fails_half_way_leaves_nothing_behind(
    cli: Path, session: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [patient(i, procedure="sacroplasty") for i in range(3)]
    path = write_csv(cli / "list.csv", rows)
    assert run_import(path, capsys).code == 0
    cancelled = session.scalars(
        select(models.Enrolment).where(models.Enrolment.booking_ref == "BK-00001")
    ).one()
    enrolments.cancel(session, Config.load(Settings.from_env({})), cancelled,
                    now=datetime.now(UTC), actor="alice")  # fmt: skip
    session.commit()

    def stored() -> dict[str, object]:
        session.expire_all()
        return {
            e.booking_ref: (e.patient.name, e.local_time, e.schedule_version, e.status,
                            [(r.id, r.state, r.send_at, r.body) for r in e.reminders])
            for e in session.scalars(select(models.Enrolment))
        }  # fmt: skip

    before = stored()
    # A name so long that the texts no longer fit in three SMS: found only once the
    # enrolment has been changed and its reminders are being written again.
    rows[0].update(name="A" * 194 + " Jones", time="16:45")
    rows[1].update(time="16:45")  # the booking reference of the cancelled enrolment
    write_csv(path, rows)
    result = run_import(path, capsys)

    assert result.code == 1
    assert result.out.splitlines()[0].startswith("1 row landed (0 new, 0 updated, 1 unchanged)")
    reasons = {r["booking_ref"]: r["reason"] for r in read_errors(cli / "list.errors.csv")}
    assert reasons["BK-00000"].startswith(
        "name, anticoagulant: a text to this patient would take 4 SMS messages, more than the 3 "
        "we send; shorten the name"
    )
    assert reasons["BK-00001"] == (
        "booking_ref: BK-00001 belongs to a cancelled enrolment; use a new booking reference"
    )
    assert stored() == before
    actions = session.scalars(select(models.AuditEntry.action)).all()
    assert sorted(actions) == ["cancel", "enrol", "enrol", "enrol"]


# --- the importer as the staff pages call it ---------------------------------------------------


@pytest.fixture(scope="module")
def open_config() -> Config:
    return Config.load(Settings.from_env({"REMINDERS_SENDING_WINDOW": "00:00-24:00"}))


def as_stream(rows: list[dict[str, str]], header: list[str] = HEADER) -> io.BytesIO:
    out = io.StringIO()
    writer = csv.DictWriter(out, header, lineterminator="\r\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return io.BytesIO(out.getvalue().encode())


def test_the_bulk_path_writes_what_enrol_writes(
    db_engine: Engine, session: Session, open_config: Config
) -> None:
    """New booking references are inserted in bulk; the rows must be exactly those
    `enrolments.enrol` writes, late-enrolment warnings and audit included."""
    now = datetime.now(UTC).replace(microsecond=0)
    row = patient(14, procedure="sacroplasty", date=days(3), email="p14@example.org",
                  anticoagulant="warfarin", anticoagulant_hold_days="5")  # fmt: skip
    report = import_csv(
        make_sessionmaker(db_engine), open_config, as_stream([row]), now=now, actor="alice",
        on_refusal=lambda refusal: pytest.fail(refusal.reason),
    )  # fmt: skip
    assert (report.created, report.warnings) == (1, 1)
    fields = {key: value for key, value in row.items() if key != "notes"}
    enrolment = parse_fields(
        {**fields, "booking_ref": "BK-ENROL"},
        protocols=open_config.protocols,
        default_timezone=open_config.settings.timezone,
    )
    enrolments.enrol(session, open_config, enrolment, now=now, actor="alice")
    session.commit()

    def snapshot(ref: str) -> dict[str, object]:
        stored = session.scalars(
            select(models.Enrolment).where(models.Enrolment.booking_ref == ref)
        ).one()
        skip = {"id", "enrolment_id", "patient_id", "booking_ref", "created_at", "updated_at"}

        def columns(row: models.Base) -> dict[str, object]:
            return {c.key: getattr(row, c.key) for c in row.__table__.columns
                    if c.key not in skip}  # fmt: skip

        attention = session.scalars(
            select(models.AttentionItem).where(models.AttentionItem.enrolment_id == stored.id)
        ).all()
        audit = session.scalars(
            select(models.AuditEntry).where(models.AuditEntry.enrolment_id == stored.id)
        ).all()
        return {
            "patient": columns(stored.patient),
            "enrolment": columns(stored),
            "reminders": sorted(
                (columns(r) for r in stored.reminders),
                key=lambda r: (r["send_at"], r["rule"], r["channel"]),
            ),
            "attention": [columns(a) for a in attention],
            "audit": [
                {**columns(a), "detail": json.loads(a.detail or "{}") | {"booking_ref": "-"}}
                for a in audit
            ],
        }

    imported, enrolled = snapshot(row["booking_ref"]), snapshot("BK-ENROL")
    assert imported == enrolled
    assert imported["attention"] and imported["reminders"]


def test_every_field_of_the_schema_is_a_column_the_import_takes(
    db_engine: Engine, session: Session, open_config: Config
) -> None:
    """Through the bulk path for a new reference, then through `enrol` for a known one."""
    first = make_full_enrolment(on=TODAY + timedelta(days=20))
    changed = first.with_changes(
        name="Megan Price", phone="+447911100002", email="megan.price@example.org",
        language="cy", date=TODAY + timedelta(days=21), time=time(10, 0),
        timezone=ZoneInfo("Europe/Dublin"), arrival=time(8, 45), sedation=False,
        anaesthesia="local", joint="hip",
        anticoagulant="Warfarin", anticoagulant_hold_days=5, anticoagulant_restart_days=0,
    )  # fmt: skip
    for enrolment, landed in ((first, "created"), (changed, "updated")):
        report = import_csv(
            make_sessionmaker(db_engine), open_config,
            as_stream([enrolment.as_fields()], header=list(FIELDS)),
            now=datetime.now(UTC), actor="alice",
            on_refusal=lambda refusal: pytest.fail(refusal.reason),
        )  # fmt: skip
        assert getattr(report, landed) == 1
        session.expire_all()
        stored = session.scalars(select(models.Enrolment)).one()
        assert planning.as_enrolment(stored) == enrolment


def test_refusals_and_progress_reach_the_callbacks_as_the_import_goes(
    db_engine: Engine, open_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(imports, "BATCH_ROWS", 10)
    monkeypatch.setattr(imports, "ANALYZE_EVERY", 15)  # PostgreSQL's statistics refreshed too
    rows = [patient(i) for i in range(35)]
    rows[12]["date"] = "tomorrow"
    rows[31]["procedure"] = ""
    stream = as_stream(rows)
    size = len(stream.getvalue())
    csv_file = open_csv(stream)  # checked before the import starts, as the upload page does
    assert (csv_file.rows_total, csv_file.encoding) == (35, "utf-8")
    events: list[tuple[str, int, int]] = []

    def refused(refusal: Refusal) -> None:
        events.append(("refused", refusal.line, 0))

    report = import_csv(
        make_sessionmaker(db_engine), open_config, csv_file, now=datetime.now(UTC),
        actor="alice", on_refusal=refused,
        on_progress=lambda done, rows_done: events.append(("progress", done, rows_done)),
    )  # fmt: skip
    assert (report.rows, report.created, report.refused) == (35, 33, 2)
    assert [e for e in events if e[0] == "refused"] == [("refused", 14, 0), ("refused", 33, 0)]
    progress = [(done, rows_done) for kind, done, rows_done in events if kind == "progress"]
    assert [rows_done for _, rows_done in progress] == [10, 20, 30, 35]
    assert progress[-1][0] == size
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    # The refusal of line 14 came after the batch holding it was committed, before the next.
    assert events.index(("refused", 14, 0)) == events.index(("progress", progress[1][0], 20)) - 1


def test_an_unexpected_error_stops_the_import_and_keeps_what_landed(
    db_engine: Engine, session: Session, open_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault between batches (here, the audit table taken away, as a failing disk or a
    dropped connection would) stops the import with the rows already committed kept, and the
    batch it was in left out whole."""
    monkeypatch.setattr(imports, "BATCH_ROWS", 5)
    rows = [patient(i) for i in range(12)]
    rows[1]["phone"] = "0113 496 0000"
    rename = "ALTER TABLE audit_entries RENAME TO {}"

    def sabotage(refusal: Refusal) -> None:
        with db_engine.begin() as connection:
            connection.execute(text(rename.format("audit_entries_away")))

    try:
        with pytest.raises(ImportInterrupted) as stopped:
            import_csv(make_sessionmaker(db_engine), open_config, as_stream(rows),
                       now=datetime.now(UTC), actor="alice", on_refusal=sabotage)  # fmt: skip
    finally:
        with db_engine.begin() as connection:
            connection.execute(text("ALTER TABLE audit_entries_away RENAME TO audit_entries"))
    assert stopped.value.line == 7
    assert stopped.value.report.landed == 4
    assert str(stopped.value).startswith("stopped by an unexpected error (")
    assert "in the rows from line 7; the 4 rows that landed before them stay" in str(stopped.value)
    assert stopped.value.__cause__ is not None
    refs = session.scalars(select(models.Enrolment.booking_ref).order_by("booking_ref")).all()
    assert refs == ["BK-00000", "BK-00002", "BK-00003", "BK-00004"]


def test_worker_processes_write_what_this_process_writes(
    db_engine: Engine, session: Session, open_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big file has its messages written in worker processes: the same rows land, refusals
    come in line order, and an update still goes through `enrol` here."""
    monkeypatch.setattr(imports, "BATCH_ROWS", 20)
    monkeypatch.setattr(imports, "POOL_MIN_ROWS", 40)
    now = datetime.now(UTC).replace(microsecond=0)
    rows = [patient(i) for i in range(90)]
    rows[5]["date"] = days(-2)  # refused by a worker: already passed
    rows[50]["phone"] = "0113 496 0000"  # refused here, while reading
    factory = make_sessionmaker(db_engine)
    import_csv(factory, open_config, as_stream(rows[:10]), now=now, actor="alice",
               on_refusal=lambda refusal: None)  # fmt: skip
    rows[3]["time"] = "16:45"  # stored already, and moved
    refused: list[Refusal] = []
    report = import_csv(factory, open_config, as_stream(rows), now=now, actor="alice",
                        on_refusal=refused.append, workers=2)  # fmt: skip

    assert (report.created, report.updated, report.unchanged, report.refused) == (79, 1, 8, 2)
    assert [(r.line, r.booking_ref) for r in refused] == [(7, "BK-00005"), (52, "BK-00050")]
    assert refused[0].reason == "date, time: the procedure time has already passed"
    moved = session.scalars(
        select(models.Enrolment).where(models.Enrolment.booking_ref == "BK-00003")
    ).one()
    assert moved.schedule_version == 2
    inline = Config.load(Settings.from_env({"REMINDERS_SENDING_WINDOW": "00:00-24:00"}))
    sample = session.scalars(
        select(models.Enrolment).where(models.Enrolment.booking_ref == "BK-00077")
    ).one()
    expected = compute_schedule(
        inline.protocols[sample.procedure], planning.as_enrolment(sample), now, inline.window,
        medicines=inline.medicines, unit=inline.unit,
    )  # fmt: skip
    wanted = [planning.reminder_values(inline, expected, planned, 1)
              for planned in expected.reminders]  # fmt: skip
    got = [{key: getattr(r, key) for key in wanted[0]} for r in sample.reminders]

    def order(row: dict[str, object]) -> tuple[str, str, str]:
        return (str(row["send_at"]), str(row["rule"]), str(row["channel"]))

    assert sorted(got, key=order) == sorted(wanted, key=order)


def test_a_pipe_is_read_as_well_as_a_file(open_config: Config) -> None:
    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            chunk = self.data.read(min(len(buffer), 7))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    csv_file = open_csv(io.BufferedReader(Pipe(as_stream([patient(1), patient(2)]).getvalue())))
    assert csv_file.rows_total == 2
    assert [line for line, _, _ in csv_file.rows()] == [2, 3]


def test_unusable_files_raise_before_anything_is_read_as_rows() -> None:
    with pytest.raises(UnusableFile, match="no booking_ref column"):
        open_csv(io.BytesIO(b"ref,name,procedure,date,time\r\nBK-1,A,sacroplasty,x,y\r\n"))


def test_the_errors_file_neutralises_formulas_and_still_imports_once_fixed(
    cli: Path, session: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [patient(0, phone="+44 113 496 0000", name='=HYPERLINK("http://evil.example")')]
    path = write_csv(cli / "list.csv", rows)
    assert run_import(path, capsys).code == 1
    errors_path = cli / "list.errors.csv"
    refused = read_errors(errors_path)
    assert refused[0]["name"] == '\'=HYPERLINK("http://evil.example")'
    assert refused[0]["phone"] == "'+44 113 496 0000"
    refused[0]["phone"] = "'+44 7911 100001"  # fixed in the spreadsheet, apostrophe and all
    refused[0]["name"] = "Ceri Evans"
    write_csv(errors_path, refused, header=list(refused[0]))
    assert run_import(errors_path, capsys).code == 0
    assert session.scalar(select(models.Patient.phone)) == "+447911100001"
