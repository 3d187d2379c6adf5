"""When a send's request was allowed to leave (`requested_at`): a row in `sending` without it
never reached the provider; and how often the provider could not say whether it has a message
(`asks`), with when to ask it next (`ask_after`).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Columns are added and dropped in place, not through a batch: SQLite's batch copies the
# table, and would lose the expression index on booking references it cannot reflect.


def upgrade() -> None:
    op.add_column("reminders", sa.Column("requested_at", sa.DateTime(timezone=True)))
    op.add_column(
        "reminders", sa.Column("asks", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )
    op.add_column("reminders", sa.Column("ask_after", sa.DateTime(timezone=True)))
    # A row in `sending` with its words written may have reached the provider: it keeps being
    # asked about, as before.
    op.execute(
        "UPDATE reminders SET requested_at = sending_at "
        "WHERE state = 'sending' AND body IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_column("reminders", "ask_after")
    op.drop_column("reminders", "asks")
    op.drop_column("reminders", "requested_at")
