"""A patient's whole timeline, rendered: what `reminders preview` prints."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reminders.config import Config
from reminders.core.clock import format_clock, format_day, iso_local
from reminders.core.enrolment import Enrolment
from reminders.core.facts import History, Told, facts_for
from reminders.core.rendering import Message
from reminders.core.schedule import PlannedReminder, Schedule, compute_schedule
from reminders.services.enrolments import writable


@dataclass(frozen=True)
class PreviewItem:
    reminder: PlannedReminder
    message: Message


@dataclass(frozen=True)
class Preview:
    schedule: Schedule
    items: list[PreviewItem]

    @property
    def warnings(self) -> list[str]:
        """For staff: warnings, then what needs a phone call."""
        return [*self.schedule.warnings, *self.schedule.calls]

    def as_json(self) -> dict[str, Any]:
        facts = self.schedule.facts
        reminders = []
        for item in self.items:
            entry: dict[str, Any] = {
                "rule": item.reminder.rule,
                "channel": item.reminder.channel,
                "send_at": iso_local(item.reminder.send_at, facts.zone),
                "body": item.message.body,
            }
            if item.message.subject is not None:
                entry["subject"] = item.message.subject
            reminders.append(entry)
        return {
            "procedure": facts.protocol.procedure,
            "starts_at": iso_local(facts.starts_at, facts.zone),
            "reminders": reminders,
            "warnings": list(self.warnings),
        }

    def as_text(self) -> str:
        facts = self.schedule.facts
        start = facts.starts_at.astimezone(facts.zone)
        lines = [
            f"{facts.protocol.name}: {format_day(start.date())} {start.year} at "
            f"{format_clock(start.time())} ({facts.zone.key})",
            f"{len(self.items)} reminders",
            "",
        ]
        for item in self.items:
            local = item.reminder.send_at.astimezone(facts.zone)
            when = f"{format_day(local.date())}, {format_clock(local.time())}"
            lines.append(f"{when}  {item.reminder.rule}  [{item.reminder.channel}]")
            if item.message.subject:
                lines.append(f"    Subject: {item.message.subject}")
            lines.extend(f"    {line}" if line else "" for line in item.message.body.splitlines())
            lines.append("")
        lines.extend(f"Warning: {warning}" for warning in self.warnings)
        return "\n".join(lines).rstrip() + "\n"


def preview(config: Config, enrolment: Enrolment, now: datetime) -> Preview:
    """Every message the patient would get, as it would read when it goes: each written as if
    the ones before it had reached the patient (a restart follows the stop instruction).
    Raises EnrolmentRefused for a message that cannot be written."""
    protocol = config.protocols[enrolment.procedure]
    schedule = compute_schedule(
        protocol, enrolment, now, config.window, medicines=config.medicines, unit=config.unit,
        unit_zone=config.zone,
    )  # fmt: skip
    items = []
    told: list[Told] = []
    for reminder in schedule.reminders:
        facts = facts_for(
            protocol, enrolment, enrolment.enrolled_at or now, history=History(tuple(told)),
            medicines=config.medicines, unit_zone=config.zone,
        )  # fmt: skip
        with writable():  # refused as enrolling it would be
            items.append(PreviewItem(reminder, config.renderer.render(reminder, facts)))
        told.append(Told(reminder.rule, reminder.channel, reminder.send_at, None))
    return Preview(schedule, items)
