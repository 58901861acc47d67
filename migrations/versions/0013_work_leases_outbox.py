"""Recovery: leases on running work (heartbeats tell a dead worker's work from queued work) and an
outbox of messages the broker could not take

Revision ID: 0013
Revises: 0010
Create Date: 2026-12-03 16:20:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0013'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    op.create_table(
        'work_lease',
        sa.Column('id', sa.Uuid(), primary_key=True),
        sa.Column('recording_id', sa.Uuid(), sa.ForeignKey('recording.id', ondelete='CASCADE'),
                  nullable=False),
        sa.Column('stage', sa.String(32), nullable=False),
        sa.Column('node', sa.String(255), nullable=False),
        sa.Column('boot', sa.String(32), nullable=False),
        sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_work_lease_recording', 'work_lease', ['recording_id'])
    op.create_index('ix_work_lease_expires', 'work_lease', ['expires_at'])
    op.create_table(
        'outbox_message',
        sa.Column('id', sa.Uuid(), primary_key=True),
        sa.Column('task', sa.String(100), nullable=False),
        sa.Column('args', JSONType, nullable=False),
        sa.Column('countdown_s', sa.Float(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
    )
    op.create_index('ix_outbox_message_created', 'outbox_message', ['created_at'])


def downgrade() -> None:
    op.drop_index('ix_outbox_message_created', 'outbox_message')
    op.drop_table('outbox_message')
    op.drop_index('ix_work_lease_expires', 'work_lease')
    op.drop_index('ix_work_lease_recording', 'work_lease')
    op.drop_table('work_lease')
