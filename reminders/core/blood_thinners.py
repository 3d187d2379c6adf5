"""The blood-thinner plan, judged as a whole: what staff must hear when it is missing, late,
short or without a restart day, and what a clinician must decide when the booking changes after
the patient was told to stop.

The software never works out medicine dates of its own: a hold is the clinician's, recorded on
the enrolment. When a change makes the recorded plan wrong for what the patient already holds,
these words put it in front of a person (the call list) and the patient is told the team will
call; nothing here tells a patient to stop, restart or change a medicine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from reminders.core.clock import format_day, format_moment, localize
from reminders.core.facts import Facts, Told, hold_rules


@dataclass
class PlanNotes:
    warnings: list[str] = field(default_factory=list)  # for the needs-attention list
    calls: list[str] = field(default_factory=list)  # a person must act: the call list
    too_late: bool = False  # the hold can no longer be honoured: no stop message goes


def plan_needed_by(facts: Facts) -> date:
    """The last day a clinician's plan can still be honoured: for a protocol with a minimum
    hold, the last dose day of that hold; otherwise the day before the procedure."""
    minimum = facts.protocol.blood_thinners.minimum_hold_days or 0
    return facts.enrolment.date - timedelta(days=minimum + 1)


def below_minimum(facts: Facts) -> int | None:
    """The protocol's minimum hold when the recorded plan holds for less (keeping aspirin
    going is what the leaflet asks where it says so); None when the plan is not short."""
    minimum = facts.protocol.blood_thinners.minimum_hold_days
    days = facts.enrolment.anticoagulant_hold_days
    if minimum is None or days is None or not facts.enrolment.anticoagulant or days >= minimum:
        return None
    if facts.medicine == "aspirin" and facts.protocol.blood_thinners.aspirin_as_normal:
        return None
    return minimum


def plan_notes(facts: Facts, now: datetime) -> PlanNotes:
    """What staff must hear about the plan when enrolling or changing a booking."""
    notes = PlanNotes()
    enrolment = facts.enrolment
    drug = enrolment.anticoagulant
    if not drug:
        return notes
    if facts.medicine is None and facts.medicines_known:
        notes.warnings.append(
            f"The blood thinner '{drug}' is not on the unit's medicines list "
            "(config/medicines.yaml): check the spelling. Advice that depends on the medicine "
            "(such as a clotting test after warfarin) cannot be given for it."
        )
    if facts.anticoagulant == "unplanned":
        needed = plan_needed_by(facts)
        notes.calls.append(
            f"Clinician plan needed by {format_day(needed)}: the patient takes {drug} and no "
            "plan is recorded. They have been asked to call and not to stop it on their own. "
            "Record the plan (anticoagulant_hold_days) once a clinician has decided."
        )
    if facts.anticoagulant != "hold":
        return notes
    first_skip = facts.first_skip_day
    assert first_skip is not None  # a hold plan has a last dose
    if now >= localize(first_skip, time(0), facts.zone) and not facts.told_to_stop:
        notes.too_late = True
        notes.calls.append(
            f"The blood-thinner plan ({drug}, stop {enrolment.anticoagulant_hold_days} days "
            f"before) can no longer be honoured: the first day without it was "
            f"{format_day(first_skip)}. No stop message will be sent; please contact the "
            "patient and the clinician."
        )
    if enrolment.anticoagulant_restart_days is None:
        notes.warnings.append(
            f"No restart day is recorded for {drug}: the patient is told to start it again "
            "only when their doctor tells them. Make sure someone does."
        )
    minimum = below_minimum(facts)
    if minimum is not None:
        notes.warnings.append(
            f"The hold for {drug} ({enrolment.anticoagulant_hold_days} days) is shorter than "
            f"the {minimum} days the {facts.protocol.name} protocol asks for; recorded with the "
            "clinician's reason."
        )
    return notes


def last_told(facts: Facts) -> Told | None:
    """The last message about stopping the blood thinner that reached the patient."""
    return facts.history.last(hold_rules(facts.protocol))


def _told(facts: Facts) -> str:
    told = last_told(facts)
    if told is None:
        return "No message about stopping it reached the patient."
    return (
        f"The patient was last told about it at {format_moment(told.at, facts.zone)} "
        f"('{facts.protocol.rule(told.rule).title}')."
        if told.rule in {rule.id for rule in facts.protocol.rules}
        else f"The patient was last told about it at {format_moment(told.at, facts.zone)}."
    )


def moved_call(before: Facts, after_start: date) -> str:
    """The call-list entry when a booking moves after the patient was told, or was due, to
    stop: the planned hold, the hold the new date would give, and what the patient holds."""
    enrolment = before.enrolment
    drug = enrolment.anticoagulant
    first_skip = before.first_skip_day
    assert first_skip is not None
    would_be = (after_start - first_skip).days
    return (
        f"Urgent, a clinician must decide: the procedure moved from "
        f"{format_day(enrolment.date)} to {format_day(after_start)} after the patient was told "
        f"to stop {drug}. The plan was to stop {enrolment.anticoagulant_hold_days} days before "
        f"(last dose {format_day(first_skip - timedelta(1))}); kept as it is, the new date "
        f"would make it {would_be} days. {_told(before)} The software has not worked out new "
        "dates: the patient has been told we will call. Record a new plan "
        "(anticoagulant_hold_days) to send them new dates."
    )


def cancelled_call(before: Facts, today: date) -> str:
    """The call-list entry when a booking is cancelled after the patient was told, or was
    due, to stop: the drug, the last dose, the days already missed."""
    drug = before.enrolment.anticoagulant
    first_skip = before.first_skip_day
    assert first_skip is not None
    missed = max(0, (today - first_skip).days + 1)
    return (
        f"Urgent, a clinician must decide: the procedure on {format_day(before.enrolment.date)} "
        f"is cancelled and the patient was told to stop {drug}. Last dose: "
        f"{format_day(first_skip - timedelta(1))}; days without it so far: {missed}. "
        f"{_told(before)} The patient has been told we will call about restarting it."
    )


def stopped_or_due(facts: Facts, now: datetime) -> bool:
    """Whether the patient holds a stop instruction, or was due to stop by now."""
    if facts.anticoagulant != "hold":
        return False
    first_skip = facts.first_skip_day
    due = first_skip is not None and now >= localize(first_skip, time(0), facts.zone)
    return facts.told_to_stop or due
