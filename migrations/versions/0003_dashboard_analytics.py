"""indexes for the dashboard and /v1/analytics

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 12:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _metadata_key(key: str) -> sa.ColumnElement:
    # The same expression the models declare (and the queries filter on): metadata ->> key on
    # Postgres, json_extract on SQLite, so the planner can match it to the index.
    meta = sa.column('metadata', sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), 'postgresql'))
    return meta[key].as_string()


def upgrade() -> None:
    with op.batch_alter_table('prediction', schema=None) as batch_op:
        batch_op.create_index('ix_prediction_segment_newest', ['segment_id', 'created_at', 'id'], unique=False)
    with op.batch_alter_table('recording', schema=None) as batch_op:
        batch_op.create_index('ix_recording_tenant_status_created', ['tenant_id', 'status', 'created_at'],
                              unique=False)
    op.create_index('ix_recording_tenant_agent', 'recording',
                    [sa.column('tenant_id'), _metadata_key('agent'), sa.column('created_at')], unique=False)
    op.create_index('ix_recording_tenant_queue', 'recording',
                    [sa.column('tenant_id'), _metadata_key('queue'), sa.column('created_at')], unique=False)


def downgrade() -> None:
    op.drop_index('ix_recording_tenant_queue', table_name='recording')
    op.drop_index('ix_recording_tenant_agent', table_name='recording')
    with op.batch_alter_table('recording', schema=None) as batch_op:
        batch_op.drop_index('ix_recording_tenant_status_created')
    with op.batch_alter_table('prediction', schema=None) as batch_op:
        batch_op.drop_index('ix_prediction_segment_newest')
