"""The transport for a channel with no provider configured: nothing leaves the machine, but the
message is recorded like any other and shown to staff as "recorded, not sent (no provider)", so
a missing credential never drops a reminder silently."""

from __future__ import annotations

from datetime import datetime

from reminders.delivery.transports import OutgoingMessage, Sent

LABEL = "recorded, not sent (no provider)"


class Outbox:
    name = "outbox"

    def send(self, message: OutgoingMessage) -> Sent:
        message.may_leave()
        return Sent(provider_id=f"outbox-{message.reminder_id}", delivery_status=None)

    def find_sent(self, message: OutgoingMessage, since: datetime) -> str | None:
        # Recording cannot half-happen: an interrupted attempt is simply recorded again.
        return None
