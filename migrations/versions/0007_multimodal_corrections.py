"""Multimodal evidence and corrections: transcript, segment_label, prediction.uncertain/modalities,
recording.speaker_references/analysis_round

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21 13:40:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    op.create_table(
        'transcript',
        sa.Column('recording_id', sa.Uuid(), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('format', sa.String(length=16), nullable=False),
        sa.Column('utterances', JSONType, nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['recording_id'], ['recording.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('recording_id'),
    )
    op.create_table(
        'segment_label',
        sa.Column('segment_id', sa.Uuid(), nullable=False),
        sa.Column('tenant_id', sa.Uuid(), nullable=False),
        sa.Column('label', sa.String(length=32), nullable=False),
        sa.Column('note', sa.Text(), nullable=True),
        sa.Column('model_label', sa.String(length=32), nullable=True),
        sa.Column('model_version', sa.String(length=100), nullable=True),
        sa.Column('labeled_by', sa.String(length=200), nullable=False),
        sa.Column('api_key_id', sa.Uuid(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['api_key_id'], ['api_key.id'], ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['segment_id'], ['segment.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('segment_id'),
    )
    op.create_index(op.f('ix_segment_label_tenant_id'), 'segment_label', ['tenant_id'], unique=False)
    with op.batch_alter_table('prediction', schema=None) as batch_op:
        batch_op.add_column(sa.Column('uncertain', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('modalities', JSONType, server_default='{}', nullable=False))
    # Older predictions get the flag the dashboard drew for them (confidence under 0.5).
    op.execute("UPDATE prediction SET uncertain = (confidence < 0.5)")
    with op.batch_alter_table('recording', schema=None) as batch_op:
        batch_op.add_column(sa.Column('speaker_references', JSONType, server_default='{}', nullable=False))
        batch_op.add_column(sa.Column('analysis_round', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('recording', schema=None) as batch_op:
        batch_op.drop_column('analysis_round')
        batch_op.drop_column('speaker_references')
    with op.batch_alter_table('prediction', schema=None) as batch_op:
        batch_op.drop_column('modalities')
        batch_op.drop_column('uncertain')
    op.drop_index(op.f('ix_segment_label_tenant_id'), table_name='segment_label')
    op.drop_table('segment_label')
    op.drop_table('transcript')
