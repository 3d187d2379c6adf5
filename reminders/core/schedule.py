"""Pure: (protocol, enrolment, now) -> the reminders to send, in UTC, and warnings for staff.

The steps for each rule: does it apply (its `when` and its anchors); its planned send time, deadline
and expiry in the patient's zone; the sending window; then whether it is already too late. Nothing
here reads a clock, a file or a database, so every decision can be tested directly.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from reminders.core.blood_thinners import plan_notes
from reminders.core.clock import (
    SendingWindow,
    format_day,
    format_moment,
    in_window,
    next_opening,
    previous_closing,
)
from reminders.core.enrolment import Enrolment
from reminders.core.facts import Change, Facts, History, facts_for
from reminders.core.hours import shut_at
from reminders.core.medicines import NO_MEDICINES, Medicines
from reminders.core.protocols import Protocol, Rule, Unit


@dataclass(frozen=True)
class PlannedReminder:
    rule: str
    channel: str
    send_at: datetime  # UTC
    deadline: datetime  # must reach the patient by
    expires: datetime  # worthless after
    template: str
    safety_critical: bool
    is_correction: bool = False

    @classmethod
    def of(
        cls, rule: Rule, channel: str, at: datetime, timing: Timing, *, correction: bool = False
    ) -> PlannedReminder:
        return cls(
            rule=rule.id,
            channel=channel,
            send_at=at,
            deadline=timing.deadline,
            expires=timing.expires,
            template=(rule.correction or rule.template) if correction else rule.template,
            safety_critical=rule.safety_critical,
            is_correction=correction,
        )


@dataclass
class Schedule:
    facts: Facts
    reminders: list[PlannedReminder] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # for staff, on the needs-attention list
    calls: list[str] = field(default_factory=list)  # for staff to phone about: the call list


def matches(rule: Rule, conditions: dict[str, object]) -> bool:
    for fact, wanted in rule.when.items():
        allowed = wanted if isinstance(wanted, list) else [wanted]
        if conditions.get(fact) not in allowed:
            return False
    return True


@dataclass(frozen=True)
class Timing:
    send_at: datetime
    deadline: datetime
    expires: datetime


def timing_for(rule: Rule, facts: Facts) -> Timing | None:
    planned = facts.resolve(rule.send)
    if planned is None:
        return None
    expires = facts.resolve(rule.expires) if rule.expires else None
    if expires is None:
        expires = facts.starts_at
        if rule.phase != "before":
            expires = planned.astimezone(UTC) + timedelta(days=1)
    if rule.phase == "before":
        expires = min(expires, facts.starts_at)
    deadline = facts.resolve(rule.deadline) if rule.deadline else None
    deadline = expires if deadline is None else min(deadline, expires)
    return Timing(planned.astimezone(UTC), deadline.astimezone(UTC), expires.astimezone(UTC))


def _fit_window(
    at: datetime, rule: Rule, timing: Timing, window: SendingWindow, zone: ZoneInfo
) -> datetime | None:
    """Move `at` into the sending window by the rule's policy; None when the policy drops it."""
    if rule.quiet_hours == "send" or in_window(at, window, zone):
        return at
    if rule.quiet_hours == "drop":
        return None
    later = next_opening(at, window, zone)
    if rule.quiet_hours == "later" and later <= timing.deadline:
        return later
    # Earlier rather than past the deadline: a fasting message at 8pm beats one at 8am that
    # arrives after the patient should have stopped eating.
    return previous_closing(at, window, zone)


def _place(
    rule: Rule, timing: Timing, facts: Facts, now: datetime, window: SendingWindow
) -> tuple[datetime | None, str | None]:
    """The final send time, or None with the reason staff should hear (None when silent)."""
    zone = facts.zone
    ends_at = facts.ends_at.astimezone(UTC)
    if rule.phase == "after" and timing.send_at < ends_at:
        # After-care planned for before the procedure is over (a dressing "this evening" at 7pm
        # after a late list) goes once it has ended instead.
        timing = Timing(ends_at, max(timing.deadline, ends_at), timing.expires)
    at = _fit_window(timing.send_at, rule, timing, window, zone)
    if at is not None and rule.phase == "after" and at < ends_at:
        # Moved earlier into the window, but after-care cannot go before the procedure ends.
        at = next_opening(timing.send_at, window, zone)
        if at >= timing.expires:
            return None, f"{rule.title}: not scheduled, as no time in the sending window fits."
    if at is None:
        return None, None
    if at >= now and at < timing.expires:
        return at, None
    too_late = (
        f"{rule.title}: too late to send; it had to reach the patient by "
        f"{format_moment(timing.deadline, zone)}. Not sent: please contact the patient."
    )
    if rule.late == "skip":
        return None, None
    if rule.late == "warn":
        return None, too_late
    soonest = max(now, ends_at) if rule.phase == "after" else now
    if rule.quiet_hours != "send":
        soonest = next_opening(soonest, window, zone)
    if soonest >= timing.expires:
        return None, too_late
    if soonest > timing.deadline and rule.safety_critical:
        return soonest, (
            f"{rule.title}: will reach the patient only at {format_moment(soonest, zone)}, after "
            f"{format_moment(timing.deadline, zone)} when it was needed. Please phone the patient."
        )
    return soonest, None


def compute_schedule(
    protocol: Protocol,
    enrolment: Enrolment,
    now: datetime,
    window: SendingWindow,
    *,
    delivered: Collection[tuple[str, str]] = (),
    corrected: Collection[tuple[str, str]] = (),
    history: History | None = None,
    medicines: Medicines = NO_MEDICINES,
    unit: Unit | None = None,
    unit_zone: ZoneInfo | None = None,
    owed: Collection[tuple[str, str]] = (),
) -> Schedule:
    """Every reminder still to send for `enrolment`, as of `now`; with `unit`, a warning when
    the procedure is booked while the unit is shut.

    On a reschedule, `delivered` holds the (rule, channel) pairs the patient already has and
    that still read the same: they are not planned again, and count as scheduled for other
    rules' `requires`. `corrected` holds those already sent that now read differently and get
    a correction at once: they are planned again only where their own time is still to come
    (the fasting message the evening before the new date), never late. `owed` holds those
    that were planned, fell due and never reached the patient: where their time has passed,
    they go now while still worth sending, whatever the rule says for a late enrolment.
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    now = now.astimezone(UTC)
    facts = facts_for(
        protocol, enrolment, enrolment.enrolled_at or now, history=history, medicines=medicines,
        unit_zone=unit_zone,
    )  # fmt: skip
    schedule = Schedule(facts)
    conditions = facts.conditions
    notes = plan_notes(facts, now)
    placed: dict[str, list[PlannedReminder]] = {}
    for rule in protocol.rules:
        if rule.phase == "notice" or not matches(rule, conditions):
            continue
        timing = timing_for(rule, facts)
        if timing is None:
            continue
        channels = [c for c in rule.channels if c in enrolment.channels]
        if any((rule.id, c) in delivered for c in channels):
            placed.setdefault(rule.id, [])
        fresh = [c for c in channels if (rule.id, c) not in (*delivered, *corrected)]
        for late, wanted in (
            (rule.late, [c for c in fresh if (rule.id, c) not in owed]),
            ("send-now", [c for c in fresh if (rule.id, c) in owed]),
            ("skip", [c for c in channels if (rule.id, c) in corrected]),
        ):
            if not wanted:
                continue
            as_planned = rule if late == rule.late else rule.model_copy(update={"late": late})
            at, warning = _place(as_planned, timing, facts, now, window)
            # A hold plan that is too late is one call for staff, not a warning per message.
            held = notes.too_late and rule.when.get("anticoagulant") == "hold"
            if warning and not held and warning not in schedule.warnings:
                schedule.warnings.append(warning)
            if at is None:
                continue
            placed.setdefault(rule.id, []).extend(
                PlannedReminder.of(rule, channel, at, timing) for channel in wanted
            )
    schedule.warnings.extend(notes.warnings)
    schedule.calls.extend(notes.calls)
    shut = shut_at(facts.starts_at, unit) if unit is not None else None
    if shut:
        schedule.warnings.append(
            f"The procedure is booked when the unit is shut: {shut}. Please check the date and "
            "time; messages asking the patient to call say when the unit opens."
        )
    clock = facts.unit_zone or facts.zone  # the procedure's date and time are on this clock
    shown = facts.starts_at.astimezone(clock)
    if (shown.date(), shown.time()) != (enrolment.date, enrolment.time):
        schedule.warnings.append(
            f"The procedure time {enrolment.time:%H:%M} does not exist on "
            f"{format_day(enrolment.date)} in {clock.key}, as the clocks go forward; "
            f"reminders take it as {format_moment(facts.starts_at, clock)}. "
            "Please check the time."
        )
    if facts.away:
        schedule.warnings.append(
            f"The patient's time zone ({facts.zone.key}) is not the unit's ({clock.key}): the "
            f"procedure is at {format_moment(facts.starts_at, clock)} on the unit's clock, "
            f"{format_moment(facts.starts_at, facts.zone)} on theirs. Their messages show "
            "times on their clock, labelled, the unit's number as dialled from abroad, and no "
            "UK-only advice (NHS 111, GP, 999). Please check this is right."
        )
    for rule in protocol.rules:
        if rule.id in placed and all(r in placed for r in rule.requires):
            schedule.reminders.extend(placed[rule.id])
    order = {rule.id: index for index, rule in enumerate(protocol.rules)}
    schedule.reminders.sort(key=lambda r: (r.send_at, order[r.rule], r.channel))
    return schedule


@dataclass
class SentReview:
    """What a reschedule means for the messages the patient already has."""

    unchanged: list[tuple[str, str]] = field(default_factory=list)  # still true: leave alone
    corrected: list[tuple[str, str]] = field(default_factory=list)  # changed: correct now
    withdrawn: list[tuple[str, str]] = field(default_factory=list)  # no longer applies at all


def review_sent(
    protocol: Protocol,
    facts: Facts,
    sent: Mapping[tuple[str, str], str | None],
    fingerprint: Callable[[Rule, str], str],
) -> SentReview:
    """Sort the (rule, channel) pairs already sent, each with the fingerprint of what it said,
    against what the rule would say now (`fingerprint(rule, channel)`). A changed message
    without a correction template is in none of the lists: it is simply planned again."""
    review = SentReview()
    known = {rule.id for rule in protocol.rules}
    for (rule_id, channel), said in sent.items():
        if rule_id not in known:
            continue  # the protocol no longer has this rule: nothing to compare with
        rule = protocol.rule(rule_id)
        if not matches(rule, facts.conditions) or timing_for(rule, facts) is None:
            if rule.correction is not None:
                review.withdrawn.append((rule_id, channel))
            continue
        if said is None or fingerprint(rule, channel) == said:
            review.unchanged.append((rule_id, channel))
        elif rule.correction is not None:
            review.corrected.append((rule_id, channel))
    return review


def plan_corrections(
    protocol: Protocol,
    facts: Facts,
    changed: Iterable[tuple[str, str]],
    now: datetime,
    window: SendingWindow,
    urgent: SendingWindow | None = None,
) -> Schedule:
    """Corrections for (rule, channel) pairs whose already-sent instruction now reads differently
    or no longer applies.

    A correction goes as soon as the window allows and is worth sending until the corrected
    rule's new expiry; staff are told either way, as the patient may act on the old message. A
    safety-critical one that the window would hold past its deadline goes within the `urgent`
    window instead (a fasting time changed at 9pm cannot wait for 8am), and goes on the call
    list too. An instruction that no longer applies at all (a hold plan withdrawn) has nothing
    to correct it with, so staff are asked to phone.
    """
    now = now.astimezone(UTC)
    schedule = Schedule(facts)
    sent: set[tuple[str, str]] = set()
    for rule_id, channel in changed:
        rule = protocol.rule(rule_id)
        timing = timing_for(rule, facts) if matches(rule, facts.conditions) else None
        if timing is None:
            withdrawn = (
                f"{rule.title}: the patient already has this instruction, but it no longer "
                "applies. Please contact the patient to tell them."
            )
            if withdrawn not in schedule.warnings:
                schedule.warnings.append(withdrawn)
            continue
        if rule.correction is None or (rule.correction, channel) in sent:
            continue  # rules that share a correction template send it once
        sent.add((rule.correction, channel))
        at = next_opening(now, window, facts.zone)
        message = f"{rule.title}: the patient already has the old instruction; "
        if rule.safety_critical and urgent is not None and at > timing.deadline:
            sooner = next_opening(now, urgent, facts.zone)
            if sooner < at and sooner < timing.expires:
                at = sooner
                call = (
                    f"{rule.title}: the correction goes at "
                    f"{format_moment(at, facts.zone)}, outside the usual sending hours, as the "
                    f"patient needs it by {format_moment(timing.deadline, facts.zone)}. Please "
                    "phone the patient as well."
                )
                if call not in schedule.calls:
                    schedule.calls.append(call)
        if at < timing.expires:
            schedule.reminders.append(
                PlannedReminder.of(rule, channel, at, timing, correction=True)
            )
            message += "a correction is being sent. Please check they have seen it."
        else:
            message += "it is too late to send a correction. Please contact the patient."
        if message not in schedule.warnings:
            schedule.warnings.append(message)
    return schedule


def plan_notices(
    protocol: Protocol,
    enrolment: Enrolment,
    change: Change,
    window: SendingWindow,
    *,
    history: History | None = None,
    medicines: Medicines = NO_MEDICINES,
    unit_zone: ZoneInfo | None = None,
) -> Schedule:
    """The notices a booking change sends (rules with `phase: notice` and `on` the change):
    what moved from when to when, or that it is cancelled, sent as soon as the rule allows."""
    now = change.at.astimezone(UTC)
    facts = facts_for(
        protocol, enrolment, enrolment.enrolled_at or now, history=history,
        medicines=medicines, change=change, unit_zone=unit_zone,
    )  # fmt: skip
    schedule = Schedule(facts)
    for rule in protocol.rules:
        if rule.phase != "notice" or rule.event != change.event:
            continue
        if not matches(rule, facts.conditions):
            continue
        timing = timing_for(rule, facts)
        if timing is None:
            continue
        at, warning = _place(rule, timing, facts, now, window)
        if warning and warning not in schedule.warnings:
            schedule.warnings.append(warning)
        if at is not None:
            schedule.reminders.extend(
                PlannedReminder.of(rule, channel, at, timing)
                for channel in rule.channels
                if channel in enrolment.channels
            )
    return schedule
