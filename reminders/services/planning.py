"""Turning an enrolment into reminder rows: the schedule as it should be now, set against what
is already planned and what the patient already holds (their `History`: what reached them),
and the notices a change sends. `enrolments` decides when; this works out what."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from reminders.config import Config
from reminders.core.enrolment import Enrolment
from reminders.core.facts import Change, Facts, History, Told, facts_for, hold_rules
from reminders.core.rendering import enrolment_context, template_context
from reminders.core.schedule import (
    PlannedReminder,
    Schedule,
    compute_schedule,
    plan_corrections,
    plan_notices,
    review_sent,
)
from reminders.store import holds, lifecycle, models


def as_enrolment(row: models.Enrolment) -> Enrolment:
    """The stored enrolment as the pure core sees it."""
    return Enrolment.from_columns(row.patient, row, enrolled_at=row.enrolled_at)


def history_of(reminders: Iterable[models.Reminder]) -> History:
    """What reached the patient, or may have: sent and not reported back as undelivered, or in
    flight (its request has left, `holds.in_flight`). A change of booking decides what to say
    and whom to call from this, so a message on its way counts as told (hazard H1); one that
    never left does not. Sending decides from sent messages only (`send._histories`)."""
    told = sorted(
        (
            (r.sent_at or r.requested_at, r) for r in reminders
            if (r.state == lifecycle.SENT and r.sent_at is not None
                and r.delivery_status not in lifecycle.NOT_RECEIVED)
            or holds.in_flight(r)
        ),
        key=lambda pair: (pair[0], pair[1].id or 0),
    )  # fmt: skip
    return History(tuple(Told(r.rule, r.channel, at, r.fingerprint) for at, r in told))  # type: ignore[arg-type]


def facts_of(
    config: Config, row: models.Enrolment, *, change: Change | None = None,
    history: History | None = None,
) -> Facts:  # fmt: skip
    """The facts of a stored enrolment, with what its patient has been told so far."""
    return facts_for(
        config.protocols[row.procedure], as_enrolment(row), row.enrolled_at,
        history=history_of(row.reminders) if history is None else history,
        medicines=config.medicines, change=change, unit_zone=config.zone,
    )  # fmt: skip


def change_of(reminder: models.Reminder) -> Change | None:
    """The change a notice is about, kept on its row (`detail`)."""
    if not reminder.detail:
        return None
    detail = json.loads(reminder.detail)
    previous = detail.get("previous_start")
    return Change(
        detail["event"],
        datetime.fromisoformat(detail["at"]),
        datetime.fromisoformat(previous) if previous else None,
    )


def _detail(change: Change) -> str:
    return json.dumps(
        {
            "event": change.event,
            "at": change.at.isoformat(),
            "previous_start": change.previous_start.isoformat() if change.previous_start else None,
        },
        sort_keys=True,
    )


def reminder_values(
    config: Config, schedule: Schedule, planned: PlannedReminder, version: int,
    shared: Mapping[str, Any] | None = None,
) -> dict[str, object]:  # fmt: skip
    """The columns of a planned reminder's row: for `models.Reminder` here, and for the CSV
    import's bulk insert of brand-new enrolments. Its words are written when it is sent
    (`wording`); an SMS is written now too, only to refuse one over the segment limit while
    staff can still do something about it (RenderError). `shared`: as for `template_context`."""
    if planned.channel == "sms":
        facts = schedule.facts
        renderer = config.renderer
        context = template_context(facts, planned.send_at, renderer.unit, shared)
        renderer.render_with(planned.template, planned.channel, facts, context)
    return {
        "rule": planned.rule,
        "channel": planned.channel,
        "state": lifecycle.INITIAL,
        "send_at": planned.send_at,
        "deadline": planned.deadline,
        "expires_at": planned.expires,
        "schedule_version": version,
        "template": planned.template,
        "safety_critical": planned.safety_critical,
        "is_correction": planned.is_correction,
        "detail": _detail(schedule.facts.change) if schedule.facts.change else None,
    }


def _same(row: models.Reminder, new: models.Reminder) -> bool:
    keys = ("rule", "channel", "send_at", "template", "is_correction")
    return all(getattr(row, k) == getattr(new, k) for k in keys)


def expire(session: Session, reminders: list[models.Reminder]) -> None:
    """Forget what was read of rows the lifecycle has just changed with a set-based UPDATE."""
    for reminder in reminders:
        session.expire(reminder)


def is_notice(config: Config, procedure: str, rule_id: str) -> bool:
    protocol = config.protocols.get(procedure)
    return (
        any(r.id == rule_id and r.phase == "notice" for r in protocol.rules) if protocol else False
    )


@dataclass
class Replanned:
    added: list[models.Reminder] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # about timing
    corrections: list[str] = field(default_factory=list)  # about messages the patient holds
    calls: list[str] = field(default_factory=list)  # for the call list


def replan(
    session: Session, config: Config, row: models.Enrolment, now: datetime, *,
    moved: bool = False,
) -> Replanned:  # fmt: skip
    """Recompute every pending reminder; what was sent stays as history, and pending notices
    of a change go on (they say what the patient must hear whatever else is replanned).
    `moved`: the procedure moved and its notice says so, so what was sent at booking (the
    confirmation) is not sent again as well."""
    protocol = config.protocols[row.procedure]
    enrolment = as_enrolment(row)
    # Locked and read afresh: no worker can take one of these rows, or let its request go,
    # until this change commits; and then it sees the change (`holds.go`).
    holds.lock_plan(session, row.id)
    history = history_of(row.reminders)
    sent = {(told.rule, told.channel): told.fingerprint for told in history.told}  # latest wins
    # Planned, due and not delivered (waiting, retrying, or held by a worker whose request has
    # not left): the new plan sends it now if the rule still applies, even where the rule
    # would skip a time already past at enrolment.
    owed = {
        (r.rule, r.channel) for r in row.reminders
        if holds.replaceable(r) and (r.send_at <= now or r.attempts)
    }  # fmt: skip
    facts = facts_for(
        protocol, enrolment, row.enrolled_at, history=history, medicines=config.medicines,
        unit_zone=config.zone,
    )  # fmt: skip
    review = review_sent(
        protocol,
        facts,
        sent,
        lambda rule, channel: config.renderer.fingerprint(rule.template, channel, facts, now),
    )
    unchanged = list(review.unchanged)
    if moved:
        told = {pair for pair in sent if pair not in review.corrected}
        unchanged += [
            pair for pair in told
            if pair not in unchanged and pair[0] in {r.id for r in protocol.rules}
            and protocol.rule(pair[0]).send.anchor == "booking"
            and protocol.rule(pair[0]).correction is None
        ]  # fmt: skip
    withdrawn = review.withdrawn
    if facts.anticoagulant == "replan":
        # A withdrawn blood-thinner plan is the call list's business (blood_thinners.moved_call),
        # not a correction's: no new dates go out until a clinician records them.
        stop_rules = set(hold_rules(protocol))
        withdrawn = [pair for pair in withdrawn if pair[0] not in stop_rules]
    schedule = compute_schedule(
        protocol, enrolment, now, config.window, delivered=unchanged,
        corrected=review.corrected, history=history, medicines=config.medicines,
        unit=config.unit, unit_zone=config.zone, owed=owed,
    )  # fmt: skip
    corrections = plan_corrections(
        protocol, facts, [*review.corrected, *withdrawn], now, config.window,
        urgent=config.unit.urgent_window,
    )  # fmt: skip
    version = row.schedule_version
    shared = enrolment_context(schedule.facts, config.renderer.unit)
    wanted = [
        models.Reminder(**reminder_values(config, schedule, planned, version, shared))
        for planned in [*schedule.reminders, *corrections.reminders]
    ]
    result = Replanned(
        warnings=schedule.warnings, corrections=corrections.warnings,
        calls=[*schedule.calls, *corrections.calls],
    )  # fmt: skip
    kept = [r for r in row.reminders if r.pending and is_notice(config, row.procedure, r.rule)]
    flying = [r for r in row.reminders if holds.in_flight(r)]
    for new in wanted:
        # A row whose request has left (it may reach the patient) stands for the same rule and
        # channel in the new plan: planning it again could send it twice. One held by a worker
        # whose request has not left is never kept: its words were written from the old plan.
        twin = next(
            (r for r in row.reminders if r.pending and r not in kept and _same(r, new)), None
        ) or next((r for r in flying if r not in kept and (r.rule, r.channel) == (new.rule,
                   new.channel)), None)  # fmt: skip
        if twin is not None:
            kept.append(twin)
        else:
            result.added.append(new)
    session.flush()
    # Withdrawn with this change: pending, and held by a worker whose request has not left.
    superseded = [r for r in row.reminders if holds.replaceable(r) and r not in kept]
    lifecycle.carry_over(session, [r.id for r in kept], version)
    lifecycle.withdraw(session, [r.id for r in superseded], "superseded")
    expire(session, [*kept, *superseded])
    row.reminders.extend(result.added)
    session.flush()
    return result


def add_notices(
    session: Session, config: Config, row: models.Enrolment, change: Change
) -> list[models.Reminder]:
    """The notices a change sends (the protocol's `phase: notice` rules for it). A move that
    follows a move nobody has been told of yet replaces that notice, from the start the patient
    still has in mind."""
    if change.event == "moved":
        waiting = [
            r for r in row.reminders
            if holds.replaceable(r) and is_notice(config, row.procedure, r.rule)
            and (earlier := change_of(r)) is not None and earlier.event == "moved"
        ]  # fmt: skip
        if waiting:
            first = change_of(waiting[0])
            if first is not None and first.previous_start is not None:
                change = Change(change.event, change.at, first.previous_start)
            session.flush()
            lifecycle.withdraw(session, [r.id for r in waiting], "superseded")
            expire(session, waiting)
    protocol = config.protocols[row.procedure]
    schedule = plan_notices(
        protocol, as_enrolment(row), change, config.window, history=history_of(row.reminders),
        medicines=config.medicines, unit_zone=config.zone,
    )  # fmt: skip
    added = [
        models.Reminder(**reminder_values(config, schedule, planned, row.schedule_version))
        for planned in schedule.reminders
    ]
    row.reminders.extend(added)
    session.flush()
    return added


def email_instead(
    session: Session, config: Config, reminder: models.Reminder, now: datetime
) -> models.Reminder | None:
    """After an SMS fails for good, the same instruction by email, once, if the patient has an
    address and is not already getting this one by email. Returns the new reminder, if any."""
    row = reminder.enrolment
    notice = is_notice(config, row.procedure, reminder.rule)
    if not row.patient.email or (row.status == models.ENROLMENT_CANCELLED and not notice):
        return None
    if now >= reminder.expires_at:
        return None
    live = ("scheduled", "queued", "sending", "sent")
    if any(r.rule == reminder.rule and r.channel == "email" and r.state in live
           for r in row.reminders):  # fmt: skip
        return None
    facts = facts_of(config, row, change=change_of(reminder))
    planned = PlannedReminder(
        rule=reminder.rule, channel="email", send_at=now, deadline=reminder.deadline,
        expires=reminder.expires_at, template=reminder.template,
        safety_critical=reminder.safety_critical, is_correction=reminder.is_correction,
    )  # fmt: skip
    fallback = models.Reminder(
        **reminder_values(config, Schedule(facts), planned, row.schedule_version)
    )
    row.reminders.append(fallback)
    return fallback
