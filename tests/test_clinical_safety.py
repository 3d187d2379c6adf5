"""The clinical safety case, end to end (docs/clinical-safety.md names these tests as the
evidence for each hazard's control): a patient is enrolled, what is due is delivered through the
real delivery code to the loopback fakes at the minute it is due, the booking changes, and
delivery goes on. Each test reads back every message the patient got (the words, at their local
times) and every entry staff see on the call list, on SQLite and PostgreSQL.

One timeline throughout: enrolled on Friday 20 November 2026 at 10am for a sacroplasty on
Thursday 10 December at 9:30am (arrive 8:30am), warfarin held for 5 days (last dose Friday 4
December), restarted the evening of the procedure.
"""

from __future__ import annotations

import io
import shutil
from datetime import date, time, timedelta
from email import message_from_bytes
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from clinic import PHONE, Clinic, london
from fastapi.testclient import TestClient
from paths import PROJECT_ROOT
from staff import BOB, Staff, add_staff
from world import World

from reminders.config import Config
from reminders.delivery import send
from reminders.services.enrolments import EnrolmentRefused
from reminders.services.imports import import_csv
from reminders.settings import Settings
from reminders.store import holds, lifecycle
from reminders.store.db import session_scope

MONDAY_23 = date(2026, 11, 23)
FRIDAY_4 = date(2026, 12, 4)
MONDAY_7 = date(2026, 12, 7)
WEDNESDAY_9 = date(2026, 12, 9)
THURSDAY_10 = date(2026, 12, 10)
FRIDAY_11 = date(2026, 12, 11)
THURSDAY_17 = date(2026, 12, 17)
UNIT = "Pain Management Unit"

WARFARIN = dict(
    date=THURSDAY_10, time=time(9, 30), arrival=time(8, 30), anticoagulant="warfarin",
    anticoagulant_hold_days=5, anticoagulant_restart_days=0,
)  # fmt: skip


@pytest.fixture
def clinic(w: World, delivery_env: dict[str, str]) -> Clinic:
    return Clinic.open(w, delivery_env, london(date(2026, 11, 20), 10))


def stopped(clinic: Clinic) -> int:
    """The warfarin patient, past their last dose: told at booking, and on Friday evening."""
    enrolment_id = clinic.enrol(**WARFARIN)
    clinic.run_until(london(MONDAY_7, 11))
    sent = [(when, rule) for when, rule, _ in clinic.texts()]
    assert sent == [
        ("Fri 20 Nov 10:00", "booking-confirmation"),
        ("Fri 20 Nov 10:00", "anticoagulant-plan"),
        ("Fri 04 Dec 18:00", "anticoagulant-stop"),
        ("Mon 07 Dec 10:00", "arrange-transport"),
    ]
    return enrolment_id


# --- H1: cancelled after a stop instruction --------------------------------------------------

CANCELLED_SMS = (
    "Hello Megan, your appointment on Thursday 10 December at 9:30am has been cancelled. You "
    "were asked to stop warfarin: our team will call you about when to start it again. If you "
    f"have not heard from us, please call us on 020 7946 0000. - {UNIT}"
)
CANCELLED_CALL = (
    "Urgent, a clinician must decide: the procedure on Thursday 10 December is cancelled and "
    "the patient was told to stop warfarin. Last dose: Friday 4 December; days without it so "
    "far: 3. The patient was last told about it at 6pm on Friday 4 December ('Evening of the "
    "last blood-thinner dose, reminding the patient to skip it from tomorrow'). The patient has "
    "been told we will call about restarting it."
)


def assert_cancelled_safely(clinic: Clinic) -> None:
    clinic.run_until(london(FRIDAY_11, 20))
    after = clinic.texts(since=london(MONDAY_7, 11))
    assert after == [("Mon 07 Dec 11:00", "appointment-cancelled", CANCELLED_SMS)]
    assert clinic.calls() == [CANCELLED_CALL]
    # The email takes the appointment out of the patient's diary.
    (email,) = [e for e in clinic.emails(since=london(MONDAY_7, 11))]
    assert email.rule == "appointment-cancelled"
    assert "Our team will call you about when to start taking it again" in (email.body or "")


def test_h1_cancelled_after_the_stop_instruction_the_team_calls_about_restarting(
    clinic: Clinic, fake_smtp: object
) -> None:
    enrolment_id = stopped(clinic)
    clinic.cancel(enrolment_id)
    assert_cancelled_safely(clinic)
    calendars = [
        part.get_payload(decode=True)
        for message in fake_smtp.to("megan.price@example.org")  # type: ignore[attr-defined]
        for part in message.walk()
        if part.get_content_type() == "text/calendar"
    ]
    last = calendars[-1]
    assert b"METHOD:CANCEL" in last and b"STATUS:CANCELLED" in last


def test_h1_cancelled_through_the_api(clinic: Clinic) -> None:
    enrolment_id = stopped(clinic)
    app = clinic.web()
    with TestClient(app) as api:
        api.headers["Authorization"] = f"Bearer {clinic.api_token(app)}"
        response = api.post(f"/api/v1/enrolments/{enrolment_id}/cancel")
    assert response.status_code == 200, response.text
    assert_cancelled_safely(clinic)


def test_h1_cancelled_from_the_patient_page(clinic: Clinic) -> None:
    enrolment_id = stopped(clinic)
    app = clinic.web()
    add_staff(app.state.sessions)
    bob = Staff(app)
    assert bob.login(BOB).status_code == 303
    here = f"/enrolments/{enrolment_id}"
    bob.post(f"{here}/cancel", {}, page=here)
    # What staff see on the call list at once (before the clock moves on and logs bob out).
    call_list = bob.get("/attention?show=calls").text
    assert "days without it so far: 3" in call_list
    assert_cancelled_safely(clinic)


def test_h1_cancelled_before_any_stop_the_patient_is_told_and_nobody_needs_to_call(
    clinic: Clinic,
) -> None:
    enrolment_id = clinic.enrol(**WARFARIN)
    clinic.run_until(london(MONDAY_23, 9))  # the plan was sent; nobody has stopped yet
    clinic.cancel(enrolment_id)
    clinic.run_until(london(MONDAY_23, 10))
    (notice,) = [t for t in clinic.texts() if t[1] == "appointment-cancelled"]
    assert notice[2].startswith(
        "Hello Megan, your appointment on Thursday 10 December at 9:30am has been cancelled. "
        "You were asked to stop warfarin"
    )  # told about the plan at booking: the team still calls
    assert len(clinic.calls()) == 1


def test_h1_cancelled_while_the_plan_is_on_its_way_the_team_still_calls(clinic: Clinic) -> None:
    """The plan's text has left for the provider when staff cancel: it may reach the patient,
    so the cancellation is handled as if it had (a call, and the notice says so)."""
    enrolment_id = clinic.enrol(**WARFARIN)
    now = clinic.now
    with session_scope(clinic.w.factory) as session:
        claimed = [row.id for row in lifecycle.claim(session, now, 100)]
        held = lifecycle.begin(session, claimed, now)
        ready = send.prepare(session, held, clinic.config, now)
    (plan,) = [row for row, message in ready if message.channel == "sms"
               and "stop warfarin" in message.body]  # fmt: skip
    with session_scope(clinic.w.factory) as session:
        assert holds.go(session, plan, now, lease=timedelta(minutes=1)) == now
    clinic.cancel(enrolment_id)
    (call,) = clinic.calls()
    assert call.startswith("Urgent, a clinician must decide: the procedure on Thursday 10 ")
    # The provider's answer comes back a moment later, before the notice goes.
    with session_scope(clinic.w.factory) as session:
        assert lifecycle.sent(
            session, plan, provider_id="SM" + "1" * 32, delivery_status="queued",
            transport="twilio", seconds=0.1, now=now,
        )  # fmt: skip
    clinic.run_until(london(MONDAY_23, 10))
    (notice,) = [t for t in clinic.texts() if t[1] == "appointment-cancelled"]
    assert "You were asked to stop warfarin: our team will call you" in notice[2]


# --- H2: moved after a stop instruction --------------------------------------------------------

MOVED_SMS = (
    "Hello Megan, your appointment has moved. It was on Thursday 10 December at 9:30am. It is "
    "now on Thursday 17 December at 9:30am (please arrive at 8:30am). The dates we gave you for "
    "warfarin may no longer be right: our team will call you about it. We will send you new "
    f"reminders. If this is wrong, please call us on 020 7946 0000. - {UNIT}"
)
MOVED_CALL = (
    "Urgent, a clinician must decide: the procedure moved from Thursday 10 December to "
    "Thursday 17 December after the patient was told to stop warfarin. The plan was to stop 5 "
    "days before (last dose Friday 4 December); kept as it is, the new date would make it 12 "
    "days. The patient was last told about it at 6pm on Friday 4 December ('Evening of the last "
    "blood-thinner dose, reminding the patient to skip it from tomorrow'). The software has not "
    "worked out new dates: the patient has been told we will call. Record a new plan "
    "(anticoagulant_hold_days) to send them new dates."
)


def assert_moved_safely(clinic: Clinic) -> None:
    clinic.run_until(london(MONDAY_7, 11, 30))
    after = clinic.texts(since=london(MONDAY_7, 11))
    assert after == [("Mon 07 Dec 11:00", "appointment-moved", MOVED_SMS)]
    assert clinic.calls() == [MOVED_CALL]


def test_h2_moved_after_the_stop_instruction_no_dates_until_a_clinician_decides(
    clinic: Clinic,
) -> None:
    enrolment_id = stopped(clinic)
    clinic.change(enrolment_id, date=THURSDAY_17)
    assert_moved_safely(clinic)
    # Up to the new date and after it: no new stop, no restart, nothing with dates of our own.
    clinic.run_until(london(date(2026, 12, 18), 20))
    words = [text for _, _, text in clinic.texts(since=london(MONDAY_7, 12))]
    assert words and not any("warfarin again" in t or "last day to take" in t for t in words)
    after_care = next(t for _, rule, t in clinic.texts() if rule == "after-care")
    assert "Our team will call you about restarting warfarin." in after_care


def test_h2_a_new_plan_sends_the_new_dates_and_says_to_ignore_the_old(clinic: Clinic) -> None:
    enrolment_id = stopped(clinic)
    clinic.change(enrolment_id, date=THURSDAY_17)
    clinic.run_until(london(MONDAY_7, 14))
    # The clinician decides: stop until Friday 11 December, restart on the procedure evening.
    clinic.change(enrolment_id, anticoagulant_hold_days=5, anticoagulant_restart_days=0)
    clinic.run_until(london(MONDAY_7, 14, 5))
    (correction,) = [
        t for t in clinic.texts(since=london(MONDAY_7, 14)) if t[1] == "anticoagulant-plan"
    ]
    assert correction == (
        "Mon 07 Dec 14:00", "anticoagulant-plan",
        "Hello Megan, your dates for warfarin have changed. Please ignore our earlier message. "
        "Your procedure is on Thursday 17 December. The last day to take warfarin is now Friday "
        "11 December. Do not take it from Saturday 12 December. You can start it again on the "
        "evening of Thursday 17 December. Already stopped, or not sure? Please call us on "
        f"020 7946 0000. - {UNIT}",
    )  # fmt: skip


def test_h2_moved_through_the_api(clinic: Clinic) -> None:
    enrolment_id = stopped(clinic)
    app = clinic.web()
    with TestClient(app) as api:
        api.headers["Authorization"] = f"Bearer {clinic.api_token(app)}"
        response = api.patch(f"/api/v1/enrolments/{enrolment_id}", json={"date": "2026-12-17"})
    assert response.status_code == 200, response.text
    assert MOVED_CALL in response.json()["warnings"]
    assert response.json()["fields"].get("anticoagulant_hold_days") is None
    assert_moved_safely(clinic)


def test_h2_moved_from_the_patient_page(clinic: Clinic) -> None:
    enrolment_id = stopped(clinic)
    app = clinic.web()
    add_staff(app.state.sessions)
    bob = Staff(app)
    assert bob.login(BOB).status_code == 303
    here = f"/enrolments/{enrolment_id}"
    bob.post(f"{here}/reschedule", {"date": "2026-12-17", "time": "09:30"}, page=here)
    assert_moved_safely(clinic)


# --- H3: a plan recorded too late ------------------------------------------------------------


def test_h3_no_stop_message_reached_the_patient_so_nothing_says_start_it_again(
    clinic: Clinic,
) -> None:
    clinic.w.clock.now = london(date(2026, 12, 8), 9)
    clinic.enrol(**WARFARIN)
    assert clinic.calls() == [
        "The blood-thinner plan (warfarin, stop 5 days before) can no longer be honoured: the "
        "first day without it was Saturday 5 December. No stop message will be sent; please "
        "contact the patient and the clinician."
    ]
    clinic.run_until(london(FRIDAY_11, 20))
    words = " ".join(text for _, _, text in clinic.texts())
    rules = [rule for _, rule, _ in clinic.texts()]
    assert "anticoagulant-restart" not in rules and "anticoagulant-stop" not in rules
    assert "again" not in words and "restart" not in words
    after_care = next(t for _, rule, t in clinic.texts() if rule == "after-care")
    assert "Carry on with your usual medicines." in after_care


# --- H4: no restart day; a medicine with no plan ---------------------------------------------


def test_h4_no_restart_day_says_only_when_your_doctor_tells_you(clinic: Clinic) -> None:
    clinic.enrol(**{**WARFARIN, "anticoagulant_restart_days": None})
    clinic.run_until(london(FRIDAY_11, 20))
    plan = next(t for _, rule, t in clinic.texts() if rule == "anticoagulant-plan")
    assert "Only start it again when your doctor tells you to." in plan
    after_care = next(t for _, rule, t in clinic.texts() if rule == "after-care")
    assert "Only restart warfarin when your doctor tells you to." in after_care
    (warning,) = [i.message for i in clinic.attention("late-enrolment")]
    assert warning.startswith("No restart day is recorded for warfarin")


def test_h4_a_medicine_with_no_plan_goes_on_the_call_list_with_a_date(clinic: Clinic) -> None:
    clinic.enrol(date=THURSDAY_10, time=time(9, 30), anticoagulant="apixaban")
    clinic.run_until(london(date(2026, 11, 20), 10, 5))
    (asked,) = [t for _, rule, t in clinic.texts() if rule == "anticoagulant-unplanned"]
    assert "Please do not stop taking it on your own." in asked
    assert clinic.calls() == [
        "Clinician plan needed by Friday 4 December: the patient takes apixaban and no plan is "
        "recorded. They have been asked to call and not to stop it on their own. Record the "
        "plan (anticoagulant_hold_days) once a clinician has decided."
    ]


# --- H5: a hold shorter than the leaflet's; brand names ----------------------------------------


def test_h5_a_short_hold_needs_the_clinicians_reason_and_is_audited(clinic: Clinic) -> None:
    with pytest.raises(EnrolmentRefused, match="asks for a hold of at least 5 days"):
        clinic.enrol(**{**WARFARIN, "anticoagulant_hold_days": 3})
    clinic.enrol(
        **{**WARFARIN, "anticoagulant_hold_days": 3},
        anticoagulant_hold_reason="Mechanical valve: haematology advised 3 days",
    )
    assert "short-hold" in clinic.audit()


def test_h5_a_short_hold_is_refused_by_the_api_naming_the_field(clinic: Clinic) -> None:
    app = clinic.web()
    with TestClient(app) as api:
        api.headers["Authorization"] = f"Bearer {clinic.api_token(app)}"
        response = api.post("/api/v1/enrolments", json={
            "booking_ref": "BK-5100", "name": "Megan Price", "phone": "07911 100060",
            "procedure": "sacroplasty", "date": "2026-12-10", "time": "09:30",
            "anticoagulant": "warfarin", "anticoagulant_hold_days": 3,
        })  # fmt: skip
    assert response.status_code == 422
    assert response.json()["problems"][0].startswith("anticoagulant_hold_days: the Sacroplasty")


def test_h5_a_brand_name_keeps_the_medicines_own_lines(clinic: Clinic) -> None:
    clinic.enrol(**{**WARFARIN, "anticoagulant": "Marevan"})
    clinic.run_until(london(date(2026, 11, 20), 10, 5))
    plan = next(t for _, rule, t in clinic.texts() if rule == "anticoagulant-plan")
    assert "stop Marevan" in plan and "You will have a blood test first." in plan
    assert clinic.attention("late-enrolment") == []  # a name the list knows: no warning


def test_h5_a_medicine_the_list_does_not_know_is_a_warning(clinic: Clinic) -> None:
    clinic.enrol(**{**WARFARIN, "anticoagulant": "Warfrin"})
    (warning,) = [i.message for i in clinic.attention("late-enrolment")]
    assert "'Warfrin' is not on the unit's medicines list" in warning


# --- H6: the anaesthetic -------------------------------------------------------------------------


def test_h6_fusion_is_under_a_general_anaesthetic_and_its_words_say_so(clinic: Clinic) -> None:
    clinic.enrol(procedure="si-joint-fusion", date=THURSDAY_10, time=time(9, 30))
    clinic.run_until(london(WEDNESDAY_9, 19))
    fasting = next(t for _, rule, t in clinic.texts() if rule == "fasting")
    assert fasting.startswith(
        "Hello Megan, you will have a general anaesthetic, so before your procedure please do "
        "not eat anything after 3:30am on Thursday 10 December."
    )


def test_h6_a_local_anaesthetic_gets_no_fasting(clinic: Clinic) -> None:
    clinic.enrol(
        procedure="joint-denervation", date=THURSDAY_10, time=time(9, 30), anaesthesia="local"
    )
    clinic.run_until(london(WEDNESDAY_9, 19))
    assert "fasting" not in [rule for _, rule, _ in clinic.texts()]


# --- H7: a correction that cannot wait for the morning -----------------------------------------


def test_h7_a_fasting_correction_at_9pm_goes_at_once_and_on_the_call_list(clinic: Clinic) -> None:
    enrolment_id = clinic.enrol(date=THURSDAY_10, time=time(9, 30), arrival=time(8, 30))
    clinic.run_until(london(WEDNESDAY_9, 21))
    fasting = next(t for when, rule, t in clinic.texts() if rule == "fasting")
    assert "do not eat anything after 2:30am on Thursday 10 December" in fasting
    clinic.change(enrolment_id, time=time(8, 30), arrival=time(7, 30))  # an earlier slot
    clinic.run_until(london(WEDNESDAY_9, 21, 1))
    (correction,) = [t for t in clinic.texts(since=london(WEDNESDAY_9, 21)) if t[1] == "fasting"]
    assert correction[0] == "Wed 09 Dec 21:00"  # outside 8am to 8pm, within the urgent window
    assert "Please ignore our earlier message. Do not eat anything after 1:30am" in correction[2]
    assert any("outside the usual sending hours" in call for call in clinic.calls())


# --- H8: after-care timed from the end ---------------------------------------------------------


def test_h8_after_sedation_normal_activities_wait_24_hours_from_the_end(clinic: Clinic) -> None:
    clinic.enrol(procedure="joint-denervation", date=THURSDAY_10, time=time(15, 0))
    clinic.run_until(london(FRIDAY_11, 11))
    after_care = next(t for _, rule, t in clinic.texts() if rule == "after-care")
    assert "from 4:15pm on Friday 11 December you can drive" in after_care
    assert "today" not in after_care


def test_h8_a_late_list_gets_its_after_care_in_the_morning_and_says_yesterday(
    clinic: Clinic,
) -> None:
    clinic.enrol(date=THURSDAY_10, time=time(16, 30))
    clinic.run_until(london(FRIDAY_11, 9))
    (when, _, text) = next(t for t in clinic.texts() if t[1] == "after-care")
    assert when == "Fri 11 Dec 08:00"  # bed rest over at 9:30pm, after the window shut
    (email,) = [e for e in clinic.emails() if e.rule == "after-care"]
    assert "after your procedure yesterday" in (email.body or "")
    assert "Until 5:30pm on Friday 11 December, do not drive" in text


# --- H9: safety-netting --------------------------------------------------------------------------


def test_h9_every_after_care_message_says_what_to_do_about_the_warning_signs(
    clinic: Clinic,
) -> None:
    for number, slug in enumerate(sorted(clinic.config.protocols)):
        protocol = clinic.config.protocols[slug]
        clinic.enrol(
            procedure=slug, date=THURSDAY_10, time=time(9, 30), booking_ref=f"BK-59{number}",
            phone=f"+4479111006{number}0", **({"joint": "knee"} if protocol.joints else {}),
        )  # fmt: skip
    clinic.run_until(london(date(2027, 1, 25), 12))
    after = {r.id for p in clinic.config.protocols.values() for r in p.rules if r.phase == "after"}
    texts = [(rule, t) for _, rule, t in clinic.texts() if rule in after]
    assert {rule for rule, _ in texts} == after - {"anticoagulant-restart"}
    for rule, text in texts:
        assert "999 in an emergency" in text and "NHS 111 when closed" in text, rule


# --- H10: when the unit is shut --------------------------------------------------------------


def test_h10_a_message_sent_when_the_unit_is_shut_says_when_to_call(clinic: Clinic) -> None:
    clinic.w.clock.now = london(date(2026, 11, 21), 10)  # a Saturday
    clinic.enrol(**WARFARIN)
    clinic.run_until(london(date(2026, 11, 21), 10, 5))
    plan = next(t for _, rule, t in clinic.texts() if rule == "anticoagulant-plan")
    assert "Please call us on 020 7946 0000 from 8:30am on Monday 23 November." in plan


def test_h10_a_procedure_on_a_bank_holiday_warns_staff(clinic: Clinic) -> None:
    clinic.enrol(date=date(2026, 12, 25), time=time(9, 30))
    assert any(
        "booked when the unit is shut: Friday 25 December is a bank holiday" in item.message
        for item in clinic.attention("late-enrolment")
    )


# --- H11: what changed, and the calendar ----------------------------------------------------------


def test_h11_a_move_says_from_when_to_when_and_moves_the_calendar_entry(
    clinic: Clinic, fake_smtp: object
) -> None:
    enrolment_id = clinic.enrol(date=THURSDAY_10, time=time(9, 30), arrival=time(8, 30))
    clinic.run_until(london(MONDAY_23, 10))
    clinic.change(enrolment_id, date=THURSDAY_17)
    clinic.run_until(london(MONDAY_23, 10, 5))
    (moved,) = [t for t in clinic.texts() if t[1] == "appointment-moved"]
    assert (
        "It was on Thursday 10 December at 9:30am. It is now on Thursday 17 December" in (moved[2])
    )
    messages = fake_smtp.to("megan.price@example.org")  # type: ignore[attr-defined]
    calendar = next(
        part.get_payload(decode=True)
        for part in messages[-1].walk()
        if part.get_content_type() == "text/calendar"
    )
    assert b"METHOD:REQUEST" in calendar and b"SEQUENCE:2" in calendar
    # The diary entry starts when the patient must arrive.
    assert b"DTSTART;TZID=Europe/London:20261217T083000" in calendar or (
        b"DTSTART:20261217T083000Z" in calendar
    )
    assert message_from_bytes is not None


# --- H12: a patient in another time zone ------------------------------------------------------


def test_h12_a_patient_abroad_gets_labelled_times_an_international_number_and_no_nhs_111(
    clinic: Clinic,
) -> None:
    clinic.enrol(
        date=THURSDAY_10,
        time=time(9, 30),
        arrival=time(8, 30),
        timezone=ZoneInfo("America/New_York"),
    )
    (warning,) = [i.message for i in clinic.attention("late-enrolment")]
    assert warning.startswith(
        "The patient's time zone (America/New_York) is not the unit's (Europe/London): the "
        "procedure is at 9:30am on Thursday 10 December on the unit's clock, 4:30am on Thursday "
        "10 December on theirs."
    )
    clinic.run_until(london(FRIDAY_11, 19))
    texts = {rule: text for _, rule, text in clinic.texts()}
    assert (
        "is on Thursday 10 December at 4:30am (New York time) (please arrive at 3:30am (New "
        "York time)). We will send you reminders before then. To change or cancel, please call "
        "us on +44 20 7946 0000."
    ) in texts["booking-confirmation"]
    assert (
        "do not eat anything after 9:30pm on Wednesday 9 December (New York time)"
        in (texts["fasting"])
    )
    assert texts["after-care"].endswith(
        "call us on +44 20 7946 0000 (a local doctor when closed, local emergency services in "
        "an emergency). - Pain Management Unit"
    )
    assert (
        "If your pain is not under control, see a doctor where you are." in (texts["pain-advice"])
    )
    for text in texts.values():
        assert "NHS 111" not in text and "999" not in text and "GP" not in text
        assert "020 7946 0000" not in text


# --- H13: shared rules, once ----------------------------------------------------------------------


def test_h13_a_fix_to_a_shared_rule_reaches_every_procedure(clinic: Clinic, tmp_path: Path) -> None:
    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    fasting = config / "protocols" / "shared" / "fasting.yaml"
    fasting.write_text(fasting.read_text().replace('at: "18:00"', 'at: "17:00"'))
    fixed = Config.load(Settings.from_env({**clinic.env, "REMINDERS_CONFIG_DIR": str(config)}))
    assert len(fixed.protocols) == 5
    for protocol in fixed.protocols.values():
        rule = protocol.rule("fasting")  # every procedure's, included from the shared file
        assert rule.send.at == time(17, 0), protocol.procedure
        assert rule.template == "fasting"  # and one set of words for every procedure


# --- H14: bad input ---------------------------------------------------------------------------


def test_h14_a_medicine_name_too_long_for_a_text_is_refused_naming_the_field(
    clinic: Clinic,
) -> None:
    app = clinic.web()
    with TestClient(app) as api:
        api.headers["Authorization"] = f"Bearer {clinic.api_token(app)}"
        response = api.post("/api/v1/enrolments", json={
            "booking_ref": "BK-5200", "name": "Megan Price", "phone": PHONE,
            "procedure": "sacroplasty", "date": "2026-12-10", "time": "09:30",
            "anticoagulant": "rivaroxaban " + "long-acting " * 5, "anticoagulant_hold_days": 5,
        })  # fmt: skip
    assert response.status_code == 422
    assert response.json()["problems"] == [
        "anticoagulant: at most 40 characters, so that the texts can carry it; give the "
        "medicine's name only, such as warfarin"
    ]


LONG_NAME = "Wolfeschlegelsteinhausenbergerdorff" * 4 + " Price"  # 146 letters before the space
TOO_LONG = (
    "name, anticoagulant: a text to this patient would take 4 SMS messages, more than the 3 we "
    "send; shorten the name (only the first name is used) or the medicine's name"
)


def test_h14_a_name_too_long_for_a_text_is_refused_by_the_services_and_the_api(
    clinic: Clinic,
) -> None:
    with pytest.raises(EnrolmentRefused) as refused:
        clinic.enrol(name=LONG_NAME, **WARFARIN)
    assert str(refused.value) == TOO_LONG
    app = clinic.web()
    with TestClient(app) as api:
        api.headers["Authorization"] = f"Bearer {clinic.api_token(app)}"
        response = api.post("/api/v1/enrolments", json={
            "booking_ref": "BK-5201", "name": LONG_NAME, "phone": PHONE,
            "procedure": "sacroplasty", "date": "2026-12-10", "time": "09:30",
        })  # fmt: skip
    assert response.status_code == 422
    assert response.json()["problems"] == [TOO_LONG]
    assert clinic.texts() == [] and clinic.audit() == ["token-add"]  # nothing else was kept


def test_h14_a_name_too_long_for_a_text_is_refused_on_the_enrol_page(clinic: Clinic) -> None:
    app = clinic.web()
    add_staff(app.state.sessions)
    bob = Staff(app)
    assert bob.login(BOB).status_code == 303
    form = {
        "booking_ref": "BK-5202", "name": LONG_NAME, "phone": "07911 100060",
        "procedure": "sacroplasty", "date": "2026-12-10", "time": "09:30",
    }  # fmt: skip
    for action in ("preview", "save"):
        page = bob.post("/enrol", {**form, "action": action})
        assert page.status_code == 422
        assert TOO_LONG.replace("'", "&#39;") in page.text
    assert clinic.texts() == [] and "enrol" not in clinic.audit()


def test_h14_a_name_too_long_for_a_text_refuses_its_csv_row_and_the_others_land(
    clinic: Clinic,
) -> None:
    header = "booking_ref,name,phone,procedure,date,time\n"
    rows = [
        f"BK-5203,{LONG_NAME},07911 100061,sacroplasty,2026-12-10,09:30\n",
        "BK-5204,Megan Price,07911 100062,sacroplasty,2026-12-10,09:30\n",
    ]
    refused: list[str] = []
    report = import_csv(
        clinic.w.factory, clinic.config, io.BytesIO((header + "".join(rows)).encode()),
        now=clinic.now, actor="alice", on_refusal=lambda refusal: refused.append(refusal.reason),
    )  # fmt: skip
    assert report.created == 1
    assert refused == [TOO_LONG]


def test_h14_a_cancellation_that_cannot_be_written_still_cancels_and_goes_on_the_call_list(
    clinic: Clinic, tmp_path: Path
) -> None:
    enrolment_id = clinic.enrol(date=THURSDAY_10, time=time(9, 30))
    clinic.run_until(london(MONDAY_23, 10))
    templates = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "templates", templates)
    (templates / "en-GB" / "appointment-cancelled" / "sms.txt").write_text("Hello {{ first_nme }}")
    clinic.config = Config.load(
        Settings.from_env({**clinic.env, "REMINDERS_TEMPLATES_DIR": str(templates)})
    )
    clinic.cancel(enrolment_id)
    assert clinic.pending(enrolment_id) == []
    (call,) = clinic.calls()
    assert call.startswith(
        "Tell the patient the procedure is cancelled: a message for this patient could not be "
        "written (en-GB/appointment-cancelled/sms.txt: UndefinedError"
    )
