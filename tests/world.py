"""A delivery world for tests: the database, the configuration pointing at the fakes on
loopback, the transports and a clock the tests move on instead of waiting."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from reminders.config import Config
from reminders.core.enrolment import Enrolment
from reminders.core.rendering import Message
from reminders.delivery import send
from reminders.delivery.dispatch import CLAIM_LIMIT
from reminders.delivery.transports import Transports
from reminders.services import enrolments, wording
from reminders.settings import Settings
from reminders.store import lifecycle, models
from reminders.store.db import make_sessionmaker, session_scope

PHONE = "+447911100010"
EMAIL = "megan.price@example.org"


def claim_due(session: Session, now: datetime) -> list[int]:
    """What one dispatcher round claims, as the ids it would queue."""
    return [row.id for row in lifecycle.claim(session, now, CLAIM_LIMIT)]


class Clock:
    """The time the delivery code sees; tests move it on instead of waiting."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self, session: object = None) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class World:
    """The database, the configuration pointing at the fakes, the transports and the clock that
    every delivery test works with, and the few things each test does with them."""

    factory: sessionmaker[Session]
    config: Config
    transports: Transports
    clock: Clock

    def enrol(self, *, config: Config | None = None, **fields: object) -> int:
        """A sacroplasty three hours from now, without sedation: its booking, transport and
        day-before messages are all due at once."""
        start = (self.clock.now + timedelta(hours=3)).astimezone(UTC)
        values: dict[str, object] = dict(
            name="Megan Price", procedure="sacroplasty", date=start.date(), time=start.time(),
            timezone=ZoneInfo("UTC"), booking_ref="BK-2001", phone=PHONE, email=EMAIL,
            sedation=False,
        )  # fmt: skip
        values.update(fields)
        with session_scope(self.factory) as session:
            result = enrolments.enrol(
                session, config or self.config, Enrolment(**values),  # type: ignore[arg-type]
                now=self.clock.now, actor="alice",
            )  # fmt: skip
            return result.enrolment.id

    def deliver(
        self, *, config: Config | None = None, transports: Transports | None = None
    ) -> dict[str, int]:
        """One dispatcher round and the sends it queues, in this process."""
        with session_scope(self.factory) as session:
            ids = claim_due(session, self.clock.now)
        return send.send_reminders(
            self.factory, config or self.config, transports or self.transports, ids,
            clock=self.clock,
        )  # fmt: skip

    def reminders(self, *states: str) -> list[models.Reminder]:
        with session_scope(self.factory) as session:
            query = select(models.Reminder).order_by(models.Reminder.id)
            if states:
                query = query.where(models.Reminder.state.in_(states))
            return list(session.scalars(query))

    def words(self) -> dict[int, str]:
        """Each reminder's text as the staff pages show it: as sent, or as it would be now."""
        with session_scope(self.factory) as session:
            shown = wording.shown(self.config, list(session.scalars(select(models.Reminder))))
        return {id_: said.body for id_, said in shown.items() if isinstance(said, Message)}

    def due_now(self) -> list[models.Reminder]:
        return [r for r in self.reminders("scheduled") if r.send_at <= self.clock.now]


def make_world(db_engine: Engine, delivery_env: dict[str, str]) -> World:
    config = Config.load(Settings.from_env(delivery_env))
    return World(
        make_sessionmaker(db_engine),
        config,
        Transports.from_settings(config.settings),
        Clock(),
    )
