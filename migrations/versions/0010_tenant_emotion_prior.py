"""Per-tenant class prior: tenant.emotion_prior (balanced | calls)

Revision ID: 0010
Revises: 0011
Create Date: 2026-12-03 16:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (batch mode would rebuild the table on SQLite and cascade into its children).
    # Existing tenants keep the prior their predictions were made with: the balanced training prior.
    op.add_column('tenant', sa.Column('emotion_prior', sa.String(16), server_default='balanced',
                                      nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('tenant') as batch_op:
        batch_op.drop_column('emotion_prior')
