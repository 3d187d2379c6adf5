"""Initial schema.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Instants are `DateTime(timezone=True)` here; the model's `UTCDateTime` is that same column with
the UTC conversion done in Python, so a migration never needs to import the application.
"""

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def instant(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def one_of(column: str, *values: str) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def upgrade() -> None:
    op.create_table(
        "patients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("language", sa.String(length=35), server_default="en-GB", nullable=False),
        instant("created_at"),
        instant("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patients")),
    )

    op.create_table(
        "enrolments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("booking_ref", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("procedure", sa.String(length=64), nullable=False),
        sa.Column("local_date", sa.Date(), nullable=False),
        sa.Column("local_time", sa.Time(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        instant("starts_at"),
        sa.Column("arrival", sa.Time(), nullable=True),
        sa.Column("sedation", sa.Boolean(), nullable=True),
        sa.Column("joint", sa.String(length=16), nullable=True),
        sa.Column("anticoagulant", sa.String(length=100), nullable=True),
        sa.Column("anticoagulant_hold_days", sa.Integer(), nullable=True),
        sa.Column("anticoagulant_restart_days", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.Column("schedule_version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        instant("enrolled_at"),
        instant("updated_at"),
        instant("ended_at", nullable=True),
        sa.CheckConstraint(
            one_of("status", "active", "cancelled", "completed"),
            name=op.f("ck_enrolments_status"),
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
            name=op.f("fk_enrolments_patient_id_patients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrolments")),
        sa.UniqueConstraint("booking_ref", name=op.f("uq_enrolments_booking_ref")),
    )
    op.create_index(op.f("ix_enrolments_patient_id"), "enrolments", ["patient_id"])
    op.create_index(op.f("ix_enrolments_starts_at"), "enrolments", ["starts_at"])

    op.create_table(
        "reminders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("enrolment_id", sa.Integer(), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("state", sa.String(length=16), server_default="scheduled", nullable=False),
        instant("send_at"),
        instant("deadline"),
        instant("expires_at"),
        sa.Column("schedule_version", sa.Integer(), nullable=False),
        sa.Column("template", sa.String(length=64), nullable=False),
        sa.Column("template_version", sa.String(length=64), nullable=False),
        sa.Column("language", sa.String(length=35), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=True),
        sa.Column("safety_critical", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("is_correction", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=True),
        sa.Column("cancel_reason", sa.String(length=64), nullable=True),
        sa.Column("provider_id", sa.String(length=64), nullable=True),
        sa.Column("delivery_status", sa.String(length=16), nullable=True),
        sa.Column("error_code", sa.String(length=32), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        instant("sent_at", nullable=True),
        instant("created_at"),
        instant("updated_at"),
        sa.CheckConstraint(one_of("channel", "sms", "email"), name=op.f("ck_reminders_channel")),
        sa.CheckConstraint(
            "delivery_status IS NULL OR "
            + one_of("delivery_status", "queued", "sent", "delivered", "undelivered", "failed"),
            name=op.f("ck_reminders_delivery_status"),
        ),
        sa.CheckConstraint(
            one_of(
                "state", "scheduled", "queued", "sending", "sent", "failed", "cancelled", "skipped"
            ),
            name=op.f("ck_reminders_state"),
        ),
        sa.ForeignKeyConstraint(
            ["enrolment_id"],
            ["enrolments.id"],
            name=op.f("fk_reminders_enrolment_id_enrolments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reminders")),
    )
    op.create_index(op.f("ix_reminders_enrolment_id"), "reminders", ["enrolment_id"])
    op.create_index(op.f("ix_reminders_provider_id"), "reminders", ["provider_id"])
    op.create_index("ix_reminders_state_send_at", "reminders", ["state", "send_at"])

    op.create_table(
        "opt_outs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("destination", sa.String(length=320), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        instant("created_at"),
        sa.CheckConstraint(one_of("channel", "sms", "email"), name=op.f("ck_opt_outs_channel")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_opt_outs")),
        sa.UniqueConstraint("channel", "destination", name=op.f("uq_opt_outs_channel_destination")),
    )

    op.create_table(
        "attention_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("enrolment_id", sa.Integer(), nullable=True),
        sa.Column("reminder_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("needs_call", sa.Boolean(), server_default=sa.false(), nullable=False),
        instant("created_at"),
        instant("resolved_at", nullable=True),
        sa.Column("resolved_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["enrolment_id"],
            ["enrolments.id"],
            name=op.f("fk_attention_items_enrolment_id_enrolments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["reminder_id"],
            ["reminders.id"],
            name=op.f("fk_attention_items_reminder_id_reminders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attention_items")),
    )
    op.create_index(op.f("ix_attention_items_enrolment_id"), "attention_items", ["enrolment_id"])
    op.create_index(op.f("ix_attention_items_reminder_id"), "attention_items", ["reminder_id"])

    op.create_table(
        "audit_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        instant("at"),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("enrolment_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["enrolment_id"],
            ["enrolments.id"],
            name=op.f("fk_audit_entries_enrolment_id_enrolments"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_entries")),
    )
    op.create_index(op.f("ix_audit_entries_enrolment_id"), "audit_entries", ["enrolment_id"])


def downgrade() -> None:
    # Children before parents; dropping a table drops its indexes with it.
    for table in (
        "audit_entries",
        "attention_items",
        "opt_outs",
        "reminders",
        "enrolments",
        "patients",
    ):
        op.drop_table(table)
