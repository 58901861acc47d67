"""recording.final_event_at: outbox mark for recording.completed / recording.failed

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21 12:50:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('recording', schema=None) as batch_op:
        batch_op.add_column(sa.Column('final_event_at', sa.DateTime(timezone=True), nullable=True))
    # Recordings finished before this revision had their chance to publish: do not replay history.
    op.execute("UPDATE recording SET final_event_at = completed_at WHERE status IN ('done', 'failed')")


def downgrade() -> None:
    with op.batch_alter_table('recording', schema=None) as batch_op:
        batch_op.drop_column('final_event_at')
