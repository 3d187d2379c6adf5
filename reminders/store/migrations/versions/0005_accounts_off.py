"""Staff accounts that can be switched off; a heartbeat for CSV uploads, so that one stopped by
a restart shows as stopped; a reminder's words written when it is sent, so empty until then.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_WORDS = (("template_version", sa.String(64)), ("language", sa.String(35)), ("body", sa.Text()))


def upgrade() -> None:
    op.add_column("users", sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "import_runs", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True)
    )
    with op.batch_alter_table("reminders") as batch:  # SQLite rebuilds the table
        for name, kind in _WORDS:
            batch.alter_column(name, existing_type=kind, nullable=True)


def downgrade() -> None:
    # The earlier code sends the words stored at scheduling, which reminders scheduled since
    # do not have: it would send them empty. Refuse rather than lose or garble any.
    unwritten = (
        op.get_bind().execute(sa.text("SELECT count(*) FROM reminders WHERE body IS NULL")).scalar()
    )
    if unwritten:
        raise RuntimeError(
            f"{unwritten} reminders were scheduled by a later version and have no words yet; "
            "the version before 0005 cannot send them. Upgrade again instead."
        )
    with op.batch_alter_table("reminders") as batch:
        for name, kind in _WORDS:
            batch.alter_column(name, existing_type=kind, nullable=False)
    # SQLite rebuilds a table to drop a column.
    with op.batch_alter_table("import_runs") as batch:
        batch.drop_column("heartbeat_at")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("disabled_at")
