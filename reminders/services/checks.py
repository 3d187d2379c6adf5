"""`reminders check`: render every rule of every protocol with sample patients, so a clinician's
mistake in a template is caught here and never reaches a patient."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from reminders.config import Config
from reminders.core.enrolment import Enrolment
from reminders.core.facts import Change, Facts, History, Told, facts_for
from reminders.core.protocols import Protocol, Rule
from reminders.core.rendering import (
    DEFAULT_LANGUAGE,
    RenderError,
    enrolment_context,
    template_context,
)
from reminders.core.schedule import matches, timing_for

# A long first name, so SMS length is checked against a realistic worst case.
SAMPLE_NAME = "Christabella Featherstonehaugh"
SAMPLE_PHONE = "+447911123456"
SAMPLE_EMAIL = "patient@example.org"
_PLANS: tuple[tuple[str | None, int | None, int | None], ...] = (
    (None, None, None),  # no blood thinner
    ("apixaban", None, None),  # a drug, no plan
    ("warfarin", 5, 0),  # hold, restart the same evening
    ("clopidogrel", 7, 2),  # hold, restart two days later
    ("rivaroxaban", 3, None),  # hold, no restart day given
    ("apixaban", 0, None),  # keep taking it
)


# The unit's zone, and a patient abroad with a long zone name: their times are labelled, and
# the texts must still fit.
_ZONES = (ZoneInfo("Europe/London"), ZoneInfo("America/Argentina/Buenos_Aires"))


def sample_enrolments(protocol: Protocol, language: str) -> Iterator[Enrolment]:
    """Enrolments covering every combination of facts a rule's `when` can test."""
    joints: tuple[str | None, ...] = (None, *protocol.joints)
    for sedation, plan, arrival, joint, zone in itertools.product(
        (True, False, None), _PLANS, (None, time(8, 30)), joints, _ZONES
    ):
        drug, hold, restart = plan
        yield Enrolment(
            name=SAMPLE_NAME,
            procedure=protocol.procedure,
            date=date(2026, 12, 10),
            time=time(9, 30),
            timezone=zone,
            booking_ref="CHECK-1",
            phone=SAMPLE_PHONE,
            email=SAMPLE_EMAIL,
            language=language,
            arrival=arrival,
            sedation=sedation,
            joint=joint,
            anticoagulant=drug,
            anticoagulant_hold_days=hold,
            anticoagulant_restart_days=restart,
            enrolled_at=datetime(2026, 11, 20, 10, tzinfo=UTC),
        )


def sample_histories(protocol: Protocol, enrolment: Enrolment) -> Iterator[History]:
    """What the patient may have been told: nothing, or (with a blood thinner) a stop
    instruction, which for a drug without a plan is one a change has since withdrawn."""
    yield History()
    if enrolment.anticoagulant:
        told = Told("anticoagulant-plan", "sms", datetime(2026, 11, 20, 10, tzinfo=UTC), None)
        if "anticoagulant-plan" in {rule.id for rule in protocol.rules}:
            yield History((told,))


def sample_changes(enrolment: Enrolment) -> Iterator[Change | None]:
    yield None
    changed = datetime(2026, 11, 27, 11, tzinfo=UTC)
    yield Change("moved", changed, previous_start=datetime(2026, 12, 3, 14, 15, tzinfo=UTC))
    yield Change("cancelled", changed)


# Values that depend on the moment a message goes, each tried both ways: a surgery open or
# shut, the unit answering or not (then "call us" says from when), the procedure today or not.
_MOMENTS = {
    "gp_open": (True, False),
    "call_us": (
        "call us on 020 7946 0000",
        "call us on 020 7946 0000 from 8:30am on Wednesday 30 December",
    ),
    "unit_open": (True, False),
    "same_day": (True, False),
}


def check(config: Config) -> list[str]:
    """Every problem found, one line each; an empty list means all is well."""
    renderer = config.renderer
    problems: set[str] = set()
    languages = renderer.languages()
    if DEFAULT_LANGUAGE not in languages:
        return [f"{renderer.templates_dir}: no {DEFAULT_LANGUAGE} templates"]
    checker = _Checker(config)
    for protocol, language in itertools.product(config.protocols.values(), languages):
        for enrolment in sample_enrolments(protocol, language):
            for history, change in itertools.product(
                sample_histories(protocol, enrolment), sample_changes(enrolment)
            ):
                facts = facts_for(
                    protocol, enrolment, enrolment.enrolled_at or datetime.now(UTC),
                    history=history, medicines=config.medicines, change=change,
                    unit_zone=config.zone,
                )  # fmt: skip
                problems |= checker.rules(protocol, facts, language)
    return sorted(problems)


def _plain(value: object) -> object:
    # The unit is the same object for every sample: its identity is enough, and printing a
    # model a million times was most of the check's time.
    return value if isinstance(value, str | int | bool | None) else id(value)


class _Checker:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.rendered: set[tuple[object, ...]] = set()
        self.shown: dict[tuple[str, str, str], tuple[str, ...]] = {}

    def rules(self, protocol: Protocol, facts: Facts, language: str) -> set[str]:
        problems: set[str] = set()
        renderer = self.config.renderer
        shared = enrolment_context(facts, self.config.unit)
        for rule in protocol.rules:
            if rule.phase == "notice" and (
                facts.change is None or facts.change.event != rule.event
            ):
                continue
            if not matches(rule, facts.conditions):
                continue
            timing = timing_for(rule, facts)
            if timing is None:
                continue
            for channel, template in itertools.product(rule.channels, rule.templates):
                if (
                    language != DEFAULT_LANGUAGE
                    and not (renderer.templates_dir / language / template).is_dir()
                ):
                    continue  # falls back to en-GB, checked there
                base = template_context(facts, timing.send_at, self.config.unit, shared)
                # Only the moment's values this template shows are worth trying both ways.
                shown = self._shown(template, channel, language)
                moments = [name for name in _MOMENTS if name in shown]
                for values in itertools.product(*(_MOMENTS[name] for name in moments)):
                    context = {**base, **dict(zip(moments, values, strict=True))}
                    where = f"{protocol.procedure}.yaml: rule '{rule.id}' ({channel}, {language})"
                    try:
                        problem = self._render(rule, template, channel, language, facts, context)
                    except RenderError as exc:
                        problem = str(exc)
                    if problem:
                        problems.add(f"{where}: {problem}")
        return problems

    def _shown(self, template: str, channel: str, language: str) -> tuple[str, ...]:
        key = (template, channel, language)
        if key not in self.shown:
            renderer = self.config.renderer
            resolved = renderer.resolve(template, channel, language)
            self.shown[key] = tuple(sorted(renderer.variables(template, channel, resolved)))
        return self.shown[key]

    def _render(
        self, rule: Rule, template: str, channel: str, language: str, facts: Facts,
        context: dict[str, Any],
    ) -> str | None:  # fmt: skip
        renderer = self.config.renderer
        # Many samples differ only in values this template never shows: render each distinct
        # combination of the values it does show once.
        shown = self._shown(template, channel, language)
        key = (template, channel, language, *(_plain(context.get(name)) for name in shown))
        if key in self.rendered:
            return None
        self.rendered.add(key)
        message = renderer.render_with(template, channel, facts, context)
        red_flags = facts.protocol.red_flags
        # Every after-care message says what to do about the leaflet's warning signs.
        if rule.phase == "after" and red_flags and red_flags not in message.body:
            return f"{template}: an after-care message must say what to do about {red_flags!r}"
        return None
