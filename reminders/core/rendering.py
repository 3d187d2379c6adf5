"""Templates to message text: a Jinja2 sandbox, per channel and language, with values already
formatted in British English.

Layout: `templates/<language>/<template>/{sms.txt, subject.txt, email.txt, email.html}`, with
`_footer.txt` and `_layout.html` beside them for every email. A language without a template falls
back to its base language, then to en-GB.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers
from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound, meta
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from reminders.core import sms
from reminders.core.clock import format_clock, format_day, format_moment
from reminders.core.facts import UK_ZONES, Facts
from reminders.core.hours import call_us, gp_open, unit_open
from reminders.core.protocols import Unit
from reminders.core.schedule import PlannedReminder

DEFAULT_LANGUAGE = "en-GB"
SMS_PART = "sms.txt"
EMAIL_PARTS = ("subject.txt", "email.txt", "email.html")
PARTS = {"sms": (SMS_PART,), "email": EMAIL_PARTS}
# Values that are not the instruction itself (the moment of sending, how the patient is
# addressed): a correction is owed when anything else a template shows has changed.
_VOLATILE = frozenset(
    {"send_day", "gp_open", "unit_open", "call_us", "same_day", "procedure_when", "unit",
     "name", "first_name", "restart_when", "may_have_stopped", "unit_phone", "zone_label",
     "in_uk", "out_of_hours", "emergency"}
)  # fmt: skip
_SUBDIVISIONS = {"england-and-wales": "ENG", "scotland": "SCT", "northern-ireland": "NIR"}


ANAESTHETIC = {
    "local": "a local anaesthetic",
    "sedation": "sedation",
    "general": "a general anaesthetic",
}


def zone_name(zone: ZoneInfo) -> str:
    """A zone as a patient names it: `New York` for America/New_York."""
    return zone.key.rsplit("/", 1)[-1].replace("_", " ")


def international(phone: str) -> str:
    """The unit's number as dialled from abroad (`+44 20 7946 0000`), if it can be read."""
    try:
        number = phonenumbers.parse(phone, "GB")
    except phonenumbers.NumberParseException:
        return phone
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


class RenderError(ValueError):
    """A template cannot produce a message; the text says which template and why."""


class TooLong(RenderError):
    """A text over the segment limit: the template's own fault, or a patient's long name."""

    def __init__(self, message: str, segments: int) -> None:
        super().__init__(message)
        self.segments = segments


@dataclass(frozen=True)
class Message:
    channel: str
    body: str  # SMS text, or the email's plain-text part
    subject: str | None
    html: str | None
    template_version: str
    language: str  # the language of the templates actually used
    segments: int | None  # SMS only


def template_context(
    facts: Facts, send_at: datetime, unit: Unit, shared: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Everything a template may use (docs/protocols.md lists it), present only where it
    applies, so StrictUndefined catches a template that uses a value its rule cannot have.
    `shared` is `enrolment_context(facts, unit)`, when the caller writes several messages of
    one enrolment: working it out for each was a good part of a big import's time."""
    context = dict(enrolment_context(facts, unit) if shared is None else shared)
    zone = facts.zone
    sent = send_at.astimezone(zone)
    context["send_day"] = format_day(sent.date())
    context["gp_open"] = gp_open(send_at, unit)
    context["unit_open"] = unit_open(send_at, unit)
    # "Call us" said with when, if the message goes while no one answers.
    context["call_us"] = call_us(
        send_at, unit, zone, phone=context["unit_phone"], label=context["zone_label"]
    )
    procedure_day = facts.starts_at.astimezone(zone).date()
    context["same_day"] = sent.date() == procedure_day
    days = (sent.date() - procedure_day).days
    context["procedure_when"] = (
        "today" if days == 0 else "yesterday" if days == 1 else f"on {format_day(procedure_day)}"
    )
    restart = facts.anchors.get("restart")
    if restart is not None:
        # When to restart, as the patient reads it on the day this message goes.
        day = restart.astimezone(zone).date()
        if day == sent.date():
            same = facts.enrolment.anticoagulant_restart_days == 0
            context["restart_when"] = "this evening" if same else "today"
        else:
            context["restart_when"] = "now" if day < sent.date() else f"on {format_day(day)}"
    first_skip = facts.first_skip_day
    # Told to stop the blood thinner, or due to have stopped by now under the plan.
    context["may_have_stopped"] = facts.told_to_stop or (
        first_skip is not None and first_skip <= sent.date()
    )
    return context


def enrolment_context(facts: Facts, unit: Unit) -> dict[str, Any]:
    """What `template_context` gives for every message of an enrolment, whenever it is sent."""
    enrolment, zone = facts.enrolment, facts.zone
    start = facts.starts_at.astimezone(zone)
    arrival = facts.anchors["arrival"].astimezone(zone)
    # A patient away from the unit's zone reads every time on their own clock, labelled, the
    # unit's number as dialled from abroad, and no advice that only works in the UK.
    label = f" ({zone_name(zone)} time)" if facts.away else ""
    in_uk = not facts.away or zone.key in UK_ZONES  # the unit is the NHS's
    context: dict[str, Any] = {
        "zone_label": label,
        "in_uk": in_uk,
        "out_of_hours": "NHS 111" if in_uk else "a local doctor",
        "emergency": "999" if in_uk else "local emergency services",
        "unit_phone": international(unit.phone) if facts.away else unit.phone,
        "name": enrolment.name,
        "first_name": enrolment.name.split()[0],
        "procedure_name": facts.protocol.name,
        "procedure_day": format_day(start.date()),
        "procedure_time": format_clock(start.time()) + label,
        "arrival_day": format_day(arrival.date()),
        "arrival_time": format_clock(arrival.time()) + label,
        "has_arrival": enrolment.arrival is not None,
        "anaesthesia": facts.anaesthesia,
        "anaesthetic": ANAESTHETIC[facts.anaesthesia],
        "sedation": facts.sedation,
        "unit": unit,
        "blood_thinner": facts.anticoagulant,
        "told_to_stop": facts.told_to_stop,
    }
    if facts.sedation:
        # The after-effects last 24 hours from the end: an after-care message sent sooner
        # must not say "normal activities today".
        ends = facts.ends_at + timedelta(hours=24)
        context["after_effects_until"] = format_moment(ends, zone) + label
    if facts.protocol.red_flags:
        context["red_flags"] = facts.protocol.red_flags
    if facts.change is not None and facts.change.previous_start is not None:
        before = facts.change.previous_start.astimezone(zone)
        context["previous_day"] = format_day(before.date())
        context["previous_time"] = format_clock(before.time()) + label
    if enrolment.joint:
        context["joint"] = enrolment.joint
    if facts.anticoagulant != "none":
        context["drug"] = enrolment.anticoagulant
        leaflet = facts.protocol.blood_thinners
        context["medicine"] = facts.medicine or ""
        context["aspirin_as_normal"] = leaflet.aspirin_as_normal and facts.medicine != "aspirin"
        context["clotting_test"] = facts.medicine in leaflet.clotting_test_for
    if "last-dose" in facts.anchors:
        last_dose = facts.anchors["last-dose"].astimezone(zone).date()
        context["hold_days"] = enrolment.anticoagulant_hold_days
        context["last_dose_day"] = format_day(last_dose)
        context["first_skip_day"] = format_day(last_dose + timedelta(days=1))
    if "restart" in facts.anchors:
        context["restart_day"] = format_day(facts.anchors["restart"].astimezone(zone).date())
        context["restart_same_day"] = enrolment.anticoagulant_restart_days == 0
    if "food-stop" in facts.anchors and facts.protocol.fasting is not None:
        food = facts.anchors["food-stop"].astimezone(zone)
        liquids = facts.anchors["liquids-stop"].astimezone(zone)
        context.update(
            no_food_when=format_moment(food, zone) + label,
            no_liquids_when=format_moment(liquids, zone) + label,
            no_food_after=format_clock(food.time()),
            no_food_day=format_day(food.date()),
            no_liquids_after=format_clock(liquids.time()),
            no_liquids_day=format_day(liquids.date()),
            food_hours=facts.protocol.fasting.food_hours,
            liquids_hours=facts.protocol.fasting.liquids_hours,
        )
    return context


def template_names(templates_dir: Path, language: str = DEFAULT_LANGUAGE) -> list[str]:
    """The templates a language has (its folders; those starting with _ are parts)."""
    root = templates_dir / language
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))


class Renderer:
    def __init__(self, templates_dir: Path, unit: Unit) -> None:
        self.templates_dir = templates_dir
        self.unit = unit
        self.env = SandboxedEnvironment(
            loader=FileSystemLoader(templates_dir),
            undefined=StrictUndefined,
            autoescape=lambda name: name is not None and name.endswith(".html"),
            trim_blocks=True,
            lstrip_blocks=True,
            # The sources are read once (`_source`), so the compiled templates must not be
            # reloaded behind them either; checking every file's mtime on every message cost
            # a system call per part, a million times in a CSV import.
            auto_reload=False,
        )
        self._sources: dict[str, str | None] = {}
        self._variables: dict[str, frozenset[str]] = {}
        self._versions: dict[tuple[str, str, str], str] = {}
        self._file_variables: dict[str, frozenset[str]] = {}
        self._unit_only: dict[str, str] = {}

    # --- finding templates -------------------------------------------------------------------

    def template_names(self, language: str = DEFAULT_LANGUAGE) -> list[str]:
        return template_names(self.templates_dir, language)

    def languages(self) -> list[str]:
        return sorted(p.name for p in self.templates_dir.iterdir() if p.is_dir())

    @staticmethod
    def fallbacks(language: str) -> list[str]:
        chain = [language]
        base = language.split("-")[0]
        if base != language:
            chain.append(base)
        if DEFAULT_LANGUAGE not in chain:
            chain.append(DEFAULT_LANGUAGE)
        return chain

    def _source(self, path: str) -> str | None:
        if path not in self._sources:
            file = self.templates_dir / path
            self._sources[path] = file.read_text(encoding="utf-8") if file.is_file() else None
        return self._sources[path]

    def resolve(self, template: str, channel: str, language: str) -> str:
        """The language whose templates will be used: the first in the fallback chain that has
        every part this channel needs."""
        for candidate in self.fallbacks(language):
            parts = [f"{candidate}/{template}/{part}" for part in PARTS[channel]]
            if all(self._source(p) is not None for p in parts):
                return candidate
        raise RenderError(
            f"template '{template}': no {channel} files ({', '.join(PARTS[channel])}) in "
            f"{', '.join(self.fallbacks(language))}"
        )

    def _paths(self, template: str, channel: str, language: str) -> list[str]:
        """Every file that goes into this message, the files they include too."""
        paths = [f"{language}/{template}/{part}" for part in PARTS[channel]]
        if channel == "email":
            shared = self.resolve_shared(language)
            paths += [f"{shared}/_footer.txt", f"{shared}/_layout.html"]
        return self._with_includes(paths)

    def _with_includes(self, paths: list[str]) -> list[str]:
        found = list(dict.fromkeys(paths))
        for path in found:  # grows as includes are found
            source = self._source(path)
            if source is None:
                continue
            for included in meta.find_referenced_templates(self.env.parse(source)):
                if included is not None and included not in found:
                    found.append(included)
        return found

    def resolve_shared(self, language: str) -> str:
        for candidate in self.fallbacks(language):
            shared = (f"{candidate}/_footer.txt", f"{candidate}/_layout.html")
            if all(self._source(path) is not None for path in shared):
                return candidate
        raise RenderError(f"no email _footer.txt and _layout.html in {self.templates_dir}")

    def version(self, template: str, channel: str, language: str) -> str:
        """A short hash of every file that produces this message: it changes when any does."""
        key = (template, channel, language)
        if key not in self._versions:
            # Kept, as the sources are: finding the includes parses every file, which would
            # otherwise cost more than rendering the message itself (a CSV import renders a
            # million).
            digest = hashlib.sha256()
            for path in self._paths(template, channel, language):
                digest.update(path.encode())
                digest.update((self._source(path) or "").encode())
            self._versions[key] = digest.hexdigest()[:12]
        return self._versions[key]

    # --- rendering ---------------------------------------------------------------------------

    def _render(self, path: str, context: dict[str, Any]) -> str:
        try:
            return self.env.get_template(path).render(context).strip()
        except TemplateNotFound:
            raise RenderError(f"{path}: template file not found") from None
        except Exception as exc:  # a template error of any kind is a configuration error
            raise RenderError(f"{path}: {type(exc).__name__}: {exc}") from None

    def _render_unit_only(self, path: str, context: dict[str, Any]) -> str:
        """A file that shows only the unit's details (the email footer) reads the same for
        every patient, so it is rendered once: a CSV import writes hundreds of thousands."""
        if context.get("unit") is not self.unit or self._path_variables(path) - {"unit"}:
            return self._render(path, context)
        if path not in self._unit_only:
            self._unit_only[path] = self._render(path, context)
        return self._unit_only[path]

    def _path_variables(self, path: str) -> frozenset[str]:
        """The context values a file refers to, those of the files it includes too."""
        if path not in self._file_variables:
            used: set[str] = set()
            for part in self._with_includes([path]):
                used |= meta.find_undeclared_variables(self.env.parse(self._source(part) or ""))
            self._file_variables[path] = frozenset(used)
        return self._file_variables[path]

    def render(self, reminder: PlannedReminder, facts: Facts) -> Message:
        context = template_context(facts, reminder.send_at, self.unit)
        return self.render_with(reminder.template, reminder.channel, facts, context)

    def render_with(
        self, template: str, channel: str, facts: Facts, context: dict[str, Any]
    ) -> Message:
        language = self.resolve(template, channel, facts.enrolment.language)
        version = self.version(template, channel, language)
        if channel == "sms":
            text = sms.to_gsm7(self._render(f"{language}/{template}/{SMS_PART}", context))
            count = sms.segments(text)
            if count > sms.MAX_SEGMENTS:
                raise TooLong(
                    f"{language}/{template}/{SMS_PART}: the text takes {count} SMS segments "
                    f"({sms.septets(text)} characters); the limit is {sms.MAX_SEGMENTS}. "
                    "Shorten it.",
                    count,
                )
            return Message("sms", text, None, None, version, language, count)
        subject = " ".join(self._render(f"{language}/{template}/subject.txt", context).split())
        shared = self.resolve_shared(language)
        text = self._render(f"{language}/{template}/email.txt", context)
        footer = self._render_unit_only(f"{shared}/_footer.txt", context)
        fragment = self._render(f"{language}/{template}/email.html", context)
        html = self._render(
            f"{shared}/_layout.html", {**context, "subject": subject, "content": Markup(fragment)}
        )
        return Message("email", f"{text}\n\n{footer}", subject, html, version, language, None)

    def fingerprint(self, template: str, channel: str, facts: Facts, send_at: datetime) -> str:
        """The instruction a message gives, as the values its templates show (the send day and
        opening hours aside). Two messages with the same fingerprint tell the patient the same."""
        return self.fingerprint_with(
            template, channel, facts, template_context(facts, send_at, self.unit)
        )

    def fingerprint_with(
        self, template: str, channel: str, facts: Facts, context: dict[str, Any]
    ) -> str:
        language = self.resolve(template, channel, facts.enrolment.language)
        used = self.variables(template, channel, language) - _VOLATILE
        shown = {k: context[k] for k in sorted(used) if k in context}
        return json.dumps({"template": template, **shown}, sort_keys=True, default=str)

    def variables(self, template: str, channel: str, language: str) -> frozenset[str]:
        """The context values this template's files for `channel` refer to."""
        key = f"{language}/{template}/{channel}"
        if key not in self._variables:
            parts = [f"{language}/{template}/{part}" for part in PARTS[channel]]
            self._variables[key] = frozenset().union(*map(self._path_variables, parts))
        return self._variables[key]
