"""The anaesthetic an enrolment is under (local, sedation, general), a clinician's reason for a
blood-thinner hold shorter than the protocol's minimum, and what a notice is about (the start a
moved appointment had before).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Columns are added and dropped in place, not through a batch: SQLite's batch copies the
# table, and would lose the expression index on booking references it cannot reflect.


def upgrade() -> None:
    op.add_column("enrolments", sa.Column("anaesthesia", sa.String(16), nullable=True))
    op.add_column("enrolments", sa.Column("anticoagulant_hold_reason", sa.Text(), nullable=True))
    # What `sedation` said, in the new words; the column stays, as booking systems send it.
    op.execute(
        "UPDATE enrolments SET anaesthesia = CASE WHEN sedation THEN 'sedation' ELSE 'local' END "
        "WHERE sedation IS NOT NULL"
    )
    op.add_column("reminders", sa.Column("detail", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("reminders", "detail")
    op.drop_column("enrolments", "anticoagulant_hold_reason")
    op.drop_column("enrolments", "anaesthesia")
