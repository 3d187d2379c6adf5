"""What the rules and templates know about one enrolment, worked out once: its times in the
patient's zone, the anaesthetic, the blood-thinner plan, and what the patient has been told so
far (`History`), which is what changes are judged against: a moved or cancelled booking is
safe or not depending on what the patient already holds, not on the plan alone."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from reminders.core.clock import localize
from reminders.core.enrolment import Enrolment
from reminders.core.medicines import NO_MEDICINES, Medicines
from reminders.core.protocols import Moment, Protocol, Rule

# The UK's zones (and their old names): a patient in any of them is at home to a UK unit.
UK_ZONES = frozenset(
    {"Europe/London", "Europe/Belfast", "Europe/Guernsey", "Europe/Isle_of_Man", "Europe/Jersey",
     "GB", "GB-Eire"}
)  # fmt: skip


@dataclass(frozen=True)
class Told:
    """A message that reached the patient: sent, and not reported back as undelivered."""

    rule: str
    channel: str
    at: datetime
    fingerprint: str | None  # the values it showed (`Renderer.fingerprint`)


@dataclass(frozen=True)
class History:
    """Every message of an enrolment that reached the patient, oldest first."""

    told: tuple[Told, ...] = ()

    def has(self, rules: Iterable[str]) -> bool:
        wanted = set(rules)
        return any(told.rule in wanted for told in self.told)

    def last(self, rules: Iterable[str]) -> Told | None:
        wanted = set(rules)
        return next((told for told in reversed(self.told) if told.rule in wanted), None)


@dataclass(frozen=True)
class Change:
    """A booking change the patient must hear about: the procedure moved, or cancelled."""

    event: str  # moved or cancelled
    at: datetime
    previous_start: datetime | None = None  # moved: the start it had before, in UTC


@dataclass(frozen=True)
class Facts:
    protocol: Protocol
    enrolment: Enrolment
    zone: ZoneInfo
    starts_at: datetime
    anchors: dict[str, datetime]
    anaesthesia: str  # local, sedation or general
    anticoagulant: str  # none, unplanned, hold, continue or replan (CONDITION_FACTS)
    medicine: str | None  # the drug recorded, as the medicines list names it; None if unknown
    medicines_known: bool  # whether the unit keeps a medicines list to know it by
    history: History = field(default_factory=History)
    change: Change | None = None
    # The unit's zone, whose clock the procedure's date and time are on; `zone` is the
    # patient's, whose clock their messages keep and show.
    unit_zone: ZoneInfo | None = None

    @property
    def away(self) -> bool:
        """Whether the patient's zone is not the unit's: their times are labelled, and advice
        that only works where the unit is (NHS 111, 999) is not given."""
        if self.unit_zone is None or self.unit_zone.key == self.zone.key:
            return False
        return not {self.unit_zone.key, self.zone.key} <= UK_ZONES

    @property
    def sedation(self) -> bool:
        """Sedation or a general anaesthetic: fasting before, the after-effects after."""
        return self.anaesthesia != "local"

    @property
    def told_to_stop(self) -> bool:
        """Whether a message telling the patient to stop the blood thinner reached them."""
        return self.history.has(hold_rules(self.protocol))

    @property
    def conditions(self) -> dict[str, object]:
        return {
            "anaesthesia": self.anaesthesia,
            "sedation": self.sedation,
            "anticoagulant": self.anticoagulant,
            "arrival": self.enrolment.arrival is not None,
            "joint": self.enrolment.joint or "none",
        }

    @property
    def ends_at(self) -> datetime:
        return self.anchors["end"]

    @property
    def first_skip_day(self) -> date | None:
        """The first day without a dose under the recorded hold plan."""
        last_dose = self.anchors.get("last-dose")
        return None if last_dose is None else last_dose.astimezone(self.zone).date() + timedelta(1)

    def resolve(self, moment: Moment) -> datetime | None:
        """The instant `moment` names, in UTC; None when its anchor does not apply."""
        anchor = self.anchors.get(moment.anchor)
        if anchor is None:
            return None
        if not moment.offset.is_calendar:
            # In UTC: arithmetic on a zoned datetime moves the wall clock, not elapsed time.
            return anchor.astimezone(UTC) + moment.offset.elapsed
        local = anchor.astimezone(self.zone)
        day = local.date() + timedelta(days=moment.offset.days)
        if moment.at is not None:
            return localize(day, moment.at, self.zone).astimezone(UTC)
        # The anchor's own wall time: keep which of a repeated hour's two it was.
        return localize(day, local.time(), self.zone, fold=local.fold).astimezone(UTC)


def hold_rules(protocol: Protocol) -> list[str]:
    """The rules that tell a patient to stop a blood thinner (those for a hold plan)."""
    return [rule.id for rule in protocol.rules if _when(rule, "anticoagulant") == "hold"]


def _when(rule: Rule, fact: str) -> object:
    return rule.when.get(fact)


def anticoagulant_status(enrolment: Enrolment, history_told_to_stop: bool = False) -> str:
    if not enrolment.anticoagulant:
        return "none"
    if enrolment.anticoagulant_hold_days is None:
        # A drug with no plan: for a patient already told to stop under a plan since
        # withdrawn, "do not stop it on your own" would contradict what they were told.
        return "replan" if history_told_to_stop else "unplanned"
    return "hold" if enrolment.anticoagulant_hold_days > 0 else "continue"


def anaesthesia_of(protocol: Protocol, enrolment: Enrolment) -> str:
    chosen = getattr(enrolment, "anaesthesia", None)
    if chosen:
        return str(chosen)
    if enrolment.sedation is not None:
        return "sedation" if enrolment.sedation else "local"
    return protocol.anaesthesia


def facts_for(
    protocol: Protocol,
    enrolment: Enrolment,
    booked_at: datetime,
    *,
    history: History | None = None,
    medicines: Medicines = NO_MEDICINES,
    change: Change | None = None,
    unit_zone: ZoneInfo | None = None,
) -> Facts:
    """`unit_zone`: the clock the procedure's date and time are on, when it is not the
    patient's (`enrolment.timezone`)."""
    history = history or History()
    zone = enrolment.timezone
    clock = unit_zone or zone
    starts_at = localize(enrolment.date, enrolment.time, clock).astimezone(zone)
    arrival = (
        localize(enrolment.date, enrolment.arrival, clock).astimezone(zone)
        if enrolment.arrival else starts_at
    )  # fmt: skip
    anaesthesia = anaesthesia_of(protocol, enrolment)
    told = history.has(hold_rules(protocol))
    status = anticoagulant_status(enrolment, told)
    anchors = {
        "procedure": starts_at,
        # Elapsed time: a procedure that takes an hour ends an hour later, clock change or not.
        "end": (starts_at.astimezone(UTC) + protocol.duration.elapsed).astimezone(zone),
        "arrival": arrival,
        "booking": booked_at.astimezone(zone),
    }
    if change is not None:
        anchors["changed"] = change.at.astimezone(zone)
    if status == "hold":
        hold = enrolment.anticoagulant_hold_days or 0
        # "Hold N days" means N whole days without a dose before the procedure day, so the last
        # dose is on day -(N+1): a 5-day warfarin hold for a Thursday ends with Friday's dose.
        last_dose = enrolment.date - timedelta(days=hold + 1)
        anchors["last-dose"] = localize(last_dose, time(0), zone)
        if enrolment.anticoagulant_restart_days is not None:
            restart = enrolment.date + timedelta(days=enrolment.anticoagulant_restart_days)
            anchors["restart"] = localize(restart, time(0), zone)
    if anaesthesia != "local" and protocol.fasting is not None:
        # Elapsed hours, counted back from arrival: that is when the patient must be fasted.
        arrival_utc = arrival.astimezone(UTC)
        anchors["food-stop"] = arrival_utc - timedelta(hours=protocol.fasting.food_hours)
        anchors["liquids-stop"] = arrival_utc - timedelta(hours=protocol.fasting.liquids_hours)
    medicine = medicines.medicine(enrolment.anticoagulant) if enrolment.anticoagulant else None
    return Facts(
        protocol, enrolment, zone, starts_at, anchors, anaesthesia, status, medicine,
        bool(medicines.names), history, change, unit_zone,
    )  # fmt: skip
