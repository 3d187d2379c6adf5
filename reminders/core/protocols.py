"""Protocols as data: load and validate `config/protocols/*.yaml` and `config/unit.yaml`.

Clinicians edit these files, so every error names the file, the rule and the field, in words a
clinician can act on (``sacroplasty.yaml: rule 'fast-evening': unknown template 'fastng'``).
The format itself is documented in `docs/protocols.md`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reminders.core.clock import SendingWindow, parse_sending_window
from reminders.core.errors import ConfigError
from reminders.core.parsers import parse_clock, parse_timezone

M = TypeVar("M", bound=BaseModel)

CHANNELS = ("sms", "email")
Channel = Literal["sms", "email"]

# Where a rule's time is measured from. `procedure`, `arrival` and `booking` come from the
# enrolment; the others are worked out from it (the blood-thinner plan, the fasting times), so a
# rule can say "the evening of the last dose" without arithmetic in the YAML.
ANCHORS = (
    "procedure",  # the procedure's start
    "arrival",  # the arrival time, or the procedure's start when none was given
    "booking",  # the moment the patient was enrolled
    "last-dose",  # 00:00 on the day of the last dose before a hold
    "restart",  # 00:00 on the day the blood thinner may be restarted
    "food-stop",  # the time after which the patient must not eat
    "liquids-stop",  # the time after which the patient must not drink
)
Anchor = Literal[
    "procedure", "arrival", "booking", "last-dose", "restart", "food-stop", "liquids-stop"
]

# The facts about an enrolment that a rule's `when` may test, with the values each can take.
CONDITION_FACTS: dict[str, tuple[object, ...]] = {
    "sedation": (True, False),
    # none: no blood thinner recorded; unplanned: a drug but no clinician's plan;
    # hold: the clinician says stop it for N > 0 days; continue: the clinician says keep taking it.
    "anticoagulant": ("none", "unplanned", "hold", "continue"),
    "arrival": (True, False),
    "joint": ("knee", "hip", "shoulder", "none"),
}

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
    # never before it.
    phase: Literal["before", "after"]
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


class Protocol(_Strict):
    procedure: Annotated[str, Field(pattern=_SLUG.pattern)]
    name: Annotated[str, Field(min_length=3)]  # as staff and emails name it
    sedation_default: bool = False
    joints: tuple[Literal["knee", "hip", "shoulder"], ...] = ()
    fasting: Fasting | None = None
    rules: Annotated[tuple[Rule, ...], Field(min_length=1)]

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

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        # Kept as its name, for the templates; checked here so that a typo stops `reminders
        # check` and start-up, not the first staff page that shows a time.
        parse_timezone(value)
        return value

    @field_validator("sending_window", "gp_hours", mode="before")
    @classmethod
    def _window(cls, value: object) -> SendingWindow:
        if isinstance(value, SendingWindow):
            return value
        try:
            return parse_sending_window(str(value), source="this field")
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("this field: ")) from None


# --- loading -----------------------------------------------------------------------------------


def _read_yaml(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path.name}{where}: not valid YAML: {exc}") from None


def _describe(error: Mapping[str, Any], data: object) -> str:
    """Turn one pydantic error into "rule 'x': field 'y': what is wrong"."""
    loc = list(error["loc"])
    parts: list[str] = []
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rule_id = None
        if isinstance(data, dict) and isinstance(data.get("rules"), list):
            rules = data["rules"]
            if loc[1] < len(rules) and isinstance(rules[loc[1]], dict):
                rule_id = rules[loc[1]].get("id")
        parts.append(f"rule '{rule_id}'" if rule_id else f"rule number {loc[1] + 1}")
        loc = loc[2:]
    field = ".".join(str(p) for p in loc if not str(p).startswith("function-"))
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field; check the spelling against docs/protocols.md"
    elif error["type"] == "missing":
        message = "required but missing"
    elif error["type"] == "literal_error":
        message = f"{message} (got {error['input']!r})"
    if field:
        parts.append(f"field '{field}'")
    parts.append(message)
    return ": ".join(parts)


def _validated(model: type[M], data: object, filename: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [f"{filename}: {_describe(e, data)}" for e in exc.errors()]
        raise ConfigError("\n".join(problems)) from None


def _check_rules(protocol: Protocol, filename: str, templates: Iterable[str] | None) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    known_templates = None if templates is None else set(templates)
    for rule in protocol.rules:
        where = f"{filename}: rule '{rule.id}'"
        if rule.id in seen:
            problems.append(f"{where}: the id is used twice in this file")
        seen.add(rule.id)
        for name in rule.templates:
            if known_templates is not None and name not in known_templates:
                problems.append(f"{where}: unknown template '{name}'")
        for fact, wanted in rule.when.items():
            if fact not in CONDITION_FACTS:
                known = ", ".join(CONDITION_FACTS)
                problems.append(f"{where}: field 'when': unknown field '{fact}' (known: {known})")
                continue
            allowed = CONDITION_FACTS[fact]
            for value in wanted if isinstance(wanted, list) else [wanted]:
                if value not in allowed:
                    choices = ", ".join(str(a).lower() for a in allowed)
                    problems.append(
                        f"{where}: field 'when.{fact}': {value!r} is not one of {choices}"
                    )
        uses_fasting = any(
            m is not None and m.anchor in ("food-stop", "liquids-stop")
            for m in (rule.send, rule.deadline, rule.expires)
        )
        if uses_fasting and protocol.fasting is None:
            problems.append(f"{where}: uses a fasting anchor but the protocol has no 'fasting'")
    for rule in protocol.rules:
        for required in rule.requires:
            if required not in seen:
                problems.append(f"{filename}: rule '{rule.id}': requires unknown rule '{required}'")
    return problems


def load_protocol(path: Path, *, templates: Iterable[str] | None = None) -> Protocol:
    """Load one protocol file; `templates` (names available in `templates/`) enables that check."""
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name}: expected a mapping with 'procedure', 'name' and 'rules'")
    protocol = _validated(Protocol, data, path.name)
    problems = _check_rules(protocol, path.name, templates)
    if protocol.procedure != path.stem:
        problems.append(
            f"{path.name}: 'procedure' is '{protocol.procedure}' but the file is named "
            f"'{path.name}'; they must match"
        )
    if problems:
        raise ConfigError("\n".join(problems))
    return protocol


def load_protocols(
    directory: Path, *, templates: Iterable[str] | None = None
) -> dict[str, Protocol]:
    """Every protocol under `directory`, by slug; all problems are reported together."""
    names = None if templates is None else list(templates)
    protocols: dict[str, Protocol] = {}
    problems: list[str] = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            protocol = load_protocol(path, templates=names)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        protocols[protocol.procedure] = protocol
    if problems:
        raise ConfigError("\n".join(problems))
    if not protocols:
        raise ConfigError(f"{directory}: no protocol files (*.yaml) found")
    return protocols


def load_unit(path: Path) -> Unit:
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name}: expected a mapping with the unit's name, phone and hours")
    return _validated(Unit, data, path.name)
