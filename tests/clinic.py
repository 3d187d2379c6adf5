"""A clinic's week, for the clinical safety scenarios (tests/test_clinical_safety.py): a patient
enrolled on a timeline the test moves along, every message delivered at the minute it is due
through the real delivery code to the loopback fakes, and what the patient got and what staff
must do read back as a clinician would read them: the words, at their local times.

The unit's real sending window (08:00 to 20:00) is used, not the tests' open-all-day one: when
a message may go is part of what is being checked."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import FastAPI
from sqlalchemy import select
from world import World

from reminders.config import Config
from reminders.core.enrolment import Enrolment
from reminders.interfaces.web.app import create_app
from reminders.interfaces.web.deps import get_now
from reminders.services import accounts, enrolments, planning
from reminders.settings import Settings
from reminders.store import models
from reminders.store.db import session_scope

LONDON = ZoneInfo("Europe/London")
PHONE = "+447911100060"
EMAIL = "megan.price@example.org"


def london(day: date, hour: int, minute: int = 0) -> datetime:
    """A moment on the unit's clock, in UTC."""
    return datetime.combine(day, time(hour, minute), LONDON).astimezone(UTC)


def shown(moment: datetime) -> str:
    """`Fri 04 Dec 18:00`, on the patient's clock."""
    return moment.astimezone(LONDON).strftime("%a %d %b %H:%M")


@dataclass
class Clinic:
    w: World
    config: Config
    env: dict[str, str]

    @classmethod
    def open(cls, w: World, delivery_env: dict[str, str], start: datetime) -> Clinic:
        env = {
            **delivery_env, "REMINDERS_SENDING_WINDOW": "08:00-20:00",
            "REMINDERS_TIMEZONE": "Europe/London",
        }  # fmt: skip
        w.clock.now = start
        return cls(w, Config.load(Settings.from_env(env)), env)

    @property
    def now(self) -> datetime:
        return self.w.clock.now

    def enrol(self, **fields: Any) -> int:
        values: dict[str, Any] = dict(
            name="Megan Price", procedure="sacroplasty", timezone=LONDON, booking_ref="BK-5001",
            phone=PHONE, email=EMAIL,
        )  # fmt: skip
        values.update(fields)
        with session_scope(self.w.factory) as session:
            result = enrolments.enrol(
                session, self.config, Enrolment(**values), now=self.now, actor="alice"
            )
            return result.enrolment.id

    def change(self, enrolment_id: int, **fields: Any) -> None:
        """What staff change on the enrolment (a new date, a new plan), through the service."""
        with session_scope(self.w.factory) as session:
            row = session.get(models.Enrolment, enrolment_id)
            assert row is not None
            changed = planning.as_enrolment(row).with_changes(**fields)
            enrolments.enrol(session, self.config, changed, now=self.now, actor="bob")

    def cancel(self, enrolment_id: int) -> None:
        with session_scope(self.w.factory) as session:
            row = session.get(models.Enrolment, enrolment_id)
            assert row is not None
            enrolments.cancel(session, self.config, row, now=self.now, actor="bob")

    def run_until(self, moment: datetime) -> None:
        """Move the clock to `moment`, delivering every message at the minute it is due."""
        while True:
            with session_scope(self.w.factory) as session:
                due = session.scalar(
                    select(models.Reminder.send_at)
                    .where(models.Reminder.state == "scheduled", models.Reminder.send_at <= moment)
                    .order_by(models.Reminder.send_at)
                    .limit(1)
                )
            if due is None:
                break
            self.w.clock.now = max(self.now, due)
            self.w.deliver(config=self.config)
        self.w.clock.now = moment
        self.w.deliver(config=self.config)

    def texts(self, since: datetime | None = None) -> list[tuple[str, str, str]]:
        """Every SMS the patient got, in order: (when, rule, words)."""
        return [
            (shown(r.sent_at), r.rule, r.body or "")
            for r in self._sent("sms", since)
            if r.sent_at is not None
        ]

    def emails(self, since: datetime | None = None) -> list[models.Reminder]:
        return self._sent("email", since)

    def _sent(self, channel: str, since: datetime | None) -> list[models.Reminder]:
        with session_scope(self.w.factory) as session:
            query = (
                select(models.Reminder)
                .where(models.Reminder.channel == channel, models.Reminder.state == "sent")
                .order_by(models.Reminder.sent_at, models.Reminder.id)
            )
            if since is not None:
                query = query.where(models.Reminder.sent_at >= since)
            return list(session.scalars(query))

    def calls(self) -> list[str]:
        """The call list: what staff must phone about, oldest first."""
        return [item.message for item in self._attention() if item.needs_call]

    def attention(self, kind: str | None = None) -> list[models.AttentionItem]:
        return [item for item in self._attention() if kind is None or item.kind == kind]

    def _attention(self) -> list[models.AttentionItem]:
        with session_scope(self.w.factory) as session:
            query = select(models.AttentionItem).order_by(models.AttentionItem.id)
            return list(session.scalars(query))

    def pending(self, enrolment_id: int) -> list[models.Reminder]:
        with session_scope(self.w.factory) as session:
            return list(
                session.scalars(
                    select(models.Reminder).where(
                        models.Reminder.enrolment_id == enrolment_id,
                        models.Reminder.state == "scheduled",
                    )
                )
            )

    def audit(self) -> list[str]:
        with session_scope(self.w.factory) as session:
            return list(session.scalars(select(models.AuditEntry.action)))

    def web(self) -> FastAPI:
        """The staff pages and the API on the same database, on this clinic's clock."""
        # Without the public https address: the test client speaks plain http, and would not
        # send back the secure cookies that address makes the app set.
        env = {k: v for k, v in self.env.items() if k != "REMINDERS_PUBLIC_URL"}
        app = create_app(Settings.from_env(env))
        app.dependency_overrides[get_now] = lambda: self.now
        return app

    def api_token(self, app: FastAPI) -> str:
        with session_scope(app.state.sessions) as session:
            return accounts.add_token(
                session, name="booking-system", now=self.now, actor="test"
            ).secret
