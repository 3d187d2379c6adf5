"""Protocols as data: what a procedure's rules, the unit and the medicines list may say.

The files themselves are read by `core/protocol_files.py`; the format is documented in
`docs/protocols.md`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time, timedelta
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from reminders.core.clock import SendingWindow, parse_sending_window
from reminders.core.errors import ConfigError
from reminders.core.parsers import parse_clock, parse_timezone

M = TypeVar("M", bound=BaseModel)

CHANNELS = ("sms", "email")
Channel = Literal["sms", "email"]

# Where a rule's time is measured from (docs/protocols.md has the table). `procedure`, `arrival`
# and `booking` come from the enrolment; the others are worked out from it (the procedure's end,
# the blood-thinner plan, the fasting times), so a rule can say "the evening of the last dose"
# without arithmetic in the YAML; `changed` is the moment a booking was moved or cancelled.
Anchor = Literal[
    "procedure", "end", "arrival", "booking", "last-dose", "restart", "food-stop",
    "liquids-stop", "changed",
]  # fmt: skip

Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

ANAESTHESIA = ("local", "sedation", "general")
Anaesthesia = Literal["local", "sedation", "general"]

# The facts about an enrolment that a rule's `when` may test, with the values each can take.
CONDITION_FACTS: dict[str, tuple[object, ...]] = {
    "anaesthesia": ANAESTHESIA,
    # true under sedation or a general anaesthetic: fasting and the after-effects advice.
    "sedation": (True, False),
    # none: no blood thinner recorded; unplanned: a drug but no clinician's plan;
    # hold: the clinician says stop it for N > 0 days; continue: the clinician says keep taking
    # it; replan: the patient was told to stop under a plan a booking change has withdrawn, and
    # a clinician must make a new one.
    "anticoagulant": ("none", "unplanned", "hold", "continue", "replan"),
    "arrival": (True, False),
    "joint": ("knee", "hip", "shoulder", "none"),
}
# What changed, for the notices (phase: notice) a booking change sends.
EVENTS = ("moved", "cancelled")

_OFFSET = re.compile(r"^([+-]?)(\d{1,4})([wdhm])$")
_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Offset:
    """A signed distance from an anchor.

    Weeks and days are calendar steps on the local date, so "-2d at 18:00" is 18:00 on the wall
    clock even across a clock change. Hours and minutes are elapsed time, because "no food for
    6 hours" means six real hours.
    """

    amount: int
    unit: Literal["w", "d", "h", "m"]

    @property
    def is_calendar(self) -> bool:
        return self.unit in ("w", "d")

    @property
    def days(self) -> int:
        return self.amount * (7 if self.unit == "w" else 1)

    @property
    def elapsed(self) -> timedelta:
        return timedelta(hours=self.amount) if self.unit == "h" else timedelta(minutes=self.amount)

    @classmethod
    def parse(cls, value: object) -> Offset:
        text = str(value).strip()
        match = _OFFSET.match(text)
        if not match:
            raise ValueError(
                f"offset {value!r} is not understood; write a signed number and a unit: "
                "-2d (days), +6w (weeks), -6h (hours), -30m (minutes)"
            )
        sign, number, unit = match.groups()
        amount = -int(number) if sign == "-" else int(number)
        return cls(amount, unit)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.amount:+d}{self.unit}"


def _parse_clock(value: object) -> time:
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 18:00 as the sexagesimal number 1080.
        hours, minutes = divmod(value, 60)
        if 0 <= hours < 24:
            return time(hours, minutes)
    return parse_clock(str(value))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Moment(_Strict):
    """A point in time relative to an anchor, optionally pinned to a local clock time."""

    anchor: Anchor = "procedure"
    offset: Offset = Offset(0, "d")
    at: time | None = None

    @field_validator("offset", mode="before")
    @classmethod
    def _offset(cls, value: object) -> Offset:
        return value if isinstance(value, Offset) else Offset.parse(value)

    @field_validator("at", mode="before")
    @classmethod
    def _at(cls, value: object) -> time | None:
        return None if value is None or isinstance(value, time) else _parse_clock(value)

    def model_post_init(self, __context: Any) -> None:
        if self.at is not None and not self.offset.is_calendar:
            raise ValueError(
                f"'at' needs an offset in days or weeks (got {self.offset}); "
                "'6 hours before at 18:00' has no single meaning"
            )


class Rule(_Strict):
    id: Annotated[str, Field(pattern=_SLUG.pattern, max_length=64)]
    title: Annotated[str, Field(min_length=3)]  # for staff: what this reminder is for
    # Before-procedure reminders never land after the procedure starts; after-procedure ones
    # never before it ends. Notices go when a booking changes (`event`), not on a timetable.
    phase: Literal["before", "after", "notice"]
    # Notices only: the change that sends it. (Not `on`: YAML reads a bare `on` as true.)
    event: Literal["moved", "cancelled"] | None = None
    send: Moment
    template: Annotated[str, Field(pattern=_SLUG.pattern)]
    channels: tuple[Channel, ...] = ("sms", "email")
    when: dict[str, Any] = Field(default_factory=dict)
    # What to do when the send time has already passed at enrolment:
    #   skip: leave it out; send-now: send at once while it is still worth sending;
    #   warn: leave it out and tell staff at once.
    late: Literal["skip", "send-now", "warn"] = "skip"
    # What to do when the send time falls outside the sending window:
    #   later: the next opening, unless that misses the deadline, then the previous closing;
    #   earlier: the previous closing; drop: leave it out; send: send at night regardless.
    quiet_hours: Literal["later", "earlier", "drop", "send"] = "later"
    deadline: Moment | None = None  # must reach the patient by; defaults to `expires`
    expires: Moment | None = None  # worthless after; defaults to the procedure start for
    # before-procedure rules, one day after the planned send time for after-procedure ones
    safety_critical: bool = False  # a medication or fasting instruction: escalate if undelivered
    correction: Annotated[str, Field(pattern=_SLUG.pattern)] | None = None
    requires: tuple[str, ...] = ()  # rule ids that must also be scheduled for this one to be
    # Checked as it is about to go: one of these rules' messages must have reached the patient
    # (a restart reminder for someone never told to stop would be wrong).
    only_if_sent: tuple[str, ...] = ()

    @field_validator("channels", mode="before")
    @classmethod
    def _channels(cls, value: object) -> object:
        if isinstance(value, list) and not value:
            raise ValueError("a rule needs at least one channel: sms, email or both")
        return value

    @property
    def templates(self) -> tuple[str, ...]:
        return (self.template,) if self.correction is None else (self.template, self.correction)


class Fasting(_Strict):
    food_hours: Annotated[int, Field(ge=0, le=24)]
    liquids_hours: Annotated[int, Field(ge=0, le=24)]


class BloodThinners(_Strict):
    """What a procedure's leaflet says about blood thinners. The hold itself is always the
    clinician's, recorded on the enrolment; these only check it and add the leaflet's lines."""

    # A recorded hold shorter than this needs a reason from the clinician (an override).
    minimum_hold_days: Annotated[int, Field(ge=1, le=60)] | None = None
    aspirin_as_normal: bool = False  # "aspirin can be taken as normal"
    # Medicines (by the name in config/medicines.yaml) after which a clotting blood test is
    # done before the procedure.
    clotting_test_for: tuple[str, ...] = ()


class Protocol(_Strict):
    procedure: Annotated[str, Field(pattern=_SLUG.pattern)]
    name: Annotated[str, Field(min_length=3)]  # as staff and emails name it
    # What a patient has unless the enrolment says otherwise; the words name it.
    anaesthesia: Anaesthesia = "local"
    # How long the procedure itself takes: its end anchors after-care ("bed rest is over").
    duration: Offset = Offset(0, "m")
    joints: tuple[Literal["knee", "hip", "shoulder"], ...] = ()
    fasting: Fasting | None = None
    blood_thinners: BloodThinners = BloodThinners()
    # The symptoms the leaflet says need help at once, as a phrase for after-care messages:
    # "new weakness or numbness in your legs, a fever, or a red or leaking wound".
    red_flags: Annotated[str, Field(min_length=10)] | None = None
    # Shared rule files (config/protocols/shared/NAME.yaml) whose rules this protocol has too.
    include: tuple[str, ...] = ()
    rules: Annotated[tuple[Rule, ...], Field(min_length=1)]

    @model_validator(mode="before")
    @classmethod
    def _sedation_default(cls, data: Any) -> Any:
        # The older `sedation_default: true` means sedation, `false` a local anaesthetic.
        if isinstance(data, dict) and "sedation_default" in data:
            data = dict(data)
            sedated = data.pop("sedation_default")
            data.setdefault("anaesthesia", "sedation" if sedated else "local")
        return data

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, value: object) -> Offset:
        offset = value if isinstance(value, Offset) else Offset.parse(value)
        if offset.is_calendar or offset.amount < 0:
            raise ValueError(f"give hours or minutes, such as 1h or 45m (got {value})")
        return offset

    @model_validator(mode="after")
    def _red_flags_for_after_care(self) -> Protocol:
        # Hazard H9: every after-care message says what to do about the leaflet's warning
        # signs, so a procedure with after-care must name them.
        if self.red_flags is None and any(rule.phase == "after" for rule in self.rules):
            raise ValueError(
                "field 'red_flags': a procedure with after-care must list its leaflet's warning "
                "signs (such as: a fever, or a red or leaking wound)"
            )
        return self

    def rule(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)


class Address(_Strict):
    lines: Annotated[tuple[str, ...], Field(min_length=1)]
    postcode: str


class Unit(_Strict):
    """The sending unit, from `config/unit.yaml`."""

    name: Annotated[str, Field(min_length=3)]
    hospital: str
    phone: str
    email: str | None = None
    opening_hours: str  # as patients read it: "Monday to Friday, 8:30am to 5pm"
    address: Address
    timezone: str = "Europe/London"
    sending_window: SendingWindow = SendingWindow(time(8), time(20))
    bank_holidays: Literal["england-and-wales", "scotland", "northern-ireland"]
    # When GP surgeries are normally open on weekdays, to point patients to NHS 111 otherwise.
    gp_hours: SendingWindow = SendingWindow(time(8), time(18, 30))
    # When someone answers the unit's phone (bank holidays of `bank_holidays` are shut): a
    # message asking the patient to call says when, if it goes while the unit is shut.
    open_days: tuple[Weekday, ...] = ("monday", "tuesday", "wednesday", "thursday", "friday")
    open_hours: SendingWindow = SendingWindow(time(8, 30), time(17))
    # When a safety-critical correction that cannot wait for the sending window may still go
    # (it goes on the call list as well): later than a reminder, never in the small hours.
    urgent_window: SendingWindow = SendingWindow(time(7), time(22))

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        # Kept as its name, for the templates; checked here so that a typo stops `reminders
        # check` and start-up, not the first staff page that shows a time.
        parse_timezone(value)
        return value

    @field_validator("sending_window", "gp_hours", "open_hours", "urgent_window", mode="before")
    @classmethod
    def _window(cls, value: object) -> SendingWindow:
        if isinstance(value, SendingWindow):
            return value
        try:
            return parse_sending_window(str(value), source="this field")
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("this field: ")) from None
