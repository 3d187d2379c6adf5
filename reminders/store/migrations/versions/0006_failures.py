"""A reminder counts what went wrong on its attempts, each against its own cap: the provider's
failures, and the worker's crashes while it held the row (a poison row). `attempts` becomes
the attempt number only, and only ever goes up.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("reminders") as batch:
        for name in ("failures", "crashes"):
            batch.add_column(
                sa.Column(name, sa.Integer(), server_default=sa.text("0"), nullable=False)
            )
    # Until now `attempts` counted the provider's failures too (and went down again when our
    # own settings were wrong): carried over as failures, so a row near its cap stays near it.
    op.execute("UPDATE reminders SET failures = attempts WHERE state IN ('scheduled', 'queued')")


def downgrade() -> None:
    with op.batch_alter_table("reminders") as batch:
        batch.drop_column("crashes")
        batch.drop_column("failures")
