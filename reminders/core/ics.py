"""The appointment as an iCalendar (.ics) attachment, so patients can put it in their diary."""

from __future__ import annotations

from datetime import datetime, timedelta

from icalendar import Calendar, Event

from reminders.core.protocols import Unit

DURATION = timedelta(hours=1)


def appointment(
    *, enrolment_id: int, version: int, starts_at: datetime, unit: Unit, now: datetime
) -> bytes:
    """One event; its UID is stable per enrolment and SEQUENCE is the schedule version, so a
    calendar that already has the appointment moves it on a reschedule instead of adding one."""
    calendar = Calendar()
    calendar.add("prodid", "-//reminders//procedure reminders//EN")
    calendar.add("version", "2.0")
    calendar.add("method", "PUBLISH")
    event = Event()
    event.add("uid", f"enrolment-{enrolment_id}@reminders")
    event.add("sequence", version)
    event.add("dtstamp", now)
    event.add("dtstart", starts_at)
    event.add("dtend", starts_at + DURATION)
    event.add("summary", f"Appointment: {unit.name}")
    event.add("location", ", ".join([*unit.address.lines, unit.address.postcode]))
    event.add("description", f"{unit.name}, {unit.hospital}. Phone {unit.phone}.")
    calendar.add_component(event)
    return bytes(calendar.to_ical())
