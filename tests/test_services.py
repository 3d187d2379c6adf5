"""Enrolment lifecycle on a real database (SQLite and PostgreSQL): enrol, update by booking
reference, reschedule with corrections, cancel, complete."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import pytest
from factories import make_enrolment, make_full_enrolment, utc
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from reminders.config import Config
from reminders.core.enrolment import FIELDS
from reminders.services import enrolments, planning, wording
from reminders.store import lifecycle, models

ENROLLED = utc(2026, 11, 20, 10, 0)


def warfarin_patient(**changes: object) -> object:
    fields: dict[str, object] = dict(
        procedure="sacroplasty",
        arrival=time(8, 30),
        anticoagulant="warfarin",
        hold_days=5,
        restart_days=0,
        booking_ref="BK-1001",
    )
    fields.update(changes)
    return make_enrolment(**fields)  # type: ignore[arg-type]


def rows(session: Session, enrolment: models.Enrolment, *states: str) -> list[models.Reminder]:
    session.refresh(enrolment)
    return [r for r in enrolment.reminders if not states or r.state in states]


def mark_sent(session: Session, config: Config, reminder: models.Reminder, at: datetime) -> None:
    """As a send does it: claimed, taken, its words written as it goes, then sent."""
    session.flush()
    # Claimed by the dispatcher: that claims every due row, and only this one is wanted here.
    session.execute(
        update(models.Reminder).where(models.Reminder.id == reminder.id).values(state="queued")
    )
    (held,) = lifecycle.begin(session, [reminder.id], at)
    assert lifecycle.write_words(session, held, wording.write(config, reminder))
    assert lifecycle.sent(
        session, held, provider_id=f"test-{reminder.id}", delivery_status=None,
        transport="outbox", seconds=None, now=at,
    )  # fmt: skip
    session.refresh(reminder)


def words(config: Config, reminder: models.Reminder) -> str:
    return wording.compose(config, reminder)[0].body


def test_enrol_schedules_every_reminder_and_its_words_are_written_as_it_goes(
    session: Session, config: Config
) -> None:
    result = enrolments.enrol(session, config, warfarin_patient(), now=ENROLLED, actor="alice")
    session.commit()

    assert result.created and result.warnings == []
    stored = rows(session, result.enrolment)
    assert len(stored) == 18  # nine rules, SMS and email
    assert {r.state for r in stored} == {"scheduled"}
    stop = next(r for r in stored if r.rule == "anticoagulant-stop" and r.channel == "sms")
    assert stop.send_at == utc(2026, 12, 4, 18, 0)
    assert stop.safety_critical and stop.body is None  # nothing written yet
    assert "(Friday 4 December) is the last day to take warfarin" in words(config, stop)
    email = next(r for r in stored if r.rule == "fasting" and r.channel == "email")
    mark_sent(session, config, email, email.send_at)
    assert email.subject and email.body_html and email.body and "2:30am" in email.body
    assert email.template_version and email.language == "en-GB" and email.fingerprint
    patient = result.enrolment.patient
    assert (patient.name, patient.phone) == ("Siân Jones", "+447911100001")
    audit = session.scalars(select(models.AuditEntry)).all()
    assert [(a.actor, a.action) for a in audit] == [("alice", "enrol")]


def test_the_same_booking_reference_updates_and_never_duplicates(
    session: Session, config: Config
) -> None:
    first = enrolments.enrol(session, config, warfarin_patient(), now=ENROLLED, actor="alice")
    again = enrolments.enrol(session, config, warfarin_patient(), now=ENROLLED, actor="alice")
    session.commit()
    assert again.enrolment.id == first.enrolment.id
    assert not again.created and again.reminders == []
    assert session.scalar(select(func.count()).select_from(models.Enrolment)) == 1
    assert session.scalar(select(func.count()).select_from(models.Reminder)) == 18


def test_reschedule_moves_every_pending_reminder(session: Session, config: Config) -> None:
    first = enrolments.enrol(session, config, warfarin_patient(), now=ENROLLED, actor="alice")
    later = utc(2026, 11, 21, 9, 0)
    moved = enrolments.enrol(
        session, config, warfarin_patient(on=date(2026, 12, 17)), now=later, actor="bob"
    )
    session.commit()
    assert moved.enrolment.id == first.enrolment.id and moved.rescheduled
    assert moved.enrolment.schedule_version == 2
    pending = rows(session, moved.enrolment, "scheduled")
    stop = next(r for r in pending if r.rule == "anticoagulant-stop" and r.channel == "sms")
    assert stop.send_at == utc(2026, 12, 11, 18, 0)  # a week later, like the procedure
    assert {r.schedule_version for r in pending} == {2}
    cancelled = rows(session, moved.enrolment, "cancelled")
    assert cancelled and {r.cancel_reason for r in cancelled} == {"superseded"}
    day_before = next(r for r in pending if r.rule == "day-before")
    assert "Thursday 17 December" in words(config, day_before)
    actions = session.scalars(select(models.AuditEntry.action)).all()
    assert actions == ["enrol", "reschedule"]


def test_a_move_after_the_stop_instruction_withdraws_the_plan_until_a_clinician_records_one(
    session: Session, config: Config
) -> None:
    """The software never works out new medicine dates itself (docs/clinical-safety.md, H2):
    the patient is told the team will call, staff get an urgent call, and new dates go out
    only once a new plan is recorded, as a correction of the old ones."""
    result = enrolments.enrol(session, config, warfarin_patient(), now=ENROLLED, actor="alice")
    for reminder in rows(session, result.enrolment):
        if reminder.rule in ("booking-confirmation", "anticoagulant-plan"):
            mark_sent(session, config, reminder, ENROLLED)
    session.commit()

    # Moved a week later: kept as it is, the 5-day hold would become 12 days.
    now = utc(2026, 11, 23, 9, 0)
    moved = enrolments.enrol(
        session, config, warfarin_patient(on=date(2026, 12, 17)), now=now, actor="bob"
    )
    session.commit()
    assert moved.enrolment.anticoagulant == "warfarin"
    assert moved.enrolment.anticoagulant_hold_days is None  # withdrawn
    pending = rows(session, moved.enrolment, "scheduled")
    assert not [r for r in pending if r.is_correction or r.rule.startswith("anticoagulant")]
    (notice,) = [r for r in pending if r.rule == "appointment-moved" and r.channel == "sms"]
    assert "our team will call you about it" in words(config, notice)
    (item,) = session.scalars(select(models.AttentionItem)).all()
    assert (item.kind, item.needs_call) == ("blood-thinner", True)
    assert "would make it 12 days" in item.message and "Friday 4 December" in item.message

    # A clinician's new plan for the new date: the dates go out, correcting the old ones.
    later = utc(2026, 11, 24, 9, 0)
    replanned = enrolments.enrol(
        session, config, warfarin_patient(on=date(2026, 12, 17)), now=later, actor="carol"
    )
    session.commit()
    corrections = [r for r in rows(session, replanned.enrolment, "scheduled") if r.is_correction]
    assert {(r.rule, r.channel) for r in corrections} == {
        ("anticoagulant-plan", "sms"),
        ("anticoagulant-plan", "email"),
    }
    sms = next(r for r in corrections if r.channel == "sms")
    assert sms.send_at == later
    assert "Please ignore our earlier message" in words(config, sms)
    assert "Friday 11 December" in words(config, sms)
    assert "4 December" not in words(config, sms)
    # The sent messages stay as history, untouched.
    sent = rows(session, replanned.enrolment, "sent")
    assert len(sent) == 4 and {r.schedule_version for r in sent} == {1}


def test_a_change_that_leaves_a_sent_instruction_alone_needs_no_correction(
    session: Session, config: Config
) -> None:
    result = enrolments.enrol(session, config, warfarin_patient(), now=ENROLLED, actor="alice")
    for reminder in rows(session, result.enrolment):
        if reminder.rule == "anticoagulant-plan":
            mark_sent(session, config, reminder, ENROLLED)
    session.commit()
    # Same day, an hour later: the blood-thinner dates do not change.
    moved = enrolments.enrol(
        session, config, warfarin_patient(at=time(10, 30), arrival=time(9, 30)),
        now=utc(2026, 11, 23, 9), actor="bob",
    )  # fmt: skip
    session.commit()
    assert moved.rescheduled
    assert not [r for r in rows(session, moved.enrolment) if r.is_correction]
    assert session.scalars(select(models.AttentionItem)).all() == []


def test_an_identical_pending_reminder_is_kept_not_replaced(
    session: Session, config: Config
) -> None:
    result = enrolments.enrol(session, config, warfarin_patient(), now=ENROLLED, actor="alice")
    stop_id = next(r.id for r in rows(session, result.enrolment) if r.rule == "anticoagulant-stop")
    # Only the email address changes: the SMS reminders are the same and stay as they are.
    enrolments.enrol(
        session, config, warfarin_patient(email="s.jones@example.org"), now=ENROLLED, actor="bob"
    )
    session.commit()
    stop = session.get(models.Reminder, stop_id)
    assert stop is not None and stop.state == "scheduled" and stop.schedule_version == 2


def test_a_late_plan_is_put_in_front_of_staff(session: Session, config: Config) -> None:
    result = enrolments.enrol(
        session, config, warfarin_patient(), now=utc(2026, 12, 8, 9), actor="alice"
    )
    session.commit()
    assert len(result.warnings) == 1
    (item,) = session.scalars(select(models.AttentionItem)).all()
    assert item.kind == "blood-thinner" and item.needs_call
    assert "can no longer be honoured" in item.message
    assert not [r for r in rows(session, result.enrolment) if r.rule.startswith("anticoag")]


def test_cancel_stops_everything_and_the_reference_cannot_be_reused(
    session: Session, config: Config
) -> None:
    result = enrolments.enrol(session, config, warfarin_patient(), now=ENROLLED, actor="alice")
    enrolments.cancel(session, config, result.enrolment, now=ENROLLED, actor="alice")
    session.commit()
    assert result.enrolment.status == "cancelled" and result.enrolment.ended_at == ENROLLED
    stored = rows(session, result.enrolment)
    assert {r.state for r in stored if r.rule != "appointment-cancelled"} == {"cancelled"}
    # What still goes: the patient is told it is cancelled.
    assert {r.state for r in stored if r.rule == "appointment-cancelled"} == {"scheduled"}
    with pytest.raises(enrolments.EnrolmentClosed, match="cancelled enrolment"):
        enrolments.enrol(session, config, warfarin_patient(), now=ENROLLED, actor="alice")


def test_a_reschedule_plans_again_what_the_patient_had_for_the_old_date(
    session: Session, config: Config
) -> None:
    # Sacroplasty on 10 December; by 9 December at 7pm the day-before and fasting messages
    # have gone. Then it moves to 14 January.
    result = enrolments.enrol(session, config, warfarin_patient(anticoagulant=None, hold_days=None,
                            restart_days=None), now=ENROLLED, actor="alice")  # fmt: skip
    for reminder in rows(session, result.enrolment):
        if reminder.send_at <= utc(2026, 12, 9, 19):
            mark_sent(session, config, reminder, reminder.send_at)
    session.commit()
    moved = enrolments.enrol(
        session, config,
        warfarin_patient(on=date(2027, 1, 14), anticoagulant=None, hold_days=None,
                         restart_days=None),
        now=utc(2026, 12, 9, 19, 30), actor="bob",
    )  # fmt: skip
    session.commit()
    pending = rows(session, moved.enrolment, "scheduled")
    sms = {r.rule: r for r in pending if r.channel == "sms"}
    # The fasting times changed: corrected at once, and reminded again the evening before.
    fasting = sorted(
        (r for r in pending if r.rule == "fasting" and r.channel == "sms"), key=lambda r: r.send_at
    )
    assert [r.is_correction for r in fasting] == [True, False]
    assert fasting[1].send_at == utc(2027, 1, 13, 18)
    # The move is told now, from the old date to the new one (in place of confirming the
    # booking again), and the day-before message goes before the new date.
    assert "booking-confirmation" not in sms
    assert sms["appointment-moved"].send_at == utc(2026, 12, 9, 19, 30)
    assert "It is now on Thursday 14 January" in words(config, sms["appointment-moved"])
    assert sms["day-before"].send_at == utc(2027, 1, 13, 12)


def test_a_plan_added_by_a_later_update_is_sent_not_refused(
    session: Session, config: Config
) -> None:
    plain = warfarin_patient(anticoagulant=None, hold_days=None, restart_days=None)
    enrolments.enrol(session, config, plain, now=ENROLLED, actor="alice")
    updated = enrolments.enrol(session, config, warfarin_patient(), now=utc(2026, 11, 22, 9),
                             actor="bob")  # fmt: skip
    session.commit()
    assert updated.warnings == []
    rules = {r.rule for r in updated.reminders}
    assert {"anticoagulant-plan", "anticoagulant-stop", "anticoagulant-restart"} <= rules
    plan = next(r for r in updated.reminders if r.rule == "anticoagulant-plan")
    assert plan.send_at == utc(2026, 11, 22, 9)


def test_repeated_updates_do_not_repeat_the_same_call_list_entry(
    session: Session, config: Config
) -> None:
    late = utc(2026, 12, 8, 9)
    enrolments.enrol(session, config, warfarin_patient(), now=late, actor="alice")
    enrolments.enrol(session, config, warfarin_patient(email="x@example.org"), now=late,
                   actor="alice")  # fmt: skip
    session.commit()
    items = session.scalars(select(models.AttentionItem)).all()
    assert len(items) == 1


def test_a_procedure_in_the_past_is_refused(session: Session, config: Config) -> None:
    with pytest.raises(enrolments.EnrolmentRefused, match="already passed"):
        enrolments.enrol(session, config, warfarin_patient(), now=utc(2026, 12, 11), actor="a")


# A value for every field unlike `make_full_enrolment`'s; the booking reference is how an update
# finds the enrolment, so it stays.
OTHERWISE = dict(
    name="Megan Price", phone="+447911100002", email="megan.price@example.org", language="cy",
    procedure="sacroplasty", date=date(2026, 12, 11), time=time(10, 0),
    timezone=ZoneInfo("Europe/Dublin"), arrival=time(8, 45), sedation=False,
    anaesthesia="general", joint="hip", anticoagulant="Warfarin", anticoagulant_hold_days=5,
    anticoagulant_restart_days=0, anticoagulant_hold_reason="Haematology advised it",
)  # fmt: skip


def test_an_update_that_changes_any_one_field_is_stored(session: Session, config: Config) -> None:
    assert set(OTHERWISE) == set(FIELDS) - {"booking_ref"}
    for number, (name, value) in enumerate(OTHERWISE.items()):
        first = make_full_enrolment(booking_ref=f"BK-{number}")
        enrolments.enrol(session, config, first, now=ENROLLED, actor="alice")
        changed = first.with_changes(**{name: value})
        assert changed != first, name
        result = enrolments.enrol(session, config, changed, now=ENROLLED, actor="alice")
        session.commit()
        assert not result.created, name
        session.expire_all()
        assert planning.as_enrolment(result.enrolment) == changed, name
