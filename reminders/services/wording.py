"""What a reminder says.

A reminder's words are written when it is sent, from the enrolment and the templates as they
are at that moment, and kept on its row with the template version and the fingerprint of the
instruction: what a patient was told is always on record, and a message that waits for weeks
says what is true when it goes (a reschedule, a corrected name, a new unit phone number).
Until then, the staff pages and the API show the words as they would be written now, from the
same function.

Scheduling writes only an SMS, to check it (a text over the segment limit is refused while
staff can still act on it) and throw it away: storing a million messages' words at scheduling
was most of the cost of a big import, and they would go stale.
"""

from __future__ import annotations

from reminders.config import Config
from reminders.core.rendering import Message, RenderError, template_context
from reminders.core.schedule import Facts, facts_for
from reminders.services.enrolments import as_enrolment
from reminders.store import models


def facts_of(config: Config, enrolment: models.Enrolment) -> Facts:
    protocol = config.protocols.get(enrolment.procedure)
    if protocol is None:
        raise RenderError(f"the procedure {enrolment.procedure!r} is no longer configured")
    return facts_for(protocol, as_enrolment(enrolment), enrolment.enrolled_at)


def compose(
    config: Config, reminder: models.Reminder, facts: Facts | None = None
) -> tuple[Message, str | None]:
    """The reminder's message as it would be written now, and the fingerprint of its rule's
    instruction (None for a rule no longer in the protocol). `facts`, when given, are those
    of the reminder's enrolment (several reminders of one enrolment share them)."""
    facts = facts or facts_of(config, reminder.enrolment)
    renderer = config.renderer
    # One context for the message and its fingerprint: it is a good part of the cost.
    context = template_context(facts, reminder.send_at, renderer.unit)
    message = renderer.render_with(reminder.template, reminder.channel, facts, context)
    try:
        rule = facts.protocol.rule(reminder.rule)
    except KeyError:
        return message, None
    return message, renderer.fingerprint_with(rule.template, reminder.channel, facts, context)


def write(config: Config, reminder: models.Reminder) -> dict[str, object]:
    """The reminder's words as the columns of its row, written as it is about to be sent
    (`lifecycle.write_words` keeps them). Raises RenderError when they cannot be written."""
    message, fingerprint = compose(config, reminder)
    return {
        "body": message.body,
        "subject": message.subject,
        "body_html": message.html,
        "template_version": message.template_version,
        "language": message.language,
        "fingerprint": fingerprint,
    }


def shown(config: Config, reminders: list[models.Reminder]) -> dict[int, Message | str | None]:
    """For staff, by reminder id: the words sent, or to be sent if it goes now; the reason they
    cannot be written; or None for a reminder that never went and never will."""
    facts: dict[int, Facts] = {}
    words: dict[int, Message | str | None] = {}
    for reminder in reminders:
        if reminder.body is not None and not reminder.pending:
            words[reminder.id] = Message(
                reminder.channel, reminder.body, reminder.subject, reminder.body_html,
                reminder.template_version or "", reminder.language or "", None,
            )  # fmt: skip
        elif reminder.pending or reminder.state == "sending":
            try:
                enrolment = reminder.enrolment
                if enrolment.id not in facts:
                    facts[enrolment.id] = facts_of(config, enrolment)
                words[reminder.id] = compose(config, reminder, facts[enrolment.id])[0]
            except RenderError as exc:
                words[reminder.id] = f"This message cannot be written: {exc}"
        else:
            words[reminder.id] = None
    return words
