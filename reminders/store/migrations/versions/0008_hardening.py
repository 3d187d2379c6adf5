"""Hardening: an upload's file kept for the worker that imports it; login attempts counted by
address (any address typed, with or without an account) instead of on the account; patients'
messages by the provider's id, so a replayed webhook does nothing.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "import_uploads",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["import_runs.id"], name=op.f("fk_import_uploads_run_id_import_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_import_uploads")),
    )  # fmt: skip
    op.create_table(
        "login_attempts",
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_login_attempts")),
    )
    op.create_table(
        "inbound_messages",
        sa.Column("provider_id", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider_id", name=op.f("pk_inbound_messages")),
    )
    op.add_column(
        "api_tokens", sa.Column("scope", sa.String(8), server_default="write", nullable=False)
    )
    with op.batch_alter_table("users") as batch:
        batch.drop_column("failed_logins")
        batch.drop_column("last_failed_at")


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("failed_logins", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch.add_column(sa.Column("last_failed_at", sa.DateTime(timezone=True), nullable=True))
    op.drop_column("api_tokens", "scope")
    op.drop_table("inbound_messages")
    op.drop_table("login_attempts")
    op.drop_table("import_uploads")
