"""Server-side dashboard sessions (logout and key revocation end them); corrections name the API
key by its name and a short id instead of the first characters of its secret

Revision ID: 0008
Revises: 0009
Create Date: 2026-12-03 15:20:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'dashboard_session',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('tenant_id', sa.Uuid(), nullable=False),
        sa.Column('api_key_id', sa.Uuid(), nullable=False),
        sa.Column('csrf_token', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['api_key_id'], ['api_key.id'], name=op.f('fk_dashboard_session_api_key_id_api_key'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_dashboard_session_tenant_id_tenant'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_dashboard_session')),
    )
    op.create_index(op.f('ix_dashboard_session_api_key_id'), 'dashboard_session', ['api_key_id'])
    op.create_index(op.f('ix_dashboard_session_expires_at'), 'dashboard_session', ['expires_at'])
    op.create_index(op.f('ix_dashboard_session_tenant_id'), 'dashboard_session', ['tenant_id'])
    _relabel_corrections()


def _relabel_corrections() -> None:
    """Stored corrections said who set them as "name (cpk_XXXXXXXX…)": eight characters of the
    key's secret. Rewrite them as the key's name and the first 8 hex digits of its (public) id."""
    conn = op.get_bind()
    rows = conn.execute(sa.text(
        "SELECT sl.segment_id, sl.labeled_by, k.id, k.name FROM segment_label sl "
        "LEFT JOIN api_key k ON k.id = sl.api_key_id")).all()
    for segment_id, labeled_by, key_id, name in rows:
        if key_id is not None:
            short = str(key_id).replace('-', '')[:8]
            label = f"{name or 'api key'} (key {short})"
        else:  # the key is gone: keep the name, drop whatever followed it
            label = (labeled_by or 'api key').split(' (', 1)[0] + ' (deleted key)'
        conn.execute(sa.text("UPDATE segment_label SET labeled_by = :label WHERE segment_id = :id"),
                     {"label": label, "id": segment_id})


def downgrade() -> None:
    op.drop_index(op.f('ix_dashboard_session_tenant_id'), table_name='dashboard_session')
    op.drop_index(op.f('ix_dashboard_session_expires_at'), table_name='dashboard_session')
    op.drop_index(op.f('ix_dashboard_session_api_key_id'), table_name='dashboard_session')
    op.drop_table('dashboard_session')
