"""Property tests of `compute_schedule` over every IANA zone, with the shipped protocols.

Enrolments are drawn for procedures in 2026 and 2027, often within days of a zone's clock change,
with every blood-thinner plan, sedation or not, arrival given or not, enrolled at any moment from
30 days before the procedure to a day after it. Whatever is drawn, the schedule must keep the
invariants of PRODUCT.md (B): nothing in the past, nothing worthless, nothing at night,
pre-procedure reminders before the start, after-procedure ones after it, and no medicine stopped
without a clinician's plan.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from factories import ALWAYS_OPEN, DEFAULT_WINDOW, shipped_protocols
from hypothesis import example, given, settings
from hypothesis import strategies as st
from profiles import examples

from reminders.core.clock import SendingWindow, in_window, localize, parse_sending_window
from reminders.core.enrolment import Enrolment
from reminders.core.protocols import Protocol
from reminders.core.schedule import PlannedReminder, Schedule, compute_schedule, matches, timing_for

ZONES = sorted(zoneinfo.available_timezones())
FIRST_DAY, LAST_DAY = date(2026, 1, 1), date(2027, 12, 31)


PROTOCOLS = shipped_protocols()
SLUGS = sorted(PROTOCOLS)


def _clock_change_days() -> dict[str, list[date]]:
    """For each zone, the days in 2026-2027 whose local noon has a different UTC offset from the
    day before's: the clock changed overnight (or, for a few zones, late the evening before)."""
    changes: dict[str, list[date]] = {}
    for name in ZONES:
        zone = ZoneInfo(name)
        day = FIRST_DAY - timedelta(days=1)
        offset = datetime.combine(day, time(12), tzinfo=zone).utcoffset()
        while day < LAST_DAY:
            day += timedelta(days=1)
            new = datetime.combine(day, time(12), tzinfo=zone).utcoffset()
            if new != offset:
                changes.setdefault(name, []).append(day)
            offset = new
    return changes


CLOCK_CHANGES = _clock_change_days()
assert "Europe/London" in CLOCK_CHANGES and "America/New_York" in CLOCK_CHANGES


# --- drawing enrolments --------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Case:
    """One drawn scenario, described in full in every assertion message (and by Hypothesis,
    through `repr`, without printing the whole protocol)."""

    protocol: Protocol
    enrolment: Enrolment
    now: datetime
    window: SendingWindow

    @property
    def zone(self) -> ZoneInfo:
        return self.enrolment.timezone

    @property
    def starts_at(self) -> datetime:
        return localize(self.enrolment.date, self.enrolment.time, self.zone).astimezone(UTC)

    def __str__(self) -> str:
        e = self.enrolment
        plan = (
            "none"
            if not e.anticoagulant
            else f"{e.anticoagulant} hold={e.anticoagulant_hold_days} "
            f"restart={e.anticoagulant_restart_days}"
        )
        return (
            f"zone={self.zone.key} procedure={e.procedure} on {e.date} at {e.time:%H:%M} "
            f"(starts {self.starts_at:%Y-%m-%d %H:%M}Z) arrival={e.arrival} "
            f"sedation={e.sedation} joint={e.joint} anticoagulant={plan} "
            f"now={self.now.isoformat()} window={self.window}"
        )

    __repr__ = __str__


@st.composite
def procedure_days(draw: st.DrawFn, zone: str) -> date:
    """Any day in 2026-2027, or (half the time, for zones that change their clocks) a day near a
    clock change, so that the day before, three days before or the last-dose day crosses it."""
    changes = CLOCK_CHANGES.get(zone)
    if changes and draw(st.booleans()):
        day = draw(st.sampled_from(changes)) + timedelta(days=draw(st.integers(-8, 8)))
        return min(max(day, FIRST_DAY), LAST_DAY)
    return draw(st.dates(FIRST_DAY, LAST_DAY))


@st.composite
def anticoagulant_plans(draw: st.DrawFn) -> dict[str, object]:
    kind = draw(st.sampled_from(["none", "unplanned", "hold", "continue"]))
    if kind == "none":
        return {}
    drug = draw(st.sampled_from(["apixaban", "warfarin", "rivaroxaban", "clopidogrel"]))
    if kind == "unplanned":
        return {"anticoagulant": drug}
    if kind == "continue":
        return {"anticoagulant": drug, "anticoagulant_hold_days": 0}
    return {
        "anticoagulant": drug,
        "anticoagulant_hold_days": draw(st.integers(1, 10)),
        "anticoagulant_restart_days": draw(st.none() | st.integers(0, 3)),
    }


@st.composite
def cases(
    draw: st.DrawFn,
    windows: st.SearchStrategy[SendingWindow] | None = None,
    now_from: timedelta = timedelta(days=-30),
    now_to: timedelta = timedelta(days=1),
) -> Case:
    """An enrolment made at `now`, somewhere from `now_from` to `now_to` around the start."""
    zone_name = draw(st.sampled_from(ZONES))
    zone = ZoneInfo(zone_name)
    slug = draw(st.sampled_from(SLUGS))
    protocol = PROTOCOLS[slug]
    day = draw(procedure_days(zone_name))
    minutes = draw(st.integers(7 * 60, 18 * 60))
    clock = time(minutes // 60, minutes % 60)
    arrival_before = draw(st.none() | st.integers(30, 120))
    arrival = None
    if arrival_before is not None:
        early = minutes - arrival_before
        arrival = time(early // 60, early % 60)
    joint = draw(st.sampled_from([None, *protocol.joints])) if protocol.joints else None
    starts_at = localize(day, clock, zone).astimezone(UTC)
    seconds = draw(st.integers(int(now_from.total_seconds()), int(now_to.total_seconds())))
    now = starts_at + timedelta(seconds=seconds)
    window = draw(
        windows if windows is not None else st.sampled_from([DEFAULT_WINDOW, ALWAYS_OPEN])
    )
    enrolment = Enrolment(
        name="Si\u00e2n Jones",
        procedure=slug,
        date=day,
        time=clock,
        timezone=zone,
        booking_ref="R260101-ABC123",
        phone="+447911123456",
        email="sian.jones@example.org",
        arrival=arrival,
        sedation=draw(st.sampled_from([True, False, None])),  # None: the procedure's default
        joint=joint,
        enrolled_at=now,
        **draw(anticoagulant_plans()),  # type: ignore[arg-type]
    )
    return Case(protocol, enrolment, now, window)


def schedule_for(case: Case) -> Schedule:
    return compute_schedule(case.protocol, case.enrolment, case.now, case.window)


def describe(case: Case, reminder: PlannedReminder) -> str:
    zone = case.zone
    return (
        f"rule {reminder.rule!r} ({reminder.channel}) send_at={reminder.send_at.isoformat()} "
        f"[{reminder.send_at.astimezone(zone):%a %Y-%m-%d %H:%M:%S %z} local] "
        f"deadline={reminder.deadline.isoformat()} expires={reminder.expires.isoformat()}; {case}"
    )


def london_case(
    slug: str,
    day: date,
    clock: time,
    now: datetime,
    window: SendingWindow,
    **fields: object,
) -> Case:
    enrolment = Enrolment(
        name="Si\u00e2n Jones",
        procedure=slug,
        date=day,
        time=clock,
        timezone=ZoneInfo("Europe/London"),
        phone="+447911123456",
        email="sian.jones@example.org",
        enrolled_at=now,
        **fields,  # type: ignore[arg-type]
    )
    return Case(PROTOCOLS[slug], enrolment, now, window)


# --- the invariants ------------------------------------------------------------------------


def check_invariants(case: Case, schedule: Schedule) -> None:
    # In UTC: facts.starts_at is in the patient's zone, and `==` across zones is False for a
    # wall time in a repeated hour (PEP 495); ordering comparisons are unaffected.
    starts_at = schedule.facts.starts_at.astimezone(UTC)
    assert starts_at == case.starts_at, f"starts_at {starts_at} differs from localize; {case}"
    seen: set[tuple[str, str]] = set()
    for r in schedule.reminders:
        rule = case.protocol.rule(r.rule)
        what = describe(case, r)
        assert r.send_at.tzinfo is not None, f"naive send_at: {what}"
        assert r.send_at.utcoffset() == timedelta(0), f"send_at not in UTC: {what}"
        assert r.send_at >= case.now, f"scheduled in the past: {what}"
        assert r.send_at < r.expires, f"scheduled when already worthless: {what}"
        if rule.phase == "before":
            assert r.send_at < starts_at, f"pre-procedure reminder at or after the start: {what}"
        else:
            assert r.send_at >= starts_at, f"after-procedure reminder before the start: {what}"
        if rule.quiet_hours != "send":
            assert in_window(r.send_at, case.window, case.zone), f"outside the window: {what}"
        if rule.when.get("anticoagulant") == "hold":
            hold = case.enrolment.anticoagulant_hold_days
            assert hold is not None and hold > 0, f"stop instruction without a plan: {what}"
        pair = (r.rule, r.channel)
        assert pair not in seen, f"{pair} planned twice; {case}"
        seen.add(pair)
    send_times = [r.send_at for r in schedule.reminders]
    assert send_times == sorted(send_times), f"not sorted by send_at: {send_times}; {case}"


# Enrolled at 01:30 UTC on 25 October 2026, the second 01:30 of London's repeated hour.
REPEATED_HOUR_BOOKING = london_case(
    "sacroplasty",
    date(2026, 11, 5),
    time(10, 0),
    datetime(2026, 10, 25, 1, 30, tzinfo=UTC),
    ALWAYS_OPEN,
    anticoagulant="apixaban",
    anticoagulant_hold_days=3,
    anticoagulant_restart_days=1,
)

# A procedure at 07:00 on the morning London's clocks go forward (29 March 2026): the food stop
# (00:30 GMT) and liquids stop (04:30 BST) fall either side of the gap; the warfarin hold's
# last dose is on the 23rd.
SPRING_FORWARD_FASTING = london_case(
    "sacroplasty",
    date(2026, 3, 29),
    time(7, 0),
    datetime(2026, 3, 20, 12, 0, tzinfo=UTC),
    DEFAULT_WINDOW,
    arrival=time(5, 30),
    anticoagulant="warfarin",
    anticoagulant_hold_days=5,
    anticoagulant_restart_days=0,
)


@settings(max_examples=examples(4000))
@given(cases())
@example(SPRING_FORWARD_FASTING)
@example(REPEATED_HOUR_BOOKING)
@example(
    london_case(
        "joint-denervation",
        date(2026, 10, 26),
        time(7, 0),
        datetime(2026, 10, 25, 1, 30, tzinfo=UTC),
        DEFAULT_WINDOW,
        arrival=time(6, 0),
        joint="knee",
    )
)
def test_schedule_invariants_hold_in_every_zone(case: Case) -> None:
    schedule = schedule_for(case)
    check_invariants(case, schedule)
    again = schedule_for(case)
    assert again.reminders == schedule.reminders, f"two runs planned differently; {case}"
    assert again.warnings == schedule.warnings, f"two runs warned differently; {case}"


@settings(max_examples=examples(500))
@given(cases(windows=st.just(DEFAULT_WINDOW), now_to=timedelta(days=-3)))
def test_quiet_hours_never_push_a_reminder_past_its_deadline(case: Case) -> None:
    """Enrolled three or more days ahead, there is always an earlier slot in the window, so
    quiet hours must never move a message past the time it has to reach the patient by."""
    for r in schedule_for(case).reminders:
        assert r.send_at <= r.deadline, f"sent after its deadline: {describe(case, r)}"


@settings(max_examples=examples(300))
@given(cases())
def test_fasting_times_are_elapsed_hours_before_arrival(case: Case) -> None:
    """'No food for 6 hours' is six real hours, even across a clock change."""
    facts = schedule_for(case).facts
    fasting = case.protocol.fasting
    if not facts.sedation or fasting is None:
        return
    arrival = facts.anchors["arrival"].astimezone(UTC)
    food = arrival - facts.anchors["food-stop"].astimezone(UTC)
    liquids = arrival - facts.anchors["liquids-stop"].astimezone(UTC)
    assert food == timedelta(hours=fasting.food_hours), f"food stop {food} before arrival; {case}"
    assert liquids == timedelta(hours=fasting.liquids_hours), f"liquids {liquids}; {case}"


# --- found by these properties; the reproducers stay as explicit examples ------------------


@settings(max_examples=examples(300))
@given(cases(windows=st.just(ALWAYS_OPEN)))
@example(REPEATED_HOUR_BOOKING)
def test_booking_anchored_rules_go_at_once_when_the_window_is_open(case: Case) -> None:
    schedule = schedule_for(case)
    planned = {(r.rule, r.channel): r for r in schedule.reminders}
    for rule in case.protocol.rules:
        send = rule.send
        booking = send.anchor == "booking" and send.offset.amount == 0 and send.at is None
        if not booking or rule.requires or not matches(rule, schedule.facts.conditions):
            continue
        timing = timing_for(rule, schedule.facts)
        if timing is None or case.now >= timing.expires:
            continue  # too late: not this test's business
        for channel in rule.channels:
            r = planned.get((rule.id, channel))
            assert r is not None, f"rule {rule.id!r} ({channel}) missing; {case}"
            assert r.send_at == case.now, f"{describe(case, r)} should go at once"


@settings(max_examples=examples(300))
@given(cases())
@example(
    london_case(
        "sacroplasty",
        date(2026, 6, 10),
        time(10, 0),
        datetime(2026, 6, 9, 9, 0, tzinfo=ZoneInfo("Europe/London")),
        DEFAULT_WINDOW,
    )
)
def test_send_times_are_utc_whatever_zone_now_is_given_in(case: Case) -> None:
    """`now` may come in any zone; send times are UTC all the same. (Regression: the `late`
    path used to hand back `now` itself, so sacroplasty on 2026-06-10 at 10:00 in London with
    now=2026-06-09T09:00+01:00 got arrange-transport at 09:00 Europe/London.)"""
    local_now = case.now.astimezone(case.zone)
    schedule = compute_schedule(case.protocol, case.enrolment, local_now, case.window)
    for r in schedule.reminders:
        assert r.send_at.utcoffset() == timedelta(0), f"not UTC: {describe(case, r)}"


UNIT_WINDOWS = [parse_sending_window(w) for w in ("09:00-17:00", "08:00-18:00", "07:30-21:00")]


@settings(max_examples=examples(500))
@given(cases(windows=st.sampled_from(UNIT_WINDOWS)))
@example(
    london_case(
        "sacroplasty",
        date(2026, 6, 10),
        time(18, 30),
        datetime(2026, 6, 1, 9, 0, tzinfo=UTC),
        parse_sending_window("08:00-18:00"),
    )
)
def test_schedule_invariants_hold_with_other_unit_windows(case: Case) -> None:
    """The invariants hold with the narrower or wider windows a unit may configure.
    (Regression: with 08:00-18:00, sacroplasty at 18:30 in London had its 19:00 after-care
    moved earlier to 18:00, half an hour before the procedure started.)"""
    check_invariants(case, schedule_for(case))
