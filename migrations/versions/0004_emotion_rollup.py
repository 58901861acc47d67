"""per-call emotion rollup for /v1/analytics and the dashboard overview, backfilled

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 12:30:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), 'postgresql')
recording = sa.table('recording', sa.column('id', sa.Uuid()), sa.column('tenant_id', sa.Uuid()),
                     sa.column('created_at', sa.DateTime(timezone=True)), sa.column('metadata', JSON),
                     sa.column('status', sa.String()))
segment = sa.table('segment', sa.column('id', sa.Uuid()), sa.column('recording_id', sa.Uuid()),
                   sa.column('role', sa.String()), sa.column('start_s', sa.Float()), sa.column('end_s', sa.Float()))
prediction = sa.table('prediction', sa.column('id', sa.Uuid()), sa.column('segment_id', sa.Uuid()),
                      sa.column('label', sa.String()), sa.column('valence', sa.Float()),
                      sa.column('arousal', sa.Float()), sa.column('model_version', sa.String()),
                      sa.column('created_at', sa.DateTime(timezone=True)))
COLUMNS = ('recording_id', 'tenant_id', 'created_at', 'day', 'agent', 'queue', 'role', 'label', 'segments', 'seconds',
           'valence_sum', 'valence_n', 'arousal_sum', 'arousal_n', 'model_version')


def _backfill() -> sa.Insert:
    """db.queries.analytics.rollup_select over every done recording, as of this revision: per
    (call, role, label) the newest prediction of each segment, plus one '*' row per call."""
    done = recording.c.status == 'done'
    day: sa.ColumnElement[object]
    if op.get_bind().dialect.name == 'postgresql':
        day = sa.cast(sa.func.timezone('UTC', recording.c.created_at), sa.Date)  # the UTC day
    else:
        day = sa.func.date(recording.c.created_at)
    call = (recording.c.id, recording.c.tenant_id, recording.c.created_at, day,
            recording.c.metadata['agent'].as_string(), recording.c.metadata['queue'].as_string())
    newer = prediction.alias('newer')
    newest = ~sa.exists().where(
        newer.c.segment_id == prediction.c.segment_id,
        sa.tuple_(newer.c.created_at, newer.c.id) > sa.tuple_(prediction.c.created_at, prediction.c.id),
    )
    per_label = (
        sa.select(*call, segment.c.role, prediction.c.label, sa.func.count(),
                  sa.func.sum(segment.c.end_s - segment.c.start_s),
                  sa.func.coalesce(sa.func.sum(prediction.c.valence), 0.0), sa.func.count(prediction.c.valence),
                  sa.func.coalesce(sa.func.sum(prediction.c.arousal), 0.0), sa.func.count(prediction.c.arousal),
                  sa.func.max(prediction.c.model_version))
        .select_from(recording)
        .join(segment, segment.c.recording_id == recording.c.id)
        .join(prediction, prediction.c.segment_id == segment.c.id)
        .where(done, newest)
        .group_by(*call, segment.c.role, prediction.c.label)
    )
    star, zero, zero_f = (sa.literal_column("'*'", sa.String), sa.literal_column('0', sa.Integer),
                          sa.literal_column('0.0', sa.Float))
    call_row = sa.select(*call, star, star, zero, zero_f, zero_f, zero, zero_f, zero,
                         sa.literal_column('NULL', sa.String)).where(done)
    rollup = sa.table('recording_emotion_rollup', *(sa.column(name) for name in COLUMNS))
    # In creation order, as calls finishing one after another write it: a range of days is then a
    # contiguous stretch of the table, cheap to read through ix_..._tenant_created.
    rows = sa.union_all(per_label, call_row).order_by(sa.literal_column('created_at'))
    return sa.insert(rollup).from_select(COLUMNS, rows)


def upgrade() -> None:
    op.create_table(
        'recording_emotion_rollup',
        sa.Column('recording_id', sa.Uuid(), nullable=False),
        sa.Column('role', sa.String(length=32), nullable=False),
        sa.Column('label', sa.String(length=32), nullable=False),
        sa.Column('tenant_id', sa.Uuid(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('agent', sa.Text(), nullable=True),
        sa.Column('queue', sa.Text(), nullable=True),
        sa.Column('segments', sa.Integer(), nullable=False),
        sa.Column('seconds', sa.Float(), nullable=False),
        sa.Column('valence_sum', sa.Float(), nullable=False),
        sa.Column('valence_n', sa.Integer(), nullable=False),
        sa.Column('arousal_sum', sa.Float(), nullable=False),
        sa.Column('arousal_n', sa.Integer(), nullable=False),
        sa.Column('model_version', sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(['recording_id'], ['recording.id'],
                                name=op.f('fk_recording_emotion_rollup_recording_id_recording'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('recording_id', 'role', 'label', name=op.f('pk_recording_emotion_rollup')),
    )
    with op.batch_alter_table('recording_emotion_rollup', schema=None) as batch_op:
        batch_op.create_index('ix_recording_emotion_rollup_tenant_created', ['tenant_id', 'created_at'],
                              unique=False)
    op.execute(_backfill())


def downgrade() -> None:
    with op.batch_alter_table('recording_emotion_rollup', schema=None) as batch_op:
        batch_op.drop_index('ix_recording_emotion_rollup_tenant_created')
    op.drop_table('recording_emotion_rollup')
