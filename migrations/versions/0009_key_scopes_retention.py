"""Operators' tools: API key scope and last use, per-tenant retention, media purge mark,
the outcome of a recording's last rescore

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-03 15:10:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0009'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    with op.batch_alter_table('api_key', schema=None) as batch_op:
        # Existing keys could do everything a key can do today (no key management): 'write'.
        batch_op.add_column(sa.Column('scope', sa.String(length=16), server_default='write', nullable=False))
        batch_op.add_column(sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('tenant', schema=None) as batch_op:
        # NULL: kept until deleted by hand (what every tenant had before).
        batch_op.add_column(sa.Column('media_retention_days', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('data_retention_days', sa.Integer(), nullable=True))
    with op.batch_alter_table('recording', schema=None) as batch_op:
        batch_op.add_column(sa.Column('media_deleted_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('last_rescore', JSONType, nullable=True))
    # The retention sweep looks for a tenant's oldest calls whose media still exists.
    op.create_index('ix_recording_tenant_media', 'recording', ['tenant_id', 'media_deleted_at', 'created_at'])


def downgrade() -> None:
    op.drop_index('ix_recording_tenant_media', table_name='recording')
    with op.batch_alter_table('recording', schema=None) as batch_op:
        batch_op.drop_column('last_rescore')
        batch_op.drop_column('media_deleted_at')
    with op.batch_alter_table('tenant', schema=None) as batch_op:
        batch_op.drop_column('data_retention_days')
        batch_op.drop_column('media_retention_days')
    with op.batch_alter_table('api_key', schema=None) as batch_op:
        batch_op.drop_column('last_used_at')
        batch_op.drop_column('scope')
