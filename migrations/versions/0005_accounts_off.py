"""Staff accounts that can be switched off; a heartbeat for CSV uploads, so that one stopped by
a restart shows as stopped.

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


def upgrade() -> None:
    op.add_column("users", sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "import_runs", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    # SQLite rebuilds a table to drop a column.
    with op.batch_alter_table("import_runs") as batch:
        batch.drop_column("heartbeat_at")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("disabled_at")
