"""The appointment as an iCalendar (.ics) attachment, so patients can put it in their diary."""

from __future__ import annotations

from datetime import datetime, timedelta

from icalendar import Calendar, Event

from reminders.core.protocols import Unit

DURATION = timedelta(hours=1)


def appointment(
    *, enrolment_id: int, version: int, starts_at: datetime, unit: Unit, now: datetime,
    arrival: datetime | None = None, cancelled: bool = False,
) -> bytes:  # fmt: skip
    """One event; its UID is stable per enrolment and SEQUENCE is the schedule version, so a
    calendar that already has the appointment moves it on a reschedule instead of adding one,
    and removes it when it is cancelled (METHOD:CANCEL, RFC 5546). It starts when the patient
    must arrive, which is what their diary is for."""
    calendar = Calendar()
    calendar.add("prodid", "-//reminders//procedure reminders//EN")
    calendar.add("version", "2.0")
    calendar.add("method", "CANCEL" if cancelled else "REQUEST")
    event = Event()
    event.add("uid", f"enrolment-{enrolment_id}@reminders")
    # A cancellation must outrank every version the calendar may hold.
    event.add("sequence", version + 1 if cancelled else version)
    event.add("dtstamp", now)
    begins = arrival or starts_at
    event.add("dtstart", begins)
    event.add("dtend", starts_at + DURATION)
    if unit.email:
        event.add("organizer", f"mailto:{unit.email}", parameters={"CN": unit.name})
    if cancelled:
        event.add("status", "CANCELLED")
    event.add("summary", f"Appointment: {unit.name}")
    event.add("location", ", ".join([*unit.address.lines, unit.address.postcode]))
    event.add("description", f"{unit.name}, {unit.hospital}. Phone {unit.phone}.")
    calendar.add_component(event)
    return bytes(calendar.to_ical())
