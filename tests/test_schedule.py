"""What a clinician checks in a schedule: which reminders, on which local days and times.

Times are asserted on the patient's wall clock (`local(...)`), which is what the unit's protocol
promises, and across the 2026 UK clock changes (29 March, 25 October) and a US zone.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from factories import (
    ALWAYS_OPEN,
    DEFAULT_WINDOW,
    LONDON,
    NEW_YORK,
    make_enrolment,
    protocol,
    utc,
)

from reminders.core.clock import parse_sending_window
from reminders.core.enrolment import Enrolment
from reminders.core.protocols import Protocol
from reminders.core.schedule import Schedule, compute_schedule


def schedule_for(enrolment: Enrolment, now: datetime, window: object = DEFAULT_WINDOW) -> Schedule:
    return compute_schedule(protocol(enrolment.procedure), enrolment, now, window)  # type: ignore[arg-type]


def timeline(schedule: Schedule, channel: str = "sms") -> dict[str, str]:
    """rule -> local send time, for one channel: the shape a clinician reads a protocol in."""
    zone = schedule.facts.zone
    return {
        r.rule: r.send_at.astimezone(zone).strftime("%a %d %b %H:%M")
        for r in schedule.reminders
        if r.channel == channel
    }


def local(schedule: Schedule, rule: str, channel: str = "sms") -> datetime:
    (reminder,) = [r for r in schedule.reminders if r.rule == rule and r.channel == channel]
    return reminder.send_at.astimezone(schedule.facts.zone)


ENROLLED = utc(2026, 11, 20, 10, 0)  # Friday 20 November, 10am GMT


# --- every shipped procedure -------------------------------------------------------------------


def test_si_joint_denervation_timeline() -> None:
    schedule = schedule_for(make_enrolment(procedure="si-joint-denervation"), ENROLLED)
    assert timeline(schedule) == {
        "booking-confirmation": "Fri 20 Nov 10:00",
        "arrange-transport": "Mon 07 Dec 10:00",
        "day-before": "Wed 09 Dec 12:00",
        "dressing": "Thu 10 Dec 19:00",
        "pain-may-be-worse": "Fri 11 Dec 10:00",
    }
    assert timeline(schedule, "email") == timeline(schedule)
    assert schedule.warnings == []


def test_joint_denervation_is_under_sedation_so_fasting_is_included() -> None:
    enrolment = make_enrolment(procedure="joint-denervation", joint="knee", arrival=time(8, 30))
    schedule = schedule_for(enrolment, ENROLLED)
    assert timeline(schedule) == {
        "booking-confirmation": "Fri 20 Nov 10:00",
        "arrange-transport": "Mon 07 Dec 10:00",
        "day-before": "Wed 09 Dec 12:00",
        "fasting": "Wed 09 Dec 18:00",
        "after-care": "Fri 11 Dec 10:00",
        "full-effect": "Thu 17 Dec 10:00",
    }


def test_facet_joint_denervation_timeline() -> None:
    schedule = schedule_for(make_enrolment(procedure="facet-joint-denervation"), ENROLLED)
    assert timeline(schedule) == {
        "booking-confirmation": "Fri 20 Nov 10:00",
        "arrange-transport": "Mon 07 Dec 10:00",
        "day-before": "Wed 09 Dec 12:00",
        "after-care": "Fri 11 Dec 10:00",
        "check-in": "Thu 24 Dec 10:00",
    }


def test_si_joint_fusion_is_under_a_general_anaesthetic_with_physiotherapy_at_six_weeks() -> None:
    schedule = schedule_for(make_enrolment(procedure="si-joint-fusion"), ENROLLED)
    assert timeline(schedule) == {
        "booking-confirmation": "Fri 20 Nov 10:00",
        "arrange-transport": "Mon 07 Dec 10:00",
        "day-before": "Wed 09 Dec 12:00",
        # Surgery: a general anaesthetic unless the enrolment says otherwise, so fasting.
        "fasting": "Wed 09 Dec 18:00",
        "after-care": "Fri 11 Dec 10:00",
        "physiotherapy": "Thu 21 Jan 10:00",
    }


def test_sacroplasty_with_a_warfarin_plan() -> None:
    enrolment = make_enrolment(
        procedure="sacroplasty",
        arrival=time(8, 30),
        anticoagulant="warfarin",
        hold_days=5,
        restart_days=0,
    )
    schedule = schedule_for(enrolment, ENROLLED)
    assert timeline(schedule) == {
        "booking-confirmation": "Fri 20 Nov 10:00",
        "anticoagulant-plan": "Fri 20 Nov 10:00",
        # Five whole days without warfarin before Thursday: the last dose is on Friday.
        "anticoagulant-stop": "Fri 04 Dec 18:00",
        "arrange-transport": "Mon 07 Dec 10:00",
        "day-before": "Wed 09 Dec 12:00",
        "fasting": "Wed 09 Dec 18:00",
        "anticoagulant-restart": "Thu 10 Dec 18:00",
        # Bed rest is over 4 hours after the procedure ends (it takes an hour).
        "after-care": "Thu 10 Dec 14:30",
        "pain-advice": "Fri 11 Dec 10:00",
    }
    fasting = next(r for r in schedule.reminders if r.rule == "fasting")
    assert fasting.deadline.astimezone(LONDON).time() == time(2, 30)  # no food from 2:30am
    assert fasting.expires.astimezone(LONDON).time() == time(6, 30)  # no liquids from 6:30am
    assert all(r.safety_critical for r in schedule.reminders if r.rule.startswith("anticoag"))


def test_sedation_can_be_turned_off_for_a_sedation_procedure() -> None:
    enrolment = make_enrolment(procedure="sacroplasty", sedation=False)
    assert "fasting" not in timeline(schedule_for(enrolment, ENROLLED))


def test_channels_follow_the_contact_details_given() -> None:
    enrolment = make_enrolment(email=None)
    schedule = schedule_for(enrolment, ENROLLED)
    assert {r.channel for r in schedule.reminders} == {"sms"}


# --- blood thinners ----------------------------------------------------------------------------


def test_no_stop_message_without_a_clinician_plan() -> None:
    enrolment = make_enrolment(anticoagulant="apixaban")
    rules = timeline(schedule_for(enrolment, ENROLLED))
    assert "anticoagulant-unplanned" in rules
    assert not {"anticoagulant-plan", "anticoagulant-stop", "anticoagulant-restart"} & set(rules)


def test_hold_of_zero_days_means_keep_taking_it() -> None:
    enrolment = make_enrolment(anticoagulant="apixaban", hold_days=0)
    rules = timeline(schedule_for(enrolment, ENROLLED))
    assert "anticoagulant-continue" in rules
    assert "anticoagulant-stop" not in rules


def test_restart_days_after_the_procedure() -> None:
    enrolment = make_enrolment(anticoagulant="clopidogrel", hold_days=7, restart_days=2)
    schedule = schedule_for(enrolment, ENROLLED)
    assert local(schedule, "anticoagulant-stop") == datetime(2026, 12, 2, 18, tzinfo=LONDON)
    assert local(schedule, "anticoagulant-restart") == datetime(2026, 12, 12, 18, tzinfo=LONDON)


def test_a_plan_too_late_to_honour_sends_no_stop_message_and_warns_staff() -> None:
    # Enrolled on Tuesday 8 December for Thursday, with a 5-day hold: the first day without
    # the drug (Saturday 5 December) has gone.
    enrolment = make_enrolment(anticoagulant="warfarin", hold_days=5, restart_days=0)
    schedule = schedule_for(enrolment, utc(2026, 12, 8, 9, 0))
    rules = set(timeline(schedule)) | set(timeline(schedule, "email"))
    assert not {"anticoagulant-plan", "anticoagulant-stop", "anticoagulant-restart"} & rules
    assert schedule.calls == [
        "The blood-thinner plan (warfarin, stop 5 days before) can no longer be honoured: the "
        "first day without it was Saturday 5 December. No stop message will be sent; please "
        "contact the patient and the clinician."
    ]


def test_a_plan_recorded_on_the_day_of_the_last_dose_still_gets_its_reminders() -> None:
    enrolment = make_enrolment(anticoagulant="warfarin", hold_days=5)
    schedule = schedule_for(enrolment, utc(2026, 12, 4, 11, 0))
    assert local(schedule, "anticoagulant-plan") == datetime(2026, 12, 4, 11, tzinfo=LONDON)
    assert local(schedule, "anticoagulant-stop") == datetime(2026, 12, 4, 18, tzinfo=LONDON)
    # In time; and with no restart day recorded, staff are reminded someone must give one.
    assert schedule.warnings == [
        "No restart day is recorded for warfarin: the patient is told to start it again only "
        "when their doctor tells them. Make sure someone does."
    ]


# --- clock changes and zones -------------------------------------------------------------------


def test_days_before_keep_the_wall_clock_across_the_spring_change() -> None:
    # Wednesday 1 April, BST; three days before is Sunday 29 March, the day the clocks go forward.
    enrolment = make_enrolment(on=date(2026, 4, 1), anticoagulant="apixaban", hold_days=4)
    schedule = schedule_for(enrolment, utc(2026, 3, 1, 10))
    transport = local(schedule, "arrange-transport")
    assert (transport.date(), transport.time()) == (date(2026, 3, 29), time(10, 0))
    assert transport.utcoffset().total_seconds() == 3600  # type: ignore[union-attr]
    stop = local(schedule, "anticoagulant-stop")  # last dose Friday 27 March, still GMT
    assert (stop.date(), stop.time(), stop.utcoffset().total_seconds()) == (  # type: ignore[union-attr]
        date(2026, 3, 27),
        time(18, 0),
        0,
    )


def test_days_before_keep_the_wall_clock_across_the_autumn_change() -> None:
    # Tuesday 27 October, GMT; the clocks went back on Sunday 25 October.
    enrolment = make_enrolment(on=date(2026, 10, 27), procedure="sacroplasty")
    schedule = schedule_for(enrolment, utc(2026, 10, 1, 10))
    assert timeline(schedule)["arrange-transport"] == "Sat 24 Oct 10:00"  # BST
    assert timeline(schedule)["fasting"] == "Mon 26 Oct 18:00"  # GMT
    assert local(schedule, "arrange-transport").utcoffset().total_seconds() == 3600  # type: ignore[union-attr]
    assert local(schedule, "fasting").utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_fasting_counts_elapsed_hours_across_the_night_the_clocks_go_forward() -> None:
    # Arrival 7am BST on Sunday 29 March: six real hours earlier is midnight GMT, seven hours on
    # the wall clock. The patient needs the real six hours.
    enrolment = make_enrolment(
        procedure="sacroplasty", on=date(2026, 3, 29), at=time(8, 0), arrival=time(7, 0)
    )
    schedule = schedule_for(enrolment, utc(2026, 3, 1, 10))
    assert schedule.facts.anchors["food-stop"] == utc(2026, 3, 29, 0, 0)
    assert local(schedule, "fasting") == datetime(2026, 3, 28, 18, tzinfo=LONDON)


def test_a_us_zone_across_its_own_clock_change() -> None:
    # New York moved to EDT on Sunday 8 March 2026; procedure Monday 9 March at 9am EDT.
    enrolment = make_enrolment(zone=NEW_YORK, on=date(2026, 3, 9), at=time(9, 0))
    schedule = schedule_for(enrolment, utc(2026, 2, 20, 15))
    assert timeline(schedule)["arrange-transport"] == "Fri 06 Mar 10:00"
    assert local(schedule, "arrange-transport").utcoffset().total_seconds() == -5 * 3600  # type: ignore[union-attr]
    assert timeline(schedule)["day-before"] == "Sun 08 Mar 12:00"
    assert local(schedule, "day-before").utcoffset().total_seconds() == -4 * 3600  # type: ignore[union-attr]
    assert schedule.facts.starts_at == utc(2026, 3, 9, 13, 0)


def mini_protocol(**rule: object) -> Protocol:
    base = {
        "id": "nudge",
        "title": "A test nudge",
        "phase": "before",
        "template": "nudge",
    }
    return Protocol.model_validate(
        {"procedure": "test", "name": "Test", "rules": [{**base, **rule}]}
    )


def test_a_time_that_does_not_exist_moves_forward_by_the_gap() -> None:
    nudge = mini_protocol(send={"anchor": "procedure", "offset": "-2d", "at": "01:30"},
                          quiet_hours="send")  # fmt: skip
    enrolment = make_enrolment(procedure="test", on=date(2026, 3, 31))
    schedule = compute_schedule(nudge, enrolment, utc(2026, 3, 1), DEFAULT_WINDOW)
    reminder = next(r for r in schedule.reminders if r.channel == "sms")
    assert reminder.send_at.astimezone(LONDON).time() == time(2, 30)


def test_a_time_that_happens_twice_means_the_first() -> None:
    nudge = mini_protocol(send={"anchor": "procedure", "offset": "-2d", "at": "01:30"},
                          quiet_hours="send")  # fmt: skip
    enrolment = make_enrolment(procedure="test", on=date(2026, 10, 27))
    schedule = compute_schedule(nudge, enrolment, utc(2026, 10, 1), DEFAULT_WINDOW)
    reminder = next(r for r in schedule.reminders if r.channel == "sms")
    assert reminder.send_at == utc(2026, 10, 25, 0, 30)  # 01:30 BST, not 01:30 GMT


# --- the sending window ------------------------------------------------------------------------


def late_evening(**policy: object) -> Protocol:
    return mini_protocol(send={"anchor": "procedure", "offset": "-2d", "at": "21:30"}, **policy)


def nudge_time(proto: Protocol, window: object = DEFAULT_WINDOW) -> str | None:
    enrolment = make_enrolment(procedure="test")
    schedule = compute_schedule(proto, enrolment, ENROLLED, window)  # type: ignore[arg-type]
    times = {r.send_at.astimezone(LONDON).strftime("%a %d %b %H:%M") for r in schedule.reminders}
    return times.pop() if times else None


def test_outside_the_window_a_message_waits_for_the_morning() -> None:
    assert nudge_time(late_evening()) == "Wed 09 Dec 08:00"


def test_but_goes_earlier_if_the_morning_would_miss_its_deadline() -> None:
    proto = late_evening(deadline={"anchor": "procedure", "offset": "-1d", "at": "07:00"})
    assert nudge_time(proto) == "Tue 08 Dec 20:00"


def test_window_policies_earlier_drop_and_send() -> None:
    assert nudge_time(late_evening(quiet_hours="earlier")) == "Tue 08 Dec 20:00"
    assert nudge_time(late_evening(quiet_hours="drop")) is None
    assert nudge_time(late_evening(quiet_hours="send")) == "Tue 08 Dec 21:30"


def test_window_can_be_opened_all_day_and_narrowed() -> None:
    assert nudge_time(late_evening(), ALWAYS_OPEN) == "Tue 08 Dec 21:30"
    assert nudge_time(late_evening(), parse_sending_window("09:00-17:00")) == "Wed 09 Dec 09:00"


# --- enrolling late ----------------------------------------------------------------------------


def test_same_day_enrolment_sends_what_is_still_useful_at_eight() -> None:
    # Enrolled at 7am on the day of a 2pm sacroplasty, arriving at 1pm.
    enrolment = make_enrolment(procedure="sacroplasty", at=time(14, 0), arrival=time(13, 0))
    schedule = schedule_for(enrolment, utc(2026, 12, 10, 7, 0))
    assert timeline(schedule) == {
        "booking-confirmation": "Thu 10 Dec 08:00",
        "arrange-transport": "Thu 10 Dec 08:00",
        "day-before": "Thu 10 Dec 08:00",
        "fasting": "Thu 10 Dec 08:00",
        "after-care": "Thu 10 Dec 19:00",
        "pain-advice": "Fri 11 Dec 10:00",
    }
    # No food from 7am, but the message can only go at 8am: staff must phone.
    assert len(schedule.warnings) == 1
    assert "after 7am on Thursday 10 December when it was needed" in schedule.warnings[0]
    assert "Please phone the patient" in schedule.warnings[0]


def test_fasting_message_is_dropped_once_it_is_worthless_and_staff_are_told() -> None:
    enrolment = make_enrolment(procedure="sacroplasty", at=time(9, 0), arrival=time(8, 0))
    schedule = schedule_for(enrolment, utc(2026, 12, 10, 6, 30))  # liquids stop at 6am
    assert "fasting" not in timeline(schedule)
    assert schedule.warnings == [
        "Fasting instructions with the clock times worked out (sedation or a general "
        "anaesthetic): too late to "
        "send; it had to reach the patient by 2am on Thursday 10 December. Not sent: please "
        "contact the patient."
    ]


def test_nothing_is_scheduled_before_now_and_no_pre_procedure_message_after_the_start() -> None:
    enrolment = make_enrolment(procedure="sacroplasty", at=time(9, 0))
    now = utc(2026, 12, 10, 8, 45)
    schedule = schedule_for(enrolment, now)
    assert all(r.send_at >= now for r in schedule.reminders)
    start = schedule.facts.starts_at
    before = {r.id for r in protocol("sacroplasty").rules if r.phase == "before"}
    assert all(r.send_at < start for r in schedule.reminders if r.rule in before)


def test_arrival_time_moves_the_fasting_times() -> None:
    base = dict(procedure="sacroplasty", at=time(9, 30))
    with_arrival = schedule_for(make_enrolment(**base, arrival=time(7, 30)), ENROLLED)  # type: ignore[arg-type]
    without = schedule_for(make_enrolment(**base), ENROLLED)  # type: ignore[arg-type]
    assert with_arrival.facts.anchors["food-stop"].astimezone(LONDON).time() == time(1, 30)
    assert without.facts.anchors["food-stop"].astimezone(LONDON).time() == time(3, 30)


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "Australia/Lord_Howe", "Pacific/Chatham"])
def test_odd_offsets_keep_local_times(zone: str) -> None:
    enrolment = make_enrolment(zone=ZoneInfo(zone))
    assert timeline(schedule_for(enrolment, ENROLLED))["day-before"] == "Wed 09 Dec 12:00"


def test_a_window_open_until_midnight_moves_night_messages_to_its_close() -> None:
    window = parse_sending_window("08:00-24:00")
    proto = mini_protocol(send={"anchor": "procedure", "offset": "-1d", "at": "02:00"},
                          quiet_hours="earlier")  # fmt: skip
    assert nudge_time(proto, window) == "Tue 08 Dec 23:59"


def test_after_care_planned_before_an_evening_procedure_ends_goes_once_it_has_ended() -> None:
    # Restart "the evening of the procedure day" at 6pm, but the procedure is at 6:30pm.
    enrolment = make_enrolment(at=time(18, 30), anticoagulant="warfarin", hold_days=5,
                               restart_days=0)  # fmt: skip
    schedule = schedule_for(enrolment, ENROLLED, ALWAYS_OPEN)
    # Not before the procedure has ended (it takes an hour).
    assert timeline(schedule)["anticoagulant-restart"] == "Thu 10 Dec 19:30"


def test_after_care_with_no_slot_before_it_expires_still_waits_for_the_end() -> None:
    # Enrolled at 6pm the evening before a 7am procedure; the window shuts at 6pm, so the
    # dressing's 7pm slot and the next morning are both out. It goes as the procedure ends,
    # never the evening before (found by the property tests).
    enrolment = make_enrolment(on=date(2026, 12, 10), at=time(7, 0))
    schedule = schedule_for(enrolment, utc(2026, 12, 9, 18), parse_sending_window("08:00-18:00"))
    assert timeline(schedule)["dressing"] == "Thu 10 Dec 08:00"
    assert all(r.send_at.utcoffset() == timedelta(0) for r in schedule.reminders)


def test_a_procedure_time_that_does_not_exist_is_flagged() -> None:
    enrolment = make_enrolment(on=date(2026, 3, 29), at=time(1, 30))
    schedule = schedule_for(enrolment, utc(2026, 3, 1))
    assert schedule.facts.starts_at == utc(2026, 3, 29, 1, 30)  # 2:30am BST
    assert schedule.warnings[-1] == (
        "The procedure time 01:30 does not exist on Sunday 29 March in Europe/London, as the "
        "clocks go forward; reminders take it as 2:30am on Sunday 29 March. Please check the time."
    )
