"""The tables. (A reminder's states change only through `lifecycle`; the base they build on,
with its UTC instants, is `base`.)

Every instant is stored in UTC through `UTCDateTime`; local dates and times are kept only where a
person typed them (the procedure's wall-clock date and time and its zone), because schedules are
computed from the wall clock, not from an instant that a time-zone rule change could move.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    Time,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from reminders.store.base import Base as Base
from reminders.store.base import Timestamped
from reminders.store.base import UTCDateTime as UTCDateTime
from reminders.store.base import utcnow as utcnow

CHANNELS = ("sms", "email")

ENROLMENT_ACTIVE = "active"
ENROLMENT_CANCELLED = "cancelled"
ENROLMENT_COMPLETED = "completed"
ENROLMENT_STATUSES = (ENROLMENT_ACTIVE, ENROLMENT_CANCELLED, ENROLMENT_COMPLETED)

REMINDER_STATES = ("scheduled", "queued", "sending", "sent", "failed", "cancelled", "skipped")
# Rows the dispatcher may still hand to a worker; a reschedule recomputes exactly these.
PENDING_STATES = ("scheduled", "queued")

# Every change of state is made by `reminders.store.lifecycle`, which lists the moves.

# What the provider later says about a message we handed over; kept beside `state` because a
# message can be `sent` by us and still `undelivered` to the handset.
DELIVERY_STATUSES = ("queued", "sent", "delivered", "undelivered", "failed")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


class Patient(Timestamped, Base):
    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # E.164; indexed for the staff's search and for matching a patient's reply to them.
    phone: Mapped[str | None] = mapped_column(String(20), index=True)
    email: Mapped[str | None] = mapped_column(String(320))
    language: Mapped[str] = mapped_column(String(35), default="en-GB", server_default="en-GB")

    enrolments: Mapped[list[Enrolment]] = relationship(back_populates="patient")


class Enrolment(Base):
    __tablename__ = "enrolments"
    __table_args__ = (
        CheckConstraint(_one_of("status", ENROLMENT_STATUSES), name="status"),
        # The staff's search compares booking references lower-cased.
        Index("ix_enrolments_booking_ref_lower", func.lower(text("booking_ref"))),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    booking_ref: Mapped[str] = mapped_column(String(64), unique=True)
    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patients.id", ondelete="CASCADE"), index=True
    )
    procedure: Mapped[str] = mapped_column(String(64))
    # What staff typed, in the patient's zone; `starts_at` is derived from these and is what
    # queries sort and filter on.
    local_date: Mapped[date] = mapped_column(Date)
    local_time: Mapped[time] = mapped_column(Time)
    timezone: Mapped[str] = mapped_column(String(64))
    starts_at: Mapped[datetime] = mapped_column(index=True)
    arrival: Mapped[time | None] = mapped_column(Time)
    anaesthesia: Mapped[str | None] = mapped_column(String(16))  # local, sedation, general
    sedation: Mapped[bool | None] = mapped_column(Boolean)  # the older field, as it was given
    joint: Mapped[str | None] = mapped_column(String(16))
    anticoagulant: Mapped[str | None] = mapped_column(String(100))
    anticoagulant_hold_days: Mapped[int | None] = mapped_column(Integer)
    anticoagulant_restart_days: Mapped[int | None] = mapped_column(Integer)
    # A clinician's reason for a hold shorter than the protocol's minimum (patient data: it
    # stays here, never in the audit log).
    anticoagulant_hold_reason: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(
        String(16), default=ENROLMENT_ACTIVE, server_default=ENROLMENT_ACTIVE
    )
    # Bumped on every reschedule; a reminder carrying an older number is stale work.
    schedule_version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    enrolled_at: Mapped[datetime] = mapped_column(default=utcnow)  # the "booking" anchor
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()

    patient: Mapped[Patient] = relationship(back_populates="enrolments")
    reminders: Mapped[list[Reminder]] = relationship(
        back_populates="enrolment",
        order_by=lambda: (Reminder.send_at, Reminder.id),
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class Reminder(Timestamped, Base):
    __tablename__ = "reminders"
    __table_args__ = (
        CheckConstraint(_one_of("channel", CHANNELS), name="channel"),
        CheckConstraint(_one_of("state", REMINDER_STATES), name="state"),
        CheckConstraint(
            f"delivery_status IS NULL OR {_one_of('delivery_status', DELIVERY_STATUSES)}",
            name="delivery_status",
        ),
        # The dispatcher's claim: "due rows in this state, oldest first".
        Index("ix_reminders_state_send_at", "state", "send_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    enrolment_id: Mapped[int] = mapped_column(
        ForeignKey("enrolments.id", ondelete="CASCADE"), index=True
    )
    rule: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(16), default="scheduled", server_default="scheduled")
    send_at: Mapped[datetime] = mapped_column()
    deadline: Mapped[datetime] = mapped_column()  # must reach the patient by then
    expires_at: Mapped[datetime] = mapped_column()  # worthless after this; never sent late
    schedule_version: Mapped[int] = mapped_column(Integer)
    template: Mapped[str] = mapped_column(String(64))
    # The words, written as it is sent (reminders/wording.py): what the patient was told, from
    # which version of the templates, in which language. Empty until then.
    template_version: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(35))
    subject: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    safety_critical: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    is_correction: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The values the rule's templates showed when it was sent (JSON), to tell on a reschedule
    # whether an instruction the patient already has has changed and needs a correction.
    fingerprint: Mapped[str | None] = mapped_column(Text)
    cancel_reason: Mapped[str | None] = mapped_column(String(64))
    # What a notice is about (JSON): the change that sent it, such as the start a moved
    # appointment had before; its words are written from it as it goes.
    detail: Mapped[str | None] = mapped_column(Text)
    provider_id: Mapped[str | None] = mapped_column(String(64), index=True)
    delivery_status: Mapped[str | None] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(32))
    error_message: Mapped[str | None] = mapped_column(Text)
    # Times a worker took it into `sending`: the attempt number a worker must still hold to
    # settle it (lifecycle.Held). Only ever goes up.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # What went wrong on those attempts, each with its cap (lifecycle): the provider failing
    # or not answering, and the worker itself stopping while it held the row.
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    crashes: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    sent_at: Mapped[datetime | None] = mapped_column()
    # When the dispatcher queued it and when the current attempt began: the sweepers recover a
    # row that has sat in either state too long (a lost task, a killed worker).
    queued_at: Mapped[datetime | None] = mapped_column()
    sending_at: Mapped[datetime | None] = mapped_column()
    # When this attempt's request was allowed to leave (`lifecycle.go`), checked and committed
    # just before it did: a row in `sending` without it never reached the provider.
    requested_at: Mapped[datetime | None] = mapped_column()
    # Times the provider could not say whether it has the message, and when to ask next: the
    # sweeper asks with backoff, and gives up after a bounded time (`sweep`).
    asks: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    ask_after: Mapped[datetime | None] = mapped_column()
    transport: Mapped[str | None] = mapped_column(String(16))  # twilio, smtp or outbox
    # How long the provider took over the last attempt: the provider-latency metric.
    provider_seconds: Mapped[float | None] = mapped_column(Float)
    destination: Mapped[str | None] = mapped_column(String(320))  # where it was sent

    enrolment: Mapped[Enrolment] = relationship(back_populates="reminders")

    @property
    def pending(self) -> bool:
        return self.state in PENDING_STATES


class OptOut(Base):
    __tablename__ = "opt_outs"
    __table_args__ = (
        CheckConstraint(_one_of("channel", CHANNELS), name="channel"),
        UniqueConstraint("channel", "destination"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(8))
    destination: Mapped[str] = mapped_column(String(320))  # E.164 number or email address
    source: Mapped[str] = mapped_column(String(32))  # how it arrived, e.g. a STOP reply
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class InboundMessage(Base):
    """A message a patient sent, by the provider's id, once handled: a signed webhook captured
    and posted again (a START replayed after a later STOP) is recognised and does nothing."""

    __tablename__ = "inbound_messages"

    provider_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class AttentionItem(Base):
    """An entry on the staff's "needs attention" list; `needs_call` puts it on the call list."""

    __tablename__ = "attention_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    enrolment_id: Mapped[int | None] = mapped_column(
        ForeignKey("enrolments.id", ondelete="CASCADE"), index=True
    )
    reminder_id: Mapped[int | None] = mapped_column(
        ForeignKey("reminders.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    needs_call: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column()
    resolved_by: Mapped[str | None] = mapped_column(String(200))

    enrolment: Mapped[Enrolment | None] = relationship()
    reminder: Mapped[Reminder | None] = relationship()


class AuditEntry(Base):
    """Who did what. Outlives a purged enrolment (the link is nulled), so `detail` must not
    carry patient data."""

    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    enrolment_id: Mapped[int | None] = mapped_column(
        ForeignKey("enrolments.id", ondelete="SET NULL"), index=True
    )
    detail: Mapped[str | None] = mapped_column(Text)  # JSON text


class PurgedTotal(Base):
    """How many reminders of each kind were purged with their patients' data: the metrics keep
    counting them after the rows are gone."""

    __tablename__ = "purged_totals"
    __table_args__ = (UniqueConstraint("state", "channel", "transport"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(8))
    transport: Mapped[str] = mapped_column(String(16))  # "none" when it never reached one
    count: Mapped[int] = mapped_column(Integer, default=0)


ROLES = ("staff", "admin")
TOKEN_SCOPES = ("read", "write")


class User(Base):
    """A member of staff who logs in to the web app."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_one_of("role", ROLES), name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))  # argon2id, with its parameters
    role: Mapped[str] = mapped_column(String(16), default="staff", server_default="staff")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Sessions that began before this are no longer accepted (log out, password change).
    sessions_valid_after: Mapped[datetime | None] = mapped_column()
    # Set when the account is switched off (someone who has left): no login, no session.
    disabled_at: Mapped[datetime | None] = mapped_column()


class LoginAttempts(Base):
    """Password checks of one email address since its last good login, for any address typed,
    whether it has an account or not: an address without one is slowed down the same, so the
    slowdown does not tell a stranger which addresses have accounts (services/logins.py)."""

    __tablename__ = "login_attempts"

    address: Mapped[str] = mapped_column(String(320), primary_key=True)  # lower-cased
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # No password is checked for this address before then.
    locked_until: Mapped[datetime | None] = mapped_column()
    last_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A bearer token for a booking system. Only its SHA-256 is kept: the token is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # What it may do (TOKEN_SCOPES): "read" enrolments only, or "write" (enrol, change, cancel)
    # as well. Tokens from before scopes were all "write".
    scope: Mapped[str] = mapped_column(String(8), default="write", server_default="write")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


IMPORT_STATUSES = ("running", "finished", "unusable")
# An upload lands a batch of rows every second or so; one that has not for this long has been
# stopped by its worker ending (a restart, a deployment) and will not go on.
IMPORT_STALLED = timedelta(minutes=2)


class ImportRun(Base):
    """A CSV uploaded through the staff pages: its progress while it runs, and its report."""

    __tablename__ = "import_runs"
    __table_args__ = (CheckConstraint(_one_of("status", IMPORT_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    filename: Mapped[str] = mapped_column(String(255))
    started_by: Mapped[str] = mapped_column(String(320))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default="running", server_default="running")
    total_rows: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    done_rows: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    landed: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    refused: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    problem: Mapped[str | None] = mapped_column(Text)  # why the file itself was unusable
    # Set when it starts and after every batch that lands: a run that has gone quiet for
    # STALLED was stopped from outside (its worker restarted) and will not finish.
    heartbeat_at: Mapped[datetime | None] = mapped_column()

    def stopped(self, now: datetime) -> bool:
        """Running by its status, but gone quiet: its process ended part-way."""
        last = self.heartbeat_at or self.started_at
        return self.status == "running" and now - last > IMPORT_STALLED

    refusals: Mapped[list[ImportRefusal]] = relationship(
        order_by=lambda: ImportRefusal.line, cascade="all, delete-orphan", passive_deletes=True
    )


class ImportRefusal(Base):
    """One refused row of an upload, as it was given, with the reason: patient data, so purged
    with the run."""

    __tablename__ = "import_refusals"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(
        ForeignKey("import_runs.id", ondelete="CASCADE"), index=True
    )
    line: Mapped[int] = mapped_column(Integer)
    booking_ref: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    row: Mapped[str] = mapped_column(Text)  # JSON object of the row's columns


class ImportUpload(Base):
    """The file of an upload, kept until a worker has imported it: the web process hands the
    import to a worker (which may run on another machine) through the database, not a disk."""

    __tablename__ = "import_uploads"

    run_id: Mapped[int] = mapped_column(
        ForeignKey("import_runs.id", ondelete="CASCADE"), primary_key=True
    )
    content: Mapped[bytes] = mapped_column(LargeBinary)
