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
from reminders.core.facts import Facts, History
from reminders.core.rendering import Message, RenderError, template_context
from reminders.services import planning
from reminders.store import models


def facts_of(config: Config, reminder: models.Reminder, history: History | None = None) -> Facts:
    """The facts a reminder is written from: its enrolment as it is now, what the patient has
    been told so far (`history`, or read from the enrolment's reminders), and for a notice the
    change it is about."""
    enrolment = reminder.enrolment
    if enrolment.procedure not in config.protocols:
        raise RenderError(f"the procedure {enrolment.procedure!r} is no longer configured")
    return planning.facts_of(
        config, enrolment, change=planning.change_of(reminder), history=history
    )


def compose(
    config: Config, reminder: models.Reminder, facts: Facts | None = None
) -> tuple[Message, str | None]:
    """The reminder's message as it would be written now, and the fingerprint of its rule's
    instruction (None for a rule no longer in the protocol). `facts`, when given, are those
    of the reminder (several reminders of one enrolment share them)."""
    facts = facts or facts_of(config, reminder)
    renderer = config.renderer
    # One context for the message and its fingerprint: it is a good part of the cost.
    context = template_context(facts, reminder.send_at, renderer.unit)
    message = renderer.render_with(reminder.template, reminder.channel, facts, context)
    try:
        rule = facts.protocol.rule(reminder.rule)
    except KeyError:
        return message, None
    return message, renderer.fingerprint_with(rule.template, reminder.channel, facts, context)


def write(
    config: Config, reminder: models.Reminder, history: History | None = None
) -> dict[str, object]:
    """The reminder's words as the columns of its row, written as it is about to be sent
    (`lifecycle.write_words` keeps them), from what the patient has been told so far
    (`history`). Raises RenderError when they cannot be written."""
    message, fingerprint = compose(config, reminder, facts_of(config, reminder, history))
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
    facts: dict[tuple[int, str | None], Facts] = {}
    words: dict[int, Message | str | None] = {}
    for reminder in reminders:
        if reminder.body is not None and not reminder.pending:
            words[reminder.id] = Message(
                reminder.channel, reminder.body, reminder.subject, reminder.body_html,
                reminder.template_version or "", reminder.language or "", None,
            )  # fmt: skip
        elif reminder.pending or reminder.state == "sending":
            try:
                key = (reminder.enrolment_id, reminder.detail)
                if key not in facts:
                    facts[key] = facts_of(config, reminder)
                words[reminder.id] = compose(config, reminder, facts[key])[0]
            except RenderError as exc:
                words[reminder.id] = f"This message cannot be written: {exc}"
        else:
            words[reminder.id] = None
    return words
