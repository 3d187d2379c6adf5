"""`reminders check`: render every rule of every protocol with sample patients, so a clinician's
mistake in a template is caught here and never reaches a patient."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from reminders.config import Config
from reminders.core.enrolment import Enrolment
from reminders.core.protocols import Protocol
from reminders.core.rendering import DEFAULT_LANGUAGE, RenderError, template_context
from reminders.core.schedule import facts_for, matches, timing_for

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


def sample_enrolments(protocol: Protocol, language: str) -> Iterator[Enrolment]:
    """Enrolments covering every combination of facts a rule's `when` can test."""
    joints: tuple[str | None, ...] = (None, *protocol.joints)
    for sedation, plan, arrival, joint in itertools.product(
        (True, False), _PLANS, (None, time(8, 30)), joints
    ):
        drug, hold, restart = plan
        yield Enrolment(
            name=SAMPLE_NAME,
            procedure=protocol.procedure,
            date=date(2026, 12, 10),
            time=time(9, 30),
            timezone=ZoneInfo("Europe/London"),
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


def check(config: Config) -> list[str]:
    """Every problem found, one line each; an empty list means all is well."""
    renderer = config.renderer
    problems: set[str] = set()
    rendered: set[tuple[object, ...]] = set()
    languages = renderer.languages()
    if DEFAULT_LANGUAGE not in languages:
        return [f"{renderer.templates_dir}: no {DEFAULT_LANGUAGE} templates"]
    for protocol, language in itertools.product(config.protocols.values(), languages):
        for enrolment in sample_enrolments(protocol, language):
            facts = facts_for(protocol, enrolment, enrolment.enrolled_at or datetime.now(UTC))
            for rule in protocol.rules:
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
                    context = template_context(facts, timing.send_at, config.unit)
                    for gp_open in (True, False):
                        context["gp_open"] = gp_open
                        try:
                            # Many samples differ only in values this template never shows:
                            # render each distinct combination of the values it does show once.
                            resolved = renderer.resolve(template, channel, language)
                            shown = renderer.variables(template, channel, resolved)
                            key = (template, channel, language, *(
                                (name, str(context.get(name, "-"))) for name in sorted(shown)
                            ))  # fmt: skip
                            if key in rendered:
                                continue
                            rendered.add(key)
                            renderer.render_with(template, channel, facts, context)
                        except RenderError as exc:
                            problems.add(
                                f"{protocol.procedure}.yaml: rule '{rule.id}' ({channel}, "
                                f"{language}): {exc}"
                            )
    return sorted(problems)
