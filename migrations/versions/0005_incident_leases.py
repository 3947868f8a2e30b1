"""incident owners and replica leases (active-active replicas)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 03:00:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel  # noqa: F401  (autogenerate emits sqlmodel.sql.sqltypes.AutoString)
import escalator.store.tables  # noqa: F401  (custom column types)


revision: str = '0005'
down_revision: Union[str, None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('replicas',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('started_at', escalator.store.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('lease_until', escalator.store.tables.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    # Open incidents start with no owner: the first replica to start claims them.
    with op.batch_alter_table('incidents') as batch:
        batch.add_column(sa.Column('owner', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
        batch.create_index(
            'ix_incidents_active_owner', ['owner'], unique=False,
            postgresql_where=sa.text("status IN ('open', 'exhausted')"), sqlite_where=sa.text("status IN ('open', 'exhausted')"),
        )


def downgrade() -> None:
    with op.batch_alter_table('incidents') as batch:
        batch.drop_index('ix_incidents_active_owner')
        batch.drop_column('owner')
    op.drop_table('replicas')
