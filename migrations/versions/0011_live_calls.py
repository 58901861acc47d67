"""Live calls and conversation measures: recording.disconnected, recording.conversation

Revision ID: 0011
Revises: 0008
Create Date: 2026-12-03 15:20:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0011'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    # Plain ADD COLUMN, not batch mode: on SQLite batch mode rebuilds the table, and dropping the
    # old one would cascade into every table with a foreign key to it (the rollup, segments).
    # A live call whose socket dropped before its stop message: what arrived is analyzed.
    op.add_column('recording', sa.Column('disconnected', sa.Boolean(), server_default=sa.false(),
                                         nullable=False))
    # Conversation measures (talk time, silences, interruptions, sentiment), written at completion.
    op.add_column('recording', sa.Column('conversation', JSONType, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('recording') as batch_op:
        batch_op.drop_column('conversation')
        batch_op.drop_column('disconnected')
